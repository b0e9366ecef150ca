//! least_time: the least estimated time per weight, from each server's
//! moving average of header or last-byte time (and, with `inflight`, the
//! age of its requests in flight), times its requests in progress; ties go
//! to smooth weighted round robin among the tied servers.
//!
//! nginx counterpart: `ngx_http_upstream_least_time_module.c`
//! (`get_least_time_peer`, `least_time_eta`, `least_time_notify`,
//! `least_time_inflight_done`, `free_least_time_peer`) and the
//! `ngx_http_upstream_response_time_avg` macro. Times are milliseconds in
//! `u64` with C's unsigned arithmetic (wrapping) where nginx relies on it.

use crate::group::Peer;
use crate::passive_health::PeerState;
use crate::Feedback;
use ferry_conf::{Balance, LeastTime, Measure};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A server's times (nginx's `header_time` ... `inflight_reqs` fields of
/// `ngx_http_upstream_rr_peer_t`), in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Times {
    /// Moving average of the time to the response header.
    pub header_time: u64,
    /// Moving average of the time to the response's last byte.
    pub response_time: u64,
    /// Moving average of the mean age of the requests in flight.
    pub inflight_time: u64,
    /// Sum of the ages of the requests in flight at `inflight_reqs_changed`.
    pub inflight_last: u64,
    /// When `inflight_reqs` last changed (ms on `now_ms`'s clock).
    pub inflight_reqs_changed: u64,
    /// Requests in flight (counted with `inflight` only).
    pub inflight_reqs: u64,
}

/// One try's part in least_time, kept in its lease (nginx `ltp->inflight`
/// and the try's `u->state` times).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing {
    /// This try is counted in its server's `inflight_reqs`.
    pub inflight: bool,
    /// When it was picked (ms on `now_ms`'s clock), if `inflight`.
    pub taken: u64,
    /// The group's averages take this try's header time ([`on_header`]).
    pub counts_header: bool,
    /// `$upstream_header_time` and `$upstream_response_time`, in ms.
    pub header: Option<u64>,
    pub response: Option<u64>,
}

