//! Signals: SIGHUP reloads, SIGTERM drains, SIGINT stops, SIGQUIT upgrades.
//!
//! On SIGTERM Ferry turns `/healthz` to 503 at once and keeps serving for
//! `admin.drain_delay`, so an outer load balancer takes it out; then Pingora
//! stops accepting and finishes in-flight requests within its grace period
//! (`server.grace_period_seconds`). SIGINT stops fast; SIGQUIT hands the
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
                    return tokio::select! {
                        _ = tokio::time::sleep(self.delay) => ShutdownSignal::GracefulTerminate,
                        _ = int.recv() => ShutdownSignal::FastShutdown,
                    };
                }
            }
        }
    }
}
