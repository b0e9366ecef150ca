//! nginx's retry rules with real misbehaving backends: conditions,
//! non-idempotent methods, request-body replay, tries and time budget, the
//! final answer, passive health (max_fails), backup and down servers.

use ferry_tests::backend::{Backend, Reply};
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::group;
use std::sync::Arc;

use ferry_tests::client::http as client;

fn route(group: &str, proxy: &str) -> String {
    format!("routes:\n  - upstream: {group}\n    proxy: {{ {proxy} }}\n")
}

async fn get(ferry: &Ferry) -> (u16, String) {
    let r = client().get(ferry.url("/")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn status_backend(
    status: u16,
    body: &'static str,
) -> Arc<dyn Fn(usize, &ferry_tests::backend::Seen) -> Reply + Send + Sync> {
    Arc::new(move |_, _| Reply::status(status, body))
}

#[tokio::test]
async fn http_404_goes_to_the_next_server_and_does_not_mark() {
    let a = Backend::start(status_backend(404, "a-404")).await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, ""), (b.addr, "")]),
        route("app", "next_upstream: [http_404]")
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(get(&ferry).await, (200, "b".to_string()));
    }
    assert_eq!(
        a.hits(),
        2,
        "A is still chosen: 404 never counts against max_fails"
    );
}

#[tokio::test]
async fn tries_bound_and_the_last_response_is_passed() {
    let a = Backend::start(status_backend(404, "a")).await;
    let b = Backend::start(status_backend(404, "b")).await;
    let c = Backend::start(status_backend(404, "c")).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, ""), (b.addr, ""), (c.addr, "")]),
        route("app", "next_upstream: [http_404], next_upstream_tries: 2")
    ))
    .await;
    assert_eq!(
        get(&ferry).await,
        (404, "b".to_string()),
        "the last try's own response"
    );
    assert_eq!(
        (a.hits(), b.hits(), c.hits()),
        (1, 1, 0),
        "exactly two tries"
    );
}

#[tokio::test]
async fn max_fails_takes_a_flaky_server_out() {
    // A drops every third request it gets (closes without answering).
    let a = Raw::start(Arc::new(|i| {
        if i % 3 == 2 {
            vec![Step::Close]
        } else {
            vec![Step::response(200, "A")]
        }
    }))
    .await;
    let b = Backend::named("B").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, "max_fails: 3"), (b.addr, "max_fails: 3")]),
        route("app", "")
    ))
    .await;
    let (mut from_a, mut from_b) = (0, 0);
    for _ in 0..30 {
        let (status, body) = get(&ferry).await;
        assert_eq!(status, 200);
        match body.as_str() {
            "A" => from_a += 1,
            "B" => from_b += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    assert_eq!((from_a, from_b), (6, 24));
    assert_eq!(a.hits(), 9, "three drops, then out for fail_timeout");
}

#[tokio::test]
async fn error_then_timeout_gives_504() {
    let closes = Raw::always(vec![Step::Close]).await;
    let stalls = Raw::always(vec![Step::Stall]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group(
            "app",
            &[(closes.addr, "max_fails: 0"), (stalls.addr, "max_fails: 0")]
        ),
        route("app", "read_timeout: 300ms")
    ))
    .await;
    assert_eq!(get(&ferry).await.0, 504, "the last failure decides");
    assert_eq!((closes.hits(), stalls.hits()), (1, 1));
}

#[tokio::test]
async fn all_500_passes_the_last_upstream_response() {
    let a = Backend::start(status_backend(500, "body-a")).await;
    let b = Backend::start(status_backend(500, "body-b")).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, "max_fails: 0"), (b.addr, "max_fails: 0")]),
        route("app", "next_upstream: [error, timeout, http_500]")
    ))
    .await;
    assert_eq!(get(&ferry).await, (500, "body-b".to_string()));
}

#[tokio::test]
async fn a_500_then_an_error_gives_502() {
    let a = Backend::start(status_backend(500, "body-a")).await;
    let b = Raw::always(vec![Step::Close]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, "max_fails: 0"), (b.addr, "max_fails: 0")]),
        route("app", "next_upstream: [error, http_500]")
    ))
    .await;
    assert_eq!(get(&ferry).await.0, 502);
}

#[tokio::test]
async fn post_is_not_resent_after_sending() {
    let closes = Raw::always(vec![Step::Close]).await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(closes.addr, ""), (b.addr, "")]),
        route("app", "")
    ))
    .await;
    let r = client()
        .post(ferry.url("/"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        (closes.hits(), b.hits()),
        (1, 0),
        "one hit, no retry for POST"
    );
}

