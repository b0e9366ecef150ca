//! What Ferry knows about one request as it goes: the route, each upstream
//! try, and how it ended. Hooks read it; `logging` gets it whole.
//!
//! nginx counterpart: the request's `upstream_states` array, from which
//! `$upstream_addr`, `$upstream_status` and `$upstream_response_time` are
//! made, one entry per try.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The response from this try went to the client.
    Used,
    /// An upstream status made the request go to the next server.
    NextStatus(u16),
    Error,
    Timeout,
    InvalidHeader,
    /// No server could be chosen.
    NoLive,
}

/// One upstream try (one entry of nginx's `$upstream_addr`).
#[derive(Debug, Clone)]
pub struct Try {
    /// `ip:port`, or the group name when no server was live.
    pub addr: String,
    pub group: String,
    /// The upstream status, if a header was read.
    pub status: Option<u16>,
    pub outcome: TryOutcome,
    /// The connection came from the keepalive pool.
    pub reused: bool,
    pub started: Instant,
    /// Time to the end of the response header (`$upstream_header_time`).
    pub header_time: Option<Duration>,
    /// Time to the end of the try (`$upstream_response_time`).
    pub response_time: Option<Duration>,
}

impl Try {
    /// The status nginx logs for this try: the upstream's, else 502/504.
    pub fn logged_status(&self) -> u16 {
        match (self.status, self.outcome) {
            (Some(s), _) => s,
            (None, TryOutcome::Timeout) => 504,
            _ => 502,
        }
    }
}

/// One request's record.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub start: Instant,
    pub client_addr: Option<SocketAddr>,
    /// `$scheme`: `https` on a TLS listener.
    pub scheme: &'static str,
    /// `$host`: the Host header without port, lower-cased.
    pub host: String,
    /// `$uri`: the normalised path.
    pub uri: String,
    /// The index of the matched route in `routes:`.
    pub route: Option<usize>,
    pub tries: Vec<Try>,
    /// The status sent to the client (0 until a header went out).
    pub status: u16,
    /// Body bytes sent to the client.
    pub body_bytes_sent: u64,
    /// Response body bytes written to a temp file.
    pub spilled_bytes: u64,
    /// The response to the client was cut short (upstream or client failure
    /// after the header went out).
    pub truncated: bool,
}

impl Request {
    pub fn new(id: String, client_addr: Option<SocketAddr>) -> Request {
        Request {
            id,
            start: Instant::now(),
            client_addr,
            scheme: "http",
            host: String::new(),
            uri: String::new(),
            route: None,
            tries: Vec::new(),
            status: 0,
            body_bytes_sent: 0,
            spilled_bytes: 0,
            truncated: false,
        }
    }

    /// `$upstream_addr`: `10.0.0.1:80, 10.0.0.2:80`.
    pub fn upstream_addr(&self) -> String {
        self.tries
            .iter()
            .map(|t| t.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `$upstream_status`: `502, 200`.
    pub fn upstream_status(&self) -> String {
        self.tries
            .iter()
            .map(|t| t.logged_status().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
