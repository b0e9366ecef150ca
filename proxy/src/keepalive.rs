//! Upstream keepalive: whether a connection goes back to the group's idle
//! pool after a response.
//!
//! nginx counterpart: `ngx_http_upstream_keepalive_module`. A connection is
//! kept only when its response was read cleanly to the end without
//! `Connection: close` (Pingora decides that when the session is released),
//! the group keeps idle connections at all (`keepalive` > 0), it served fewer
//! than `keepalive_requests` requests, and it is younger than
//! `keepalive_time` (checked after a request, so one more request can go over
//! an old connection, as in nginx). The pool itself is Pingora's, one per
//! group, sized `keepalive` (its LRU closes the oldest idle one beyond that).

use ferry_conf::Upstream;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A connection's identity while it lives: its socket and when it was made.
pub type ConnId = (i32, SystemTime);

pub struct Keepalive {
    pub idle_max: usize,
    pub idle_timeout: Duration,
    requests: u32,
    max_age: Duration,
    /// Requests served so far by each pooled connection.
    uses: Mutex<HashMap<ConnId, u32>>,
}

impl Keepalive {
    pub fn new(u: &Upstream) -> Keepalive {
        Keepalive {
            idle_max: u.keepalive,
            idle_timeout: u.keepalive_timeout.get(),
            requests: u.keepalive_requests.max(1),
            max_age: u.keepalive_time.get(),
            uses: Mutex::new(HashMap::new()),
        }
    }

    /// One more request was served on `conn`: may it go back to the pool?
    pub fn after_request(&self, conn: ConnId) -> bool {
        if self.idle_max == 0 {
            return false;
        }
        let age = conn.1.elapsed().unwrap_or_default();
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let n = uses.entry(conn).or_insert(0);
        *n += 1;
        let keep = *n < self.requests && age <= self.max_age;
        if !keep {
            uses.remove(&conn);
        }
        // Connections the pool closed on its own leave entries behind; they
        // are too old to matter once past keepalive_time.
        if uses.len() > 4 * self.idle_max + 64 {
            let max_age = self.max_age;
            uses.retain(|(_, made), _| made.elapsed().unwrap_or_default() <= max_age);
        }
        keep
    }

    /// A connection that will not be reused is forgotten.
    pub fn forget(&self, conn: ConnId) {
        self.uses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_per_connection() {
        let mut u = Upstream::default();
        u.keepalive_requests = 3;
        let k = Keepalive::new(&u);
        let c = (7, SystemTime::now());
        assert!(k.after_request(c));
        assert!(k.after_request(c));
        assert!(!k.after_request(c), "the third request is the last");
        u.keepalive = 0;
        assert!(!Keepalive::new(&u).after_request(c));
    }
}
