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
use crate::request::body_stream::{self, Piece, Streamed};
use crate::request::client_body::ClientBody;
use crate::runtime::RouteRt;
use crate::upstream::connect::Conn;
use crate::upstream::group::{make_peer, make_runtime_peer, Upstream};
use crate::upstream::head::Head;
use crate::upstream::leg::BodySource;
use crate::upstream::leg::Leg;
use crate::upstream::next_upstream::RetryDecision;
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::peer_certs::CertFiles;
use crate::upstream::request_head::{RequestHead, WireHead};
use crate::upstream::try_record::TryList;
use bytes::Bytes;
use ferry_filters::headers::forward_upgrade;
use ferry_lb::Lease;
use pingora_error::{Error, ErrorType, Result};
use std::net::IpAddr;
use std::sync::Arc;

/// A server `upstream_peer` chose at run time: its group of one and the
/// Pingora peer made for it.
pub(crate) struct RuntimePeer {
    peer: Peer,
    upstream: Arc<Upstream>,
    made: Arc<UpstreamPeer>,
}

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
    pub chosen: Vec<RuntimePeer>,
    /// How far a streamed body went.
    pub streamed: &'l mut Streamed,
}

impl<P: ProxyHttp> Leg for RequestLeg<'_, '_, P> {
    async fn group(&mut self) -> Result<Arc<Upstream>> {
        let choice = match self.app.defines_hooks() {
            true => self.app.upstream_peer(self.s, self.ctx).await?,
            false => PeerChoice::Route,
        };
        match choice {
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
            PeerChoice::Peer(peer) => self.runtime_group(*peer),
        }
    }

    fn key(&self, upstream: &Upstream) -> (String, Option<IpAddr>) {
        let hash = upstream.hash_key.as_ref().map_or_else(String::new, |t| {
            let remote = self.s.request.client_ip();
            self.s.vars(&remote, &upstream.name).render(t)
        });
        (hash, self.s.request.client_addr.map(|a| a.ip()))
    }

    fn sticky(&self, upstream: &Upstream) -> Option<String> {
        crate::request::sticky::hint(self.s, upstream)
    }

    /// Made once per member list for the route's own group; made for another.
    fn peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer> {
        let peer = self.made_peer(upstream, lease);
        if self.upgrade {
            // An upgrade goes over HTTP/1.1, as nginx's.
            return peer.http1();
        }
        peer
    }

