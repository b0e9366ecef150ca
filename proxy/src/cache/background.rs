//! `background_update`: an expired entry answers at once (`STALE`) while a
//! fetch of its own, with no client, brings the new response into the
//! entry (or, when revalidating, a 304 refreshes it). The fetch is a
//! subrequest: the route's group through the upstream loop (balancer,
//! passive health, keepalive pool, `next_upstream`), its body written
//! straight into the entry's file. Like every subrequest it runs no hooks:
//! nginx's decision alone says whether the response is stored.
//!
//! nginx counterpart: `proxy_cache_background_update`, a background
//! subrequest (`ngx_http_upstream_cache_background_update`).

use crate::cache::fill::Fill;
use crate::cache::upstream_request;
use crate::cache::RouteCacheRt;
use crate::hooks::session::Session;
use crate::runtime::RouteRt;
use crate::upstream::subrequest::{fetch_to, BodySink};
use ferry_cache::{Decision, Entry, Key, Zone};
use ferry_filters::headers::BodyFraming;
use pingora_cache::key::CacheKey;
use pingora_cache::lock::{CacheKeyLock, CacheLock, LockStatus, WritePermit};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Start the update of `stale` (the key's expired entry); `permit`: the
/// lock this update holds, when the route locks. The key is marked
/// updating in its zone (`Zone::begin_update`); the update ends it.
pub(crate) fn start(
    s: &Session<'_>,
    route: &RouteRt,
    rc: &RouteCacheRt,
    key: &Key,
    stale: &Entry,
    permit: Option<(CacheKey, WritePermit)>,
) -> Result<()> {
    let Some(group) = route.conf.upstream.clone() else {
        rc.zone.end_update(key);
        return Ok(());
    };
    let remote = s.request.client_ip_text();
    let vars = s.vars(&remote, &group);
    let mut req = route
        .request_plan
        .build(s.req_header(), &vars, BodyFraming::None)?;
    let validators = rc.conf.revalidate.then_some(&stale.head.header.headers);
    upstream_request(&rc.conf, &mut req, validators)?;
    let mut sink = Sink {
        zone: rc.zone.clone(),
        conf: rc.conf.clone(),
        key: key.clone(),
        headers: s.req_header().headers.clone(),
        stale: (stale.path.clone(), stale.head.header.status.as_u16()),
        revalidating: validators.is_some(),
        fill: None,
    };
    let lock = permit.and_then(|p| Some((rc.lock.clone()?, p)));
    let upstreams = s.runtime.upstreams.clone();
    let proxy = route.conf.proxy.clone();
    let client_ip = s.request.client_addr.map(|a| a.ip());
    tokio::spawn(async move {
        let got = fetch_to(
            &upstreams,
            &proxy,
            &group,
            req,
            bytes::Bytes::new(),
            client_ip,
            &mut sink,
        )
        .await;
        match got {
            Ok(_) => sink.finish().await,
            Err(e) => log::warn!(
                "cache {}: background update of {}: {e}",
                sink.zone.name,
                sink.key.text
            ),
        }
        sink.zone.end_update(&sink.key);
        release(lock);
    });
    Ok(())
}

fn release(lock: Option<(Arc<CacheLock>, (CacheKey, WritePermit))>) {
    if let Some((lock, (key, permit))) = lock {
        lock.release(&key, permit, LockStatus::Done);
    }
}

/// The update's response, into the entry.
struct Sink {
    zone: Arc<Zone>,
    conf: ferry_conf::RouteCache,
    key: Key,
    /// The request's headers (the variant a `Vary` selects).
    headers: http::HeaderMap,
    /// The stale entry's file and status.
    stale: (PathBuf, u16),
    revalidating: bool,
    fill: Option<Fill>,
}

impl BodySink for Sink {
    fn header(&mut self, header: &ResponseHeader) -> bool {
        let now = SystemTime::now();
        if self.revalidating && header.status == 304 {
            if let Decision::Store(fresh) =
                ferry_cache::decide(&self.conf, self.stale.1, header, now)
            {
                if let Err(e) = self.zone.refresh(&self.stale.0, fresh) {
                    log::error!("cache {}: refreshing an entry: {e}", self.zone.name);
                }
            }
            return false;
        }
        let status = header.status.as_u16();
        let Decision::Store(fresh) = ferry_cache::decide(&self.conf, status, header, now) else {
            return false;
        };
        if status == 206 {
            return false;
        }
        self.fill = Fill::new(self.zone.clone(), &self.key, &self.headers, header, fresh);
        self.fill.is_some()
    }

    fn piece(&mut self, piece: &[u8]) -> Result<()> {
        if let Some(f) = &mut self.fill {
            f.append(piece.len(), Some(&bytes::Bytes::copy_from_slice(piece)));
        }
        Ok(())
    }
}

impl Sink {
    /// The body was read to its end: the entry goes in place.
    async fn finish(&mut self) {
        if let Some(mut f) = self.fill.take() {
            f.ended = true;
            f.finish().await;
        }
    }
}
