//! `limit_req` and `limit_conn` against real servers: bursts request by
//! request against nginx's arithmetic (at rates slow enough that the
//! clock cannot move a result), delays that only ever lengthen, slow
//! responses holding their place, a fleet of two Ferries on one real
//! redis-server, Redis killed and started again under load, a reload that
//! keeps a zone's counts, and a hook asking a zone itself.

use ferry_tests::admin::Admin;
use ferry_tests::backend::Backend;
use ferry_tests::client::{exchange, get as raw_get, http, status_of};
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use ferry_tests::redis::Redis;
use ferry_tests::yaml::group;
use ferry_tests::{until, WAIT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` with extra header lines: (status, body).
async fn get(ferry: &Ferry, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http().get(ferry.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The access log's lines, parsed, once there are at least `n` (bounded).
async fn access_lines(ferry: &Ferry, n: usize) -> Vec<serde_json::Value> {
    let path = ferry.dir.join("access.log");
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    until("access log lines", || read().len() >= n).await;
    read()
}

fn zones(req: &str, conn: &str) -> String {
    format!("limit_req_zones:\n{req}limit_conn_zones:\n{conn}")
}

/// A burst at 1r/m checked request by request: excess 0, 1.000, 2.000,
/// 3.000 within burst 3 (nodelay: served at once), 4.000 refused with the
/// route's status; the refused one reaches no server, is logged with its
/// status and `REJECTED`, and counted.
#[tokio::test]
async fn a_burst_is_nginx_arithmetic_request_by_request() {
    let backend = Backend::named("app").await;
    let admin = Admin::new();
    let ferry = Ferry::start(&format!(
        "{}access_log: \"{{dir}}/access.log\"\n{}upstreams:\n{}routes:\n  - upstream: app\n    limit_req: {{ zone: one, burst: 3, nodelay: true, status: 429 }}\n",
        admin.yaml(""),
        zones("  one: { key: \"$binary_remote_addr\", rate: 1r/m }\n", ""),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&ferry, "/", &[]).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(backend.hits(), 4, "a refused request reaches no server");
    let lines = access_lines(&ferry, 6).await;
    let got: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["status"].as_u64().unwrap_or(0),
                l["limit_req_status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (200, "PASSED"),
            (200, "PASSED"),
            (200, "PASSED"),
            (200, "PASSED"),
            (429, "REJECTED"),
            (429, "REJECTED")
        ]
    );
    let passed = "ferry_limit_requests_total{result=\"passed\",zone=\"one\"}";
    let rejected = "ferry_limit_requests_total{result=\"rejected\",zone=\"one\"}";
    assert_eq!(admin.metric(passed).await, 4);
    assert_eq!(admin.metric(rejected).await, 2);
    assert!(
        ferry
            .log()
            .contains("limiting requests, excess: 4.000 by zone \"one\""),
        "{}",
        ferry.log()
    );
}

/// `delay: 1` serves the first excess request at once and would delay
/// the next; `dry_run` serves everything and says what it would have
/// done (1r/m: a delay would be a minute, so only the dry run can show
/// it without waiting).
#[tokio::test]
async fn dry_run_shows_delayed_and_rejected() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "access_log: \"{{dir}}/access.log\"\n{}upstreams:\n{}routes:\n  - upstream: app\n    limit_req: {{ zone: one, burst: 2, delay: 1, dry_run: true }}\n",
        zones("  one: { key: \"$binary_remote_addr\", rate: 1r/m }\n", ""),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(get(&ferry, "/", &[]).await.0, 200);
    }
    let lines = access_lines(&ferry, 4).await;
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["limit_req_status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        got,
        ["PASSED", "PASSED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN"]
    );
    assert_eq!(backend.hits(), 4);
}

/// Without nodelay the burst is queued to the rate: at 10r/s the fourth
/// of four requests sent at once leaves no sooner than 300 ms after the
/// first was charged, and each delayed one is logged `DELAYED`.
#[tokio::test]
async fn a_queued_burst_leaves_at_the_rate() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "access_log: \"{{dir}}/access.log\"\n{}upstreams:\n{}routes:\n  - upstream: app\n    limit_req: {{ zone: ten, burst: 5 }}\n",
        zones("  ten: { key: \"$binary_remote_addr\", rate: 10r/s }\n", ""),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = ferry.url("/");
            tokio::spawn(async move {
                let r = http().get(url).send().await.expect("request");
                (r.status().as_u16(), Instant::now())
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("task"));
    }
    assert!(done.iter().all(|(s, _)| *s == 200), "{done:?}");
    let last = done.iter().map(|(_, t)| *t).max().expect("four");
    assert!(
        last.duration_since(start) >= Duration::from_millis(300),
        "the burst left too early: {:?}",
        last.duration_since(start)
    );
    let lines = access_lines(&ferry, 4).await;
    let delayed = lines
        .iter()
        .filter(|l| l["limit_req_status"] == "DELAYED")
        .count();
    assert_eq!(delayed, 3, "{lines:?}");
}

/// Several zones on one route: a request one zone refuses is not charged
/// to the others (nginx), so `a` still has room for one more after it.
#[tokio::test]
async fn a_refused_request_is_not_charged_to_the_other_zones() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "{}upstreams:\n{}routes:\n  - match: {{ path_prefix: /both }}\n    upstream: app\n    limit_req: [ {{ zone: a, burst: 1, nodelay: true }}, {{ zone: b }} ]\n  - match: {{ path_prefix: /a }}\n    upstream: app\n    limit_req: {{ zone: a, burst: 1, nodelay: true }}\n",
        zones(
            "  a: { key: \"$binary_remote_addr\", rate: 1r/m }\n  b: { key: \"$binary_remote_addr\", rate: 1r/m }\n",
            ""
        ),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    assert_eq!(get(&ferry, "/both", &[]).await.0, 200); // a: 0, b: 0
    assert_eq!(get(&ferry, "/both", &[]).await.0, 503); // b refuses; a not charged
    assert_eq!(get(&ferry, "/a", &[]).await.0, 200); // a: 1.000 within burst 1
    assert_eq!(get(&ferry, "/a", &[]).await.0, 503); // a: 2.000
}

/// A refusal is one of Ferry's own answers: the route's `error_pages`
/// entry answers it.
#[tokio::test]
async fn error_pages_answer_a_refusal() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "{}upstreams:\n{}routes:\n  - upstream: app\n    limit_req: {{ zone: one }}\n    proxy: {{ error_pages: {{ 503: {{ status: 429, body: \"slow down\\n\", content_type: text/plain }} }} }}\n",
        zones("  one: { key: \"$http_x_tenant\", rate: 1r/m }\n", ""),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let t = [("X-Tenant", "t1")];
    assert_eq!(get(&ferry, "/", &t).await.0, 200);
    assert_eq!(get(&ferry, "/", &t).await, (429, "slow down\n".to_string()));
    // Another key, and no key at all, are not counted against t1.
    assert_eq!(get(&ferry, "/", &[("X-Tenant", "t2")]).await.0, 200);
    for _ in 0..3 {
        assert_eq!(get(&ferry, "/", &[]).await.0, 200);
    }
}

/// A raw request on its own connection; the response read until the
/// header is complete.
async fn start_request(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the response header in time");
    (s, got)
}

/// `limit_conn` counts a key's requests while their responses stream:
/// with `conn: 1` a second request is refused while the first is still
/// sending its body; the place comes back when the first ends, and when
/// a client aborts mid-body.
#[tokio::test]
async fn limit_conn_holds_a_place_while_the_response_streams() {
    // Each response: 4 MB, more than the sockets hold: a client that
    // does not read leaves it mid-body.
    let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    big.resize(big.len() + 4 * 1024 * 1024, b'x');
    let slow = Raw::always(vec![Step::Send(big)]).await;
    let admin = Admin::new();
    let ferry = Ferry::start(&format!(
        "{}access_log: \"{{dir}}/access.log\"\n{}upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ buffering: false }}\n    limit_conn: {{ zone: per_ip, conn: 1 }}\n",
        admin.yaml(""),
        zones("", "  per_ip: { key: \"$binary_remote_addr\" }\n"),
        group("app", &[(slow.addr, "")])
    ))
    .await;
    let (mut first, head) = start_request(ferry.addr, "/one").await;
    assert_eq!(status_of(&head), 200);
    // The first is mid-body: the second is refused at once.
    let (status, _) = get(&ferry, "/two", &[]).await;
    assert_eq!(status, 503, "{:?}", access_lines(&ferry, 1).await);
    assert_eq!(slow.hits(), 1, "the refused request reached no server");
    // The first ends: its place comes back.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, first.read_to_end(&mut rest)).await;
    drop(first);
    let passed = async {
        let start = Instant::now();
        loop {
            let (mut s, head) = start_request(ferry.addr, "/three").await;
            if status_of(&head) == 200 {
                return s;
            }
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
            assert!(start.elapsed() < WAIT, "the place never came back");
        }
    };
    // The third holds the place; its client leaves mid-body: the place
    // comes back again.
    let third = passed.await;
    drop(third);
    let start = Instant::now();
    loop {
        if get(&ferry, "/four", &[]).await.0 == 200 {
            break;
        }
        assert!(start.elapsed() < WAIT, "an aborted request kept its place");
    }
    let rejected = "ferry_limit_requests_total{result=\"rejected\",zone=\"per_ip\"}";
    assert!(admin.metric(rejected).await >= 1);
    let lines = access_lines(&ferry, 2).await;
    assert!(
        lines.iter().any(|l| l["uri"] == "/two"
            && l["status"] == 503
            && l["limit_conn_status"] == "REJECTED"),
        "{lines:?}"
    );
}

fn fleet_yaml(redis: &Redis, backend: SocketAddr, admin: &Admin) -> String {
    format!(
        "{}{}upstreams:\n{}routes:\n  - match: {{ path_prefix: /allow }}\n    upstream: app\n    limit_req: {{ zone: allow, burst: 4, nodelay: true }}\n  - match: {{ path_prefix: /deny }}\n    upstream: app\n    limit_req: {{ zone: deny, burst: 1000, nodelay: true }}\n",
        admin.yaml(""),
        zones(
            &format!(
                "  allow: {{ key: \"$http_x_tenant\", rate: 1r/m, store: \"{u}\", on_store_error: allow }}\n  deny: {{ key: \"$http_x_tenant\", rate: 1r/m, store: \"{u}/1\", on_store_error: deny }}\n",
                u = redis.url()
            ),
            ""
        ),
        group("app", &[(backend, "")])
    )
}

/// Two Ferries on one redis-server pass together what one rate allows:
/// 1r/m with burst 4 is five requests, whichever Ferry takes them.
#[tokio::test]
async fn two_ferries_on_one_redis_share_one_rate() {
    let redis = Redis::start().await;
    let backend = Backend::named("app").await;
    let (a1, a2) = (Admin::new(), Admin::new());
    let f1 = Ferry::start(&fleet_yaml(&redis, backend.addr, &a1)).await;
    let f2 = Ferry::start(&fleet_yaml(&redis, backend.addr, &a2)).await;
    let t = [("X-Tenant", "fleet")];
    let mut passed = 0;
    for i in 0..12 {
        let f = if i % 2 == 0 { &f1 } else { &f2 };
        if get(f, "/allow", &t).await.0 == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 5, "1 + burst 4 across the fleet");
    assert_eq!(backend.hits(), 5);
    let store_errors = "ferry_limit_store_errors_total{zone=\"allow\"}";
    assert_eq!(
        a1.metric(store_errors).await + a2.metric(store_errors).await,
        0
    );
}

/// Redis killed under load: `on_store_error: allow` serves, `deny`
/// refuses, neither waits past the store's timeout, every such request is
/// counted and the outage logged once; Redis back, the zones count again
/// by themselves.
#[tokio::test]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = Redis::start().await;
    let backend = Backend::named("app").await;
    let admin = Admin::new();
    let ferry = Ferry::start(&fleet_yaml(&redis, backend.addr, &admin)).await;
    let t = [("X-Tenant", "load")];
    assert_eq!(get(&ferry, "/deny", &t).await.0, 200);
    // Load on both routes while Redis goes away and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = ["/allow", "/deny"]
        .into_iter()
        .map(|p| {
            let (url, stop, sent) = (ferry.url(p), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let c = http();
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.get(&url).header("X-Tenant", "other").send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    redis.stop();
    // Down: allow serves, deny refuses, both quickly.
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(get(&ferry, "/allow", &[("X-Tenant", "new")]).await.0, 200);
        assert_eq!(get(&ferry, "/deny", &t).await.0, 503);
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "a request waited on the store: {:?}",
            start.elapsed()
        );
    }
    let errors_allow = "ferry_limit_store_errors_total{zone=\"allow\"}";
    let errors_deny = "ferry_limit_store_errors_total{zone=\"deny\"}";
    assert!(admin.metric(errors_allow).await >= 5);
    assert!(admin.metric(errors_deny).await >= 5);
    redis.restart().await;
    // Back: the deny zone serves again without a reload.
    let start = Instant::now();
    while get(&ferry, "/deny", &t).await.0 != 200 {
        assert!(start.elapsed() < WAIT, "Ferry never reconnected to Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    assert!(sent.load(Ordering::Relaxed) > 0);
    let log = ferry.log();
    for zone in ["allow", "deny"] {
        let outage = format!("limit_req zone \"{zone}\": the store");
        assert_eq!(log.matches(&outage).count(), 1, "{log}");
    }
    assert!(
        log.contains("limiting requests by zone \"deny\": its store cannot be reached"),
        "{log}"
    );
}

/// A reload that leaves a zone's key and rate as they were keeps its
/// counts (requests in flight all along); one that changes the rate
/// starts the zone afresh.
#[tokio::test]
async fn a_reload_keeps_a_zone_whose_key_and_rate_stay() {
    let backend = Backend::named("app").await;
    let body = |status: u16, rate: &str| {
        format!(
            "{}upstreams:\n{}routes:\n  - match: {{ path_prefix: /busy }}\n    upstream: app\n  - upstream: app\n    limit_req: {{ zone: one, burst: 1, nodelay: true, status: {status} }}\n",
            zones(&format!("  one: {{ key: \"$binary_remote_addr\", rate: {rate} }}\n"), ""),
            group("app", &[(backend.addr, "")])
        )
    };
    let ferry = Ferry::start(&body(503, "1r/m")).await;
    assert_eq!(get(&ferry, "/", &[]).await.0, 200);
    assert_eq!(get(&ferry, "/", &[]).await.0, 200);
    assert_eq!(get(&ferry, "/", &[]).await.0, 503);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let (url, stop, failures) = (ferry.url("/busy"), stop.clone(), failures.clone());
        tokio::spawn(async move {
            let c = http();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // Same key and rate, another status: the count is kept.
    ferry.rewrite(&body(429, "1r/m"));
    ferry.reload().await;
    assert_eq!(get(&ferry, "/", &[]).await.0, 429);
    // Another rate: a new zone.
    ferry.rewrite(&body(429, "2r/m"));
    ferry.reload().await;
    assert_eq!(get(&ferry, "/", &[]).await.0, 200);
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    assert_eq!(failures.load(Ordering::Relaxed), 0);
}

/// A hook asks a zone itself: the tenant from a header, the zone by plan;
/// the refusal it returns goes through `fail_to_proxy` (the hooked
/// program's JSON) and reaches no later hook and no server. A route's own
/// refusal does the same.
#[tokio::test]
async fn a_hook_asks_a_zone_and_its_refusal_is_ferrys_answer() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&format!(
        "{}upstreams:\n{}routes:\n  - match: {{ path_prefix: /route }}\n    upstream: app\n    limit_req: {{ zone: free }}\n  - upstream: app\n",
        zones(
            "  free: { key: \"$http_x_none\", rate: 1r/m }\n  pro: { key: \"$http_x_none\", rate: 1000r/s }\n",
            ""
        ),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let free = [("X-Limit-Tenant", "acme")];
    assert_eq!(get(&ferry, "/a", &free).await.0, 200);
    assert_eq!(get(&ferry, "/b", &free).await.0, 200);
    assert_eq!(
        get(&ferry, "/c", &free).await,
        (429, "{\"hooked_error\":429}".to_string())
    );
    let pro = [("X-Limit-Tenant", "acme"), ("X-Plan", "pro")];
    for _ in 0..3 {
        assert_eq!(get(&ferry, "/p", &pro).await.0, 200);
    }
    assert_eq!(backend.hits(), 5);
    let line = ferry.logged("/c").await;
    assert!(
        line.contains("status=429")
            && line.contains("hooks=early_request_filter,request_filter,fail_to_proxy "),
        "{line}"
    );
    // The route's own limit: keyed by `$http_x_none`, so a key is needed.
    let key = [("X-None", "k")];
    assert_eq!(get(&ferry, "/route/1", &key).await.0, 200);
    assert_eq!(get(&ferry, "/route/2", &key).await.0, 503);
    let line = ferry.logged("/route/2").await;
    assert!(
        line.contains("hooks=early_request_filter,request_filter,fail_to_proxy "),
        "{line}"
    );
}

/// `ferry -t` points at a limit's mistakes.
#[test]
fn check_points_at_limit_mistakes() {
    let yaml = "listen: [127.0.0.1:1]\nlimit_req_zones:\n  one: { key: \"$binary_remote_addr\", rate: 10r/s }\nroutes:\n  - return: { status: 200 }\n    limit_req: { zone: two }\n";
    let (code, out, err) = ferry_tests::ferry::check(yaml);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(":6:24: unknown zone `two`, expected one of one"),
        "{out}{err}"
    );
    assert!(
        err.contains(":6:5: a route that answers with return is not limited"),
        "{out}{err}"
    );
}

/// A place is held while a WebSocket tunnel is open and given back when
/// it closes; a response the upstream cut short gives its place back too.
#[tokio::test]
async fn limit_conn_places_come_back_after_a_tunnel_and_an_upstream_error() {
    const SWITCH: &str =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let backend = Raw::start(Arc::new(|i| match i {
        0 => vec![Step::text(SWITCH), Step::Echo],
        1 => vec![
            Step::text("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            Step::Close,
        ],
        _ => vec![Step::response(200, "ok")],
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "{}upstreams:\n{}routes:\n  - upstream: app\n    limit_conn: {{ zone: per_ip, conn: 1 }}\n",
        zones("", "  per_ip: { key: \"$binary_remote_addr\" }\n"),
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let status = |bytes: &[u8]| status_of(bytes);
    // The tunnel holds the place.
    let mut ws = TcpStream::connect(ferry.addr).await.expect("connect");
    let up = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    ws.write_all(up.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, ws.read(&mut byte))
            .await
            .expect("a response head in time")
            .expect("read");
        assert!(n > 0, "closed before the head");
        head.push(byte[0]);
    }
    assert_eq!(status(&head), 101);
    ws.write_all(b"open").await.expect("write");
    let mut back = [0u8; 4];
    tokio::time::timeout(WAIT, ws.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    let (bytes, _) = exchange(ferry.addr, &raw_get("/")).await;
    assert_eq!(status(&bytes), 503, "the open tunnel holds the key's place");
    // The tunnel closes: the next request gets the place (and a response
    // its upstream cuts short).
    drop(ws);
    let start = Instant::now();
    loop {
        let (bytes, _) = exchange(ferry.addr, &raw_get("/")).await;
        if status(&bytes) == 200 {
            break;
        }
        assert!(start.elapsed() < WAIT, "the closed tunnel kept its place");
    }
    // That response was cut short: its place comes back all the same.
    let start = Instant::now();
    loop {
        let (bytes, _) = exchange(ferry.addr, &raw_get("/")).await;
        if status(&bytes) == 200 && bytes.ends_with(b"ok") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "a cut-short response kept its place"
        );
    }
    assert_eq!(backend.hits(), 3);
}

/// Redis not there when Ferry starts: the zones decide by
/// `on_store_error` at once, and count in Redis once it is up, without a
/// reload.
#[tokio::test]
async fn redis_down_at_start_is_connected_when_it_comes() {
    let mut redis = Redis::start().await;
    redis.stop();
    let backend = Backend::named("app").await;
    let admin = Admin::new();
    let ferry = Ferry::start(&fleet_yaml(&redis, backend.addr, &admin)).await;
    let t = [("X-Tenant", "early")];
    assert_eq!(get(&ferry, "/deny", &t).await.0, 503);
    assert_eq!(get(&ferry, "/allow", &t).await.0, 200);
    redis.restart().await;
    let start = Instant::now();
    while get(&ferry, "/deny", &t).await.0 != 200 {
        assert!(start.elapsed() < WAIT, "Ferry never connected to Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted in Redis now: burst 4 at 1r/m on /allow.
    let passed = {
        let mut n = 0;
        for _ in 0..8 {
            if get(&ferry, "/allow", &[("X-Tenant", "counted")]).await.0 == 200 {
                n += 1;
            }
        }
        n
    };
    assert_eq!(passed, 5);
}
