//! The request's way as nginx does it: routing, return routes, the
//! upstream request and response headers, balancing order, keepalive, and
//! the outcomes of misbehaving upstreams.

use ferry_tests::backend::{Backend, Reply};
use ferry_tests::client::text;
use ferry_tests::client::{exchange, get, split, status_of};
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use std::sync::Arc;

use ferry_tests::client::http as client;

fn group(name: &str, servers: &[(std::net::SocketAddr, u32)]) -> String {
    let mut s = format!("  {name}:\n    servers:\n");
    for (a, w) in servers {
        s.push_str(&format!("      - {{ addr: \"{a}\", weight: {w} }}\n"));
    }
    s
}

#[tokio::test]
async fn smooth_weighted_round_robin_is_nginx_order() {
    let (a, b, c) = (
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    );
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(a.addr, 5), (b.addr, 1), (c.addr, 1)])
    ))
    .await;
    let http = client();
    let mut order = String::new();
    for _ in 0..14 {
        order.push_str(&text(&http, ferry.url("/")).await);
    }
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test]
async fn routes_by_host_then_longest_prefix_and_return() {
    let (api, web, other) = (
        Backend::named("api").await,
        Backend::named("web").await,
        Backend::named("other").await,
    );
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}{}routes:\n  - upstream: web\n  - match: {{ path_prefix: /api }}\n    upstream: api\n  - match: {{ host: example.com }}\n    upstream: other\n  - match: {{ path_prefix: /hello }}\n    return: {{ status: 201, body: \"hi\", headers: {{ X-Ret: yes }} }}\n  - match: {{ path_prefix: /moved }}\n    return: {{ status: 301, location: \"http://elsewhere/\" }}\n",
        group("api", &[(api.addr, 1)]),
        group("web", &[(web.addr, 1)]),
        group("other", &[(other.addr, 1)])
    ))
    .await;
    let http = client();
    let text = |path: &'static str, host: Option<&'static str>| {
        let mut r = http.get(ferry.url(path));
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        async move { r.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(
        text("/apix/1", None).await,
        "api",
        "prefix match as nginx: /api matches /apix"
    );
    assert_eq!(
        text("/x/../api/2", None).await,
        "api",
        "matched on the normalised path"
    );
    assert_eq!(text("/web", None).await, "web");
    assert_eq!(
        text("/api", Some("EXAMPLE.com:8080")).await,
        "other",
        "host routes win, port ignored"
    );
    let r = http.get(ferry.url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-ret"], "yes");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "hi");
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(ferry.url("/moved"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "http://elsewhere/");
}

#[tokio::test]
async fn no_route_is_404() {
    let a = Backend::named("a").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - match: {{ path_prefix: /only/ }}\n    upstream: app\n",
        group("app", &[(a.addr, 1)])
    ))
    .await;
    let r = client().get(ferry.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn upstream_request_headers_are_nginx() {
    let a = Backend::start(Arc::new(|_, _| Reply::ok("ok"))).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy:\n      set_headers: {{ X-Real-IP: \"$remote_addr\", X-Via: \"ferry $request_method $uri\", X-Drop: \"\" }}\n",
        group("app", &[(a.addr, 1)])
    ))
    .await;
    let r = client()
        .post(ferry.url("/p/a?x=1"))
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "1")
        .header("Keep-Alive", "timeout=5")
        .header("TE", "trailers")
        .header("Upgrade", "h2c")
        .header("Proxy-Connection", "keep-alive")
        .header("X-Forwarded-For", "10.9.9.9")
        .header("X-Drop", "gone")
        .header("X-Keep", "kept")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = a.last();
    let h = &seen.headers;
    assert_eq!(seen.uri, "/p/a?x=1", "the URI goes as received");
    assert_eq!(h["host"], "app", "Host: $proxy_host");
    assert!(h.contains_key("x-real-ip"), "{h:?}");
    assert_eq!(h["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h:?}");
    assert_eq!(h["x-via"], "ferry POST /p/a");
    assert_eq!(h["x-keep"], "kept");
    assert_eq!(h["content-length"], "10");
    assert_eq!(&seen.body[..], b"hello body");
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "x-drop",
    ] {
        assert!(!h.contains_key(gone), "{gone} was sent upstream");
    }
}

#[tokio::test]
async fn response_headers_hide_nginx_defaults() {
    let a = Backend::start(Arc::new(|_, _| {
        Reply::ok("ok")
            .header("Server", "backend/1.0")
            .header("X-Pad", "pad")
            .header("X-Accel-Charset", "utf-8")
            .header("X-Secret", "s")
            .header("X-Shown", "yes")
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ hide_headers: [X-Secret], pass_headers: [X-Pad] }}\n",
        group("app", &[(a.addr, 1)])
    ))
    .await;
    let r = client().get(ferry.url("/")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(h["server"], "ferry");
    assert!(h.contains_key("date"));
    assert_eq!(h["x-pad"], "pad");
    assert_eq!(h["x-shown"], "yes");
    assert!(!h.contains_key("x-accel-charset"));
    assert!(!h.contains_key("x-secret"));
}

#[tokio::test]
async fn add_headers_render_the_client_and_every_try() {
    let bad = Backend::start(Arc::new(|_, _| Reply::status(502, "bad"))).await;
    let good = Backend::start(Arc::new(|_, _| Reply::ok("ok"))).await;
    let adds = "{ X-Lit: lit, X-Client: \"$remote_addr\", X-Fwd: \"$proxy_add_x_forwarded_for\", \
                X-Addr: \"$upstream_addr\", X-Status: \"$upstream_status\" }";
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ next_upstream: [error, http_502], add_headers: {adds} }}\n\
         \x20 - match: {{ path_prefix: /lit }}\n    upstream: app\n    proxy: {{ next_upstream: [error, http_502], add_headers: {{ X-Lit: lit }} }}\n",
        group("app", &[(bad.addr, 1), (good.addr, 1)])
    ))
    .await;
    let r = client().get(ferry.url("/")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(r.status(), 200);
    assert_eq!(h["x-lit"], "lit");
    assert_eq!(h["x-client"], "127.0.0.1");
    assert_eq!(h["x-fwd"], "127.0.0.1");
    assert_eq!(h["x-addr"], format!("{}, {}", bad.addr, good.addr));
    assert_eq!(h["x-status"], "502, 200");
    let r = client().get(ferry.url("/lit")).send().await.unwrap();
    assert_eq!(r.headers()["x-lit"], "lit");
    assert!(!r.headers().contains_key("x-client"));
}

