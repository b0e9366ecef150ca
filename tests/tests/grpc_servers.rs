//! The HTTP/2 and gRPC test servers and clients, checked against each
//! other with no Ferry in between: each gRPC kind, error statuses
//! (trailers-only and after a body), deadlines, custom trailers, the
//! request headers recorded; HTTP/2 answers with trailers, stream resets,
//! GOAWAY (processed and unprocessed streams), streams sharing a
//! connection, and an address where nothing listens. The tests of HTTP/2
//! and gRPC proxying rest on these.

use bytes::Bytes;
use ferry_tests::ferry::fresh_dir;
use ferry_tests::grpc::{self, EchoReply, EchoRequest, SERVER_STREAM, UNARY};
use ferry_tests::grpc_client::GrpcClient;
use ferry_tests::grpc_server::GrpcServer;
use ferry_tests::h2_client::H2Client;
use ferry_tests::h2_server::{down_addr, H2Act, H2Reply, H2Server};
use ferry_tests::tls::SelfSigned;
use h2::Reason;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn unary_echoes_and_the_server_records_the_request_headers() {
    let server = GrpcServer::start().await;
    let mut client = GrpcClient::h2c(server.addr).header("x-call", "one");
    let out = client.unary(EchoRequest::text("hi")).await;
    assert_eq!((out.code, out.texts()), (Code::Ok, vec!["hi".to_string()]));
    assert!(!out.trailers_only);
    let seen = server.last();
    assert_eq!(seen.path, UNARY);
    assert_eq!(seen.header("te").as_deref(), Some("trailers"));
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/grpc")
    );
    assert_eq!(seen.header("x-call").as_deref(), Some("one"));
    assert_eq!(seen.header("grpc-timeout"), None);
    assert_eq!((server.calls(), server.conns(), seen.conn), (1, 1, 0));
}

#[tokio::test]
async fn server_streaming_sends_count_replies() {
    let server = GrpcServer::start().await;
    let mut client = GrpcClient::h2c(server.addr);
    let req = EchoRequest {
        count: 4,
        interval_ms: 5,
        ..EchoRequest::text("s")
    };
    let out = client.server_stream(req).await;
    assert_eq!(out.code, Code::Ok);
    assert_eq!(out.texts(), ["s-0", "s-1", "s-2", "s-3"]);
    let indexes: Vec<u32> = out.replies.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
}

#[tokio::test]
async fn client_streaming_concatenates_and_counts() {
    let server = GrpcServer::start().await;
    let mut client = GrpcClient::h2c(server.addr);
    let reqs = ["a", "b", "c"].map(EchoRequest::text).to_vec();
    let out = client.client_stream(reqs).await;
    let want = EchoReply {
        text: "abc".into(),
        index: 3,
    };
    assert_eq!((out.code, out.replies), (Code::Ok, vec![want]));
}

