//! Forwarding the response body: Pingora's two sessions plugged into the
//! pipes of `ferry-filters` (at once when one read brought the whole body,
//! else buffered through the event pipe, or not).
//!
//! nginx counterpart: `ngx_http_upstream_send_response` choosing between
//! `ngx_event_pipe` and the non-buffered handlers; `X-Accel-Buffering`
//! switches per response.

use crate::hooks::proxy_trait::ProxyHttp;
use crate::request::record::Request;
use crate::runtime::RouteRt;
use crate::upstream::connect::Conn;
use bytes::Bytes;
use ferry_filters::pipe::{
    BodyFilter, DownstreamBody, FailKind, PipeError, PipeOutcome, Side, UpstreamBody,
};
use ferry_filters::whole_body;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType};

fn pipe_error(side: Side, e: &Error) -> PipeError {
    let kind = match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailKind::Timeout,
        _ => FailKind::Error,
    };
    PipeError::new(side, kind, e.to_string())
}

/// The upstream end: the connection whose response header was read.
struct UpstreamReader(Conn);

impl UpstreamBody for UpstreamReader {
    async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        self.0
            .session
            .read_body_bytes()
            .await
            .map_err(|e| pipe_error(Side::Upstream, &e))
    }
    fn is_done(&mut self) -> bool {
        self.0.session.is_body_done()
    }
    async fn release(self) {
        self.0.release().await
    }
}

/// The client end.
struct ClientWriter<'a>(&'a mut ServerSession);

impl DownstreamBody for ClientWriter<'_> {
    async fn write(&mut self, data: Bytes) -> Result<(), PipeError> {
        self.0
            .write_response_body(data, false)
            .await
            .map_err(|e| pipe_error(Side::Client, &e))
    }

    async fn end(&mut self, last: Bytes) -> Result<(), PipeError> {
        self.0
            .write_response_body(last, true)
            .await
            .map_err(|e| pipe_error(Side::Client, &e))
    }

    fn is_gone(&mut self) -> bool {
        self.0
            .stream()
            .is_some_and(|s| crate::client::liveness::has_closed(s.id()))
    }
}

/// The user's `response_body_filter` as the pipes' filter.
struct HookFilter<'a, P: ProxyHttp> {
    app: &'a P,
    request: &'a Request,
    ctx: &'a mut P::CTX,
}

impl<P: ProxyHttp> BodyFilter for HookFilter<'_, P> {
    fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), String> {
        self.app
            .response_body_filter(self.request, body, end, self.ctx)
            .map_err(|e| e.to_string())
    }
}

/// Move the body from `conn` to the client, then end it (the final chunk).
/// On failure the response stays truncated: the caller closes the client
/// connection without ending the body.
#[allow(clippy::too_many_arguments)]
pub async fn forward<P: ProxyHttp>(
    app: &P,
    ctx: &mut P::CTX,
    request: &Request,
    route: &RouteRt,
    client: &mut ServerSession,
    conn: Conn,
    buffered: bool,
) -> PipeOutcome {
    let mut filter = HookFilter { app, request, ctx };
    let reader = UpstreamReader(conn);
    let pipe = buffered.then_some(&route.pipe);
    whole_body::run(pipe, reader, ClientWriter(client), &mut filter).await
}
