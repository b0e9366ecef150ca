//! HTTP/2 requests as an HTTP/1.1 server must see them: the `cookie`
//! fields a client split joined into one (RFC 9113 8.2.3), and a stream
//! that declares `content-length: 0` yet sends DATA refused before
//! anything goes upstream, as nginx does. A raw `h2` client over TLS with
//! ALPN `h2`.

use bytes::Bytes;
use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::tls::SelfSigned;
use ferry_tests::yaml::single;
use ferry_tests::WAIT;
use std::sync::Arc;

/// Ferry on a TLS listener in front of `app`.
async fn tls_ferry(cert: &SelfSigned, app: &Backend) -> Ferry {
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    Ferry::start_listen(&listen, &single(&[app.addr], "")).await
}

/// An HTTP/2 connection to `ferry` (TLS, ALPN `h2`).
async fn h2_client(cert: &SelfSigned, ferry: &Ferry) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(ferry.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = ferry_tests::tls::connector(&[cert], b"h2")
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// The body of a `200` answer, read whole (bounded by [`WAIT`]).
async fn ok_body(resp: h2::client::ResponseFuture) -> Vec<u8> {
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(piece) = body.data().await {
        got.extend_from_slice(&piece.expect("body"));
    }
    got
}

fn request(headers: &[(&str, &str)]) -> http::Request<()> {
    let mut r = http::Request::builder()
        .method("POST")
        .uri("https://localhost/x");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(()).expect("request")
}

#[tokio::test]
async fn split_cookie_fields_reach_the_server_as_one() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let app = Backend::start(Arc::new(|_, r: &Seen| {
        let all: Vec<&str> = r
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Reply::ok(format!("{}:{}", all.len(), all.join("|")))
    }))
    .await;
    let ferry = tls_ferry(&cert, &app).await;
    let mut send = h2_client(&cert, &ferry).await;
    let req = request(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
    let (resp, _) = send.send_request(req, true).expect("send");
    let got = ok_body(resp).await;
    assert_eq!(String::from_utf8_lossy(&got), "1:a=1; b=2; c=3");
}

#[tokio::test]
async fn data_on_a_stream_declaring_no_body_never_goes_upstream() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let app = Backend::start(Arc::new(|_, _: &Seen| Reply::ok("reached"))).await;
    let ferry = tls_ferry(&cert, &app).await;
    let mut send = h2_client(&cert, &ferry).await;
    let req = request(&[("content-length", "0")]);
    let (resp, mut stream) = send.send_request(req, false).expect("send");
    stream
        .send_data(Bytes::from_static(b"smuggled"), true)
        .expect("data");
    let answer = tokio::time::timeout(WAIT, resp).await.expect("in time");
    match answer {
        Ok(r) => assert_eq!(r.status(), 400),
        Err(e) => assert!(e.is_reset(), "a 400 or the stream reset: {e}"),
    }
    assert_eq!(app.hits(), 0, "nothing went upstream");
}

#[tokio::test]
async fn an_http1_server_sees_an_http2_request_as_nginx_sends_it() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let app = Backend::start(Arc::new(|_, r: &Seen| {
        let h = |n: &str| {
            let all: Vec<&str> = r
                .headers
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            all.join(",")
        };
        Reply::ok(format!(
            "{} {} host={} xff={} proto={} custom={} type={} length={} te={} body={}",
            r.method,
            r.uri,
            h("host"),
            h("x-forwarded-for"),
            h("x-forwarded-proto"),
            h("x-custom"),
            h("content-type"),
            h("content-length"),
            h("te"),
            String::from_utf8_lossy(&r.body)
        ))
    }))
    .await;
    let ferry = tls_ferry(&cert, &app).await;
    let mut send = h2_client(&cert, &ferry).await;
    let mut req = request(&[
        ("x-custom", "a"),
        ("content-type", "text/plain"),
        ("x-custom", "b"),
        ("te", "trailers"),
        ("content-length", "5"),
    ]);
    *req.uri_mut() = "https://localhost/x?q=1".parse().expect("uri");
    let (resp, mut stream) = send.send_request(req, false).expect("send");
    stream
        .send_data(Bytes::from_static(b"hello"), true)
        .expect("data");
    let got = ok_body(resp).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "POST /x?q=1 host=app xff=127.0.0.1 proto=https custom=a,b type=text/plain \
         length=5 te= body=hello"
    );
}
