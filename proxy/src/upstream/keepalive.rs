//! Upstream keepalive: whether a connection goes back to the group's idle
//! pool after a response.
//!
//! nginx counterpart: `ngx_http_upstream_keepalive_module`. A connection is
//! kept only when its response was read cleanly to the end without
//! `Connection: close` (Pingora decides that when the session is released),
//! the group keeps idle connections at all (`keepalive` > 0), it served fewer
//! than `keepalive_requests` requests, and it is younger than
//! `keepalive_time` (checked after a request, so one more request can go over
//! an old connection, as in nginx). The pool is `upstream/pool.rs`, one per
//! group, sized `keepalive` (it closes the oldest idle one beyond that).

use crate::upstream::idle_budget::{ConnId, FastMap, IdleBudget, PoolIdle};
use ferry_conf::Upstream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct Keepalive {
    pub idle_max: usize,
    pub idle_timeout: Duration,
    requests: u32,
    max_age: Duration,
    /// Per socket: when its connection was made and the requests it served.
    /// Keyed by the socket alone, so the table never holds more entries than
    /// there are open sockets: a connection the pool closed on its own is
    /// replaced when its descriptor is reused (a different `made`).
    uses: Mutex<FastMap<i32, (SystemTime, u32)>>,
    /// This pool's idle connections, counted against
    /// `server.upstream_keepalive_pool_size` (shared by every group).
    pool_idle: PoolIdle,
}

impl Keepalive {
    pub fn new(u: &Upstream, budget: Arc<IdleBudget>) -> Keepalive {
        Keepalive {
            pool_idle: PoolIdle::new(u.keepalive.max(1), budget),
            idle_max: u.keepalive,
            idle_timeout: u.keepalive_timeout.get(),
            requests: u.keepalive_requests.max(1),
            max_age: u.keepalive_time.get(),
            uses: Mutex::new(FastMap::default()),
        }
    }

    /// One more request was served on `conn`: may it go back to the pool?
    pub fn after_request(&self, (fd, made): ConnId) -> bool {
        if self.idle_max == 0 {
            return false;
        }
        let age = made.elapsed().unwrap_or_default();
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let entry = uses.entry(fd).or_insert((made, 0));
        if entry.0 != made {
            *entry = (made, 0);
        }
        entry.1 += 1;
        let keep = entry.1 < self.requests
            && age <= self.max_age
            && self.pool_idle.admit((fd, made), self.idle_timeout);
        if !keep {
            uses.remove(&fd);
        }
        keep
    }

    /// A pooled connection was taken for a try: no longer idle.
    pub fn taken(&self, conn: ConnId) {
        self.pool_idle.taken(conn);
    }

    /// A connection that will not be reused is forgotten.
    pub fn forget(&self, (fd, made): ConnId) {
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        if uses.get(&fd).is_some_and(|(m, _)| *m == made) {
            uses.remove(&fd);
        }
    }

    /// Sockets currently tracked (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.uses.lock().map(|u| u.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_per_connection() {
        let mut u = Upstream::default();
        u.keepalive_requests = 3;
        let k = Keepalive::new(&u, Arc::new(IdleBudget::new(100)));
        let c = (7, SystemTime::now());
        assert!(k.after_request(c));
        assert!(k.after_request(c));
        assert!(!k.after_request(c), "the third request is the last");
        u.keepalive = 0;
        assert!(!Keepalive::new(&u, Arc::new(IdleBudget::new(100))).after_request(c));
    }

    #[test]
    fn a_reused_descriptor_starts_a_new_count() {
        let mut u = Upstream::default();
        u.keepalive_requests = 2;
        let k = Keepalive::new(&u, Arc::new(IdleBudget::new(100)));
        let old = (7, SystemTime::now() - Duration::from_secs(1));
        assert!(k.after_request(old));
        // The pool closed `old` on its own; a new connection got fd 7.
        let new = (7, SystemTime::now());
        assert!(k.after_request(new), "a new connection's first request");
        assert!(!k.after_request(new), "its second is the last");
        for fd in 0..1000 {
            k.after_request((fd % 10, SystemTime::now()));
        }
        assert!(
            k.tracked() <= 10,
            "one entry per socket, not per connection"
        );
    }
}
