//! Before the first try: is this request one the route's cache serves,
//! what is its key, is a fresh entry there (answer it), and otherwise what
//! the fetch must know: the expired entry (to revalidate, or to answer
//! from when the upstream fails as `use_stale` allows), whether the
//! response may be stored (`no_cache`, `min_uses`, a lock waited out), and
//! the lock this request holds while it fills the entry.
//!
//! nginx counterpart: `ngx_http_upstream_cache` (methods, `bypass`,
//! `ngx_http_file_cache_open`, the lock's wait loop, `use_stale updating`)
//! and the cache part of `ngx_http_upstream_process_header`
//! (`revalidate`'s 304, `use_stale` on an upstream's status).

use crate::cache::{background, says_yes, serve, RouteCacheRt};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::End;
use crate::record::{CacheStatus, TryOutcome};
use crate::runtime::RouteRt;
use crate::upstream::tries::{Chosen, Response};
use ferry_cache::{Decision, Entry, Found, Key};
use ferry_conf::StaleCondition;
use ferry_filters::fields::Fields;
use http::header;
use pingora_cache::key::CacheKey;
use pingora_cache::lock::{CacheKeyLock, LockStatus, Locked, WritePermit};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the lookup left for the request.
pub(crate) enum Look<'r> {
    /// Not a request this cache serves (its method).
    Pass,
    /// Answered from the cache.
    Answered(End),
    /// Go to the upstream.
    Fetch(Fetch<'r>),
}

/// A request going to the upstream on behalf of the cache.
pub(crate) struct Fetch<'r> {
    pub rc: &'r RouteCacheRt,
    pub key: Key,
    /// An expired entry of the key.
    pub stale: Option<std::sync::Arc<Entry>>,
    /// The response may be stored.
    pub store: bool,
    /// The request asks for the stale entry's validators.
    pub revalidating: bool,
    /// This request fills the entry; the others wait on it.
    permit: Option<(CacheKey, WritePermit)>,
    /// The response was stored.
    stored: AtomicBool,
}

fn rendered(s: &Session<'_>, route: &RouteRt, t: &ferry_conf::Template) -> String {
    let remote = s.remote_text([t]);
    let group = route.conf.upstream.as_deref().unwrap_or("");
    s.vars(&remote, group).render(t)
}

/// The zone's entry for `key`: one it keeps open when its file is
/// unchanged, else opened and read on tokio's blocking threads. The event
/// loop never waits on the disk (nor on a file that would block).
async fn find(rc: &RouteCacheRt, key: &Key, headers: Fields<'_>) -> Found {
    if let Some(found) = rc.zone.find_open(key, &ByName(headers)) {
        return found;
    }
    let (zone, key, headers) = (rc.zone.clone(), key.clone(), header_map(headers));
    tokio::task::spawn_blocking(move || zone.find(&key, &headers))
        .await
        .unwrap_or(Found::Missing)
}

/// A request's fields by name, for a variant key.
struct ByName<'a>(Fields<'a>);

impl ferry_cache::Values for ByName<'_> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name)
    }
}