/// nginx's `ngx_current_msec`: milliseconds on a process-wide monotonic clock.
pub(crate) fn now_ms(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    ms(now.saturating_duration_since(epoch))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `ngx_http_upstream_response_time_avg`: an exponential moving average
/// (5% of the new value) rounded half up; the first value is taken as is.
pub(crate) fn average(avg: u64, v: u64) -> u64 {
    if avg == 0 {
        return v;
    }
    (0.5 + (v as f64 * 0.05 + avg as f64 * 0.95)) as u64
}

impl Times {
    /// In the pick loop, for each server it considers: the mean age of its
    /// requests in flight goes into `inflight_time`.
    pub(crate) fn refresh_inflight(&mut self, now: u64) {
        if let Some(mean) = self.inflight_last.checked_div(self.inflight_reqs) {
            let ift = mean.wrapping_add(now.wrapping_sub(self.inflight_reqs_changed));
            self.inflight_time = average(self.inflight_time, ift);
        }
    }

    /// A request in flight more (the server was picked, with `inflight`).
    pub(crate) fn start_inflight(&mut self, now: u64) {
        if self.inflight_reqs > 0 {
            let spent = now.wrapping_sub(self.inflight_reqs_changed);
            self.inflight_last = self
                .inflight_last
                .wrapping_add(spent.wrapping_mul(self.inflight_reqs));
        }
        self.inflight_reqs_changed = now;
        self.inflight_reqs += 1;
    }

    /// `least_time_inflight_done`: a request in flight less, whose age was
    /// `last` (`None`: nginx's unset time, `(ngx_msec_t) -1`, as a try
    /// that failed has; the unsigned sum then wraps to `+1`).
    pub(crate) fn inflight_done(&mut self, now: u64, last: Option<u64>) {
        if self.inflight_reqs == 0 {
            return;
        }
        if self.inflight_reqs == 1 {
            self.inflight_last = 0;
        } else {
            let spent = now.wrapping_sub(self.inflight_reqs_changed);
            self.inflight_last = self
                .inflight_last
                .wrapping_add(spent.wrapping_mul(self.inflight_reqs))
                .wrapping_sub(last.unwrap_or(u64::MAX));
            self.inflight_reqs_changed = now;
        }
        self.inflight_reqs -= 1;
    }
}

/// `ngx_http_upstream_least_time_eta`: the time the server would take to
/// finish what it has, `rt x (1 + conns)`. `decay` is how many times
/// `fail_timeout + 1s` passed since it was last checked (each halves `rt`).
pub(crate) fn eta(t: &Times, measure: Measure, decay: u64, conns: u32) -> u64 {
    let mut rt = match measure {
        Measure::Header => t.header_time,
        Measure::LastByte => t.response_time,
    };
    // A shift of 64 or more is undefined in C; here it leaves nothing.
    rt = u32::try_from(decay)
        .ok()
        .and_then(|d| rt.checked_shr(d))
        .unwrap_or(0);
    if t.inflight_reqs > 0 {
        rt = rt.max(t.inflight_time);
    }
    if rt > 5000 {
        // Past 5 s every server is as bad: least_conn decides.
        rt = 5000;
    } else {
        // 20 ms clusters: close times share the round robin.
        rt += 20 - rt % 20;
    }
    rt.wrapping_mul(1 + u64::from(conns))
}

/// nginx: `if (now - checked > fail_timeout) rt >>= (now - checked) /
/// (fail_timeout + 1)`, in seconds; here in milliseconds, which is the
/// same for whole seconds and extends to fractional `fail_timeout`.
pub(crate) fn decay(st: &PeerState, fail_timeout: Duration, now: Instant) -> u64 {
    match st.checked {
        Some(c) if now.saturating_duration_since(c) > fail_timeout => {
            let passed = ms(now.saturating_duration_since(c));
            passed / ms(fail_timeout).saturating_add(1000)
        }
        _ => 0,
    }
}

/// Pick among `eligible` (not tried, not down, failed or full): the least
/// `eta / weight`, compared as `eta_a x weight_b < eta_b x weight_a`.
pub(crate) fn pick(
    states: &mut [PeerState],
    peers: &[Peer],
    weights: &[u32],
    eligible: &[usize],
    conf: LeastTime,
    now: Instant,
) -> Option<usize> {
    let at = now_ms(now);
    let mut etas = vec![0u64; states.len()];
    let mut best: Option<usize> = None;
    let mut many = false;
    for &i in eligible {
        states[i].times.refresh_inflight(at);
        let d = decay(&states[i], peers[i].fail_timeout, now);
        etas[i] = eta(&states[i].times, conf.measure, d, states[i].conns);
        let Some(b) = best else {
            best = Some(i);
            continue;
        };
        let (ei, eb) = (u128::from(etas[i]), u128::from(etas[b]));
        let (wi, wb) = (u128::from(weights[i]), u128::from(weights[b]));
        if ei * wb < eb * wi {
            best = Some(i);
            many = false;
        } else if ei * wb == eb * wi {
            many = true;
        }
    }
    let b = best?;
    if !many {
        return Some(b);
    }
    let same = |i: usize| {
        u128::from(etas[i]) * u128::from(weights[b]) == u128::from(etas[b]) * u128::from(weights[i])
    };
    let tied: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| i >= b && same(i))
        .collect();
    crate::smooth_weighted::pick(states, weights, &tied)
}

/// The group's least_time settings, if it balances by time.
fn conf(balance: Balance) -> Option<LeastTime> {
    match balance {
        Balance::LeastTime(lt) => Some(lt),
        _ => None,
    }
}

/// After the pick: with `inflight`, the chosen server has one more request
/// in flight (not for a single server, which nginx gives to round robin).
pub(crate) fn on_selected(
    balance: Balance,
    single: bool,
    st: &mut PeerState,
    now: Instant,
) -> Timing {
    let inflight = conf(balance).is_some_and(|c| c.inflight) && !single;
    // Only a try in flight reads when it was taken.
    let at = match inflight {
        true => {
            let at = now_ms(now);
            st.times.start_inflight(at);
            at
        }
        false => 0,
    };
    Timing {
        inflight,
        counts_header: conf(balance).is_some_and(|c| c.inflight && c.measure == Measure::Header),
        taken: at,
        header: None,
        response: None,
    }
}

