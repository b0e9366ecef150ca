//! Each of Pingora's hooks runs where docs/hooks.md says, through
//! `tests/src/bin/hooked.rs` (a program that overrides all of them):
//! before routing, on the request body (retries included), on each
//! connection, on failed tries, on the upstream's body, on every error
//! Ferry answers, in the error log, and in `logging` with the error. Also:
//! run-time peers, and a fallback to another group once the route's
//! group has no try left.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::{exchange, status_of};
use ferry_tests::ferry::{free_port, Ferry};
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::group;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn echo_body() -> ferry_tests::backend::Handler {
    Arc::new(|_, seen: &Seen| Reply::ok(seen.body.clone()))
}

fn dead() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn routes(groups: &str, proxy: &str) -> String {
    format!(
        "upstreams:\n{groups}routes:\n  - match: {{ path_prefix: /moved }}\n    return: {{ status: 200, body: moved }}\n  - upstream: app\n    proxy: {{ {proxy} }}\n"
    )
}

/// A request with extra header lines and a body, read whole.
async fn ask(
    ferry: &Ferry,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    let (bytes, _) = exchange(ferry.addr, &req).await;
    let (head, body) = ferry_tests::client::split(&bytes);
    (
        status_of(&bytes),
        head.to_ascii_lowercase(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `early_request_filter` runs before routing: the path it sets is the
/// one routed.
#[tokio::test]
async fn early_request_filter_changes_what_is_routed() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(backend.addr, "")]), "")).await;
    let (status, _, body) = ask(&ferry, "GET", "/", "X-Rewrite: /moved\r\n", "").await;
    assert_eq!((status, body.as_str()), (200, "moved"));
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
    let line = ferry.logged("/moved").await;
    assert!(
        line.contains("hooks=early_request_filter,request_filter"),
        "{line}"
    );
}

/// `request_body_filter` sees each piece before it is buffered: the
/// backend gets the filtered body, and so does the next server after a
/// failed try (the replay is the filtered body). A body it refuses gets
/// its status and reaches no server. Streamed bodies go through it too.
#[tokio::test]
async fn request_body_filter_shapes_the_body_every_try_sends() {
    let backend = Backend::start(echo_body()).await;
    let servers = group("app", &[(dead(), ""), (backend.addr, "")]);
    let ferry = Ferry::start_hooked(&routes(&servers, "")).await;
    let (status, head, body) = ask(&ferry, "PUT", "/", "", "my secret is safe").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        body, "my ****** is safe",
        "the second server got the filtered body"
    );
    assert!(
        head.contains("request_body_filter,request_body_filter(end),upstream_peer"),
        "{head}"
    );
    assert_eq!(backend.hits.load(Ordering::SeqCst), 1);

    let (status, _, body) = ask(&ferry, "PUT", "/", "", "a forbidden word").await;
    assert_eq!((status, body.as_str()), (403, "{\"hooked_error\":403}"));
    assert_eq!(
        backend.hits.load(Ordering::SeqCst),
        1,
        "a refused body reaches no server"
    );

    // A hook that reads the body itself and keeps it: an error, never an
    // empty body upstream.
    let (status, _, body) = ask(&ferry, "PUT", "/", "X-Eat-Body: 1\r\n", "lost?").await;
    assert_eq!((status, body.as_str()), (500, "{\"hooked_error\":500}"));
    assert_eq!(
        backend.hits.load(Ordering::SeqCst),
        1,
        "nothing went upstream"
    );

    let streamed = Ferry::start_hooked(&routes(
        &group("app", &[(backend.addr, "")]),
        "request_buffering: false",
    ))
    .await;
    let (status, _, body) = ask(&streamed, "PUT", "/", "", "no secret here").await;
    assert_eq!((status, body.as_str()), (200, "no ****** here"));
}

