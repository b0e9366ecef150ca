//! HTTP/2 to the servers (`http_version: "2"`): prior knowledge in the
//! clear and ALPN `h2` over TLS, streams sharing connections, trailers,
//! nginx's retry rules for reset streams and GOAWAY (a stream the server
//! never processed resent even for a POST), and the cache filled over it.

use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::h2_client::H2Client;
use ferry_tests::h2_server::{H2Act, H2Reply, H2Server};
use ferry_tests::tls::SelfSigned;
use ferry_tests::yaml::{group, single};
use h2::Reason;
use std::net::SocketAddr;
use std::sync::Arc;

const H2: &str = "http_version: \"2\"";

/// A request over HTTP/1.1 (closed after it): status and body.
async fn get(ferry: &Ferry, method: &str, path: &str) -> (u16, String) {
    get_at(ferry.addr, method, path).await
}

async fn get_at(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let http = ferry_tests::client::http();
    let url = format!("http://{addr}{path}");
    let req = match method {
        "POST" => http.post(url).body("hi"),
        _ => http.get(url),
    };
    let r = req.send().await.expect("a response");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn two(first: SocketAddr, second: SocketAddr, proxy: &str) -> String {
    format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ {proxy} }}\n",
        group("app", &[(first, ""), (second, "")])
    )
}

#[tokio::test]
async fn requests_share_the_servers_connections() {
    let server = H2Server::named("h2").await;
    let ferry = Ferry::start(&single(&[server.addr], H2)).await;
    for _ in 0..5 {
        assert_eq!(get(&ferry, "GET", "/seq").await, (200, "h2".to_string()));
    }
    assert_eq!(
        (server.conns(), server.streams()),
        (1, 5),
        "one connection, kept"
    );
    assert_eq!(server.last().method, "GET");
    assert_eq!(get(&ferry, "POST", "/post").await.0, 200);
    let seen = server.last();
    assert_eq!((seen.method.as_str(), &seen.body[..]), ("POST", &b"hi"[..]));

    // Twenty at once: streams of a few connections, not a connection each.
    let addr = ferry.addr;
    let all = (0..20).map(|_| async move { get_at(addr, "GET", "/many").await });
    for (status, body) in futures_join(all).await {
        assert_eq!((status, body.as_str()), (200, "h2"));
    }
    assert_eq!(server.streams(), 26);
    assert!(
        server.conns() < 10,
        "{} connections for 20 requests",
        server.conns()
    );
}