/// nginx `least_time_notify(NGX_HTTP_UPSTREAM_NOTIFY_HEADER)`, set only with
/// `inflight`: the header of the response to use arrived. With `measure:
/// header` its time is averaged now, and the request leaves flight.
pub(crate) fn on_header(balance: Balance, st: &mut PeerState, timing: &mut Timing, header: u64) {
    let Some(c) = conf(balance) else { return };
    if !c.inflight || c.measure != Measure::Header {
        return;
    }
    st.times.header_time = average(st.times.header_time, header);
    if timing.inflight {
        st.times.inflight_done(now_ms(Instant::now()), Some(header));
        timing.inflight = false;
    }
}

/// nginx `free_least_time_peer`: the try leaves flight; a try that
/// completed without failure (`feedback` Ok, a header read) adds its times
/// to the averages. `feedback` `None`: the request went away mid-try.
pub(crate) fn on_free(
    balance: Balance,
    st: &mut PeerState,
    timing: &Timing,
    feedback: Option<Feedback>,
) {
    let Some(c) = conf(balance) else { return };
    let at = now_ms(Instant::now());
    if timing.inflight {
        let last = match feedback {
            Some(Feedback::Failed | Feedback::Next) => None,
            _ => Some(timing.response.unwrap_or(at.saturating_sub(timing.taken))),
        };
        st.times.inflight_done(at, last);
    }
    if feedback != Some(Feedback::Ok) {
        return;
    }
    let (Some(header), Some(response)) = (timing.header, timing.response) else {
        return;
    };
    st.times.response_time = average(st.times.response_time, response);
    if !(c.inflight && c.measure == Measure::Header) {
        st.times.header_time = average(st.times.header_time, header);
    }
}

#[cfg(test)]
mod tests {
    //! Expected values are nginx's formulas worked by hand (or with
    //! Python's doubles, which are C's): the `ngx_http_upstream_response_time_avg`
    //! macro `avg ? 0.5 + (v * 0.05 + avg * 0.95) : v` truncated to an
    //! integer, `least_time_eta`'s clusters, and `inflight_done`'s sums.
    use super::*;
    use crate::{Feedback, Group, Key};

    #[test]
    fn moving_average_is_nginx_macro() {
        assert_eq!(average(0, 37), 37, "the first value is taken as is");
        // 0.5 + (200 x 0.05 + 100 x 0.95) = 105.5, then 110.25, 115.0, ...
        let mut a = 100;
        let seq: Vec<u64> = (0..5)
            .map(|_| {
                a = average(a, 200);
                a
            })
            .collect();
        assert_eq!(seq, [105, 110, 115, 119, 123]);
        // Rounding holds small averages up: 0.5 + 9.5 = 10, 0.5 + 0.95 = 1.
        assert_eq!(average(10, 0), 10);
        assert_eq!(average(1, 0), 1);
    }

    fn times(header: u64, response: u64) -> Times {
        Times {
            header_time: header,
            response_time: response,
            ..Times::default()
        }
    }

    #[test]
    fn eta_clusters_cap_and_conns() {
        let e = |rt: u64, conns: u32| eta(&times(rt, 0), Measure::Header, 0, conns);
        // rt += 20 - rt % 20: 0 and 19 share a cluster, 20 is the next one.
        assert_eq!((e(0, 0), e(19, 0), e(20, 0), e(39, 0)), (20, 20, 40, 40));
        // `rt > 5000` caps at 5000; 5000 itself still gets its +20.
        assert_eq!((e(5000, 0), e(5001, 0), e(90_000, 0)), (5020, 5000, 5000));
        assert_eq!(e(30, 2), 40 * 3, "times (1 + conns)");
        assert_eq!(
            eta(&times(7, 130), Measure::LastByte, 0, 0),
            140,
            "last_byte reads response_time"
        );
    }

    #[test]
    fn eta_decay_and_inflight() {
        let t = times(400, 0);
        let e = |d: u64| eta(&t, Measure::Header, d, 0);
        // rt >>= decay: 400 -> 200 -> 100; past 63 nothing is left.
        assert_eq!((e(1), e(2), e(70)), (220, 120, 20));
        let mut t = times(30, 0);
        t.inflight_reqs = 1;
        t.inflight_time = 250;
        assert_eq!(
            eta(&t, Measure::Header, 0, 1),
            260 * 2,
            "max(rt, inflight_time)"
        );
        t.inflight_reqs = 0;
        assert_eq!(
            eta(&t, Measure::Header, 0, 0),
            40,
            "no flight: its time is ignored"
        );
    }

