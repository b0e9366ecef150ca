//! Signals: SIGHUP reloads, SIGTERM drains, SIGINT stops, SIGQUIT upgrades.
//!
//! On SIGTERM Ferry turns `/healthz` to 503 at once and keeps serving for
//! `admin.drain_delay`, so an outer load balancer takes it out; then Pingora
//! stops accepting and finishes in-flight requests within its grace period
//! (`server.grace_period_seconds`), exiting as soon as nothing is in
//! flight, as nginx's graceful quit does. SIGINT stops fast, during the
//! graceful stop too; SIGQUIT hands the
//! listening sockets to a process started with `--upgrade`.

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Set once SIGTERM arrived.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// How often a stopping Ferry looks whether anything is still in flight.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// What a stopping Ferry waits before it looks: the listeners stop, and
/// connections waiting for a request close (`http_app`'s settle time).
const FIRST_LOOK: Duration = Duration::from_millis(1_200);

/// Pingora sleeps the whole `grace_period_seconds` after a graceful
/// terminate; nginx's graceful quit ends as soon as nothing is in flight.
/// So, once the listeners have stopped: exit when no request has been in
/// flight for two looks in a row (the access log's writer has had time to
/// write the last lines), or at once on SIGINT.
async fn exit_when_idle(mut int: tokio::signal::unix::Signal) {
    let settle = tokio::time::sleep(FIRST_LOOK);
    tokio::pin!(settle);
    let mut quiet = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {
                log::warn!("SIGINT while stopping: exiting now");
                std::process::exit(0);
            }
            _ = &mut settle, if quiet == 0 => quiet = 1,
            _ = tokio::time::sleep(IDLE_CHECK), if quiet > 0 => {
                if crate::metrics::metrics().in_flight.get() > 0 {
                    quiet = 1;
                    continue;
                }
                quiet += 1;
                if quiet > 3 {
                    log::info!("graceful stop: nothing in flight; exiting");
                    std::process::exit(0);
                }
            }
        }
    }
}

/// Pingora's signal watch with a drain step before a graceful terminate.
pub struct DrainingSignals {
    pub draining: Draining,
    pub delay: Duration,
    pub live: Arc<crate::live::Live>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            log::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    // Reading the file and resolving names blocks: off this
                    // thread, which watches the other signals.
                    let live = self.live.clone();
                    let _ = tokio::task::spawn_blocking(move || crate::reload::reload(&live)).await;
                }
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = term.recv() => {
                    self.draining.set();
                    log::warn!("SIGTERM: /healthz says 503; serving {:?} more before the graceful stop", self.delay);
                    let stop = tokio::select! {
                        _ = tokio::time::sleep(self.delay) => ShutdownSignal::GracefulTerminate,
                        _ = int.recv() => ShutdownSignal::FastShutdown,
                    };
                    if let ShutdownSignal::GracefulTerminate = stop {
                        tokio::spawn(exit_when_idle(int));
                    }
                    return stop;
                }
            }
        }
    }
}
