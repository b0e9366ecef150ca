//! A request's way through Ferry, top to bottom: route, request filter,
//! `return`, request body, tries (peer, connect, send, header,
//! next-or-respond), response header, body pipe, finalize.
//!
//! nginx counterpart: `ngx_http_proxy_handler` through
//! `ngx_http_upstream_finalize_request`. [`crate::request::http_app`] calls this for
//! each request Pingora's HTTP/1 or HTTP/2 session reads.

use crate::response::body_pipe;
use crate::request::client_body::{self, BodyFailed};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::request::record::{Request, TryOutcome};
use crate::request::respond;
use crate::response::header as response_header;
use crate::request::route::{normalize_path, request_host};
use crate::runtime::Runtime;
use crate::hooks::session::Session;
use crate::upstream::tries::{self, Chosen};
use crate::client::refusal::refused;
use ferry_lb::Feedback;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType, Result};

/// How the client connection ends.
pub enum End {
    /// The response is complete; the connection may serve the next request.
    Complete,
    /// The response was cut short: close the connection without ending the
    /// body, so the client sees it is incomplete.
    Truncated,
}

/// The host the client names: its `Host` header, else the host of an
/// absolute request target.
fn host_header(ps: &ServerSession) -> Option<&[u8]> {
    let req = ps.req_header();
    req.headers
        .get(http::header::HOST)
        .map(|v| v.as_bytes())
        .or_else(|| req.uri.host().map(str::as_bytes))
}

fn peer_of(ps: &ServerSession) -> String {
    ps.client_addr().map(|a| a.to_string()).unwrap_or_default()
}