    #[test]
    fn decay_counts_fail_timeout_plus_one_second() {
        let now = Instant::now() + Duration::from_secs(100);
        let ft = Duration::from_secs(10);
        let mut st = PeerState::new(1);
        assert_eq!(decay(&st, ft, now), 0, "never checked");
        let at = |secs: u64, ms: u64| now - Duration::from_secs(secs) - Duration::from_millis(ms);
        st.checked = Some(at(10, 0));
        assert_eq!(decay(&st, ft, now), 0, "not past fail_timeout");
        // (now - checked) / (fail_timeout + 1): 11/11 = 1, 21.999/11 = 1, 22/11 = 2.
        st.checked = Some(at(11, 0));
        assert_eq!(decay(&st, ft, now), 1);
        st.checked = Some(at(21, 999));
        assert_eq!(decay(&st, ft, now), 1);
        st.checked = Some(at(22, 0));
        assert_eq!(decay(&st, ft, now), 2);
    }

    #[test]
    fn inflight_sums_follow_nginx() {
        let mut t = Times::default();
        t.start_inflight(1000);
        t.start_inflight(1300);
        assert_eq!((t.inflight_last, t.inflight_reqs), (300, 2));
        // Ages 400 and 100 at 1400: mean 300 / 2 + 100 = 250, taken as is.
        t.refresh_inflight(1400);
        assert_eq!(t.inflight_time, 250);
        // At 1500: 150 + 200 = 350; 0.5 + (17.5 + 237.5) = 255.5.
        t.refresh_inflight(1500);
        assert_eq!(t.inflight_time, 255);
        // The second one (age 200) done: 300 + 200 x 2 - 200 = 500, the
        // first one's age.
        t.inflight_done(1500, Some(200));
        assert_eq!(
            (t.inflight_last, t.inflight_reqs, t.inflight_reqs_changed),
            (500, 1, 1500)
        );
        t.inflight_done(1600, Some(600));
        assert_eq!((t.inflight_last, t.inflight_reqs), (0, 0));
        t.inflight_done(1700, Some(1));
        assert_eq!(t.inflight_reqs, 0, "nothing below zero");
    }

    #[test]
    fn a_failed_try_in_flight_leaves_its_age_as_nginx_does() {
        let mut t = Times::default();
        t.start_inflight(0);
        t.start_inflight(100);
        // nginx subtracts the unset (ngx_msec_t) -1: 100 + 100 x 2 + 1.
        t.inflight_done(200, None);
        assert_eq!((t.inflight_last, t.inflight_reqs), (301, 1));
    }

    fn states(header: &[u64]) -> Vec<PeerState> {
        header
            .iter()
            .map(|&h| {
                let mut s = PeerState::new(1);
                s.times.header_time = h;
                s
            })
            .collect()
    }

