//! The configuration compiled for serving: routes with their header plans and
//! pipe settings, upstream groups with their balancer state, connection pool
//! and keepalive policy. Built at start and again at each reload, where it
//! takes over what outlives a configuration: each group's live member state
//! (kept by address), its keepalive pool, the access log.
//!
//! nginx counterpart: the cycle `ngx_init_cycle` builds, minus what nginx
//! loses on reload (Ferry keeps the upstream state nginx's new workers
//! start without).

use crate::access_log::AccessLogger;
use crate::client::header_clock::HeaderLimits;
use crate::request::route::Matcher;
use crate::upstream::group::H2Pool;
use crate::upstream::group::{DynamicPool, Upstream};
use crate::upstream::idle_budget::IdleBudget;
use crate::upstream::keepalive::Keepalive;
use crate::upstream::peer::UpstreamPeer;
use arc_swap::ArcSwapOption;
use ferry_conf::{Config, ProxyConf, Route};
use ferry_filters::event_pipe::EventPipeConf;
use ferry_filters::headers::{RequestPlan, ResponsePlan};
use ferry_filters::redirect::RedirectPlan;
use ferry_lb::{Answer, Group};
use pingora_core::connectors::ConnectorOptions;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A route as served.
pub struct RouteRt {
    /// The route's name in metrics and logs: `host` + `path_prefix`.
    pub label: String,
    pub conf: Route,
    pub upstream: Option<Arc<Upstream>>,
    pub request_plan: RequestPlan,
    pub response_plan: ResponsePlan,
    pub redirect: RedirectPlan,
    /// One Pingora peer per member of the route's group, with this route's
    /// timeouts, made once per member list (its generation).
    pub peers: ArcSwapOption<(u64, Vec<Arc<UpstreamPeer>>)>,
    pub pipe: EventPipeConf,
    /// The route's `cache:`, with its cache.
    pub cache: Option<crate::cache::RouteCacheRt>,
    /// Its metrics series, found once.
    pub(crate) series: crate::metrics::RouteSeries,
    /// Unique to this route of this configuration: a reload's routes get
    /// new ones (what a cache entry keeps per route is keyed by it).
    pub(crate) id: u64,
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
    pub access_log: Option<Arc<AccessLogger>>,
    pub real_ip: Option<Arc<crate::client::real_ip::RealIpRule>>,
    /// The request header's bounds for connections accepted from now on.
    pub limits: HeaderLimits,
    /// The pool of the servers programs choose at run time.
    pub dynamic: Arc<DynamicPool>,
    /// The cap on idle upstream connections across all groups.
    pub idle: Arc<IdleBudget>,
    /// `caches:` by name; a reload keeps a cache whose settings are the
    /// same (its index with it).
    pub caches: HashMap<String, Arc<ferry_cache::Zone>>,
    /// `limit_req_zones` and `limit_conn_zones`; a reload keeps a zone
    /// whose key and rate stay (its counts with it).
    pub limit: crate::limit::Zones,
}

/// What lookups while running found for a discovered server entry, by
/// (group, entry's `addr`, `service`): shared by every configuration, so
/// that a reload starts with the last answers.
pub type Answers = Mutex<HashMap<(String, String, String), Vec<Answer>>>;

/// The key of a discovered entry in [`Answers`].
pub fn answer_key(group: &str, s: &ferry_conf::Server) -> (String, String, String) {
    (group.to_string(), s.addr.clone(), s.service.clone())
}

/// The peers of group `name` now: the loader's addresses, and the last
/// answers for the entries looked up while running.
pub fn members(
    name: &str,
    u: &ferry_conf::Upstream,
    answers: &Answers,
) -> (Vec<ferry_lb::Peer>, usize) {
    let found = answers.lock().unwrap_or_else(|e| e.into_inner());
    ferry_lb::expand(u, &|s| {
        s.discovered()
            .then(|| found.get(&answer_key(name, s)).cloned().unwrap_or_default())
    })
}

impl Runtime {
    /// Compile `config`. With `previous` (a reload), a group of the same
    /// name keeps its live state and, when its pool settings are the same,
    /// its idle connections; the access log is kept when it names the same
    /// place.
    pub fn build(
        config: Config,
        connector: &ConnectorOptions,
        previous: Option<&Runtime>,
        answers: &Answers,
    ) -> std::io::Result<Runtime> {
        // `server.upstream_keepalive_pool_size` (Pingora's; the same
        // `server:` for the life of the process): one budget for all groups.
        let idle = match previous {
            Some(p) => p.idle.clone(),
            None => Arc::new(IdleBudget::new(connector.keepalive_pool_size)),
        };
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let up = upstream_rt(name, u, previous, connector, &idle, answers);
                (name.to_string(), Arc::new(up))
            })
            .collect();
        let caches = open_caches(&config, previous)?;
        let routes = config
            .routes
            .iter()
            .map(|r| route_rt(r, &upstreams, &caches))
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
        let access_log = match previous {
            Some(p) if p.config.access_log == config.access_log => p.access_log.clone(),
            _ => AccessLogger::start(&config.access_log)?.map(Arc::new),
        };
        let limits = HeaderLimits {
            timeout: config.client_header_timeout.get(),
            line: config.large_client_header_buffers.size.as_usize(),
            total: config
                .large_client_header_buffers
                .total(config.client_header_buffer_size) as usize,
        };
        let dynamic = match previous {
            Some(p) => p.dynamic.clone(),
            None => Arc::new(DynamicPool::new(connector, idle.clone())),
        };
        let limit = crate::limit::Zones::build(&config, previous.map(|p| &p.limit))
            .map_err(std::io::Error::other)?;
        Ok(Runtime {
            limit,
            caches,
            idle,
            dynamic,
            config,
            routes,
            matcher,
            upstreams,
            access_log,
            real_ip,
            limits,
        })
    }
}

