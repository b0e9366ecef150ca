//! Traffic control: a route's `limit_req` (a leaky bucket per key, local
//! or in Redis) and `limit_conn` (requests per key being served), applied
//! once the request filter has run and before the request body, the cache
//! and the upstream loop. The zones are built with each configuration and
//! kept across a reload when their key and rate stay (their counts with
//! them).
//!
//! nginx counterpart: `ngx_http_limit_req_module` and
//! `ngx_http_limit_conn_module`, the preaccess phase (`limit_req` first,
//! then `limit_conn`, as nginx orders their handlers).

pub(crate) mod admit;
pub(crate) mod api;
pub(crate) mod conn;
pub(crate) mod req;
pub(crate) mod status;
pub(crate) mod store_redis;

use crate::metrics::metrics;
use ferry_conf::{Config, LimitConnZone, LimitReqZone, OnStoreError, Segment, Store, Template};
use req::{Buckets, Lookup};
pub use status::LimitStatus;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use store_redis::{Mode, RedisBuckets};

/// Milliseconds on the process's monotonic clock (nginx's
/// `ngx_current_msec`).
pub(crate) fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A zone's `ferry_limit_requests_total` series, one per result, found
/// once when the zone is built (not by label on every request).
pub(crate) struct Counters([prometheus::IntCounter; 5]);

impl Counters {
    fn new(zone: &str) -> Counters {
        let c = |s: LimitStatus| {
            metrics()
                .limit
                .requests
                .with_label_values(&[zone, s.label()])
        };
        Counters([
            c(LimitStatus::Passed),
            c(LimitStatus::Delayed),
            c(LimitStatus::Rejected),
            c(LimitStatus::DelayedDryRun),
            c(LimitStatus::RejectedDryRun),
        ])
    }

    /// Count one request's result.
    pub(crate) fn inc(&self, status: LimitStatus) {
        let i = match status {
            LimitStatus::None | LimitStatus::Passed => 0,
            LimitStatus::Delayed => 1,
            LimitStatus::Rejected => 2,
            LimitStatus::DelayedDryRun => 3,
            LimitStatus::RejectedDryRun => 4,
        };
        self.0[i].inc();
    }
}

/// Where a `limit_req` zone's buckets live.
#[derive(Clone)]
pub(crate) enum ReqStore {
    Local(Arc<Buckets>),
    Redis(Arc<RedisBuckets>),
}

/// A `limit_req` zone as served.
pub(crate) struct ReqZone {
    pub name: String,
    pub conf: LimitReqZone,
    /// Thousandths of a request per second.
    pub rate: u64,
    pub store: ReqStore,
    pub counters: Counters,
}

impl ReqZone {
    /// nginx's lookup; `Err` when the store could not answer (counted).
    pub(crate) async fn lookup(
        &self,
        key: &[u8],
        burst: u64,
        account: bool,
    ) -> Result<Option<Lookup>, ()> {
        match &self.store {
            ReqStore::Local(b) => Ok(b.lookup(key, self.rate, burst, account, now_ms())),
            ReqStore::Redis(r) => {
                let mode = if account { Mode::Charge } else { Mode::Check };
                match r.lookup(key, self.rate, burst, mode).await {
                    Ok(l) => Ok(Some(l)),
                    Err(_) => {
                        self.store_error();
                        Err(())
                    }
                }
            }
        }
    }

    /// nginx's account step: charge a key every zone let through; its
    /// excess (0 when the store could not be reached).
    pub(crate) async fn account(&self, key: &[u8]) -> u64 {
        match &self.store {
            ReqStore::Local(b) => b.account(key, self.rate, now_ms()),
            ReqStore::Redis(r) => match r.lookup(key, self.rate, 0, Mode::Force).await {
                Ok(Lookup::Charged(e) | Lookup::Busy(e) | Lookup::Again(e)) => e,
                Err(_) => {
                    self.store_error();
                    0
                }
            },
        }
    }

    /// A pinned key let go uncharged.
    pub(crate) fn unpin(&self, key: &[u8]) {
        if let ReqStore::Local(b) = &self.store {
            b.unpin(key);
        }
    }

    fn store_error(&self) {
        metrics()
            .limit
            .store_errors
            .with_label_values(&[&self.name])
            .inc();
    }

    /// Whether a request is refused while the store cannot be reached.
    pub(crate) fn deny_on_store_error(&self) -> bool {
        self.conf.on_store_error == OnStoreError::Deny
    }
}

/// A `limit_conn` zone as served.
pub(crate) struct ConnZone {
    pub name: String,
    pub conf: LimitConnZone,
    pub counts: Arc<conn::Counts>,
    pub counters: Counters,
}

/// The key of a request in a zone: the address's bytes for
/// `$binary_remote_addr` alone (nginx's 4 or 16 bytes), else the text.
pub(crate) fn key_bytes(
    key: &Template,
    ip: Option<std::net::IpAddr>,
    text: impl FnOnce() -> String,
) -> Vec<u8> {
    if let [Segment::Var(ferry_conf::Variable::BinaryRemoteAddr)] = key.segments.as_slice() {
        return match ip {
            Some(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
            Some(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
            None => Vec::new(),
        };
    }
    text().into_bytes()
}

/// Every zone of a configuration, by name.
#[derive(Default)]
pub(crate) struct Zones {
    pub req: HashMap<String, Arc<ReqZone>>,
    pub conn: HashMap<String, Arc<ConnZone>>,
}

impl Zones {
    /// The zones of `config`; with `previous` (a reload), a zone whose
    /// key, rate, store and size stay keeps its buckets or counts.
    pub(crate) fn build(config: &Config, previous: Option<&Zones>) -> Result<Zones, String> {
        let mut zones = Zones::default();
        for (name, z) in config.limit_req_zones.iter() {
            let old = previous.and_then(|p| p.req.get(name));
            let store = match old {
                Some(o) if same_req(&o.conf, z) => o.store.clone(),
                _ => match &z.store {
                    Store::Local => ReqStore::Local(Arc::new(Buckets::new(z.max_keys))),
                    Store::Redis(url) => ReqStore::Redis(Arc::new(RedisBuckets::new(name, url)?)),
                },
            };
            let zone = ReqZone {
                name: name.to_string(),
                conf: z.clone(),
                rate: z.rate.millis_per_second().max(1),
                store,
                counters: Counters::new(name),
            };
            zones.req.insert(name.to_string(), Arc::new(zone));
        }
        for (name, z) in config.limit_conn_zones.iter() {
            let old = previous.and_then(|p| p.conn.get(name));
            let counts = match old {
                Some(o) if o.conf == *z => o.counts.clone(),
                _ => conn::Counts::new(z.max_keys),
            };
            let zone = ConnZone {
                name: name.to_string(),
                conf: z.clone(),
                counts,
                counters: Counters::new(name),
            };
            zones.conn.insert(name.to_string(), Arc::new(zone));
        }
        Ok(zones)
    }
}

/// Whether a reloaded zone may keep its buckets (nginx keeps a zone whose
/// key is the same; Ferry also wants the rate and the store unchanged).
fn same_req(old: &LimitReqZone, new: &LimitReqZone) -> bool {
    old.key == new.key
        && old.rate == new.rate
        && old.store == new.store
        && old.max_keys == new.max_keys
}
