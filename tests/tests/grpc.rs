//! gRPC through Ferry: clients on an `h2c: true` listener, servers spoken to
//! with `http_version: "2"`. Each kind of call (unary, server-, client- and
//! bidirectional streaming, full duplex), statuses and trailers passed on,
//! `TE: trailers` forwarded, and Ferry's own failures answered as gRPC
//! (no server: UNAVAILABLE; the call's deadline: DEADLINE_EXCEEDED; a
//! limit: RESOURCE_EXHAUSTED).

use ferry_tests::ferry::Ferry;
use ferry_tests::grpc::{EchoRequest, BIDI, UNARY};
use ferry_tests::grpc_client::GrpcClient;
use ferry_tests::grpc_server::GrpcServer;
use ferry_tests::h2_client::H2Client;
use ferry_tests::h2_server::down_addr;
use ferry_tests::yaml::single;
use std::collections::HashMap;
use tonic::Code;

/// The proxy settings of a route to gRPC servers, streaming kinds included.
const GRPC: &str = "http_version: \"2\", request_buffering: false, buffering: false";

async fn ferry_to(server: std::net::SocketAddr, extra: &str) -> Ferry {
    Ferry::start_listen("h2c: true", &format!("{}{extra}", single(&[server], GRPC))).await
}

#[tokio::test]
async fn each_kind_of_call_passes_through() {
    let server = GrpcServer::start().await;
    let ferry = ferry_to(server.addr, "").await;
    let mut client = GrpcClient::h2c(ferry.addr);

    let out = client.unary(EchoRequest::text("one")).await;
    assert_eq!((out.code, out.texts()), (Code::Ok, vec!["one".to_string()]));
    let seen = server.last();
    assert_eq!(seen.path, UNARY);
    assert_eq!(seen.header("te").as_deref(), Some("trailers"));
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/grpc")
    );

    let req = EchoRequest {
        count: 3,
        interval_ms: 5,
        ..EchoRequest::text("s")
    };
    let out = client.server_stream(req).await;
    assert_eq!(
        (out.code, out.texts()),
        (Code::Ok, vec!["s-0".into(), "s-1".into(), "s-2".into()])
    );

    let reqs = ["a", "b", "c"].map(EchoRequest::text).to_vec();
    let out = client.client_stream(reqs).await;
    assert_eq!(out.code, Code::Ok, "{}", out.message);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(
        (out.replies[0].text.as_str(), out.replies[0].index),
        ("abc", 3)
    );

    // Lock step: each message waits for the echo of the one before, so
    // this passes only when both directions flow at once.
    let reqs = ["x", "y", "z"].map(EchoRequest::text).to_vec();
    let out = client.bidi(reqs).await;
    assert_eq!(
        (out.code, out.texts()),
        (Code::Ok, vec!["x".into(), "y".into(), "z".into()])
    );
    assert_eq!(server.calls(), 4);
}

#[tokio::test]
async fn statuses_and_trailers_pass_as_the_server_sent_them() {
    let server = GrpcServer::start().await;
    let ferry = ferry_to(server.addr, "").await;
    let mut client = GrpcClient::h2c(ferry.addr);

    let trailers = HashMap::from([("x-checksum".to_string(), "42".to_string())]);
    let out = client
        .unary(EchoRequest {
            trailers,
            ..EchoRequest::text("t")
        })
        .await;
    assert_eq!(out.code, Code::Ok);
    assert_eq!(out.trailer("x-checksum").as_deref(), Some("42"));

    let denied = EchoRequest {
        status: Code::PermissionDenied as i32,
        message: "not you".into(),
        ..EchoRequest::text("e")
    };
    let out = client.unary(denied.clone()).await;
    assert_eq!(
        (out.code, out.message.as_str()),
        (Code::PermissionDenied, "not you")
    );
    assert!(
        out.trailers_only,
        "a trailers-only answer stays trailers-only"
    );

    // On the wire too: one HEADERS frame that ends the stream.
    let raw = H2Client::h2c(ferry.addr).await;
    let r = raw.grpc(UNARY, &denied, &[]).await.expect("an answer");
    assert!(r.headers_only, "{:?}", r.headers);
    assert_eq!(r.header("grpc-status").as_deref(), Some("7"));

    let req = EchoRequest {
        count: 2,
        status_after_body: true,
        ..denied
    };
    let out = client.server_stream(req).await;
    assert_eq!(out.code, Code::PermissionDenied);
    assert_eq!(out.texts(), ["e-0", "e-1"]);
    assert!(!out.trailers_only);
}

