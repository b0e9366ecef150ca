//! A route's `compress:` (rule 27) against real backends: gzip, br and zstd
//! chosen by `Accept-Encoding` and decoded back to the original bytes, what
//! nginx's gzip filter leaves alone, `Vary`, `gzip_proxied`, large bodies
//! streamed with and without buffering (an unbuffered route's pieces
//! flushed as they come), HTTP/2, and cache HITs compressed per client.

use ferry_tests::backend::{Backend, Reply};
use ferry_tests::client::http;
use ferry_tests::ferry::Ferry;
use ferry_tests::yaml::group;
use reqwest::header::HeaderMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

/// Text that compresses well, `n` bytes of it.
fn text(n: usize) -> Vec<u8> {
    b"Ferry compresses what nginx compresses. "
        .iter()
        .cycle()
        .take(n)
        .copied()
        .collect()
}

/// A backend answering `path`-dependent replies of type text/html unless
/// the path says otherwise.
async fn backend() -> Backend {
    Backend::start(Arc::new(|_, seen| {
        let uri = seen.uri.as_str();
        let html = |r: Reply| r.header("Content-Type", "text/html; charset=utf-8");
        match uri {
            "/small" => html(Reply::ok("tiny")),
            "/png" => Reply::ok(text(4096)).header("Content-Type", "image/png"),
            "/css" => Reply::ok(text(4096)).header("Content-Type", "text/css"),
            "/encoded" => html(Reply::ok(text(4096))).header("Content-Encoding", "gzip"),
            "/partial" => {
                html(Reply::status(206, text(4096))).header("Content-Range", "bytes 0-4095/10000")
            }
            "/big" => html(Reply::ok(text(3 << 20))),
            "/tagged" => html(Reply::ok(text(4096)))
                .header("ETag", "\"v1\"")
                .header("Accept-Ranges", "bytes"),
            "/expired" => {
                html(Reply::ok(text(4096))).header("Expires", "Thu, 01 Jan 1970 00:00:01 GMT")
            }
            "/nocache" => html(Reply::ok(text(4096))).header("Cache-Control", "no-cache"),
            "/notransform" => html(Reply::ok(text(4096))).header("Cache-Control", "no-transform"),
            _ => html(Reply::ok(text(4096))),
        }
    }))
    .await
}

fn conf(backend: SocketAddr, compress: &str, extra: &str) -> String {
    format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    compress: {{ {compress} }}\n{extra}",
        group("app", &[(backend, "")]),
    )
}

const ALL: &str = "algorithms: [zstd, br, gzip], types: [text/css], vary: true";

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The body decoded by its `Content-Encoding`.
    fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.header("content-encoding") {
            "gzip" => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("gzip");
            }
            "br" => {
                brotli::Decompressor::new(&self.body[..], 4096)
                    .read_to_end(&mut out)
                    .expect("brotli");
            }
            "zstd" => out = zstd::decode_all(&self.body[..]).expect("zstd"),
            _ => out = self.body.clone(),
        }
        out
    }
}

async fn get(f: &Ferry, path: &str, ae: Option<&str>) -> Got {
    let mut r = http().get(f.url(path));
    if let Some(ae) = ae {
        r = r.header("Accept-Encoding", ae);
    }
    send(r).await
}

async fn send(r: reqwest::RequestBuilder) -> Got {
    let r = r.send().await.expect("request");
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.expect("body").to_vec(),
    }
}

#[tokio::test]
async fn accept_encoding_chooses_and_bodies_decode_back() {
    let b = backend().await;
    let f = Ferry::start(&conf(b.addr, ALL, "")).await;
    let cases = [
        ("gzip, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("gzip", "gzip"),
        ("gzip;q=0.5, br;q=0, zstd;q=0", "gzip"),
        ("*", "zstd"),
        ("*;q=0.2, zstd;q=0", "br"),
    ];
    for (ae, want) in cases {
        let g = get(&f, "/", Some(ae)).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.header("content-encoding"), want, "{ae}");
        assert!(g.headers.get("content-length").is_none(), "{ae}");
        assert_eq!(g.header("vary"), "Accept-Encoding", "{ae}");
        assert!(g.body.len() < 4096, "{ae}: {} bytes", g.body.len());
        assert_eq!(g.decoded(), text(4096), "{ae}");
    }
    for ae in [
        None,
        Some("gzip;q=0, br;q=0.0, zstd;q=0.000"),
        Some("identity"),
    ] {
        let g = get(&f, "/", ae).await;
        assert_eq!(g.header("content-encoding"), "", "{ae:?}");
        assert_eq!(g.header("vary"), "Accept-Encoding", "{ae:?}");
        assert_eq!(g.body, text(4096), "{ae:?}");
    }
    let css = get(&f, "/css", Some("gzip")).await;
    assert_eq!(css.header("content-encoding"), "gzip");
    assert_eq!(css.decoded(), text(4096));
}

