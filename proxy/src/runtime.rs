//! The configuration compiled for serving: routes with their header plans and
//! pipe settings, upstream groups with their balancer state, connection pool
//! and keepalive policy. Built once at start and shared by every request.

use crate::request::route::Matcher;
use crate::upstream::group::{make_peer, Upstream};
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
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

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
