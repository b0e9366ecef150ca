//! Ferry's own answers: error pages (404 no route, 413, 502, 504, ...),
//! `return` routes, and intercepted upstream errors.
//!
//! nginx counterpart: `ngx_http_special_response_handler` (its default error
//! pages) and `error_page`; `return`.

use crate::client::downstream::Downstream;
use crate::record::Request;
use bytes::Bytes;
use ferry_conf::{ProxyConf, Return};
use http::header;
use pingora_error::Result;
use pingora_http::ResponseHeader;

/// nginx's default page for a status.
pub fn default_page(status: u16) -> String {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!(
        "<html>\n<head><title>{status} {reason}</title></head>\n<body>\n<center><h1>{status} {reason}</h1></center>\n<hr><center>ferry</center>\n</body>\n</html>\n"
    )
}

/// Ferry's answer to a request whose header Pingora could not read (400)
/// or that Ferry does not serve before any phase (405 for `CONNECT`):
/// nginx's default page, `Server: ferry`, and the connection closes. No
/// route, no request record: only the bytes.
pub(crate) async fn refuse_unread(ps: &mut Downstream, status: u16) -> Result<()> {
    let body = default_page(status);
    let mut h = ResponseHeader::build(status, Some(4))?;
    h.insert_header(header::SERVER, "ferry")?;
    h.insert_header(header::CONTENT_TYPE, "text/html")?;
    h.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    h.insert_header(header::CONNECTION, "close")?;
    ps.write_error_response(h, Bytes::from(body)).await
}

/// Write a complete response: header with `Server: ferry`, then the body.
pub async fn write_whole(
    ps: &mut Downstream,
    request: &mut Request,
    mut header: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    header.insert_header(header::SERVER, "ferry")?;
    request.status = header.status.as_u16();
    let head_only = ps.method() == "HEAD";
    ps.write_response_header(Box::new(header)).await?;
    if !head_only && !body.is_empty() {
        request.body_bytes_sent += body.len() as u64;
    }
    ps.write_response_body(body, true).await
}

/// Ferry's error answer for `status`: the route's `error_pages` entry if
/// there is one, else nginx's default page. `extra` headers are added (an
/// intercepted 401 keeps its `WWW-Authenticate`). A gRPC call gets a gRPC
/// status instead ([`super::grpc`]).
pub async fn error(
    ps: &mut Downstream,
    request: &mut Request,
    status: u16,
    proxy: Option<&ProxyConf>,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> Result<()> {
    if super::grpc::is_grpc(ps.fields()) {
        return super::grpc::answer(ps, request, status).await;
    }
    let page = proxy.and_then(|p| p.error_pages.get(&status));
    let (code, body, content_type) = match page {
        Some(p) => (
            p.status.unwrap_or(status),
            p.body.clone(),
            p.content_type.as_str(),
        ),
        None => (status, default_page(status), "text/html"),
    };
    let mut h = ResponseHeader::build(code, Some(4))?;
    h.insert_header(header::CONTENT_TYPE, content_type)?;
    h.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    for (k, v) in extra {
        h.append_header(k.clone(), v.clone())?;
    }
    if matches!(status, 400 | 408 | 413 | 414 | 431 | 500 | 501) {
        // nginx closes after these: the rest of the request may be garbage.
        ps.set_keepalive(None);
        h.insert_header(header::CONNECTION, "close")?;
    }
    write_whole(ps, request, h, Bytes::from(body)).await
}

/// A `return` route.
pub async fn route_return(ps: &mut Downstream, request: &mut Request, r: &Return) -> Result<()> {
    let mut h = ResponseHeader::build(r.status, Some(4))?;
    let redirect = matches!(r.status, 301 | 302 | 303 | 307 | 308);
    let body = if r.body.is_empty() && redirect {
        default_page(r.status)
    } else {
        r.body.clone()
    };
    let has_type = r
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !has_type {
        let t = if r.body.is_empty() && redirect {
            "text/html"
        } else {
            "text/plain"
        };
        h.insert_header(header::CONTENT_TYPE, t)?;
    }
    for (k, v) in r.headers.iter() {
        h.append_header(k.to_string(), v.as_str())?;
    }
    if let Some(loc) = &r.location {
        h.insert_header(header::LOCATION, loc.as_str())?;
    }
    h.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    write_whole(ps, request, h, Bytes::from(body)).await
}
