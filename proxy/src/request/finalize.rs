//! The beginning and the end of every request: its record made (an id,
//! the real client address, the scheme), and at the end, whichever way it
//! went (served, failed, or refused before its header could be served),
//! the metrics, the access log line and the program's `logging` hook, each
//! from the finished record.
//!
//! nginx counterpart: `ngx_http_create_request` and
//! `ngx_http_finalize_request` with its log phase (`ngx_http_log_request`),
//! which nginx runs for requests it refuses too (400, 414, 431...).

use crate::client::downstream::Downstream;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::metrics::metrics;
use crate::record::Request;
use crate::runtime::Runtime;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType};

/// A name made once: a `&str` is parsed into one on every lookup.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id`, which is the request's id when it sent one.
fn request_id(session: &Downstream) -> Option<String> {
    let id = session.fields().get_name(&X_REQUEST_ID)?;
    std::str::from_utf8(id).ok().map(str::to_string)
}

/// A request begins: the header clock stops, and Ferry's record gets the
/// client's real address, an id and the scheme.
pub(crate) fn begin(rt: &Runtime, session: &Downstream) -> Request {
    crate::client::header_clock::header_done(session.clock());
    let peer = session.client_addr();
    let announced = crate::client::header_clock::announced_client(session.clock());
    let mut request = match request_id(session) {
        Some(id) => Request::new(id, None),
        None => Request::without_id(None),
    };
    request.client_addr = match (announced, &rt.real_ip, peer) {
        (Some(a), _, _) => Some(a),
        (None, Some(rule), Some(p)) => Some(rule.client(p, session.fields())),
        _ => peer,
    };
    if session.is_tls() {
        request.scheme = "https";
    }
    metrics().in_flight.inc();
    request
}

/// A request ends, whichever way it went: metrics, the access log line,
/// the `logging` hook; the header clock rearms for the next request.
pub(crate) async fn finalize<P: ProxyHttp>(
    app: &P,
    rt: &Runtime,
    session: &mut Downstream,
    request: &mut Request,
    ctx: &mut P::CTX,
) {
    crate::client::header_clock::request_done(session.clock());
    if request.status == 0 {
        // A hook wrote the answer on Pingora's session itself.
        if let Some(status) = session.response_written() {
            request.status = status;
        }
    }
    let route = request
        .route
        .map_or("none", |i| rt.routes[i].label.as_str());
    let m = metrics();
    m.in_flight.dec();
    let cache = request
        .route
        .and_then(|i| rt.routes[i].cache.as_ref())
        .map(|c| c.zone.name.as_str());
    let series = request.route.map(|i| &rt.routes[i].series);
    m.record(
        request,
        route,
        series,
        cache,
        session.body_bytes_read() as u64,
    );
    if let Some(log) = &rt.access_log {
        let uri = String::from_utf8_lossy(session.raw_path());
        log.log(request, session.method(), &uri, route);
    }
    let error = request.error.take();
    let mut s = Session {
        downstream: session,
        request,
        runtime: rt,
    };
    if app.defines_hooks() {
        app.logging(&mut s, error.as_deref(), ctx).await;
    }
}

/// A request failed with `e` (a hook's error, or Ferry's): answered through
/// the program's `fail_to_proxy` while no response has started; logged
/// (unless the program suppresses it) when it has.
pub(crate) async fn failed<P: ProxyHttp>(
    app: &P,
    rt: &Runtime,
    session: &mut Downstream,
    request: &mut Request,
    ctx: &mut P::CTX,
    e: Box<Error>,
) {
    let mut s = Session {
        downstream: session,
        request,
        runtime: rt,
    };
    if s.downstream.response_written().is_none() {
        crate::request::flow::fail(app, &mut s, ctx, e).await;
        return;
    }
    if !app.suppress_error_log(&s, ctx, &e) {
        log::error!(
            "{e}, after the response began, {}",
            app.request_summary(&s, ctx)
        );
    }
    s.request.error = Some(e.into());
}

/// A request refused before it could be served (400 for a header that
/// does not parse, 405 for `CONNECT`, 414, 431), after its answer went
/// out: recorded and finalized as any request, so it has its access log
/// line and its `logging` call. When Pingora could not read its header
/// (`header_read` false) the hooks see a stand-in session whose header is
/// `- / HTTP/1.1`, and the log line says method `-`, target `/`.
pub(crate) async fn refused<P: ProxyHttp>(
    app: &P,
    rt: &Runtime,
    session: &mut Downstream,
    status: u16,
    header_read: bool,
) {
    // The client as the connection knows it (a trusted PROXY header's, or
    // the peer's): without a header there is no real_ip header to read.
    let addr = crate::client::header_clock::announced_client(session.clock())
        .or_else(|| session_addr(session));
    let mut stand_in;
    let s: &mut Downstream = match header_read {
        true => session,
        false => match stand_in_session().await {
            Some(ps) => {
                stand_in = ps;
                &mut stand_in
            }
            None => return,
        },
    };
    let mut request = begin(rt, s);
    if !header_read {
        request.client_addr = addr;
    }
    request.status = status;
    request.uri = match header_read {
        true => String::from_utf8_lossy(s.req_header().raw_path()).into_owned(),
        false => "-".to_string(),
    };
    let e = Error::explain(ErrorType::HTTPStatus(status), "refused before routing");
    request.error = Some(e.into());
    let mut ctx = app.new_ctx();
    finalize(app, rt, s, &mut request, &mut ctx).await;
}

/// The client's address of `session`, as the record keeps it.
fn session_addr(session: &Downstream) -> Option<std::net::SocketAddr> {
    session.client_addr()
}

/// A session standing in for one whose header could not be read: its
/// header `- / HTTP/1.1`, read from memory.
async fn stand_in_session() -> Option<Downstream> {
    let bytes = std::io::Cursor::new(b"- / HTTP/1.1\r\n\r\n".to_vec());
    let mut ps = ServerSession::new_http1(Box::new(bytes));
    match ps.read_request().await {
        Ok(true) => Some(Downstream::Pingora(Box::new(ps))),
        _ => None,
    }
}
