//! The example programs in `proxy/examples/`, each run as a real
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
            "rewrite: {{ from: Hello, to: Howdy }}\nupstreams:\n{}{}routes:\n  - upstream: app\n    proxy: {{ temp_path: \"{{tmp}}/temp\" }}\n  - match: {{ path_prefix: /bin }}\n    upstream: bin\n    proxy: {{ temp_path: \"{{tmp}}/temp\" }}\n",
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
        assert_eq!(
            head.contains("transfer-encoding: chunked"),
            chunked,
            "HTTP/{version}: {head}"
        );
        if !chunked {
            assert!(
                raw == want.as_bytes(),
                "HTTP/1.0 gets the bytes as they are"
            );
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

/// body_gate: a JSON body that sets a forbidden field gets 403 and reaches
/// no server; a clean one arrives byte for byte, also on a retry after
/// the first server closed without answering.
#[tokio::test]
async fn body_gate_refuses_a_forbidden_field_and_keeps_clean_bodies_whole() {
    use ferry_tests::raw::{Raw, Step};
    let closes = Raw::always(vec![Step::Close]).await;
    let echo = Backend::start(Arc::new(|_, seen: &Seen| Reply::ok(seen.body.clone()))).await;
    let ferry = Ferry::start_example(
        "body_gate",
        &format!(
            "body_gate: {{ forbidden: [admin] }}\nupstreams:\n  app:\n    servers: [ {{ addr: \"{}\" }}, {{ addr: \"{}\", backup: true }} ]\nroutes:\n  - upstream: app\n    proxy: {{ next_upstream: [error, timeout, non_idempotent], temp_path: \"{{tmp}}/temp\" }}\n",
            closes.addr, echo.addr
        ),
    )
    .await;
    let http = client();
    let clean = format!(
        "{{\"name\": \"{}\", \"tags\": [1, 2, 3]}}",
        "x".repeat(40_000)
    );
    let r = http
        .post(ferry.url("/users"))
        .header("Content-Type", "application/json")
        .body(clean.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap() == clean, "the body arrived whole");
    assert_eq!(closes.hits(), 1, "the first server was tried");
    assert_eq!(echo.last().body.len(), clean.len());

    let r = http
        .post(ferry.url("/users"))
        .header("Content-Type", "application/json")
        .body("{\"name\": \"x\", \"admin\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        (
            closes.hits(),
            echo.hits.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (1, 1)
    );

    let r = http
        .post(ferry.url("/users"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// dynamic_routing: `upstream_peer` sends a tenant to the server its
/// table names, a table the program changes at run time (behind its
/// token); an unknown tenant follows the route.
#[tokio::test]
async fn dynamic_routing_follows_a_table_changed_at_run_time() {
    let (shared, one, two) = (
        Backend::named("shared").await,
        Backend::named("one").await,
        Backend::named("two").await,
    );
    let ferry = Ferry::start_example(
        "dynamic_routing",
        &format!(
            "tenants: {{ token: t0ken }}\nupstreams:\n{}routes:\n  - upstream: shared\n",
            group("shared", &[shared.addr])
        ),
    )
    .await;
    let http = client();
    let as_acme = || async {
        let r = http
            .get(ferry.url("/"))
            .header("X-Tenant", "acme")
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    let set = |addr: std::net::SocketAddr, token: &'static str| {
        let req = http
            .put(ferry.url("/_tenants/acme"))
            .header("X-Server", addr.to_string())
            .bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(as_acme().await, "shared", "unknown tenant: the route");
    assert_eq!(set(one.addr, "wrong").await, 401);
    assert_eq!(as_acme().await, "shared");
    assert_eq!(set(one.addr, "t0ken").await, 204);
    assert_eq!(as_acme().await, "one");
    assert_eq!(one.last().headers["host"], "acme.tenants");
    assert_eq!(set(two.addr, "t0ken").await, 204);
    assert_eq!(as_acme().await, "two");
    let gone = http
        .delete(ferry.url("/_tenants/acme"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(as_acme().await, "shared");
}

/// `examples/production.yaml` is a configuration Ferry accepts as it is
/// written (`ferry -t` says `ok`), its files put under a test directory.
#[test]
fn the_production_example_checks_ok() {
    let dir = ferry_tests::ferry::fresh_dir();
    let cert = ferry_tests::tls::SelfSigned::new(&dir, &["example.com"]);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");
    let yaml = std::fs::read_to_string(root)
        .expect("examples/production.yaml")
        .replace(
            "/etc/ferry/tls/fullchain.pem",
            &cert.cert_path.display().to_string(),
        )
        .replace(
            "/etc/ferry/tls/privkey.pem",
            &cert.key_path.display().to_string(),
        )
        .replace("/run/ferry", &dir.display().to_string())
        .replace("/var/log/ferry", &dir.display().to_string())
        .replace("/var/cache/ferry", &dir.display().to_string());
    let (code, out, err) = ferry_tests::ferry::check(&yaml);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}
