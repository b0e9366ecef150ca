//! ferry-timer: coarse timers for the waits of a proxy that almost never
//! fire: an upstream's read timeout, the look at a client that may have
//! left. Each is armed and dropped on nearly every request, and expires
//! on almost none.
//!
//! nginx counterpart: the event timers (`ngx_event_timer.c`), a tree of
//! deadlines that the event loop expires between two waits, with
//! millisecond-coarse time. Pingora's counterpart is `pingora-timeout`'s
//! fast timeout, which registers each timer in a time-sorted map.
//!
//! Here a waiting timer holds a slot (its deadline, in ticks of
//! [`TICK`], and its task's waker) in one of a few locked tables, and one
//! sweeper thread for the process wakes those whose deadline passed, once
//! per tick, while any timer is armed. Arming is a lock and a store;
//! dropping, a lock and a free. A timer fires no earlier than its
//! duration after its first poll, and at most about two ticks later.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! let answer = ferry_timer::timeout(Duration::from_secs(5), async { 42 }).await;
//! assert_eq!(answer.ok(), Some(42));
//! let never = std::future::pending::<()>();
//! assert!(ferry_timer::timeout(Duration::from_millis(10), never).await.is_err());
//! # }
//! ```

#![warn(missing_docs)]

pub mod clock;
mod sweeper;
mod table;

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

/// How often the sweeper looks for deadlines that passed, and the unit
/// deadlines are kept in (rounded up).
pub const TICK: Duration = Duration::from_millis(50);

/// The deadline passed before the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Resolves `duration` after its first poll (no earlier, and at most
/// about two [`TICK`]s later). Dropped before then, it frees its slot.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        slot: None,
    }
}

/// `work`, unless `duration` passes first. Work that is done at its first
/// poll arms no timer.
pub async fn timeout<F: Future>(duration: Duration, work: F) -> Result<F::Output, Elapsed> {
    let mut work = pin!(work);
    let mut sleep = sleep(duration);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// [`sleep`]'s future.
#[derive(Debug)]
pub struct Sleep {
    duration: Duration,
    /// Held from the first poll until the end.
    slot: Option<table::Held>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match &this.slot {
            Some(held) => match held.fired(cx.waker()) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            },
            None if this.duration.is_zero() => Poll::Ready(()),
            None => {
                this.slot = Some(table::Held::arm(this.duration, cx.waker()));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The most any wait here takes.
    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test(flavor = "current_thread")]
    async fn a_sleep_ends_no_earlier_than_its_duration_and_not_much_later() {
        for ms in [1, 60, 230] {
            let d = Duration::from_millis(ms);
            let start = Instant::now();
            tokio::time::timeout(WAIT, sleep(d)).await.expect("in time");
            let took = start.elapsed();
            assert!(took >= d, "{ms} ms: ended after {took:?}");
            assert!(took < d + TICK * 4, "{ms} ms: ended after {took:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_timers_on_many_threads_each_end_and_free_their_slot() {
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                tokio::spawn(async move {
                    let d = Duration::from_millis(i % 7 * 20);
                    let start = Instant::now();
                    match i % 2 {
                        0 => sleep(d).await,
                        // Work done first: its timer is dropped armed.
                        _ => timeout(WAIT, tokio::time::sleep(d))
                            .await
                            .expect("work first"),
                    }
                    start.elapsed() >= d
                })
            })
            .collect();
        for t in tasks {
            let no_earlier = tokio::time::timeout(WAIT, t).await.expect("in time");
            assert!(no_earlier.expect("the task"));
        }
        // Other tests' timers share the tables: wait (bounded) for none.
        let start = Instant::now();
        while table::armed() > 0 {
            assert!(start.elapsed() < WAIT, "a slot was never freed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn work_done_at_once_arms_nothing_and_a_late_one_elapses() {
        assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Ok(7));
        let start = Instant::now();
        let late = timeout(Duration::from_millis(100), std::future::pending::<()>());
        assert_eq!(late.await, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