    fn peers(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                name: format!("127.0.0.1:{}", i + 1),
                addr: format!("127.0.0.1:{}", i + 1).parse().unwrap(),
                weight: 1,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                max_conns: 0,
                backup: false,
                down: false,
                route: String::new(),
                drain: false,
            })
            .collect()
    }

    const HEADER: LeastTime = LeastTime {
        measure: Measure::Header,
        inflight: false,
    };

    fn picks(st: &mut [PeerState], w: &[u32], n: usize) -> Vec<usize> {
        let p = peers(st.len());
        let all: Vec<usize> = (0..st.len()).collect();
        let now = Instant::now();
        (0..n)
            .map(|_| pick(st, &p, w, &all, HEADER, now).unwrap())
            .collect()
    }

    #[test]
    fn least_time_wins_and_ties_rotate_by_weight() {
        // 30 ms -> 40; 10 and 15 -> 20: the two tied rotate.
        let mut st = states(&[30, 10, 15]);
        assert_eq!(picks(&mut st, &[1, 1, 1], 4), [1, 2, 1, 2]);
        // One cluster for all: plain round robin.
        let mut st = states(&[5, 12, 19]);
        assert_eq!(picks(&mut st, &[1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
        // Per weight: 40 / 2 equals 20 / 1, a tie that smooth weighted
        // round robin splits 2:1.
        let mut st = states(&[30, 10]);
        assert_eq!(picks(&mut st, &[2, 1], 6), [0, 1, 0, 0, 1, 0]);
        // conns count: 20 x (1 + 1) = 40 equals 40 x 1.
        let mut st = states(&[5, 25]);
        st[0].conns = 1;
        assert_eq!(picks(&mut st, &[1, 1], 2), [0, 1]);
        st[0].conns = 2;
        assert_eq!(picks(&mut st, &[1, 1], 2), [1, 1]);
    }

    fn group(conf: LeastTime) -> Group {
        Group::new("g", Balance::LeastTime(conf), peers(2), 2)
    }

    fn report_times(g: &Group) -> Vec<(u64, u64)> {
        g.report()
            .iter()
            .map(|r| (r.header_time, r.response_time))
            .collect()
    }

    #[test]
    fn header_mode_with_inflight_averages_the_header_at_notify() {
        let g = group(LeastTime {
            measure: Measure::Header,
            inflight: true,
        });
        let mut c = g.cursor(0);
        let mut lease = g.select(&mut c, &Key::default()).unwrap();
        let i = lease.index();
        assert_eq!(g.states()[i].times.inflight_reqs, 1);
        lease.header_arrived(Duration::from_millis(40));
        assert_eq!(g.states()[i].times.inflight_reqs, 0);
        assert_eq!(report_times(&g)[i], (40, 0));
        lease.set_times(
            Some(Duration::from_millis(40)),
            Some(Duration::from_millis(90)),
        );
        lease.free(Feedback::Ok, &mut c);
        // free adds the response time only: the header was counted once.
        assert_eq!(report_times(&g)[i], (40, 90));
        assert_eq!(g.states()[i].times.inflight_reqs, 0);
    }

    #[test]
    fn free_averages_successes_only() {
        let g = group(LeastTime {
            measure: Measure::LastByte,
            inflight: true,
        });
        let mut c = g.cursor(0);
        let mut a = g.select(&mut c, &Key::default()).unwrap();
        let i = a.index();
        a.header_arrived(Duration::from_millis(5)); // not header mode: nothing
        assert_eq!(g.states()[i].times.inflight_reqs, 1);
        a.set_times(
            Some(Duration::from_millis(5)),
            Some(Duration::from_millis(300)),
        );
        a.free(Feedback::Ok, &mut c);
        assert_eq!(report_times(&g)[i], (5, 300));
        // A failure and a dropped request leave flight, averaging nothing.
        let mut c = g.cursor(0);
        let mut b = g.select(&mut c, &Key::default()).unwrap();
        let j = b.index();
        b.set_times(
            Some(Duration::from_millis(1)),
            Some(Duration::from_millis(1)),
        );
        let before = report_times(&g)[j];
        b.free(Feedback::Failed, &mut c);
        let d = g.select(&mut g.cursor(0), &Key::default()).unwrap();
        let k = d.index();
        drop(d);
        let st = g.states();
        assert_eq!(report_times(&g)[j], before);
        assert_eq!(
            (st[j].times.inflight_reqs, st[k].times.inflight_reqs),
            (0, 0)
        );
    }

    #[test]
    fn times_survive_a_change_of_members() {
        let g = group(HEADER);
        let mut c = g.cursor(0);
        let mut a = g.select(&mut c, &Key::default()).unwrap();
        let addr = a.peer().addr;
        a.set_times(
            Some(Duration::from_millis(70)),
            Some(Duration::from_millis(80)),
        );
        a.free(Feedback::Ok, &mut c);
        let mut next = peers(3);
        next.reverse();
        g.update(Balance::LeastTime(HEADER), false, next, 3, true);
        let r = g.report();
        let moved = r.iter().find(|r| r.peer.addr == addr).unwrap();
        assert_eq!((moved.header_time, moved.response_time), (70, 80));
        assert_eq!(r.iter().filter(|r| r.header_time == 0).count(), 2);
    }
}
