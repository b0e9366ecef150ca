//! Upgrades (WebSocket) are requests like any other up to their `101`:
//! every hook runs, the balancer's key and the route's header rules apply,
//! a failed connect goes to the next server and counts against
//! `max_fails`; the tunnel after the `101` stays counted on its server
//! (`least_conn`, `max_conns`). And subrequests follow the same
//! `next_upstream` rules as requests: one table, run through both.

use ferry_tests::client::{exchange, split, status_of};
use ferry_tests::ferry::{free_port, Ferry};
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::group;
use ferry_tests::WAIT;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SWITCH: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// A backend whose every request is an upgrade it accepts, then echoes.
async fn ws_backend() -> Raw {
    Raw::always(vec![Step::text(SWITCH), Step::Echo]).await
}

/// A backend whose first request is an upgrade it accepts (then echoes),
/// and whose later requests get 200 `name`.
async fn ws_then_plain(name: &'static str) -> Raw {
    Raw::start(Arc::new(move |i| {
        if i == 0 {
            vec![Step::text(SWITCH), Step::Echo]
        } else {
            vec![Step::response(200, name)]
        }
    }))
    .await
}

/// Send an upgrade request with `extra` header lines; the response head,
/// and the open connection when it switched.
async fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).to_ascii_lowercase(), s)
}

/// Bytes sent through the tunnel come back from the echoing backend.
async fn echoes(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).await.unwrap();
    let mut back = vec![0u8; what.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(back, what);
}

async fn get_body(addr: SocketAddr, path: &str) -> (u16, String) {
    let (bytes, _) = exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (_, body) = split(&bytes);
    (
        status_of(&bytes),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn an_upgrade_runs_every_hook_and_cannot_skip_request_filter() {
    let ws = ws_backend().await;
    let ferry = Ferry::start_hooked(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(ws.addr, "")])
    ))
    .await;

    // No key: the program's 401, and nothing reaches the backend.
    let (head, _) = upgrade(ferry.addr, "/api/s.json", "").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert_eq!(ws.hits(), 0, "an upgrade without the key went upstream");
    let line = ferry.logged("/api/s.json").await;
    assert!(line.contains("status=401 tries=[]"), "{line}");

    // With the key: every hook, in order, then the tunnel.
    let (head, mut s) = upgrade(ferry.addr, "/api/chat", "X-Api-Key: secret\r\n").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains(
            "x-hooks: early_request_filter,request_filter,request_body_filter,request_body_filter(end),upstream_peer,connected_to_upstream(new,fd=true,timed=true),upstream_request_filter,upstream_response_filter,response_filter"
        ),
        "{head}"
    );
    echoes(&mut s, b"ping through the tunnel").await;
    let seen = ws.requests()[0].head.to_ascii_lowercase();
    assert!(
        seen.contains("x-hooks: early_request_filter,request_filter,request_body_filter,request_body_filter(end),upstream_peer,connected_to_upstream(new,fd=true,timed=true),upstream_request_filter"),
        "{seen}"
    );
    assert!(seen.contains("connection: upgrade"), "{seen}");
    drop(s);
    let line = ferry.logged("/api/chat").await;
    assert!(
        line.contains(&format!("status=101 tries=[{}]", ws.addr)),
        "{line}"
    );
}

#[tokio::test]
async fn least_conn_keeps_requests_off_a_server_holding_a_websocket() {
    let a = ws_then_plain("a").await;
    let b = Raw::always(vec![Step::response(200, "b")]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}    balance: least_conn\nroutes:\n  - upstream: app\n",
        group("app", &[(a.addr, ""), (b.addr, "")])
    ))
    .await;
    // Both idle: least_conn's tie goes to the first server.
    let (head, mut tunnel) = upgrade(ferry.addr, "/ws", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut tunnel, b"open").await;
    assert_eq!(a.hits(), 1, "the WebSocket went to the first server");
    for _ in 0..4 {
        let (status, body) = get_body(ferry.addr, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "b"),
            "a plain request went to the server holding the tunnel"
        );
    }
    assert_eq!(a.hits(), 1);
    drop(tunnel);
}

#[tokio::test]
async fn max_conns_counts_an_open_tunnel() {
    let a = ws_then_plain("a").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(a.addr, "max_conns: 1")])
    ))
    .await;
    let (head, mut tunnel) = upgrade(ferry.addr, "/ws", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut tunnel, b"open").await;
    let (status, _) = get_body(ferry.addr, "/").await;
    assert_eq!(status, 502, "the tunnel holds the server's only connection");
    assert_eq!(a.hits(), 1);

    // The tunnel closes: the server takes requests again.
    drop(tunnel);
    let addr = ferry.addr;
    let start = std::time::Instant::now();
    loop {
        let (status, body) = get_body(addr, "/").await;
        if status == 200 {
            assert_eq!(body, "a");
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the closed tunnel still holds the server"
        );
    }
}