/// A request's fields as a map of its own (for a blocking thread).
fn header_map(fields: Fields<'_>) -> http::HeaderMap {
    if let Fields::Header(h) = fields {
        return h.headers.clone();
    }
    let mut map = http::HeaderMap::with_capacity(fields.len());
    fields.for_each(|name, value| {
        let name = http::HeaderName::from_bytes(name);
        let value = http::HeaderValue::from_bytes(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    });
    map
}

/// Look the request up in the route's cache.
pub(crate) async fn look<'r, P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &'r RouteRt,
    rc: &'r RouteCacheRt,
) -> Result<Look<'r>> {
    let method = s.downstream.method();
    if !(method == "GET" || method == "HEAD" || rc.conf.methods.iter().any(|m| m == method)) {
        return Ok(Look::Pass);
    }
    if !app.request_cache_filter(s, ctx)? {
        return Ok(Look::Pass);
    }
    let mut fetch = prepare(app, s, ctx, route, rc)?;
    if s.request.cache_status == CacheStatus::Bypass {
        return Ok(Look::Fetch(fetch));
    }
    let waited_since = Instant::now();
    loop {
        let found = find(rc, &fetch.key, s.downstream.fields()).await;
        let invalidated = match &found {
            Found::Entry(e, _) => {
                let fresh = e.head.expires > ferry_cache::zone::now();
                app.cache_hit_filter(s, &e.head.header, fresh, ctx)?
            }
            Found::Missing => false,
        };
        match found {
            Found::Entry(e, _) if !invalidated && e.head.expires > ferry_cache::zone::now() => {
                let end = serve::answer(app, s, ctx, route, &e, CacheStatus::Hit).await?;
                return Ok(Look::Answered(end));
            }
            Found::Entry(e, _)
                if fetch.store
                    && rc.conf.background_update
                    && rc.stale_on(StaleCondition::Updating)
                    && app.should_serve_stale(s, ctx, None) =>
            {
                let end = update_in_background(app, s, ctx, route, rc, &fetch.key, &e).await?;
                return Ok(Look::Answered(end));
            }
            Found::Entry(e, _) => {
                s.request.cache_status = CacheStatus::Expired;
                fetch.stale = Some(e);
            }
            Found::Missing => {
                s.request.cache_status = CacheStatus::Miss;
                fetch.stale = None;
            }
        }
        match wait_for_filler(app, s, ctx, route, &mut fetch, waited_since).await? {
            Wait::Fetch => break,
            Wait::LookAgain => {}
            Wait::Answered(end) => return Ok(Look::Answered(end)),
        }
    }
    fetch.revalidating = rc.conf.revalidate
        && fetch.stale.as_ref().is_some_and(|e| {
            let h = &e.head.header.headers;
            h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
        });
    Ok(Look::Fetch(fetch))
}

/// The request's key (through `cache_key_callback`) and whether its
/// response may be stored (`no_cache`, `min_uses`); `bypass` marks the
/// request BYPASS.
fn prepare<'r, P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &'r RouteRt,
    rc: &'r RouteCacheRt,
) -> Result<Fetch<'r>> {
    let text = rendered(s, route, &rc.conf.key);
    let text = app.cache_key_callback(s, text, ctx)?;
    let key = Key::new(text);
    let says =
        |list: &[ferry_conf::Template]| list.iter().any(|t| says_yes(&rendered(s, route, t)));
    let no_cache = says(&rc.conf.no_cache);
    let bypass = says(&rc.conf.bypass);
    let mut fetch = Fetch {
        rc,
        key,
        stale: None,
        store: !no_cache,
        revalidating: false,
        permit: None,
        stored: AtomicBool::new(false),
    };
    if bypass {
        s.request.cache_status = CacheStatus::Bypass;
        return Ok(fetch);
    }
    if fetch.store && rc.conf.min_uses > 1 && rc.zone.count_use(&fetch.key) < rc.conf.min_uses {
        fetch.store = false;
    }
    Ok(fetch)
}

/// An expired entry with `background_update` and `use_stale updating`:
/// answered as it is; a fetch of its own brings the new one (unless
/// another request's update is on its way: UPDATING).
async fn update_in_background<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    rc: &RouteCacheRt,
    key: &Key,
    e: &std::sync::Arc<Entry>,
) -> Result<End> {
    // One update per key at a time, lock or no lock (nginx's
    // `node->updating`); the cache lock, when the route has one, also
    // keeps other fills of the key waiting.
    let mut status = CacheStatus::Updating;
    if rc.zone.begin_update(key) {
        // `Some`: this request updates, with the lock's permit when the
        // route locks; `None`: another request holds the lock.
        let ours = match &rc.lock {
            Some(lock) => {
                let ckey = CacheKey::new(key.text.clone(), "");
                match lock.lock(&ckey, true) {
                    Locked::Write(p) => Some(Some((ckey, p))),
                    Locked::Read(_) => None,
                }
            }
            None => Some(None),
        };
        match ours {
            Some(permit) => {
                status = CacheStatus::Stale;
                if let Err(err) = background::start(s, route, rc, key, e, permit) {
                    rc.zone.end_update(key);
                    return Err(err);
                }
            }
            None => rc.zone.end_update(key),
        }
    }
    serve::answer(app, s, ctx, route, e, status).await
}

