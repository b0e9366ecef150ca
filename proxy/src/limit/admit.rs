//! A request's admission by its route's limits: every `limit_req` entry
//! (a delay waited out on a timer, holding no thread and no server), then
//! every `limit_conn` entry (a place held until the request ends). A
//! refusal is an error with the limit's status, answered by Ferry's one
//! failure path (`fail_to_proxy`, the route's `error_pages`).
//!
//! nginx counterpart: `ngx_http_limit_req_handler` (with
//! `ngx_http_limit_req_delay`) and `ngx_http_limit_conn_handler`.

use super::api::{LimitKind, LimitRefusal};
use super::conn::{Full, Held};
use super::req::Lookup;
use super::{key_bytes, LimitStatus, ReqZone};
use crate::hooks::session::Session;
use ferry_conf::{LimitReq, Route, Template};
use pingora_error::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::Duration;

/// What a request holds while it is served: its `limit_conn` places.
pub(crate) struct Admitted {
    _held: Vec<Held>,
}

/// Admit the request by its route's limits, or the refusal to answer.
pub(crate) async fn admit(s: &mut Session<'_>) -> Result<Admitted, Box<Error>> {
    let Some(route) = s.request.route.map(|i| &s.runtime.routes[i].conf) else {
        return Ok(Admitted { _held: Vec::new() });
    };
    if !route.limit_req.entries.is_empty() {
        let delay = limit_req(s, route).await?;
        if !delay.is_zero() && !wait(s, delay).await {
            let mut e = Error::explain(ErrorType::ConnectionClosed, "client left while delayed");
            e.esource = ErrorSource::Downstream;
            return Err(e);
        }
    }
    let held = limit_conn(s, route)?;
    Ok(Admitted { _held: held })
}

/// A delayed request waits on a timer, watching its client (nginx's
/// `ngx_http_test_reading`): `false` when the client left.
async fn wait(s: &mut Session<'_>, delay: Duration) -> bool {
    let watch = s.downstream.http1_fd();
    crate::client::liveness::unless_client_leaves(watch, tokio::time::sleep(delay))
        .await
        .is_some()
}

/// The request's key in a zone ("" is not counted).
fn key_of(s: &Session<'_>, key: &Template) -> Vec<u8> {
    let ip = s.request.client_addr.map(|a| a.ip());
    key_bytes(key, ip, || {
        let remote = s.request.client_ip_text();
        s.vars(&remote, "").render(key)
    })
}

/// nginx's `delay` in thousandths: `nodelay` is no delay at all.
fn delay_of(rule: &LimitReq) -> u64 {
    if rule.nodelay {
        u64::MAX / 2
    } else {
        rule.delay.saturating_mul(1000)
    }
}

/// The wait for `excess` in a zone (nginx: `(excess - delay) * 1000 / rate`).
fn wait_ms(excess: u64, rule: &LimitReq, rate: u64) -> u64 {
    let d = delay_of(rule);
    if excess <= d {
        0
    } else {
        (excess - d).saturating_mul(1000) / rate.max(1)
    }
}

/// The entries of the route with their zones (validated: all are there).
fn entries<'r>(s: &Session<'_>, route: &'r Route) -> Vec<(Arc<ReqZone>, &'r LimitReq)> {
    route
        .limit_req
        .entries
        .iter()
        .filter_map(|e| Some((s.runtime.limit.req.get(&e.zone)?.clone(), e)))
        .collect()
}

