//! Every balancer with real backends that say who answered:
//! least_conn and random two with a held request, hash stickiness and
//! ketama's minimal movement, ip_hash over /24 client addresses, max_conns
//! with a backup, active health checks taking a server out and back.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::text;
use ferry_tests::ferry::Ferry;
use ferry_tests::WAIT;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::client::http as client;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn servers(list: &[(SocketAddr, &str)]) -> String {
    list.iter()
        .map(|(a, extra)| {
            let sep = if extra.is_empty() { "" } else { ", " };
            format!("      - {{ addr: \"{a}\"{sep}{extra} }}\n")
        })
        .collect()
}

fn conf(balance: &str, list: &[(SocketAddr, &str)]) -> String {
    format!(
        "upstreams:\n  app:\n{balance}    servers:\n{}routes:\n  - upstream: app\n",
        servers(list)
    )
}

/// A backend named `name` that holds its first request for `hold`.
async fn holding(name: &'static str, hold: Duration) -> Backend {
    Backend::start(Arc::new(move |i: usize, _: &Seen| {
        let mut r = Reply::ok(name);
        if i == 0 {
            r.delay = Some(hold);
        }
        r
    }))
    .await
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Hold one request on A, then send three more: they must avoid A.
async fn held_request_steers_away(balance: &str) {
    let a = holding("a", Duration::from_millis(1500)).await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&conf(balance, &[(a.addr, ""), (b.addr, "")])).await;
    let url = ferry.url("/");
    let c = client();
    // Until A holds one, requests land anywhere; the first one on A is held.
    let held = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            loop {
                if text(&c, url.clone()).await == "a" {
                    return;
                }
            }
        })
    };
    wait_until("a request held on A", || a.hits() == 1).await;
    for _ in 0..3 {
        assert_eq!(
            text(&c, url.clone()).await,
            "b",
            "{balance}: A holds a request"
        );
    }
    held.await.unwrap();
}

#[tokio::test]
async fn least_conn_sends_new_requests_past_a_busy_server() {
    held_request_steers_away("    balance: least_conn\n").await;
}

#[tokio::test]
async fn random_two_prefers_the_less_busy_server() {
    held_request_steers_away("    balance: random\n").await;
}

#[tokio::test]
async fn hash_is_sticky_and_spreads() {
    let (a, b, c) = (
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    );
    let ferry = Ferry::start(&conf(
        "    balance: hash\n    hash_key: \"$arg_user\"\n",
        &[(a.addr, ""), (b.addr, ""), (c.addr, "")],
    ))
    .await;
    let http = client();
    let mut owner: HashMap<u32, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..30u32 {
            let got = text(&http, ferry.url(&format!("/x?user={user}&round={round}"))).await;
            let first = owner.entry(user).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "user {user} moved");
        }
    }
    let used: HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 3, "30 keys over 3 servers use them all");
}

#[tokio::test]
async fn consistent_hash_moves_only_the_removed_servers_keys() {
    let (a, b, c) = (
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    );
    let key = "    balance: hash\n    hash_key: \"$request_uri\"\n    consistent: true\n";
    let three = Ferry::start(&conf(key, &[(a.addr, ""), (b.addr, ""), (c.addr, "")])).await;
    let two = Ferry::start(&conf(key, &[(a.addr, ""), (b.addr, "")])).await;
    let http = client();
    let mut moved = 0;
    for i in 0..60 {
        let path = format!("/item/{i}");
        let before = text(&http, three.url(&path)).await;
        let after = text(&http, two.url(&path)).await;
        if before == "c" {
            moved += 1;
        } else {
            assert_eq!(before, after, "{path} moved though its server stayed");
        }
    }
    assert!(moved > 0, "some keys were on the removed server");
}

