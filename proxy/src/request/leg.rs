//! A client request's part in the upstream loop: the program's hooks
//! (`upstream_peer`, `upstream_request_filter`, `upstream_response_filter`)
//! and the route's rules, for plain requests and upgrades alike.
//!
//! nginx counterpart: the proxy module's `create_request` /
//! `reinit_request` and `process_header` callbacks, and the balancer's
//! `peer.get` with the request's `hash` key.

use crate::hooks::peer_choice::{Peer, PeerChoice};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::Try;
use crate::request::client_body::ClientBody;
use crate::runtime::RouteRt;
use crate::upstream::connect::Conn;
use crate::upstream::group::{make_peer, Upstream};
use crate::upstream::leg::BodySource;
use crate::upstream::leg::Leg;
use crate::upstream::next_upstream::RetryDecision;
use crate::upstream::peer::UpstreamPeer;
use bytes::Bytes;
use ferry_filters::headers::forward_upgrade;
use ferry_filters::headers::BodyFraming;
use ferry_lb::Lease;
use pingora_core::protocols::UniqueID;
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
    /// The route's cache fetches this request.
    pub cache: Option<&'l crate::cache::lookup::Fetch<'l>>,
    /// The run-time servers `upstream_peer` chose, each as a group of one
    /// (found again when chosen again, so each is tried once).
    pub chosen: Vec<(Peer, Arc<Upstream>)>,
    /// A streamed body: bytes the filter let through, and whether its end
    /// was seen.
    pub streamed: (u64, bool),
}

impl<P: ProxyHttp> Leg for RequestLeg<'_, '_, P> {
    async fn group(&mut self) -> Result<Arc<Upstream>> {
        match self.app.upstream_peer(self.s, self.ctx).await? {
            PeerChoice::Route => self.route.upstream.clone().ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "no upstream group for this route")
            }),
            PeerChoice::Group(name) => {
                self.s.runtime.upstreams.get(&name).cloned().ok_or_else(|| {
                    Error::explain(
                        ErrorType::InternalError,
                        format!("upstream_peer chose `{name}`, which is not in upstreams:"),
                    )
                })
            }
            PeerChoice::Peer(peer) => {
                if let Some((_, up)) = self.chosen.iter().find(|(p, _)| *p == *peer) {
                    return Ok(up.clone());
                }
                let tls = ferry_conf::UpstreamTls {
                    enabled: peer.tls,
                    sni: peer.tls.then(|| peer.sni.clone()),
                    verify: peer.verify,
                    ca_file: None,
                };
                let up = Arc::new(Upstream::for_peer(
                    peer.label(),
                    peer.addr,
                    tls,
                    &self.s.runtime.dynamic,
                ));
                self.chosen.push((*peer, up.clone()));
                Ok(up)
            }
        }
    }

    fn key(&self, upstream: &Upstream) -> (String, Option<IpAddr>) {
        let hash = upstream.hash_key.as_ref().map_or_else(String::new, |t| {
            let remote = self.s.request.client_ip_text();
            self.s.vars(&remote, &upstream.name).render(t)
        });
        (hash, self.s.request.client_addr.map(|a| a.ip()))
    }

    fn sticky(&self, upstream: &Upstream) -> Option<String> {
        crate::request::sticky::hint(self.s, upstream)
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
            let mut made = make_peer(upstream, lease.peer(), proxy);
            if let Some((p, _)) = self.chosen.iter().find(|(_, u)| Arc::ptr_eq(u, upstream)) {
                let o = &mut made.http.options;
                if p.connect_timeout.is_some() {
                    o.connection_timeout = p.connect_timeout;
                    o.total_connection_timeout = p.connect_timeout;
                }
                o.read_timeout = p.read_timeout.or(o.read_timeout);
                o.write_timeout = p.send_timeout.or(o.write_timeout);
            }
            return Arc::new(made);
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
            let vars = self.s.vars(&remote, &upstream.name);
            let client = self.s.downstream.req_header();
            let mut req = self
                .route
                .request_plan
                .build(client, &vars, self.body.framing())?;
            if self.upgrade {
                forward_upgrade(&mut req, client)?;
            }
            if let Some(fetch) = self.cache {
                fetch.upstream_request(&mut req)?;
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
            ClientBody::Streamed(_) => BodySource::Stream,
        }
    }

    fn body_streams(&self) -> bool {
        matches!(self.body, ClientBody::Streamed(_))
    }

    /// The client's next piece through `request_body_filter`. A client's
    /// failure, or the filter's, is the client's side of the try (never
    /// retried, never the server's fault).
    async fn stream_piece(&mut self) -> Result<Option<Bytes>> {
        let as_client = |mut e: Box<Error>| {
            e.as_down();
            e
        };
        loop {
            if self.streamed.1 {
                return Ok(None);
            }
            let read = self
                .s
                .downstream
                .read_request_body()
                .await
                .map_err(as_client)?;
            // Pingora hands back an empty piece when a read ends inside a
            // chunk-size line or a CRLF. Written to a chunked upstream
            // body, nothing would be the terminating `0\r\n\r\n`, and the
            // rest of the client's body a request of its choosing.
            if read.as_ref().is_some_and(Bytes::is_empty) {
                continue;
            }
            let end = read.is_none();
            let mut piece = read;
            self.app
                .request_body_filter(self.s, &mut piece, end, self.ctx)
                .await
                .map_err(as_client)?;
            self.streamed.1 = end;
            let piece = piece.filter(|p| !p.is_empty());
            self.streamed.0 += piece.as_ref().map_or(0, |p| p.len() as u64);
            if let (true, ClientBody::Streamed(BodyFraming::Length(n))) = (end, &*self.body) {
                if self.streamed.0 != *n {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        format!(
                            "request_body_filter made a streamed body of {} bytes out of one sent with Content-Length: {n}",
                            self.streamed.0
                        ),
                    );
                }
            }
            match piece {
                Some(p) => return Ok(Some(p)),
                None if end => return Ok(None),
                None => continue,
            }
        }
    }

    async fn connected(&mut self, conn: &Conn) -> Result<()> {
        let fd = conn.session.id();
        let digest = conn.session.digest();
        self.app
            .connected_to_upstream(
                self.s,
                conn.reused,
                &peer_view(&conn.peer),
                fd,
                Some(digest),
                self.ctx,
            )
            .await
    }

    fn fail_to_connect(&mut self, peer: &UpstreamPeer, e: Box<Error>) -> Box<Error> {
        self.app
            .fail_to_connect(self.s, &peer_view(peer), self.ctx, e)
    }

    fn error_while_proxy(
        &mut self,
        peer: &UpstreamPeer,
        e: Box<Error>,
        reused: bool,
    ) -> Box<Error> {
        self.app
            .error_while_proxy(&peer_view(peer), self.s, e, self.ctx, reused)
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

/// The server of a try as a program sees it: Ferry's [`Peer`] (an
/// allocation only for a TLS name).
fn peer_view(p: &UpstreamPeer) -> Peer {
    use pingora_core::upstreams::peer::Peer as _;
    let http = &p.http;
    let addr = http
        .address()
        .as_inet()
        .copied()
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut view = Peer::new(addr);
    if http.is_tls() {
        view = view.tls(&http.sni);
    }
    view.verify = http.options.verify_cert;
    view.connect_timeout = http.options.connection_timeout;
    view.read_timeout = http.options.read_timeout;
    view.send_timeout = http.options.write_timeout;
    view
}
