//! Active health checks (`upstreams.NAME.health_check`, Ferry's; nginx has
//! them only in its commercial `health_check`): every `interval`, each
//! server of the group gets `GET path` with `Host: GROUP`, through
//! pingora-load-balancing's `HttpHealthCheck`. A server that fails (no
//! answer within `timeout`, or a status other than `expect_status`) is taken
//! out; it is put back when it passes. The verdict lives in the same peer
//! table as passive health (`max_fails`), so both views agree, and it
//! survives a reload with the server. The checks connect as the group's
//! requests do (TLS with its `ca_file`), and a failure is logged with why. The checks follow the configuration:
//! a reload starts them again on the new groups, and each round checks the
//! members the group has then (DNS discovery may change them).

use crate::upstream::group::Upstream;
use async_trait::async_trait;
use ferry_conf::HealthCheck as CheckConf;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::sync::Arc;

pub struct HealthChecks {
    pub live: Arc<crate::live::Live>,
}

/// The check of group `up`: its TLS settings as its requests have them
/// (the group's `ca_file` on the server's connector options).
fn http_check(
    up: &Upstream,
    conf: &CheckConf,
    connector: &ConnectorOptions,
) -> Option<HttpHealthCheck> {
    let mut opts = connector.clone();
    if let Some(ca) = &up.tls.ca_file {
        opts.ca_file = Some(ca.clone());
    }
    let mut check =
        HttpHealthCheck::new_custom(&up.name, up.tls.enabled, Connector::new(Some(opts)));
    if up.tls.enabled {
        let sni = up
            .group
            .peers()
            .first()
            .map(|p| crate::upstream::group::sni_for(up, p))
            .unwrap_or_default();
        check.peer_template.sni = sni;
        check.peer_template.options.verify_cert = up.tls.verify;
        check.peer_template.options.verify_hostname = up.tls.verify;
    }
    check.req.set_raw_path(conf.path.as_bytes()).ok()?;
    let timeout = Some(conf.timeout.get());
    check.peer_template.options.connection_timeout = timeout;
    check.peer_template.options.total_connection_timeout = timeout;
    check.peer_template.options.read_timeout = timeout;
    check.peer_template.options.write_timeout = timeout;
    let expect = conf.expect_status;
    check.validator = Some(Box::new(move |resp| {
        if resp.status.as_u16() == expect {
            Ok(())
        } else {
            pingora_error::Error::e_explain(
                pingora_error::ErrorType::HTTPStatus(resp.status.as_u16()),
                format!("status {} (expected {expect})", resp.status),
            )
        }
    }));
    Some(check)
}

async fn run_group(
    up: &Upstream,
    conf: &CheckConf,
    connector: &ConnectorOptions,
    mut shutdown: ShutdownWatch,
) {
    let Some(check) = http_check(up, conf, connector) else {
        log::error!("health check of {}: invalid path {:?}", up.name, conf.path);
        return;
    };
    loop {
        for peer in up.group.peers().iter() {
            let Ok(backend) = Backend::new(&peer.addr.to_string()) else {
                continue;
            };
            let result = tokio::time::timeout(conf.timeout.get(), check.check(&backend)).await;
            let why = match &result {
                Ok(Ok(())) => String::new(),
                Ok(Err(e)) => e.to_string().trim().to_string(),
                Err(_) => format!("no answer within {:?}", conf.timeout.get()),
            };
            let healthy = why.is_empty();
            if up.group.set_healthy(peer.addr, healthy) {
                if healthy {
                    log::warn!(
                        "health check: {} in group {} passes again",
                        peer.addr,
                        up.name
                    );
                } else {
                    log::warn!(
                        "health check: {} in group {} fails ({why}), taken out",
                        peer.addr,
                        up.name
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(conf.interval.get()) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.live.subscribe();
        loop {
            let rt = self.live.current();
            let tasks: Vec<_> = rt
                .config
                .upstreams
                .iter()
                .filter_map(|(name, u)| {
                    Some((rt.upstreams.get(name)?.clone(), u.health_check.clone()?))
                })
                .map(|(up, conf)| {
                    let stop = shutdown.clone();
                    let connector = self.live.connector.clone();
                    tokio::spawn(async move { run_group(&up, &conf, &connector, stop).await })
                })
                .collect();
            drop(rt);
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                changed = changes.changed() => changed.is_err(),
            };
            for t in tasks {
                t.abort();
            }
            if stop {
                return;
            }
        }
    }
}
