//! A request refused before routing, by Ferry or by Pingora: counted by
//! reason in `ferry_bad_requests_total` and logged once.
//!
//! nginx counterpart: the `client sent invalid ...` lines of its error log.

/// Count and log one refusal.
pub(crate) fn refused(peer: &str, status: &str, reason: &str) {
    crate::metrics::metrics()
        .bad_requests
        .with_label_values(&[reason])
        .inc();
    log::warn!("refused a request from {peer} with {status}: {reason}");
}
