//! The access log's `time`: RFC 3339 in UTC with milliseconds
//! (`2026-11-21T06:00:00.123Z`), the text of the current second made once
//! per second and thread and kept; a line adds only its milliseconds.
//!
//! nginx counterpart: `ngx_cached_http_log_iso8601`, the time strings
//! `ngx_time_update` formats once and every log line copies.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// One second's `YYYY-MM-DDTHH:MM:SS.`.
#[derive(Clone, Copy)]
struct Second {
    epoch: u64,
    text: [u8; 20],
}

thread_local! {
    static CACHED: Cell<Second> = const {
        Cell::new(Second { epoch: u64::MAX, text: [0; 20] })
    };
}

/// The last second the 4-digit year can write: 9999-12-31T23:59:59Z.
const LAST: u64 = 253_402_300_799;

/// Appends `t` as `2026-11-21T06:00:00.123Z` (the milliseconds truncated);
/// a clock before 1970 writes the epoch, one past year 9999 its last second.
pub(crate) fn push(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().min(LAST);
    let ms = d.subsec_millis();
    let mut second = CACHED.get();
    if second.epoch != secs {
        second = Second {
            epoch: secs,
            text: second_text(secs),
        };
        CACHED.set(second);
    }
    out.extend_from_slice(&second.text);
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` after the epoch (at most [`LAST`]).
fn second_text(secs: u64) -> [u8; 20] {
    let (y, m, d) = civil(secs / 86_400);
    let t = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.";
    let two = |out: &mut [u8; 20], at: usize, v: u64| {
        out[at] = b'0' + (v / 10 % 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 0, y / 100);
    two(&mut out, 2, y);
    two(&mut out, 5, m);
    two(&mut out, 8, d);
    two(&mut out, 11, t / 3600);
    two(&mut out, 14, t / 60 % 60);
    two(&mut out, 17, t % 60);
    out
}

/// Year, month, day of `days` after 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, from 0000-03-01).
pub(crate) fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn text(t: SystemTime) -> String {
        let mut out = Vec::new();
        super::push(&mut out, t);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn the_cached_second_writes_what_a_fresh_format_writes() {
        // Leap days, ends of months and years, centuries (2000 leap, 2100
        // not), the epoch and the last second; each instant twice and with
        // its neighbours, so the cache is both hit and replaced.
        let mut instants = vec![0, 1, 86_399, 86_400, 951_782_400, 951_868_799, 951_868_800];
        instants.extend([1_709_164_800, 1_735_689_599, 1_764_979_200, 4_107_542_399]);
        instants.extend([4_107_542_400, 4_110_048_000, super::LAST]);
        let mut s = 0u64;
        while s < 4_200_000_000 {
            instants.push(s);
            s += 7_777_777; // every part of the year, over 130 years
        }
        for secs in instants {
            for ms in [0, 1, 9, 10, 99, 100, 500, 999] {
                for nanos_extra in [0, 999_999] {
                    let t = UNIX_EPOCH + Duration::new(secs, ms * 1_000_000 + nanos_extra);
                    let fresh = humantime::format_rfc3339_millis(t).to_string();
                    assert_eq!(text(t), fresh, "{secs}.{ms}");
                    assert_eq!(text(t), fresh, "{secs}.{ms} again");
                }
            }
        }
    }

    #[test]
    fn now_is_formatted_as_a_fresh_format_of_the_same_instant() {
        let now = SystemTime::now();
        assert_eq!(text(now), humantime::format_rfc3339_millis(now).to_string());
    }

    #[test]
    fn clocks_out_of_range_are_clamped_not_panicking() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(text(before), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(super::LAST + 100);
        assert_eq!(text(after), "9999-12-31T23:59:59.000Z");
    }
}