#[tokio::test]
async fn a_call_ferry_cannot_place_is_unavailable() {
    let ferry = ferry_to(down_addr(), "").await;
    let out = GrpcClient::h2c(ferry.addr)
        .unary(EchoRequest::text("x"))
        .await;
    assert_eq!(out.code, Code::Unavailable, "{}", out.message);
    assert!(out.message.contains("ferry"), "{}", out.message);
    assert!(out.trailers_only);
}

/// Ferry stops waiting at the call's deadline (a server that ignores it),
/// and says so as gRPC does: DEADLINE_EXCEEDED.
#[tokio::test]
async fn the_deadline_bounds_the_wait_for_the_server() {
    let server = GrpcServer::start().await;
    let ferry = ferry_to(server.addr, "").await;
    let client = H2Client::h2c(ferry.addr).await;
    let slow = EchoRequest {
        sleep_ms: 5_000,
        ignore_deadline: true,
        ..EchoRequest::text("slow")
    };
    let started = std::time::Instant::now();
    let r = client
        .grpc(UNARY, &slow, &[("grpc-timeout", "300m")])
        .await
        .expect("an answer");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!(r.status, 200);
    assert!(r.headers_only, "trailers-only");
    assert_eq!(r.header("grpc-status").as_deref(), Some("4"));
    let line = ferry.log();
    assert!(line.contains("deadline"), "{line}");
}

#[tokio::test]
async fn a_limit_refusal_is_resource_exhausted() {
    let server = GrpcServer::start().await;
    let limits = "limit_req_zones:\n  one: { key: \"$binary_remote_addr\", rate: 1r/m }\n";
    let yaml = format!(
        "{limits}{}    limit_req: {{ zone: one }}\n",
        single(&[server.addr], GRPC)
    );
    let ferry = Ferry::start_listen("h2c: true", &yaml).await;
    let mut client = GrpcClient::h2c(ferry.addr);
    assert_eq!(client.unary(EchoRequest::text("1")).await.code, Code::Ok);
    let out = client.unary(EchoRequest::text("2")).await;
    assert_eq!(out.code, Code::ResourceExhausted, "{}", out.message);
    assert_eq!(server.calls(), 1);
}

/// A gRPC stream passes through every hook a program defines, the trailer
/// hooks included, as any request does.
#[tokio::test]
async fn a_grpc_stream_passes_through_every_hook() {
    let server = GrpcServer::start().await;
    let ferry = Ferry::start_hooked_listen("h2c: true", &single(&[server.addr], GRPC)).await;
    let mut client = GrpcClient::h2c(ferry.addr);
    let trailers = HashMap::from([("x-secret-trailer".to_string(), "s".to_string())]);
    let first = EchoRequest {
        trailers,
        ..EchoRequest::text("a")
    };
    let out = client.bidi(vec![first, EchoRequest::text("b")]).await;
    assert_eq!(
        (out.code, out.texts()),
        (Code::Ok, vec!["a".into(), "b".into()])
    );
    assert_eq!(out.trailer("x-hooked-trailer").as_deref(), Some("upstream"));
    assert_eq!(out.trailer("x-secret-trailer"), None);
    let line = ferry.logged(BIDI).await;
    for hook in [
        "request_filter",
        "upstream_peer",
        "upstream_request_filter",
        "request_body_filter",
        "request_body_filter(end)",
        "upstream_response_filter",
        "response_filter",
        "upstream_response_trailer_filter",
        "response_trailer_filter",
    ] {
        assert!(
            line.contains(&format!("{hook},")) || line.contains(&format!("{hook} ")),
            "{hook}: {line}"
        );
    }
    assert!(line.contains("response_end=true"), "{line}");
    assert!(
        server.last().header("x-hooks").is_some(),
        "upstream_request_filter's header went upstream"
    );
}
