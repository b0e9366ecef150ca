//! DNS discovery: the servers written with `resolve: true` are looked up
//! while Ferry runs, through `resolver:`, and looked up again when the
//! answer's TTL (or `resolver.valid`, when shorter) runs out. Each address
//! of an answer is a server of its group; with `service: NAME`, the SRV
//! records of `_NAME._tcp.HOST` give each server's target, port and weight.
//!
//! nginx counterpart: the `resolve` and `service=` parameters of `server`
//! in an `upstream` block (`ngx_http_upstream_zone_module`'s resolve
//! handlers), with `resolver` and `resolver_timeout`.
//!
//! Lookups run here, in one background task, never on a request's path.
//! A new answer replaces the group's members ([`ferry_lb::Group::update`]):
//! an address that stays keeps its state, one that left takes no new
//! requests. Only the server's word that a name has no such records
//! (NXDOMAIN, or an empty NOERROR answer) empties its entry; any other
//! failure (a timeout, SERVFAIL, REFUSED) keeps the last good answer and is
//! logged once per outage. Every lookup is counted in
//! `ferry_dns_lookups_total{result="ok"|"empty"|"error"}`.

use crate::live::Live;
use crate::metrics::metrics;
use crate::runtime::{answer_key, members};
use async_trait::async_trait;
use ferry_conf::{Resolver as ResolverConf, Server};
use ferry_lb::Answer;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest time between two lookups of one name (an answer with TTL 0).
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// How long a name without records, or a failed lookup, waits before the
/// next try when `resolver.valid` is 0.
const RETRY: Duration = Duration::from_secs(5);

pub(crate) struct Discovery {
    pub live: Arc<Live>,
}

/// One discovered server entry and when it is looked up next.
struct Entry {
    group: String,
    server: Server,
    due: tokio::time::Instant,
    /// Its lookups fail (an outage is logged once, when it starts).
    failing: bool,
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.live.subscribe();
        loop {
            // One configuration: its entries, its resolver.
            let mut entries = discovered(&self.live);
            let resolver = match entries.is_empty() {
                true => None,
                false => match resolver(&self.live.current().config.resolver) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        log::error!("resolver: {e}; servers with resolve: true are not looked up");
                        None
                    }
                },
            };
            loop {
                let next = entries.iter().map(|e| e.due).min();
                let wait = async {
                    match (next, &resolver) {
                        (Some(t), Some(_)) => tokio::time::sleep_until(t).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = wait => {}
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    _ = shutdown.changed() => return,
                }
                let Some(resolver) = &resolver else { continue };
                let valid = self.live.current().config.resolver.valid.get();
                let now = tokio::time::Instant::now();
                let mut changed_groups: Vec<String> = Vec::new();
                for e in entries.iter_mut().filter(|e| e.due <= now) {
                    let (answer, next) = look_up(resolver, &e.server, valid).await;
                    e.due = tokio::time::Instant::now() + next;
                    let answer = match answer {
                        Ok(answer) => answer,
                        Err(why) => {
                            if !std::mem::replace(&mut e.failing, true) {
                                log::warn!(
                                    "resolver: cannot look up {} for group {}: {why}; keeping the last answer until it answers again",
                                    name_of(&e.server),
                                    e.group
                                );
                            }
                            continue;
                        }
                    };
                    if std::mem::replace(&mut e.failing, false) {
                        log::info!("resolver: {} answers again", name_of(&e.server));
                    }
                    let key = answer_key(&e.group, &e.server);
                    let mut found = self.live.answers.lock().unwrap_or_else(|p| p.into_inner());
                    if found.get(&key) != Some(&answer) {
                        log::info!(
                            "resolver: {} in group {} is now {}",
                            name_of(&e.server),
                            e.group,
                            show(&answer)
                        );
                        found.insert(key, answer);
                        if !changed_groups.contains(&e.group) {
                            changed_groups.push(e.group.clone());
                        }
                    }
                }
                for group in changed_groups {
                    apply(&self.live, &group);
                }
            }
        }
    }
}

/// The entries of the configuration now that are looked up while running,
/// all due at once.
fn discovered(live: &Live) -> Vec<Entry> {
    let rt = live.current();
    let now = tokio::time::Instant::now();
    rt.config
        .upstreams
        .iter()
        .flat_map(|(name, u)| {
            u.servers
                .iter()
                .filter(|s| s.discovered())
                .map(move |s| Entry {
                    group: name.to_string(),
                    server: s.clone(),
                    due: now,
                    failing: false,
                })
        })
        .collect()
}

/// Give group `name` its members from the last answers.
fn apply(live: &Live, name: &str) {
    let rt = live.current();
    let (Some(conf), Some(up)) = (rt.config.upstream(name), rt.upstreams.get(name)) else {
        return;
    };
    let (peers, primaries) = members(name, conf, &live.answers);
    up.group
        .update(conf.balance, conf.consistent, peers, primaries, false);
}

