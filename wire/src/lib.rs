//! ferry-wire: Ferry's HTTP/1 wire layer as plain functions over byte slices:
//! request and response heads, body framing and the chunked decoder. nginx's
//! counterpart is ngx_http_parse.c (request line, header lines, chunked) and
//! the framing decisions of ngx_http_request.c / ngx_http_upstream.c.
//!
//! Every verdict matches Pingora 0.9's HTTP/1 sessions (the differential
//! harness in `tests/differential` checks this), so that Ferry's own wire
//! path accepts and frames exactly what the Pingora path did.

#![warn(missing_docs)]

mod chunked;
mod error;
mod framing;
mod line;
mod name;
mod request;
mod response;
mod text;

pub use chunked::{ChunkedDecoder, Decoded};
pub use error::WireError;
pub use framing::Framing;
pub use line::{unfold, Line};
pub use name::same_name;
pub use request::{parse_request, RequestHead};
pub use response::{parse_response, ResponseHead};
pub use text::text;

/// Pingora's bound on a head (pingora-core `MAX_HEADER_SIZE`): a caller
/// refuses a head still `Partial` after this many bytes, as Pingora does.
pub const MAX_HEAD_BYTES: usize = 1_048_575;

/// Pingora's bound on header lines (pingora-core `MAX_HEADERS`), the
/// `max_headers` that gives Pingora's verdicts.
pub const MAX_HEADERS: usize = 256;

/// The answer of a head parser: the whole head, or more bytes are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The whole head.
    Complete(T),
    /// The head is not complete yet: read more and parse again.
    Partial,
}
