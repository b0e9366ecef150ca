//! `upstreams:` groups and their servers.
//!
//! nginx counterpart: the `upstream {}` block with `server` parameters
//! (`weight`, `max_fails`, `fail_timeout`, `max_conns`, `backup`, `down`),
//! the balancer directives and `keepalive*`; `sticky`, `route=` and
//! `drain` in [`crate::sticky`].

use crate::least_time::LeastTime;
use crate::sticky::Sticky;
use crate::template::Template;
use crate::units::Duration;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "BalanceName")]
pub enum Balance {
    /// nginx's smooth weighted round robin.
    #[default]
    RoundRobin,
    LeastConn,
    /// nginx `least_time`: the group's `least_time:` block, folded in by
    /// validation (its defaults until then).
    LeastTime(LeastTime),
    IpHash,
    Hash,
    Random,
}

/// `balance:` as written: the method's name alone.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BalanceName {
    RoundRobin,
    LeastConn,
    LeastTime,
    IpHash,
    Hash,
    Random,
}

impl From<BalanceName> for Balance {
    fn from(n: BalanceName) -> Balance {
        match n {
            BalanceName::RoundRobin => Balance::RoundRobin,
            BalanceName::LeastConn => Balance::LeastConn,
            BalanceName::LeastTime => Balance::LeastTime(LeastTime::default()),
            BalanceName::IpHash => Balance::IpHash,
            BalanceName::Hash => Balance::Hash,
            BalanceName::Random => Balance::Random,
        }
    }
}

impl Balance {
    /// The name as written in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::LeastTime(_) => "least_time",
            Balance::IpHash => "ip_hash",
            Balance::Hash => "hash",
            Balance::Random => "random",
        }
    }

    /// nginx allows `backup` only with round robin, least_conn and least_time.
    pub fn allows_backup(self) -> bool {
        matches!(
            self,
            Balance::RoundRobin | Balance::LeastConn | Balance::LeastTime(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    pub balance: Balance,
    /// `balance: hash`: a variable template.
    pub hash_key: Option<Template>,
    /// `balance: hash`: ketama when true.
    pub consistent: bool,
    /// `balance: least_time`: what it measures.
    pub least_time: Option<LeastTime>,
    /// nginx `sticky`: cookie, route or learn.
    pub sticky: Option<Sticky>,
    /// Idle connections kept per group (0 = none).
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    pub keepalive_time: Duration,
    pub servers: Vec<Server>,
    pub health_check: Option<HealthCheck>,
    /// TLS to the servers: `true`, or `{ sni, verify, ca_file }` (Ferry).
    pub tls: UpstreamTls,
}

/// `upstreams.NAME.tls` (nginx `proxy_ssl_*`; unlike nginx, verification
/// is on by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub enabled: bool,
    /// The name sent in SNI and checked in the certificate; default: the
    /// server's host name, or the group name for an IP address.
    pub sni: Option<String>,
    pub verify: bool,
    /// PEM file of CAs to trust instead of the system's.
    pub ca_file: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            enabled: false,
            sni: None,
            verify: true,
            ca_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsMap {
    sni: Option<String>,
    #[serde(default = "yes")]
    verify: bool,
    ca_file: Option<String>,
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for UpstreamTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UpstreamTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, or { sni, verify, ca_file }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<UpstreamTls, E> {
                Ok(UpstreamTls {
                    enabled: v,
                    ..UpstreamTls::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<UpstreamTls, A::Error> {
                let t = TlsMap::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(UpstreamTls {
                    enabled: true,
                    sni: t.sni,
                    verify: t.verify,
                    ca_file: t.ca_file,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            balance: Balance::RoundRobin,
            hash_key: None,
            consistent: false,
            least_time: None,
            sticky: None,
            keepalive: 32,
            keepalive_timeout: Duration::secs(60),
            keepalive_requests: 1000,
            keepalive_time: Duration::secs(3600),
            servers: Vec::new(),
            health_check: None,
            tls: UpstreamTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `host:port`; a host name is resolved at start (and at reload).
    /// With `service`, `host` alone (the port comes from the SRV records).
    pub addr: String,
    /// nginx `resolve`: looked up again through `resolver:` while running.
    #[serde(default)]
    pub resolve: bool,
    /// nginx `service=`: with `resolve`, the SRV records of
    /// `_SERVICE._tcp.HOST` give the servers.
    #[serde(default)]
    pub service: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "one")]
    pub max_fails: u32,
    #[serde(default = "ten_seconds")]
    pub fail_timeout: Duration,
    /// 0 = no limit.
    #[serde(default)]
    pub max_conns: u32,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub down: bool,
    /// nginx `route=`: this server's name for `sticky` ("" = derived from
    /// its address).
    #[serde(default)]
    pub route: String,
    /// nginx `drain`: only requests bound to it by `sticky` reach it.
    #[serde(default)]
    pub drain: bool,
    /// Filled in by the loader: what `addr` resolved to.
    #[serde(skip)]
    pub resolved: Vec<SocketAddr>,
}

impl Server {
    /// Whether this entry is looked up while running (`resolve: true` on a
    /// host name), rather than once by the loader.
    pub fn discovered(&self) -> bool {
        self.resolve && self.addr.parse::<SocketAddr>().is_err()
    }
}

fn one() -> u32 {
    1
}
fn ten_seconds() -> Duration {
    Duration::secs(10)
}

/// Optional active check (Ferry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub expect_status: u16,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".into(),
            interval: Duration::secs(5),
            timeout: Duration::secs(1),
            expect_status: 200,
        }
    }
}
