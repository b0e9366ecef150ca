//! The request head one try sends: Pingora's header (what hooks and HTTP/2
//! take), or HTTP/1 bytes written straight from the client's header when
//! no hook reads or changes it.
//!
//! nginx counterpart: the buffer `ngx_http_proxy_create_request` fills.

use pingora_http::RequestHeader;

/// What a try sends ahead of the body.
pub(crate) enum RequestHead {
    /// Pingora's header, through `upstream_request_filter`.
    Header(Box<RequestHeader>),
    /// An HTTP/1 head as bytes ([`ferry_filters::headers::RequestPlan::write_h1`]).
    Wire(WireHead),
}

/// An HTTP/1 request head as it goes on the wire, with what the session
/// must know of it to read the answer and frame the body.
pub(crate) struct WireHead {
    pub bytes: Vec<u8>,
    /// A `HEAD` request: its answer has no body.
    pub head: bool,
    /// It says `Connection: close`.
    pub close: bool,
    /// How the body is framed.
    pub body: ferry_filters::headers::BodyFraming,
    /// The answer's header names keep their case: someone will write them
    /// in HTTP/1 (an HTTP/2 client's frames have them in lower case).
    pub keep_case: bool,
}
