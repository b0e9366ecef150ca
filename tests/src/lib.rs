//! Ferry's integration test harness: real backends on 127.0.0.1 (ports from
//! binding port 0), Ferry as a real process, real HTTP clients.
//!
//! - [`backend`]: a well-behaved HTTP server (hyper) that records what it saw.
//! - [`raw`]: a TCP server that misbehaves on purpose (closes mid-body, sends
//!   bad framing, stalls).
//! - [`ferry`]: starts Ferry with a YAML and waits until it listens.
//! - [`client`]: a real HTTP client, and a raw one for checks on the bytes.
//! - [`tls`]: self-signed certificates made for the test.
//! - [`admin`]: the admin listener: `/upstreams`, `/metrics`.
//! - [`dns`]: a real DNS server (dnsmasq) whose records a test changes.
//! - [`redis`]: a real redis-server for the limits kept in Redis.
//! - [`yaml`]: building the `upstreams:` / `routes:` part of a test's YAML.
//! - [`grpc`]: the gRPC echo service's messages and wire format;
//!   [`grpc_server`] serves it (h2c or TLS), [`grpc_client`] calls it.
//! - [`h2_server`]: a raw HTTP/2 server (h2) that answers, resets streams,
//!   or sends GOAWAY; [`h2_client`]: a raw HTTP/2 client.

pub mod admin;
pub mod backend;
pub mod client;
pub mod dns;
pub mod ferry;
pub mod grpc;
pub mod grpc_client;
pub mod grpc_server;
pub mod h2_client;
mod h2_goaway;
pub mod h2_server;
pub mod raw;
pub mod redis;
mod serve;
pub mod tls;
pub mod yaml;

use std::time::{Duration, Instant};

/// The bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Wait until `f` holds, polling, at most [`WAIT`]; how long it took.
pub async fn until(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Poll `f` until it gives an answer, at most [`WAIT`]; `None` after that.
pub async fn until_or<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
