//! The header the client gets, made from the upstream's.
//!
//! nginx counterpart: `ngx_http_upstream_process_headers` then
//! `ngx_http_upstream_send_response`: hidden headers dropped, `Location` /
//! `Refresh` rewritten (`proxy_redirect`), and the body re-framed for the
//! client: the upstream's `Content-Length` when it has one, else chunked to
//! an HTTP/1.1 client, or close-delimited to an HTTP/1.0 one.

use crate::runtime::RouteRt;
use http::header::{self, HeaderValue};
use http::Version;
use pingora_error::Result;
use pingora_http::ResponseHeader;

/// What `X-Accel-Buffering` asks of this response, if anything.
pub fn accel_buffering(upstream: &ResponseHeader) -> Option<bool> {
    // A name made once: a `&str` is parsed into one on every lookup.
    const X_ACCEL_BUFFERING: header::HeaderName =
        header::HeaderName::from_static("x-accel-buffering");
    let v = upstream.headers.get(X_ACCEL_BUFFERING)?.as_bytes();
    if v.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

/// Make the client's header of the upstream's, in place. `client_version`
/// is the client's HTTP version; `host` its Host header (for absolute
/// redirects).
pub fn build(
    route: &RouteRt,
    resp: &mut ResponseHeader,
    client_version: Version,
    host: &str,
    scheme: &str,
) -> Result<()> {
    // Names made once: a `&str` is parsed into one on every lookup.
    const REFRESH: header::HeaderName = header::HeaderName::from_static("refresh");
    let rewrite = |name: header::HeaderName, f: &dyn Fn(&str) -> Option<String>| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(f)
    };
    let (location, refresh) = if route.redirect.is_off() {
        (None, None)
    } else {
        (
            rewrite(header::LOCATION, &|v| {
                route.redirect.location(v, scheme, host)
            }),
            rewrite(REFRESH, &|v| route.redirect.refresh(v)),
        )
    };
    let has_length = resp.headers.contains_key(header::CONTENT_LENGTH);
    let status = resp.status.as_u16();
    let client_h1 = client_version != Version::HTTP_2;
    route.response_plan.build(resp, client_h1)?;
    if let Some(new) = location {
        resp.insert_header(header::LOCATION, new)?;
    }
    if let Some(new) = refresh {
        resp.insert_header("Refresh", new)?;
    }
    // The upstream's Content-Length was kept by the plan.
    if !has_length && !no_body(status) && client_version == Version::HTTP_11 {
        resp.insert_header(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )?;
    }
    Ok(())
}

fn no_body(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

/// The route's `add_headers` (nginx `add_header ... always`), rendered for
/// this request, its tries, its cache status and the `upstream` response
/// header it comes from (`$upstream_http_NAME`; `None` from the cache).
pub(crate) fn add_headers(
    route: &RouteRt,
    s: &crate::hooks::session::Session<'_>,
    upstream: Option<&http::HeaderMap>,
    resp: &mut ResponseHeader,
) -> Result<()> {
    for (name, value) in added(route, s, upstream) {
        resp.append_header(name.to_string(), value)?;
    }
    Ok(())
}

/// The lines `add_headers` adds for this request: each name with its
/// value, those whose value came out empty left out.
pub(crate) fn added<'r>(
    route: &'r RouteRt,
    s: &crate::hooks::session::Session<'_>,
    upstream: Option<&http::HeaderMap>,
) -> Vec<(&'r str, String)> {
    let adds = &route.conf.proxy.add_headers;
    if adds.is_empty() {
        return Vec::new();
    }
    // Made only when a line uses them (each is a new string).
    use ferry_conf::Variable as V;
    let remote = s.remote_text(adds.iter().map(|(_, t)| t));
    let tried = adds
        .iter()
        .any(|(_, t)| t.uses(|v| matches!(v, V::UpstreamAddr | V::UpstreamStatus)));
    let (addr, status) = match tried {
        true => (s.request.upstream_addr(), s.request.upstream_status()),
        false => (String::new(), String::new()),
    };
    let group = route.conf.upstream.as_deref().unwrap_or("");
    let mut vars = s.vars(&remote, group);
    vars.upstream_addr = &addr;
    vars.upstream_status = &status;
    vars.upstream_headers = upstream;
    let rendered = adds.iter().map(|(name, value)| (name, vars.render(value)));
    rendered.filter(|(_, v)| !v.is_empty()).collect()
}
