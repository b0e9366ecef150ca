//! The whole file: `server`, `listen`, `admin`, `access_log`, `upstreams`,
//! `routes`, and optionally one key a program built on Ferry declares for
//! its own settings (a program's own top-level key).

use crate::listen::{Listen, ListenEntry};
use crate::ordered_map::OrderedMap;
use crate::route::Route;
use crate::upstream::Upstream;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// A loaded, validated configuration. Plain data: behaviour lives in the
/// crates that use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, for messages.
    pub file: String,
    /// The file's text, so that problems found after loading (by the
    /// checks that need the machine) get their line and column too.
    pub source: String,
    /// The `server:` section as written: Pingora's `ServerConf`, checked
    /// and read where Ferry starts.
    pub server: serde_yaml::Mapping,
    pub listen: Vec<Listen>,
    pub admin: Option<Admin>,
    /// The DNS servers for `resolve: true` entries (nginx `resolver`).
    pub resolver: Resolver,
    pub access_log: AccessLog,
    pub real_ip: Option<RealIp>,
    /// nginx `client_header_timeout`: a client has this long from the
    /// first byte of a request to the end of its header (Ferry; 60s).
    pub client_header_timeout: crate::units::Duration,
    /// nginx `client_header_buffer_size`: the usual request header fits
    /// here (1k).
    pub client_header_buffer_size: crate::units::Size,
    /// nginx `large_client_header_buffers`: no request line or header line
    /// longer than `size` (414 / 431), no header larger than `count x size`
    /// (431).
    pub large_client_header_buffers: HeaderBuffers,
    /// nginx `proxy_cache_path`: the caches routes may use, by name.
    pub caches: OrderedMap<crate::cache::CacheZone>,
    /// nginx `limit_req_zone`: the request rate zones routes may use.
    pub limit_req_zones: OrderedMap<crate::limit::LimitReqZone>,
    /// nginx `limit_conn_zone`: the concurrency zones routes may use.
    pub limit_conn_zones: OrderedMap<crate::limit::LimitConnZone>,
    pub upstreams: OrderedMap<Upstream>,
    pub routes: Vec<Route>,
}

/// nginx `large_client_header_buffers N size` (4 x 8k).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderBuffers {
    pub count: u32,
    pub size: crate::units::Size,
}

impl Default for HeaderBuffers {
    fn default() -> Self {
        HeaderBuffers {
            count: 4,
            size: crate::units::Size(8 * 1024),
        }
    }
}

impl HeaderBuffers {
    /// The most a request header may take in all.
    pub fn total(&self, first: crate::units::Size) -> u64 {
        (u64::from(self.count) * self.size.0).max(first.0)
    }
}

impl Config {
    /// `FILE:LINE:COLUMN: message` errors for `problems` in this file,
    /// in the file's order.
    pub fn locate(&self, problems: Vec<crate::Problem>) -> crate::ConfErrors {
        let positions = crate::Positions::index(&self.source);
        let mut errors: Vec<crate::ConfError> = problems
            .into_iter()
            .map(|p| {
                let pos = if p.at_key {
                    positions.key(&p.path)
                } else {
                    positions.value(&p.path)
                };
                crate::ConfError {
                    file: self.file.clone(),
                    line: pos.line,
                    column: pos.column,
                    message: p.message,
                }
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        crate::ConfErrors(errors)
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.get(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Serves `/metrics` and `/healthz`.
    pub listen: String,
    /// On SIGTERM `/healthz` turns 503 at once and Ferry keeps serving this
    /// long, so an outer balancer can take it out, before it stops
    /// accepting (Ferry).
    #[serde(default = "five_seconds")]
    pub drain_delay: crate::units::Duration,
    /// When set, a changing request (`PATCH /upstreams/...`) needs
    /// `Authorization: Bearer TOKEN` (Ferry).
    #[serde(default)]
    pub token: String,
}

/// `resolver:` (nginx `resolver` + `resolver_timeout`): where servers with
/// `resolve: true` are looked up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resolver {
    /// `ip:port` (or `ip`, port 53) of each DNS server; empty: the
    /// nameservers of `/etc/resolv.conf`.
    pub addrs: Vec<String>,
    /// Look again at least this often; 0: when the answer's TTL runs out.
    pub valid: crate::units::Duration,
    /// How long one lookup may take.
    pub timeout: crate::units::Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            addrs: Vec::new(),
            valid: crate::units::Duration::secs(0),
            timeout: crate::units::Duration::secs(5),
        }
    }
}

fn five_seconds() -> crate::units::Duration {
    crate::units::Duration::secs(5)
}

/// `real_ip:` which peers may tell Ferry the client's address (nginx
/// `set_real_ip_from` + `real_ip_header` + `real_ip_recursive on`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealIp {
    /// CIDRs (`10.0.0.0/8`, `::1/128`) or addresses of trusted proxies.
    pub trusted: Vec<String>,
    /// The header carrying the client address.
    #[serde(default = "xff")]
    pub header: String,
}

