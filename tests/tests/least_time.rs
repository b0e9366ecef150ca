//! `balance: least_time` with real backends whose delays are fixed: the
//! header time steers requests to the fast server, `last_byte` sees a slow
//! body, `inflight` counts a request held on a server, and the picks come
//! in the order nginx 1.31.5 made them for a fast and a slow server.
//!
//! The counts asserted follow from nginx's algorithm, not from luck: a
//! server's estimate is its average time rounded up to the next 20 ms, times
//! (1 + its requests in progress); while neither server has a time both are
//! at 20 and round robin alternates (first the first server). The delays
//! below put the servers clusters apart (a 0-1 ms server at 20, a 100 ms one
//! at 120), so a server loses a request only if a loopback answer took
//! tens of milliseconds; each assertion allows one such miss.

use ferry_tests::admin::Admin;
use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::{http as client, text};
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use ferry_tests::until;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The group `app` with `balance: least_time`, its block, these servers.
fn conf(least_time: &str, servers: &[SocketAddr]) -> String {
    let list: String = servers
        .iter()
        .map(|a| format!("      - addr: \"{a}\"\n"))
        .collect();
    format!(
        "upstreams:\n  app:\n    balance: least_time\n    least_time: {least_time}\n    servers:\n{list}routes:\n  - upstream: app\n"
    )
}

/// A backend named `name` whose every header comes after `delay`.
async fn slow_header(name: &'static str, delay: Duration) -> Backend {
    Backend::start(Arc::new(move |_, _: &Seen| {
        let mut r = Reply::ok(name);
        r.delay = Some(delay);
        r
    }))
    .await
}

/// A backend named `name` that sends its header at once and its body after
/// `delay`.
async fn slow_body(name: &'static str, delay: Duration) -> Raw {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", name.len());
    Raw::always(vec![Step::text(&head), Step::Wait(delay), Step::text(name)]).await
}

/// `n` requests one after the other: how many each server answered.
async fn tally(ferry: &Ferry, path: &str, n: usize) -> HashMap<String, usize> {
    let c = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(text(&c, ferry.url(path)).await).or_insert(0) += 1;
    }
    seen
}

