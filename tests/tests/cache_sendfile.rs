//! Cache HITs sent from the entry file with sendfile(2) to plain-TCP
//! HTTP/1 clients: large bodies byte for byte on a keepalive connection, a
//! range, `HEAD`, a client that leaves mid-body, and TLS (which takes the
//! read path). Ferry logs each body it sent that way at debug level; the
//! tests turn that on for `ferry::cache::serve` and read it back.

use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::http;
use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::tls::SelfSigned;
use ferry_tests::yaml::group;
use ferry_tests::WAIT;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;
const LOG: &str = "info,ferry::cache::serve=debug";

/// `n` bytes that differ from their neighbours and from one 4 KiB page to
/// the next: a byte out of place shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 12)) as u8)
        .collect()
}

/// A backend answering `/1m` and `/3m` with that many MiB of [`pattern`].
async fn sized() -> Backend {
    Backend::start(Arc::new(|_, r: &Seen| {
        let mib = if r.uri.starts_with("/3m") { 3 } else { 1 };
        Reply::ok(pattern(mib * MIB))
    }))
    .await
}

/// One route to `backend` caching 200s for ten minutes, its cache status
/// in `X-Cache`, an access log in the test's directory.
fn conf(backend: SocketAddr) -> String {
    format!(
        "access_log: \"{{dir}}/access.log\"\ncaches:\n  c: {{ path: \"{{tmp}}/cache\" }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ add_headers: {{ X-Cache: \"$upstream_cache_status\" }}, temp_path: \"{{tmp}}/temp\" }}\n    cache: {{ zone: c, valid: {{ 200: 10m }} }}\n",
        group("app", &[(backend, "")]),
    )
}

/// Fill the cache with `path` (a MISS, whole).
async fn fill(f: &Ferry, path: &str, len: usize) {
    let r = http().get(f.url(path)).send().await.expect("request");
    let cache = r.headers().get("x-cache").cloned();
    let body = r.bytes().await.expect("body");
    assert_eq!(cache.as_ref().map(|v| v.as_bytes()), Some(&b"MISS"[..]));
    assert_eq!(body.len(), len);
}

/// A response read off an open HTTP/1.1 connection: its header (lower
/// case) and its `Content-Length` body.
struct Answer {
    head: String,
    body: Vec<u8>,
}

/// Send `request` on `s` and read one response (bounded by [`WAIT`]);
/// `HEAD` reads no body.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &str) -> Answer {
    s.write_all(request.as_bytes()).await.expect("write");
    tokio::time::timeout(WAIT, read_answer(s, request.starts_with("HEAD")))
        .await
        .expect("a whole response in time")
}