/// A group of the new configuration: with `previous` (a reload), the
/// group of the same name keeps its live state and, when its pool settings
/// are the same, its idle connections.
fn upstream_rt(
    name: &str,
    u: &ferry_conf::Upstream,
    previous: Option<&Runtime>,
    connector: &ConnectorOptions,
    idle: &Arc<IdleBudget>,
    answers: &Answers,
) -> Upstream {
    let old = previous.and_then(|p| Some((p.upstreams.get(name)?, p.config.upstream(name)?)));
    let (peers, primaries) = members(name, u, answers);
    let group = match old {
        Some((o, _)) => {
            o.group
                .update(u.balance, u.consistent, peers, primaries, true);
            o.group.clone()
        }
        None => Group::from_members(name, u.balance, u.consistent, peers, primaries),
    };
    let (pool, h2, keepalive) = match old {
        Some((o, c)) if same_pool(c, u) => (o.pool.clone(), o.h2.clone(), o.keepalive.clone()),
        _ => {
            let mut opts = connector.clone();
            opts.keepalive_pool_size = u.keepalive.max(1);
            if let Some(ca) = &u.tls.ca_file {
                opts.ca_file = Some(ca.clone());
            }
            (
                Arc::new(crate::upstream::pool::Pool::new(opts.clone(), idle.clone())),
                Arc::new(H2Pool::new(opts)),
                Arc::new(Keepalive::new(u)),
            )
        }
    };
    let sessions = sessions(u, old.and_then(|(o, _)| o.sessions.as_ref()), &group);
    Upstream {
        name: name.to_string(),
        group,
        tls: u.tls.clone(),
        hash_key: u
            .hash_key
            .clone()
            .filter(|_| u.balance == ferry_conf::Balance::Hash),
        sticky: u.sticky.clone(),
        sessions,
        pool,
        h2,
        keepalive,
    }
}

/// `sticky learn`'s sessions: those of the group's previous configuration
/// (its servers that stay keep theirs, as the new limits allow), or new.
fn sessions(
    u: &ferry_conf::Upstream,
    old: Option<&Arc<ferry_lb::Sessions>>,
    group: &Group,
) -> Option<Arc<ferry_lb::Sessions>> {
    let learn = u.sticky.as_ref()?.learn.as_ref()?;
    let (timeout, max) = (learn.timeout.get(), learn.max_sessions);
    let Some(old) = old else {
        return Some(Arc::new(ferry_lb::Sessions::new(timeout, max)));
    };
    let peers = group.peers();
    old.retain(|route| peers.iter().any(|p| p.route == route));
    old.configure(timeout, max);
    Some(old.clone())
}

/// Every cache of `config`: one whose entry is unchanged is kept from
/// `previous`, the others opened.
fn open_caches(
    config: &Config,
    previous: Option<&Runtime>,
) -> std::io::Result<HashMap<String, Arc<ferry_cache::Zone>>> {
    let mut caches = HashMap::new();
    for (name, zone) in config.caches.iter() {
        let kept = previous.and_then(|p| {
            (p.config.caches.get(name) == Some(zone)).then(|| p.caches.get(name).cloned())?
        });
        let zone = match kept {
            Some(z) => z,
            None => ferry_cache::Zone::open(name, zone).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cache {name}: {}: {e}", zone.path))
            })?,
        };
        caches.insert(name.to_string(), zone);
    }
    Ok(caches)
}

/// A route of the new configuration with what it serves from.
pub(crate) fn route_rt(
    r: &ferry_conf::Route,
    upstreams: &HashMap<String, Arc<Upstream>>,
    caches: &HashMap<String, Arc<ferry_cache::Zone>>,
) -> RouteRt {
    let upstream = r.upstream.as_ref().and_then(|n| upstreams.get(n)).cloned();
    let cache = r.cache.as_ref().and_then(|c| {
        let zone = caches.get(&c.zone)?.clone();
        Some(crate::cache::RouteCacheRt::new(c, zone))
    });
    RouteRt {
        cache,
        label: format!(
            "{}{}",
            r.matcher.host.as_deref().unwrap_or(""),
            r.matcher.path_prefix
        ),
        request_plan: RequestPlan::new(&r.proxy),
        response_plan: ResponsePlan::new(&r.proxy),
        redirect: RedirectPlan::new(&r.proxy.redirect, r.upstream.as_deref()),
        peers: ArcSwapOption::empty(),
        pipe: pipe_conf(&r.proxy),
        upstream,
        conf: r.clone(),
        series: Default::default(),
        id: {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
    }
}

/// Whether a group's keepalive pool can serve a new configuration of it.
fn same_pool(old: &ferry_conf::Upstream, new: &ferry_conf::Upstream) -> bool {
    old.keepalive == new.keepalive
        && old.keepalive_timeout == new.keepalive_timeout
        && old.keepalive_requests == new.keepalive_requests
        && old.keepalive_time == new.keepalive_time
        && old.tls == new.tls
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
