//! A `limit_req` zone's buckets in this process: nginx's leaky bucket per
//! key, to the millisecond, its excess in thousandths of a request, the
//! least recently used keys going first when the zone is full, idle keys
//! expiring as nginx's do.
//!
//! nginx counterpart: `ngx_http_limit_req_lookup`,
//! `ngx_http_limit_req_account`, `ngx_http_limit_req_unlock` and
//! `ngx_http_limit_req_expire` (the rbtree and queue of the shared zone).
//! Every function takes the time (`now`, milliseconds): the tests drive
//! the clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What one zone said of a request (nginx's `rc` of the lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Past the burst (`NGX_BUSY`), with the excess it would have had.
    Busy(u64),
    /// Charged (`NGX_OK`, the last zone), with its excess now.
    Charged(u64),
    /// Within the burst, not charged yet (`NGX_AGAIN`, a zone before the
    /// last): pinned until [`Buckets::account`] or [`Buckets::unpin`].
    Again(u64),
}

/// One key's bucket (nginx's `ngx_http_limit_req_node_t`).
#[derive(Debug, Clone)]
struct Bucket {
    /// Thousandths of a request over the rate.
    excess: i64,
    /// When the excess was last brought up to date, in ms.
    last: u64,
    /// Requests that looked at it and are not accounted yet: a pinned
    /// bucket is never expired.
    count: u32,
    /// Its place in the least recently used order.
    used: u64,
}

struct Inner {
    map: HashMap<Box<[u8]>, Bucket>,
    /// `used` -> key, oldest first (nginx's queue).
    order: BTreeMap<u64, Box<[u8]>>,
    next: u64,
}

/// A zone's buckets: one lock, held only for the arithmetic.
pub(crate) struct Buckets {
    inner: Mutex<Inner>,
    max_keys: usize,
}

/// nginx's `ms` since `last`, clamped as it clamps a clock that went
/// back.
fn elapsed(now: u64, last: u64) -> i64 {
    let ms = now.wrapping_sub(last) as i64;
    if ms < -60_000 {
        1
    } else {
        ms.max(0)
    }
}

/// The excess after `ms` at `rate` thousandths per second, plus this
/// request's thousand (nginx: `excess - rate * ms / 1000 + 1000`, at
/// least 0).
pub(crate) fn leak(excess: i64, rate: u64, ms: i64) -> i64 {
    let drained = i128::from(rate) * i128::from(ms) / 1000;
    let left = i128::from(excess) - drained + 1000;
    left.clamp(0, i128::from(i64::MAX)) as i64
}

impl Buckets {
    pub(crate) fn new(max_keys: usize) -> Buckets {
        Buckets {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                next: 0,
            }),
            max_keys: max_keys.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// nginx's lookup: the key's excess now against `burst` (thousandths);
    /// with `account` (the route's last zone) the bucket is charged,
    /// otherwise only pinned. `None` when the zone is full of pinned keys
    /// (nginx: no memory for the node), which refuses the request.
    pub(crate) fn lookup(
        &self,
        key: &[u8],
        rate: u64,
        burst: u64,
        account: bool,
        now: u64,
    ) -> Option<Lookup> {
        let mut g = self.lock();
        let inner = &mut *g;
        let used = inner.next;
        inner.next += 1;
        if let Some(b) = inner.map.get_mut(key) {
            // To the front of the queue, the key's box moved, not copied.
            let boxed = inner.order.remove(&b.used).unwrap_or_else(|| key.into());
            b.used = used;
            inner.order.insert(used, boxed);
            let ms = elapsed(now, b.last);
            let excess = leak(b.excess, rate, ms);
            if excess as u64 > burst {
                return Some(Lookup::Busy(excess as u64));
            }
            if account {
                b.excess = excess;
                if ms != 0 {
                    b.last = now;
                }
                return Some(Lookup::Charged(excess as u64));
            }
            b.count += 1;
            return Some(Lookup::Again(excess as u64));
        }
        expire(inner, rate, now, false);
        if inner.map.len() >= self.max_keys && !expire(inner, rate, now, true) {
            return None;
        }
        // nginx makes a key a zone before the last sees with `last = 0`:
        // whenever it is charged, its excess comes out 0. -1000 does the
        // same on this clock.
        let bucket = Bucket {
            excess: if account { 0 } else { -1000 },
            last: now,
            count: u32::from(!account),
            used,
        };
        inner.map.insert(key.into(), bucket);
        inner.order.insert(used, key.into());
        Some(if account {
            Lookup::Charged(0)
        } else {
            Lookup::Again(0)
        })
    }

    /// nginx's account step for a pinned key once every zone let the
    /// request through: the excess brought up to date and charged (no
    /// burst check), the pin taken off. The excess charged.
    pub(crate) fn account(&self, key: &[u8], rate: u64, now: u64) -> u64 {
        let mut g = self.lock();
        let Some(b) = g.map.get_mut(key) else {
            return 0;
        };
        let ms = elapsed(now, b.last);
        b.excess = leak(b.excess, rate, ms);
        if ms != 0 {
            b.last = now;
        }
        b.count = b.count.saturating_sub(1);
        b.excess as u64
    }

