//! A client request's part in the upstream loop: the program's hooks
//! (`upstream_peer`, `upstream_request_filter`, `upstream_response_filter`)
//! and the route's rules, for plain requests and upgrades alike.
//!
//! nginx counterpart: the proxy module's `create_request` /
//! `reinit_request` and `process_header` callbacks, and the balancer's
//! `peer.get` with the request's `hash` key.

use crate::hooks::proxy_trait::{PeerChoice, ProxyHttp};
use crate::hooks::session::Session;
use crate::request::client_body::ClientBody;
use crate::request::record::Try;
use crate::runtime::RouteRt;
use crate::upstream::group::{make_peer, Upstream};
use crate::upstream::next_upstream::RetryDecision;
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::send_request::BodySource;
use crate::upstream::tries::Leg;
use ferry_filters::headers::forward_upgrade;
use ferry_filters::variables::RequestVars;
use ferry_lb::Lease;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) struct RequestLeg<'l, 's, P: ProxyHttp> {
    pub app: &'l P,
    pub s: &'l mut Session<'s>,
    pub ctx: &'l mut P::CTX,
    pub route: &'l RouteRt,
    pub body: &'l mut ClientBody,
    /// The client asked for an upgrade that is forwarded as one.
    pub upgrade: bool,
}

/// What templates see of this request, for a try to `proxy_host`.
pub(crate) fn request_vars<'a>(
    s: &'a Session<'_>,
    remote: &'a str,
    proxy_host: &'a str,
) -> RequestVars<'a> {
    let client = s.downstream.req_header();
    RequestVars {
        method: client.method.as_str(),
        request_uri: std::str::from_utf8(client.raw_path()).unwrap_or("/"),
        uri: &s.request.uri,
        host: &s.request.host,
        headers: &client.headers,
        remote_addr: remote,
        remote_port: s.request.client_addr.map_or(0, |a| a.port()),
        scheme: s.request.scheme,
        proxy_host,
        request_id: &s.request.id,
        upstream_addr: "",
        upstream_status: "",
    }
}

impl<P: ProxyHttp> Leg for RequestLeg<'_, '_, P> {
    async fn group(&mut self) -> Result<Arc<Upstream>> {
        let upstream = match self.app.upstream_peer(self.s, self.ctx).await? {
            PeerChoice::Route => self.route.upstream.clone(),
            PeerChoice::Group(name) => self.s.runtime.upstreams.get(&name).cloned(),
        };
        upstream.ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no upstream group for this route")
        })
    }

    fn key(&self, upstream: &Upstream) -> (String, Option<IpAddr>) {
        let hash = upstream.hash_key.as_ref().map_or_else(String::new, |t| {
            let remote = self.s.request.client_ip_text();
            request_vars(self.s, &remote, &upstream.name).render(t)
        });
        (hash, self.s.request.client_addr.map(|a| a.ip()))
    }

    /// Made once per member list for the route's own group; made for another.
    fn peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer> {
        let proxy = self.route.proxy();
        let own = self
            .route
            .upstream
            .as_ref()
            .is_some_and(|u| Arc::ptr_eq(u, upstream));
        if !own {
            return Arc::new(make_peer(upstream, lease.peer(), proxy));
        }
        let (members, generation) = lease.members();
        if let Some(made) = &*self.route.peers.load() {
            if made.0 == generation {
                if let Some(p) = made.1.get(lease.index()) {
                    return p.clone();
                }
            }
        }
        let made: Vec<_> = members
            .iter()
            .map(|p| Arc::new(make_peer(upstream, p, proxy)))
            .collect();
        let peer = made[lease.index()].clone();
        self.route.peers.store(Some(Arc::new((generation, made))));
        peer
    }

    async fn request(&mut self, upstream: &Upstream) -> Result<Box<RequestHeader>> {
        let mut req = {
            let remote = self.s.request.client_ip_text();
            let vars = request_vars(self.s, &remote, &upstream.name);
            let client = self.s.downstream.req_header();
            let mut req = self
                .route
                .request_plan
                .build(client, &vars, self.body.framing())?;
            if self.upgrade {
                forward_upgrade(&mut req, client)?;
            }
            Box::new(req)
        };
        self.app
            .upstream_request_filter(self.s, &mut req, self.ctx)
            .await?;
        Ok(req)
    }

    fn body(&mut self) -> BodySource<'_> {
        match self.body {
            ClientBody::None => BodySource::None,
            ClientBody::Buffered(b) => BodySource::Buffered(b),
            ClientBody::Streamed(_) => BodySource::Stream(self.s.downstream),
        }
    }

    fn body_streams(&self) -> bool {
        matches!(self.body, ClientBody::Streamed(_))
    }

    async fn response(&mut self, header: &mut ResponseHeader) -> Result<RetryDecision> {
        self.app
            .upstream_response_filter(self.s, header, self.ctx)
            .await
    }

    fn tries(&mut self) -> &mut Vec<Try> {
        &mut self.s.request.tries
    }
}
