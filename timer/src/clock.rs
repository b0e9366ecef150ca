//! A millisecond clock that costs next to nothing to read: the kernel's
//! coarse monotonic clock, which the vDSO answers from memory without
//! reading the CPU's counter. It trails the precise clock by at most one
//! scheduler tick ([`lag_ms`]).
//!
//! nginx counterpart: `ngx_monotonic_time`, which reads
//! `CLOCK_MONOTONIC_COARSE` for `ngx_current_msec`, the time its timers
//! are kept in.

use std::sync::OnceLock;

/// Milliseconds of the coarse monotonic clock (since boot).
pub fn now_ms() -> u64 {
    read(libc::CLOCK_MONOTONIC_COARSE).unwrap_or_else(|| {
        // No coarse clock (not Linux): the precise one.
        read(libc::CLOCK_MONOTONIC).unwrap_or(0)
    })
}

/// How far [`now_ms`] may trail the precise clock, in whole milliseconds
/// (rounded up): a deadline that adds it is never early.
pub fn lag_ms() -> u64 {
    static LAG: OnceLock<u64> = OnceLock::new();
    *LAG.get_or_init(|| {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid timespec for the call to fill.
        let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } == 0;
        match ok {
            true => to_ms_up(&res).max(1),
            // Linux's coarsest tick (100 Hz).
            false => 10,
        }
    })
}

fn read(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(clock, &mut ts) } == 0;
    ok.then(|| {
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
            + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
    })
}

fn to_ms_up(ts: &libc::timespec) -> u64 {
    let ns = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0);
    ns.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_coarse_clock_moves_with_the_precise_one_within_its_lag() {
        let (start, coarse) = (Instant::now(), now_ms());
        std::thread::sleep(Duration::from_millis(30));
        let (precise, moved) = (start.elapsed().as_millis() as u64, now_ms() - coarse);
        assert!(lag_ms() >= 1);
        assert!(
            moved + 2 * lag_ms() >= precise,
            "moved {moved} ms of {precise}"
        );
        assert!(
            moved <= precise + 2 * lag_ms(),
            "moved {moved} ms of {precise}"
        );
    }
}