fn count(t: &HashMap<String, usize>, name: &str) -> usize {
    t.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn header_time_sends_most_requests_to_the_fast_server() {
    let slow = slow_header("slow", Duration::from_millis(250)).await;
    let fast = Backend::named("fast").await;
    let admin = Admin::new();
    let yaml = conf("{ measure: header }", &[slow.addr, fast.addr]);
    let ferry = Ferry::start(&format!("{}{yaml}", admin.yaml(""))).await;
    // The first request goes to `slow` (a tie, the first server); from then
    // on its 250 ms (cluster 260) loses to `fast` (cluster 20).
    let t = tally(&ferry, "/", 20).await;
    assert!(count(&t, "fast") >= 18, "{t:?}");
    assert!((1..=2).contains(&count(&t, "slow")), "{t:?}");
    // GET /upstreams shows the averages the balancer used.
    let s = admin.server("app", slow.addr).await;
    let f = admin.server("app", fast.addr).await;
    assert!(s["header_time"].as_u64().unwrap() >= 250, "{s}");
    assert!(f["header_time"].as_u64().unwrap() < 250, "{f}");
    assert!(s["response_time"].as_u64().unwrap() >= 250, "{s}");
}

/// What nginx 1.31.5 did (bench/results/2026-12-06-nginx131-least_time.txt,
/// built from nginx/nginx at commit 3f6f7824d4e2): `least_time header`, and
/// again with `inflight`, over a server answering at once listed first and
/// one answering after 300 ms; 20 requests one after the other went to the
/// fast one, the slow one, then the fast one 18 times. The second is a tie
/// (the fast one at 20, the slow one not measured yet) that round robin
/// gives to the slow one; then 320 against 20.
#[tokio::test]
async fn header_picks_in_the_order_nginx_131_made_them() {
    for block in ["{ measure: header }", "{ measure: header, inflight: true }"] {
        let fast = Backend::named("fast").await;
        let slow = slow_header("slow", Duration::from_millis(300)).await;
        let ferry = Ferry::start(&conf(block, &[fast.addr, slow.addr])).await;
        let c = client();
        let mut picks = Vec::new();
        for _ in 0..20 {
            picks.push(text(&c, ferry.url("/")).await);
        }
        let mut nginx = vec!["fast", "slow"];
        nginx.extend(["fast"; 18]);
        assert_eq!(picks, nginx, "{block}");
    }
}

/// `a`: header at once, body after 200 ms; `b`: header after 80 ms, body
/// at once. Six requests; returns how many `a` answered.
async fn six_requests_to_a(measure: &str) -> usize {
    let a = slow_body("a", Duration::from_millis(200)).await;
    let b = slow_header("b", Duration::from_millis(80)).await;
    let yaml = conf(&format!("{{ measure: {measure} }}"), &[a.addr, b.addr]);
    let ferry = Ferry::start(&yaml).await;
    let t = tally(&ferry, "/", 6).await;
    assert_eq!(count(&t, "a") + count(&t, "b"), 6, "{t:?}");
    count(&t, "a")
}

#[tokio::test]
async fn header_mode_ignores_a_slow_body() {
    // `a` first (a tie), `b` second (still a tie: `a` at 20, `b` unmeasured),
    // then `a`'s 0-1 ms header (20) beats `b`'s 80 ms (100): a = 5 of 6.
    let a = six_requests_to_a("header").await;
    assert!(a >= 4, "a answered {a} of 6");
}

#[tokio::test]
async fn last_byte_measures_the_body() {
    // `a` first (a tie); its 200 ms to the last byte (220) then loses to
    // `b`'s 80 ms (100): a = 1 of 6.
    let a = six_requests_to_a("last_byte").await;
    assert!(a <= 2, "a answered {a} of 6");
}

/// `a` answers at once except `/hold` (1.2 s); `b` answers after 100 ms.
/// After one request each, `/hold` goes to `a` (20 against 120) and is
/// held there; 400 ms later five requests are sent. Returns how many went
/// to `a`.
async fn five_while_a_holds_one(inflight: bool) -> usize {
    let a = Backend::start(Arc::new(|_, r: &Seen| {
        let mut reply = Reply::ok("a");
        if r.uri == "/hold" {
            reply.delay = Some(Duration::from_millis(1200));
        }
        reply
    }))
    .await;
    let b = slow_header("b", Duration::from_millis(100)).await;
    let yaml = conf(
        &format!("{{ measure: header, inflight: {inflight} }}"),
        &[a.addr, b.addr],
    );
    let ferry = Ferry::start(&yaml).await;
    let warm = tally(&ferry, "/", 2).await;
    assert_eq!((count(&warm, "a"), count(&warm, "b")), (1, 1), "{warm:?}");
    let held = {
        let (c, url) = (client(), ferry.url("/hold"));
        tokio::spawn(async move { text(&c, url).await })
    };
    until("/hold reaches a", || {
        a.seen.lock().unwrap().iter().any(|s| s.uri == "/hold")
    })
    .await;
    // The age of the held request is what `inflight` measures: let it
    // grow past `b`'s 120 before the next pick looks at it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t = tally(&ferry, "/", 5).await;
    assert_eq!(held.await.unwrap(), "a", "the held request was answered");
    count(&t, "a")
}

#[tokio::test]
async fn inflight_counts_a_held_request() {
    // `a`'s time is the held request's age (>= 400 ms, cluster 420) times
    // 2 (one request in progress): 840 against `b`'s 120.
    let a = five_while_a_holds_one(true).await;
    assert!(a <= 1, "a took {a} of 5 while it held a 400 ms old request");
}

#[tokio::test]
async fn without_inflight_a_held_request_counts_only_as_a_connection() {
    // `a`'s 0-1 ms header (20) times 2 is 40, still less than `b`'s 120.
    let a = five_while_a_holds_one(false).await;
    assert!(a >= 4, "a took {a} of 5");
}

#[tokio::test]
async fn averages_survive_a_reload() {
    let slow = slow_header("slow", Duration::from_millis(250)).await;
    let fast = Backend::named("fast").await;
    let admin = Admin::new();
    let before = conf("{ measure: header }", &[slow.addr, fast.addr]);
    let ferry = Ferry::start(&format!("{}{before}", admin.yaml(""))).await;
    let warm = tally(&ferry, "/", 2).await;
    assert_eq!(
        (count(&warm, "slow"), count(&warm, "fast")),
        (1, 1),
        "{warm:?}"
    );
    let measured = admin.server("app", slow.addr).await["header_time"].clone();
    // The same servers in the other order: fresh state would start with a
    // tie again (fast, then slow); kept state sends nothing to slow.
    let after = conf("{ measure: header }", &[fast.addr, slow.addr]);
    ferry.rewrite(&format!("{}{after}", admin.yaml("")));
    ferry.reload().await;
    let now = admin.upstreams().await;
    assert_eq!(
        now["app"]["servers"][0]["addr"],
        fast.addr.to_string(),
        "{now}"
    );
    assert_eq!(now["app"]["servers"][1]["header_time"], measured, "{now}");
    let t = tally(&ferry, "/", 5).await;
    assert_eq!(count(&t, "slow"), 0, "{t:?}");
}