#[tokio::test]
async fn what_nginx_leaves_alone_is_left_alone() {
    let b = backend().await;
    let f = Ferry::start(&conf(b.addr, ALL, "")).await;
    for path in ["/small", "/png", "/encoded", "/partial", "/notransform"] {
        let g = get(&f, path, Some("gzip, br, zstd")).await;
        let expect = if path == "/encoded" { "gzip" } else { "" };
        assert_eq!(g.header("content-encoding"), expect, "{path}");
        let body = if path == "/small" {
            b"tiny".to_vec()
        } else {
            text(4096)
        };
        assert_eq!(g.body, body, "{path}");
        assert!(g.headers.get("content-length").is_some(), "{path}");
    }
    let head = send(http().head(f.url("/")).header("Accept-Encoding", "gzip")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), "");
    assert_eq!(head.header("content-length"), "4096");
    let tagged = get(&f, "/tagged", Some("gzip")).await;
    assert_eq!(tagged.header("etag"), "W/\"v1\"");
    assert!(tagged.headers.get("accept-ranges").is_none());
    assert_eq!(tagged.decoded(), text(4096));
    let plain = get(&f, "/tagged", None).await;
    assert_eq!(plain.header("etag"), "\"v1\"");
    assert_eq!(plain.header("accept-ranges"), "bytes");
}

#[tokio::test]
async fn large_bodies_stream_compressed_buffered_or_not() {
    let b = backend().await;
    for buffering in ["true", "false"] {
        let extra = format!("    proxy: {{ buffering: {buffering} }}\n");
        let f = Ferry::start(&conf(b.addr, ALL, &extra)).await;
        for ae in ["gzip", "br", "zstd"] {
            let g = get(&f, "/big", Some(ae)).await;
            assert_eq!(g.header("content-encoding"), ae, "{buffering} {ae}");
            assert!(g.body.len() < 1 << 20, "{buffering} {ae}: {}", g.body.len());
            assert_eq!(g.decoded(), text(3 << 20), "{buffering} {ae}");
        }
    }
}

#[tokio::test]
async fn a_cache_hit_is_compressed_per_client() {
    let b = backend().await;
    let extra = "    proxy: { add_headers: { X-Cache: \"$upstream_cache_status\" } }\n    cache: { zone: c, valid: { 200: 10m } }\n";
    let yaml = format!(
        "caches:\n  c: {{ path: \"{{tmp}}/cache\" }}\n{}",
        conf(b.addr, ALL, extra)
    );
    let f = Ferry::start(&yaml).await;
    let first = get(&f, "/", Some("br")).await;
    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!(first.header("content-encoding"), "br");
    assert_eq!(first.decoded(), text(4096));
    let hit_gzip = get(&f, "/", Some("gzip")).await;
    assert_eq!(hit_gzip.header("x-cache"), "HIT");
    assert_eq!(hit_gzip.header("content-encoding"), "gzip");
    assert_eq!(hit_gzip.header("vary"), "Accept-Encoding");
    assert_eq!(hit_gzip.decoded(), text(4096));
    let hit_plain = get(&f, "/", None).await;
    assert_eq!(hit_plain.header("x-cache"), "HIT");
    assert_eq!(hit_plain.header("content-encoding"), "");
    assert_eq!(hit_plain.body, text(4096));
    assert_eq!(b.hits(), 1, "one entry serves every encoding");
}

#[tokio::test]
async fn a_bad_compress_key_points_at_its_line() {
    let b = backend().await;
    let dir = ferry_tests::ferry::fresh_dir();
    let path = dir.join("bad.yaml");
    let yaml = format!(
        "listen: [127.0.0.1:1]\n{}",
        conf(b.addr, "algorithms: [gzip], level: 12", "")
    );
    std::fs::write(&path, yaml).expect("write");
    let e = ferry_conf::load_file(&path).expect_err("level 12");
    assert!(e.to_string().contains(":8:44: level must be 1 to 9"), "{e}");
}

/// A backend that sends one chunk of `first`, waits for `go`, then the
/// rest: what reaches the client before `go` was flushed piece by piece.
async fn slow_backend(first: Vec<u8>, go: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut c, _)) = listener.accept().await else {
            return;
        };
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf).await;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut out = head.as_bytes().to_vec();
        out.extend(format!("{:x}\r\n", first.len()).as_bytes());
        out.extend(&first);
        out.extend(b"\r\n");
        let _ = c.write_all(&out).await;
        let _ = go.await;
        let _ = c.write_all(b"5\r\nlast.\r\n0\r\n\r\n").await;
        let _ = c.read(&mut buf).await;
    });
    addr
}