async fn read_answer<S: AsyncRead + Unpin>(s: &mut S, head_only: bool) -> Answer {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the header ended");
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    let want = if head_only { 0 } else { len };
    let mut body = bytes.split_off(end);
    while body.len() < want {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {} of {want} body bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len(), want, "nothing past the body");
    Answer { head, body }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Ferry's log lines saying a body went by sendfile, in order.
fn sendfile_lines(f: &Ferry) -> Vec<String> {
    let log = f.log();
    log.lines()
        .filter_map(|l| l.find("sendfile: ").map(|i| l[i..].to_string()))
        .filter_map(|l| l.split(" of ").next().map(str::to_string))
        .collect()
}

/// The access log's `bytes` (`$body_bytes_sent`), once it has `n` lines.
async fn logged_bytes(f: &Ferry, n: usize) -> Vec<u64> {
    let log = ferry_tests::until_or(|| {
        let text = std::fs::read_to_string(f.dir.join("access.log")).ok()?;
        (text.lines().count() >= n).then_some(text)
    })
    .await
    .expect("access-log lines");
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .map(|v| v["bytes"].as_u64().expect("bytes"))
        .collect()
}

#[tokio::test]
async fn large_hits_go_by_sendfile_on_a_keepalive_connection() {
    let b = sized().await;
    let f = Ferry::start_logging(LOG, "", &conf(b.addr)).await;
    fill(&f, "/1m", MIB).await;
    fill(&f, "/3m", 3 * MIB).await;
    let mut c = TcpStream::connect(f.addr).await.expect("connect");
    for (path, len) in [("/1m", MIB), ("/3m", 3 * MIB), ("/1m", MIB)] {
        let a = ask(&mut c, &get(path)).await;
        assert!(a.head.starts_with("http/1.1 200"), "{}", a.head);
        assert!(a.head.contains("x-cache: hit"), "{}", a.head);
        assert!(a.body == pattern(len), "{path}: the body byte for byte");
    }
    assert_eq!(b.hits(), 2, "the HITs never reached the backend");
    let bytes = logged_bytes(&f, 5).await;
    let (one, three) = (MIB as u64, 3 * MIB as u64);
    assert_eq!(bytes, [one, three, one, three, one], "$body_bytes_sent");
    assert_eq!(
        sendfile_lines(&f),
        [
            "sendfile: 1048576 bytes",
            "sendfile: 3145728 bytes",
            "sendfile: 1048576 bytes"
        ]
    );
}

#[tokio::test]
async fn a_range_of_a_hit_goes_by_sendfile_from_its_offset() {
    let b = sized().await;
    let f = Ferry::start_logging(LOG, "", &conf(b.addr)).await;
    fill(&f, "/3m", 3 * MIB).await;
    let mut c = TcpStream::connect(f.addr).await.expect("connect");
    let ranged = "GET /3m HTTP/1.1\r\nHost: t\r\nRange: bytes=100000-2999999\r\n\r\n";
    let a = ask(&mut c, ranged).await;
    assert!(a.head.starts_with("http/1.1 206"), "{}", a.head);
    assert!(
        a.body == pattern(3 * MIB)[100000..3000000],
        "the range byte for byte"
    );
    let a = ask(&mut c, &get("/3m")).await;
    assert!(
        a.body == pattern(3 * MIB),
        "the next request on the connection"
    );
    assert_eq!(
        sendfile_lines(&f),
        ["sendfile: 2900000 bytes", "sendfile: 3145728 bytes"]
    );
}

#[tokio::test]
async fn a_head_hit_sends_no_body_and_the_connection_goes_on() {
    let b = sized().await;
    let f = Ferry::start_logging(LOG, "", &conf(b.addr)).await;
    fill(&f, "/1m", MIB).await;
    let mut c = TcpStream::connect(f.addr).await.expect("connect");
    let a = ask(&mut c, "HEAD /1m HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(a.head.contains("x-cache: hit"), "{}", a.head);
    assert!(a.head.contains("content-length: 1048576"), "{}", a.head);
    let a = ask(&mut c, &get("/1m")).await;
    assert!(
        a.body == pattern(MIB),
        "the GET after the HEAD, byte for byte"
    );
    assert_eq!(logged_bytes(&f, 3).await, [MIB as u64, 0, MIB as u64]);
    assert_eq!(sendfile_lines(&f), ["sendfile: 1048576 bytes"]);
}

#[tokio::test]
async fn a_client_gone_mid_body_ends_its_request_and_the_next_is_served() {
    let b = sized().await;
    // Small buffers on both sides: the body cannot all be in flight when
    // the client leaves.
    let f = Ferry::start_logging(LOG, "sndbuf: 32k", &conf(b.addr)).await;
    fill(&f, "/3m", 3 * MIB).await;
    let cache_dir = f.tmp().join("cache");
    let open_before = f.fds_in(&cache_dir);
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(32 * 1024).expect("rcvbuf");
    let mut c = sock.connect(f.addr).await.expect("connect");
    c.write_all(get("/3m").as_bytes()).await.expect("write");
    let mut some = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, c.read_exact(&mut some))
        .await
        .expect("the first bytes in time")
        .expect("read");
    drop(c);
    let bytes = logged_bytes(&f, 2).await;
    assert!(
        bytes[1] < 3 * MIB as u64,
        "the cut request counts what was sent: {bytes:?}"
    );
    // The cache keeps the entry's file open for the next lookups (nginx's
    // `open_file_cache`): one descriptor, shared by every HIT of it, and
    // no other left behind by the cut request.
    ferry_tests::until("only the entry kept open", || {
        f.fds_in(&cache_dir) == open_before + 1
    })
    .await;
    let mut next = TcpStream::connect(f.addr).await.expect("connect");
    let a = ask(&mut next, &get("/3m")).await;
    assert!(a.body == pattern(3 * MIB), "the next client's body");
    assert_eq!(
        f.fds_in(&cache_dir),
        open_before + 1,
        "the same file served it"
    );
    assert_eq!(sendfile_lines(&f), ["sendfile: 3145728 bytes"]);
    assert!(f.log().contains("client gone while sending a cache entry"));
    assert!(!f.log().contains("panicked"), "{}", f.log());
}

#[tokio::test]
async fn a_hit_over_tls_is_read_and_written_as_before() {
    let b = sized().await;
    let dir = fresh_dir();
    let cert = SelfSigned::new(&dir, &["localhost"]);
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let f = Ferry::start_logging(LOG, &listen, &conf(b.addr)).await;
    let (mut tls, _) = ferry_tests::tls::handshake(f.addr, &[&cert]).await;
    let miss = ask(&mut tls, &get("/3m")).await;
    assert!(miss.head.contains("x-cache: miss"), "{}", miss.head);
    for _ in 0..2 {
        let hit = ask(&mut tls, &get("/3m")).await;
        assert!(hit.head.contains("x-cache: hit"), "{}", hit.head);
        assert!(hit.body == pattern(3 * MIB), "the body byte for byte");
    }
    assert_eq!(logged_bytes(&f, 3).await, [3 * MIB as u64; 3]);
    assert!(sendfile_lines(&f).is_empty(), "TLS takes the read path");
    let _ = std::fs::remove_dir_all(&dir);
}
