//! Issue 6: the example programs in `proxy/examples/`, each run as a real
//! binary with its YAML against real backends.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::text;
use ferry_tests::ferry::Ferry;
use std::sync::Arc;

use ferry_tests::client::http as client;

fn group(name: &str, addrs: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr: \"{a}\" }}"))
        .collect();
    format!("  {name}:\n    servers: [ {} ]\n", list.join(", "))
}

#[tokio::test]
async fn canary_header_picks_the_canary_group() {
    let (stable, canary) = (
        Backend::named("stable").await,
        Backend::named("canary").await,
    );
    let ferry = Ferry::start_example(
        "canary",
        &format!(
            "canary: {{ header: X-Canary, value: always, group: canary }}\nupstreams:\n{}{}routes:\n  - upstream: stable\n",
            group("stable", &[stable.addr]),
            group("canary", &[canary.addr])
        ),
    )
    .await;
    let http = client();
    let get = |h: Option<&'static str>| {
        let mut r = http.get(ferry.url("/"));
        if let Some(v) = h {
            r = r.header("X-Canary", v);
        }
        async move { r.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get(None).await, "stable");
    assert_eq!(get(Some("always")).await, "canary");
    assert_eq!(get(Some("never")).await, "stable");
    assert_eq!(
        canary.last().headers["host"],
        "canary",
        "the group chosen is the Host sent"
    );
}

#[tokio::test]
async fn example_settings_errors_have_positions() {
    let dir = ferry_tests::ferry::fresh_dir();
    let conf = dir.join("c.yaml");
    std::fs::write(
        &conf,
        "listen: [127.0.0.1:1]\ncanary:\n  header: X\n  valu: y\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let (code, _, err) = ferry_tests::ferry::example_command("canary", &["-t", "-c", &conf]);
    assert_eq!(code, 1);
    assert!(
        err.contains("c.yaml:4:3: canary: unknown field `valu`"),
        "{err}"
    );
}

#[tokio::test]
async fn auth_gate_asks_first_and_copies_the_user() {
    let auth = Backend::start(Arc::new(|_, req: &Seen| {
        match req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer good") => Reply::ok("").header("X-User", "alice"),
            Some("Bearer banned") => Reply::status(403, "no"),
            _ => Reply::status(401, "who?").header("WWW-Authenticate", "Bearer realm=\"app\""),
        }
    }))
    .await;
    let app = Backend::start(Arc::new(|_, req: &Seen| {
        let user = req
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        Reply::ok(format!("hello {user}"))
    }))
    .await;
    let ferry = Ferry::start_example(
        "auth_gate",
        &format!(
            "auth: {{ group: auth, path: /check, copy_headers: [X-User] }}\nupstreams:\n{}{}routes:\n  - upstream: app\n",
            group("app", &[app.addr]),
            group("auth", &[auth.addr])
        ),
    )
    .await;
    let http = client();
    let ask = |token: Option<&'static str>| {
        let mut r = http.get(ferry.url("/private?x=1"));
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    let ok = ask(Some("good")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "hello alice");
    let seen = auth.last();
    assert_eq!(seen.uri, "/check");
    assert_eq!(seen.headers["x-original-uri"], "/private?x=1");
    assert_eq!(seen.headers["host"], "auth");
    let no = ask(None).await.unwrap();
    assert_eq!(no.status(), 401);
    assert_eq!(no.headers()["www-authenticate"], "Bearer realm=\"app\"");
    assert_eq!(ask(Some("banned")).await.unwrap().status(), 403);
    assert_eq!(app.hits(), 1, "only the authorized request reached the app");
}

#[tokio::test]
async fn body_rewrite_streams_through_the_event_pipe() {
    // "Hello" split across writes, in a body big enough to go through the
    // buffers in many pieces.
    let mut body = String::new();
    for i in 0..20_000 {
        body.push_str(&format!("line {i}: Hello, world. Hel"));
        body.push_str("lo again.\n");
    }
    let want = body.replace("Hello", "Howdy");
    let b = body.clone();
    let app = Backend::start(Arc::new(move |_, _: &Seen| {
        Reply::ok(b.clone()).header("Content-Type", "text/plain")
    }))
    .await;
    let bin = Backend::start(Arc::new(|_, _: &Seen| {
        Reply::ok("Hello binary").header("Content-Type", "application/octet-stream")
    }))
    .await;
    let ferry = Ferry::start_example(
        "body_rewrite",
        &format!(
            "rewrite: {{ from: Hello, to: Howdy }}\nupstreams:\n{}{}routes:\n  - upstream: app\n  - match: {{ path_prefix: /bin }}\n    upstream: bin\n",
            group("app", &[app.addr]),
            group("bin", &[bin.addr])
        ),
    )
    .await;
    let http = client();
    let r = http.get(ferry.url("/")).send().await.unwrap();
    assert!(
        r.headers().get("content-length").is_none(),
        "length changed: chunked"
    );
    let got = r.text().await.unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "rewritten body differs");
    assert_eq!(text(&http, ferry.url("/bin")).await, "Hello binary");

    // The body-length helper frames the changed body for each client:
    // chunked for HTTP/1.1, ended by the close for HTTP/1.0 (which cannot
    // read chunked).
    for (version, chunked) in [("1.1", true), ("1.0", false)] {
        let req = format!("GET / HTTP/{version}\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (bytes, closed) = ferry_tests::client::exchange(ferry.addr, &req).await;
        let (head, raw) = ferry_tests::client::split(&bytes);
        assert!(closed, "HTTP/{version}");
        assert!(!head.contains("content-length"), "HTTP/{version}: {head}");
        assert_eq!(head.contains("transfer-encoding: chunked"), chunked, "HTTP/{version}: {head}");
        if !chunked {
            assert!(raw == want.as_bytes(), "HTTP/1.0 gets the bytes as they are");
        }
    }
}

#[tokio::test]
async fn a_hook_forces_a_retry_on_an_upstream_header() {
    let draining = Backend::start(Arc::new(|_, _: &Seen| {
        Reply::ok("draining").header("X-Retry-Elsewhere", "1")
    }))
    .await;
    let fine = Backend::named("fine").await;
    let ferry = Ferry::start_example(
        "retry_on_header",
        &format!(
            "upstreams:\n{}routes:\n  - upstream: app\n",
            group("app", &[draining.addr, fine.addr])
        ),
    )
    .await;
    let http = client();
    for _ in 0..4 {
        assert_eq!(text(&http, ferry.url("/")).await, "fine");
    }
    assert!(
        draining.hits() >= 1,
        "the draining server was asked and passed over"
    );
}
