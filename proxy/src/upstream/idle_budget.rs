//! `server.upstream_keepalive_pool_size`: a cap on idle upstream
//! connections across all groups, on top of each group's `keepalive`.
//!
//! nginx has no such cap (each `upstream {}` block's `keepalive` stands
//! alone); it is Pingora's knob, which Pingora applies per connector, and
//! Ferry has one connector per group. So Ferry keeps the count itself: a
//! connection going back to a pool is admitted only while fewer than the
//! cap are idle, and leaves the count when a try takes it again, when its
//! pool's LRU makes room for a newer one ([`PoolIdle`] mirrors that
//! order), or when its idle timeout has passed (the pool closes it then).
//! One the server closed sooner is counted until its timeout, so the cap
//! errs on the side of fewer idle connections.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tables here are keyed by Ferry's own sockets, not by anything a
/// client or server chooses: a fast hash, not SipHash (a third of their
/// cost per request).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A connection's identity while it lives: its socket and when it was made.
pub type ConnId = (i32, std::time::SystemTime);

pub struct IdleBudget {
    cap: usize,
    /// Each idle connection and when its pool lets it go at the latest.
    idle: Mutex<FastMap<ConnId, Instant>>,
}

impl IdleBudget {
    pub fn new(cap: usize) -> IdleBudget {
        IdleBudget {
            cap,
            idle: Mutex::new(FastMap::default()),
        }
    }

    /// `conn` is about to go idle for at most `timeout`: whether the cap
    /// lets it (it is then counted).
    pub fn admit(&self, conn: ConnId, timeout: Duration) -> bool {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.cap {
            idle.retain(|_, until| *until > now);
        }
        if idle.len() >= self.cap {
            return false;
        }
        idle.insert(conn, now + timeout);
        true
    }

    /// `conn` was taken from its pool for a try (or is gone).
    pub fn taken(&self, conn: ConnId) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }

    /// Connections counted as idle now.
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.idle.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// One pool's idle connections in the order its LRU lets them go (Pingora's
/// pool of `size` evicts the one released longest ago to make room), so
/// that the budget does not count a connection the pool already closed.
pub struct PoolIdle {
    size: usize,
    budget: Arc<IdleBudget>,
    idle: Mutex<VecDeque<ConnId>>,
}

impl PoolIdle {
    pub fn new(size: usize, budget: Arc<IdleBudget>) -> PoolIdle {
        PoolIdle {
            size,
            budget,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// `conn` is about to go back to this pool for at most `timeout`:
    /// whether the budget lets it.
    pub fn admit(&self, conn: ConnId, timeout: Duration) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.size > 0 && idle.len() >= self.size {
            // The pool will evict its oldest idle connection for this one.
            if let Some(old) = idle.pop_front() {
                self.budget.taken(old);
            }
        }
        if !self.budget.admit(conn, timeout) {
            return false;
        }
        idle.push_back(conn);
        true
    }

    /// `conn` was taken from this pool for a try.
    pub fn taken(&self, conn: ConnId) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = idle.iter().position(|c| *c == conn) {
            idle.remove(i);
        }
        self.budget.taken(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn the_cap_counts_idle_connections_across_groups() {
        let b = IdleBudget::new(2);
        let t = Duration::from_secs(60);
        let now = SystemTime::now();
        assert!(b.admit((1, now), t));
        assert!(b.admit((2, now), t));
        assert!(!b.admit((3, now), t), "two idle already");
        b.taken((1, now));
        assert!(b.admit((3, now), t), "one was taken for a try");
        assert_eq!(b.counted(), 2);
    }

    #[test]
    fn a_connection_the_pool_evicted_leaves_the_count() {
        let budget = Arc::new(IdleBudget::new(3));
        let pool = PoolIdle::new(2, budget.clone());
        let t = Duration::from_secs(60);
        let now = SystemTime::now();
        for fd in 0..10 {
            assert!(
                pool.admit((fd, now), t),
                "the pool evicts its oldest, the budget follows"
            );
        }
        assert_eq!(budget.counted(), 2);
        pool.taken((9, now));
        assert_eq!(budget.counted(), 1);
    }

    #[test]
    fn a_connection_past_its_idle_timeout_leaves_the_count() {
        let b = IdleBudget::new(1);
        let now = SystemTime::now();
        assert!(b.admit((1, now), Duration::ZERO));
        assert!(
            b.admit((2, now), Duration::from_secs(60)),
            "the first one's pool let it go"
        );
        assert!(!b.admit((3, now), Duration::from_secs(60)));
    }
}
