//! Slow clients: N connections each GET a path and read it at a fixed rate
//! through a small receive buffer, for a while, then go. Used to measure a
//! proxy's memory with many slow downloads in flight.
//! `slow-clients ADDR PATH N BYTES_PER_SEC SECONDS`

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: slow-clients ADDR PATH N BYTES_PER_SEC SECONDS");
        std::process::exit(2);
    }
    let addr: std::net::SocketAddr = a[1].parse().expect("ADDR");
    let path = a[2].clone();
    let n: usize = a[3].parse().expect("N");
    let rate: f64 = a[4].parse().expect("BYTES_PER_SEC");
    let secs: f64 = a[5].parse().expect("SECONDS");
    let mut tasks = Vec::new();
    for _ in 0..n {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4().ok()?;
            sock.set_recv_buffer_size(16 * 1024).ok()?;
            let mut s = sock.connect(addr).await.ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let start = Instant::now();
            let mut got = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            while start.elapsed().as_secs_f64() < secs {
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    break;
                }
                got += n;
                let due = Duration::from_secs_f64(got as f64 / rate);
                if let Some(w) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(w).await;
                }
            }
            Some(got)
        }));
    }
    let mut total = 0usize;
    for t in tasks {
        total += t.await.ok().flatten().unwrap_or(0);
    }
    println!("{total}");
}
