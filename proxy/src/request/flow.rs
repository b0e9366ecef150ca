//! A request's way through Ferry, top to bottom, one step a function:
//! refuse what cannot be served, the early request filter, route, the
//! request filter, `return`, the request body (through the request body
//! filter), the cache lookup, the upstream loop (peer, connect, send,
//! header, next-or-respond), the response header, the body pipe (filling
//! the cache) or the tunnel, finalize. Every error Ferry answers itself
//! goes through one place ([`fail`]: the program's `fail_to_proxy`).
//!
//! nginx counterpart: `ngx_http_proxy_handler` through
//! `ngx_http_upstream_finalize_request`. [`crate::request::http_app`] calls
//! [`process_request`] for each request Pingora's HTTP/1 or HTTP/2 session reads,
//! upgrades included: there is no other way in.

use crate::cache::lookup::{self, After, Fetch, Look};
use crate::client::downstream::Downstream;
use crate::client::liveness::unless_client_leaves;
use crate::client::refusal::refused;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::End;
use crate::request::body_stream::Streamed;
use crate::request::client_body::{self, BodyFailed, ClientBody};
use crate::request::duplex::{self, OpenBody};
use crate::request::leg::RequestLeg;
use crate::request::route::{normalize_path, request_host};
use crate::request::sticky::Bind;
use crate::response::grpc;
use crate::response::header as response_header;
use crate::response::respond;
use crate::response::{body_pipe, compress, tunnel};
use crate::runtime::{RouteRt, Runtime};
use crate::upstream::head::Head;
use crate::upstream::next_upstream::CLIENT_CLOSED;
use crate::upstream::next_upstream::{is_non_idempotent, Policy};
use crate::upstream::tries::{self, Chosen, Response};
use ferry_filters::fields::Fields;
use ferry_filters::headers::wants_upgrade;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use std::time::Instant;

/// The host the client names: its `Host` header, else the host of an
/// absolute request target.
fn host_header(ps: &Downstream) -> Option<&[u8]> {
    match ps.fields() {
        Fields::Header(req) => req
            .headers
            .get(http::header::HOST)
            .map(|v| v.as_bytes())
            .or_else(|| req.uri.host().map(str::as_bytes)),
        // An origin-form target: no host but the header's.
        lines => lines.get_name(&http::header::HOST),
    }
}

fn peer_of(ps: &Downstream) -> String {
    ps.client_addr().map(|a| a.to_string()).unwrap_or_default()
}

pub(crate) async fn process_request<P: ProxyHttp>(
    app: &P,
    rt: &Runtime,
    ps: &mut Downstream,
    request: &mut crate::record::Request,
    ctx: &mut P::CTX,
) -> Result<End> {
    // 1. What cannot be served at all gets 400 (or 501), before any hook
    //    sees it.
    let refusal = admissible(ps);
    let mut s = Session {
        downstream: ps,
        request,
        runtime: rt,
    };
    let path = match refusal {
        Ok(path) => path,
        Err((status, reason)) => {
            refused(&peer_of(s.downstream), &status.to_string(), reason);
            let e = Error::explain(ErrorType::HTTPStatus(status), format!("refused: {reason}"));
            return Ok(fail(app, &mut s, ctx, e).await);
        }
    };
    // 2. The early request filter, then the route.
    if let Err(end) = route(app, &mut s, ctx, path).await? {
        return Ok(end);
    }
    // 3. The request filter hook (nginx access/rewrite phases).
    if app.defines_hooks() && app.request_filter(&mut s, ctx).await? {
        return Ok(End::Complete);
    }
    let Some(route) = s.request.route.map(|i| &rt.routes[i]) else {
        let e = Error::explain(ErrorType::HTTPStatus(404), "no route");
        return Ok(fail(app, &mut s, ctx, e).await);
    };
    // 4. A route that answers by itself.
    if let Some(r) = &route.conf.respond {
        Box::pin(respond::route_return(s.downstream, s.request, r)).await?;
        return Ok(End::Complete);
    }
    // 4b. The route's limits (nginx's preaccess phase): a refusal is one
    //    of Ferry's own answers; the places taken are held to the end.
    let _limits = match crate::limit::admit::admit(&mut s).await {
        Ok(held) => held,
        Err(e) => return Ok(fail(app, &mut s, ctx, e).await),
    };
    // 5. The request body, through the request body filter.
    let body = match request_body(app, &mut s, ctx, route).await {
        Ok(b) => b,
        Err(end) => return Ok(end),
    };
    // 6. The cache (nginx `ngx_http_upstream_cache`): a fresh entry
    //    answers; otherwise the fetch below may fill it.
    let upgrade = s.downstream.is_http1() && wants_upgrade(s.downstream.fields());
    let mut fetch = None;
    if let (Some(rc), false) = (&route.cache, upgrade) {
        match lookup::look(app, &mut s, ctx, route, rc).await? {
            Look::Pass => {}
            Look::Answered(end) => return Ok(finished(&mut s, end)),
            Look::Fetch(f) => fetch = Some(f),
        }
    }
    // 7-11. The upstream, the response, finalize.
    proxy_to_upstream(app, &mut s, ctx, route, body, upgrade, fetch).await
}

