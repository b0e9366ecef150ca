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
use ferry_lb::Feedback;
use pingora_error::{Error, ErrorType};
use std::time::{Duration, Instant};

/// What `upstream_response_filter` says about retrying this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDecision {
    /// Follow `next_upstream`.
    Default,
    /// Go to the next server (if a try is left), whatever the status.
    Retry,
    /// Use this response, whatever `next_upstream` says.
    Use,
}

/// Why a try failed before its response could be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Error,
    Timeout,
    InvalidHeader,
    /// No server could be chosen ("no live upstreams").
    NoLive,
    /// The client failed while its body streamed upstream: never retried,
    /// never the server's fault; the client gets `status` (400 for a
    /// broken body, 408 for a stall, 499 for a client gone: no answer).
    Client {
        status: u16,
    },
}

impl Failure {
    /// Classify a Pingora error from connecting, sending or reading the header.
    pub fn of(e: &Error) -> Failure {
        use ErrorType::*;
        if e.esource() == &pingora_error::ErrorSource::Downstream {
            let status = body_failure_status(e);
            return Failure::Client { status };
        }
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
            Failure::NoLive | Failure::Client { .. } => None,
        }
    }

    /// What the client gets when this was the last failure.
    pub fn status(self) -> u16 {
        match self {
            Failure::Timeout => 504,
            Failure::Client { status } => status,
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

/// What a try came to, as the retry rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Connecting, sending or reading the header failed.
    Failed {
        failure: Failure,
        /// Sending the request had started (nginx `u->request_sent`).
        request_sent: bool,
    },
    /// A response header arrived with `status`; `hook` is what
    /// `upstream_response_filter` said of it.
    Status { status: u16, hook: RetryDecision },
}

/// The verdict on a try: nginx's `ngx_http_upstream_next` as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go to the next server.
    Next,
    /// This response goes to the client.
    Respond,
    /// No response to use: the client gets this status (502, 504).
    Fail(u16),
}

impl Outcome {
    /// How the try counts for the server's passive health: a retried
    /// 403 or 404 never counts (nginx `NGX_PEER_NEXT`); every other
    /// retried status and every failure does; a response used does not.
    pub(crate) fn feedback(self, verdict: Verdict) -> Feedback {
        match (self, verdict) {
            (
                Outcome::Failed {
                    failure: Failure::Client { .. },
                    ..
                },
                _,
            ) => Feedback::Next,
            (Outcome::Failed { .. }, _) => Feedback::Failed,
            (
                Outcome::Status {
                    status: 403 | 404, ..
                },
                Verdict::Next,
            ) => Feedback::Next,
            (Outcome::Status { .. }, Verdict::Next) => Feedback::Failed,
            (Outcome::Status { .. }, _) => Feedback::Ok,
        }
    }
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

    /// Whether a try may follow this one at all, whatever the conditions:
    /// one is left (`tries_left` counts this one) and the
    /// `next_upstream_timeout` budget is not spent.
    pub(crate) fn may_go_on(&self, tries_left: u32) -> bool {
        tries_left > 1 && self.budget.is_none_or(|b| self.started.elapsed() < b)
    }

    /// The one retry decision every caller uses. `tries_left` counts this
    /// try still (it is accounted after the verdict).
    pub(crate) fn decide(&self, outcome: Outcome, tries_left: u32) -> Verdict {
        match outcome {
            Outcome::Failed {
                failure,
                request_sent,
            } => {
                let go_on = tries_left > 1
                    && failure
                        .condition()
                        .is_some_and(|c| self.allows(c, request_sent));
                if go_on {
                    Verdict::Next
                } else {
                    Verdict::Fail(failure.status())
                }
            }
            Outcome::Status { status, hook } => {
                let next = match hook {
                    RetryDecision::Use => false,
                    RetryDecision::Retry => tries_left > 1,
                    RetryDecision::Default => {
                        tries_left > 1
                            && Condition::for_status(status).is_some_and(|c| self.allows(c, true))
                    }
                };
                if next {
                    Verdict::Next
                } else {
                    Verdict::Respond
                }
            }
        }
    }
}