/// What the cache lock leaves a request that did not find a fresh entry.
enum Wait {
    /// Go to the upstream (filling the entry when it holds the lock).
    Fetch,
    /// The filler is done: look again.
    LookAgain,
    /// Answered from the stale entry (`use_stale updating`).
    Answered(End),
}

/// The cache lock (nginx `proxy_cache_lock`): one request fills the entry;
/// the others wait for it, up to `lock_timeout`.
async fn wait_for_filler<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    fetch: &mut Fetch<'_>,
    waited_since: Instant,
) -> Result<Wait> {
    let rc = fetch.rc;
    let Some(lock) = rc.lock.as_ref().filter(|_| fetch.store) else {
        return Ok(Wait::Fetch);
    };
    let ckey = CacheKey::new(fetch.key.text.clone(), "");
    let reader = match lock.lock(&ckey, fetch.stale.is_some()) {
        Locked::Write(permit) => {
            fetch.permit = Some((ckey, permit));
            return Ok(Wait::Fetch);
        }
        Locked::Read(reader) => reader,
    };
    if let Some(e) = &fetch.stale {
        if rc.stale_on(StaleCondition::Updating) && app.should_serve_stale(s, ctx, None) {
            let end = serve::answer(app, s, ctx, route, e, CacheStatus::Updating).await?;
            return Ok(Wait::Answered(end));
        }
    }
    let left = rc
        .conf
        .lock_timeout
        .get()
        .saturating_sub(waited_since.elapsed());
    if ferry_timer::timeout(left, reader.wait()).await.is_err() {
        // nginx: past lock_timeout the request goes to the upstream, and
        // its response is not stored.
        fetch.store = false;
        return Ok(Wait::Fetch);
    }
    if reader.lock_status() == LockStatus::GiveUp {
        // The filler's response was not one to store: each waiter fetches
        // for itself rather than one by one.
        return Ok(Wait::Fetch);
    }
    // The filler finished (or failed, or its lock_age ran out).
    Ok(Wait::LookAgain)
}

/// What the fetch's response leaves to do.
pub(crate) enum After {
    /// Answered (from the stale entry).
    Answered(End),
    /// Send the upstream's response (or its failure) as usual.
    Go(Chosen),
}

