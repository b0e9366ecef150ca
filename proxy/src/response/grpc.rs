//! Ferry's own answer to a gRPC request it must fail (no server, a timeout,
//! a limit): a gRPC status a client library understands, instead of an HTML
//! page it cannot read.
//!
//! nginx counterpart: none (nginx answers a `grpc_pass` failure with its
//! HTML error page, which gRPC clients report as a protocol error); the
//! mapping is Envoy's. The answer is "trailers-only": HTTP 200 and one
//! header block that ends the stream, holding `grpc-status` and
//! `grpc-message`.

use crate::client::downstream::Downstream;
use crate::record::Request;
use ferry_filters::fields::Fields;
use http::header;
use pingora_core::protocols::http::HttpTask;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::time::Duration;

/// gRPC status codes Ferry answers with.
const INTERNAL: u8 = 13;
const UNAUTHENTICATED: u8 = 16;
const PERMISSION_DENIED: u8 = 7;
const UNIMPLEMENTED: u8 = 12;
const RESOURCE_EXHAUSTED: u8 = 8;
const UNAVAILABLE: u8 = 14;
const DEADLINE_EXCEEDED: u8 = 4;
const UNKNOWN: u8 = 2;

/// A gRPC call: its `Content-Type` starts with `application/grpc`.
pub(crate) fn is_grpc(req: Fields<'_>) -> bool {
    req.get_name(&header::CONTENT_TYPE)
        .is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// A call's deadline: `grpc-timeout` is at most 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`); anything else is no deadline.
pub(crate) fn deadline(req: Fields<'_>) -> Option<Duration> {
    if !is_grpc(req) {
        return None;
    }
    let v = req.get("grpc-timeout")?;
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for Ferry's HTTP `status`; `limited`: a limit refused
/// the request (whatever status the limit answers with).
pub(crate) fn status_for(status: u16, limited: bool) -> u8 {
    if limited {
        return RESOURCE_EXHAUSTED;
    }
    match status {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        413 | 429 => RESOURCE_EXHAUSTED,
        502 | 503 => UNAVAILABLE,
        504 => DEADLINE_EXCEEDED,
        _ => UNKNOWN,
    }
}

/// `grpc-message` is percent-encoded (the gRPC HTTP/2 protocol): bytes
/// outside printable ASCII, and `%` itself.
fn percent_encoded(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Answer the gRPC call with the status Ferry's HTTP `status` maps to.
pub(crate) async fn answer(ps: &mut Downstream, request: &mut Request, status: u16) -> Result<()> {
    use crate::limit::status::LimitStatus::Rejected;
    let limited = request.limit_req_status == Rejected || request.limit_conn_status == Rejected;
    let code = status_for(status, limited);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let why = match (limited, status) {
        (true, _) => "ferry: a limit refused the call".to_string(),
        (false, 502 | 503) => {
            format!("ferry: no upstream could serve the call ({status} {reason})")
        }
        (false, 504) => format!("ferry: the upstream timed out ({status} {reason})"),
        _ => format!("ferry: {status} {reason}"),
    };
    let mut h = ResponseHeader::build(200, Some(4))?;
    h.insert_header(header::SERVER, "ferry")?;
    h.insert_header(header::CONTENT_TYPE, "application/grpc")?;
    h.insert_header("grpc-status", code.to_string())?;
    h.insert_header("grpc-message", percent_encoded(&why))?;
    request.status = 200;
    ps.response_duplex_vec(vec![HttpTask::Header(Box::new(h), true)])
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferrys_failures_map_as_the_contract_says() {
        assert_eq!(status_for(502, false), 14);
        assert_eq!(status_for(503, false), 14);
        assert_eq!(status_for(504, false), 4);
        assert_eq!(status_for(503, true), 8);
        assert_eq!(status_for(429, true), 8);
        assert_eq!(status_for(404, false), 12);
    }

    #[test]
    fn deadlines_read_as_grpc_writes_them() {
        let req = |t: &str| {
            let mut r = pingora_http::RequestHeader::build("POST", b"/svc/M", None).unwrap();
            r.insert_header("content-type", "application/grpc").unwrap();
            r.insert_header("grpc-timeout", t).unwrap();
            r
        };
        assert_eq!(
            deadline(Fields::Header(&req("100m"))),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            deadline(Fields::Header(&req("2S"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            deadline(Fields::Header(&req("1H"))),
            Some(Duration::from_secs(3600))
        );
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(deadline(Fields::Header(&req(bad))), None, "{bad}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encoded("50% ok"), "50%25 ok");
        assert_eq!(percent_encoded("naïve\n"), "na%C3%AFve%0A");
    }
}
