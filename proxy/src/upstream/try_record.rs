//! One upstream try as the request's record keeps it: the server, the
//! status, how it ended, its times.
//!
//! nginx counterpart: one entry of the request's `upstream_states` array,
//! from which `$upstream_addr`, `$upstream_status` and
//! `$upstream_response_time` are made.

use std::time::{Duration, Instant};

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryOutcome {
    /// The response from this try went to the client.
    Used,
    /// An upstream status made the request go to the next server.
    NextStatus(u16),
    /// Connecting, sending or reading the header failed (nginx `error`).
    Error,
    /// A connect, send or read timeout (nginx `timeout`).
    Timeout,
    /// A malformed or too large header, or bad framing (nginx `invalid_header`).
    InvalidHeader,
    /// No server could be chosen.
    NoLive,
    /// The client failed while its body streamed to this try (a broken
    /// chunked body, a stall, an abort): not the server's fault.
    Client,
}

/// A request's tries, in order: almost always one, kept inline.
pub(crate) type TryList = smallvec::SmallVec<[Try; 1]>;

/// One upstream try (one entry of nginx's `$upstream_addr`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Try {
    /// `ip:port`, or the group name when no server was live.
    pub addr: String,
    /// The upstream group the try went to (a run-time peer's `Host`).
    pub group: String,
    /// The upstream status, if a header was read.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: TryOutcome,
    /// The connection came from the keepalive pool.
    pub reused: bool,
    /// When the try began.
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
