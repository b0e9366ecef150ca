//! Passive health: `max_fails` within `fail_timeout`, and the one probe let
//! through after it.
//!
//! nginx counterpart: the `fails`/`accessed`/`checked` fields of
//! `ngx_http_upstream_rr_peer_t` and `ngx_http_upstream_free_round_robin_peer`.
//! A failure sets `accessed = checked = now`; a peer with `fails >= max_fails`
//! is skipped while `now - checked <= fail_timeout`; when it is picked after
//! that, `checked = now` (so only this request probes it); a success after a
//! `checked` refresh (`accessed < checked`) clears `fails`. No "quick
//! recovery": when every peer is failed the group has no live peer.

use std::time::{Duration, Instant};

/// Live state of one peer, shared by every request of the process.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// Smooth weighted round robin: the running weight.
    pub current_weight: i64,
    /// Smooth weighted round robin: the weight in use, lowered by failures.
    pub effective_weight: i64,
    /// Requests in progress on this peer (nginx `conns`).
    pub conns: u32,
    pub fails: u32,
    pub accessed: Option<Instant>,
    pub checked: Option<Instant>,
    /// Taken out by an active health check (Ferry).
    pub unhealthy: bool,
    /// Set `down` through the admin API, until the next reload (Ferry).
    pub held_down: bool,
    /// Draining through the admin API: no new requests (Ferry).
    pub draining: bool,
    /// Tries this peer was given since it joined its group.
    pub requests: u64,
    /// least_time's averages and requests in flight.
    pub times: crate::least_time::Times,
}

impl PeerState {
    pub fn new(weight: u32) -> PeerState {
        PeerState {
            current_weight: 0,
            effective_weight: i64::from(weight),
            conns: 0,
            fails: 0,
            accessed: None,
            checked: None,
            unhealthy: false,
            held_down: false,
            draining: false,
            requests: 0,
            times: Default::default(),
        }
    }

    /// nginx: `max_fails && fails >= max_fails && now - checked <= fail_timeout`.
    pub fn is_failed(&self, max_fails: u32, fail_timeout: Duration, now: Instant) -> bool {
        max_fails != 0
            && self.fails >= max_fails
            && self
                .checked
                .is_some_and(|c| now.saturating_duration_since(c) <= fail_timeout)
    }

    /// Held out of new requests through the admin API (down or draining).
    pub fn held(&self) -> bool {
        self.held_down || self.draining
    }

    /// nginx `max_conns`: this many requests in progress already (0 = no limit).
    pub fn is_full(&self, max_conns: u32) -> bool {
        max_conns != 0 && self.conns >= max_conns
    }

    /// On selection: once `fail_timeout` passed since the last check, this
    /// request is the probe.
    pub fn on_selected(&mut self, fail_timeout: Duration, now: Instant) {
        if self
            .checked
            .is_none_or(|c| now.saturating_duration_since(c) > fail_timeout)
        {
            self.checked = Some(now);
        }
    }

    /// A try on this peer failed (error, timeout, invalid header, or a status
    /// that made the request go to the next server).
    pub fn on_failure(&mut self, weight: u32, max_fails: u32, now: Instant) -> bool {
        self.fails += 1;
        self.accessed = Some(now);
        self.checked = Some(now);
        if let Some(step) = weight.checked_div(max_fails) {
            self.effective_weight -= i64::from(step);
        }
        if self.effective_weight < 0 {
            self.effective_weight = 0;
        }
        max_fails != 0 && self.fails == max_fails
    }

    /// A try on this peer ended without failure.
    pub fn on_success(&mut self) {
        if let (Some(a), Some(c)) = (self.accessed, self.checked) {
            if a < c {
                self.fails = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_accumulate_then_one_probe() {
        let t0 = Instant::now();
        let ft = Duration::from_secs(10);
        let mut p = PeerState::new(1);
        p.on_selected(ft, t0);
        assert!(!p.on_failure(1, 2, t0));
        p.on_success(); // accessed == checked: no reset inside the window
        assert_eq!(p.fails, 1);
        assert!(p.on_failure(1, 2, t0));
        assert!(p.is_failed(2, ft, t0 + Duration::from_secs(10)));
        let later = t0 + Duration::from_secs(11);
        assert!(!p.is_failed(2, ft, later));
        p.on_selected(ft, later); // the probe
        assert!(
            p.is_failed(2, ft, later + Duration::from_secs(1)),
            "others still skip it"
        );
        p.on_success();
        assert_eq!(p.fails, 0);
    }

    #[test]
    fn max_fails_zero_never_marks() {
        let t0 = Instant::now();
        let mut p = PeerState::new(1);
        for _ in 0..5 {
            p.on_failure(1, 0, t0);
        }
        assert!(!p.is_failed(0, Duration::from_secs(10), t0));
    }
}