pub async fn serve<P: ProxyHttp>(
    app: &P,
    rt: &Runtime,
    ps: &mut ServerSession,
    request: &mut Request,
    ctx: &mut P::CTX,
) -> Result<End> {
    // 0. Request smuggling shapes Pingora lets through: refuse and close.
    if smuggling(ps) {
        refused(&peer_of(ps), "400", "smuggling");
        respond::error(ps, request, 400, None, &[]).await?;
        return Ok(End::Complete);
    }

    // 1. Route: the host and the normalised path pick a route.
    let Some(path) = normalize_path(&String::from_utf8_lossy(ps.req_header().raw_path())) else {
        refused(&peer_of(ps), "400", "bad_path");
        respond::error(ps, request, 400, None, &[]).await?;
        return Ok(End::Complete);
    };
    request.host = request_host(host_header(ps));
    request.uri = path;
    request.route = rt.matcher.find(&request.host, &request.uri);

    // 2. The request filter hook (nginx access/rewrite phases).
    let mut s = Session {
        downstream: ps,
        request,
        runtime: rt,
    };
    if app.request_filter(&mut s, ctx).await? {
        return Ok(End::Complete);
    }
    let Some(route) = s.request.route.map(|i| &rt.routes[i]) else {
        respond::error(s.downstream, s.request, 404, None, &[]).await?;
        return Ok(End::Complete);
    };
    let proxy = route.proxy();

    // 3. A route that answers by itself.
    if let Some(r) = &route.conf.respond {
        respond::route_return(s.downstream, s.request, r).await?;
        return Ok(End::Complete);
    }

    // 4. The request body: read whole (replayable) or streamed.
    s.downstream
        .set_write_timeout(proxy.client_send_timeout.non_zero());
    let mut body = match client_body::read(&mut *s.downstream, proxy).await {
        Ok(b) => b,
        Err(BodyFailed(0)) => return Ok(End::Truncated),
        Err(BodyFailed(status)) => {
            respond::error(s.downstream, s.request, status, Some(proxy), &[]).await?;
            return Ok(End::Complete);
        }
    };

    // 5. Tries: peer, connect, send, header; next server or this response.
    let (conn, upstream_header, lease, mut cursor, try_index) =
        match tries::run(app, &mut s, ctx, route, &mut body).await? {
            Chosen::Fail(status) => {
                respond::error(s.downstream, s.request, status, Some(proxy), &[]).await?;
                return Ok(End::Complete);
            }
            Chosen::Response {
                conn,
                header,
                lease,
                cursor,
                try_index,
            } => (conn, header, lease, cursor, try_index),
        };
    drop(body);

    // 6. Intercepted errors: the route's error page instead of the upstream's.
    let status = upstream_header.status.as_u16();
    if proxy.intercept_errors && status >= 300 && proxy.error_pages.contains_key(&status) {
        conn.close();
        lease.free(Feedback::Ok, &mut cursor);
        let keep: Vec<_> = if status == 401 {
            upstream_header
                .headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| (http::header::WWW_AUTHENTICATE, v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        respond::error(s.downstream, s.request, status, Some(proxy), &keep).await?;
        return Ok(End::Complete);
    }

    // 7. The response header, through the response filter, to the client.
    let client_version = s.downstream.req_header().version;
    let host = String::from_utf8_lossy(host_header(s.downstream).unwrap_or_default());
    let buffered = response_header::accel_buffering(&upstream_header).unwrap_or(proxy.buffering);
    let mut header = response_header::build(
        route,
        upstream_header,
        client_version,
        &host,
        s.request.scheme,
    )?;
    drop(host);
    app.response_filter(&mut s, &mut header, ctx).await?;
    s.request.status = header.status.as_u16();
    let mut conn = conn;
    let no_body = conn.session.is_body_done();
    let ds = &mut *s.downstream;
    if let Err(e) = ds.write_response_header(Box::new(header)).await {
        conn.close();
        lease.free(Feedback::Ok, &mut cursor);
        return Err(e);
    }

    // 8. The body: buffered (event pipe) or not; the upstream is released as
    //    soon as its body is complete.
    let end = if no_body {
        conn.release().await;
        match ds.write_response_body(bytes::Bytes::new(), true).await {
            Ok(()) => End::Complete,
            Err(_) => End::Truncated,
        }
    } else {
        let out = body_pipe::forward(app, ctx, s.request, route, ds, conn, buffered).await;
        log::debug!(
            "body pipe ({}): received {} sent {} spilled {} upstream complete {} error {:?}",
            if buffered { "buffered" } else { "unbuffered" },
            out.received,
            out.sent,
            out.spilled,
            out.upstream_complete,
            out.error
        );
        s.request.body_bytes_sent = out.sent;
        s.request.spilled_bytes = out.spilled;
        match &out.error {
            None => End::Complete,
            Some(e) => {
                log::error!("response to the client cut short: {e}");
                End::Truncated
            }
        }
    };

    // 9. Finalize: the peer's try is done (body-phase failures do not count
    //    against max_fails, as in nginx).
    let t = &mut s.request.tries[try_index];
    t.outcome = TryOutcome::Used;
    t.response_time = Some(t.started.elapsed());
    lease.free(Feedback::Ok, &mut cursor);
    if let End::Truncated = end {
        s.request.truncated = true;
    }
    Ok(end)
}

/// `Content-Length` together with `Transfer-Encoding` (RFC 9112 6.1: a
/// request smuggling shape). Pingora reads such a request by its
/// `Transfer-Encoding`; Ferry refuses it, as nginx does since 1.23.
fn smuggling(ps: &ServerSession) -> bool {
    let h = &ps.req_header().headers;
    if !h.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    h.contains_key(http::header::CONTENT_LENGTH)
        || ps.as_http1().is_some_and(|s| {
            s.get_headers_raw_bytes()
                .split(|&b| b == b'\n')
                .any(|l| l.len() > 15 && l[..15].eq_ignore_ascii_case(b"content-length:"))
        })
}

/// The error Ferry hands Pingora to close a client connection without
/// ending its response.
pub fn truncated() -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, "response truncated")
}