fn xff() -> String {
    "X-Forwarded-For".to_string()
}

/// `access_log:` a path, `stdout`, or `off` (also when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLog {
    #[default]
    Off,
    Stdout,
    Path(String),
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AccessLog;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path, stdout or off")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AccessLog, E> {
                if v {
                    Err(E::custom("access_log: expected a path, stdout or off"))
                } else {
                    Ok(AccessLog::Off)
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AccessLog, E> {
                Ok(match v {
                    "off" | "" => AccessLog::Off,
                    "stdout" => AccessLog::Stdout,
                    path => AccessLog::Path(path.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

const ROOT_KEYS: &str =
    "server, listen, admin, resolver, caches, limit_req_zones, limit_conn_zones, access_log, real_ip, client_header_timeout, client_header_buffer_size, large_client_header_buffers, upstreams, routes";

/// Deserializes the root mapping, accepting `extension` as one more key
/// whose value is the program's own settings type `S`.
pub(crate) struct RootSeed<'a, S> {
    pub file: &'a str,
    pub extension: Option<&'a str>,
    pub settings: std::marker::PhantomData<S>,
}

impl<'de, S: serde::de::DeserializeOwned> DeserializeSeed<'de> for RootSeed<'_, S> {
    type Value = (Config, Option<S>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: serde::de::DeserializeOwned> Visitor<'de> for RootSeed<'_, S> {
    type Value = (Config, Option<S>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a mapping with {ROOT_KEYS}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut c = Config {
            file: self.file.to_string(),
            source: String::new(),
            server: serde_yaml::Mapping::new(),
            listen: Vec::new(),
            admin: None,
            resolver: Resolver::default(),
            access_log: AccessLog::Off,
            real_ip: None,
            client_header_timeout: crate::units::Duration::secs(60),
            client_header_buffer_size: crate::units::Size(1024),
            large_client_header_buffers: HeaderBuffers::default(),
            caches: OrderedMap::default(),
            limit_req_zones: OrderedMap::default(),
            limit_conn_zones: OrderedMap::default(),
            upstreams: OrderedMap::default(),
            routes: Vec::new(),
        };
        let mut settings = None;
        let keys = KeySeed {
            extension: self.extension,
        };
        while let Some(key) = m.next_key_seed(keys)? {
            match key.as_str() {
                "server" => {
                    c.server = m
                        .next_value::<Option<serde_yaml::Mapping>>()?
                        .unwrap_or_default()
                }
                "listen" => {
                    c.listen = m
                        .next_value::<Vec<ListenEntry>>()?
                        .into_iter()
                        .map(|e| e.0)
                        .collect()
                }
                "admin" => c.admin = m.next_value()?,
                "resolver" => c.resolver = m.next_value()?,
                "caches" => c.caches = m.next_value()?,
                "limit_req_zones" => c.limit_req_zones = m.next_value()?,
                "limit_conn_zones" => c.limit_conn_zones = m.next_value()?,
                "access_log" => c.access_log = m.next_value()?,
                "real_ip" => c.real_ip = m.next_value()?,
                "client_header_timeout" => c.client_header_timeout = m.next_value()?,
                "client_header_buffer_size" => c.client_header_buffer_size = m.next_value()?,
                "large_client_header_buffers" => c.large_client_header_buffers = m.next_value()?,
                "upstreams" => c.upstreams = m.next_value()?,
                "routes" => c.routes = m.next_value::<Option<Vec<Route>>>()?.unwrap_or_default(),
                // KeySeed let only the extension key through.
                _ => settings = Some(m.next_value::<S>()?),
            }
        }
        Ok((c, settings))
    }
}

/// Reads a root key and rejects unknown ones while serde_yaml still knows
/// where the key is.
#[derive(Clone, Copy)]
struct KeySeed<'a> {
    extension: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "one of {ROOT_KEYS}")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        let known = ROOT_KEYS.split(", ").any(|k| k == key) || Some(key) == self.extension;
        if known {
            return Ok(key.to_string());
        }
        let extra = self.extension.map(|e| format!(", {e}")).unwrap_or_default();
        Err(E::custom(format!(
            "unknown key `{key}`, expected one of {ROOT_KEYS}{extra}"
        )))
    }
}
