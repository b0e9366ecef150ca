//! The admin endpoint (`admin.listen`) and draining.
//!
//! - `GET /healthz`: 200 while serving; 503 from the moment SIGTERM arrives.
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//!
//! On SIGTERM Ferry turns `/healthz` to 503 at once and keeps serving for
//! `admin.drain_delay`, so an outer load balancer takes it out; then Pingora
//! stops accepting and finishes in-flight requests within its grace period
//! (`server.grace_period_seconds`). SIGINT stops fast; SIGQUIT hands the
//! listening sockets to a process started with `--upgrade`.

use crate::metrics::metrics;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
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
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub struct AdminApp {
    pub draining: Draining,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" if self.draining.is_set() => {
                reply(503, "text/plain", b"draining\n".to_vec())
            }
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            "/metrics" => reply(200, "text/plain; version=0.0.4", metrics().render()),
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}

/// Pingora's signal watch with a drain step before a graceful terminate.
pub struct DrainingSignals {
    pub draining: Draining,
    pub delay: Duration,
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
                // nginx reloads on SIGHUP; Ferry cannot yet, and the default
                // action (exit, dropping every request in flight) is worse.
                _ = hup.recv() => log::warn!(
                    "SIGHUP: reloading is not supported yet; ignored (a new configuration needs a graceful upgrade: start the new process with --upgrade, then SIGQUIT this one)"
                ),
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
