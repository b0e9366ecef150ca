//! An upstream group as served: its balancer and passive health
//! (`ferry-lb`), its connections ([`Pool`]: Pingora's connector, Ferry's idle queue)
//! and keepalive policy, and
//! the Pingora peer each of its servers is reached through.
//!
//! nginx counterpart: `ngx_http_upstream_srv_conf_t` with its round-robin
//! peers and the keepalive module's cache.

use crate::upstream::keepalive::Keepalive;
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::peer_certs::{CertCache, PeerCerts};
use crate::upstream::pool::Pool;
use ferry_conf::ProxyConf;
use ferry_lb::Group;
use pingora_core::connectors::http::v2::Connector as H2Connector;
use pingora_core::upstreams::peer::HttpPeer;
use std::sync::Arc;

/// An upstream group as served: balancer, pool, keepalive.
pub struct Upstream {
    pub name: String,
    pub group: Group,
    pub tls: ferry_conf::UpstreamTls,
    /// `balance: hash`: the key template.
    pub hash_key: Option<ferry_conf::Template>,
    /// nginx `sticky`: how requests are bound to a server.
    pub sticky: Option<ferry_conf::Sticky>,
    /// `sticky learn`'s sessions, shared by the configurations of the group.
    pub sessions: Option<Arc<ferry_lb::Sessions>>,
    /// This group's connections: new ones (TCP, TLS) and its idle pool;
    /// HTTP/1 runs over them in [`crate::upstream::h1`]. Shared with the
    /// next configuration when a reload keeps the pool.
    pub pool: Arc<Pool>,
    /// Pingora's HTTP/2 connector, for routes with `http_version: "2"`:
    /// its streams share this group's connections.
    pub h2: Arc<H2Pool>,
    pub keepalive: Arc<Keepalive>,
}

/// Pingora's HTTP/2 connector for a group, made when its first HTTP/2
/// request comes (most groups never have one, and a connector loads its
/// TLS roots when made).
pub struct H2Pool {
    options: pingora_core::connectors::ConnectorOptions,
    connector: std::sync::OnceLock<H2Connector>,
}

impl H2Pool {
    pub fn new(options: pingora_core::connectors::ConnectorOptions) -> H2Pool {
        H2Pool {
            options,
            connector: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> &H2Connector {
        self.connector
            .get_or_init(|| H2Connector::new(Some(self.options.clone())))
    }
}

/// The one keepalive pool of every server a program chooses at run time
/// (`PeerChoice::Peer`): Pingora keys its idle connections by address, TLS
/// and SNI, so one pool serves them all.
pub struct DynamicPool {
    pub pool: Arc<Pool>,
    pub h2: Arc<H2Pool>,
    pub keepalive: Arc<Keepalive>,
    /// The CA files and client certificates run-time servers name.
    pub(crate) certs: CertCache,
}

impl DynamicPool {
    /// Idle connections kept to run-time servers, all of them together.
    const IDLE: usize = 256;

    pub fn new(
        base: &pingora_core::connectors::ConnectorOptions,
        budget: Arc<crate::upstream::idle_budget::IdleBudget>,
    ) -> DynamicPool {
        let mut opts = base.clone();
        opts.keepalive_pool_size = Self::IDLE;
        let conf = ferry_conf::Upstream {
            keepalive: Self::IDLE,
            ..ferry_conf::Upstream::default()
        };
        DynamicPool {
            h2: Arc::new(H2Pool::new(opts.clone())),
            pool: Arc::new(Pool::new(opts, budget)),
            keepalive: Arc::new(Keepalive::new(&conf)),
            certs: CertCache::default(),
        }
    }
}

impl Upstream {
    /// A server chosen at run time, as a group of one named `label` (its
    /// `Host`, `$proxy_host`), on the shared pool. No passive health: the
    /// group lives as long as the request.
    pub fn for_peer(
        label: String,
        addr: std::net::SocketAddr,
        tls: ferry_conf::UpstreamTls,
        pool: &DynamicPool,
    ) -> Upstream {
        let server = ferry_lb::Peer {
            name: label.clone(),
            addr,
            weight: 1,
            max_fails: 0,
            fail_timeout: std::time::Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
            route: ferry_lb::derived_route(addr),
            drain: false,
        };
        Upstream {
            group: Group::new(&label, ferry_conf::Balance::RoundRobin, vec![server], 1),
            name: label,
            tls,
            hash_key: None,
            sticky: None,
            sessions: None,
            pool: pool.pool.clone(),
            h2: pool.h2.clone(),
            keepalive: pool.keepalive.clone(),
        }
    }
}

/// A Pingora peer with nginx's timeouts: `connect_timeout` for the TCP
/// connect (and TLS handshake), `read_timeout`/`send_timeout` between two
/// reads/writes; with the group's TLS settings.
pub fn make_peer(up: &Upstream, server: &ferry_lb::Peer, p: &ProxyConf) -> UpstreamPeer {
    let tls = &up.tls;
    let sni = if tls.enabled {
        sni_for(up, server)
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(server.addr, tls.enabled, sni);
    let o = &mut peer.options;
    o.verify_cert = tls.verify;
    o.verify_hostname = tls.verify;
    o.connection_timeout = p.connect_timeout.non_zero();
    o.total_connection_timeout = p.connect_timeout.non_zero();
    o.read_timeout = p.read_timeout.non_zero();
    o.write_timeout = p.send_timeout.non_zero();
    let peer = UpstreamPeer::new(peer);
    match p.http_version {
        ferry_conf::HttpVersion::Http2 => peer.http2(),
        _ => peer,
    }
}

/// A run-time server's peer: as [`make_peer`], at a Unix socket when
/// `unix` names one, with its own CA and client certificate.
pub(crate) fn make_runtime_peer(
    up: &Upstream,
    server: &ferry_lb::Peer,
    p: &ProxyConf,
    unix: Option<&std::path::Path>,
    certs: &PeerCerts,
) -> pingora_error::Result<UpstreamPeer> {
    let mut peer = make_peer(up, server, p).http;
    if let Some(path) = unix {
        let tls = peer.is_tls();
        let path = path.to_str().ok_or_else(|| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::SocketError,
                "a Unix socket path that is not UTF-8",
            )
        })?;
        let at = HttpPeer::new_uds(path, tls, String::new())?;
        peer._address = at._address;
    }
    peer.options.ca = certs.ca.clone();
    peer.client_cert_key = certs.client.clone();
    peer.group_key = certs.pool_key;
    Ok(UpstreamPeer::new(peer))
}

/// The TLS name of a server: `tls.sni`, else the host name it was written
/// with, else (an IP address) the group name.
pub fn sni_for(up: &Upstream, server: &ferry_lb::Peer) -> String {
    if let Some(s) = &up.tls.sni {
        return s.clone();
    }
    let host = server
        .name
        .rsplit_once(':')
        .map_or(server.name.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        up.name.clone()
    } else {
        host.to_string()
    }
}
