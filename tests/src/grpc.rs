//! The gRPC echo service the tests speak (nginx's counterpart: a
//! `grpc_pass` upstream): its messages, written by hand with prost's derive
//! (no `protoc`), its method paths, and the wire format (length-prefixed
//! messages, `grpc-timeout`) for a test that reads or writes raw bytes.
//!
//! The service, `ferry.test.Echo`, has one method of each kind; each
//! request message also says how the server should behave (sleep, end with
//! a status, add trailers), so one server covers every case. The server is
//! [`crate::grpc_server::GrpcServer`], the client
//! [`crate::grpc_client::GrpcClient`].

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::time::Duration;

/// Unary: one request, one reply echoing `text`.
pub const UNARY: &str = "/ferry.test.Echo/Unary";
/// Server streaming: one request, `count` replies `text-0`, `text-1`, ...
pub const SERVER_STREAM: &str = "/ferry.test.Echo/ServerStream";
/// Client streaming: many requests, one reply: the texts concatenated,
/// `index` = how many requests came.
pub const CLIENT_STREAM: &str = "/ferry.test.Echo/ClientStream";
/// Bidirectional: each request echoed as soon as it arrives.
pub const BIDI: &str = "/ferry.test.Echo/Bidi";

/// A request, and how the server should answer it. For client streaming
/// the first message's behaviour fields apply; for bidi, a message with a
/// non-zero `status` ends the call with that status after the echoes so far.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Echoed back.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Server streaming: how many replies (0 = none).
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Sleep this long before answering. The server answers
    /// DEADLINE_EXCEEDED when the call's `grpc-timeout` runs out first
    /// (as gRPC servers do), unless `ignore_deadline`.
    #[prost(uint64, tag = "3")]
    pub sleep_ms: u64,
    /// Sleep past the deadline anyway (to see who gives up).
    #[prost(bool, tag = "4")]
    pub ignore_deadline: bool,
    /// Non-zero: end the call with this `grpc-status`.
    #[prost(int32, tag = "5")]
    pub status: i32,
    /// The `grpc-message` to go with `status`.
    #[prost(string, tag = "6")]
    pub message: String,
    /// With `status`: send the replies first, the status in trailers after
    /// them (false: a trailers-only response, no body).
    #[prost(bool, tag = "7")]
    pub status_after_body: bool,
    /// Extra response trailers (names in lowercase).
    #[prost(map = "string, string", tag = "8")]
    pub trailers: HashMap<String, String>,
    /// Server streaming: pause this long between replies.
    #[prost(uint64, tag = "9")]
    pub interval_ms: u64,
}

/// A reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The echoed text.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Which reply this is (0, 1, ...); for client streaming, how many
    /// requests came.
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

impl EchoRequest {
    /// A request echoing `text`, with no special behaviour.
    pub fn text(text: &str) -> EchoRequest {
        EchoRequest {
            text: text.to_string(),
            ..EchoRequest::default()
        }
    }
}

/// One message as gRPC frames it on the wire: a zero compression flag, the
/// length (4 bytes, big-endian), the protobuf bytes.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let bytes = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + bytes.len());
    out.put_u8(0);
    out.put_u32(bytes.len() as u32);
    out.put_slice(&bytes);
    out.freeze()
}

/// The messages in a gRPC body; `None` when it is not whole frames of
/// uncompressed `M`.
pub fn unframe<M: prost::Message + Default>(mut body: &[u8]) -> Option<Vec<M>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (&flag, rest) = body.split_first()?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let bytes = rest.get(4..4 + len)?;
        if flag != 0 {
            return None;
        }
        out.push(M::decode(bytes).ok()?);
        body = &rest[4 + len..];
    }
    Some(out)
}

/// A `grpc-timeout` value (`100m`, `2S`, ...) as a duration; `None` when
/// malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