#[tokio::test]
async fn redirect_default_rewrites_location() {
    let a = Backend::start(Arc::new(|_, _| {
        Reply::status(302, "").header("Location", "http://app/login?next=1")
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(a.addr, 1)])
    ))
    .await;
    let (bytes, _) = exchange(ferry.addr, &get("/x")).await;
    let (head, _) = split(&bytes);
    assert_eq!(status_of(&bytes), 302);
    assert!(
        head.contains("location: http://test/login?next=1"),
        "{head}"
    );
}

#[tokio::test]
async fn keepalive_reuses_one_upstream_connection() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}    keepalive: 0\n{}    keepalive_requests: 3\n{}routes:\n  - upstream: pooled\n  - match: {{ path_prefix: /none }}\n    upstream: nopool\n  - match: {{ path_prefix: /three }}\n    upstream: three\n",
        group("nopool", &[(b.addr, 1)]),
        group("three", &[(c.addr, 1)]),
        group("pooled", &[(a.addr, 1)]),
    ))
    .await;
    let http = client();
    for path in ["/", "/none", "/three"] {
        for _ in 0..10 {
            assert!(http
                .get(ferry.url(path))
                .send()
                .await
                .unwrap()
                .status()
                .is_success());
        }
    }
    assert_eq!(
        a.conns(),
        1,
        "ten sequential requests, one upstream connection"
    );
    assert_eq!(b.conns(), 10, "keepalive: 0 keeps nothing");
    assert_eq!(c.conns(), 4, "keepalive_requests: 3 -> 3+3+3+1");
}

#[tokio::test]
async fn refused_upstream_is_502_and_header_timeout_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stall = Raw::always(vec![Step::Stall]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}routes:\n  - upstream: dead\n  - match: {{ path_prefix: /slow }}\n    upstream: slow\n    proxy: {{ read_timeout: 300ms }}\n",
        group("dead", &[(dead, 1)]),
        group("slow", &[(stall.addr, 1)])
    ))
    .await;
    let http = client();
    let r = http.get(ferry.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("502 Bad Gateway"));
    assert_eq!(
        http.get(ferry.url("/slow")).send().await.unwrap().status(),
        504
    );
}

#[tokio::test]
async fn closed_before_header_is_502() {
    let closes = Raw::always(vec![Step::text("HTTP/1.1 200 OK\r\nContent-"), Step::Close]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(closes.addr, 1)])
    ))
    .await;
    let (bytes, _) = exchange(ferry.addr, &get("/")).await;
    assert_eq!(status_of(&bytes), 502);
}

