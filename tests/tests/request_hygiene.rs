//! Request hygiene: nothing a client sends can desync a backend. Each test
//! talks raw bytes to Ferry and checks what a real backend (hyper, which
//! counts requests and keeps each body) received.

use ferry_tests::backend::{Backend, Reply};
use ferry_tests::client::status_of;
use ferry_tests::ferry::Ferry;
use ferry_tests::yaml::{group, single};
use ferry_tests::{until, WAIT};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A streamed (`request_buffering: false`) chunked upload whose TCP
/// segments end at every byte of its body in turn: Ferry must never turn
/// a read that ends inside a size line, an extension or a CRLF into the
/// chunked terminator. The backend sees one request per upload, its body
/// whole; nothing else.
#[tokio::test]
async fn a_streamed_chunked_body_split_anywhere_reaches_the_backend_whole() {
    let backend = Backend::start(Arc::new(|_, seen: &ferry_tests::backend::Seen| {
        Reply::ok(seen.body.clone())
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}    keepalive: 0\nroutes:\n  - upstream: app\n    proxy: {{ request_buffering: false }}\n",
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let head =
        "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    for split in 0..body.len() {
        let mut s = TcpStream::connect(ferry.addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(format!("{head}{}", &body[..split]).as_bytes())
            .await
            .unwrap();
        // Ferry connects upstream once it has the header: the first part
        // has been read by then, so the body's first read ends at `split`.
        until("Ferry to connect upstream", || backend.conns() > split).await;
        s.write_all(body[split..].as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(status_of(&answer), 200, "split at {split}");
        assert!(
            answer.ends_with(b"hello world"),
            "split at {split}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            backend.hits(),
            split + 1,
            "split at {split}: a second request"
        );
        assert_eq!(&backend.last().body[..], b"hello world", "split at {split}");
    }
}

/// `GET http://x/admin` is routed by its path, as nginx routes it: a
/// `/admin` route that answers 403 is not walked around, and what goes
/// upstream is the origin form with the target's host.
#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_path() {
    let backend = Backend::start(Arc::new(|_, seen: &ferry_tests::backend::Seen| {
        let host = seen
            .headers
            .get("x-host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        Reply::ok(format!("{} {}", seen.uri, host))
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - match: {{ path_prefix: /admin }}\n    return: {{ status: 403, body: \"no\" }}\n  - upstream: app\n    proxy: {{ set_headers: {{ X-Host: \"$host\" }} }}\n",
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let ask = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let exchange =
        |req: String| async move { ferry_tests::client::exchange(ferry.addr, &req).await };
    let (bytes, _) = exchange(ask("http://x/admin", "x")).await;
    assert_eq!(
        status_of(&bytes),
        403,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // A Host that names another authority is ambiguous: refused.
    let (bytes, _) = exchange(ask("http://x/admin", "other")).await;
    assert_eq!(status_of(&bytes), 400);
    assert_eq!(backend.hits(), 0);
    let (bytes, _) = exchange(ask("http://x.example/a?b=1", "x.example")).await;
    assert_eq!(status_of(&bytes), 200);
    let (_, body) = ferry_tests::client::split(&bytes);
    assert_eq!(String::from_utf8_lossy(&body), "/a?b=1 x.example");
}

/// A fragment is not part of the target (RFC 9112 3.2): it never goes
/// upstream, whichever session read the request (Ferry's for a GET,
/// Pingora's for one with a body).
#[tokio::test]
async fn a_fragment_never_goes_upstream() {
    use ferry_tests::raw::{Raw, Step};
    let backend = Raw::always(vec![Step::response(200, "ok")]).await;
    let ferry = Ferry::start(&single(&[backend.addr], "")).await;
    for req in [
        "GET /a?b=1#top HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "POST /a?b=1#top HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    ] {
        let (bytes, _) = ferry_tests::client::exchange(ferry.addr, req).await;
        assert_eq!(status_of(&bytes), 200, "{req:?}");
    }
    let lines: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.head.lines().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(lines, ["GET /a?b=1 HTTP/1.1", "POST /a?b=1 HTTP/1.1"]);
}

/// Three GETs sent at once on one connection get three answers, in order
/// (RFC 9112 9.3.2; nginx serves them the same way).
#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let backend = Backend::start(Arc::new(|_, seen: &ferry_tests::backend::Seen| {
        Reply::ok(seen.uri.clone())
    }))
    .await;
    let ferry = Ferry::start(&single(&[backend.addr], "")).await;
    let three = "GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\nGET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (bytes, closed) = ferry_tests::client::exchange(ferry.addr, three).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let (one, two, three) = (
        text.find("/one").unwrap_or(usize::MAX),
        text.find("/two").unwrap_or(usize::MAX),
        text.find("/three").unwrap_or(usize::MAX),
    );
    assert!(one < two && two < three && three < usize::MAX, "{text}");
}

/// With `request_buffering: false`, a client's broken chunked body gets
/// 400 and a client that leaves mid-upload gets nothing; neither counts
/// against the server (nginx blames the client, not the upstream), so the
/// group stays up for the next requests.
#[tokio::test]
async fn client_mistakes_on_a_streamed_body_are_not_blamed_on_servers() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let ferry = Ferry::start_hooked(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ request_buffering: false }}\n",
        group(
            "app",
            &[
                (a.addr, "max_fails: 1, fail_timeout: 60s"),
                (b.addr, "max_fails: 1, fail_timeout: 60s")
            ]
        )
    ))
    .await;
    for i in 0..2 {
        let broken = format!(
            "POST /broken{i} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
        );
        let (bytes, _) = ferry_tests::client::exchange(ferry.addr, &broken).await;
        assert_eq!(
            status_of(&bytes),
            400,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for i in 0..2 {
        let mut s = TcpStream::connect(ferry.addr).await.unwrap();
        let head = format!("POST /gone{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b'x'; 1000]).await.unwrap();
        drop(s);
        let uri = format!("/gone{i}");
        until("the aborted upload's log line", || {
            ferry.log().contains(&format!("logging: uri={uri} "))
        })
        .await;
    }
    let http = ferry_tests::client::http();
    for _ in 0..4 {
        let r = http.get(ferry.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a client's mistake took a server out");
    }
    let log = ferry.log();
    assert!(!log.contains("temporarily disabled"), "{log}");
}

/// A malformed chunked body in buffered mode (the default) is answered
/// 400, as nginx answers it, and nothing reaches the backend.
#[tokio::test]
async fn a_malformed_chunked_body_gets_400() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&single(&[backend.addr], "")).await;
    let broken =
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    let (bytes, closed) = ferry_tests::client::exchange(ferry.addr, broken).await;
    assert_eq!(
        status_of(&bytes),
        400,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed);
    assert_eq!(backend.hits(), 0);
}

/// Request lines and headers nginx refuses are refused before any phase,
/// with nginx's status, and nothing reaches the backend; a trailing dot on
/// the host still finds its host route.
#[tokio::test]
async fn lenient_request_lines_and_framing_are_refused_as_nginx_refuses_them() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - match: {{ host: admin.local }}\n    return: {{ status: 200, body: \"admin\" }}\n  - upstream: app\n",
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let cases: [(&str, u16); 11] = [
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400),
        ("get / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("GET /ok HTTP/1.0\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let (bytes, _) = ferry_tests::client::exchange(ferry.addr, request).await;
        assert_eq!(
            status_of(&bytes),
            status,
            "{request:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(
        backend.hits(),
        1,
        "only the HTTP/1.0 request without Host went upstream"
    );
    let (bytes, _) = ferry_tests::client::exchange(
        ferry.addr,
        "GET / HTTP/1.1\r\nHost: admin.local.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        bytes.ends_with(b"admin"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// The answers to what Pingora cannot read (a malformed header) and to
/// `CONNECT` are Ferry's, like every other answer: `Server: ferry`, an
/// nginx-style page, the connection closed.
#[tokio::test]
async fn refusals_before_any_phase_are_ferrys_own() {
    let ferry = Ferry::start("routes:\n  - return: { status: 200 }\n").await;
    for (request, status) in [
        ("GET / HTTP/1.1\r\nHost t\r\n\r\n", 400),
        ("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
    ] {
        let (bytes, closed) = ferry_tests::client::exchange(ferry.addr, request).await;
        let (head, body) = ferry_tests::client::split(&bytes);
        assert_eq!(status_of(&bytes), status, "{head}");
        assert!(head.contains("server: ferry"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("pingora"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains(&status.to_string()));
        assert!(closed);
    }
}

/// A client that leaves while Ferry waits for the upstream's header gives
/// the upstream connection up at once (nginx's broken-connection check),
/// not after `read_timeout`.
#[tokio::test]
async fn a_client_that_leaves_before_the_header_frees_the_upstream() {
    use ferry_tests::raw::{Raw, Step};
    let backend = Raw::always(vec![Step::AwaitClose]).await;
    let ferry = Ferry::start(&single(&[backend.addr], "read_timeout: 300s")).await;
    let mut s = TcpStream::connect(ferry.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    until("the request to reach the backend", || backend.hits() == 1).await;
    drop(s);
    until("Ferry to close the upstream connection", || {
        backend.closed.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
}

/// Request headers are bounded as nginx bounds them with
/// `large_client_header_buffers` (4 x 8k): a longer request line gets 414,
/// a longer header line or a larger header (one that never ends, say) 431,
/// before the rest is read; nothing reaches the backend.
#[tokio::test]
async fn request_headers_are_bounded_by_large_client_header_buffers() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&single(&[backend.addr], "")).await;
    let uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(70_000));
    let line = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        format!("X-Some: {}\r\n", "c".repeat(2_000)).repeat(20)
    );
    let endless = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}",
        format!("X-More: {}\r\n", "d".repeat(1_000)).repeat(40)
    );
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Fits: {}\r\nConnection: close\r\n\r\n",
        "e".repeat(8_000)
    );
    for (request, status) in [
        (&uri, 414),
        (&line, 431),
        (&many, 431),
        (&endless, 431),
        (&fits, 200),
    ] {
        let (bytes, _) = ferry_tests::client::exchange(ferry.addr, request).await;
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        assert_eq!(status_of(&bytes), status, "{}: {head}", &request[..40]);
    }
    assert_eq!(backend.hits(), 1, "only the header that fits went upstream");
}

/// A client that stalls mid-body gets 408 after `client_body_timeout`, as
/// nginx answers it, buffered or streamed; a streamed one does not count
/// against the server.
#[tokio::test]
async fn a_client_stalling_mid_body_gets_408() {
    let backend = Backend::named("app").await;
    for buffering in [true, false] {
        let proxy = format!("request_buffering: {buffering}, client_body_timeout: 500ms");
        let ferry = Ferry::start(&single(&[backend.addr], &proxy)).await;
        let mut s = TcpStream::connect(ferry.addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            status_of(&answer),
            408,
            "buffering {buffering}: {}",
            String::from_utf8_lossy(&answer)
        );
        let http = ferry_tests::client::http();
        let r = http.get(ferry.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
