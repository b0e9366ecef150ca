//! The one thread that expires timers: every [`TICK`] while any timer is
//! armed, parked after a second in which none was.

use crate::table::tables;
use crate::TICK;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

/// Ticks with no timer armed before the sweeper parks (a second): a busy
/// proxy arms and drops a timer per request, and would otherwise wake the
/// sweeper on nearly every one.
const IDLE_TICKS: u32 = 20;

struct Sweeper {
    parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

fn sweeper() -> &'static Sweeper {
    static SWEEPER: OnceLock<Sweeper> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        // Parked until the first timer, which started it.
        let s = Sweeper {
            parked: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        };
        std::thread::Builder::new()
            .name("ferry-timer".into())
            .spawn(run)
            .expect("spawning the timer thread");
        s
    })
}

/// The first timer was armed after none: wake the sweeper if it parked.
pub(crate) fn armed() {
    let s = sweeper();
    if s.parked.load(Ordering::SeqCst) {
        let _held = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
        s.wake.notify_one();
    }
}

fn run() {
    let all = tables();
    let mut wake = Vec::new();
    let (mut idle, mut arms) = (0, all.arms());
    loop {
        std::thread::sleep(TICK);
        all.expire(all.now(), &mut wake);
        wake.drain(..).for_each(std::task::Waker::wake);
        let armed_since = std::mem::replace(&mut arms, all.arms()) != arms;
        idle = match all.any_armed() || armed_since {
            true => 0,
            false => idle + 1,
        };
        if idle >= IDLE_TICKS {
            park();
            idle = 0;
        }
    }
}

/// Sleep until a timer is armed.
fn park() {
    let s = sweeper();
    let all = tables();
    let mut held = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
    s.parked.store(true, Ordering::SeqCst);
    // An arm either sees `parked` (and notifies under the lock) or was
    // counted before this check.
    while !all.any_armed() {
        held = s.wake.wait(held).unwrap_or_else(PoisonError::into_inner);
    }
    s.parked.store(false, Ordering::SeqCst);
}
