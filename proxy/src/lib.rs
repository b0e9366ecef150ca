//! Ferry: nginx's upstream semantics on Pingora, as a binary (`ferry -c
//! ferry.yaml`) and as a framework (implement [`ProxyHttp`], call
//! [`main`]).
//!
//! A request's way, one module each, in order:
//!
//! 1. [`route`]: host, then longest `path_prefix`.
//! 2. `request_filter` hook ([`ProxyHttp`]), `return` routes ([`respond`]).
//! 3. [`client_body`]: the request body, buffered for replay.
//! 4. [`tries`]: peer ([`ferry_lb`]), [`connect`], [`send_request`],
//!    [`read_header`], then [`next_upstream`] decides: next server, or this
//!    response.
//! 5. [`response_header`]: the client's header; `response_filter` hook.
//! 6. [`body_pipe`]: the body, buffered (event pipe, temp-file spill) or
//!    not; the upstream connection released ([`keepalive`]) as soon as its
//!    body is complete.
//! 7. finalize: the peer's try accounted, `logging` hook.
//!
//! [`flow`] strings these together; [`http_app`] runs it for each request
//! Pingora's server reads (upgrades go to Pingora's own proxy loop:
//! [`upgrade`]); [`server`] starts it all from the command line ([`cli`]).

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod body_pipe;
pub mod cli;
pub mod client_body;
pub mod connect;
pub mod flow;
pub mod header_clock;
pub mod health_check;
pub mod http_app;
pub mod keepalive;
pub mod metrics;
pub mod next_upstream;
pub mod peer;
pub mod proxy_protocol;
pub mod proxy_trait;
pub mod read_header;
pub mod real_ip;
pub mod request;
pub mod respond;
pub mod response_header;
pub mod route;
pub mod runtime;
pub mod send_request;
pub mod server;
pub mod session;
pub mod subrequest;
pub mod tries;
pub mod upgrade;

pub use proxy_trait::{DefaultProxy, PeerChoice, ProxyHttp, RetryDecision};
pub use request::{Request, Try, TryOutcome};
pub use server::{main, run, run_with_settings, DEFAULT_CONF};
pub use session::Session;
pub use subrequest::SubResponse;

/// Re-exported so programs built on Ferry need no direct dependency on them.
pub use {async_trait::async_trait, bytes, ferry_conf as conf, pingora_error, pingora_http};