/// `connected_to_upstream` runs on every try once it has a connection:
/// new, then taken from the keepalive pool, with the socket and timing.
#[tokio::test]
async fn connected_to_upstream_sees_new_and_reused_connections() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(backend.addr, "")]), "")).await;
    let http = ferry_tests::client::http();
    let hooks = |r: &reqwest::Response| {
        r.headers()
            .get("x-hooks")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let first = http.get(ferry.url("/")).send().await.unwrap();
    assert!(
        hooks(&first).contains("connected_to_upstream(new,fd=true,timed=true)"),
        "{}",
        hooks(&first)
    );
    let _ = first.bytes().await;
    let second = http.get(ferry.url("/")).send().await.unwrap();
    assert!(
        hooks(&second).contains("connected_to_upstream(reused,fd=true,timed=true)"),
        "{}",
        hooks(&second)
    );
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
}

/// `fail_to_connect` runs for a refused connection with the rules'
/// verdict in its retry flag, and its own word decides: `no` leaves the
/// request with 502 where the rules would have gone to the next server.
#[tokio::test]
async fn fail_to_connect_decides_whether_a_refused_try_is_retried() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(
        // The dead server first on every request: the live one is its backup.
        &group(
            "app",
            &[(dead(), "max_fails: 0"), (backend.addr, "backup: true")],
        ),
        "",
    ))
    .await;
    let (status, head, _) = ask(&ferry, "GET", "/retried", "", "").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("fail_to_connect(retry=true),upstream_peer"),
        "{head}"
    );

    let (status, _, body) = ask(&ferry, "GET", "/kept", "X-Retry-Connect: no\r\n", "").await;
    assert_eq!((status, body.as_str()), (502, "{\"hooked_error\":502}"));
    let line = ferry.logged("/kept").await;
    assert!(line.contains("fail_to_connect(retry=true)"), "{line}");
    assert_eq!(
        line.matches("upstream_peer").count(),
        1,
        "no second try: {line}"
    );
}

/// `error_while_proxy` runs for a try that failed after connecting (the
/// server closed without answering), and the retry goes on.
#[tokio::test]
async fn error_while_proxy_sees_a_failure_after_connecting() {
    let closes = Raw::always(vec![Step::Close]).await;
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(
        &group("app", &[(closes.addr, ""), (backend.addr, "")]),
        "",
    ))
    .await;
    let (status, head, _) = ask(&ferry, "GET", "/", "", "").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("error_while_proxy(retry=true,reused=false)"),
        "{head}"
    );
}

/// `upstream_response_body_filter` sees the upstream's body before the
/// pipe: what it changes is what the client gets; it counts the bytes.
#[tokio::test]
async fn upstream_response_body_filter_sees_the_body_before_the_pipe() {
    let backend = Backend::named("quiet words").await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(backend.addr, "")]), "")).await;
    let (status, _, body) = ask(&ferry, "GET", "/loud", "X-Upper: 1\r\n", "").await;
    assert_eq!((status, body.as_str()), (200, "QUIET WORDS"));
    let line = ferry.logged("/loud").await;
    assert!(line.contains("upstream_bytes=11"), "{line}");
}

