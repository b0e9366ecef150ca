//! What the upstream loop reports to the layers above it without knowing
//! them: a server taken out by `max_fails`. The process registers one
//! listener at start (the metrics); until then reports go nowhere.
//!
//! nginx counterpart: the `upstream server temporarily disabled` line that
//! `ngx_http_upstream_free_round_robin_peer` writes to the error log.

use std::net::SocketAddr;
use std::sync::OnceLock;

/// Called with the group's name and the server's address.
pub(crate) type MarkedFailed = fn(&str, SocketAddr);

static MARKED_FAILED: OnceLock<MarkedFailed> = OnceLock::new();

/// Send every "server taken out" report to `f` (the first call wins).
pub(crate) fn on_marked_failed(f: MarkedFailed) {
    let _ = MARKED_FAILED.set(f);
}

/// Report that `addr` of `group` was taken out.
pub(crate) fn marked_failed(group: &str, addr: SocketAddr) {
    if let Some(f) = MARKED_FAILED.get() {
        f(group, addr);
    }
}
