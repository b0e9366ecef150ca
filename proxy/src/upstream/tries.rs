//! The try loop: pick a peer, connect, send the request, read the response
//! header; then use that response, or go to the next server as
//! `next_upstream` says, until a response is chosen or the tries run out.
//!
//! nginx counterpart: `ngx_http_upstream_connect` -> `send_request` ->
//! `process_header` -> `test_next` / `ngx_http_upstream_next`, looping back
//! to `connect`. The rules themselves live in [`crate::upstream::next_upstream`]; the
//! peer bookkeeping (tried set, backups, `max_fails`) in `ferry-lb`.

use crate::request::client_body::ClientBody;
use crate::upstream::connect::{connect, Conn};
use crate::upstream::next_upstream::{is_non_idempotent, Failure, Policy};
use crate::upstream::peer::UpstreamPeer;
use crate::hooks::proxy_trait::{PeerChoice, ProxyHttp, RetryDecision};
use crate::upstream::read_header::read_header;
use crate::request::record::{Try, TryOutcome};
use crate::runtime::{RouteRt, Upstream};
use crate::upstream::send_request::{send, BodySource};
use crate::hooks::session::Session;
use ferry_filters::variables::RequestVars;
use ferry_lb::{Cursor, Feedback, Key, Lease};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Instant;

/// How the loop ended. Returned once per request and taken apart at once,
/// so the size gap between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Chosen {
    /// This response goes to the client. Its peer's lease is held until the
    /// body is done (nginx frees the peer at finalize; `least_conn` counts it).
    Response {
        conn: Conn,
        header: ResponseHeader,
        lease: Lease,
        cursor: Cursor,
        try_index: usize,
    },
    /// No response to use: answer with this status (502, 504).
    Fail(u16),
}

/// Why one try failed, and what nginx needs to know about it.
pub(crate) struct TryFailed {
    pub error: Box<Error>,
    /// Sending the request had started (nginx `u->request_sent`).
    pub request_sent: bool,
    /// The connection came from the keepalive pool.
    pub reused: bool,
}

pub async fn run<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    body: &mut ClientBody,
) -> Result<Chosen> {
    let proxy = route.proxy();
    let policy = Policy {
        conditions: proxy.next_upstream,
        non_idempotent: is_non_idempotent(s.req_header().method.as_str()),
        body_streamed: matches!(body, ClientBody::Streamed(_)),
        started: Instant::now(),
        budget: proxy.next_upstream_timeout.non_zero(),
    };
    // One cursor per group a hook sends tries to (usually just the route's).
    let mut cursors: Vec<(Arc<Upstream>, Cursor)> = Vec::new();
    let mut body_used = false;

    loop {
        let upstream = match app.upstream_peer(s, ctx).await? {
            PeerChoice::Route => route.upstream.clone(),
            PeerChoice::Group(name) => s.runtime.upstreams.get(&name).cloned(),
        };
        let Some(upstream) = upstream else {
            return Error::e_explain(ErrorType::InternalError, "no upstream group for this route");
        };
        let at = match cursors.iter().position(|(u, _)| Arc::ptr_eq(u, &upstream)) {
            Some(i) => i,
            None => {
                let cursor = upstream.group.cursor(proxy.next_upstream_tries);
                cursors.push((upstream.clone(), cursor));
                cursors.len() - 1
            }
        };
        let cursor = &mut cursors[at].1;

        let hash_key = upstream.hash_key.as_ref().map(|t| {
            let remote = remote_addr(s);
            request_vars(s, &remote, &upstream.name).render(t)
        });
        let key = Key {
            hash: hash_key.as_deref().unwrap_or_default().as_bytes(),
            client_ip: s.request.client_addr.map(|a| a.ip()),
        };
        let Some(lease) = upstream.group.select(cursor, &key) else {
            log::error!(
                "no live upstreams while connecting to upstream \"{}\"",
                upstream.name
            );
            s.request.tries.push(new_try(
                upstream.name.clone(),
                &upstream,
                TryOutcome::NoLive,
            ));
            return Ok(Chosen::Fail(Failure::NoLive.status()));
        };
        let peer = peer_for(route, &upstream, &lease);
        let try_index = s.request.tries.len();
        s.request
            .tries
            .push(new_try(peer.addr_text.clone(), &upstream, TryOutcome::Used));

        // A streamed body can go to one try only.
        let source_streams = matches!(body, ClientBody::Streamed(_));
        if source_streams && body_used {
            lease.free(Feedback::Ok, cursor);
            return Ok(Chosen::Fail(502));
        }
        let result = attempt(app, s, ctx, route, &upstream, &peer, body).await;
        if source_streams {
            body_used = result.as_ref().map_or_else(|f| f.request_sent, |_| true);
        }
        let t = &mut s.request.tries[try_index];
        match result {
            Ok(conn) => {
                t.reused = conn.reused;
                t.header_time = Some(t.started.elapsed());
                let mut header = match conn.session.resp_header() {
                    Some(h) => h.clone(),
                    None => {
                        return Error::e_explain(ErrorType::InternalError, "header read but absent")
                    }
                };
                let status = header.status.as_u16();
                t.status = Some(status);
                let decision = app.upstream_response_filter(s, &mut header, ctx).await?;
                let retry = match decision {
                    RetryDecision::Use => false,
                    RetryDecision::Retry => cursor.tries_left > 1,
                    RetryDecision::Default => policy.retry_status(status, cursor.tries_left),
                };
                if !retry {
                    return Ok(Chosen::Response {
                        conn,
                        header,
                        lease,
                        cursor: cursor.clone(),
                        try_index,
                    });
                }
                let t = &mut s.request.tries[try_index];
                t.outcome = TryOutcome::NextStatus(status);
                t.response_time = Some(t.started.elapsed());
                // nginx NGX_PEER_NEXT for 403/404: never counts as a failure.
                let feedback = if status == 403 || status == 404 {
                    Feedback::Next
                } else {
                    Feedback::Failed
                };
                lease.free(feedback, cursor);
                conn.close();
            }
            Err(failed) => {
                let f = Failure::of(&failed.error);
                log::error!(
                    "{} while talking to upstream {} (group {}): {}",
                    match f {
                        Failure::Timeout => "upstream timed out",
                        Failure::InvalidHeader => "upstream sent invalid header",
                        _ => "upstream failed",
                    },
                    lease.peer().addr,
                    upstream.name,
                    failed.error
                );
                t.reused = failed.reused;
                t.outcome = match f {
                    Failure::Timeout => TryOutcome::Timeout,
                    Failure::InvalidHeader => TryOutcome::InvalidHeader,
                    _ => TryOutcome::Error,
                };
                t.response_time = Some(t.started.elapsed());
                lease.free(Feedback::Failed, cursor);
                if failed.reused && f == Failure::Error {
                    // nginx: a stale keepalive connection does not use up a try.
                    cursor.tries_left += 1;
                }
                if !policy.retry_failure(f, failed.request_sent, cursor.tries_left) {
                    return Ok(Chosen::Fail(f.status()));
                }
            }
        }
    }
}