/// `fail_to_proxy` is the answer for every error Ferry makes: no route
/// (404), a body over `client_max_body_size` (413), every try failed
/// (502), a request refused before routing (400).
#[tokio::test]
async fn fail_to_proxy_answers_every_error_ferry_makes() {
    let ferry = Ferry::start_hooked(&format!(
        "upstreams:\n{}routes:\n  - match: {{ path_prefix: /app }}\n    upstream: app\n    proxy: {{ client_max_body_size: 4 }}\n",
        group("app", &[(dead(), "")])
    ))
    .await;
    for (method, path, body, status) in [
        ("GET", "/nowhere", "", 404),
        ("PUT", "/app", "too large", 413),
        ("GET", "/app", "", 502),
    ] {
        let (got, _, text) = ask(&ferry, method, path, "", body).await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(
            text,
            format!("{{\"hooked_error\":{status}}}"),
            "{method} {path}"
        );
    }
    let (bytes, _) = exchange(ferry.addr, "GET /x HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&bytes), 400, "no Host");
    assert!(String::from_utf8_lossy(&bytes).ends_with("{\"hooked_error\":400}"));
    let line = ferry.logged("/app").await;
    assert!(line.contains("fail_to_proxy"), "{line}");
}

/// A request refused before routing (a header that does not parse: 400;
/// `CONNECT`: 405; a request line over the buffers: 414; a header line
/// over them: 431) is finalized as any other: an access-log line and a
/// `logging` call with its status.
#[tokio::test]
async fn requests_refused_before_routing_are_logged() {
    let ferry = Ferry::start_hooked(
        "access_log: \"{dir}/access.log\"\nroutes:\n  - return: { status: 200 }\n",
    )
    .await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(70_000));
    let long_line = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    for (request, status) in [
        ("GET / HTTP/1.1\r\nHost t\r\n\r\n".to_string(), 400),
        (
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n".to_string(),
            405,
        ),
        (long_uri, 414),
        (long_line, 431),
    ] {
        let (bytes, _) = exchange(ferry.addr, &request).await;
        assert_eq!(status_of(&bytes), status);
    }
    let log = ferry_tests::until_or(|| {
        let log = ferry.log();
        (log.matches("logging: uri=").count() >= 4).then_some(log)
    })
    .await
    .expect("four logging calls");
    for (uri, status) in [("-", 400), ("x:443", 405), ("-", 414), ("-", 431)] {
        let needle = format!("logging: uri={uri} status={status} ");
        assert!(log.contains(&needle), "{needle}\n{log}");
    }
    let access = ferry_tests::until_or(|| {
        let text = std::fs::read_to_string(ferry.dir.join("access.log")).ok()?;
        (text.lines().count() >= 4).then_some(text)
    })
    .await
    .expect("four access-log lines");
    let mut statuses: Vec<u64> = access
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["status"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, [400, 405, 414, 431], "{access}");
}

/// An answer a hook writes on Pingora's session itself (Pingora's
/// `write_response_header` idiom) is recorded with its status, for the
/// access log, the metrics and `logging`.
#[tokio::test]
async fn an_answer_written_through_pingora_is_recorded_with_its_status() {
    let admin = ferry_tests::admin::Admin::new();
    let ferry = Ferry::start_hooked(&format!(
        "{}access_log: \"{{dir}}/access.log\"\nroutes:\n  - return: {{ status: 200 }}\n",
        admin.yaml("")
    ))
    .await;
    let (status, _, _) = ask(&ferry, "GET", "/pingora-429", "", "").await;
    assert_eq!(status, 429);
    assert!(ferry.logged("/pingora-429").await.contains("status=429"));
    let access = ferry_tests::until_or(|| {
        let text = std::fs::read_to_string(ferry.dir.join("access.log")).ok()?;
        text.contains("429").then_some(text)
    })
    .await
    .expect("an access-log line");
    let v: serde_json::Value =
        serde_json::from_str(access.lines().next().unwrap_or("")).expect("JSON");
    assert_eq!(v["status"], 429, "{access}");
    assert_eq!(
        admin
            .metric("ferry_requests_total{route=\"/\",status=\"429\"}")
            .await,
        1,
        "{}",
        admin.get("/metrics").await.1
    );
}

/// Errors are logged with the program's `request_summary`, unless
/// `suppress_error_log` says not to; `logging` gets the error either way,
/// and none for a request that went well.
#[tokio::test]
async fn error_log_and_logging_see_the_error() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&format!(
        "upstreams:\n{}{}routes:\n  - match: {{ path_prefix: /down }}\n    upstream: down\n  - upstream: app\n",
        group("app", &[(backend.addr, "")]),
        group("down", &[(dead(), "")])
    ))
    .await;
    let (status, _, _) = ask(&ferry, "GET", "/down/loud", "", "").await;
    assert_eq!(status, 502);
    let (status, _, _) = ask(&ferry, "GET", "/down/quiet", "X-Quiet: 1\r\n", "").await;
    assert_eq!(status, 502);
    let (status, _, _) = ask(&ferry, "GET", "/fine", "", "").await;
    assert_eq!(status, 200);
    let loud = ferry.logged("/down/loud").await;
    assert!(
        loud.contains("error=") && loud.contains("tries failed"),
        "{loud}"
    );
    assert!(ferry.logged("/down/quiet").await.contains("tries failed"));
    assert!(ferry.logged("/fine").await.ends_with("error=-"));
    let log = ferry.log();
    assert!(log.contains("hooked summary: /down/loud"), "{log}");
    assert!(!log.contains("hooked summary: /down/quiet"), "{log}");
}