async fn futures_join<F: std::future::Future>(all: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
    F: Send + 'static,
{
    let tasks: Vec<_> = all.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test]
async fn trailers_reach_an_http2_client() {
    let server = H2Server::start(Arc::new(|_, _| {
        H2Act::Respond(H2Reply::ok("body").trailer("x-sum", "7"))
    }))
    .await;
    let ferry = Ferry::start_listen("h2c: true", &single(&[server.addr], H2)).await;
    let client = H2Client::h2c(ferry.addr).await;
    let r = client.get("/t").await.expect("a response");
    assert_eq!((r.status, &r.body[..]), (200, &b"body"[..]));
    assert_eq!(r.trailer("x-sum").as_deref(), Some("7"));
    // An HTTP/1.1 client gets the body whole (and no trailers).
    assert_eq!(get(&ferry, "GET", "/t").await, (200, "body".to_string()));
}

/// A stream the server refused was never processed: a POST goes to the
/// next server. A stream reset with another code before any response byte
/// is `invalid_header`, as nginx classes it: not retried unless listed.
#[tokio::test]
async fn reset_streams_follow_nginxs_rules() {
    let refusing = H2Server::start(Arc::new(|_, p| match p.uri.path() {
        "/refused" => H2Act::Reset(Reason::REFUSED_STREAM),
        _ => H2Act::Reset(Reason::INTERNAL_ERROR),
    }))
    .await;
    let good = H2Server::named("good").await;
    let ferry = Ferry::start(&two(refusing.addr, good.addr, H2)).await;
    for _ in 0..2 {
        // Round robin starts either server: each POST ends on the good one.
        let got = get(&ferry, "POST", "/refused").await;
        assert_eq!(got, (200, "good".to_string()), "{}", ferry.log());
    }
    assert!(refusing.streams() >= 1, "the refusing server had its try");

    let ferry = Ferry::start(&two(refusing.addr, refusing.addr, H2)).await;
    assert_eq!(get(&ferry, "GET", "/broken").await.0, 502);
    let listed = format!("{H2}, next_upstream: [error, timeout, invalid_header]");
    let ferry = Ferry::start(&two(refusing.addr, good.addr, &listed)).await;
    for _ in 0..2 {
        assert_eq!(
            get(&ferry, "GET", "/broken").await,
            (200, "good".to_string())
        );
    }
}

/// A GOAWAY that leaves a stream unprocessed: resent, even a POST.
#[tokio::test]
async fn a_stream_left_past_goaway_is_resent() {
    let going = H2Server::goaway_after(0).await;
    let good = H2Server::named("good").await;
    let ferry = Ferry::start(&two(going.addr, good.addr, H2)).await;
    for _ in 0..2 {
        assert_eq!(get(&ferry, "POST", "/g").await, (200, "good".to_string()));
    }
}

#[tokio::test]
async fn tls_servers_are_asked_for_h2_by_alpn() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["h2.internal"]);
    let server = H2Server::start_tls(
        &cert,
        Arc::new(|_, p| H2Act::Respond(H2Reply::ok(format!("tls {:?}", p.version)))),
    )
    .await;
    let yaml = format!(
        "upstreams:\n  app:\n    tls: {{ sni: h2.internal, ca_file: \"{}\" }}\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n    proxy: {{ {H2} }}\n",
        cert.cert_path.display(),
        server.addr
    );
    let ferry = Ferry::start(&yaml).await;
    assert_eq!(
        get(&ferry, "GET", "/tls").await,
        (200, "tls HTTP/2.0".to_string())
    );
}

#[tokio::test]
async fn the_cache_fills_over_http2() {
    let server = H2Server::start(Arc::new(|_, _| {
        H2Act::Respond(H2Reply::ok("cached").header("cache-control", "max-age=60"))
    }))
    .await;
    let dir = fresh_dir();
    let yaml = format!(
        "caches:\n  c: {{ path: \"{}\" }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ {H2}, add_headers: {{ X-Cache: \"$upstream_cache_status\" }} }}\n    cache: {{ zone: c }}\n",
        dir.display(),
        group("app", &[(server.addr, "")])
    );
    let ferry = Ferry::start(&yaml).await;
    let http = ferry_tests::client::http();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = http.get(ferry.url("/c")).send().await.unwrap();
        statuses.push(r.headers()["x-cache"].to_str().unwrap().to_string());
        assert_eq!(r.text().await.unwrap(), "cached");
        // The entry is written before a HIT can be served.
        ferry_tests::until_or(|| (files(&dir) == 1).then_some(()))
            .await
            .expect("the entry stored");
    }
    assert_eq!(statuses, ["MISS", "HIT"]);
    assert_eq!(server.streams(), 1);
}

/// Entry files under a cache directory (its `tmp` aside).
fn files(dir: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.file_type().map(|t| t.is_dir()) {
                Ok(true) if e.file_name() != "tmp" => walk(&e.path()),
                Ok(false) => 1,
                _ => 0,
            })
            .sum()
    }
    walk(dir)
}

/// A subrequest from a route that speaks HTTP/2 goes over HTTP/2 too (the
/// route's rules), through the same loop.
#[tokio::test]
async fn a_subrequest_goes_over_http2_on_an_http2_route() {
    let app = H2Server::named("app").await;
    let auth = H2Server::named("from the subrequest").await;
    let yaml = format!(
        "upstreams:\n{}{}routes:\n  - upstream: app\n    proxy: {{ {H2} }}\n",
        group("app", &[(app.addr, "")]),
        group("auth", &[(auth.addr, "")])
    );
    let ferry = Ferry::start_hooked(&yaml).await;
    let r = ferry_tests::client::http()
        .get(ferry.url("/s"))
        .header("X-Sub", "auth")
        .send()
        .await
        .expect("a response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from the subrequest");
    assert_eq!(auth.streams(), 1);
    assert_eq!(auth.last().path, "/sub");
    assert_eq!(app.streams(), 0);
}
