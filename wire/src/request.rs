//! A request head: the request line and header lines of a client's request,
//! parsed in place, with the framing and keepalive verdicts Pingora 0.9's
//! server session reaches (pingora-core `protocols/http/v1/server.rs`).
//! nginx's counterpart is ngx_http_parse_request_line and
//! ngx_http_parse_header_line with ngx_http_process_request_header.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::error::from_httparse;
use crate::framing::{self, Framing};
use crate::line::{self, range_in, Line};
use crate::{Parsed, WireError};

/// A parsed request head; every range points into the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token.
    pub method: Range<usize>,
    /// The request target, raw (fragment included).
    pub target: Range<usize>,
    /// HTTP/1.x
    pub minor: u8,
    /// The header lines in order.
    pub lines: Vec<Line>,
    /// Bytes of the head including the final empty line.
    pub len: usize,
}

/// Parses a request head from the start of `buf` with httparse's default
/// (strict) rules: no obs-fold, no space before a header's colon; bare LF
/// line ends are accepted. Refuses more than `max_headers` lines, a second
/// `Host` or userinfo in `Host`, and the `Content-Length` and
/// `Transfer-Encoding` combinations Pingora refuses (see `framing`).
/// An origin-form target must be one the `http` crate stores (see
/// `origin_target_ok`). The raw target is kept as received: unlike
/// Pingora, no percent-escaping of bytes httparse refuses, and none of
/// Pingora's checks of an absolute-form or CONNECT target's authority (nor
/// of its path) against `Host`: a caller accepting such targets applies
/// them itself.
pub fn parse_request(buf: &[u8], max_headers: usize) -> Result<Parsed<RequestHead>, WireError> {
    let head = line::with_slots(max_headers, |slots| parse_with(buf, slots))?;
    match head {
        Parsed::Complete(h) => {
            h.validate(buf)?;
            Ok(Parsed::Complete(h))
        }
        Parsed::Partial => Ok(Parsed::Partial),
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Parsed<RequestHead>, WireError> {
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(buf, headers)
        .map_err(from_httparse)?;
    let httparse::Status::Complete(len) = status else {
        return Ok(Parsed::Partial);
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(WireError::Header("request line"));
    };
    Ok(Parsed::Complete(RequestHead {
        method: range_in(buf, method.as_bytes()),
        target: range_in(buf, target.as_bytes()),
        minor: req.version.unwrap_or(1),
        lines: line::lines_of(buf, req.headers),
        len,
    }))
}

impl RequestHead {
    /// Pingora's `validate_request`: one `Host` without userinfo, then the
    /// framing (a `Content-Length` is only checked without
    /// `Transfer-Encoding`, which overrides it).
    fn validate(&self, buf: &[u8]) -> Result<(), WireError> {
        // A request's values are never folded (httparse refuses obs-fold in
        // one): they are read raw.
        let mut hosts = line::raw_values(&self.lines, buf, "host");
        let (host, second) = (hosts.next(), hosts.next());
        if second.is_some() || host.is_some_and(|h| h.contains(&b'@')) {
            return Err(WireError::BadHost);
        }
        if !origin_target_ok(buf.get(self.target.clone()).unwrap_or_default()) {
            return Err(WireError::Header("request target"));
        }
        self.framing(buf).map(|_| ())
    }

    /// The first field named `name` (ASCII case-insensitive).
    pub fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        line::first(&self.lines, buf, name)
    }

    /// Where the body ends. With `Transfer-Encoding`: `Chunked` when its
    /// final coding is chunked (any `Content-Length` is ignored), else
    /// refused, and refused for HTTP/1.0. Without: the reconciled
    /// `Content-Length`, refused when invalid, and `Empty` when absent or 0
    /// (a request is never close-delimited). `Upgrade` changes nothing here:
    /// this is the body before the upgrade completes; after a 101 the caller
    /// relays both directions until close.
    pub fn framing(&self, buf: &[u8]) -> Result<Framing, WireError> {
        if line::has(&self.lines, buf, "transfer-encoding") {
            if self.minor == 0 || !framing::chunked_is_final(&self.lines, buf) {
                return Err(WireError::BadTransferEncoding);
            }
            return Ok(Framing::Chunked);
        }
        match framing::content_length(&self.lines, buf)? {
            Some(0) | None => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
        }
    }

    /// Whether the connection may carry another request after this one:
    /// `Connection: keep-alive` (exactly) or HTTP/1.1 without a `close`
    /// token; never when both `Transfer-Encoding` and `Content-Length` came.
    pub fn keepalive(&self, buf: &[u8]) -> bool {
        if line::has(&self.lines, buf, "transfer-encoding")
            && line::has(&self.lines, buf, "content-length")
        {
            return false;
        }
        framing::keepalive(&self.lines, buf, self.minor)
    }

    /// What `Connection` asks: `Some(true)` keep-alive (exactly),
    /// `Some(false)` a `close` token, `None` neither (or no `Connection`).
    pub fn connection(&self, buf: &[u8]) -> Option<bool> {
        framing::connection_keepalive(&self.lines, buf)
    }
}

/// Most bytes of a target the `http` crate stores (its `MAX_LEN`).
const TARGET_MAX: usize = u16::MAX as usize - 1;

/// Whether an origin-form (`/...`, `?...`) or asterisk-form target is one
/// Pingora can store: the `http` crate's path-and-query rules on the target
/// less its fragment: in the path no `<`, `>` or backquote, in the query no
/// `"`, `<` or `>` (httparse already refuses controls, space and DEL); at
/// most 65534 bytes once invalid UTF-8 is replaced. Other target forms are
/// not checked here (see `parse_request`).
fn origin_target_ok(target: &[u8]) -> bool {
    let target = match target.iter().position(|&b| b == b'#') {
        Some(fragment) => &target[..fragment],
        None => target,
    };
    if !matches!(target.first(), Some(b'/' | b'?')) {
        return true;
    }
    // Each byte is at most three as text (U+FFFD): a short target is short.
    if target.len() > TARGET_MAX / 3 && String::from_utf8_lossy(target).len() > TARGET_MAX {
        return false;
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let path_ok = !path.iter().any(|b| matches!(b, b'<' | b'>' | b'`'));
    let query_ok = !query.iter().any(|b| matches!(b, b'"' | b'<' | b'>'));
    path_ok && query_ok
}