/// nginx's 499: the client closed the connection; nothing is answered.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// The answer to a client whose request body failed to arrive: 400 for a
/// broken one (bad chunked framing), 408 for a stall, 499 when it left.
pub(crate) fn body_failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::ReadTimedout => 408,
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error => 400,
        // Pingora's body reader: `InvalidChunk`, `PrematureBodyEnd`.
        ErrorType::Custom("InvalidChunk") => 400,
        // `request_body_filter` refused the body.
        ErrorType::HTTPStatus(code) => *code,
        _ => CLIENT_CLOSED,
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

    /// Whether a failure goes to the next server with `left` tries left
    /// (this one included).
    fn next_after(p: &Policy, failure: Failure, request_sent: bool, left: u32) -> bool {
        let o = Outcome::Failed {
            failure,
            request_sent,
        };
        p.decide(o, left) == Verdict::Next
    }

    fn next_on(p: &Policy, status: u16, left: u32) -> bool {
        let hook = RetryDecision::Default;
        p.decide(Outcome::Status { status, hook }, left) == Verdict::Next
    }

    #[test]
    fn default_retries_error_and_timeout_only() {
        let p = Policy {
            conditions: NextUpstream::default(),
            ..policy(&[], "GET")
        };
        assert!(next_after(&p, Failure::Error, true, 2));
        assert!(next_after(&p, Failure::Timeout, true, 2));
        assert!(!next_after(&p, Failure::InvalidHeader, true, 2));
        assert!(!next_after(&p, Failure::Error, true, 1));
        assert!(!next_on(&p, 502, 2));
    }

    #[test]
    fn post_is_resent_only_before_sending_or_with_non_idempotent() {
        let p = policy(&[Condition::Error], "POST");
        assert!(
            next_after(&p, Failure::Error, false, 2),
            "connect failure: nothing sent"
        );
        assert!(!next_after(&p, Failure::Error, true, 2));
        let p = policy(&[Condition::Error, Condition::NonIdempotent], "POST");
        assert!(next_after(&p, Failure::Error, true, 2));
        assert!(next_after(
            &policy(&[Condition::Error], "PUT"),
            Failure::Error,
            true,
            2
        ));
    }

    #[test]
    fn status_needs_another_try_and_the_condition() {
        let p = policy(&[Condition::Http404], "GET");
        assert!(next_on(&p, 404, 2));
        assert!(
            !next_on(&p, 404, 1),
            "the last try's response goes to the client"
        );
        assert!(!next_on(&p, 500, 2));
    }

    #[test]
    fn the_hook_overrides_the_status_rules_but_not_the_budget_of_tries() {
        let p = policy(&[], "GET");
        let status = |hook| Outcome::Status { status: 200, hook };
        assert_eq!(p.decide(status(RetryDecision::Retry), 2), Verdict::Next);
        assert_eq!(p.decide(status(RetryDecision::Retry), 1), Verdict::Respond);
        let p = policy(&[Condition::Http502], "GET");
        let bad = Outcome::Status {
            status: 502,
            hook: RetryDecision::Use,
        };
        assert_eq!(p.decide(bad, 3), Verdict::Respond);
    }

    #[test]
    fn failures_and_retried_statuses_count_but_404_never_does() {
        let failed = Outcome::Failed {
            failure: Failure::Timeout,
            request_sent: false,
        };
        assert_eq!(failed.feedback(Verdict::Fail(504)), Feedback::Failed);
        let status = |status| Outcome::Status {
            status,
            hook: RetryDecision::Default,
        };
        assert_eq!(status(502).feedback(Verdict::Next), Feedback::Failed);
        assert_eq!(status(404).feedback(Verdict::Next), Feedback::Next);
        assert_eq!(status(502).feedback(Verdict::Respond), Feedback::Ok);
    }

    #[test]
    fn budget_and_streamed_body_stop_retries() {
        let mut p = policy(&[Condition::Error], "GET");
        p.budget = Some(Duration::ZERO);
        assert!(!next_after(&p, Failure::Error, false, 3));
        let mut p = policy(&[Condition::Error], "GET");
        p.body_streamed = true;
        assert!(next_after(&p, Failure::Error, false, 2));
        assert!(!next_after(&p, Failure::Error, true, 2));
        let timeout = Outcome::Failed {
            failure: Failure::Timeout,
            request_sent: true,
        };
        assert_eq!(p.decide(timeout, 1), Verdict::Fail(504));
        assert_eq!(Failure::InvalidHeader.status(), 502);
    }
}
