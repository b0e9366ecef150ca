//! The armed timers: a few tables of slots, each slot a deadline in ticks
//! and the waker of the task that waits. A thread arms its timers in one
//! table (chosen once per thread), so that threads seldom share a lock.

use crate::clock;
use crate::sweeper;
use crate::TICK;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::Duration;

/// Tables of slots.
const TABLES: usize = 8;

/// [`TICK`] in milliseconds.
const TICK_MS: u64 = TICK.as_millis() as u64;

/// A deadline far enough to be never.
const NEVER: u32 = u32::MAX;

pub(crate) struct Tables {
    /// The coarse clock's millisecond ticks count from.
    epoch_ms: u64,
    tables: [Mutex<Table>; TABLES],
    /// Timers armed, all tables together.
    armed: AtomicUsize,
    /// Timers ever armed: the sweeper parks only after a while of none.
    arms: AtomicUsize,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    /// Free slots.
    free: Vec<u32>,
}

struct Slot {
    /// Ticks after the epoch (`NEVER`: a free slot).
    until: u32,
    /// `None` once fired (the sweeper took it to wake the task).
    waker: Option<Waker>,
}

pub(crate) fn tables() -> &'static Tables {
    static TABLES_: OnceLock<Tables> = OnceLock::new();
    TABLES_.get_or_init(|| Tables {
        epoch_ms: clock::now_ms(),
        tables: std::array::from_fn(|_| Mutex::new(Table::default())),
        armed: AtomicUsize::new(0),
        arms: AtomicUsize::new(0),
    })
}

/// This thread's table.
fn mine() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % TABLES;
    }
    MINE.with(|m| *m)
}

/// Timers armed now (for tests).
#[cfg(test)]
pub(crate) fn armed() -> usize {
    tables().armed.load(Ordering::SeqCst)
}

impl Tables {
    fn lock(&self, table: usize) -> MutexGuard<'_, Table> {
        self.tables[table]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whole ticks since the epoch, by the coarse clock (which may trail:
    /// a timer fires late by that, never early).
    pub(crate) fn now(&self) -> u32 {
        let ticks = clock::now_ms().saturating_sub(self.epoch_ms) / TICK_MS;
        u32::try_from(ticks).unwrap_or(NEVER - 1)
    }

    /// The first tick at or after `duration` from now: never early, the
    /// coarse clock's lag added.
    fn deadline(&self, duration: Duration) -> u32 {
        let wait = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let at = clock::now_ms()
            .saturating_sub(self.epoch_ms)
            .saturating_add(wait)
            .saturating_add(clock::lag_ms() + u64::from(duration.subsec_nanos() % 1_000_000 != 0));
        u32::try_from(at.div_ceil(TICK_MS)).map_or(NEVER - 1, |t| t.min(NEVER - 1))
    }

    pub(crate) fn any_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst) > 0
    }

    /// Timers ever armed (wrapping).
    pub(crate) fn arms(&self) -> usize {
        self.arms.load(Ordering::Relaxed)
    }

    /// Take the wakers of the timers whose deadline is at or before `now`.
    pub(crate) fn expire(&self, now: u32, into: &mut Vec<Waker>) {
        for t in 0..TABLES {
            let mut table = self.lock(t);
            let passed = table.slots.iter_mut().filter(|s| s.until <= now);
            into.extend(passed.filter_map(|s| s.waker.take()));
        }
    }
}

/// An armed timer's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Held {
    table: u8,
    slot: u32,
}

impl Held {
    /// Arm a timer of `duration` for the task of `waker`.
    pub(crate) fn arm(duration: Duration, waker: &Waker) -> Held {
        let all = tables();
        let until = all.deadline(duration);
        let table = mine();
        let slot = {
            let mut t = all.lock(table);
            let slot = Slot {
                until,
                waker: Some(waker.clone()),
            };
            match t.free.pop() {
                Some(i) => {
                    t.slots[i as usize] = slot;
                    i
                }
                None => {
                    t.slots.push(slot);
                    (t.slots.len() - 1) as u32
                }
            }
        };
        all.arms.fetch_add(1, Ordering::Relaxed);
        if all.armed.fetch_add(1, Ordering::SeqCst) == 0 {
            sweeper::armed();
        }
        Held {
            table: table as u8,
            slot,
        }
    }

    /// Whether the timer fired; if not, `waker` is the one to wake.
    pub(crate) fn fired(&self, waker: &Waker) -> bool {
        let mut t = tables().lock(self.table as usize);
        let slot = &mut t.slots[self.slot as usize];
        match &mut slot.waker {
            None => true,
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                false
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let all = tables();
        let waker = {
            let mut t = all.lock(self.table as usize);
            let slot = &mut t.slots[self.slot as usize];
            slot.until = NEVER;
            let waker = slot.waker.take();
            t.free.push(self.slot);
            waker
        };
        all.armed.fetch_sub(1, Ordering::SeqCst);
        // Dropped outside the lock: a waker's drop may run a task's code.
        drop(waker);
    }
}