/// Step 2: the early request filter, then the route: by host and
/// normalised `path`, as the hook left them. `Err` ends the request.
async fn route<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    path: String,
) -> Result<std::result::Result<(), End>> {
    s.request.uri = path;
    // Ferry's session knows its target as it came; Pingora's is kept.
    let target = (!s.downstream.is_ferry()).then(|| s.downstream.req_header().uri.clone());
    if app.defines_hooks() {
        app.early_request_filter(s, ctx).await?;
    }
    let changed = match target {
        Some(target) => s.downstream.req_header().uri != target,
        None => s.downstream.target_changed(),
    };
    if changed {
        // The hook changed the target: the new one is what is routed.
        let raw = String::from_utf8_lossy(s.downstream.req_header().raw_path()).into_owned();
        let Some(path) = normalize_path(&raw) else {
            let e = Error::explain(
                ErrorType::HTTPStatus(400),
                "early_request_filter left a bad path",
            );
            return Ok(Err(fail(app, s, ctx, e).await));
        };
        s.request.uri = path;
    }
    s.request.host = request_host(host_header(s.downstream));
    s.request.route = s.runtime.matcher.find(&s.request.host, &s.request.uri);
    Ok(Ok(()))
}

/// Step 5: the request body, read whole (replayable) or streamed, each
/// piece through the request body filter. `Err` ends the request.
async fn request_body<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
) -> std::result::Result<ClientBody, End> {
    let proxy = route.proxy();
    s.downstream
        .set_write_timeout(proxy.client_send_timeout.non_zero());
    s.downstream
        .set_read_timeout(proxy.client_body_timeout.non_zero());
    match client_body::read(app, s, ctx, proxy).await {
        Ok(b) => Ok(b),
        Err(BodyFailed::ClientGone) => Err(End::Truncated),
        Err(BodyFailed::Status(status, why)) => {
            let e = Error::explain(ErrorType::HTTPStatus(status), why);
            Err(fail(app, s, ctx, e).await)
        }
    }
}

