//! The upstream API on the admin listener: `GET /upstreams` reports every
//! group's servers as they stand; `PATCH /upstreams/GROUP/servers/ADDR`
//! takes one out (down) or drains it until the next reload, behind
//! `admin.token`.

use ferry_tests::admin::Admin;
use ferry_tests::backend::Backend;
use ferry_tests::ferry::Ferry;
use ferry_tests::yaml::group;
use std::sync::atomic::Ordering;

fn conf(admin: &Admin, token: &str, servers: &str) -> String {
    format!(
        "{}upstreams:\n{servers}routes:\n  - upstream: app\n",
        admin.yaml(&format!("token: {token}"))
    )
}

/// Each server's fields, with the numbers of the requests it served.
#[tokio::test]
async fn get_reports_each_server_and_its_numbers() {
    let admin = Admin::new();
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let servers = group("app", &[(a.addr, "weight: 3"), (b.addr, "backup: true")]);
    let ferry = Ferry::start(&conf(&admin, "secret", &servers)).await;
    let http = ferry_tests::client::http();
    for _ in 0..3 {
        assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "a");
    }
    // A request ends (its server's `active` back to 0) just after its last
    // byte reached the client: asked at once, the last may still be ending.
    let deadline = std::time::Instant::now() + ferry_tests::WAIT;
    let all = loop {
        let all = admin.upstreams().await;
        if all["app"]["servers"][0]["active"] == 0 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(all["app"]["balance"], "round_robin");
    let servers = all["app"]["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    let first = &servers[0];
    assert_eq!(first["addr"], a.addr.to_string());
    assert_eq!(first["name"], a.addr.to_string());
    assert_eq!(first["state"], "up");
    assert_eq!(first["backup"], false);
    assert_eq!(first["weight"], 3);
    assert_eq!(first["active"], 0);
    assert_eq!(first["requests"], 3);
    assert_eq!(first["fails"], 0);
    assert_eq!(servers[1]["backup"], true);
    assert_eq!(servers[1]["requests"], 0);
}

/// Without the token a PATCH gets 401 and changes nothing; with it, `down`
/// sends every request to the other server, `drain` shows as draining, and
/// a reload puts both back.
#[tokio::test]
async fn patch_takes_a_server_out_until_the_next_reload() {
    let admin = Admin::new();
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let servers = group("app", &[(a.addr, ""), (b.addr, "")]);
    let ferry = Ferry::start(&conf(&admin, "secret", &servers)).await;
    let path = format!("/upstreams/app/servers/{}", a.addr);

    let (status, _) = admin.patch(&path, r#"{"down": true}"#, None).await;
    assert_eq!(status, 401);
    let (status, _) = admin.patch(&path, r#"{"down": true}"#, Some("wrong")).await;
    assert_eq!(status, 401);
    assert_eq!(admin.server("app", a.addr).await["state"], "up");

    let (status, body) = admin
        .patch(&path, r#"{"down": true}"#, Some("secret"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.server("app", a.addr).await["state"], "down");
    let http = ferry_tests::client::http();
    let a_before = a.hits.load(Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "b");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), a_before);

    let (status, _) = admin
        .patch(&path, r#"{"down": false, "drain": true}"#, Some("secret"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.server("app", a.addr).await["state"], "draining");
    for _ in 0..2 {
        assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "b");
    }

    ferry.reload().await;
    assert_eq!(admin.server("app", a.addr).await["state"], "up");
    let mut bodies = Vec::new();
    for _ in 0..2 {
        bodies.push(ferry_tests::client::text(&http, ferry.url("/")).await);
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "b"], "both serve again after the reload");
}

/// Bad JSON, nothing to change, an unknown group or address: a 4xx with a
/// one-line reason, and no change.
#[tokio::test]
async fn bad_changes_get_a_reason() {
    let admin = Admin::new();
    let a = Backend::named("a").await;
    let ferry = Ferry::start(&conf(&admin, "\"\"", &group("app", &[(a.addr, "")]))).await;
    let at = format!("/upstreams/app/servers/{}", a.addr);
    let cases = [
        (at.as_str(), "{down: yes", 400, "bad JSON"),
        (at.as_str(), r#"{"weight": 2}"#, 400, "bad JSON"),
        (at.as_str(), "{}", 400, "nothing to change"),
        (
            "/upstreams/nope/servers/127.0.0.1:1",
            r#"{"down": true}"#,
            404,
            "no upstream group `nope`",
        ),
        (
            "/upstreams/app/servers/127.0.0.1:1",
            r#"{"down": true}"#,
            404,
            "has no server 127.0.0.1:1",
        ),
        (
            "/upstreams/app/servers/app",
            r#"{"down": true}"#,
            400,
            "not an ip:port",
        ),
    ];
    for (path, body, status, reason) in cases {
        let (got, text) = admin.patch(path, body, None).await;
        assert_eq!(got, status, "{path} {body}: {text}");
        assert!(text.contains(reason), "{path} {body}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }
    assert_eq!(admin.server("app", a.addr).await["state"], "up");
    let (status, _) = admin.get("/upstreams/app").await;
    assert_eq!(status, 404);
    drop(ferry);
}
