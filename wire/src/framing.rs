//! How a message's body is delimited, and the header rules that decide it:
//! `Content-Length` reconciliation, the final `Transfer-Encoding` coding and
//! the `Connection` tokens. nginx's counterpart is the `headers_in`
//! processing of ngx_http_request.c (`content_length_n`, `chunked`,
//! `connection_type`) and ngx_http_upstream.c's `process_header`.
//!
//! The rules are Pingora 0.9's (pingora-core `protocols/http/v1/common.rs`).

use crate::line::{self, Line};
use crate::WireError;

/// Where a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body: feed the bytes after the head to a `ChunkedDecoder`.
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

/// Every `Content-Length` value (across duplicate lines and comma lists)
/// reconciled into one: `Ok(None)` when absent, an error when a value is not
/// visible ASCII, is not a plain run of decimal digits (no sign, no inner
/// space; spaces and tabs around a list element are allowed), overflows
/// `u64`, or differs from another one (Pingora's `content_length_parse_all`,
/// hyper's rule).
pub(crate) fn content_length(lines: &[Line], buf: &[u8]) -> Result<Option<u64>, WireError> {
    let mut found: Option<u64> = None;
    // A request's: never folded (httparse refuses obs-fold in one).
    for value in line::raw_values(lines, buf, "content-length") {
        reconcile(value, &mut found)?;
    }
    Ok(found)
}

/// One `Content-Length` value (unfolded) reconciled with those `found`
/// before it, as [`content_length`] does each.
pub(crate) fn reconcile(value: &[u8], found: &mut Option<u64>) -> Result<(), WireError> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(WireError::BadContentLength);
    }
    for part in value.split(|&b| b == b',') {
        let n = digits(trim(part)).ok_or(WireError::BadContentLength)?;
        match *found {
            Some(prev) if prev != n => return Err(WireError::BadContentLength),
            _ => *found = Some(n),
        }
    }
    Ok(())
}

/// A non-empty run of ASCII digits as a `u64`.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Without leading and trailing spaces and tabs (`str::trim` on the visible
/// ASCII a `Content-Length` value is checked to be).
fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Whether the LAST `Transfer-Encoding` line's last comma-separated coding
/// is `chunked` (ASCII case-insensitive, surrounding ASCII whitespace
/// ignored).
pub(crate) fn chunked_is_final(lines: &[Line], buf: &[u8]) -> bool {
    let Some(last) = line::values(lines, buf, "transfer-encoding").next_back() else {
        return false;
    };
    let last = &*last;
    let token = match last.iter().rposition(|&b| b == b',') {
        Some(comma) => &last[comma + 1..],
        None => last,
    };
    token.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// What the first `Connection` line says about keepalive: `Some(true)` only
/// for a value that is exactly `keep-alive`, `Some(false)` when a `close`
/// token is in the list, `None` otherwise (then the version decides).
pub(crate) fn connection_keepalive(lines: &[Line], buf: &[u8]) -> Option<bool> {
    let value = line::values(lines, buf, "connection").next()?;
    connection_verdict(&value)
}

/// What a `Connection` value says about keepalive (see
/// `connection_keepalive`).
pub(crate) fn connection_verdict(value: &[u8]) -> Option<bool> {
    if crate::same_name(value, b"keep-alive") {
        return Some(true);
    }
    // Pingora reads the list only as UTF-8, and a list never means keep-alive.
    let text = std::str::from_utf8(value).unwrap_or("");
    let close = text
        .split(',')
        .map(str::trim)
        .any(|t| t.eq_ignore_ascii_case("close"));
    close.then_some(false)
}

/// Keepalive from `Connection`, else from the version (on for HTTP/1.1).
pub(crate) fn keepalive(lines: &[Line], buf: &[u8], minor: u8) -> bool {
    connection_keepalive(lines, buf).unwrap_or(minor == 1)
}