#[tokio::test]
async fn an_unbuffered_route_flushes_each_piece() {
    use std::io::Write;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let addr = slow_backend(text(1000), rx).await;
    let extra = "    proxy: { buffering: false }\n";
    let f = Ferry::start(&conf(addr, "algorithms: [gzip]", extra)).await;
    let mut r = http()
        .get(f.url("/"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let mut d = flate2::write::GzDecoder::new(Vec::new());
    let wait = std::time::Duration::from_secs(5);
    while d.get_ref().len() < 1000 {
        let piece = tokio::time::timeout(wait, r.chunk())
            .await
            .expect("flushed before the end");
        let piece = piece.expect("body").expect("a piece before the end");
        d.write_all(&piece).expect("gzip");
        d.flush().expect("gzip");
    }
    assert_eq!(d.get_ref()[..], text(1000)[..]);
    let _ = tx.send(());
    while let Some(piece) = r.chunk().await.expect("body") {
        d.write_all(&piece).expect("gzip");
    }
    let mut all = text(1000);
    all.extend(b"last.");
    assert_eq!(d.finish().expect("gzip end"), all);
}

#[tokio::test]
async fn a_request_through_a_proxy_follows_proxied() {
    let b = backend().await;
    // (proxied, path, Authorization, Content-Encoding): `/tagged` has an
    // ETag, which no_etag refuses (unless auth with credentials comes
    // first); `/expired` an Expires in the past, `/nocache` no-cache.
    let cases = [
        ("[off]", "/", false, ""),
        ("[any]", "/tagged", false, "gzip"),
        ("[no_etag]", "/tagged", false, ""),
        ("[no_etag]", "/", false, "gzip"),
        ("[no_etag, auth]", "/tagged", true, "gzip"),
        ("[expired]", "/expired", false, "gzip"),
        ("[no-cache]", "/expired", false, ""),
        ("[no-cache]", "/nocache", false, "gzip"),
        ("[private]", "/nocache", false, ""),
    ];
    for (proxied, path, auth, want) in cases {
        let compress = format!("proxied: {proxied}");
        let f = Ferry::start(&conf(b.addr, &compress, "")).await;
        let mut r = http()
            .get(f.url(path))
            .header("Accept-Encoding", "gzip")
            .header("Via", "1.1 cdn");
        if auth {
            r = r.header("Authorization", "Basic Zm9vOmJhcg==");
        }
        let g = send(r).await;
        assert_eq!(
            g.header("content-encoding"),
            want,
            "{proxied} {path} {auth}"
        );
        assert_eq!(g.decoded(), text(4096), "{proxied}");
        let direct = get(&f, path, Some("gzip")).await;
        assert_eq!(direct.header("content-encoding"), "gzip", "{proxied}");
    }
}

#[tokio::test]
async fn an_http2_client_gets_it_compressed_in_frames() {
    use ferry_tests::tls::SelfSigned;
    let dir = ferry_tests::ferry::fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let b = backend().await;
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let f = Ferry::start_listen(&listen, &conf(b.addr, ALL, "")).await;
    let tcp = tokio::net::TcpStream::connect(f.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = ferry_tests::tls::connector(&[&cert], b"h2")
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (mut send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .uri("https://localhost/big")
        .header("accept-encoding", "br")
        .body(())
        .expect("request");
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(ferry_tests::WAIT, resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(piece) = body.data().await {
        let piece = piece.expect("body");
        let _ = body.flow_control().release_capacity(piece.len());
        got.extend_from_slice(&piece);
    }
    assert_eq!(headers["content-encoding"], "br");
    assert!(headers.get("content-length").is_none());
    assert!(headers.get("transfer-encoding").is_none());
    let mut out = Vec::new();
    brotli::Decompressor::new(&got[..], 4096)
        .read_to_end(&mut out)
        .expect("brotli");
    assert_eq!(out, text(3 << 20));
}

#[tokio::test]
async fn the_access_log_counts_the_compressed_bytes() {
    let b = backend().await;
    let extra = "    cache: { zone: c, valid: { 200: 10m } }\n";
    let yaml = format!(
        "access_log: \"{{dir}}/access.log\"\ncaches:\n  c: {{ path: \"{{tmp}}/cache\" }}\n{}",
        conf(b.addr, ALL, extra)
    );
    let f = Ferry::start(&yaml).await;
    let miss = get(&f, "/", Some("gzip")).await;
    let hit = get(&f, "/", Some("zstd")).await;
    assert_eq!(hit.header("content-encoding"), "zstd");
    let log = ferry_tests::until_or(|| {
        let text = std::fs::read_to_string(f.dir.join("access.log")).ok()?;
        (text.lines().count() >= 2).then_some(text)
    })
    .await
    .expect("two lines");
    let bytes: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .map(|v| v["bytes"].as_u64().expect("bytes"))
        .collect();
    assert_eq!(bytes, vec![miss.body.len() as u64, hit.body.len() as u64]);
}