#[tokio::test]
async fn ip_hash_keeps_a_slash_24_together() {
    let (a, b, c) = (
        Backend::named("a").await,
        Backend::named("b").await,
        Backend::named("c").await,
    );
    let ferry = Ferry::start(&conf(
        "    balance: ip_hash\n",
        &[(a.addr, ""), (b.addr, ""), (c.addr, "")],
    ))
    .await;
    let mut per_net = Vec::new();
    for net in 1..=12u8 {
        let mut seen = HashSet::new();
        for host in [2u8, 77, 200] {
            seen.insert(text(&client_from(&format!("127.0.{net}.{host}")), ferry.url("/")).await);
        }
        assert_eq!(seen.len(), 1, "127.0.{net}.0/24 went to {seen:?}");
        per_net.push(seen.into_iter().next().unwrap());
    }
    let used: HashSet<_> = per_net.iter().collect();
    assert!(
        used.len() >= 2,
        "12 networks all on one server: {per_net:?}"
    );
}

#[tokio::test]
async fn max_conns_full_primary_overflows_to_backup() {
    let slow = |name: &'static str| {
        Backend::start(Arc::new(move |_: usize, _: &Seen| {
            let mut r = Reply::ok(name);
            r.delay = Some(Duration::from_millis(800));
            r
        }))
    };
    let (a, b) = (slow("A").await, slow("B").await);
    let ferry = Ferry::start(&conf(
        "",
        &[(a.addr, "max_conns: 2"), (b.addr, "backup: true")],
    ))
    .await;
    let mut all = Vec::new();
    for _ in 0..6 {
        let (c, url) = (client(), ferry.url("/"));
        all.push(tokio::spawn(async move { text(&c, url).await }));
        // One at a time into Ferry, so the order of choice is the order sent.
        wait_until("the request to reach a backend", || {
            a.hits() + b.hits() == all.len()
        })
        .await;
    }
    let mut got = Vec::new();
    for t in all {
        got.push(t.await.unwrap());
    }
    assert_eq!(got, ["A", "A", "B", "B", "B", "B"]);
}

#[tokio::test]
async fn health_check_takes_a_server_out_and_puts_it_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let a = Backend::start(Arc::new(move |_: usize, req: &Seen| {
        if req.uri == "/healthz" {
            let ok = h.load(Ordering::SeqCst);
            Reply::status(if ok { 200 } else { 503 }, "")
        } else {
            Reply::ok("a")
        }
    }))
    .await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n  app:\n    health_check: {{ path: /healthz, interval: 100ms, timeout: 1s }}\n    servers:\n{}routes:\n  - upstream: app\n",
        servers(&[(a.addr, ""), (b.addr, "")])
    ))
    .await;
    let http = client();
    let answers = |n: usize| {
        let (http, url) = (http.clone(), ferry.url("/"));
        async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(text(&http, url.clone()).await);
            }
            v
        }
    };
    assert!(answers(4).await.contains(&"a".to_string()));
    healthy.store(false, Ordering::SeqCst);
    let start = Instant::now();
    loop {
        if answers(4).await.iter().all(|x| x == "b") {
            break;
        }
        assert!(start.elapsed() < WAIT, "A was never taken out");
    }
    assert!(
        answers(6).await.iter().all(|x| x == "b"),
        "A stays out while failing"
    );
    let log = ferry.log();
    assert!(
        log.contains("status 503 Service Unavailable (expected 200)), taken out"),
        "the log says why: {log}"
    );
    healthy.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while !answers(4).await.contains(&"a".to_string()) {
        assert!(start.elapsed() < WAIT, "A was never put back");
    }
}

fn always_ok() -> ferry_tests::raw::Script {
    Arc::new(|_| vec![ferry_tests::raw::Step::response(200, "ok")])
}

async fn ok(url: String) {
    assert_eq!(text(&client(), url).await, "ok");
}

