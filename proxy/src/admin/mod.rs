//! The admin endpoint (`admin.listen`).
//!
//! - `GET /healthz`: 200 while serving; 503 from the moment SIGTERM arrives.
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//! - `GET /upstreams`, `PATCH /upstreams/GROUP/servers/ADDR`: the groups'
//!   servers as they stand, and taking one out by hand
//!   ([`upstreams`]).
//!
//! Signals, draining and reload on SIGHUP are in [`signals`].

mod cache;
mod signals;
mod upstreams;

pub use signals::{Draining, DrainingSignals};

use crate::live::Live;
use crate::metrics::metrics;
use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

pub struct AdminApp {
    pub draining: Draining,
    pub live: Arc<Live>,
}

pub(crate) fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_default()
}

/// A plain-text answer of one line.
pub(crate) fn text(status: u16, line: &str) -> Response<Vec<u8>> {
    reply(status, "text/plain", format!("{line}\n").into_bytes())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" if self.draining.is_set() => text(503, "draining"),
            "/healthz" => text(200, "ok"),
            "/metrics" => {
                let rt = self.live.current();
                let servers = rt
                    .upstreams
                    .iter()
                    .map(|(name, u)| {
                        let addrs = u.group.peers().iter().map(|p| p.addr.to_string()).collect();
                        (name.as_str(), addrs)
                    })
                    .collect();
                reply(
                    200,
                    "text/plain; version=0.0.4",
                    metrics().render_with(&rt.caches, &servers),
                )
            }
            p if p.starts_with("/cache/") => cache::serve(&self.live, s).await,
            p if p == "/upstreams" || p.starts_with("/upstreams/") => {
                upstreams::serve(&self.live, s).await
            }
            _ => text(404, "not found"),
        }
    }
}