/// nginx's `limit_req` handler: the zones looked at in order, the last
/// one charging; a refusal lets the pinned ones go uncharged; otherwise
/// every pinned one is charged and the longest delay wins.
async fn limit_req(s: &mut Session<'_>, route: &Route) -> Result<Duration, Box<Error>> {
    let list = entries(s, route);
    let dry = route.limit_req.entries.first().is_some_and(|e| e.dry_run);
    let status = route.limit_req.entries.first().map_or(503, |e| e.status);
    let mut pinned: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut decided: Option<(usize, Lookup)> = None;
    // Why a refusal that is no burst's: the store away, the zone full.
    let mut other: Option<&'static str> = None;
    let mut any = false;
    for (i, (zone, rule)) in list.iter().enumerate() {
        let key = key_of(s, &zone.conf.key);
        if key.is_empty() || key.len() > 65535 {
            continue;
        }
        any = true;
        let last = i + 1 == list.len();
        match zone
            .lookup(&key, rule.burst.saturating_mul(1000), last)
            .await
        {
            Err(()) if zone.deny_on_store_error() => {
                decided = Some((i, Lookup::Busy(0)));
                other = Some("its store cannot be reached (on_store_error: deny)");
                break;
            }
            Err(()) => continue,
            // A zone full of pinned keys refuses (nginx: no memory).
            Ok(None) => {
                decided = Some((i, Lookup::Busy(0)));
                other = Some("it has no room for a new key (max_keys)");
                break;
            }
            Ok(Some(Lookup::Again(_))) => pinned.push((i, key)),
            Ok(Some(l)) => {
                decided = Some((i, l));
                break;
            }
        }
    }
    if let Some((i, Lookup::Busy(excess))) = decided {
        for (j, key) in &pinned {
            list[*j].0.unpin(key);
        }
        return refuse(s, &list[i].0, (excess, other), status, dry);
    }
    if !any {
        return Ok(Duration::ZERO);
    }
    let (mut delay, mut by, mut excess) = match decided {
        Some((i, Lookup::Charged(e))) => (wait_ms(e, list[i].1, list[i].0.rate), i, e),
        _ => (0, list.len() - 1, 0),
    };
    for (j, key) in pinned.iter().rev() {
        let (zone, rule) = &list[*j];
        let e = zone.account(key).await;
        let d = wait_ms(e, rule, zone.rate);
        if d > delay {
            (delay, by, excess) = (d, *j, e);
        }
    }
    let mut counted: Vec<usize> = pinned.iter().map(|(j, _)| *j).collect();
    counted.extend(decided.map(|(i, _)| i));
    passed(s, &list, &counted, (by, delay, excess), dry)
}

/// A request the zones let through: counted in each, logged when delayed.
fn passed(
    s: &mut Session<'_>,
    list: &[(Arc<ReqZone>, &LimitReq)],
    counted: &[usize],
    (by, delay, excess): (usize, u64, u64),
    dry: bool,
) -> Result<Duration, Box<Error>> {
    let status = match (delay, dry) {
        (0, _) => LimitStatus::Passed,
        (_, false) => LimitStatus::Delayed,
        (_, true) => LimitStatus::DelayedDryRun,
    };
    s.request.limit_req_status = status;
    for &i in counted {
        let result = if i == by { status } else { LimitStatus::Passed };
        list[i].0.counters.inc(result);
    }
    if delay == 0 {
        return Ok(Duration::ZERO);
    }
    log::warn!(
        "delaying request{}, excess: {}.{:03}, by zone \"{}\", {}",
        if dry { ", dry run" } else { "" },
        excess / 1000,
        excess % 1000,
        list.get(by).map_or("", |(z, _)| z.name.as_str()),
        s.summary()
    );
    Ok(if dry {
        Duration::ZERO
    } else {
        Duration::from_millis(delay)
    })
}

