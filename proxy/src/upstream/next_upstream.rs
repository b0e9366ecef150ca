//! nginx's retry rules: whether a failed or unwanted try goes to the next
//! server, and what the client gets when it does not.
//!
//! nginx counterpart: `ngx_http_upstream_next` (error, timeout,
//! invalid_header) and `ngx_http_upstream_test_next` (status codes).
//!
//! - A try fails with `error` (connect refused, write failed, closed before a
//!   complete header), `timeout` (connect, send or header read) or
//!   `invalid_header` (malformed or too big header, bad framing).
//! - Such a failure always counts against the server's `max_fails`, even
//!   with `next_upstream: [off]`.
//! - It is retried only if its condition is listed, tries are left, the
//!   `next_upstream_timeout` budget is not spent, and, once any of the
//!   request was sent, the method is idempotent (or `non_idempotent` is
//!   listed) and the body was buffered.
//! - An `http_xxx` status is retried under the same rules when another try
//!   is left; only then does it count against `max_fails` (403 and 404
//!   never). Otherwise the upstream's response goes to the client.
//! - A failure on a reused keepalive connection before any response byte
//!   does not use up a try (it still counts for `max_fails`).
//! - Out of tries: the last failure decides: timeout -> 504, else 502.

use ferry_conf::{Condition, NextUpstream};
use pingora_error::{Error, ErrorType};
use std::time::{Duration, Instant};

/// Why a try failed before its response could be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Error,
    Timeout,
    InvalidHeader,
    /// No server could be chosen ("no live upstreams").
    NoLive,
}

impl Failure {
    /// Classify a Pingora error from connecting, sending or reading the header.
    pub fn of(e: &Error) -> Failure {
        use ErrorType::*;
        match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
                Failure::Timeout
            }
            InvalidHTTPHeader | H1Error | InvalidH2 | H2Error => Failure::InvalidHeader,
            _ => Failure::Error,
        }
    }

    pub fn condition(self) -> Option<Condition> {
        match self {
            Failure::Error => Some(Condition::Error),
            Failure::Timeout => Some(Condition::Timeout),
            Failure::InvalidHeader => Some(Condition::InvalidHeader),
            Failure::NoLive => None,
        }
    }

    /// What the client gets when this was the last failure.
    pub fn status(self) -> u16 {
        match self {
            Failure::Timeout => 504,
            _ => 502,
        }
    }
}

/// POST, LOCK and PATCH: not resent after sending started unless
/// `non_idempotent` is listed (nginx's list; PUT and DELETE count as
/// idempotent).
pub fn is_non_idempotent(method: &str) -> bool {
    matches!(method, "POST" | "LOCK" | "PATCH")
}

/// A request's retry policy and budget.
#[derive(Debug, Clone)]
pub struct Policy {
    pub conditions: NextUpstream,
    pub non_idempotent: bool,
    /// The body streams from the client: nothing can be resent once sent.
    pub body_streamed: bool,
    pub started: Instant,
    pub budget: Option<Duration>,
}

impl Policy {
    fn allows(&self, cond: Condition, request_sent: bool) -> bool {
        if !self.conditions.has(cond) {
            return false;
        }
        if request_sent
            && ((self.non_idempotent && !self.conditions.has(Condition::NonIdempotent))
                || self.body_streamed)
        {
            return false;
        }
        self.budget.is_none_or(|b| self.started.elapsed() < b)
    }

    /// After a failed try was accounted (its try used up): go on?
    pub fn retry_failure(&self, f: Failure, request_sent: bool, tries_left: u32) -> bool {
        tries_left > 0 && f.condition().is_some_and(|c| self.allows(c, request_sent))
    }

    /// An upstream status, before the try is accounted: try the next server?
    /// (The request was always sent.)
    pub fn retry_status(&self, status: u16, tries_left: u32) -> bool {
        tries_left > 1 && Condition::for_status(status).is_some_and(|c| self.allows(c, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(conds: &[Condition], method: &str) -> Policy {
        Policy {
            conditions: NextUpstream::of(conds),
            non_idempotent: is_non_idempotent(method),
            body_streamed: false,
            started: Instant::now(),
            budget: None,
        }
    }

    #[test]
    fn default_retries_error_and_timeout_only() {
        let p = Policy {
            conditions: NextUpstream::default(),
            ..policy(&[], "GET")
        };
        assert!(p.retry_failure(Failure::Error, true, 1));
        assert!(p.retry_failure(Failure::Timeout, true, 1));
        assert!(!p.retry_failure(Failure::InvalidHeader, true, 1));
        assert!(!p.retry_failure(Failure::Error, true, 0));
        assert!(!p.retry_status(502, 2));
    }

    #[test]
    fn post_is_resent_only_before_sending_or_with_non_idempotent() {
        let p = policy(&[Condition::Error], "POST");
        assert!(
            p.retry_failure(Failure::Error, false, 1),
            "connect failure: nothing sent"
        );
        assert!(!p.retry_failure(Failure::Error, true, 1));
        let p = policy(&[Condition::Error, Condition::NonIdempotent], "POST");
        assert!(p.retry_failure(Failure::Error, true, 1));
        assert!(policy(&[Condition::Error], "PUT").retry_failure(Failure::Error, true, 1));
    }

    #[test]
    fn status_needs_another_try_and_the_condition() {
        let p = policy(&[Condition::Http404], "GET");
        assert!(p.retry_status(404, 2));
        assert!(
            !p.retry_status(404, 1),
            "the last try's response goes to the client"
        );
        assert!(!p.retry_status(500, 2));
    }

    #[test]
    fn budget_and_streamed_body_stop_retries() {
        let mut p = policy(&[Condition::Error], "GET");
        p.budget = Some(Duration::ZERO);
        assert!(!p.retry_failure(Failure::Error, false, 3));
        let mut p = policy(&[Condition::Error], "GET");
        p.body_streamed = true;
        assert!(p.retry_failure(Failure::Error, false, 1));
        assert!(!p.retry_failure(Failure::Error, true, 1));
        assert_eq!(Failure::Timeout.status(), 504);
        assert_eq!(Failure::InvalidHeader.status(), 502);
    }
}
