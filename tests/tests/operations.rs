//! Operating Ferry behind a load balancer: /healthz and draining,
//! graceful upgrade under load, Prometheus metrics, the JSON access log, the
//! real client address behind trusted proxies, bad input.

use ferry_tests::backend::Backend;
use ferry_tests::client::text;
use ferry_tests::client::{exchange, status_of};
use ferry_tests::ferry::{free_port, Ferry};
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::single;
use ferry_tests::WAIT;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::client::http as client;

async fn status(url: &str) -> Option<u16> {
    client()
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn healthz_turns_503_on_sigterm_while_requests_are_still_served() {
    let app = Backend::named("app").await;
    let admin = free_port();
    let mut ferry = Ferry::start(&format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\", drain_delay: 1s }}\nupstreams:\n  app:\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        app.addr
    ))
    .await;
    let healthz = format!("http://127.0.0.1:{admin}/healthz");
    assert_eq!(status(&healthz).await, Some(200));
    ferry.signal(libc::SIGTERM);
    let start = Instant::now();
    while status(&healthz).await != Some(503) {
        assert!(start.elapsed() < WAIT, "healthz never turned 503");
    }
    // During the drain delay the proxy still answers.
    assert_eq!(status(&ferry.url("/")).await, Some(200));
    assert!(
        ferry.wait_exit().await.is_some(),
        "did not stop after the drain; log:\n{}",
        ferry.log()
    );
}

/// A graceful stop ends as soon as nothing is in flight (nginx's graceful
/// quit), not after the whole grace period (300 s here): an idle Ferry
/// exits at once; a busy one once its last response went out, whole; and
/// SIGINT during the stop exits at once.
#[tokio::test]
async fn sigterm_exits_once_nothing_is_in_flight() {
    let admin = "admin: { listen: \"127.0.0.1:0\", drain_delay: 0s }\n";
    let mut idle = Ferry::start_graceful(
        &format!("{admin}routes:\n  - return: {{ status: 200 }}\n"),
        300,
    )
    .await;
    idle.signal(libc::SIGTERM);
    assert!(
        idle.wait_exit().await.is_some(),
        "an idle Ferry waited out its grace period"
    );

    let slow = Backend::start(Arc::new(|_, _| {
        let mut r = ferry_tests::backend::Reply::ok("slow and whole");
        r.delay = Some(Duration::from_millis(1500));
        r
    }))
    .await;
    let mut busy =
        Ferry::start_graceful(&format!("{admin}{}", single(&[slow.addr], "")), 300).await;
    let url = busy.url("/");
    let answer = tokio::spawn(async move { text(&client(), url).await });
    ferry_tests::until("the request to reach the backend", || slow.hits() == 1).await;
    busy.signal(libc::SIGTERM);
    assert!(
        busy.wait_exit().await.is_some(),
        "a busy Ferry waited out its grace period"
    );
    assert_eq!(answer.await.expect("the client"), "slow and whole");

    let stuck = Backend::start(Arc::new(|_, _| {
        let mut r = ferry_tests::backend::Reply::ok("never");
        r.delay = Some(Duration::from_secs(120));
        r
    }))
    .await;
    let mut forced =
        Ferry::start_graceful(&format!("{admin}{}", single(&[stuck.addr], "")), 300).await;
    let url = forced.url("/");
    let _hanging = tokio::spawn(async move { client().get(url).send().await.map(|_| ()) });
    ferry_tests::until("the request to reach the backend", || stuck.hits() == 1).await;
    forced.signal(libc::SIGTERM);
    ferry_tests::until("the graceful stop to begin", || {
        forced.log().contains("Graceful shutdown")
    })
    .await;
    forced.signal(libc::SIGINT);
    assert!(
        forced.wait_exit().await.is_some(),
        "SIGINT during the stop was ignored"
    );
}

