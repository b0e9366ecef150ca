//! The limits as a program sees them: a hook may ask a `limit_req` zone
//! itself (a key of its own making: a tenant from a header, a zone chosen
//! by plan), and a limit's refusal is an error whose cause says so, for
//! `fail_to_proxy` to answer as it likes.
//!
//! nginx counterpart: none (nginx's limits are configuration only); the
//! arithmetic is `ngx_http_limit_req_lookup`'s.

use super::req::Lookup;
use super::{LimitStatus, Zones};
use ferry_conf::LimitReq;
use pingora_error::{Error, ErrorType};
use std::time::Duration;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A `limit_req` zone: past its burst.
    Req,
    /// A `limit_conn` zone: the key has `conn` requests being served.
    Conn,
}

/// The cause of a limit's refusal: find it with
/// `e.root_cause().downcast_ref::<LimitRefusal>()` in `fail_to_proxy`.
/// The error's type is `HTTPStatus(status)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusal {
    /// `limit_req` or `limit_conn`.
    pub kind: LimitKind,
    /// The zone that refused.
    pub zone: String,
    /// The status the route (or the hook) answers it with.
    pub status: u16,
}

impl std::fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            LimitKind::Req => "limit_req",
            LimitKind::Conn => "limit_conn",
        };
        write!(f, "refused by {what} zone \"{}\"", self.zone)
    }
}

impl std::error::Error for LimitRefusal {}

impl LimitRefusal {
    /// The error that answers the request with `status` through Ferry's
    /// failure path (`fail_to_proxy`, the route's `error_pages`): return
    /// it from `request_filter`.
    pub fn into_error(self) -> Box<Error> {
        let why = self.to_string();
        Error::because(ErrorType::HTTPStatus(self.status), why, self)
    }
}

/// What a `limit_req` zone said of one request a hook asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitVerdict {
    /// `Passed`, `Delayed` (already waited out), `Rejected`, or a dry
    /// run's form.
    pub status: LimitStatus,
    /// How long the request was made to wait (zero unless `Delayed`).
    pub delay: Duration,
    /// The key's excess in thousandths of a request (nginx logs it as
    /// `excess: 1.500`).
    pub excess: u64,
    /// The refusal, when `status` is `Rejected`.
    pub refusal: Option<LimitRefusal>,
}

/// Ask `rule.zone` about `key` as a route's single `limit_req` entry
/// would: charged unless refused, counted; the delay is the caller's to
/// wait. A zone that is not configured is an error (500).
pub(crate) async fn ask(
    zones: &Zones,
    rule: &LimitReq,
    key: &[u8],
) -> Result<LimitVerdict, Box<Error>> {
    let Some(zone) = zones.req.get(&rule.zone) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            format!("no limit_req zone `{}` in limit_req_zones", rule.zone),
        ));
    };
    let verdict = |status, delay, excess| LimitVerdict {
        status,
        delay,
        excess,
        refusal: None,
    };
    if key.is_empty() {
        return Ok(verdict(LimitStatus::None, Duration::ZERO, 0));
    }
    let looked = zone
        .lookup(key, rule.burst.saturating_mul(1000), true)
        .await;
    let busy = match looked {
        Ok(Some(Lookup::Charged(_))) => None,
        Err(()) if !zone.deny_on_store_error() => {
            return Ok(verdict(LimitStatus::Passed, Duration::ZERO, 0))
        }
        Ok(Some(Lookup::Busy(e))) => Some(e),
        _ => Some(0),
    };
    if let Some(e) = busy {
        let status = if rule.dry_run {
            LimitStatus::RejectedDryRun
        } else {
            LimitStatus::Rejected
        };
        zone.counters.inc(status);
        let refusal = (!rule.dry_run).then(|| LimitRefusal {
            kind: LimitKind::Req,
            zone: zone.name.clone(),
            status: rule.status,
        });
        return Ok(LimitVerdict {
            refusal,
            ..verdict(status, Duration::ZERO, e)
        });
    }
    let excess = match looked {
        Ok(Some(Lookup::Charged(e))) => e,
        _ => 0,
    };
    let d = if rule.nodelay {
        0
    } else {
        excess.saturating_sub(rule.delay.saturating_mul(1000)) * 1000 / zone.rate
    };
    let status = match (d, rule.dry_run) {
        (0, _) => LimitStatus::Passed,
        (_, false) => LimitStatus::Delayed,
        (_, true) => LimitStatus::DelayedDryRun,
    };
    zone.counters.inc(status);
    let delay = if rule.dry_run { 0 } else { d };
    Ok(verdict(status, Duration::from_millis(delay), excess))
}