impl Fetch<'_> {
    /// Start filling, when this response is one to store.
    pub(crate) fn fill<P: ProxyHttp>(
        &self,
        app: &P,
        s: &Session<'_>,
        ctx: &mut P::CTX,
        header: &ResponseHeader,
    ) -> Result<Option<crate::cache::fill::Fill>> {
        let status = header.status.as_u16();
        let head_fetched =
            s.req_header().method == http::Method::HEAD && !self.rc.conf.convert_head;
        if !self.store || status == 206 || head_fetched {
            return Ok(None);
        }
        let Decision::Store(fresh) = self.decision(app, s, ctx, status, header)? else {
            return Ok(None);
        };
        app.cache_miss(s, ctx);
        let zone = self.rc.zone.clone();
        Ok(crate::cache::fill::Fill::new(
            zone,
            &self.key,
            &s.req_header().headers,
            header,
            fresh,
        ))
    }

    /// The upstream request of a cached route: see [`crate::cache::upstream_request`].
    pub(crate) fn upstream_request(&self, req: &mut RequestHeader) -> Result<()> {
        let validators = self
            .stale
            .as_ref()
            .filter(|_| self.revalidating)
            .map(|e| &e.head.header.headers);
        crate::cache::upstream_request(&self.rc.conf, req, validators)
    }

    /// The loop's outcome seen by the cache: a 304 to a revalidation
    /// refreshes the stale entry and answers it; a failure or a status
    /// `use_stale` lists answers the stale entry.
    pub(crate) async fn after<P: ProxyHttp>(
        &mut self,
        app: &P,
        s: &mut Session<'_>,
        ctx: &mut P::CTX,
        route: &RouteRt,
        chosen: Chosen,
    ) -> Result<After> {
        let Some(stale) = self.stale.take() else {
            return Ok(After::Go(chosen));
        };
        match chosen {
            Chosen::Fail(code) if code != crate::upstream::next_upstream::CLIENT_CLOSED => {
                let why = s.request.tries.last().map(|t| t.outcome);
                let cond = match why {
                    Some(TryOutcome::Timeout) => StaleCondition::Timeout,
                    Some(TryOutcome::InvalidHeader) => StaleCondition::InvalidHeader,
                    _ => StaleCondition::Error,
                };
                let mut e = pingora_error::Error::explain(
                    pingora_error::ErrorType::HTTPStatus(code),
                    "the upstream failed",
                );
                e.esource = pingora_error::ErrorSource::Upstream;
                if self.rc.stale_on(cond) && app.should_serve_stale(s, ctx, Some(&e)) {
                    self.release(LockStatus::TransientError);
                    let end = serve::answer(app, s, ctx, route, &stale, CacheStatus::Stale).await?;
                    return Ok(After::Answered(end));
                }
                Ok(After::Go(Chosen::Fail(code)))
            }
            Chosen::Response(r) if self.revalidating && r.header.status() == 304 => {
                let Response { conn, header, held } = *r;
                conn.release().await;
                held.finish(&mut s.request.tries);
                let header = header.into_header()?;
                let status = stale.head.header.status.as_u16();
                if let Decision::Store(fresh) = self.decision(app, s, ctx, status, &header)? {
                    if let Err(e) = self.rc.zone.refresh(&stale.path, fresh) {
                        log::error!("cache {}: refreshing an entry: {e}", self.rc.zone.name);
                    }
                }
                self.release(LockStatus::Done);
                let end =
                    serve::answer(app, s, ctx, route, &stale, CacheStatus::Revalidated).await?;
                Ok(After::Answered(end))
            }
            Chosen::Response(r)
                if stale_status(r.header.status()).is_some_and(|c| self.rc.stale_on(c))
                    && app.should_serve_stale(s, ctx, Some(&status_error(r.header.status()))) =>
            {
                let Response { conn, held, .. } = *r;
                conn.close();
                held.finish(&mut s.request.tries);
                self.release(LockStatus::TransientError);
                let end = serve::answer(app, s, ctx, route, &stale, CacheStatus::Stale).await?;
                Ok(After::Answered(end))
            }
            other => Ok(After::Go(other)),
        }
    }

    /// nginx's decision for this response, then the program's say.
    pub(crate) fn decision<P: ProxyHttp>(
        &self,
        app: &P,
        s: &Session<'_>,
        ctx: &mut P::CTX,
        status: u16,
        header: &ResponseHeader,
    ) -> Result<Decision> {
        let nginx =
            ferry_cache::decide(&self.rc.conf, status, header, std::time::SystemTime::now());
        app.response_cache_filter(s, header, nginx, ctx)
    }

    /// The fill of this fetch's response ended: stored or not.
    pub(crate) fn filled(&self, stored: bool) {
        self.stored.store(stored, Ordering::Relaxed);
    }

    /// The request is done: its waiters read the entry, or (nothing was
    /// stored) fetch for themselves.
    pub(crate) fn finish(&mut self) {
        let status = if self.stored.load(Ordering::Relaxed) {
            LockStatus::Done
        } else {
            LockStatus::GiveUp
        };
        self.release(status);
    }

    /// Let the requests waiting on this key go.
    pub(crate) fn release(&mut self, status: LockStatus) {
        if let (Some(lock), Some((key, permit))) = (&self.rc.lock, self.permit.take()) {
            lock.release(&key, permit, status);
        }
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        self.release(LockStatus::TransientError);
    }
}

fn stale_status(status: u16) -> Option<StaleCondition> {
    Some(match status {
        500 => StaleCondition::Http500,
        502 => StaleCondition::Http502,
        503 => StaleCondition::Http503,
        504 => StaleCondition::Http504,
        403 => StaleCondition::Http403,
        404 => StaleCondition::Http404,
        429 => StaleCondition::Http429,
        _ => return None,
    })
}

/// An upstream status `use_stale` names, as the error `should_serve_stale`
/// is shown (nginx: `http_500` ... as upstream errors).
fn status_error(status: u16) -> Box<pingora_error::Error> {
    let mut e = pingora_error::Error::explain(
        pingora_error::ErrorType::HTTPStatus(status),
        "the upstream answered with an error status",
    );
    e.esource = pingora_error::ErrorSource::Upstream;
    e
}
