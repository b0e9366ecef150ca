//! The configuration compiled for serving: routes with their header plans and
//! pipe settings, upstream groups with their balancer state, connection pool
//! and keepalive policy. Built once at start and shared by every request.

use crate::request::route::Matcher;
use crate::upstream::keepalive::Keepalive;
use crate::upstream::peer::UpstreamPeer;
use ferry_conf::{Config, ProxyConf, Route};
use ferry_filters::event_pipe::EventPipeConf;
use ferry_filters::headers::{RequestPlan, ResponsePlan};
use ferry_filters::redirect::RedirectPlan;
use ferry_lb::Group;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// An upstream group as served: balancer, pool, keepalive.
pub struct Upstream {
    pub name: String,
    pub group: Group,
    pub tls: ferry_conf::UpstreamTls,
    /// `balance: hash`: the key template.
    pub hash_key: Option<ferry_conf::Template>,
    /// Pingora's HTTP/1 connector with this group's own idle pool.
    pub connector: Connector,
    pub keepalive: Keepalive,
}

/// A route as served.
pub struct RouteRt {
    /// The route's name in metrics and logs: `host` + `path_prefix`.
    pub label: String,
    pub conf: Route,
    pub upstream: Option<Arc<Upstream>>,
    pub request_plan: RequestPlan,
    pub response_plan: ResponsePlan,
    pub redirect: RedirectPlan,
    /// One Pingora peer per group peer, with this route's timeouts.
    pub peers: Vec<Arc<UpstreamPeer>>,
    pub pipe: EventPipeConf,
}

impl RouteRt {
    pub fn proxy(&self) -> &ProxyConf {
        &self.conf.proxy
    }
}

pub struct Runtime {
    pub config: Config,
    pub routes: Vec<RouteRt>,
    pub matcher: Matcher,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub access_log: Option<crate::access_log::AccessLogger>,
    pub real_ip: Option<Arc<crate::client::real_ip::RealIpRule>>,
}

impl Runtime {
    pub fn new(config: Config, server: &ServerConf) -> Runtime {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let mut opts = ConnectorOptions::from_server_conf(server);
                opts.keepalive_pool_size = u.keepalive.max(1);
                if let Some(ca) = &u.tls.ca_file {
                    opts.ca_file = Some(ca.clone());
                }
                let up = Upstream {
                    name: name.to_string(),
                    group: Group::from_conf(name, u),
                    tls: u.tls.clone(),
                    hash_key: u
                        .hash_key
                        .clone()
                        .filter(|_| u.balance == ferry_conf::Balance::Hash),
                    connector: Connector::new(Some(opts)),
                    keepalive: Keepalive::new(u),
                };
                (name.to_string(), Arc::new(up))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let upstream = r.upstream.as_ref().and_then(|n| upstreams.get(n)).cloned();
                let peers = upstream
                    .as_ref()
                    .map(|u| {
                        u.group
                            .peers()
                            .iter()
                            .map(|p| Arc::new(make_peer(u, p, &r.proxy)))
                            .collect()
                    })
                    .unwrap_or_default();
                RouteRt {
                    label: format!(
                        "{}{}",
                        r.matcher.host.as_deref().unwrap_or(""),
                        r.matcher.path_prefix
                    ),
                    request_plan: RequestPlan::new(&r.proxy),
                    response_plan: ResponsePlan::new(&r.proxy),
                    redirect: RedirectPlan::new(&r.proxy.redirect, r.upstream.as_deref()),
                    peers,
                    pipe: pipe_conf(&r.proxy),
                    upstream,
                    conf: r.clone(),
                }
            })
            .collect();
        let matcher = Matcher::new(
            config
                .routes
                .iter()
                .map(|r| (r.matcher.host.as_deref(), r.matcher.path_prefix.as_str())),
        );
        let real_ip = config
            .real_ip
            .as_ref()
            .and_then(crate::client::real_ip::RealIpRule::new)
            .map(Arc::new);
        Runtime {
            config,
            routes,
            matcher,
            upstreams,
            access_log: None,
            real_ip,
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
    UpstreamPeer::new(peer)
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

fn pipe_conf(p: &ProxyConf) -> EventPipeConf {
    EventPipeConf {
        memory: (u64::from(p.buffers.count) * p.buffers.size.0) as usize,
        busy: p.busy_buffers_size.as_usize(),
        max_temp_file_size: p.max_temp_file_size.0,
        temp_file_write_size: p.temp_file_write_size.as_usize(),
        temp_path: PathBuf::from(&p.temp_path),
        limit_rate: p.limit_rate.0,
        ignore_client_abort: p.ignore_client_abort,
    }
}