fn remote_addr(s: &Session<'_>) -> String {
    s.request.client_ip_text()
}

/// What templates see of this request, for a try to `proxy_host`.
fn request_vars<'a>(s: &'a Session<'_>, remote: &'a str, proxy_host: &'a str) -> RequestVars<'a> {
    let client = s.downstream.req_header();
    RequestVars {
        method: client.method.as_str(),
        request_uri: std::str::from_utf8(client.raw_path()).unwrap_or("/"),
        uri: &s.request.uri,
        host: &s.request.host,
        headers: &client.headers,
        remote_addr: remote,
        remote_port: s.request.client_addr.map_or(0, |a| a.port()),
        scheme: s.request.scheme,
        proxy_host,
        request_id: &s.request.id,
        upstream_addr: "",
        upstream_status: "",
    }
}

fn new_try(addr: String, upstream: &Upstream, outcome: TryOutcome) -> Try {
    Try {
        addr,
        group: upstream.name.clone(),
        status: None,
        outcome,
        reused: false,
        started: Instant::now(),
        header_time: None,
        response_time: None,
    }
}

/// The Pingora peer for a lease: precomputed for the route's own group.
fn peer_for(route: &RouteRt, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer> {
    let own = route
        .upstream
        .as_ref()
        .is_some_and(|u| Arc::ptr_eq(u, upstream));
    match route.peers.get(lease.index()).filter(|_| own) {
        Some(p) => p.clone(),
        None => Arc::new(crate::runtime::make_peer(
            upstream,
            lease.peer(),
            route.proxy(),
        )),
    }
}

/// One try: connect, build the request (route rules, then the
/// `upstream_request_filter` hook), send it, read the response header.
async fn attempt<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    upstream: &Arc<Upstream>,
    peer: &Arc<UpstreamPeer>,
    body: &mut ClientBody,
) -> std::result::Result<Conn, TryFailed> {
    let not_sent = |error, reused| TryFailed {
        error,
        request_sent: false,
        reused,
    };
    let mut conn = connect(upstream, peer)
        .await
        .map_err(|e| not_sent(e, false))?;
    let reused = conn.reused;
    let mut req = {
        let remote = remote_addr(s);
        let vars = request_vars(s, &remote, &upstream.name);
        let built = route
            .request_plan
            .build(s.downstream.req_header(), &vars, body.framing());
        Box::new(built.map_err(|e| not_sent(e, reused))?)
    };
    app.upstream_request_filter(s, &mut req, ctx)
        .await
        .map_err(|e| not_sent(e, reused))?;
    let source = match body {
        ClientBody::None => BodySource::None,
        ClientBody::Buffered(b) => BodySource::Buffered(b),
        ClientBody::Streamed(_) => BodySource::Stream(s.downstream),
    };
    exchange(&mut conn, req, source, route.proxy().buffer_size.as_usize()).await?;
    Ok(conn)
}

/// Send a request on a connection and read the response header: the part
/// of a try shared with subrequests. Every failure here happened after
/// sending started.
pub(crate) async fn exchange(
    conn: &mut Conn,
    req: Box<pingora_http::RequestHeader>,
    body: BodySource<'_>,
    buffer_size: usize,
) -> std::result::Result<(), TryFailed> {
    let reused = conn.reused;
    let sent = |error| TryFailed {
        error,
        request_sent: true,
        reused,
    };
    send(conn, req, body).await.map_err(sent)?;
    read_header(conn, buffer_size).await.map_err(sent)
}