/// hickory's resolver for `resolver:`: its servers (or the system's), no
/// cache (Ferry decides when to look again) and no hosts file (as nginx's
/// resolver).
fn resolver(conf: &ResolverConf) -> Result<TokioResolver, ResolveError> {
    let mut builder = if conf.addrs.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let mut servers = NameServerConfigGroup::new();
        for a in &conf.addrs {
            let addr = a
                .parse::<SocketAddr>()
                .or_else(|_| a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            if let Ok(addr) = addr {
                servers.push(NameServerConfig::new(addr, Protocol::Udp));
                servers.push(NameServerConfig::new(addr, Protocol::Tcp));
            }
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioConnectionProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = conf.timeout.get();
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.ndots = 0;
    Ok(builder.build())
}

/// The name an entry asks for.
fn name_of(s: &Server) -> String {
    let (host, _) = host_port(&s.addr);
    if s.service.is_empty() {
        host.to_string()
    } else {
        format!("_{}._tcp.{host}", s.service)
    }
}

/// `host:port` split; port 80 when absent (as nginx).
fn host_port(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(port) => (h.trim_start_matches('[').trim_end_matches(']'), port),
            Err(_) => (addr, 80),
        },
        _ => (addr, 80),
    }
}

fn show(answer: &[Answer]) -> String {
    if answer.is_empty() {
        return "no address".into();
    }
    let addrs: Vec<String> = answer.iter().map(|a| a.addr.to_string()).collect();
    addrs.join(", ")
}

/// Look `s` up: the new answer (an error when the lookup failed: the last
/// one is kept) and how long until the next lookup.
async fn look_up(
    r: &TokioResolver,
    s: &Server,
    valid: Duration,
) -> (Result<Vec<Answer>, ResolveError>, Duration) {
    let result = if s.service.is_empty() {
        addresses(r, s).await
    } else {
        services(r, s).await
    };
    let retry = if valid.is_zero() { RETRY } else { valid };
    let until_next = |until: Instant| {
        let ttl = until.saturating_duration_since(Instant::now());
        let d = if valid.is_zero() { ttl } else { ttl.min(valid) };
        d.max(MIN_INTERVAL)
    };
    match result {
        Ok((answer, until)) => {
            let label = if answer.is_empty() { "empty" } else { "ok" };
            metrics().dns_lookups.with_label_values(&[label]).inc();
            (Ok(answer), until_next(until))
        }
        Err(e) if no_such_records(&e) => {
            metrics().dns_lookups.with_label_values(&["empty"]).inc();
            (Ok(Vec::new()), retry.max(MIN_INTERVAL))
        }
        Err(e) => {
            metrics().dns_lookups.with_label_values(&["error"]).inc();
            (Err(e), retry.max(MIN_INTERVAL))
        }
    }
}

/// A and AAAA records of the entry's host, each with the entry's port.
async fn addresses(r: &TokioResolver, s: &Server) -> Result<(Vec<Answer>, Instant), ResolveError> {
    let (host, port) = host_port(&s.addr);
    let ips = r.lookup_ip(fqdn(host)).await?;
    let mut answer: Vec<Answer> = ips
        .iter()
        .map(|ip| Answer {
            name: s.addr.clone(),
            addr: SocketAddr::new(ip, port),
            weight: None,
            backup: s.backup,
        })
        .collect();
    answer.sort_by_key(|a| a.addr);
    Ok((answer, ips.valid_until()))
}

/// SRV records of `_SERVICE._tcp.HOST`: each target's addresses with the
/// record's port and weight (0 counts as 1), and nginx's use of priority:
/// the records of the lowest priority value are primaries and the rest
/// backups; for a `backup` entry, the lowest are backups and the rest
/// unused.
async fn services(r: &TokioResolver, s: &Server) -> Result<(Vec<Answer>, Instant), ResolveError> {
    let srv = r.srv_lookup(fqdn(&name_of(s))).await?;
    let mut until = srv.as_lookup().valid_until();
    let mut answer = Vec::new();
    let first = srv.iter().map(|r| r.priority()).min().unwrap_or(0);
    for record in srv.iter() {
        let backup = match (record.priority() == first, s.backup) {
            (true, entry) => entry,
            (false, false) => true,
            (false, true) => continue,
        };
        let target = record.target().to_utf8();
        let target = target.trim_end_matches('.');
        let ips = match r.lookup_ip(fqdn(target)).await {
            Ok(ips) => ips,
            Err(e) if no_such_records(&e) => continue,
            Err(e) => return Err(e),
        };
        until = until.min(ips.valid_until());
        answer.extend(ips.iter().map(|ip| Answer {
            name: format!("{target}:{}", record.port()),
            addr: SocketAddr::new(ip, record.port()),
            weight: Some(u32::from(record.weight()).max(1)),
            backup,
        }));
    }
    answer.sort_by_key(|a| a.addr);
    answer.dedup_by_key(|a| a.addr);
    Ok((answer, until))
}

/// The server said the name has no such records: NXDOMAIN, or NOERROR
/// with no answer. hickory reports SERVFAIL, REFUSED and the other error
/// codes as "no records found" too; those say nothing of the name, so
/// they are failures that keep the last answer.
fn no_such_records(e: &ResolveError) -> bool {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

/// A name as written is absolute: no search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_of_an_entry() {
        assert_eq!(host_port("app.internal:8080"), ("app.internal", 8080));
        assert_eq!(host_port("app.internal"), ("app.internal", 80));
        assert_eq!(host_port("[::1]:81"), ("::1", 81));
    }
}
