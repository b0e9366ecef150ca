//! Why a message was refused on the wire: the one error type of ferry-wire.
//! nginx's counterpart is the `NGX_HTTP_PARSE_INVALID_*` codes of
//! ngx_http_parse.c that end in a 400 (or a 502 for an upstream response).

use std::fmt;

/// A refusal. Every variant means the connection cannot be trusted any more:
/// the caller answers 400 (request) or 502 (response) and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The head does not parse (httparse's reason: token, version, header
    /// name or value, new line, status).
    Header(&'static str),
    /// More header lines than the caller allows.
    TooManyHeaders,
    /// `Content-Length` that is not one non-negative decimal number, or
    /// several that differ (only when there is no `Transfer-Encoding`).
    BadContentLength,
    /// A request with `Transfer-Encoding` whose final coding is not
    /// `chunked`, or an HTTP/1.0 request with `Transfer-Encoding`.
    BadTransferEncoding,
    /// More than one `Host` line, or userinfo (`@`) in `Host`.
    BadHost,
    /// A response status below 100.
    BadStatus,
    /// A malformed chunked body: chunk-size line, the CRLF after a chunk,
    /// an over-long chunk-size line or a malformed or over-long trailer
    /// section.
    BadChunk(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Header(why) => write!(f, "invalid HTTP head: {why}"),
            WireError::TooManyHeaders => f.write_str("too many header lines"),
            WireError::BadContentLength => f.write_str("invalid Content-Length"),
            WireError::BadTransferEncoding => f.write_str("invalid Transfer-Encoding"),
            WireError::BadHost => f.write_str("invalid Host"),
            WireError::BadStatus => f.write_str("invalid response status"),
            WireError::BadChunk(why) => write!(f, "invalid chunked body: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// httparse's error as a `WireError`.
pub(crate) fn from_httparse(e: httparse::Error) -> WireError {
    match e {
        httparse::Error::TooManyHeaders => WireError::TooManyHeaders,
        httparse::Error::HeaderName => WireError::Header("header name"),
        httparse::Error::HeaderValue => WireError::Header("header value"),
        httparse::Error::NewLine => WireError::Header("new line"),
        httparse::Error::Status => WireError::Header("status"),
        httparse::Error::Token => WireError::Header("token"),
        httparse::Error::Version => WireError::Header("version"),
    }
}
