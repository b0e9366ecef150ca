//! What a request's limits did: nginx's `$limit_req_status` and
//! `$limit_conn_status`, kept in the request's record (a leaf: it uses
//! nothing of Ferry's).
//!
//! nginx counterpart: `ngx_http_limit_req_status` and
//! `ngx_http_limit_conn_status`, the variables' values.

/// nginx's `$limit_req_status` and `$limit_conn_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitStatus {
    /// No zone counted the request (no limit, or every key empty).
    #[default]
    None,
    /// Within the limit.
    Passed,
    /// Within the burst, made to wait to the rate.
    Delayed,
    /// Refused.
    Rejected,
    /// Would have waited (`dry_run`): served at once.
    DelayedDryRun,
    /// Would have been refused (`dry_run`): served.
    RejectedDryRun,
}

impl LimitStatus {
    /// The variable's text ("" for [`LimitStatus::None`]).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitStatus::None => "",
            LimitStatus::Passed => "PASSED",
            LimitStatus::Delayed => "DELAYED",
            LimitStatus::Rejected => "REJECTED",
            LimitStatus::DelayedDryRun => "DELAYED_DRY_RUN",
            LimitStatus::RejectedDryRun => "REJECTED_DRY_RUN",
        }
    }

    /// The `result` label of `ferry_limit_requests_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            LimitStatus::None | LimitStatus::Passed => "passed",
            LimitStatus::Delayed => "delayed",
            LimitStatus::Rejected => "rejected",
            LimitStatus::DelayedDryRun => "delayed_dry_run",
            LimitStatus::RejectedDryRun => "rejected_dry_run",
        }
    }
}