/// Steps 7 to 11: the upstream loop (peer, connect, send, header; next
/// server or this response, or for the cache its stale entry), the
/// response (header, then body filling the cache entry, or the tunnel),
/// and the end of the upstream part: the server is given back whatever
/// happened on the way, and the requests waiting on the cache entry go.
async fn proxy_to_upstream<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    mut body: ClientBody,
    upgrade: bool,
    mut fetch: Option<Fetch<'_>>,
) -> Result<End> {
    let mut streamed = Streamed::default();
    let sent = (&mut body, &mut streamed);
    let chosen = upstream(app, s, ctx, route, sent, upgrade, fetch.as_ref()).await?;
    let open = (body.framing(), streamed);
    drop(body);
    let chosen = match &mut fetch {
        Some(f) => match f.after(app, s, ctx, route, chosen).await? {
            After::Answered(end) => return Ok(finished(s, end)),
            After::Go(chosen) => chosen,
        },
        None => chosen,
    };
    let Response { conn, header, held } = match chosen {
        Chosen::Response(r) => *r,
        // The client left (mid-body, or while the upstream was asked):
        // nothing to answer.
        Chosen::Fail(CLIENT_CLOSED) => return Ok(End::Truncated),
        Chosen::Fail(status) => {
            let e = upstream_failure(status, s.request);
            return Ok(fail(app, s, ctx, e).await);
        }
    };
    let mut head = header;
    let end = match Bind::new(s, &held, &mut head) {
        Ok(bind) => {
            let response = (conn, head, upgrade, open, &bind);
            let end = send_response(app, s, ctx, route, response, fetch.as_ref()).await;
            bind.at_end();
            end
        }
        Err(e) => {
            conn.close();
            Err(e)
        }
    };
    held.finish(&mut s.request.tries);
    if let Some(mut f) = fetch {
        f.finish();
    }
    Ok(finished(s, end?))
}

/// A cut-short response is recorded as one.
fn finished(s: &mut Session<'_>, end: End) -> End {
    if let End::Truncated = end {
        s.request.truncated = true;
    }
    end
}

/// Ferry's answer to an error it generates: the program's `fail_to_proxy`
/// (Ferry's error page by default), the error logged unless the program
/// says not to, and kept for `logging`.
pub(crate) async fn fail<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    e: Box<Error>,
) -> End {
    // Boxed: an error page's future is large, and every step that can fail
    // would otherwise carry its room in the request's state.
    Box::pin(fail_now(app, s, ctx, e)).await
}

async fn fail_now<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    e: Box<Error>,
) -> End {
    let answer = app.fail_to_proxy(s, &e, ctx).await;
    if answer.error_code >= 500 && !app.suppress_error_log(s, ctx, &e) {
        log::error!(
            "{e}, status: {}, {}",
            answer.error_code,
            app.request_summary(s, ctx)
        );
    }
    s.request.error = Some(e.into());
    if answer.error_code == 0 {
        // Nothing could be sent: the client is gone.
        return End::Truncated;
    }
    // nginx closes after these whatever answered them: the rest of the
    // request may be garbage.
    let garbled = matches!(answer.error_code, 400 | 408 | 413 | 414 | 431 | 500 | 501);
    if garbled || !answer.can_reuse_downstream {
        s.downstream.set_keepalive(None);
    }
    End::Complete
}

/// The error of a request whose tries gave no response to use.
fn upstream_failure(status: u16, request: &crate::record::Request) -> Box<Error> {
    let why = match request.tries.last() {
        Some(t) if t.outcome == crate::upstream::try_record::TryOutcome::NoLive => {
            format!("no live upstreams in group {}", t.group)
        }
        Some(t) => format!(
            "{} tries failed, the last on {} ({:?})",
            request.tries.len(),
            t.addr,
            t.outcome
        ),
        None => "no upstream".to_string(),
    };
    let mut e = Error::explain(ErrorType::HTTPStatus(status), why);
    e.esource = ErrorSource::Upstream;
    e
}

