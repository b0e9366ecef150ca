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
//! [`server`] starts it all from the command line; `runtime` is the
//! configuration compiled for serving.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod allocator;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod health_check;
pub(crate) mod hooks;
pub(crate) mod metrics;
pub(crate) mod preflight;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod upstream;

pub use hooks::proxy_trait::{DefaultProxy, PeerChoice, ProxyHttp, RetryDecision};
pub use hooks::session::Session;
pub use request::record::{Request, Try, TryOutcome};
pub use server::{main, run, run_with_settings, DEFAULT_CONF};
pub use upstream::subrequest::SubResponse;

/// Re-exported so programs built on Ferry need no direct dependency on them.
pub use {async_trait::async_trait, bytes, ferry_conf as conf, pingora_error, pingora_http};