    /// The pin taken off without charging (a later zone refused).
    pub(crate) fn unpin(&self, key: &[u8]) {
        if let Some(b) = self.lock().map.get_mut(key) {
            b.count = b.count.saturating_sub(1);
        }
    }
}

/// nginx's `ngx_http_limit_req_expire`: the least recently used keys
/// looked at, up to two of them removed when idle a minute and drained;
/// with `force`, the oldest goes first whatever it holds. A pinned key
/// stops the walk. Whether a key was removed.
fn expire(inner: &mut Inner, rate: u64, now: u64, force: bool) -> bool {
    let mut removed = false;
    let mut n = u8::from(!force);
    while n < 3 {
        let Some((&used, _)) = inner.order.iter().next() else {
            return removed;
        };
        let Some(key) = inner.order.get(&used).cloned() else {
            return removed;
        };
        let Some(b) = inner.map.get(&key) else {
            inner.order.remove(&used);
            continue;
        };
        if b.count > 0 {
            return removed;
        }
        if n != 0 {
            let ms = now.abs_diff(b.last);
            let left = i128::from(b.excess) - i128::from(rate) * i128::from(ms) / 1000;
            if ms < 60_000 || left > 0 {
                return removed;
            }
        }
        n += 1;
        inner.order.remove(&used);
        inner.map.remove(&key);
        removed = true;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE_10: u64 = 10_000; // 10r/s

    #[test]
    fn burst_to_the_millisecond() {
        // 10r/s, burst 2: the first passes with no excess, the next two
        // queue at 1.000 and 2.000, the fourth is refused at 3.000.
        let z = Buckets::new(100);
        let at = |now| z.lookup(b"k", RATE_10, 2000, true, now);
        assert_eq!(at(0), Some(Lookup::Charged(0)));
        assert_eq!(at(0), Some(Lookup::Charged(1000)));
        assert_eq!(at(0), Some(Lookup::Charged(2000)));
        assert_eq!(at(0), Some(Lookup::Busy(3000)));
        // A refused request is not charged: 50 ms later 500 leaked.
        assert_eq!(at(50), Some(Lookup::Busy(2500)));
        // 100 ms after the last charge one request's worth drained.
        assert_eq!(at(100), Some(Lookup::Charged(2000)));
        // 99 ms drains 990 thousandths: 2000 - 990 + 1000 = 2010 > 2000.
        assert_eq!(at(199), Some(Lookup::Busy(2010)));
        assert_eq!(at(200), Some(Lookup::Charged(2000)));
        // Idle long: the excess is gone.
        assert_eq!(at(10_000), Some(Lookup::Charged(0)));
    }

    #[test]
    fn per_minute_rates_truncate_as_nginx() {
        // 1r/m is 16 thousandths a second: a request's worth drains in
        // 62.5 s, the arithmetic truncating each step.
        let z = Buckets::new(100);
        assert_eq!(z.lookup(b"k", 16, 0, true, 0), Some(Lookup::Charged(0)));
        assert_eq!(z.lookup(b"k", 16, 0, true, 60_000), Some(Lookup::Busy(40)));
        assert_eq!(
            z.lookup(b"k", 16, 0, true, 62_500),
            Some(Lookup::Charged(0))
        );
    }

    #[test]
    fn a_clock_that_goes_back_is_clamped() {
        let z = Buckets::new(100);
        z.lookup(b"k", RATE_10, 5000, true, 100_000);
        // 10 s back: ms = 0, nothing leaks.
        assert_eq!(
            z.lookup(b"k", RATE_10, 5000, true, 90_000),
            Some(Lookup::Charged(1000))
        );
        // Over a minute back: nginx counts 1 ms.
        assert_eq!(
            z.lookup(b"k", RATE_10, 5000, true, 10_000),
            Some(Lookup::Charged(1990))
        );
    }

    #[test]
    fn pinned_keys_are_charged_on_account_and_freed_on_unpin() {
        let z = Buckets::new(100);
        assert_eq!(z.lookup(b"a", RATE_10, 0, false, 0), Some(Lookup::Again(0)));
        assert_eq!(z.account(b"a", RATE_10, 0), 0);
        assert_eq!(
            z.lookup(b"a", RATE_10, 5000, false, 0),
            Some(Lookup::Again(1000))
        );
        z.unpin(b"a");
        // Not charged: the next still sees 1.000.
        assert_eq!(
            z.lookup(b"a", RATE_10, 5000, true, 0),
            Some(Lookup::Charged(1000))
        );
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_expire() {
        let z = Buckets::new(3);
        for k in [b"a", b"b", b"c", b"d"] {
            assert!(z.lookup(k, RATE_10, 0, true, 0).is_some());
        }
        // Full: the least recently used went.
        assert_eq!(z.len(), 3);
        assert_eq!(
            z.lookup(b"a", RATE_10, 0, true, 0),
            Some(Lookup::Charged(0))
        );
        // A minute idle and drained: a new key takes up to two old ones.
        z.lookup(b"e", RATE_10, 0, true, 61_000);
        assert!(z.len() <= 2, "{}", z.len());
        // Pinned keys are never forced out: a full zone of them refuses.
        let z = Buckets::new(1);
        assert!(z.lookup(b"p", RATE_10, 0, false, 0).is_some());
        assert_eq!(z.lookup(b"q", RATE_10, 0, true, 0), None);
    }
}
