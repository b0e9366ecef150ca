#![deny(missing_docs)]
//! Ferry: a reverse proxy with nginx's upstream semantics, on Pingora. Run
//! it as a binary (`ferry -c ferry.yaml`), or write a program: implement
//! [`ProxyHttp`] (Pingora's hook names), and hand it to [`run`] or
//! [`Program`]. Every hook you leave out does what the YAML says.
//!
//! ```no_run
//! use ferry::pingora_error::Result;
//! use ferry::pingora_http::{RequestHeader, ResponseHeader};
//! use ferry::{async_trait, ProxyHttp, Session};
//!
//! /// An API gateway: a key on `/api/`, and a header upstream.
//! struct Gateway;
//!
//! #[async_trait]
//! impl ProxyHttp for Gateway {
//!     type CTX = ();
//!     fn new_ctx(&self) {}
//!
//!     async fn request_filter(&self, s: &mut Session, _: &mut ()) -> Result<bool> {
//!         let keyed = s.req_header().headers.get("x-api-key").is_some();
//!         if s.req_header().uri.path().starts_with("/api/") && !keyed {
//!             s.respond(ResponseHeader::build(401, None)?, "no key\n".into()).await?;
//!             return Ok(true);
//!         }
//!         Ok(false)
//!     }
//!
//!     async fn upstream_request_filter(
//!         &self,
//!         _s: &mut Session,
//!         req: &mut RequestHeader,
//!         _: &mut (),
//!     ) -> Result<()> {
//!         req.insert_header("X-Gateway", "ferry")?;
//!         Ok(())
//!     }
//! }
//!
//! fn main() {
//!     // `gateway -c gateway.yaml`, `-t`, `-s reload`, `--upgrade`, `--help`.
//!     std::process::exit(ferry::run(Gateway, "gateway.yaml"));
//! }
//! ```
//!
//! What a program uses:
//!
//! - [`ProxyHttp`]: the hooks, in the order a request meets them (its page
//!   has the table, and an example on each).
//! - [`Session`]: what a hook sees and does: the client's header, Ferry's
//!   [`Request`] record (route, [`Try`]s, status), [`Session::respond`],
//!   [`Session::subrequest`], [`Session::body_length_changes`].
//! - [`PeerChoice`] and [`Peer`]: where `upstream_peer` sends a try: the
//!   route's group, another group, or a server chosen at run time.
//! - [`RetryDecision`], [`FailToProxy`] and [`error_status`]: what
//!   `upstream_response_filter` and `fail_to_proxy` answer.
//! - [`CacheDecision`] and [`CacheStatus`]: what `response_cache_filter`
//!   decides, and what the route's cache did (`$upstream_cache_status`).
//! - [`Program`] and [`Start`] (with [`run`] as its one-line form): the
//!   command line, the program's own settings in the YAML (`S`, with
//!   `FILE:LINE:COLUMN` errors), and its start, checked by `-t`; [`serde`]
//!   and [`clap`] re-exported for them.
//! - [`conf`]: the configuration types (`conf::Config`, `conf::Problem`).
//!
//! Inside, a request's way is one folder per layer, read top to bottom:
//! `client/` (the connection before any request: PROXY protocol, the
//! header deadline and bound, the real client address), `request/` (the
//! phases in `flow.rs`: refuse, early filter, route, request filter,
//! `return`, body, the upstream loop, response, finalize), `upstream/`
//! (nginx's upstream loop, `tries.rs`, for requests, upgrades and
//! subrequests), `response/` (header, body pipes, tunnel) and `hooks/`.
//! `server.rs` starts it all; `runtime.rs` is the configuration compiled
//! for serving, `live.rs` the pointer a reload swaps.

pub(crate) mod access_log;
pub(crate) mod admin;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub(crate) mod boxed;
pub(crate) mod cache;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod config_file;
pub(crate) mod discovery;
pub(crate) mod health_check;
pub(crate) mod hooks;
pub(crate) mod limit;
pub(crate) mod listener;
pub(crate) mod live;
pub(crate) mod log_time;
pub(crate) mod metrics;
pub(crate) mod preflight;
pub(crate) mod program;
pub(crate) mod record;
pub(crate) mod reload;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod upstream;

/// What the cargo-fuzz targets in `fuzz/` drive; not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::client::header_bound::HeaderBound;
    use crate::request::route::{normalize_path, request_host, valid_host};

    /// Ferry's own work on a connection's first bytes, before Pingora's
    /// parser and routing: none of it may panic, wherever the reads split.
    pub fn request_path(data: &[u8]) {
        for split in [0, data.len() / 3, data.len() / 2, data.len()] {
            let mut bound = HeaderBound::new(8192, 32768);
            let (a, b) = data.split_at(split.min(data.len()));
            let _ = bound.feed(a).and_then(|()| bound.feed(b));
        }
        let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
        let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        if let Some(path) = normalize_path(&String::from_utf8_lossy(target)) {
            assert!(path.starts_with('/'), "{path}");
        }
        for header in data.split(|&b| b == b'\n').skip(1) {
            if let Some(host) = header.strip_prefix(b"Host: ") {
                let _ = valid_host(host);
                let _ = request_host(Some(host));
            }
        }
    }
}

pub use hooks::peer_choice::{Peer, PeerChoice};
pub use hooks::proxy_trait::{
    error_status, CacheDecision, DefaultProxy, FailToProxy, ProxyHttp, RetryDecision,
};
pub use hooks::session::Session;
pub use limit::api::{LimitKind, LimitRefusal, LimitVerdict};
pub use limit::LimitStatus;
pub use program::{run, Program, Start};
pub use record::{CacheStatus, Request, Try, TryOutcome};
pub use server::DEFAULT_CONF;
pub use upstream::subrequest::SubResponse;

/// The Prometheus registry of Ferry's `/metrics`: a program registers its
/// own collectors (counters, gauges, histograms of the re-exported
/// [`prometheus`] crate) and they are exported beside Ferry's.
///
/// ```
/// let served = ferry::prometheus::IntCounter::new("mygw_served_total", "Requests served")
///     .expect("a valid metric");
/// ferry::metrics_registry()
///     .register(Box::new(served.clone()))
///     .expect("registered once");
/// served.inc();
/// ```
pub fn metrics_registry() -> &'static prometheus::Registry {
    metrics::registry()
}

/// Re-exported so programs built on Ferry need no direct dependency on them.
pub use {
    async_trait::async_trait, bytes, clap, ferry_conf as conf, http, pingora_core, pingora_error,
    pingora_http, prometheus, serde,
};
