//! Ferry's `ProxyHttp` trait: Pingora's hook names and shapes, with nginx's
//! upstream semantics behind them. Every hook has a default that does what
//! the YAML says, so the `ferry` binary is this trait with no overrides.
//!
//! | hook | nginx | when |
//! |---|---|---|
//! | [`new_ctx`](ProxyHttp::new_ctx) | `ngx_http_upstream_create` | once per request |
//! | [`request_filter`](ProxyHttp::request_filter) | access / rewrite phases | after routing, before the body is read |
//! | [`upstream_peer`](ProxyHttp::upstream_peer) | `peer.get` | before every try |
//! | [`upstream_request_filter`](ProxyHttp::upstream_request_filter) | `create_request` / `reinit_request` | on every try, before sending |
//! | [`upstream_response_filter`](ProxyHttp::upstream_response_filter) | `process_header` | on every response header, before the retry decision |
//! | [`response_filter`](ProxyHttp::response_filter) | header filter | once, before the header goes to the client |
//! | [`response_body_filter`](ProxyHttp::response_body_filter) | body filter | per body piece, buffered or not |
//! | [`logging`](ProxyHttp::logging) | `finalize_request` / log phase | last, always |

use crate::hooks::session::Session;
use crate::request::record::Request;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// Which upstream group serves the next try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChoice {
    /// The route's own `upstream`, with its balancer and health.
    Route,
    /// Another group from `upstreams:` (canary routing, ...).
    Group(String),
}

pub use crate::upstream::next_upstream::RetryDecision;

#[async_trait]
pub trait ProxyHttp: Send + Sync + 'static {
    /// Per-request state of your own.
    type CTX: Send + Sync;

    fn new_ctx(&self) -> Self::CTX;

    /// nginx's access and rewrite phases: inspect or change the request, or
    /// answer it with [`Session::respond`] and return `Ok(true)`.
    async fn request_filter(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        Ok(false)
    }

    /// nginx `peer.get`: called before every try; `session.request().tries`
    /// lists the tries so far.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<PeerChoice> {
        Ok(PeerChoice::Route)
    }

    /// nginx `create_request` / `reinit_request`: the header about to be
    /// sent upstream, built from the client's by the route's rules. Runs on
    /// every try.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx `process_header`: the upstream's response header, before Ferry
    /// decides whether to try the next server. Retrying is possible only
    /// here: once the header went to the client, a failure truncates.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<RetryDecision> {
        Ok(RetryDecision::Default)
    }

    /// nginx's header filter: the header as it will go to the client.
    /// Drop `Content-Length` here if the body filter changes the length.
    async fn response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx's body filter: each piece of the response body on its way to the
    /// client (both pipes). Change it, or set it to `None` to hold it back;
    /// after the last piece it is called once more with `None` and
    /// `end_of_stream`.
    fn response_body_filter(
        &self,
        _request: &Request,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx's log phase: always last, with every try and the outcome.
    async fn logging(&self, _session: &mut Session, _ctx: &mut Self::CTX) {}
}

/// The proxy the YAML describes, with no hook overridden.
pub struct DefaultProxy;

impl ProxyHttp for DefaultProxy {
    type CTX = ();
    fn new_ctx(&self) {}
}