#[tokio::test]
async fn keepalive_timeout_closes_idle_connections() {
    let raw = ferry_tests::raw::Raw::start(always_ok()).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n  app:\n    keepalive_timeout: 300ms\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        raw.addr
    ))
    .await;
    ok(ferry.url("/")).await;
    // The pool closes the idle connection after keepalive_timeout.
    wait_until("the idle upstream connection to be closed", || {
        raw.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    ok(ferry.url("/")).await;
    assert_eq!(raw.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keepalive_time_retires_old_connections_after_a_request() {
    let raw = ferry_tests::raw::Raw::start(always_ok()).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n  app:\n    keepalive_time: 300ms\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        raw.addr
    ))
    .await;
    let made = Instant::now();
    ok(ferry.url("/")).await;
    ok(ferry.url("/")).await;
    assert_eq!(raw.conns.load(Ordering::SeqCst), 1, "young: reused");
    // Let the connection pass keepalive_time (this wait is the scenario).
    tokio::time::sleep(Duration::from_millis(350).saturating_sub(made.elapsed())).await;
    // nginx checks the age after a request: one more goes over the old one.
    ok(ferry.url("/")).await;
    assert_eq!(raw.conns.load(Ordering::SeqCst), 1);
    ok(ferry.url("/")).await;
    assert_eq!(raw.conns.load(Ordering::SeqCst), 2, "then it is retired");
}

#[tokio::test]
async fn fail_timeout_lets_one_probe_through() {
    let a_up = Arc::new(AtomicBool::new(false));
    let up = a_up.clone();
    let a = Backend::start(Arc::new(move |_: usize, _: &Seen| {
        if up.load(Ordering::SeqCst) {
            Reply::ok("a")
        } else {
            Reply::status(502, "down")
        }
    }))
    .await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n  app:\n    servers:\n{}routes:\n  - upstream: app\n    proxy: {{ next_upstream: [error, http_502] }}\n",
        servers(&[(a.addr, "fail_timeout: 500ms"), (b.addr, "")])
    ))
    .await;
    let http = client();
    assert_eq!(
        text(&http, ferry.url("/")).await,
        "b",
        "A answered 502, the request went on to B"
    );
    let marked = Instant::now();
    for _ in 0..4 {
        assert_eq!(text(&http, ferry.url("/")).await, "b");
    }
    assert_eq!(a.hits(), 1, "A is out for fail_timeout");
    a_up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(550).saturating_sub(marked.elapsed())).await;
    // After fail_timeout one request probes A; its success puts A back.
    let mut seen_a = 0;
    for _ in 0..4 {
        if text(&http, ferry.url("/")).await == "a" {
            seen_a += 1;
        }
    }
    assert!(seen_a >= 1, "A was probed and is back");
    assert!(a.hits() >= 2);
}

/// `server.upstream_keepalive_pool_size` caps idle upstream connections
/// across all groups: with a cap of 1, the second group's connection is
/// closed after its response (its next request connects again) while the
/// first group's stays pooled and is reused.
#[tokio::test]
async fn upstream_keepalive_pool_size_caps_idle_connections_across_groups() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let ferry = Ferry::start_server_keys(
        "upstream_keepalive_pool_size: 1",
        &format!(
            "upstreams:\n{}{}routes:\n  - match: {{ path_prefix: /b }}\n    upstream: gb\n  - upstream: ga\n",
            ferry_tests::yaml::group("ga", &[(a.addr, "")]),
            ferry_tests::yaml::group("gb", &[(b.addr, "")])
        ),
    )
    .await;
    let http = ferry_tests::client::http();
    let get = |path: &'static str| {
        let req = http.get(ferry.url(path));
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/a").await, "a");
    for _ in 0..3 {
        assert_eq!(get("/b").await, "b");
    }
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        3,
        "no room in the cap: a new connection each time"
    );
    assert_eq!(get("/a").await, "a");
    assert_eq!(
        a.conns.load(Ordering::SeqCst),
        1,
        "the one idle connection was reused"
    );
}