#[tokio::test]
async fn bidi_echoes_each_message_in_lock_step() {
    let server = GrpcServer::start().await;
    let mut client = GrpcClient::h2c(server.addr);
    let reqs = ["one", "two", "three"].map(EchoRequest::text).to_vec();
    let out = client.bidi(reqs).await;
    assert_eq!(out.code, Code::Ok);
    assert_eq!(out.texts(), ["one", "two", "three"]);
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn an_error_status_alone_is_a_trailers_only_response() {
    let server = GrpcServer::start().await;
    let req = EchoRequest {
        status: Code::NotFound as i32,
        message: "no such thing".into(),
        ..EchoRequest::text("x")
    };
    let out = GrpcClient::h2c(server.addr).unary(req.clone()).await;
    assert_eq!(
        (out.code, out.message.as_str()),
        (Code::NotFound, "no such thing")
    );
    assert!(out.trailers_only && out.replies.is_empty());
    // The same on the wire: one HEADERS frame that ends the stream.
    let raw = raw_call(&H2Client::h2c(server.addr).await, UNARY, &req, &[]).await;
    assert!(raw.headers_only);
    assert_eq!(
        (raw.status, raw.header("grpc-status").as_deref()),
        (200, Some("5"))
    );
    assert_eq!(
        raw.header("grpc-message").as_deref(),
        Some("no%20such%20thing")
    );
}

#[tokio::test]
async fn an_error_status_after_replies_comes_in_the_trailers() {
    let server = GrpcServer::start().await;
    let req = EchoRequest {
        count: 2,
        status: Code::FailedPrecondition as i32,
        message: "stopped".into(),
        status_after_body: true,
        trailers: [("x-why".to_string(), "quota".to_string())].into(),
        ..EchoRequest::text("e")
    };
    let out = GrpcClient::h2c(server.addr)
        .server_stream(req.clone())
        .await;
    assert_eq!(out.texts(), ["e-0", "e-1"]);
    assert_eq!(
        (out.code, out.message.as_str()),
        (Code::FailedPrecondition, "stopped")
    );
    assert!(!out.trailers_only);
    assert_eq!(out.trailer("x-why").as_deref(), Some("quota"));
    let raw = raw_call(&H2Client::h2c(server.addr).await, SERVER_STREAM, &req, &[]).await;
    assert_eq!(raw.trailer("grpc-status").as_deref(), Some("9"));
    assert_eq!(replies(&raw.body).len(), 2);
}

#[tokio::test]
async fn custom_trailers_end_an_ok_call() {
    let server = GrpcServer::start().await;
    let req = EchoRequest {
        trailers: [("x-checksum".to_string(), "42".to_string())].into(),
        ..EchoRequest::text("t")
    };
    let out = GrpcClient::h2c(server.addr).unary(req.clone()).await;
    assert_eq!((out.code, out.texts()), (Code::Ok, vec!["t".to_string()]));
    assert_eq!(out.trailer("x-checksum").as_deref(), Some("42"));
    let raw = raw_call(&H2Client::h2c(server.addr).await, UNARY, &req, &[]).await;
    assert_eq!(raw.trailer("grpc-status").as_deref(), Some("0"));
    assert_eq!(raw.trailer("x-checksum").as_deref(), Some("42"));
}

#[tokio::test]
async fn the_server_answers_deadline_exceeded_when_grpc_timeout_runs_out() {
    let server = GrpcServer::start().await;
    let req = EchoRequest {
        sleep_ms: 60_000,
        ..EchoRequest::text("slow")
    };
    let client = H2Client::h2c(server.addr).await;
    let raw = raw_call(&client, UNARY, &req, &[("grpc-timeout", "100m")]).await;
    assert_eq!(raw.header("grpc-status").as_deref(), Some("4"));
    assert_eq!(
        server.last().header("grpc-timeout").as_deref(),
        Some("100m")
    );
    assert_eq!(server.cancelled(), 0);
}

#[tokio::test]
async fn a_client_that_gives_up_at_its_deadline_cancels_the_call() {
    let server = GrpcServer::start().await;
    let mut client = GrpcClient::h2c(server.addr).timeout(Duration::from_millis(100));
    let req = EchoRequest {
        sleep_ms: 60_000,
        ignore_deadline: true,
        ..EchoRequest::text("slow")
    };
    let out = client.unary(req).await;
    assert_eq!(out.code, Code::Cancelled, "{}", out.message);
    assert_eq!(
        server.last().header("grpc-timeout").as_deref(),
        Some("100000u")
    );
    ferry_tests::until("the server to see the call go", || server.cancelled() == 1).await;
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let server = GrpcServer::start().await;
    let client = H2Client::h2c(server.addr).await;
    let raw = raw_call(
        &client,
        "/ferry.test.Echo/Nope",
        &EchoRequest::text("?"),
        &[],
    )
    .await;
    assert_eq!(raw.header("grpc-status").as_deref(), Some("12"));
}

#[tokio::test]
async fn grpc_over_tls_with_alpn_h2() {
    let cert = SelfSigned::new(&fresh_dir(), &["localhost"]);
    let server = GrpcServer::start_tls(&cert).await;
    let mut client = GrpcClient::tls(server.addr, &cert);
    let out = client.unary(EchoRequest::text("secure")).await;
    assert_eq!(
        (out.code, out.texts()),
        (Code::Ok, vec!["secure".to_string()])
    );
    let out = client
        .bidi(["a", "b"].map(EchoRequest::text).to_vec())
        .await;
    assert_eq!(out.texts(), ["a", "b"]);
    assert_eq!((server.calls(), server.conns()), (2, 1));
}

#[tokio::test]
async fn a_grpc_call_to_a_down_address_is_unavailable() {
    let addr = down_addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let out = GrpcClient::h2c(addr).unary(EchoRequest::text("x")).await;
    assert_eq!(out.code, Code::Unavailable, "{}", out.message);
}

/// A gRPC call with the raw client ([`H2Client::grpc`]) that got a response.
async fn raw_call(
    client: &H2Client,
    path: &str,
    req: &EchoRequest,
    headers: &[(&str, &str)],
) -> ferry_tests::h2_client::H2Response {
    let response = client.grpc(path, req, headers).await;
    response.expect("a response")
}

fn replies(body: &[u8]) -> Vec<EchoReply> {
    grpc::unframe(body).expect("whole gRPC frames")
}

#[tokio::test]
async fn h2_answers_with_a_body_and_trailers_and_records_the_request() {
    let server = H2Server::start(Arc::new(|_, _| {
        let reply = H2Reply::ok("hello").header("x-a", "1");
        H2Act::Respond(reply.trailer("x-done", "yes"))
    }))
    .await;
    let client = H2Client::h2c(server.addr).await;
    let head = client.head("POST", "/up?q=1", &[("x-req", "r")]);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", "7".parse().expect("value"));
    let resp = client.send(head, Bytes::from("body"), Some(trailers)).await;
    let resp = resp.expect("a response");
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hello"[..]));
    assert_eq!(resp.header("x-a").as_deref(), Some("1"));
    assert_eq!(resp.trailer("x-done").as_deref(), Some("yes"));
    assert!(!resp.headers_only);
    let seen = server.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/up?q=1")
    );
    assert_eq!(
        (
            &seen.body[..],
            seen.headers.get("x-req").map(|v| v.as_bytes())
        ),
        (&b"body"[..], Some(&b"r"[..]))
    );
    assert_eq!(
        seen.trailers.and_then(|t| t.get("x-sum").cloned()),
        Some("7".parse().expect("value"))
    );
}

