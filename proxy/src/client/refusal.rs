//! A request refused before routing, by Ferry or by Pingora: counted by
//! reason in `ferry_bad_requests_total` and logged once; and what a client
//! that fails while sending its body is answered.
//!
//! nginx counterpart: the `client sent invalid ...` lines of its error log,
//! and `ngx_http_read_client_request_body`'s 400 / 408 / 499.

use pingora_error::{Error, ErrorType};

/// nginx's 499: the client closed the connection; nothing is answered.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// The answer to a client whose request body failed to arrive: 400 for a
/// broken one (bad chunked framing), 408 for a stall, 499 when it left.
pub(crate) fn body_failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::ReadTimedout => 408,
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error => 400,
        // Pingora's body reader: `InvalidChunk`, `PrematureBodyEnd`.
        ErrorType::Custom("InvalidChunk") => 400,
        // `request_body_filter` refused the body.
        ErrorType::HTTPStatus(code) => *code,
        _ => CLIENT_CLOSED,
    }
}

/// Count and log one refusal.
pub(crate) fn refused(peer: &str, status: &str, reason: &str) {
    crate::metrics::metrics()
        .bad_requests
        .with_label_values(&[reason])
        .inc();
    log::warn!("refused a request from {peer} with {status}: {reason}");
}