/// `upstream_peer` may return a server that is not in the YAML: it is
/// served through the same loop (its `Host`, the try recorded, the
/// keepalive pool).
#[tokio::test]
async fn a_run_time_peer_is_served_like_a_configured_one() {
    let configured = Backend::named("configured").await;
    let runtime = Backend::start(Arc::new(|_, seen: &Seen| {
        let host = seen
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Reply::ok(format!("runtime, Host: {host}"))
    }))
    .await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(configured.addr, "")]), "")).await;
    let http = ferry_tests::client::http();
    for _ in 0..2 {
        let r = http
            .get(ferry.url("/tenant"))
            .header("X-Peer", runtime.addr.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "runtime, Host: runtime.test");
    }
    assert_eq!(
        runtime.conns.load(Ordering::SeqCst),
        1,
        "pooled between requests"
    );
    assert_eq!(configured.hits.load(Ordering::SeqCst), 0);
    let line = ferry.logged("/tenant").await;
    assert!(
        line.contains(&format!("tries=[{}]", runtime.addr)),
        "{line}"
    );

    // A run-time peer that refuses: one try (no retry on the same address), 502.
    let (status, _, _) = ask(
        &ferry,
        "GET",
        "/gone",
        &format!("X-Peer: {}\r\n", dead()),
        "",
    )
    .await;
    assert_eq!(status, 502);
}

/// The tries are the request's: when the route's one-server group fails,
/// the program's fallback group gets the next try.
#[tokio::test]
async fn a_fallback_group_gets_the_try_a_one_server_group_has_not() {
    let fallback = Backend::named("fallback").await;
    let ferry = Ferry::start_hooked(&routes(
        &format!(
            "{}{}",
            group("app", &[(dead(), "")]),
            group("spare", &[(fallback.addr, "")])
        ),
        "",
    ))
    .await;
    let (status, _, body) = ask(&ferry, "GET", "/", "X-Fallback: spare\r\n", "").await;
    assert_eq!((status, body.as_str()), (200, "fallback"));
    let (status, _, _) = ask(&ferry, "GET", "/alone", "", "").await;
    assert_eq!(status, 502, "without the fallback, one server is one try");
}

#[tokio::test]
async fn the_cache_hooks_choose_the_key_and_what_is_stored() {
    let b = Backend::start(Arc::new(|i, r: &Seen| {
        let reply = Reply::ok(format!("n{i}"));
        if r.uri == "/draft" {
            reply.header("X-Draft", "1")
        } else {
            reply
        }
    }))
    .await;
    let ferry = Ferry::start_hooked(&format!(
        "caches:\n  c: {{ path: \"{{tmp}}/cache\" }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ add_headers: {{ X-Cache: \"$upstream_cache_status\" }} }}\n    cache: {{ zone: c, valid: {{ 200: 10m }} }}\n",
        group("app", &[(b.addr, "")])
    ))
    .await;
    let get = |path: &'static str, tenant: &'static str| {
        let url = ferry.url(path);
        async move {
            let r = ferry_tests::client::http()
                .get(url)
                .header("X-Tenant", tenant)
                .send()
                .await
                .unwrap();
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let hooks = r
                .headers()
                .get("x-hooks")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (cache, r.text().await.unwrap(), hooks)
        }
    };
    let (cache, body, hooks) = get("/t", "a").await;
    assert_eq!((cache.as_str(), body.as_str()), ("MISS", "n0"));
    assert!(
        hooks.contains(
            "request_filter,request_body_filter,request_body_filter(end),cache_key_callback,"
        ),
        "{hooks}"
    );
    assert!(
        hooks.contains("response_cache_filter,cache_miss,response_filter"),
        "{hooks}"
    );
    let (cache, body, hooks) = get("/t", "a").await;
    assert_eq!((cache.as_str(), body.as_str()), ("HIT", "n0"));
    assert!(
        !hooks.contains("upstream_peer"),
        "a HIT asks no upstream: {hooks}"
    );
    assert!(
        hooks.ends_with("cache_key_callback,cache_hit_filter,response_filter"),
        "{hooks}"
    );
    let (cache, body, _) = get("/t", "b").await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("MISS", "n1"),
        "another tenant, another key"
    );
    get("/draft", "a").await;
    let (cache, _, _) = get("/draft", "a").await;
    assert_eq!(cache, "MISS", "the program refused to store it");
    assert_eq!(b.hits(), 4);
}