async fn status_for(upstream_bytes: &str) -> u16 {
    let bad = Raw::always(vec![Step::text(upstream_bytes), Step::Close]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(bad.addr, 1)])
    ))
    .await;
    let (bytes, _) = exchange(ferry.addr, &get("/")).await;
    status_of(&bytes)
}

#[tokio::test]
async fn bad_framing_from_upstream_is_502() {
    let cases = [
        "HTTP/1.1 200 OK\r\nContent-Length: foo\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: foo\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for c in cases {
        assert_eq!(status_for(c).await, 502, "upstream sent: {c:?}");
    }
}

#[tokio::test]
async fn header_larger_than_buffer_size_is_502() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "x".repeat(5000)
    );
    assert_eq!(status_for(&big).await, 502);
}

#[tokio::test]
async fn bytes_past_content_length_never_reach_the_client() {
    let extra = Raw::always(vec![
        Step::text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA-BYTES"),
        Step::Close,
    ])
    .await;
    let chunked = Raw::always(vec![
        Step::text(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGARBAGE",
        ),
        Step::Close,
    ])
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}routes:\n  - upstream: extra\n  - match: {{ path_prefix: /chunked }}\n    upstream: chunked\n",
        group("extra", &[(extra.addr, 1)]),
        group("chunked", &[(chunked.addr, 1)])
    ))
    .await;
    let http = client();
    assert_eq!(text(&http, ferry.url("/")).await, "hello");
    let (bytes, _) = exchange(ferry.addr, &get("/chunked")).await;
    let (_, body) = split(&bytes);
    assert_eq!(
        body, b"5\r\nhello\r\n0\r\n\r\n",
        "nothing after the last chunk"
    );
}

#[tokio::test]
async fn upstream_stopping_mid_body_truncates_visibly() {
    let short = Raw::always(vec![
        Step::text("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n1234567"),
        Step::Close,
    ])
    .await;
    let chunked = Raw::always(vec![
        Step::text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n1234567\r\n"),
        Step::Close,
    ])
    .await;
    let stalls = Raw::always(vec![
        Step::text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n1234567\r\n"),
        Step::Stall,
    ])
    .await;
    for buffering in [true, false] {
        let ferry = Ferry::start(&format!(
            "upstreams:\n{}{}{}routes:\n  - upstream: short\n    proxy: {{ buffering: {buffering} }}\n  - match: {{ path_prefix: /chunked }}\n    upstream: chunked\n    proxy: {{ buffering: {buffering} }}\n  - match: {{ path_prefix: /stall }}\n    upstream: stalls\n    proxy: {{ buffering: {buffering}, read_timeout: 300ms }}\n",
            group("short", &[(short.addr, 1)]),
            group("chunked", &[(chunked.addr, 1)]),
            group("stalls", &[(stalls.addr, 1)]),
        ))
        .await;
        let (bytes, closed) = exchange(ferry.addr, &get("/")).await;
        let (head, body) = split(&bytes);
        assert!(closed);
        assert!(head.contains("content-length: 100"), "{head}");
        assert_eq!(body, b"1234567", "buffering {buffering}");
        for path in ["/chunked", "/stall"] {
            let (bytes, closed) = exchange(ferry.addr, &get(path)).await;
            let (head, body) = split(&bytes);
            assert!(closed, "{path}: connection closed");
            assert!(
                head.contains("transfer-encoding: chunked"),
                "{path}: {head}"
            );
            assert_eq!(
                body, b"7\r\n1234567\r\n",
                "{path}: no final chunk (buffering {buffering})"
            );
        }
    }
}

#[tokio::test]
async fn http10_client_gets_close_delimited_body() {
    let chunked = Raw::always(vec![Step::text(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )])
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(chunked.addr, 1)])
    ))
    .await;
    let (bytes, closed) = exchange(ferry.addr, "GET / HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let (head, body) = split(&bytes);
    assert!(closed);
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let ws = Raw::always(vec![
        Step::text(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        Step::Echo,
    ])
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(ws.addr, 1)])
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(ferry_tests::WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echo = vec![0u8; 23];
    tokio::time::timeout(ferry_tests::WAIT, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping through the tunnel");
    let seen = &ws.requests()[0].head.to_ascii_lowercase();
    assert!(
        seen.contains("upgrade: websocket") && seen.contains("host: app"),
        "{seen}"
    );
}