/// The upstream loop with this request's hooks and the route's rules.
async fn upstream<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    (body, streamed): (&mut ClientBody, &mut Streamed),
    upgrade: bool,
    cache: Option<&Fetch<'_>>,
) -> Result<Chosen> {
    let proxy = route.proxy();
    let policy = Policy {
        conditions: proxy.next_upstream,
        non_idempotent: is_non_idempotent(s.downstream.method()),
        body_streamed: matches!(body, ClientBody::Streamed(_)),
        started: Instant::now(),
        budget: proxy.next_upstream_timeout.non_zero(),
    };
    let mut leg = RequestLeg {
        app,
        s,
        ctx,
        route,
        body,
        upgrade,
        cache,
        chosen: Vec::new(),
        streamed,
    };
    let (tries_limit, buffer_size) = (proxy.next_upstream_tries, proxy.buffer_size.as_usize());
    // nginx's broken-connection check during connect, send and the header
    // wait: a client that left ends the upstream request (499), unless
    // `ignore_client_abort`.
    let watch = leg
        .s
        .downstream
        .http1_fd()
        .filter(|_| !proxy.ignore_client_abort);
    // A gRPC call's deadline bounds the wait for its response header.
    let deadline = grpc::deadline(leg.s.downstream.fields());
    // Pinned here, once: the wrappers below hold only a reference to it
    // (a future moved into each would be copied into each one's state).
    let outcome = {
        let mut tries = std::pin::pin!(tries::run(&mut leg, &policy, tries_limit, buffer_size));
        let within = async {
            match deadline {
                Some(d) => tokio::time::timeout(d, tries.as_mut()).await.ok(),
                None => Some(tries.as_mut().await),
            }
        };
        unless_client_leaves(watch, within).await
    };
    match outcome {
        Some(Some(chosen)) => chosen,
        Some(None) => {
            log::error!(
                "the gRPC deadline (grpc-timeout) passed while the upstream was being asked"
            );
            if let Some(t) = leg.s.request.tries.last_mut() {
                t.outcome = crate::upstream::try_record::TryOutcome::Timeout;
            }
            Ok(Chosen::Fail(504))
        }
        None => {
            log::info!("client closed the connection while the upstream was being asked");
            if let Some(t) = leg.s.request.tries.last_mut() {
                t.outcome = crate::upstream::try_record::TryOutcome::Client;
            }
            Ok(Chosen::Fail(CLIENT_CLOSED))
        }
    }
}

/// Steps 8 to 10: an intercepted error's page, or the upstream's header
/// through the response filter and then its body (or, after a `101`, the
/// tunnel).
#[allow(clippy::too_many_arguments)]
async fn send_response<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    (mut conn, mut head, upgrade, open, bind): (
        crate::upstream::connect::Conn,
        Head,
        bool,
        OpenBody,
        &Bind,
    ),
    fetch: Option<&Fetch<'_>>,
) -> Result<End> {
    let proxy = route.proxy();
    // 8. Intercepted errors: the route's error page instead of the upstream's.
    let status = head.status();
    if proxy.intercept_errors && status >= 300 && proxy.error_pages.contains_key(&status) {
        conn.close();
        let page = Box::pin(error_page(s, route, &head));
        page.await?;
        return Ok(End::Complete);
    }
    // 9. The response header, through the response filter, to the client
    //    (and, when the cache stores it, as it came to the entry's file).
    let fill = match fetch {
        Some(f) => f.fill(app, s, ctx, head.header()?)?,
        None => None,
    };
    let buffered = response_header::accel_buffering(&head).unwrap_or(proxy.buffering);
    let sent = match forward_header(app, s, route, &head, bind, fill.is_some()).await {
        Some(sent) => sent.map(|()| (None, false)),
        None => {
            let body_done = (conn.session.is_body_done(), upgrade);
            // Boxed: a program's response filter is a future of its own
            // size, which the forwarded way would otherwise carry.
            let made = send_made_header(app, s, ctx, route, (head, bind), buffered, body_done);
            Box::pin(made).await
        }
    };
    let (encoder, header_ends) = match sent {
        Ok(sent) => sent,
        Err(e) => {
            conn.close();
            return Err(e);
        }
    };
    let switching = upgrade && s.request.status == 101;
    let no_body = conn.session.is_body_done() && !switching;
    // 10. The body: buffered (event pipe) or not; the upstream is released as
    //    soon as its body is complete. After a 101: the tunnel.
    if conn.request_open && !header_ends {
        // The request body streams on beside the response (full duplex).
        return Ok(Box::pin(duplex::relay(app, s, ctx, conn, open)).await);
    }
    if switching {
        let idle = proxy.read_timeout.non_zero();
        let moved = Box::pin(tunnel::relay(s.downstream, conn, idle)).await;
        s.request.body_bytes_sent = moved.to_client;
        return Ok(End::Complete);
    }
    if no_body {
        conn.release().await;
        if let (Some(mut f), Some(fetch)) = (fill, fetch) {
            f.ended = true;
            fetch.filled(f.finish().await);
        }
        if header_ends {
            return Ok(End::Complete);
        }
        return Ok(end_empty(s.downstream, encoder).await);
    }
    let pipe = (conn, buffered, encoder);
    send_body(app, s, ctx, route, pipe, fill, fetch).await
}