#[tokio::test]
async fn post_is_resent_before_sending_and_with_non_idempotent() {
    // A refused connection: nothing was sent, so even POST goes on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(dead, ""), (b.addr, "")]),
        route("app", "")
    ))
    .await;
    let r = client()
        .post(ferry.url("/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // non_idempotent: a 200 KB POST reaches the second server byte-exact
    // (from the request buffer's temp file) after the first closed unanswered.
    let closes = Raw::always(vec![Step::Close]).await;
    let echo = Backend::named("got it").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(closes.addr, ""), (echo.addr, "")]),
        route(
            "app",
            "next_upstream: [error, non_idempotent], temp_path: \"{tmp}\""
        )
    ))
    .await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = client()
        .post(ferry.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        closes.requests()[0].body.len(),
        200_000,
        "the first server got it all too"
    );
    let seen = echo.last();
    assert_eq!(seen.method, "POST");
    assert!(seen.body == body, "replayed body differs");
    assert_eq!(
        std::fs::read_dir(ferry.tmp())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no temp file left"
    );
}

#[tokio::test]
async fn streamed_body_is_not_resent() {
    let closes = Raw::always(vec![Step::Close]).await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(closes.addr, ""), (b.addr, "")]),
        route("app", "request_buffering: false")
    ))
    .await;
    let r = client()
        .put(ferry.url("/"))
        .body("streamed")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        502,
        "PUT is idempotent, but its body was streamed"
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn client_max_body_size_is_413() {
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(b.addr, "")]),
        route("app", "client_max_body_size: 1k")
    ))
    .await;
    let r = client()
        .post(ferry.url("/"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn time_budget_stops_retries() {
    let stalls = Raw::always(vec![Step::Stall]).await;
    let b = Backend::named("b").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(stalls.addr, ""), (b.addr, "")]),
        route("app", "read_timeout: 300ms, next_upstream_timeout: 100ms")
    ))
    .await;
    assert_eq!(get(&ferry).await.0, 504);
    assert_eq!(b.hits(), 0, "budget spent before the retry");
}

#[tokio::test]
async fn invalid_header_is_retried_only_when_listed() {
    let bad = Raw::always(vec![
        Step::text("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
        Step::Close,
    ])
    .await;
    let b = Backend::named("b").await;
    let servers = group(
        "app",
        &[(bad.addr, "max_fails: 0"), (b.addr, "max_fails: 0")],
    );
    let ferry = Ferry::start(&format!("upstreams:\n{servers}{}", route("app", ""))).await;
    assert_eq!(get(&ferry).await.0, 502);
    let ferry = Ferry::start(&format!(
        "upstreams:\n{servers}{}",
        route("app", "next_upstream: [error, invalid_header]")
    ))
    .await;
    assert_eq!(get(&ferry).await, (200, "b".to_string()));
}

#[tokio::test]
async fn backup_only_after_primaries_fail_and_down_is_never_used() {
    let a = Backend::named("a").await;
    let down = Backend::named("down").await;
    let backup = Backend::named("backup").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group(
            "app",
            &[
                (a.addr, ""),
                (down.addr, "down: true"),
                (backup.addr, "backup: true")
            ]
        ),
        route("app", "")
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(get(&ferry).await, (200, "a".to_string()));
    }
    assert_eq!((down.hits(), backup.hits()), (0, 0));

    let closes = Raw::always(vec![Step::Close]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(closes.addr, ""), (backup.addr, "backup: true")]),
        route("app", "")
    ))
    .await;
    assert_eq!(get(&ferry).await, (200, "backup".to_string()));
    assert_eq!(
        get(&ferry).await,
        (200, "backup".to_string()),
        "failed primary skipped"
    );
    assert_eq!(closes.hits(), 1);
}

#[tokio::test]
async fn every_server_failed_is_502_at_once() {
    let a = Raw::always(vec![Step::Close]).await;
    let b = Raw::always(vec![Step::Close]).await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, ""), (b.addr, "")]),
        route("app", "")
    ))
    .await;
    assert_eq!(get(&ferry).await.0, 502);
    assert_eq!((a.hits(), b.hits()), (1, 1));
    assert_eq!(get(&ferry).await.0, 502);
    assert_eq!(
        (a.hits(), b.hits()),
        (1, 1),
        "no backend contacted: no live upstreams"
    );
}

#[tokio::test]
async fn stale_keepalive_connection_does_not_use_up_a_try() {
    // Every second request on a connection is dropped: the second request
    // comes over the pooled connection, which then fails before any byte.
    let a = Raw::start(Arc::new(|i| {
        if i % 2 == 1 {
            vec![Step::Close]
        } else {
            vec![Step::response(200, "fresh")]
        }
    }))
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}{}",
        group("app", &[(a.addr, "")]),
        route("app", "")
    ))
    .await;
    assert_eq!(get(&ferry).await, (200, "fresh".to_string()));
    assert_eq!(
        get(&ferry).await,
        (200, "fresh".to_string()),
        "retried on a new connection"
    );
    assert_eq!(a.hits(), 3);
}
