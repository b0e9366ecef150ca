//! Ferry on Pingora: Pingora's `ProxyHttp` implemented by running Ferry's
//! request flow inside its `request_filter` and answering there.
//!
//! Pingora reads the client's request header, calls this, and then finishes
//! the client connection (keep it alive, or close it when Ferry truncated
//! the response). Requests Ferry does not serve itself, HTTP upgrades
//! (WebSocket), fall back to Pingora's own proxy loop with the route's peer.

use crate::flow::{self, End};
use crate::metrics::metrics;
use crate::proxy_trait::ProxyHttp;
use crate::request::Request;
use crate::respond;
use crate::runtime::Runtime;
use crate::session::Session;
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, Session as PingoraSession};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Glue<P: ProxyHttp> {
    pub app: Arc<P>,
    pub runtime: Arc<Runtime>,
}

impl<P: ProxyHttp> Clone for Glue<P> {
    fn clone(&self) -> Self {
        Glue {
            app: self.app.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

/// Pingora's per-request context: the user's, and Ferry's record.
pub struct GlueCtx<C> {
    pub user: C,
    pub request: Request,
    upgrade: Option<(Box<HttpPeer>, String)>,
    truncated: bool,
}

fn request_id(ps: &PingoraSession) -> String {
    if let Some(id) = ps
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        return id.to_string();
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    });
    format!("{base:016x}{:08x}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// CONFIG rule 14: an upgrade is forwarded only when the client sent both
/// `Upgrade` and `Connection: upgrade`; otherwise `Upgrade` is hop-by-hop.
fn wants_upgrade(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::UPGRADE)
        && req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

impl<P: ProxyHttp> Glue<P> {
    /// An upgrade request: pick the route's peer and let Pingora tunnel it.
    fn upgrade_peer(&self, ps: &PingoraSession) -> Option<(Box<HttpPeer>, String)> {
        let raw = String::from_utf8_lossy(ps.req_header().raw_path()).into_owned();
        let path = crate::route::normalize_path(&raw)?;
        let host = crate::route::request_host(
            ps.req_header()
                .headers
                .get(http::header::HOST)
                .map(|v| v.as_bytes()),
        );
        let route = &self.runtime.routes[self.runtime.matcher.find(&host, &path)?];
        let upstream = route.upstream.as_ref()?;
        let mut cursor = upstream.group.cursor(1);
        let key = ferry_lb::Key {
            hash: b"",
            client_ip: ps.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        };
        let lease = upstream.group.select(&mut cursor, &key)?;
        let peer = route.peers.get(lease.index())?.clone();
        Some((Box::new(peer), upstream.name.clone()))
    }
}

#[async_trait]
impl<P: ProxyHttp> pingora_proxy::ProxyHttp for Glue<P> {
    type CTX = GlueCtx<P::CTX>;

    fn new_ctx(&self) -> Self::CTX {
        GlueCtx {
            user: self.app.new_ctx(),
            request: Request::new(String::new(), None),
            upgrade: None,
            truncated: false,
        }
    }

    async fn request_filter(&self, ps: &mut PingoraSession, ctx: &mut Self::CTX) -> Result<bool> {
        crate::header_clock::header_done(ps);
        let peer = ps.client_addr().and_then(|a| a.as_inet()).copied();
        let announced = ps
            .as_downstream()
            .stream()
            .and_then(|s| crate::proxy_protocol::client_of(s.id()));
        ctx.request.client_addr = match (announced, &self.runtime.real_ip, peer) {
            (Some(a), _, _) => Some(a),
            (None, Some(rule), Some(p)) => Some(rule.client(p, &ps.req_header().headers)),
            _ => peer,
        };
        ctx.request.id = request_id(ps);
        if ps.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            ctx.request.scheme = "https";
        }
        metrics().in_flight.inc();
        if wants_upgrade(ps.req_header()) {
            if let Some(up) = self.upgrade_peer(ps) {
                ctx.upgrade = Some(up);
                return Ok(false);
            }
        }
        match flow::serve(
            &*self.app,
            &self.runtime,
            ps,
            &mut ctx.request,
            &mut ctx.user,
        )
        .await
        {
            Ok(End::Complete) => Ok(true),
            Ok(End::Truncated) => {
                ctx.truncated = true;
                Err(flow::truncated())
            }
            Err(e) => Err(e),
        }
    }

    async fn upstream_peer(
        &self,
        _ps: &mut PingoraSession,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        match &ctx.upgrade {
            Some((peer, _)) => Ok(peer.clone()),
            None => Error::e_explain(ErrorType::InternalError, "no upstream for this request"),
        }
    }

    async fn upstream_request_filter(
        &self,
        ps: &mut PingoraSession,
        req: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Only upgrades come here: nginx's Host and X-Forwarded-For.
        if let Some((_, group)) = &ctx.upgrade {
            req.insert_header(http::header::HOST, group.as_str())?;
            if let Some(addr) = ps.client_addr().and_then(|a| a.as_inet()) {
                let xff = match req
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(prev) => format!("{prev}, {}", addr.ip()),
                    None => addr.ip().to_string(),
                };
                req.insert_header("X-Forwarded-For", xff)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        ps: &mut PingoraSession,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let written = ps.response_written().is_some();
        let code = if ctx.truncated || written {
            0
        } else {
            match e.etype() {
                ErrorType::HTTPStatus(c) => *c,
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => 0,
                _ if e.esource() == &pingora_error::ErrorSource::Upstream => 502,
                _ => 500,
            }
        };
        if code > 0 {
            let proxy = ctx.request.route.map(|i| self.runtime.routes[i].proxy());
            if let Err(e) = respond::error(ps, &mut ctx.request, code, proxy, &[]).await {
                log::debug!("could not send the error page: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _ps: &PingoraSession, ctx: &Self::CTX, _e: &Error) -> bool {
        // Ferry logs its own failures where they happen.
        ctx.truncated
    }

    async fn logging(&self, ps: &mut PingoraSession, _e: Option<&Error>, ctx: &mut Self::CTX) {
        crate::header_clock::request_done(ps);
        let rt = &self.runtime;
        let route = ctx
            .request
            .route
            .map_or("none", |i| rt.routes[i].label.as_str());
        let m = metrics();
        m.in_flight.dec();
        m.record(
            &ctx.request,
            route,
            ps.as_downstream().body_bytes_read() as u64,
        );
        if let Some(log) = &rt.access_log {
            let req = ps.req_header();
            let uri = String::from_utf8_lossy(req.raw_path());
            log.log(crate::access_log::line(
                &ctx.request,
                req.method.as_str(),
                &uri,
                route,
            ));
        }
        let mut s = Session {
            downstream: ps,
            request: &mut ctx.request,
            runtime: &self.runtime,
        };
        self.app.logging(&mut s, &mut ctx.user).await;
    }
}
