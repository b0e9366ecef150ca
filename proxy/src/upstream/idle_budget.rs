//! `server.upstream_keepalive_pool_size`: a cap on idle upstream
//! connections across all groups, on top of each group's `keepalive`.
//!
//! nginx has no such cap (each `upstream {}` block's `keepalive` stands
//! alone); it is Pingora's knob, which Pingora applies per connector, and
//! Ferry has one pool per group. So the pools keep one count together: a
//! connection going idle is added while fewer than the cap are, and leaves
//! the count when it leaves its pool (taken for a try, closed to make
//! room, past its idle timeout, closed by its server, or its pool gone).

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct IdleBudget {
    cap: usize,
    /// Idle connections in every group's pool.
    idle: AtomicUsize,
}

impl IdleBudget {
    pub fn new(cap: usize) -> IdleBudget {
        IdleBudget {
            cap,
            idle: AtomicUsize::new(0),
        }
    }

    /// One more connection goes idle, if the cap lets it.
    pub fn add(&self) -> bool {
        let more = |n: usize| (n < self.cap).then_some(n + 1);
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, more)
            .is_ok()
    }

    /// `n` idle connections left their pool.
    pub fn leave(&self, n: usize) {
        if n > 0 {
            self.idle.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Connections counted as idle now.
    #[cfg(test)]
    pub(crate) fn counted(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_idle_connections_across_groups() {
        let b = IdleBudget::new(2);
        assert!(b.add());
        assert!(b.add());
        assert!(!b.add(), "two idle already");
        b.leave(1);
        assert!(b.add(), "one was taken for a try");
        assert_eq!(b.counted(), 2);
        b.leave(2);
        assert_eq!(b.counted(), 0);
    }
}