/// A request past a zone's burst: counted, logged, and (unless a dry
/// run) the error that answers it.
fn refuse(
    s: &mut Session<'_>,
    zone: &ReqZone,
    (excess, other): (u64, Option<&str>),
    status: u16,
    dry: bool,
) -> Result<Duration, Box<Error>> {
    let result = if dry {
        LimitStatus::RejectedDryRun
    } else {
        LimitStatus::Rejected
    };
    s.request.limit_req_status = result;
    zone.counters.inc(result);
    let zone = zone.name.as_str();
    let dry_text = if dry { ", dry run" } else { "" };
    let why = match other {
        Some(reason) => format!("limiting requests{dry_text} by zone \"{zone}\": {reason}"),
        None => format!(
            "limiting requests{dry_text}, excess: {}.{:03} by zone \"{zone}\"",
            excess / 1000,
            excess % 1000
        ),
    };
    refusal(s, why, LimitKind::Req, zone, status, dry).map(|()| Duration::ZERO)
}

/// Log a refusal as nginx does (the failure path logs a 5xx itself) and
/// make its error, unless a dry run.
fn refusal(
    s: &Session<'_>,
    why: String,
    kind: LimitKind,
    zone: &str,
    status: u16,
    dry: bool,
) -> Result<(), Box<Error>> {
    if dry || status < 500 {
        log::error!("{why}, {}", s.summary());
    }
    if dry {
        return Ok(());
    }
    let cause = LimitRefusal {
        kind,
        zone: zone.to_string(),
        status,
    };
    Err(Error::because(ErrorType::HTTPStatus(status), why, cause))
}

/// nginx's `limit_conn` handler: a place in every zone, or none at all.
fn limit_conn(s: &mut Session<'_>, route: &Route) -> Result<Vec<Held>, Box<Error>> {
    let mut held = Vec::new();
    let Some(first) = route.limit_conn.entries.first() else {
        return Ok(held);
    };
    let (status, dry) = (first.status, first.dry_run);
    for e in &route.limit_conn.entries {
        let Some(zone) = s.runtime.limit.conn.get(&e.zone).cloned() else {
            continue;
        };
        let key = key_of(s, &zone.conf.key);
        if key.is_empty() || key.len() > 255 {
            continue;
        }
        s.request.limit_conn_status = LimitStatus::Passed;
        match zone.counts.take(&key, e.conn) {
            Ok(h) => {
                held.push(h);
                zone.counters.inc(LimitStatus::Passed);
            }
            Err(full) => {
                // nginx lets go of every place this request took.
                drop(held);
                let result = if dry {
                    LimitStatus::RejectedDryRun
                } else {
                    LimitStatus::Rejected
                };
                s.request.limit_conn_status = result;
                zone.counters.inc(result);
                let why = match full {
                    Full::Key => format!(
                        "limiting connections{} by zone \"{}\"",
                        if dry { ", dry run," } else { "" },
                        zone.name
                    ),
                    Full::Zone => format!("limit_conn zone \"{}\" is full", zone.name),
                };
                refusal(s, why, LimitKind::Conn, &zone.name, status, dry)?;
                return Ok(Vec::new());
            }
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(burst: u64, nodelay: bool, delay: u64) -> LimitReq {
        LimitReq {
            zone: "z".into(),
            burst,
            nodelay,
            delay,
            status: 503,
            dry_run: false,
        }
    }

    #[test]
    fn delays_are_nginx_arithmetic() {
        // 10r/s: a request's worth drains in 100 ms.
        let queued = rule(5, false, 0);
        assert_eq!(wait_ms(0, &queued, 10_000), 0);
        assert_eq!(wait_ms(1000, &queued, 10_000), 100);
        assert_eq!(wait_ms(2500, &queued, 10_000), 250);
        // delay=2: the first two excess requests go at once.
        let two = rule(5, false, 2);
        assert_eq!(wait_ms(2000, &two, 10_000), 0);
        assert_eq!(wait_ms(3000, &two, 10_000), 100);
        assert_eq!(wait_ms(5000, &two, 10_000), 300);
        // nodelay: never.
        assert_eq!(wait_ms(5000, &rule(5, true, 0), 10_000), 0);
        // 1r/m (16 thousandths a second): 1.000 over is 62.5 s.
        assert_eq!(wait_ms(1000, &queued, 16), 62_500);
    }
}
