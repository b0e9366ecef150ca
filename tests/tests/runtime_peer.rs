//! A server a program chooses at run time (`ferry::Peer`) reached as a
//! configured one can be: over TLS verified with its own CA file, with a
//! client certificate (mutual TLS), and at a Unix socket.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::{exchange, status_of};
use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::tls::SelfSigned;
use ferry_tests::yaml::group;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn conf(fallback: std::net::SocketAddr) -> String {
    format!(
        "upstreams:\n{}routes:\n  - upstream: app\n",
        group("app", &[(fallback, "")])
    )
}

fn host_echo() -> ferry_tests::backend::Handler {
    Arc::new(|_, seen: &Seen| {
        let host = seen.headers.get("host").and_then(|v| v.to_str().ok());
        Reply::ok(format!("runtime, Host: {}", host.unwrap_or("-")))
    })
}

/// A GET with the `X-Peer*` lines the hooked program reads: status and body.
async fn get(ferry: &Ferry, path: &str, peer: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{peer}\r\n");
    let (bytes, _) = exchange(ferry.addr, &req).await;
    let (_, body) = ferry_tests::client::split(&bytes);
    (
        status_of(&bytes),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A private CA verifies the server; without it (the system's roots) the
/// handshake fails and the try with it. A CA file that does not load fails
/// the try with its path in the log, and Ferry keeps serving.
#[tokio::test]
async fn a_run_time_peer_verifies_its_server_with_its_own_ca_file() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["backend.internal"]);
    let backend = Backend::start_tls(&cert, host_echo()).await;
    let fallback = Backend::named("fallback").await;
    let ferry = Ferry::start_hooked(&conf(fallback.addr)).await;
    let tls = format!(
        "X-Peer: {}\r\nX-Peer-Tls: backend.internal\r\n",
        backend.addr
    );

    let with_ca = format!("{tls}X-Peer-Ca: {}\r\n", cert.cert_path.display());
    for _ in 0..2 {
        let (status, body) = get(&ferry, "/ca", &with_ca).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "runtime, Host: runtime.test")
        );
    }
    assert_eq!(backend.conns(), 1, "pooled between requests");

    let (status, _) = get(&ferry, "/system-roots", &tls).await;
    assert_eq!(status, 502, "the system's roots do not know the private CA");

    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (status, _) = get(
        &ferry,
        "/junk",
        &format!("{tls}X-Peer-Ca: {}\r\n", junk.display()),
    )
    .await;
    assert_eq!(status, 502);
    let line = ferry.logged("/junk").await;
    assert!(
        line.contains("junk.pem") && line.contains("no certificate"),
        "{line}"
    );

    let (status, _) = get(&ferry, "/ca", &with_ca).await;
    assert_eq!(status, 200, "still serving");
    assert_eq!(backend.hits(), 3);
    assert_eq!(fallback.hits(), 0);
}

/// A server that requires a client certificate gets the one the program
/// names; without it the handshake is refused.
#[tokio::test]
async fn a_run_time_peer_presents_a_client_certificate() {
    let dir = fresh_dir();
    let server = SelfSigned::new(&dir, &["mtls.internal"]);
    let client = SelfSigned::new(&dir, &["ferry.client"]);
    let stranger = SelfSigned::new(&dir, &["stranger.client"]);
    let backend = Backend::start_mtls(&server, &client, host_echo()).await;
    let fallback = Backend::named("fallback").await;
    let ferry = Ferry::start_hooked(&conf(fallback.addr)).await;
    let tls = format!(
        "X-Peer: {}\r\nX-Peer-Tls: mtls.internal\r\nX-Peer-Ca: {}\r\n",
        backend.addr,
        server.cert_path.display()
    );
    let with = |c: &SelfSigned| {
        format!(
            "{tls}X-Peer-Cert: {} {}\r\n",
            c.cert_path.display(),
            c.key_path.display()
        )
    };

    let (status, body) = get(&ferry, "/mtls", &with(&client)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "runtime, Host: runtime.test")
    );
    assert_eq!(get(&ferry, "/no-cert", &tls).await.0, 502);
    assert_eq!(get(&ferry, "/stranger", &with(&stranger)).await.0, 502);
    assert_eq!(
        backend.hits(),
        1,
        "only the request with the right certificate"
    );
    assert_eq!(fallback.hits(), 0);
}

/// A Unix socket, pooled as any server, with `unix:PATH` recorded as the
/// try's address (nginx's `$upstream_addr`).
#[tokio::test]
async fn a_run_time_peer_can_be_a_unix_socket() {
    let dir = fresh_dir();
    let path = dir.join("app.sock");
    let backend = Backend::start_unix(&path, host_echo()).await;
    let fallback = Backend::named("fallback").await;
    let ferry = Ferry::start_hooked(&conf(fallback.addr)).await;
    let unix = format!("X-Peer-Unix: {}\r\n", path.display());
    for _ in 0..2 {
        let (status, body) = get(&ferry, "/unix", &unix).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "runtime, Host: runtime.test")
        );
    }
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "pooled between requests"
    );
    let line = ferry.logged("/unix").await;
    assert!(
        line.contains(&format!("tries=[unix:{}]", path.display())),
        "{line}"
    );

    let gone = format!("X-Peer-Unix: {}\r\n", dir.join("none.sock").display());
    assert_eq!(get(&ferry, "/none", &gone).await.0, 502);
    assert_eq!(fallback.hits(), 0);
}

/// A run-time peer can ask for HTTP/2 (a gRPC service a program picks):
/// prior knowledge in the clear, its streams on one connection.
#[tokio::test]
async fn a_run_time_peer_can_speak_http2() {
    let server = ferry_tests::h2_server::H2Server::named("over h2").await;
    let fallback = Backend::named("fallback").await;
    let ferry = Ferry::start_hooked(&conf(fallback.addr)).await;
    let http = ferry_tests::client::http();
    for _ in 0..3 {
        let r = http
            .get(ferry.url("/h2"))
            .header("X-Peer", server.addr.to_string())
            .header("X-Peer-H2", "1")
            .send()
            .await
            .expect("a response");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "over h2");
    }
    assert_eq!((server.conns(), server.streams()), (1, 3));
    assert_eq!(server.last().headers["host"], "runtime.test");
}