#[tokio::test]
async fn h2_streams_share_one_connection() {
    let server = H2Server::named("shared").await;
    let client = H2Client::h2c(server.addr).await;
    let (a, b, c) = tokio::join!(client.get("/a"), client.get("/b"), client.get("/c"));
    for r in [a, b, c] {
        assert_eq!(&r.expect("a response").body[..], b"shared");
    }
    assert_eq!((server.streams(), server.conns()), (3, 1));
    let mut ids: Vec<u32> = server.seen().iter().map(|s| s.stream_id).collect();
    ids.sort();
    assert_eq!(ids, [1, 3, 5]);
    assert!(server.seen().iter().all(|s| s.conn == 0));
}

#[tokio::test]
async fn h2_resets_a_stream_before_any_response_byte() {
    let server = H2Server::start(Arc::new(|_, head| match head.uri.path() {
        "/refuse" => H2Act::Reset(Reason::REFUSED_STREAM),
        "/fail" => H2Act::Reset(Reason::INTERNAL_ERROR),
        _ => H2Act::Respond(H2Reply::ok("fine")),
    }))
    .await;
    let client = H2Client::h2c(server.addr).await;
    let refused = client.get("/refuse").await.expect_err("a reset");
    assert_eq!(refused.reason(), Some(Reason::REFUSED_STREAM));
    assert!(refused.is_reset() && refused.is_remote());
    let failed = client.get("/fail").await.expect_err("a reset");
    assert_eq!(failed.reason(), Some(Reason::INTERNAL_ERROR));
    // A reset ends the stream, not the connection.
    let fine = client.get("/ok").await.expect("a response");
    assert_eq!(
        (&fine.body[..], server.conns(), server.streams()),
        (&b"fine"[..], 1, 3)
    );
}

#[tokio::test]
async fn h2_goaway_naming_the_stream_processed_then_closing() {
    let server = H2Server::start(Arc::new(|_, head| match head.uri.path() {
        "/next" => H2Act::Respond(H2Reply::ok("next")),
        _ => H2Act::GoAwayClose(Reason::NO_ERROR),
    }))
    .await;
    // GOAWAY last_stream_id 1, NO_ERROR: stream 1 was processed.
    assert_eq!(goaway_for_stream_1(server.addr).await, (1, 0));
    assert_eq!(server.last().stream_id, 1);
    // An h2 client sees its stream end with the connection, unanswered.
    let err = H2Client::h2c(server.addr).await.get("/x").await;
    assert!(err.expect_err("no answer").is_io());
    let next = H2Client::h2c(server.addr).await.get("/next").await;
    assert_eq!(&next.expect("a response").body[..], b"next");
    assert_eq!((server.conns(), server.streams()), (3, 3));
}