#[tokio::test]
async fn an_upgrade_that_fails_to_connect_goes_to_the_next_server_and_counts() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let live = ws_then_plain("live").await;
    let admin = free_port();
    let ferry = Ferry::start_hooked(&format!(
        "admin:\n  listen: 127.0.0.1:{admin}\nupstreams:\n{}routes:\n  - upstream: app\n",
        group(
            "app",
            &[(dead, "max_fails: 1, fail_timeout: 60s"), (live.addr, "")]
        )
    ))
    .await;
    let (head, mut tunnel) = upgrade(ferry.addr, "/ws", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut tunnel, b"after a retry").await;
    drop(tunnel);
    let line = ferry.logged("/ws").await;
    assert!(
        line.contains(&format!("status=101 tries=[{dead} {}]", live.addr)),
        "{line}"
    );

    // The failure counted: the dead server is out (and the metric says
    // so), plain requests go straight to the live one.
    let http = ferry_tests::client::http();
    let metrics =
        ferry_tests::client::text(&http, format!("http://127.0.0.1:{admin}/metrics")).await;
    let marked = format!("ferry_servers_marked_failed_total{{group=\"app\",server=\"{dead}\"}} 1");
    assert!(metrics.contains(&marked), "{metrics}");
    for i in 0..3 {
        let uri = format!("/plain{i}");
        let (status, body) = get_body(ferry.addr, &uri).await;
        assert_eq!((status, body.as_str()), (200, "live"));
        let line = ferry.logged(&uri).await;
        assert!(
            line.contains(&format!("tries=[{}]", live.addr)),
            "the failed server was tried again: {line}"
        );
    }
}

#[tokio::test]
async fn set_headers_and_hash_key_apply_to_upgrades() {
    let (a, b) = (ws_backend().await, ws_backend().await);
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}    balance: hash\n    hash_key: \"$http_x_user\"\nroutes:\n  - upstream: app\n    proxy: {{ set_headers: {{ X-Extra: \"for $http_x_user\" }} }}\n",
        group("app", &[(a.addr, ""), (b.addr, "")])
    ))
    .await;
    for _ in 0..3 {
        let (head, mut s) = upgrade(ferry.addr, "/ws", "X-User: u1\r\n").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        echoes(&mut s, b"x").await;
    }
    let (got, idle) = if a.hits() > 0 { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        (got.hits(), idle.hits()),
        (3, 0),
        "one key, one server (round robin would split them)"
    );
    for r in got.requests() {
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("x-extra: for u1"), "{head}");
        assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    }
}

/// One backend behaviour for the table below.
#[derive(Clone, Copy, Debug)]
enum Server {
    Refuses,
    Answers(u16),
}

async fn server(s: Server, name: &'static str) -> (SocketAddr, Option<Raw>) {
    match s {
        Server::Refuses => (format!("127.0.0.1:{}", free_port()).parse().unwrap(), None),
        Server::Answers(status) => {
            let raw = Raw::always(vec![Step::response(status, name)]).await;
            (raw.addr, Some(raw))
        }
    }
}

#[tokio::test]
async fn subrequests_follow_the_same_next_upstream_rules_as_requests() {
    use Server::*;
    // (next_upstream, first server, second server) -> (status, body)
    let table: [(&str, Server, Server, u16, &str); 6] = [
        ("[error, timeout]", Refuses, Answers(200), 200, "second"),
        ("[error, timeout]", Answers(502), Answers(200), 502, "first"),
        (
            "[error, http_502]",
            Answers(502),
            Answers(200),
            200,
            "second",
        ),
        (
            "[error, http_404]",
            Answers(404),
            Answers(404),
            404,
            "second",
        ),
        ("[off]", Refuses, Answers(200), 502, ""),
        ("[error]", Refuses, Refuses, 502, ""),
    ];
    for (rules, first, second, status, body) in table {
        for via_subrequest in [false, true] {
            let (a, _ra) = server(first, "first").await;
            let (b, _rb) = server(second, "second").await;
            let ferry = Ferry::start_hooked(&format!(
                "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ next_upstream: {rules} }}\n",
                group("app", &[(a, ""), (b, "")])
            ))
            .await;
            let extra = if via_subrequest { "X-Sub: app\r\n" } else { "" };
            let (bytes, _) = exchange(
                ferry.addr,
                &format!("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"),
            )
            .await;
            let (_, got) = split(&bytes);
            let case = format!("{rules} {first:?} {second:?} subrequest={via_subrequest}");
            assert_eq!(status_of(&bytes), status, "{case}");
            if !body.is_empty() {
                assert_eq!(String::from_utf8_lossy(&got), body, "{case}");
            }
        }
    }
}

/// On a route that speaks HTTP/2 to its servers, an upgrade still goes
/// over HTTP/1.1, as nginx's does: the WebSocket server gets an HTTP/1.1
/// request with `Upgrade`, and the tunnel works.
#[tokio::test]
async fn an_upgrade_on_an_http2_route_goes_over_http1() {
    let backend = ws_backend().await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ http_version: \"2\" }}\n",
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let (head, mut s) = upgrade(ferry.addr, "/ws", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echoes(&mut s, b"over http/1.1").await;
    let seen = backend.requests();
    let first = seen.first().expect("the upgrade request");
    assert!(
        first.head.starts_with("GET /ws HTTP/1.1\r\n"),
        "{}",
        first.head
    );
}