/// Step 9 for a header nothing but the route's plan changes (no program's
/// filter, cache entry, compression, `sticky` or `$upstream_http_NAME`):
/// the server's lines, edited, straight to an HTTP/1 client, as nginx
/// copies `headers_in` to `headers_out`. `None`: the header must be made.
async fn forward_header<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    route: &RouteRt,
    head: &Head,
    bind: &Bind,
    filling: bool,
) -> Option<Result<()>> {
    use ferry_conf::Variable as V;
    let reads_upstream = |v: &V| matches!(v, V::UpstreamHttp(_) | V::UpstreamCookie(_));
    let adds = &route.conf.proxy.add_headers;
    if app.filters_response_header()
        || filling
        || !s.downstream.is_ferry()
        || route.conf.compress.is_some()
        || bind.acts_at_header()
        || adds.iter().any(|(_, t)| t.uses(reads_upstream))
    {
        return None;
    }
    let wire = head.wire()?;
    let added = response_header::added(route, s, None);
    let http11 = s.downstream.version() == http::Version::HTTP_11;
    let plan = &route.response_plan;
    let rewrites = !route.redirect.is_off();
    let lines = response_header::forwarded(plan, rewrites, wire, &added, http11)?;
    s.request.status = lines.status;
    Some(s.downstream.write_lines(&lines, &added).await)
}

/// Step 9 for any other header: made, through the response filter and the
/// encoder's choice, and written; the encoder, and whether the header ends
/// the response (`body_done`: the server's body is done, and whether the
/// request asked for an upgrade).
async fn send_made_header<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    (head, bind): (Head, &Bind),
    buffered: bool,
    (body_done, upgrade): (bool, bool),
) -> Result<(Option<compress::Encoder>, bool)> {
    let mut header = client_header(app, s, ctx, route, head.into_header()?, bind).await?;
    let encoder = match route.conf.compress.as_ref() {
        Some(c) => compress::decide(Some(c), s.downstream.req_header(), &mut header, !buffered),
        None => None,
    };
    s.request.status = header.status.as_u16();
    let no_body = body_done && !(upgrade && s.request.status == 101);
    // On HTTP/2 a response without a body ends with its header (a gRPC
    // trailers-only answer stays one on the wire).
    let header_ends = no_body && encoder.is_none() && s.downstream.is_http2();
    write_header(s.downstream, header, header_ends).await?;
    Ok((encoder, header_ends))
}

/// Step 8: an intercepted error's page in place of the upstream's response
/// (a 401's `WWW-Authenticate` kept).
async fn error_page(s: &mut Session<'_>, route: &RouteRt, head: &Head) -> Result<()> {
    let keep = kept_on_error_page(head);
    respond::error(
        s.downstream,
        s.request,
        head.status(),
        Some(route.proxy()),
        &keep,
    )
    .await
}

/// The end of a response without a body (an encoder's empty stream, if
/// one was chosen).
async fn end_empty(ds: &mut Downstream, encoder: Option<compress::Encoder>) -> End {
    let last = compress::finish_empty(encoder);
    match ds.write_response_body(last, true).await {
        Ok(()) => End::Complete,
        Err(_) => End::Truncated,
    }
}

