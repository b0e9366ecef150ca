//! TLS to clients (HTTP/2 and HTTP/1.1 over TLS) and to upstreams
//! (SNI, verification on by default, a CA option), with self-signed
//! certificates made in the test.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::tls::SelfSigned;
use ferry_tests::yaml::single;
use std::sync::Arc;

fn https_client(cert: &SelfSigned, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(cert.reqwest_root());
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// Ferry on a TLS listener with `cert`, in front of `app`; and its `/x` URL.
async fn tls_ferry(cert: &SelfSigned, app: &Backend) -> (Ferry, String) {
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let ferry = Ferry::start_listen(&listen, &single(&[app.addr], "")).await;
    let url = format!("https://localhost:{}/x", ferry.addr.port());
    (ferry, url)
}

#[tokio::test]
async fn tls_listener_speaks_http2_and_http1() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let app = Backend::start(Arc::new(|_, r: &Seen| {
        Reply::ok(format!(
            "proto={}",
            r.headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        ))
    }))
    .await;
    let (_ferry, url) = tls_ferry(&cert, &app).await;
    for (http1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let r = https_client(&cert, http1).get(&url).send().await.unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "proto=https", "$scheme is https");
    }
}

#[tokio::test]
async fn a_proxy_protocol_header_comes_before_the_tls_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let seen = Backend::echo_header("x-real-ip").await;
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}, proxy_protocol: true",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let body = format!(
        "real_ip: {{ trusted: [127.0.0.1] }}\n{}",
        single(&[seen.addr], "set_headers: { X-Real-IP: \"$remote_addr\" }")
    );
    let ferry = Ferry::start_listen(&listen, &body).await;
    let mut tcp = tokio::net::TcpStream::connect(ferry.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n")
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = cert.connector().connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(ferry_tests::WAIT, tls.read_to_end(&mut bytes)).await;
    let (head, body) = ferry_tests::client::split(&bytes);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        body, b"203.0.113.7",
        "the announced client, read before TLS"
    );
}

