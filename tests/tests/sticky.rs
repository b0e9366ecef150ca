//! `sticky` (nginx 1.29.6) with real backends that say who answered: the
//! cookie Ferry sets, byte for byte as nginx sets it (its `expires` dated
//! at the pick), and the server it binds to; a cookie naming a down or failed server re-pinned; route
//! templates; learned sessions (after the response, and at its header);
//! sessions carried in headers; a draining server taking only bound
//! requests, the YAML's drain and the admin API's being one; a reload
//! keeping learned sessions.

use ferry_tests::admin::Admin;
use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::{http, text};
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::group;
use std::net::SocketAddr;
use std::sync::Arc;

/// nginx's route of a server written without `route=`: the MD5 of its
/// `IP:PORT` in lowercase hex (`ngx_http_upstream_init_round_robin_sid`),
/// computed here by coreutils' `md5sum`, apart from Ferry's own code.
fn nginx_route(addr: SocketAddr) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum");
    let text = addr.to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("md5sum output");
    let hex = String::from_utf8_lossy(&out.stdout);
    hex.split_whitespace().next().expect("a digest").to_string()
}

fn conf(sticky: &str, servers: &[(SocketAddr, &str)]) -> String {
    format!(
        "upstreams:\n{}    sticky:\n      {sticky}\nroutes:\n  - upstream: app\n",
        group("app", servers)
    )
}

/// `n` GETs of `path` without a cookie: who answered each.
async fn bodies(ferry: &Ferry, path: &str, n: usize) -> Vec<String> {
    let client = http();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(text(&client, ferry.url(path)).await);
    }
    out
}

/// GET `/` with a `Cookie` header (none when empty): (body, Set-Cookie values).
async fn get(ferry: &Ferry, cookie: &str) -> (String, Vec<String>) {
    let mut req = http().get(ferry.url("/"));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let resp = req.send().await.expect("request");
    let set: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_string())
        .collect();
    (resp.text().await.expect("body"), set)
}

/// A port nothing listens on: connecting to it is refused.
fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn cookie_is_nginx_s_and_binds_to_its_server() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let sticky = "cookie: { name: srv_id, expires: max, path: /, httponly: true }";
    let ferry = Ferry::start(&conf(sticky, &[(a.addr, ""), (b.addr, "route: bee")])).await;
    let (ra, rb) = (nginx_route(a.addr), "bee".to_string());
    let (first, set) = get(&ferry, "").await;
    assert_eq!(first, "a", "round robin starts with the first server");
    // ngx_http_upstream_sticky_cookie_insert's layout, `path` last.
    let want = format!(
        "srv_id={ra}; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000; httponly; path=/"
    );
    assert_eq!(set, vec![want]);
    for _ in 0..4 {
        assert_eq!(get(&ferry, &format!("srv_id={rb}")).await.0, "b");
        let (body, set) = get(&ferry, &format!("x=1; srv_id={ra}")).await;
        assert_eq!(body, "a");
        assert!(set[0].starts_with(&format!("srv_id={ra};")), "{set:?}");
    }
    let (body, set) = get(&ferry, "srv_id=nobody").await;
    let named = if body == "a" { &ra } else { &rb };
    assert!(set[0].starts_with(&format!("srv_id={named};")), "{set:?}");
}

#[tokio::test]
async fn cookie_naming_a_down_or_failed_server_is_re_pinned() {
    let a = Backend::named("a").await;
    let dead = dead_port();
    let c = Backend::named("c").await;
    let servers = [
        (a.addr, ""),
        (dead, "route: dead, max_fails: 1"),
        (c.addr, "route: cee, down: true"),
    ];
    let ferry = Ferry::start(&conf("cookie: { name: srv }", &servers)).await;
    let pinned = format!("srv={}", nginx_route(a.addr));
    // Bound to a refused server: the next try is the balancer's.
    let (body, set) = get(&ferry, "srv=dead").await;
    assert_eq!((body.as_str(), set), ("a", vec![pinned.clone()]));
    // Failed now (max_fails): not tried at all.
    let (body, set) = get(&ferry, "srv=dead").await;
    assert_eq!((body.as_str(), set), ("a", vec![pinned.clone()]));
    // down: binding never overrides it.
    let (body, set) = get(&ferry, "srv=cee").await;
    assert_eq!((body.as_str(), set), ("a", vec![pinned]));
    assert_eq!(c.hits(), 0);
}