#[tokio::test]
async fn graceful_upgrade_under_steady_load_drops_nothing() {
    let app = Backend::named("app").await;
    let ferry = Ferry::start_graceful(&single(&[app.addr], ""), 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), ferry.url("/"));
        load.push(tokio::spawn(async move {
            // A new connection per request: every one goes through accept.
            let c = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed during the upgrade: {:?}", other.map(|r| r.status()));
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    let before = ok.load(Ordering::SeqCst);
    let mut next = ferry.spawn_successor();
    // The successor waits on the upgrade socket; then the old one hands over.
    let sock = ferry.dir.join("upgrade.sock");
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < WAIT,
            "successor never opened the upgrade socket"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ferry.signal(libc::SIGQUIT);
    let mut old = ferry;
    assert!(
        old.wait_exit().await.is_some(),
        "the old process did not exit; log:\n{}",
        old.log()
    );
    let after_old = ok.load(Ordering::SeqCst);
    let start = Instant::now();
    while ok.load(Ordering::SeqCst) < after_old + 200 {
        assert!(start.elapsed() < WAIT, "the successor does not serve");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert!(after_old > before, "load ran during the upgrade");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the upgrade"
    );
    next.signal(libc::SIGINT);
    let _ = next.wait_exit().await;
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_tries_and_spills() {
    let closes = Raw::always(vec![Step::Close]).await;
    let good = Backend::named("good").await;
    let admin = free_port();
    let ferry = Ferry::start(&format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}\nupstreams:\n  app:\n    servers: [ {{ addr: \"{}\", max_fails: 0 }}, {{ addr: \"{}\", max_fails: 0 }} ]\nroutes:\n  - match: {{ path_prefix: /app }}\n    upstream: app\n  - match: {{ path_prefix: /hi }}\n    return: {{ status: 200, body: hi }}\n",
        closes.addr, good.addr
    ))
    .await;
    let http = client();
    for path in ["/app/1", "/app/2", "/app/3", "/app/4", "/hi", "/nowhere"] {
        text(&http, ferry.url(path)).await;
    }
    // A request is counted when it ends (after its response went out):
    // scrape until all six are in.
    let start = Instant::now();
    let text = loop {
        let text = text(&http, format!("http://127.0.0.1:{admin}/metrics")).await;
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("ferry_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if counted >= 6.0 {
            break text;
        }
        assert!(
            start.elapsed() < WAIT,
            "requests never all counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        metric(&text, "ferry_requests_total{route=\"/app\",status=\"200\"}"),
        4.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "ferry_requests_total{route=\"/hi\",status=\"200\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "ferry_requests_total{route=\"none\",status=\"404\"}"),
        1.0
    );
    let (c, g) = (closes.addr, good.addr);
    // Round robin: requests 1 and 3 try the closing server first.
    assert_eq!(
        metric(
            &text,
            &format!(
                "ferry_upstream_tries_total{{group=\"app\",outcome=\"error\",server=\"{c}\"}}"
            )
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "ferry_upstream_tries_total{{group=\"app\",outcome=\"success\",server=\"{g}\"}}"
            )
        ),
        4.0
    );
    assert_eq!(metric(&text, "ferry_retries_total{group=\"app\"}"), 2.0);
    assert_eq!(
        metric(
            &text,
            "ferry_request_duration_seconds_count{route=\"/app\"}"
        ),
        4.0
    );
    assert!(text.contains("ferry_requests_in_flight"));
    assert!(text.contains("ferry_spilled_bytes_total"));
}

/// Every series whose labels are known before anything happens is on
/// `/metrics` at 0 from the start: a rate over an absent series is nothing,
/// not zero.
#[tokio::test]
async fn known_series_are_exported_at_zero() {
    let admin = ferry_tests::admin::Admin::new();
    let ferry = Ferry::start(&format!(
        "{}caches: {{ c: {{ path: \"{{tmp}}/cache\" }} }}\nroutes:\n  - return: {{ status: 200 }}\n",
        admin.yaml("")
    ))
    .await;
    let (_, text) = admin.get("/metrics").await;
    for series in [
        "ferry_config_reloads_total{result=\"ok\"} 0",
        "ferry_config_reloads_total{result=\"error\"} 0",
        "ferry_dns_lookups_total{result=\"error\"} 0",
        "ferry_dns_lookups_total{result=\"empty\"} 0",
        "ferry_bad_requests_total{reason=\"malformed\"} 0",
        "ferry_bad_requests_total{reason=\"header_too_large\"} 0",
        "ferry_cache_requests_total{cache=\"c\",status=\"HIT\"} 0",
        "ferry_cache_requests_total{cache=\"c\",status=\"STALE\"} 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series}\n{text}");
    }
    drop(ferry);
}

/// Every request answered before a stop is in the access log when Ferry
/// has exited: the writer writes what the requests queued before the
/// process ends, not at a turn that never comes.
#[tokio::test]
async fn a_stop_loses_no_access_log_line() {
    for (signal, how) in [(libc::SIGTERM, "graceful"), (libc::SIGINT, "fast")] {
        let mut ferry = Ferry::start_graceful(
            "access_log: \"{dir}/access.log\"\nroutes:\n  - return: { status: 200 }\n",
            300,
        )
        .await;
        for _ in 0..20 {
            assert_eq!(status(&ferry.url("/")).await, Some(200));
        }
        ferry.signal(signal);
        assert!(ferry.wait_exit().await.is_some(), "a {how} stop");
        let text = std::fs::read_to_string(ferry.dir.join("access.log")).unwrap_or_default();
        assert_eq!(text.lines().count(), 20, "a {how} stop:\n{text}");
    }
}

#[tokio::test]
async fn access_log_lists_every_try() {
    let closes = Raw::always(vec![Step::Close]).await;
    let good = Backend::named("good").await;
    let ferry = Ferry::start(&format!(
        "access_log: \"{{dir}}/access.log\"\nupstreams:\n  app:\n    servers: [ {{ addr: \"{}\" }}, {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        closes.addr, good.addr
    ))
    .await;
    let r = client()
        .get(ferry.url("/x?y=1"))
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let path = ferry.dir.join("access.log");
    let start = Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_string();
        }
        assert!(start.elapsed() < WAIT, "no access log line");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(
        v["upstream_addr"],
        format!("{}, {}", closes.addr, good.addr)
    );
    assert_eq!(v["upstream_status"], "502, 200");
    assert_eq!(v["status"], 200);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/x?y=1");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["request_id"], "req-42");
    assert_eq!(v["bytes"], 4);
    assert_eq!(v["spilled"], false);
    assert!(v["request_time"]
        .as_str()
        .is_some_and(|t| t.parse::<f64>().is_ok()));
    assert_eq!(
        v["upstream_response_time"]
            .as_str()
            .unwrap()
            .split(", ")
            .count(),
        2
    );
    assert_eq!(
        good.last().headers["x-request-id"],
        "req-42",
        "passed upstream"
    );
}

#[tokio::test]
async fn real_client_address_only_from_trusted_proxies() {
    let seen = Backend::echo_header("x-real-ip").await;
    let conf = |trusted: &str| {
        format!(
            "real_ip: {{ trusted: [{trusted}] }}\nupstreams:\n  app:\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n    proxy: {{ set_headers: {{ X-Real-IP: \"$remote_addr\" }} }}\n",
            seen.addr
        )
    };
    let trusted = Ferry::start(&conf("127.0.0.1/32, 10.0.0.0/8")).await;
    let untrusted = Ferry::start(&conf("10.0.0.0/8")).await;
    let ask = |f: &Ferry, xff: &str| {
        let r = client()
            .get(f.url("/"))
            .header("X-Forwarded-For", xff.to_string())
            .send();
        async move { r.await.unwrap().text().await.unwrap() }
    };
    assert_eq!(ask(&trusted, "6.6.6.6, 1.2.3.4, 10.9.9.9").await, "1.2.3.4");
    assert_eq!(
        ask(&untrusted, "6.6.6.6, 1.2.3.4").await,
        "127.0.0.1",
        "an untrusted peer's header is ignored"
    );
    assert_eq!(seen.last().headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn bad_requests_get_4xx_the_connection_closed_and_are_counted() {
    let app = Backend::named("app").await;
    let admin = free_port();
    let ferry = Ferry::start(&format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}\n{}",
        single(&[app.addr], "")
    ))
    .await;
    let cases = [
        ("malformed", "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n".to_string()),
        ("smuggling: CL and TE", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("two differing CL", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd".to_string()),
        ("oversized headers", format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "x".repeat(2 << 20))),
    ];
    for (what, req) in cases {
        let (bytes, closed) = exchange(ferry.addr, &req).await;
        let st = status_of(&bytes);
        assert!((400..500).contains(&st), "{what}: got {st}");
        assert!(closed, "{what}: connection not closed");
    }
    assert_eq!(app.hits(), 0, "nothing bad reached the upstream");
    // Each is counted by reason before its answer goes out. Pingora itself
    // refuses the bad header line and the differing Content-Lengths;
    // Ferry refuses Content-Length with Transfer-Encoding.
    let text = text(&client(), format!("http://127.0.0.1:{admin}/metrics")).await;
    for (reason, n) in [
        ("malformed", 2.0),
        ("smuggling", 1.0),
        ("header_too_large", 1.0),
    ] {
        let name = format!("ferry_bad_requests_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &name), n, "{name}:\n{text}");
    }
}

/// Read one response with a Content-Length body off a kept-alive connection.
async fn read_response(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let (head, body) = ferry_tests::client::split(&got);
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok());
        if len.is_some_and(|n| body.len() >= n) {
            return got;
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_header_trickled_past_client_header_timeout_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Backend::named("app").await;
    let admin = free_port();
    let ferry = Ferry::start(&format!(
        "client_header_timeout: 1s\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n{}",
        single(&[app.addr], "")
    ))
    .await;

    // A slowloris client: a header line every 100 ms, each read well
    // within Pingora's per-read timeout, never finishing the header.
    let mut s = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let cut_off = loop {
        assert!(
            start.elapsed() < WAIT,
            "the trickling client was never cut off"
        );
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
            Ok(Ok(n)) => panic!("an answer to half a header: {:?}", &buf[..n]),
            Err(_) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break start.elapsed();
                }
            }
        }
    };
    assert!(
        cut_off >= Duration::from_millis(900),
        "cut off early: {cut_off:?}"
    );
    assert_eq!(app.hits(), 0);

    // A kept-alive connection idle longer than the header timeout between
    // requests is still served: the clock runs from a request's first byte.
    let mut s = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(status_of(&read_response(&mut s).await), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(req).await.unwrap();
    assert_eq!(status_of(&read_response(&mut s).await), 200);

    let text = text(&client(), format!("http://127.0.0.1:{admin}/metrics")).await;
    assert_eq!(
        metric(&text, "ferry_bad_requests_total{reason=\"header_timeout\"}"),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_from_trusted_senders_only() {
    let seen = Backend::echo_header("x-real-ip").await;
    let body = |trusted: &str| {
        format!(
            "real_ip: {{ trusted: [{trusted}] }}\n{}",
            single(&[seen.addr], "set_headers: { X-Real-IP: \"$remote_addr\" }")
        )
    };
    let trusted = Ferry::start_listen("proxy_protocol: true", &body("127.0.0.1")).await;
    let untrusted = Ferry::start_listen("proxy_protocol: true", &body("10.0.0.0/8")).await;
    let get = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend([
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0xC3, 0x50, 0, 80,
    ]);
    let ask = |ferry: &Ferry, header: &[u8]| {
        let mut req = header.to_vec();
        req.extend_from_slice(get);
        let addr = ferry.addr;
        async move {
            let (bytes, _) = ferry_tests::client::exchange_bytes(addr, &req).await;
            let (_, body) = ferry_tests::client::split(&bytes);
            String::from_utf8_lossy(&body).into_owned()
        }
    };
    assert_eq!(ask(&trusted, &v1).await, "203.0.113.7");
    assert_eq!(ask(&trusted, &v2).await, "198.51.100.9");
    assert_eq!(
        ask(&untrusted, &v1).await,
        "127.0.0.1",
        "an untrusted sender's header is ignored"
    );
    let (bytes, closed) = exchange(trusted.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(
        closed && bytes.is_empty(),
        "no PROXY header: the connection is closed"
    );
}

/// The listening socket's accept queue, as `ss` reports it (its Send-Q).
fn backlog_of(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().nth(2).and_then(|q| q.parse().ok())
}

#[tokio::test]
async fn listen_backlog_is_the_listening_sockets_queue() {
    let app = Backend::echo_header("host").await;
    let set = Ferry::start_listen("backlog: 7", &single(&[app.addr], "")).await;
    assert_eq!(backlog_of(set.addr.port()), Some(7));
    let unset = Ferry::start(&single(&[app.addr], "")).await;
    let queue = backlog_of(unset.addr.port()).expect("a listening socket");
    assert!(
        queue > 7,
        "the default (65535, capped by somaxconn): {queue}"
    );
}
