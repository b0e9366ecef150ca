//! The proxy cache on a request's way: looked up before the upstream loop
//! ([`lookup`]), answered from an entry ([`serve`]), or filled as the
//! response body streams to the client ([`fill`]) or, for an expired
//! entry answered as it is, by a fetch of its own ([`background`]). The store itself (what
//! may be stored, the files, eviction) is the `ferry-cache` crate.
//!
//! nginx counterpart: `ngx_http_upstream_cache`,
//! `ngx_http_upstream_cache_send` and the `p->cacheable` half of the
//! event pipe.

pub(crate) mod background;
pub(crate) mod fill;
pub(crate) mod lookup;
pub(crate) mod serve;

use ferry_cache::Zone;
use pingora_cache::lock::CacheLock;
use std::sync::Arc;

/// A route's `cache:` as served.
pub struct RouteCacheRt {
    pub conf: ferry_conf::RouteCache,
    pub zone: Arc<Zone>,
    /// One filler per key at a time (`lock: true`), its waiters let go
    /// after `lock_age`.
    pub lock: Option<Arc<CacheLock>>,
}

impl RouteCacheRt {
    pub fn new(conf: &ferry_conf::RouteCache, zone: Arc<Zone>) -> RouteCacheRt {
        RouteCacheRt {
            lock: conf
                .lock
                .then(|| Arc::new(CacheLock::new(conf.lock_age.get()))),
            conf: conf.clone(),
            zone,
        }
    }

    /// Whether `use_stale` lists `c`.
    pub fn stale_on(&self, c: ferry_conf::StaleCondition) -> bool {
        self.conf.use_stale.contains(&c)
    }
}

/// Whether a rendered `bypass` / `no_cache` template says yes: nginx's "not
/// empty and not 0".
pub(crate) fn says_yes(v: &str) -> bool {
    !v.is_empty() && v != "0"
}
