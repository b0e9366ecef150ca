//! Upstream keepalive: whether a connection goes back to the group's idle
//! pool after a response.
//!
//! nginx counterpart: `ngx_http_upstream_keepalive_module`. A connection is
//! kept only when its response was read cleanly to the end without
//! `Connection: close` (the session decides that when it is released), the
//! group keeps idle connections at all (`keepalive` > 0), it served fewer
//! than `keepalive_requests` requests, and it is younger than
//! `keepalive_time` (checked after a request, so one more request can go over
//! an old connection, as in nginx). The pool is `upstream/pool.rs`, one per
//! group, sized `keepalive` (it closes the oldest idle one beyond that).
//! What a connection served travels with it ([`Usage`]), as nginx keeps
//! `c->requests` on the connection.

use ferry_conf::Upstream;
use std::time::Duration;

pub struct Keepalive {
    pub idle_max: usize,
    pub idle_timeout: Duration,
    requests: u32,
    /// `keepalive_time`, in milliseconds.
    max_age_ms: u64,
}

/// What a connection served: when it was made, and its requests.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// When it was made, on the coarse clock (`ferry_timer::clock`).
    pub made_ms: u64,
    pub requests: u32,
}

impl Usage {
    /// A connection made now.
    pub fn new() -> Usage {
        Usage {
            made_ms: ferry_timer::clock::now_ms(),
            requests: 0,
        }
    }
}

impl Keepalive {
    pub fn new(u: &Upstream) -> Keepalive {
        Keepalive {
            idle_max: u.keepalive,
            idle_timeout: u.keepalive_timeout.get(),
            requests: u.keepalive_requests.max(1),
            max_age_ms: u64::try_from(u.keepalive_time.get().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// One more request was served on a connection: may it go back to
    /// the pool?
    pub fn after_request(&self, usage: &mut Usage) -> bool {
        usage.requests = usage.requests.saturating_add(1);
        let age = ferry_timer::clock::now_ms().saturating_sub(usage.made_ms);
        self.idle_max > 0 && usage.requests < self.requests && age <= self.max_age_ms
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
        let mut c = Usage::new();
        assert!(k.after_request(&mut c));
        assert!(k.after_request(&mut c));
        assert!(!k.after_request(&mut c), "the third request is the last");
        assert!(
            k.after_request(&mut Usage::new()),
            "a new connection counts anew"
        );
        u.keepalive = 0;
        assert!(!Keepalive::new(&u).after_request(&mut Usage::new()));
    }

    #[test]
    fn an_old_connection_serves_one_more_request_and_goes() {
        let mut u = Upstream::default();
        u.keepalive_time = ferry_conf::Duration(Duration::from_millis(1));
        let k = Keepalive::new(&u);
        let mut old = Usage {
            made_ms: ferry_timer::clock::now_ms().saturating_sub(1000),
            requests: 0,
        };
        assert!(!k.after_request(&mut old));
        assert!(k.after_request(&mut Usage::new()));
    }
}