/// The client's response header; `ends`: it ends the response (HTTP/2:
/// one HEADERS frame with END_STREAM).
async fn write_header(
    ds: &mut Downstream,
    header: Box<pingora_http::ResponseHeader>,
    ends: bool,
) -> Result<()> {
    if !ends {
        return ds.write_response_header(header).await;
    }
    let task = pingora_core::protocols::http::HttpTask::Header(header, true);
    ds.response_duplex_vec(vec![task]).await.map(|_| ())
}

/// What of an upstream's error response its error page keeps: a 401's
/// `WWW-Authenticate`.
fn kept_on_error_page(head: &Head) -> Vec<(http::HeaderName, http::HeaderValue)> {
    if head.status() != 401 {
        return Vec::new();
    }
    let name = http::header::WWW_AUTHENTICATE;
    head.values(&name)
        .into_iter()
        .filter_map(|v| http::HeaderValue::from_bytes(v).ok())
        .map(|v| (name.clone(), v))
        .collect()
}

/// Step 9: the client's header from the upstream's (hidden headers,
/// `proxy_redirect`, framing, `sticky`'s cookie, `add_headers`), through
/// `response_filter`.
async fn client_header<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    mut header: Box<pingora_http::ResponseHeader>,
    bind: &Bind,
) -> Result<Box<pingora_http::ResponseHeader>> {
    // `$upstream_http_NAME` in `add_headers` reads the upstream's header.
    let upstream_headers =
        (!route.conf.proxy.add_headers.is_empty()).then(|| header.headers.clone());
    let client_version = s.downstream.version();
    let host = String::from_utf8_lossy(host_header(s.downstream).unwrap_or_default());
    let scheme = s.request.scheme;
    response_header::build(route, &mut header, client_version, &host, scheme)?;
    drop(host);
    bind.at_header(&mut header)?;
    response_header::add_headers(route, s, upstream_headers.as_ref(), &mut header)?;
    app.response_filter(s, &mut header, ctx).await?;
    Ok(header)
}

/// Step 10: the body through the event pipe (`buffered`) or the
/// unbuffered one, filling the cache entry when there is one.
#[allow(clippy::too_many_arguments)]
async fn send_body<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    (conn, buffered, encoder): (
        crate::upstream::connect::Conn,
        bool,
        Option<compress::Encoder>,
    ),
    mut fill: Option<crate::cache::fill::Fill>,
    fetch: Option<&Fetch<'_>>,
) -> Result<End> {
    let ds = &mut *s.downstream;
    if !buffered {
        // Unbuffered, each piece goes out as it comes: nothing waits below
        // for more (the header, kept, leaves with the first piece).
        crate::client::header_clock::flush_each_write(ds.clock());
    }
    let out = body_pipe::forward(
        app,
        ctx,
        s.request,
        route,
        ds,
        conn,
        (buffered, encoder),
        fill.as_mut(),
    )
    .await;
    if let (Some(f), Some(fetch)) = (fill, fetch) {
        fetch.filled(f.finish().await);
    }
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
    Ok(match &out.error {
        None => End::Complete,
        Some(e) => {
            log::error!("response to the client cut short: {e}");
            End::Truncated
        }
    })
}

/// The request's normalised path, or why it cannot be served. An
/// absolute-form target is routed (and sent upstream) by its path, its
/// authority standing for the Host header, as nginx does.
fn admissible(ps: &mut Downstream) -> std::result::Result<String, (u16, &'static str)> {
    // Only a target that does not start with `/` is absolute-form.
    if ps.raw_path().first() != Some(&b'/') {
        if let Err(e) = to_origin_form(ps.req_header_mut()) {
            log::debug!("absolute-form target: {e}");
            return Err((400, "bad_target"));
        }
    }
    if let Some(refusal) = unservable(ps) {
        return Err(refusal);
    }
    if ps.is_http2() {
        join_cookies(ps.req_header_mut());
    }
    let path = match ferry_wire::text(ps.raw_path()) {
        Ok(p) => normalize_path(p),
        Err(_) => normalize_path(&String::from_utf8_lossy(ps.raw_path())),
    };
    path.ok_or((400, "bad_path"))
}