/// An `upstream_response_body_filter` that changes the body's length
/// (here: writes it twice) leaves a `Content-Length` response cacheable:
/// the upstream's body is checked whole as the upstream sent it, and the
/// entry holds what the filter made.
#[tokio::test]
async fn a_body_filter_that_changes_the_length_still_stores_the_response() {
    let b = Backend::start(Arc::new(|i, _: &Seen| Reply::ok(format!("n{i}")))).await;
    let ferry = Ferry::start_hooked(&format!(
        "caches:\n  c: {{ path: \"{{tmp}}/cache\" }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ add_headers: {{ X-Cache: \"$upstream_cache_status\" }} }}\n    cache: {{ zone: c, valid: {{ 200: 10m }} }}\n",
        group("app", &[(b.addr, "")])
    ))
    .await;
    for want in ["MISS", "HIT"] {
        let r = ferry_tests::client::http()
            .get(ferry.url("/twice"))
            .header("X-Double", "1")
            .send()
            .await
            .unwrap();
        let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
        assert_eq!(
            (cache.as_str(), r.text().await.unwrap().as_str()),
            (want, "n0n0")
        );
    }
    assert_eq!(b.hits(), 1);
}

/// Each body hook ends with a call whose `end_of_stream` is true, as in
/// Pingora: `request_body_filter` once with `None` for a request without a
/// body; `upstream_response_body_filter` for a `Content-Length` response
/// and for a chunked one alike.
#[tokio::test]
async fn body_hooks_always_get_their_end() {
    let length = Backend::start(Arc::new(|_, _: &Seen| Reply::ok("length body"))).await;
    let chunked = ferry_tests::raw::Raw::always(vec![ferry_tests::raw::Step::text(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n",
    )])
    .await;
    for (addr, path) in [(length.addr, "/length"), (chunked.addr, "/chunked")] {
        let ferry = Ferry::start_hooked(&routes(&group("app", &[(addr, "")]), "")).await;
        let (status, _, _) = ask(&ferry, "GET", path, "", "").await;
        assert_eq!(status, 200);
        let line = ferry.logged(path).await;
        assert!(line.contains("body_end=true"), "{path}: {line}");
        assert!(line.contains("response_end=true"), "{path}: {line}");
    }
}

/// Read one answer whose body is the `app` backend's name off a
/// keepalive connection; the whole answer as text.
async fn answer_app(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("app") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(ferry_tests::WAIT, conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `persist_connection_context` keeps what a program wants from one
/// request for the next on the same keepalive connection, and
/// `on_connection_reuse` gets it: the hooked program counts a
/// connection's requests (1, 2, 3), and a new connection starts at 1.
#[tokio::test]
async fn a_connection_context_passes_from_one_request_to_the_next() {
    use tokio::io::AsyncWriteExt;
    let b = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(b.addr, "")]), "")).await;
    let counts = |head: &str| -> String {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-conn-requests: ")
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let mut conn = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    for want in ["1", "2", "3"] {
        conn.write_all(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(counts(&answer_app(&mut conn).await), want);
    }
    let (bytes, _) = exchange(
        ferry.addr,
        "GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        counts(&String::from_utf8_lossy(&bytes)),
        "1",
        "a new connection"
    );
}

/// A keepalive timeout a program sets on Pingora's session ends the
/// connection's wait for its next request: closed once it passed, not
/// before, and a request that comes in time is served on the same
/// connection (nginx's `keepalive_timeout`).
#[tokio::test]
async fn a_keepalive_timeout_a_program_sets_closes_the_idle_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::named("app").await;
    let ferry = Ferry::start_hooked(&routes(&group("app", &[(b.addr, "")]), "")).await;
    let mut conn = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    let mut answered = Instant::now();
    for _ in 0..2 {
        conn.write_all(b"GET /k HTTP/1.1\r\nHost: t\r\nX-Keepalive: 1\r\n\r\n")
            .await
            .unwrap();
        answer_app(&mut conn).await;
        answered = Instant::now();
    }
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(ferry_tests::WAIT, conn.read(&mut buf))
        .await
        .expect("the idle connection closed in time")
        .unwrap_or(0);
    let waited = answered.elapsed();
    assert_eq!(n, 0, "only the close comes");
    assert!(waited >= Duration::from_secs(1), "closed early: {waited:?}");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
}