/// `t` seconds since the epoch as nginx's `ngx_http_cookie_time` writes
/// it (up to 2037), by coreutils' `date`, apart from Ferry's own code.
fn cookie_time(t: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%a, %d-%b-%y %H:%M:%S GMT"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn epoch_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// nginx dates `expires` when it picks the server (`ngx_time()` in
/// `get_peer`), not when the response comes: nginx 1.31.5 with a server
/// answering after 2 s sent `Date: ... 12:22:44 GMT` with `expires=...
/// 13:22:42 GMT; max-age=3600` (bench/results/2026-12-06-nginx131-sticky.txt).
#[tokio::test]
async fn cookie_expires_is_dated_when_the_server_is_picked() {
    let delay = std::time::Duration::from_secs(2);
    let slow = Backend::start(Arc::new(move |_, _| Reply {
        delay: Some(delay),
        ..Reply::ok("slow")
    }))
    .await;
    let ferry = Ferry::start(&conf(
        "cookie: { name: srv_id, expires: 1h }",
        &[(slow.addr, "")],
    ))
    .await;
    let sent = epoch_secs(std::time::SystemTime::now());
    let (body, set) = get(&ferry, "").await;
    let answered = epoch_secs(std::time::SystemTime::now());
    assert_eq!(body, "slow");
    // The pick came after `sent` and at least `delay` before `answered`.
    let latest_pick = answered - delay.as_secs_f64();
    let route = nginx_route(slow.addr);
    let could_be: Vec<String> = (sent as u64..=latest_pick as u64)
        .map(|t| {
            format!(
                "srv_id={route}; expires={}; max-age=3600",
                cookie_time(t + 3600)
            )
        })
        .collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(
        could_be.contains(&set[0]),
        "{set:?} not one of {could_be:?}"
    );
}

#[tokio::test]
async fn route_templates_take_the_first_non_empty_value() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let sticky = "route: [\"$cookie_route\", \"$arg_route\"]";
    let ferry = Ferry::start(&conf(
        sticky,
        &[(a.addr, "route: ra"), (b.addr, "route: rb")],
    ))
    .await;
    let client = http();
    for _ in 0..4 {
        assert_eq!(text(&client, ferry.url("/?route=rb")).await, "b");
        let with_cookie = client
            .get(ferry.url("/?route=rb"))
            .header("cookie", "route=ra")
            .send()
            .await
            .expect("request");
        assert_eq!(
            with_cookie.text().await.expect("body"),
            "a",
            "the cookie comes first"
        );
    }
    // Compared whole: a prefix names no server, so the balancer picks.
    let spread = bodies(&ferry, "/?route=r", 4).await;
    assert!(
        spread.contains(&"a".into()) && spread.contains(&"b".into()),
        "{spread:?}"
    );
}

/// A backend that starts a session `sid=NAME` for a request without one,
/// and answers its name.
async fn session_backend(name: &'static str) -> Backend {
    Backend::start(Arc::new(move |_, r: &Seen| {
        let mut reply = Reply::ok(name);
        if !r.headers.contains_key("cookie") {
            reply = reply.header("set-cookie", &format!("sid={name}; path=/"));
        }
        reply
    }))
    .await
}

const LEARN: &str = "learn: { create: \"$upstream_cookie_sid\", lookup: \"$cookie_sid\" }";

#[tokio::test]
async fn learn_binds_the_session_a_response_created() {
    let (a, b) = (session_backend("a").await, session_backend("b").await);
    let ferry = Ferry::start(&conf(LEARN, &[(a.addr, ""), (b.addr, "")])).await;
    let (first, set) = get(&ferry, "").await;
    assert_eq!(
        (first.as_str(), set),
        ("a", vec!["sid=a; path=/".to_string()])
    );
    let (second, _) = get(&ferry, "").await;
    assert_eq!(second, "b");
    for _ in 0..4 {
        assert_eq!(get(&ferry, "sid=a").await.0, "a");
        assert_eq!(get(&ferry, "sid=b").await.0, "b");
    }
    // A session no response created is not bound.
    let mut spread = Vec::new();
    for _ in 0..4 {
        spread.push(get(&ferry, "sid=unknown").await.0);
    }
    assert!(
        spread.contains(&"a".into()) && spread.contains(&"b".into()),
        "{spread:?}"
    );
}