/// HTTP/2 may split `cookie` into several fields (RFC 9113 8.2.3); an
/// HTTP/1.1 server expects one, so they are joined with "; " as nginx
/// does, before any hook sees the request.
fn join_cookies(req: &mut pingora_http::RequestHeader) {
    let all = req.headers.get_all(http::header::COOKIE);
    if all.iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = all.iter().map(|v| v.as_bytes()).collect();
    let joined = joined.join(&b"; "[..]);
    match http::HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            let _ = req.insert_header(http::header::COOKIE, v);
        }
        Err(e) => log::debug!("cookie fields not joined: {e}"),
    }
}

/// `GET http://host/path` becomes `GET /path` with `Host: host` (RFC 9112
/// 3.2.2: the target's authority stands for the Host header; Pingora has
/// already refused a `Host` that names another one). Pingora keeps such a
/// target whole for the wire and puts only its path in the URI.
fn to_origin_form(req: &mut pingora_http::RequestHeader) -> Result<()> {
    let raw = req.raw_path();
    let Some(at) = raw.windows(3).position(|w| w == b"://") else {
        return Ok(());
    };
    if raw[..at].is_empty() || !raw[..at].iter().all(u8::is_ascii_alphabetic) {
        return Ok(());
    }
    let rest = &raw[at + 3..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = String::from_utf8_lossy(&rest[..end]).into_owned();
    let origin = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    req.insert_header(http::header::HOST, authority)?;
    req.set_raw_path(origin.as_bytes())
}

/// What nginx refuses before any phase and Pingora lets through, with the
/// status and the reason counted: request smuggling shapes
/// (`Content-Length` with `Transfer-Encoding`, RFC 9112 6.1, refused by
/// nginx since 1.23; a transfer coding other than a lone `chunked`: 501),
/// an HTTP/1.1 request without `Host`, a `Host` that is not a host name,
/// a method that is not upper case, and a target that is neither a path
/// nor `*` for `OPTIONS`.
fn unservable(ps: &Downstream) -> Option<(u16, &'static str)> {
    let h = ps.fields();
    // One look at the `Host` lines: each valid, and one there for HTTP/1.1.
    let mut hosts = 0;
    for v in h.values("host") {
        if !crate::request::route::valid_host(v) {
            return Some((400, "bad_host"));
        }
        hosts += 1;
    }
    if hosts == 0 && ps.is_http1() && ps.version() == http::Version::HTTP_11 {
        return Some((400, "no_host"));
    }
    let method = ps.method();
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Some((400, "bad_method"));
    }
    let target = ps.raw_path();
    let asterisk = target == b"*" && method == "OPTIONS";
    // Pingora's parser takes `GET  /a` and `GET /a b` and percent-encodes
    // the spaces into the target (which would then walk around a route);
    // the header clock saw the line as sent.
    let spaced = crate::client::header_clock::request_line_spaced(ps.clock());
    if !asterisk && (target.first() != Some(&b'/') || spaced == Some(false)) {
        return Some((400, "bad_target"));
    }
    let mut te = h.values("transfer-encoding");
    let first = te.next()?;
    let lone_chunked = te.next().is_none() && first.trim_ascii().eq_ignore_ascii_case(b"chunked");
    let both = h.get("content-length").is_some()
        || ps.raw_header().is_some_and(|raw| {
            raw.split(|&b| b == b'\n')
                .any(|l| l.len() > 15 && l[..15].eq_ignore_ascii_case(b"content-length:"))
        });
    if both {
        return Some((400, "smuggling"));
    }
    (!lone_chunked).then_some((501, "transfer_coding"))
}
