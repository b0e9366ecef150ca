//! A soak: Ferry under mixed load for a while, sampled for what must stay
//! flat. Small requests, slow readers of a large response (spilled to a
//! temp file), clients that abort mid-response, a backend that closes
//! early, and uploads (buffered to a temp file), all at once; every few
//! seconds Ferry's RSS, open fds and open temp files are sampled. At the
//! end, once the load stops, the fds and temp files must be back to the
//! idle figure, and the last loaded RSS sample within 10% of the first one
//! taken after warm-up. Exits 1 when any is not.
//!
//!   soak FERRY_BINARY --seconds N
//!
//! Everything runs on 127.0.0.1 with ports from binding port 0; the
//! backends are raw TCP servers here (httparse reads their requests).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 1 << 20;
const UPLOAD: usize = 200 * 1024;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(binary) = args.get(1) else {
        eprintln!("usage: soak FERRY_BINARY [--seconds N]");
        std::process::exit(2);
    };
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    std::process::exit(run(Path::new(binary), Duration::from_secs(seconds)).await);
}

async fn run(binary: &Path, length: Duration) -> i32 {
    let backend = start_backend().await;
    let dir = std::env::temp_dir().join(format!("ferry-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("soak dir");
    let (mut ferry, addr) = match start_ferry(binary, &dir, &tmp, backend).await {
        Some(f) => f,
        None => {
            eprintln!(
                "soak: ferry did not start; see {}",
                dir.join("ferry.log").display()
            );
            return 1;
        }
    };
    let pid = ferry.id();

    // Warm up (one of each), settle, and take the idle figure.
    for kind in Kind::ALL {
        kind.once(addr).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Sample::take(pid, &tmp);
    println!("idle: {idle}");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (kind, n) in [
        (Kind::Small, 4),
        (Kind::SlowReader, 2),
        (Kind::Abort, 2),
        (Kind::EarlyClose, 1),
        (Kind::Upload, 1),
    ] {
        for _ in 0..n {
            let (stop, done) = (stop.clone(), done.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    kind.once(addr).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let warm = (length / 4).min(Duration::from_secs(10));
    let start = Instant::now();
    let mut first: Option<Sample> = None;
    let mut last = idle;
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(2).min(length)).await;
        last = Sample::take(pid, &tmp);
        let t = start.elapsed().as_secs();
        println!(
            "{t:>4}s loaded: {last}, {} requests",
            done.load(Ordering::Relaxed)
        );
        if first.is_none() && start.elapsed() >= warm {
            first = Some(last);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }

    // Settled: idle keepalive connections time out (1s), temp files close.
    let settle = Instant::now();
    let mut end = Sample::take(pid, &tmp);
    while (end.fds > idle.fds || end.temp > 0) && settle.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        end = Sample::take(pid, &tmp);
    }
    println!("after: {end}");
    let first = first.unwrap_or(last);
    let rss_ratio = last.rss_kib as f64 / first.rss_kib.max(1) as f64;
    let checks = [
        ("open fds back to idle", end.fds <= idle.fds),
        ("no temp file open", end.temp == 0),
        ("nothing left in temp_path", dir_empty(&tmp)),
        (
            "RSS within 10% of its first loaded sample",
            rss_ratio <= 1.10,
        ),
        (
            "ferry still running",
            ferry.try_wait().ok().flatten().is_none(),
        ),
        ("requests were served", done.load(Ordering::Relaxed) > 0),
    ];
    println!(
        "rss first loaded {} KiB, last loaded {} KiB ({rss_ratio:.3}x); {} requests",
        first.rss_kib,
        last.rss_kib,
        done.load(Ordering::Relaxed)
    );
    let mut failed = 0;
    for (what, ok) in checks {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    let _ = ferry.kill();
    let _ = ferry.wait();
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&dir);
        println!("soak: flat");
        0
    } else {
        println!("soak: {failed} check(s) failed; log in {}", dir.display());
        1
    }
}

fn dir_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// What is sampled of the Ferry process.
#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    /// Open fds on files in temp_path (unlinked at once: `(deleted)`).
    temp: usize,
}

impl Sample {
    fn take(pid: u32, tmp: &Path) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let tmp = tmp.display().to_string();
        let (mut fds, mut temp) = (0, 0);
        if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in entries.flatten() {
                fds += 1;
                if std::fs::read_link(e.path())
                    .is_ok_and(|t| t.display().to_string().starts_with(&tmp))
                {
                    temp += 1;
                }
            }
        }
        Sample { rss_kib, fds, temp }
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rss {} KiB, {} fds, {} temp files",
            self.rss_kib, self.fds, self.temp
        )
    }
}

