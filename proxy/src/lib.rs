//! Ferry: nginx's upstream semantics on Pingora, as a binary (`ferry -c
//! ferry.yaml`) and as a framework (implement [`ProxyHttp`], call
//! [`main`]).
//!
//! A request's way, one folder per layer, read top to bottom:
//!
//! 1. `client/`: the connection before any request: the PROXY protocol
//!    header, the whole-header deadline (`client_header_timeout`), the real
//!    client address behind trusted proxies, refusals counted and logged.
//! 2. `request/`: the request itself: the HTTP app that reads each request
//!    header, the phases (`flow`: route, `request_filter`, `return`, the
//!    client body, the upstream loop, the response, finalize), routing,
//!    Ferry's own answers, and the record `logging` sees.
//! 3. `upstream/`: nginx's upstream loop, one implementation for requests,
//!    upgrades and subrequests (`tries`): peer, connect and keepalive, send,
//!    read the header, the `next_upstream` rules.
//! 4. `response/`: the client's response header, the body pipes (buffered
//!    event pipe or unbuffered), and the tunnel after a `101`.
//! 5. `hooks/`: the [`ProxyHttp`] trait and the [`Session`] a hook sees.
//!
//! `server` starts it all from the command line; `runtime` is the
//! configuration compiled for serving.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod allocator;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod discovery;
pub(crate) mod health_check;
pub(crate) mod hooks;
pub(crate) mod live;
pub(crate) mod metrics;
pub(crate) mod preflight;
pub(crate) mod program;
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
pub use hooks::proxy_trait::{error_status, DefaultProxy, FailToProxy, ProxyHttp, RetryDecision};
pub use hooks::session::Session;
pub use request::record::{Request, Try, TryOutcome};
pub use program::{Program, Start};
pub use server::{main, run, run_with_settings, DEFAULT_CONF};
pub use upstream::subrequest::SubResponse;

/// Re-exported so programs built on Ferry need no direct dependency on them.
pub use {
    async_trait::async_trait, bytes, ferry_conf as conf, pingora_core, pingora_error, pingora_http,
};