    async fn request(&mut self, upstream: &Upstream, h1: bool) -> Result<RequestHead> {
        if h1 && !self.upgrade && self.cache.is_none() && !self.app.filters_upstream_request() {
            if let Some(w) = self.wire_request(upstream) {
                return Ok(RequestHead::Wire(w));
            }
        }
        let mut req = {
            let remote = self.s.request.client_ip();
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
        Ok(RequestHead::Header(req))
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
    async fn read_piece(&mut self) -> Result<Option<Bytes>> {
        if self.streamed.ended {
            return Ok(None);
        }
        body_stream::read(self.s.downstream).await
    }

    async fn filter_piece(&mut self, read: Option<Bytes>) -> Result<Piece> {
        if self.streamed.ended {
            return Ok(Piece::End);
        }
        let framing = self.body.framing();
        body_stream::filter(
            self.app,
            self.s,
            self.ctx,
            (framing, &mut *self.streamed),
            read,
        )
        .await
    }

    async fn connected(&mut self, conn: &Conn) -> Result<()> {
        if !self.app.watches_upstream_connections() {
            return Ok(());
        }
        let fd = conn.session.id();
        let digest = conn.session.digest();
        self.app
            .connected_to_upstream(
                self.s,
                conn.reused,
                &peer_view(&conn.peer),
                fd,
                digest,
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

    async fn response(&mut self, head: &mut Head) -> Result<RetryDecision> {
        if !self.app.filters_upstream_response() {
            return Ok(RetryDecision::Default);
        }
        self.app
            .upstream_response_filter(self.s, head.header()?, self.ctx)
            .await
    }

    fn tries(&mut self) -> &mut TryList {
        &mut self.s.request.tries
    }
}

impl<P: ProxyHttp> RequestLeg<'_, '_, P> {
    /// The request head as HTTP/1 bytes, when the route's plan can write it
    /// so (see [`ferry_filters::headers::RequestPlan::write_h1`]).
    fn wire_request(&self, upstream: &Upstream) -> Option<WireHead> {
        let remote = self.s.request.client_ip();
        let vars = self.s.vars(&remote, &upstream.name);
        let client = &*self.s.downstream;
        let head = (client.method(), client.raw_path(), client.fields());
        let body = self.body.framing();
        let bytes = self.route.request_plan.write_h1(head, &vars, body)?;
        Some(WireHead {
            bytes,
            head: client.method() == "HEAD",
            close: self.route.request_plan.asks_close(),
            body,
            // No cache stores this answer (the bytes path is not taken on
            // a cached route): only an HTTP/1 client reads its names' case.
            keep_case: !self.s.downstream.is_http2(),
        })
    }

    /// The Pingora peer as the route (or the run-time peer) made it.
    fn made_peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer> {
        let proxy = self.route.proxy();
        let own = self
            .route
            .upstream
            .as_ref()
            .is_some_and(|u| Arc::ptr_eq(u, upstream));
        if !own {
            if let Some(r) = self
                .chosen
                .iter()
                .find(|r| Arc::ptr_eq(&r.upstream, upstream))
            {
                return r.made.clone();
            }
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

    /// The group of one for a run-time server (the same one when chosen
    /// again), its certificates loaded and its Pingora peer made.
    fn runtime_group(&mut self, peer: Peer) -> Result<Arc<Upstream>> {
        if let Some(r) = self.chosen.iter().find(|r| r.peer == peer) {
            return Ok(r.upstream.clone());
        }
        let tls = ferry_conf::UpstreamTls {
            enabled: peer.tls,
            sni: peer.tls.then(|| peer.sni.clone()),
            verify: peer.verify,
            ca_file: None,
        };
        let pool = &self.s.runtime.dynamic;
        let up = Arc::new(Upstream::for_peer(peer.label(), peer.addr, tls, pool));
        let files = CertFiles {
            ca: peer.ca_file.clone().filter(|_| peer.tls),
            client: peer.client_cert.clone().filter(|_| peer.tls),
        };
        let certs = pool.certs.get(&files).map_err(|m| {
            Error::explain(ErrorType::HTTPStatus(502), format!("run-time peer: {m}"))
        })?;
        let server = &up.group.peers()[0];
        let mut made = make_runtime_peer(
            &up,
            server,
            self.route.proxy(),
            peer.unix.as_deref(),
            &certs,
        )?;
        let o = &mut made.http.options;
        if peer.connect_timeout.is_some() {
            o.connection_timeout = peer.connect_timeout;
            o.total_connection_timeout = peer.connect_timeout;
        }
        o.read_timeout = peer.read_timeout.or(o.read_timeout);
        o.write_timeout = peer.send_timeout.or(o.write_timeout);
        let made = match peer.http2 {
            true => made.http2(),
            false => made,
        };
        let made = Arc::new(made);
        self.chosen.push(RuntimePeer {
            peer,
            upstream: up.clone(),
            made,
        });
        Ok(up)
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
    if let pingora_core::protocols::l4::socket::SocketAddr::Unix(u) = http.address() {
        view.unix = u.as_pathname().map(|p| p.to_path_buf());
    }
    if http.is_tls() {
        view = view.tls(&http.sni);
    }
    view.verify = http.options.verify_cert;
    view.http2 = http.options.alpn.get_min_http_version() == 2;
    view.connect_timeout = http.options.connection_timeout;
    view.read_timeout = http.options.read_timeout;
    view.send_timeout = http.options.write_timeout;
    view
}