#[tokio::test]
async fn h2_graceful_goaway_still_answers_the_stream() {
    let server = H2Server::start(Arc::new(|_, _| H2Act::GoAwayRespond(H2Reply::ok("last")))).await;
    let client = H2Client::h2c(server.addr).await;
    let resp = client.get("/x").await.expect("a response");
    assert_eq!(&resp.body[..], b"last");
    let after = client
        .get("/y")
        .await
        .expect_err("the connection is going away");
    assert!(after.is_go_away() && after.is_remote(), "{after:?}");
    assert_eq!(after.reason(), Some(Reason::NO_ERROR));
    assert_eq!(server.streams(), 1);
}

#[tokio::test]
async fn h2_goaway_leaving_an_in_flight_stream_unprocessed() {
    let server = H2Server::goaway_after(1).await;
    let client = H2Client::h2c(server.addr).await;
    let first = client
        .get("/a")
        .await
        .expect("the first stream is answered");
    assert_eq!((first.status, first.headers_only), (200, true));
    let post = client.head("POST", "/b", &[]);
    let err = client
        .send(post, Bytes::from("once"), None)
        .await
        .expect_err("goaway");
    assert!(err.is_go_away() && err.is_remote(), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::NO_ERROR));
    assert_eq!((server.conns(), server.streams()), (1, 2));
    // With none answered, the GOAWAY names stream 0: nothing processed.
    let server = H2Server::goaway_after(0).await;
    assert_eq!(goaway_for_stream_1(server.addr).await, (0, 0));
}

/// The GOAWAY a server sends on a connection where the client opened
/// stream 1 with a GET written frame by frame: (last_stream_id, code).
async fn goaway_for_stream_1(addr: std::net::SocketAddr) -> (u32, u32) {
    // HEADERS, END_STREAM | END_HEADERS, stream 1: GET, http, /, authority "a".
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
    let mut hello = vec![0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1];
    hello.extend_from_slice(&block);
    let payload = first_frame_of(addr, &hello, 7).await;
    let word = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    (word(0) & 0x7fff_ffff, word(4))
}

/// Open an HTTP/2 connection by hand (preface, empty SETTINGS, then
/// `frames`) and return the payload of the first frame of type `kind` the
/// server sends.
async fn first_frame_of(addr: std::net::SocketAddr, frames: &[u8], kind: u8) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(frames);
    tcp.write_all(&out).await.expect("write");
    let read = async {
        loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.expect("a frame");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.expect("a payload");
            if head[3] == kind {
                return payload;
            }
        }
    };
    tokio::time::timeout(ferry_tests::WAIT, read)
        .await
        .expect("the frame in time")
}

#[tokio::test]
async fn h2_limited_server_announces_its_stream_limit_and_still_answers() {
    let server =
        H2Server::start_limited(1, Arc::new(|_, _| H2Act::Respond(H2Reply::ok("one")))).await;
    let settings = first_frame_of(server.addr, &[], 4).await;
    let pairs: Vec<(u16, u32)> = settings
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 1.
    assert!(pairs.contains(&(3, 1)), "{pairs:?}");
    // Once the client has the server's SETTINGS (a first answer came after
    // them), it queues its streams one at a time instead of being refused.
    let client = H2Client::h2c(server.addr).await;
    assert_eq!(client.get("/first").await.expect("first").status, 200);
    let (a, b) = tokio::join!(client.get("/a"), client.get("/b"));
    assert_eq!((a.expect("a").status, b.expect("b").status), (200, 200));
    assert_eq!(server.seen().iter().filter(|s| s.conn == 1).count(), 3);
}

#[tokio::test]
async fn h2_over_tls_with_alpn_h2() {
    let cert = SelfSigned::new(&fresh_dir(), &["localhost"]);
    let server = H2Server::start_tls(
        &cert,
        Arc::new(|_, _| H2Act::Respond(H2Reply::ok("sealed"))),
    )
    .await;
    let client = H2Client::tls(server.addr, &cert).await;
    let resp = client.get("/t").await.expect("a response");
    assert_eq!((resp.status, &resp.body[..]), (200, &b"sealed"[..]));
    assert_eq!(server.last().path, "/t");
    assert_eq!((server.conns(), server.streams()), (1, 1));
}