/// One kind of client.
#[derive(Clone, Copy)]
enum Kind {
    Small,
    SlowReader,
    Abort,
    EarlyClose,
    Upload,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Small,
        Kind::SlowReader,
        Kind::Abort,
        Kind::EarlyClose,
        Kind::Upload,
    ];

    /// One request of this kind; failures are part of the load.
    async fn once(self, addr: SocketAddr) {
        let _ = tokio::time::timeout(Duration::from_secs(30), self.request(addr)).await;
    }

    async fn request(self, addr: SocketAddr) -> std::io::Result<()> {
        let mut s = TcpStream::connect(addr).await?;
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n");
        let mut buf = vec![0u8; 16 * 1024];
        match self {
            Kind::Small => {
                s.write_all(get("/small").as_bytes()).await?;
                while s.read(&mut buf).await? > 0 {}
            }
            Kind::SlowReader => {
                s.write_all(get("/big").as_bytes()).await?;
                while s.read(&mut buf).await? > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Kind::Abort => {
                s.write_all(get("/big").as_bytes()).await?;
                let mut got = 0;
                while got < 64 * 1024 {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            Kind::EarlyClose => {
                s.write_all(get("/early").as_bytes()).await?;
                while s.read(&mut buf).await? > 0 {}
            }
            Kind::Upload => {
                let head = format!(
                    "POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: {UPLOAD}\r\nConnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await?;
                s.write_all(&vec![b'u'; UPLOAD]).await?;
                while s.read(&mut buf).await? > 0 {}
            }
        }
        Ok(())
    }
}

/// The backend: `/small` 1 KB, `/big` 1 MB, `/early` a 100 KB response
/// cut after 10 KB, `/upload` reads its body; keepalive otherwise.
async fn start_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(serve(s));
        }
    });
    addr
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read one request head (and its Content-Length body).
        let (path, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (req.path.unwrap_or("/").to_string(), n, len);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_len + body_len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_len + body_len);
        let respond = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        match path.as_str() {
            "/big" => {
                s.write_all(respond(BIG).as_bytes()).await?;
                s.write_all(&vec![b'b'; BIG]).await?;
            }
            "/early" => {
                s.write_all(respond(100 * 1024).as_bytes()).await?;
                s.write_all(&[b'e'; 10 * 1024]).await?;
                return Ok(());
            }
            "/upload" => s.write_all(format!("{}ok", respond(2)).as_bytes()).await?,
            _ => {
                s.write_all(respond(1024).as_bytes()).await?;
                s.write_all(&[b's'; 1024]).await?;
            }
        }
    }
}

async fn start_ferry(
    binary: &Path,
    dir: &Path,
    tmp: &Path,
    backend: SocketAddr,
) -> Option<(Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let yaml = format!(
        "server:\n  threads: 1\n  pid_file: {d}/pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n\
listen: [\"{addr}\"]\n\
upstreams:\n  app:\n    keepalive: 16\n    keepalive_timeout: 1s\n    servers: [ {{ addr: \"{backend}\" }} ]\n\
routes:\n  - upstream: app\n    proxy:\n      temp_path: {t}\n      buffers: {{ count: 4, size: 8k }}\n      busy_buffers_size: 16k\n      client_body_buffer_size: 16k\n      client_max_body_size: 1m\n",
        d = dir.display(),
        t = tmp.display(),
    );
    let conf = dir.join("ferry.yaml");
    std::fs::write(&conf, yaml).ok()?;
    let log = std::fs::File::create(dir.join("ferry.log")).ok()?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .ok()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(addr).await.is_ok() {
            return Some((child, addr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
