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
use http::header;
use pingora_cache::lock::CacheLock;
use pingora_error::Result;
use pingora_http::RequestHeader;
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

/// The upstream request of a cached route (nginx's `proxy_cache_headers`):
/// no client validators or ranges (the whole response is what is stored),
/// a HEAD fetched as GET with `convert_head`, and a stale entry's
/// validators (`validators`: its header) when revalidating.
pub(crate) fn upstream_request(
    conf: &ferry_conf::RouteCache,
    req: &mut RequestHeader,
    validators: Option<&http::HeaderMap>,
) -> Result<()> {
    for h in [
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::RANGE,
        header::IF_RANGE,
    ] {
        req.remove_header(&h);
    }
    if conf.convert_head && req.method == http::Method::HEAD {
        req.set_method(http::Method::GET);
    }
    if let Some(h) = validators {
        if let Some(etag) = h.get(header::ETAG) {
            req.insert_header(header::IF_NONE_MATCH, etag.clone())?;
        }
        if let Some(lm) = h.get(header::LAST_MODIFIED) {
            req.insert_header(header::IF_MODIFIED_SINCE, lm.clone())?;
        }
    }
    Ok(())
}