/// With `header: true` the session is bound once the header is in: a
/// request naming it goes there while the first response's body is still
/// on its way (round robin alone would send it to the other server).
#[tokio::test]
async fn learn_with_header_binds_before_the_body() {
    let x = Raw::start(Arc::new(|i| match i {
        0 => vec![
            Step::text(
                "HTTP/1.1 200 OK\r\nSet-Cookie: sid=s1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            Step::text("4\r\nhalf\r\n"),
            Step::Stall,
        ],
        _ => vec![Step::response(200, "x")],
    }))
    .await;
    let y = Backend::named("y").await;
    let learn =
        "learn: { create: \"$upstream_cookie_sid\", lookup: \"$cookie_sid\", header: true }";
    let unbuffered = "    proxy: { buffering: false }\n";
    let ferry = Ferry::start(&format!(
        "{}{unbuffered}",
        conf(learn, &[(x.addr, ""), (y.addr, "")])
    ))
    .await;
    let pending = http().get(ferry.url("/")).send().await.expect("the header");
    assert_eq!(pending.headers()["set-cookie"], "sid=s1");
    for _ in 0..3 {
        assert_eq!(get(&ferry, "sid=s1").await.0, "x");
    }
    assert_eq!(y.hits(), 0);
    drop(pending);
}

#[tokio::test]
async fn a_draining_server_takes_only_bound_requests() {
    let admin = Admin::new();
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let body = conf(
        "cookie: { name: srv }",
        &[(a.addr, ""), (b.addr, "drain: true")],
    );
    let ferry = Ferry::start(&format!("{}{body}", admin.yaml(""))).await;
    let (ra, rb) = (nginx_route(a.addr), nginx_route(b.addr));
    for _ in 0..4 {
        assert_eq!(get(&ferry, "").await.0, "a");
    }
    assert_eq!(get(&ferry, &format!("srv={rb}")).await.0, "b");
    assert_eq!(admin.server("app", b.addr).await["state"], "draining");
    // The API's drain is the same state: undone, b takes new requests...
    let path = |addr: SocketAddr| format!("/upstreams/app/servers/{addr}");
    assert_eq!(
        admin
            .patch(&path(b.addr), "{\"drain\": false}", None)
            .await
            .0,
        200
    );
    let unbound = bodies(&ferry, "/", 4).await;
    assert!(unbound.contains(&"b".into()), "{unbound:?}");
    // ...and set on a, a keeps only the requests bound to it.
    assert_eq!(
        admin
            .patch(&path(a.addr), "{\"drain\": true}", None)
            .await
            .0,
        200
    );
    for _ in 0..4 {
        assert_eq!(get(&ferry, "").await.0, "b");
        assert_eq!(get(&ferry, &format!("srv={ra}")).await.0, "a");
    }
}

#[tokio::test]
async fn a_reload_keeps_learned_sessions_of_servers_that_stay() {
    let (a, b, c) = (
        session_backend("a").await,
        session_backend("b").await,
        session_backend("c").await,
    );
    let ferry = Ferry::start(&conf(LEARN, &[(a.addr, ""), (b.addr, "")])).await;
    assert_eq!(get(&ferry, "").await.0, "a");
    assert_eq!(get(&ferry, "").await.0, "b");
    ferry.rewrite(&conf(LEARN, &[(c.addr, ""), (a.addr, ""), (b.addr, "")]));
    ferry.reload().await;
    assert!(
        ferry.log().contains("is served from now on"),
        "{}",
        ferry.log()
    );
    for _ in 0..4 {
        assert_eq!(get(&ferry, "sid=a").await.0, "a");
        assert_eq!(get(&ferry, "sid=b").await.0, "b");
    }
    assert_eq!(c.hits(), 0, "every request was bound");
}

/// Sessions carried in headers: `create` from `$upstream_http_NAME`,
/// `lookup` from `$http_NAME`; `add_headers` sees the same response header.
#[tokio::test]
async fn learn_from_a_response_header_and_add_headers_see_it() {
    let backend = |name: &'static str| {
        Backend::start(Arc::new(move |_, r: &Seen| {
            let reply = Reply::ok(name);
            match r.headers.contains_key("x-session") {
                true => reply,
                false => reply.header("x-session", &format!("{name}-1")),
            }
        }))
    };
    let (a, b) = (backend("a").await, backend("b").await);
    let learn = "learn: { create: \"$upstream_http_x_session\", lookup: \"$http_x_session\" }";
    let adds = "    proxy: { add_headers: { X-Seen: \"[$upstream_http_x_session]\" } }\n";
    let ferry = Ferry::start(&format!(
        "{}{adds}",
        conf(learn, &[(a.addr, ""), (b.addr, "")])
    ))
    .await;
    let client = http();
    let first = client.get(ferry.url("/")).send().await.expect("request");
    assert_eq!(first.headers()["x-seen"], "[a-1]");
    assert_eq!(first.text().await.expect("body"), "a");
    for _ in 0..4 {
        let r = client
            .get(ferry.url("/"))
            .header("x-session", "a-1")
            .send()
            .await
            .expect("request");
        assert_eq!(
            r.headers()["x-seen"],
            "[]",
            "this response started no session"
        );
        assert_eq!(r.text().await.expect("body"), "a");
    }
}
