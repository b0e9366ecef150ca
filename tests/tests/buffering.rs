//! The event pipe over real sockets. A slow client does not hold
//! the backend with buffering on, and does with `max_temp_file_size: 0`,
//! `buffering: false` or `X-Accel-Buffering: no`; bodies arrive byte-exact
//! through memory and temp file; aborts and upstream errors free the
//! upstream connection and the temp file.

use ferry_tests::client::split;
use ferry_tests::ferry::Ferry;
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::single;
use ferry_tests::{until, WAIT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A backend's send buffer: small enough that the kernel cannot absorb a
/// body the proxy does not read, large enough to keep two loopback segments
/// in flight (a 64 KiB buffer waits on delayed ACKs, 40 ms a segment).
const BACKEND_SNDBUF: Option<usize> = Some(128 * 1024);

/// A backend sending `n` body bytes (with `extra` header lines), then
/// marking that it is done.
async fn sender(n: usize, extra: &str) -> Raw {
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n{extra}\r\n").into_bytes();
    resp.extend(body(n));
    Raw::start_with(
        Arc::new(move |_| vec![Step::Send(resp.clone()), Step::Mark]),
        BACKEND_SNDBUF,
    )
    .await
}

/// A client with a 16 KiB receive buffer.
async fn connect_small(addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(16 * 1024).unwrap();
    s.connect(addr).await.unwrap()
}

async fn request(s: &mut TcpStream, path: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
}

/// Read the whole response at about `rate` bytes per second; also return
/// how many bytes the client had when the backend said it was done.
async fn read_slowly(mut s: TcpStream, rate: usize, backend: &Raw) -> (Vec<u8>, Option<usize>) {
    let mut out = Vec::new();
    let mut seen_done = None;
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("read stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if seen_done.is_none() && backend.marks() > 0 {
            seen_done = Some(out.len());
        }
        // The client's pace: `out.len()` bytes should take `out.len()/rate` s.
        let due = Duration::from_secs_f64(out.len() as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    (out, seen_done)
}

const FOUR_MB: usize = 4 << 20;

#[tokio::test]
async fn slow_client_holds_the_backend_only_without_buffering() {
    let buffered = sender(FOUR_MB, "").await;
    let nospill = sender(FOUR_MB, "").await;
    let unbuffered = sender(FOUR_MB, "").await;
    let accel = sender(FOUR_MB, "X-Accel-Buffering: no\r\n").await;
    let g =
        |name: &str, r: &Raw| format!("  {name}:\n    servers: [ {{ addr: \"{}\" }} ]\n", r.addr);
    let ferry = Ferry::start_listen(
        "sndbuf: 32k",
        &format!(
            "upstreams:\n{}{}{}{}routes:\n  - match: {{ path_prefix: /buffered }}\n    upstream: buffered\n    proxy: {{ temp_path: \"{{tmp}}\" }}\n  - match: {{ path_prefix: /nospill }}\n    upstream: nospill\n    proxy: {{ max_temp_file_size: 0 }}\n  - match: {{ path_prefix: /unbuffered }}\n    upstream: unbuffered\n    proxy: {{ buffering: false }}\n  - match: {{ path_prefix: /accel }}\n    upstream: accel\n",
            g("buffered", &buffered),
            g("nospill", &nospill),
            g("unbuffered", &unbuffered),
            g("accel", &accel)
        ),
    )
    .await;
    let run = |path: &'static str, backend: &'static Raw| {
        let addr = ferry.addr;
        async move {
            let mut s = connect_small(addr).await;
            request(&mut s, path).await;
            read_slowly(s, 1 << 20, backend).await
        }
    };
    // The backends outlive the reads; 'static for the closures above.
    let (b, n, u, a): (&'static Raw, &'static Raw, &'static Raw, &'static Raw) = (
        Box::leak(Box::new(buffered)),
        Box::leak(Box::new(nospill)),
        Box::leak(Box::new(unbuffered)),
        Box::leak(Box::new(accel)),
    );
    let (rb, rn, ru, ra) = tokio::join!(
        run("/buffered", b),
        run("/nospill", n),
        run("/unbuffered", u),
        run("/accel", a)
    );

    let want = body(FOUR_MB);
    for (name, (bytes, done_at)) in [
        ("buffered", &rb),
        ("nospill", &rn),
        ("unbuffered", &ru),
        ("accel", &ra),
    ] {
        let (head, got) = split(bytes);
        assert!(head.contains("content-length: 4194304"), "{name}: {head}");
        assert!(
            !head.contains("x-accel-buffering"),
            "{name}: X-Accel-Buffering is hidden"
        );
        assert!(got == want, "{name}: body differs ({} bytes)", got.len());
        assert!(done_at.is_some(), "{name}: the backend never finished");
    }
    let done = |r: &(Vec<u8>, Option<usize>)| r.1.unwrap_or(usize::MAX);
    assert!(
        done(&rb) < (512 << 10),
        "buffered: backend done after the client read {}",
        done(&rb)
    );
    for (name, r) in [("nospill", &rn), ("unbuffered", &ru), ("accel", &ra)] {
        assert!(
            done(r) > (2 << 20),
            "{name}: backend done when the client had read only {}",
            done(r)
        );
    }
}

#[tokio::test]
async fn late_reader_gets_every_byte_through_any_temp_file_cap() {
    for cap in ["4k", "0", "1024m"] {
        let backend = sender(1 << 20, "").await;
        let ferry = Ferry::start_listen(
            "sndbuf: 32k",
            &single(
                &[backend.addr],
                &format!("max_temp_file_size: {cap}, temp_path: \"{{tmp}}\""),
            ),
        )
        .await;
        let mut s = connect_small(ferry.addr).await;
        request(&mut s, "/").await;
        // Start reading only once Ferry is holding data for us: the backend
        // is done (spilled) or stuck (no spill).
        let start = Instant::now();
        while backend.marks() == 0 && start.elapsed() < Duration::from_millis(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut all = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        let (_, got) = split(&all);
        assert!(got == body(1 << 20), "cap {cap}: {} bytes", got.len());
        assert_eq!(ferry.fds_in(&ferry.tmp()), 0, "cap {cap}: temp file closed");
    }
}

/// Wait (bounded) until `f` holds.
/// A backend that declares `declared` body bytes, sends `sent` of them,
/// marks, then does `last`; Ferry buffering into `{tmp}`; a client that sent
/// its request and reads nothing yet.
async fn partial_body(declared: usize, sent: usize, last: Step) -> (Raw, Ferry, TcpStream) {
    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n").into_bytes();
    head.extend(body(sent));
    let backend = Raw::start_with(
        Arc::new(move |_| vec![Step::Send(head.clone()), Step::Mark, last.clone()]),
        BACKEND_SNDBUF,
    )
    .await;
    let ferry = Ferry::start_listen(
        "sndbuf: 32k",
        &single(&[backend.addr], "temp_path: \"{tmp}\""),
    )
    .await;
    let mut s = connect_small(ferry.addr).await;
    request(&mut s, "/").await;
    (backend, ferry, s)
}

#[tokio::test]
async fn client_abort_closes_the_upstream_and_the_temp_file() {
    // 2 MB of an 8 MB body, then the backend waits for Ferry to close.
    let (backend, ferry, mut s) = partial_body(8 << 20, 2 << 20, Step::AwaitClose).await;
    let mut first = vec![0u8; 4096];
    let _ = s.read(&mut first).await.unwrap();
    // Ferry took all the backend sent (into memory and the temp file) and
    // now waits for more: then the client goes.
    until("the backend to send its 2 MB", || backend.marks() == 1).await;
    assert!(
        ferry.fds_in(&ferry.tmp()) > 0,
        "the body spilled to a temp file"
    );
    drop(s);
    let took = until("Ferry to close the upstream", || {
        backend.closed.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "upstream closed {took:?} after the abort"
    );
    until("the temp file to be closed", || {
        ferry.fds_in(&ferry.tmp()) == 0
    })
    .await;
    assert_eq!(
        std::fs::read_dir(ferry.tmp()).unwrap().count(),
        0,
        "nothing left in temp_path"
    );
}

#[tokio::test]
async fn upstream_error_mid_body_truncates_and_frees_the_temp_file() {
    let (backend, ferry, mut s) = partial_body(4 << 20, 1 << 20, Step::Close).await;
    until("the backend to send and close", || backend.marks() == 1).await;
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let (head, got) = split(&all);
    assert!(head.contains("content-length: 4194304"));
    assert!(
        got == body(1 << 20),
        "the client gets what was read, then the close: {}",
        got.len()
    );
    until("the temp file to be closed", || {
        ferry.fds_in(&ferry.tmp()) == 0
    })
    .await;
}

#[tokio::test]
async fn ignore_client_abort_reads_the_upstream_to_its_end() {
    for ignore in [false, true] {
        let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        first.extend(body(100 << 10));
        let rest = body(1 << 20)[100 << 10..].to_vec();
        let backend = Raw::start_with(
            Arc::new(move |_| {
                vec![
                    Step::Send(first.clone()),
                    Step::Wait(Duration::from_millis(600)),
                    Step::Send(rest.clone()),
                    Step::Mark,
                ]
            }),
            BACKEND_SNDBUF,
        )
        .await;
        let ferry = Ferry::start(&single(
            &[backend.addr],
            &format!("ignore_client_abort: {ignore}"),
        ))
        .await;
        let mut s = connect_small(ferry.addr).await;
        request(&mut s, "/").await;
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b).await.unwrap();
        drop(s);
        if ignore {
            until("the backend to send it all", || backend.marks() == 1).await;
            assert_eq!(
                backend
                    .write_errors
                    .load(std::sync::atomic::Ordering::SeqCst),
                0
            );
        } else {
            until("the backend to see its connection closed", || {
                backend
                    .write_errors
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 1
            })
            .await;
            assert_eq!(backend.marks(), 0);
        }
    }
}

/// A backend that sends a header declaring 10 bytes and the first 5, then
/// holds the rest back.
async fn holding_back() -> Raw {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec();
    Raw::start(Arc::new(move |_| {
        vec![Step::Send(head.clone()), Step::Stall]
    }))
    .await
}

/// Read from `s` until the body so far is `hello`, each read bounded.
async fn first_bytes(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the header and the first body bytes, before the rest is sent")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
}

/// Unbuffered, a response's first body bytes reach the client while the
/// server holds the rest back: with a `Content-Length`, nothing waits in
/// Ferry's write buffers for more to come (nginx's `proxy_buffering off`
/// sends what it has at once). Over plain TCP and over TLS.
#[tokio::test]
async fn unbuffered_first_bytes_go_out_before_the_rest_arrives() {
    let backend = holding_back().await;
    let ferry = Ferry::start(&single(&[backend.addr], "buffering: false")).await;
    first_bytes(TcpStream::connect(ferry.addr).await.unwrap()).await;

    let dir = ferry_tests::ferry::fresh_dir();
    let cert = ferry_tests::tls::SelfSigned::new(&dir, &["localhost"]);
    let listen = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        cert.cert_path.display(),
        cert.key_path.display()
    );
    let tls_backend = holding_back().await;
    let body = single(&[tls_backend.addr], "buffering: false");
    let tls_ferry = Ferry::start_listen(&listen, &body).await;
    let (tls, _) = ferry_tests::tls::handshake(tls_ferry.addr, &[&cert]).await;
    first_bytes(tls).await;
}