#[tokio::test]
async fn tls_upstream_is_verified_with_sni() {
    let dir = fresh_dir();
    // The backend is at an IP address: the name checked (and sent in SNI)
    // is the group name, `app`.
    let cert = SelfSigned::new(&dir, &["app"]);
    let app = Backend::start_tls(&cert, Arc::new(|_, _: &Seen| Reply::ok("over tls"))).await;
    let group = |tls: &str| {
        format!(
            "upstreams:\n  app:\n    tls: {tls}\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
            app.addr
        )
    };
    let http = ferry_tests::client::http();

    let trusted = Ferry::start(&group(&format!(
        "{{ ca_file: \"{}\" }}",
        cert.cert_path.display()
    )))
    .await;
    let r = http.get(trusted.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "over tls");

    let untrusted = Ferry::start(&group("true")).await;
    assert_eq!(
        http.get(untrusted.url("/")).send().await.unwrap().status(),
        502,
        "not signed by a trusted CA"
    );

    let wrong_name = Ferry::start(&group(&format!(
        "{{ ca_file: \"{}\", sni: other }}",
        cert.cert_path.display()
    )))
    .await;
    assert_eq!(
        http.get(wrong_name.url("/")).send().await.unwrap().status(),
        502,
        "certificate is not for `other`"
    );

    let unverified = Ferry::start(&group("{ verify: false }")).await;
    assert_eq!(
        http.get(unverified.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn upstream_hop_by_hop_and_date_do_not_reach_the_client() {
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let upstream_date = "Mon, 01 Jan 2001 00:00:00 GMT";
    let app = Backend::start(Arc::new(move |_, _: &Seen| {
        Reply::ok("hi")
            .header("Connection", "keep-alive")
            .header("Keep-Alive", "timeout=5")
            .header("Date", upstream_date)
            .header("X-App", "1")
    }))
    .await;
    let (_ferry, url) = tls_ferry(&cert, &app).await;
    for http1 in [false, true] {
        let r = https_client(&cert, http1).get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "http1: {http1}");
        let h = r.headers().clone();
        assert_eq!(h["x-app"], "1");
        assert!(!h.contains_key("keep-alive"), "http1: {http1}");
        // Ferry's own Date, not the upstream's (nginx hides it by default).
        assert_eq!(h.get_all("date").iter().count(), 1);
        assert_ne!(h["date"], upstream_date);
        if http1 {
            assert_eq!(h["connection"], "keep-alive", "Pingora's, for this client");
        } else {
            assert!(!h.contains_key("connection"), "not allowed in HTTP/2");
        }
        assert_eq!(r.text().await.unwrap(), "hi");
    }
}

#[test]
fn a_key_that_does_not_fit_its_certificate_is_a_config_error() {
    let dir = fresh_dir();
    let (a, b) = (SelfSigned::new(&dir, &["a"]), SelfSigned::new(&dir, &["b"]));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (cert, key, says) in [
        (&a.cert_path, &b.key_path, "KeyMismatch"),
        (&garbage, &a.key_path, "Failed to load"),
    ] {
        let yaml = format!(
            "listen:\n  - {{ addr: 127.0.0.1:1, tls: {{ cert: \"{}\", key: \"{}\" }} }}\nupstreams:\n  app: {{ servers: [ {{ addr: 127.0.0.1:1 }} ] }}\nroutes:\n  - upstream: app\n",
            cert.display(),
            key.display()
        );
        let (code, _, err) = ferry_tests::ferry::check(&yaml);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(":2:39: cannot use the certificate and key") && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("panicked"), "no panic: {err}");
    }
}

/// Ferry on a TLS listener with `cert`, answering `ok` itself; its log
/// tells reloads apart.
async fn tls_ferry_alone(cert: &SelfSigned) -> Ferry {
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    Ferry::start_listen(&listen, "routes:\n  - return: { status: 200, body: ok }\n").await
}

/// The certificate a new handshake is served, trusting any of `certs`.
async fn served(ferry: &Ferry, certs: &[&SelfSigned]) -> Vec<u8> {
    ferry_tests::tls::handshake(ferry.addr, certs).await.1
}

/// certbot and cert-manager replace the files in place and signal a
/// reload: new handshakes get the new certificate (SIGHUP, then `ferry -s
/// reload`), while a connection opened before keeps serving requests.
#[tokio::test]
async fn a_reload_serves_certificate_files_replaced_in_place() {
    let dir = fresh_dir();
    let first = SelfSigned::new(&dir, &["localhost"]);
    let second = SelfSigned::new(&dir, &["localhost", "second"]);
    let third = SelfSigned::new(&dir, &["localhost", "third"]);
    let all = [&first, &second, &third];
    let ferry = tls_ferry_alone(&first).await;
    let (mut open, seen) = ferry_tests::tls::handshake(ferry.addr, &all).await;
    assert_eq!(seen, first.der());
    assert_eq!(
        ferry_tests::tls::get_on(&mut open, "/").await,
        (200, "ok".into())
    );

    second.replace_files_of(&first);
    ferry.reload().await;
    assert!(
        ferry.log().contains("is served from now on"),
        "{}",
        ferry.log()
    );
    assert_eq!(served(&ferry, &all).await, second.der(), "after SIGHUP");
    assert_eq!(
        ferry_tests::tls::get_on(&mut open, "/").await,
        (200, "ok".into()),
        "the connection opened before keeps working"
    );

    third.replace_files_of(&first);
    let conf = ferry.conf().display().to_string();
    let (code, out, err) = ferry_tests::ferry::command(&["-s", "reload", "-c", &conf]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        served(&ferry, &all).await,
        third.der(),
        "after `ferry -s reload`, which returns once the reload is done"
    );
}

/// `cert:` and `key:` pointed at new files: a reload serves them (no
/// graceful upgrade needed), and says nothing about `listen`.
#[tokio::test]
async fn a_reload_serves_a_certificate_at_a_new_path() {
    let dir = fresh_dir();
    let old = SelfSigned::new(&dir, &["localhost"]);
    let new = SelfSigned::new(&dir, &["localhost", "new"]);
    let ferry = tls_ferry_alone(&old).await;
    assert_eq!(served(&ferry, &[&old, &new]).await, old.der());
    let conf = std::fs::read_to_string(ferry.conf()).expect("conf");
    ferry.rewrite_all(
        &conf
            .replace(
                &old.cert_path.display().to_string(),
                &new.cert_path.display().to_string(),
            )
            .replace(
                &old.key_path.display().to_string(),
                &new.key_path.display().to_string(),
            ),
    );
    ferry.reload().await;
    assert!(!ferry.log().contains("`listen` changed"), "{}", ferry.log());
    assert_eq!(served(&ferry, &[&old, &new]).await, new.der());
}

/// A pair that does not load (a key of another certificate; a file that
/// is no PEM) refuses the reload with its position, as `-t` reports it,
/// and the old certificate keeps serving.
#[tokio::test]
async fn a_broken_pair_on_reload_is_refused_and_the_old_one_serves() {
    let dir = fresh_dir();
    let good = SelfSigned::new(&dir, &["localhost"]);
    let other = SelfSigned::new(&dir, &["localhost", "other"]);
    let ferry = tls_ferry_alone(&good).await;
    let conf = std::fs::read_to_string(ferry.conf()).expect("conf");
    // Where the `cert:` value is, 1-based.
    let (line, column) = conf
        .lines()
        .enumerate()
        .find_map(|(i, l)| Some((i + 1, l.find("cert: \"")? + 7)))
        .expect("a cert: line");
    let at = format!("ferry.yaml:{line}:{column}: cannot use the certificate and key");

    // A key of another certificate, at a new path.
    ferry.rewrite_all(&conf.replace(
        &good.key_path.display().to_string(),
        &other.key_path.display().to_string(),
    ));
    ferry.reload().await;
    let log = ferry.log();
    assert!(log.contains(&at) && log.contains("KeyMismatch"), "{log}");
    assert!(log.contains("the old configuration keeps serving"), "{log}");
    assert_eq!(served(&ferry, &[&good, &other]).await, good.der());

    // The certificate file itself replaced in place by one that is no PEM.
    ferry.rewrite_all(&conf);
    std::fs::write(&good.cert_path, "not a certificate\n").expect("write");
    let refused = ferry.log().matches(&at).count();
    ferry.reload().await;
    assert_eq!(
        ferry.log().matches(&at).count(),
        refused + 1,
        "{}",
        ferry.log()
    );
    assert_eq!(served(&ferry, &[&good, &other]).await, good.der());
    let (code, _, err) =
        ferry_tests::ferry::command(&["-s", "reload", "-c", &ferry.conf().display().to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&at), "{err}");
}

/// Active health checks connect as the group's requests do: with a
/// private CA in `tls.ca_file` the server passes its checks and serves;
/// a check that fails says why in the log.
#[tokio::test]
async fn health_checks_trust_the_groups_ca_file() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["app"]);
    let checks = Arc::new(AtomicUsize::new(0));
    let seen = checks.clone();
    let app = Backend::start_tls(
        &cert,
        Arc::new(move |_, r: &Seen| {
            if r.uri == "/healthz" {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Reply::ok("over tls")
        }),
    )
    .await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n  app:\n    tls: {{ ca_file: \"{}\" }}\n    health_check: {{ path: /healthz, interval: 100ms, timeout: 1s }}\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        cert.cert_path.display(),
        app.addr
    ))
    .await;
    ferry_tests::until("three health checks to reach the server", || {
        checks.load(Ordering::SeqCst) >= 3
    })
    .await;
    let http = ferry_tests::client::http();
    let r = http.get(ferry.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!ferry.log().contains("taken out"), "{}", ferry.log());
}
