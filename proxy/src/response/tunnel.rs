//! Upgrade requests (WebSocket): tunnelled by Pingora's own proxy loop.
//!
//! nginx counterpart: `proxy_http_version 1.1` with `Upgrade` and
//! `Connection` passed on, then `ngx_http_upstream_upgrade` (a byte tunnel
//! both ways once the backend answers 101).
//!
//! [`crate::request::http_app`] reads every request header itself. When one asks
//! for an upgrade (CONFIG rule 14: both `Upgrade` and `Connection:
//! upgrade`) and its route has an upstream group, the connection is handed
//! to `pingora_proxy::HttpProxy` with the header bytes put back in front of
//! it: Pingora reads the same request again, asks [`Tunnel`] for the
//! route's peer (nginx's `Host` and `X-Forwarded-For` added), and relays
//! the 101 and everything after it.

use crate::request::http_app::{answer_failure, begin, end};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::request::record::Request;
use crate::runtime::Runtime;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, HttpProxy, Session as PingoraSession};
use std::sync::Arc;

/// The upgrade path of one listening service.
pub struct Upgrades<P: ProxyHttp> {
    proxy: Arc<HttpProxy<Tunnel<P>>>,
    runtime: Arc<Runtime>,
}

impl<P: ProxyHttp> Upgrades<P> {
    pub fn new(conf: &Arc<ServerConf>, app: Arc<P>, runtime: Arc<Runtime>) -> Self {
        let tunnel = Tunnel {
            app,
            runtime: runtime.clone(),
        };
        Upgrades {
            proxy: Arc::new(pingora_proxy::http_proxy(conf, tunnel)),
            runtime,
        }
    }

    /// An HTTP/1 upgrade request without a body, whose route has a peer.
    pub fn wanted(&self, session: &ServerSession) -> bool {
        let req = session.req_header();
        session.as_http1().is_some()
            && wants_upgrade(req)
            && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0")
            && peer(&self.runtime, session).is_some()
    }

    /// Hand the connection to Pingora's proxy loop, the request header
    /// first again.
    pub async fn hand_over(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let ServerSession::H1(h1) = session else {
            return None;
        };
        let header = BytesMut::from(&h1.get_headers_raw_bytes()[..]);
        let mut again = ServerSession::new_http1(h1.into_inner());
        again.set_pipelined_prefix(header);
        again.set_keepalive(None);
        self.proxy.process_new_http(again, shutdown).await
    }

    /// The service is stopping: Pingora's loop lets its idle connections go.
    pub async fn stop(&self) {
        self.proxy.http_cleanup().await;
    }
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

/// Ferry's side of Pingora's proxy loop, for upgrades only.
pub struct Tunnel<P: ProxyHttp> {
    app: Arc<P>,
    runtime: Arc<Runtime>,
}

/// Pingora's per-request context: the user's, and Ferry's record.
pub struct TunnelCtx<C> {
    user: C,
    request: Request,
    peer: Option<(Box<HttpPeer>, String)>,
}

/// The route's index, its peer for this request, and its group's name.
fn peer(rt: &Runtime, session: &ServerSession) -> Option<(usize, Box<HttpPeer>, String)> {
    let req = session.req_header();
    let raw = String::from_utf8_lossy(req.raw_path()).into_owned();
    let path = crate::request::route::normalize_path(&raw)?;
    let host =
        crate::request::route::request_host(req.headers.get(http::header::HOST).map(|v| v.as_bytes()));
    let index = rt.matcher.find(&host, &path)?;
    let route = &rt.routes[index];
    let upstream = route.upstream.as_ref()?;
    let mut cursor = upstream.group.cursor(1);
    let key = ferry_lb::Key {
        hash: b"",
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
    };
    let lease = upstream.group.select(&mut cursor, &key)?;
    let peer = route.peers.get(lease.index())?.http.clone();
    Some((index, Box::new(peer), upstream.name.clone()))
}

#[async_trait]
impl<P: ProxyHttp> pingora_proxy::ProxyHttp for Tunnel<P> {
    type CTX = TunnelCtx<P::CTX>;

    fn new_ctx(&self) -> Self::CTX {
        TunnelCtx {
            user: self.app.new_ctx(),
            request: Request::new(String::new(), None),
            peer: None,
        }
    }

    async fn request_filter(&self, ps: &mut PingoraSession, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.request = begin(&self.runtime, ps);
        match peer(&self.runtime, ps) {
            Some((route, peer, group)) => {
                ctx.request.route = Some(route);
                ctx.peer = Some((peer, group));
                Ok(false)
            }
            None => Error::e_explain(ErrorType::HTTPStatus(502), "no upstream for this upgrade"),
        }
    }

    async fn upstream_peer(
        &self,
        _ps: &mut PingoraSession,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        match &ctx.peer {
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
        // nginx's Host and X-Forwarded-For.
        if let Some((_, group)) = &ctx.peer {
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
        let code = answer_failure(&self.runtime, ps, &mut ctx.request, e).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, ps: &mut PingoraSession, _e: Option<&Error>, ctx: &mut Self::CTX) {
        end(
            &*self.app,
            &self.runtime,
            ps,
            &mut ctx.request,
            &mut ctx.user,
        )
        .await;
    }
}
