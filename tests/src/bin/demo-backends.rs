//! Backends for the README demo: one HTTP server per port given on the
//! command line, each answering which backend it is and what it was asked.
//! `PORT:fail` answers 503 instead (a backend Ferry retries past).

use ferry_tests::backend::{Backend, Reply};
use std::sync::Arc;

#[tokio::main]
async fn main() {
    let ports: Vec<(u16, bool)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (port, fail) = match a.split_once(':') {
                Some((p, "fail")) => (p, true),
                _ => (a.as_str(), false),
            };
            Some((port.parse().ok()?, fail))
        })
        .collect();
    let mut running = Vec::new();
    for (port, fail) in ports {
        let b = Backend::start_on(
            &format!("127.0.0.1:{port}"),
            Arc::new(move |_, req| {
                if fail {
                    return Reply::status(503, format!("backend {port}: failing on purpose\n"));
                }
                let real_ip = req
                    .headers
                    .get("x-real-ip")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                Reply::ok(format!(
                    "backend {port}: {} {} (Host: {}, X-Real-IP: {real_ip})\n",
                    req.method,
                    req.uri,
                    req.headers
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                ))
                .header("Content-Type", "text/plain")
            }),
        )
        .await;
        match b {
            Ok(b) => running.push(b),
            Err(e) => {
                eprintln!("demo-backends: cannot listen on port {port}: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!(
        "demo-backends: listening on {:?}",
        running.iter().map(|b| b.addr).collect::<Vec<_>>()
    );
    std::future::pending::<()>().await;
}