/// The cache hooks the YAML cannot express: `request_cache_filter` keeps a
/// request out of the cache, `cache_hit_filter` invalidates a found entry,
/// `cache_miss` runs when a response is admitted, `should_serve_stale`
/// refuses a stale answer `use_stale` would give.
#[tokio::test]
async fn the_cache_hooks_pass_invalidate_and_refuse_stale() {
    let b = Backend::start(Arc::new(|i, _: &Seen| Reply::ok(format!("n{i}")))).await;
    let ferry = Ferry::start_hooked(&format!(
        "caches:\n  c: {{ path: \"{{tmp}}/cache\" }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ add_headers: {{ X-Cache: \"$upstream_cache_status\" }}, next_upstream: [error, timeout] }}\n    cache: {{ zone: c, valid: {{ 200: 10m }}, use_stale: [error, timeout] }}\n",
        // No idle connections: the backend dropped below is gone at once.
        group("app", &[(b.addr, "")]).replace("    servers:", "    keepalive: 0\n    servers:")
    ))
    .await;
    let get = |path: &'static str, extra: &'static [&'static str]| {
        let url = ferry.url(path);
        async move {
            let mut r = ferry_tests::client::http().get(url);
            for h in extra {
                r = r.header(*h, "1");
            }
            let r = r.send().await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let (cache, hooks, status) = (h("x-cache"), h("x-hooks"), r.status().as_u16());
            (status, cache, hooks, r.text().await.unwrap())
        }
    };
    let (_, cache, _, body) = get("/p", &["x-no-cache"]).await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("", "n0"),
        "no cache for it"
    );
    let (_, cache, hooks, body) = get("/p", &[]).await;
    assert_eq!((cache.as_str(), body.as_str()), ("MISS", "n1"));
    assert!(hooks.contains("cache_miss"), "{hooks}");
    let (_, cache, hooks, _) = get("/p", &[]).await;
    assert_eq!(cache, "HIT");
    assert!(hooks.contains("cache_hit_filter"), "{hooks}");
    let (_, cache, _, body) = get("/p", &["x-invalidate"]).await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("EXPIRED", "n2"),
        "invalidated"
    );
    drop(b);
    let (status, cache, _, body) = get("/p", &["x-invalidate"]).await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "STALE", "n2"),
        "use_stale answers"
    );
    let (status, _, _, _) = get("/p", &["x-invalidate", "x-no-stale"]).await;
    assert_eq!(status, 502, "the program refused the stale answer");
}

/// A program's own background task runs beside the proxy, and its own
/// metric is on Ferry's `/metrics`.
#[tokio::test]
async fn a_programs_background_task_and_metric_run_with_ferry() {
    let admin = ferry_tests::admin::Admin::new();
    let ferry = Ferry::start_hooked(&format!(
        "{}routes:\n  - return: {{ status: 200 }}\n",
        admin.yaml("")
    ))
    .await;
    ferry_tests::until("the background task to start", || {
        ferry.log().contains("hooked background: started")
    })
    .await;
    for _ in 0..3 {
        let (status, _, _) = ask(&ferry, "GET", "/x", "", "").await;
        assert_eq!(status, 200);
    }
    let start = std::time::Instant::now();
    while admin.metric("hooked_logged_total").await < 3 {
        assert!(
            start.elapsed() < ferry_tests::WAIT,
            "{}",
            admin.get("/metrics").await.1
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
