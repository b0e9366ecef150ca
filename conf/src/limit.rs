//! `limit_req_zones:` and `limit_conn_zones:` (where a limit counts, by
//! which key, at which rate) and a route's `limit_req` and `limit_conn`
//! (which zones apply, with what burst, delay, status).
//!
//! nginx counterpart: `limit_req_zone`, `limit_req`, `limit_req_status`,
//! `limit_req_dry_run` (`ngx_http_limit_req_module`) and `limit_conn_zone`,
//! `limit_conn`, `limit_conn_status`, `limit_conn_dry_run`
//! (`ngx_http_limit_conn_module`).

use crate::template::Template;
use crate::validate::Problem;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One entry of `limit_req_zones:` (nginx `limit_req_zone`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitReqZone {
    /// The template whose value is a request's key; an empty value is not
    /// counted.
    pub key: Template,
    /// `N r/s` or `N r/m`.
    pub rate: Rate,
    /// Where the buckets live: in this process, or in Redis (Ferry).
    #[serde(default)]
    pub store: Store,
    /// What a request gets while the store cannot be reached (Ferry).
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// The most keys kept in this process; past it the least recently used
    /// goes (nginx: the zone's size; a 10m zone keeps about 160,000). Ferry.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

/// One entry of `limit_conn_zones:` (nginx `limit_conn_zone`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConnZone {
    /// The template whose value is a request's key; an empty value is not
    /// counted.
    pub key: Template,
    /// The most keys counted at once; a request whose key finds no room
    /// is refused, as nginx refuses one its zone has no memory for. Ferry.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    160_000
}

/// A rate: `count` requests per second or per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per_minute: bool,
}

impl Rate {
    /// nginx's form: requests per second, in thousandths (`10r/s` is
    /// 10000, `1r/m` is 16).
    pub fn millis_per_second(self) -> u64 {
        let scale = if self.per_minute { 60 } else { 1 };
        self.count.saturating_mul(1000) / scale
    }

    /// Parse `10r/s`, `30r/m` (spaces allowed around the number).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let t = s.trim();
        let (n, per_minute) = if let Some(n) = t.strip_suffix("r/s") {
            (n, false)
        } else if let Some(n) = t.strip_suffix("r/m") {
            (n, true)
        } else {
            return Err(format!("invalid rate `{s}`: expected N r/s or N r/m"));
        };
        match n.trim().parse::<u64>() {
            Ok(count) if count > 0 && count <= 1_000_000_000 => Ok(Rate { count, per_minute }),
            _ => Err(format!(
                "invalid rate `{s}`: the number must be 1 to 1000000000"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per_minute { "m" } else { "s" };
        write!(f, "{}r/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::parse(&s).map_err(de::Error::custom)
    }
}

/// Where a zone's buckets live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Store {
    /// In this process (nginx's shared memory zone).
    #[default]
    Local,
    /// In Redis: every Ferry on it shares one count.
    Redis(RedisUrl),
}

/// `redis://HOST:PORT[/DB]`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// The text as written.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub db: i64,
}

impl RedisUrl {
    /// Parse `redis://HOST:PORT[/DB]`.
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        let bad = || format!("invalid store `{s}`: expected local or redis://HOST:PORT[/DB]");
        let rest = s.strip_prefix("redis://").ok_or_else(bad)?;
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (
                a,
                db.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(bad)?,
            ),
            None => (rest, 0),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', '/', '?', '#']) {
            return Err(bad());
        }
        Ok(RedisUrl {
            url: s.to_string(),
            host: host.to_string(),
            port,
            db,
        })
    }
}

impl<'de> Deserialize<'de> for Store {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "local" {
            return Ok(Store::Local);
        }
        RedisUrl::parse(&s)
            .map(Store::Redis)
            .map_err(de::Error::custom)
    }
}

/// `on_store_error`: what a request gets while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Served as if the limit passed it.
    #[default]
    Allow,
    /// Refused with the limit's status.
    Deny,
}

/// One entry of a route's `limit_req` (nginx `limit_req zone=... burst=...
/// [nodelay | delay=N]`, with `limit_req_status` and `limit_req_dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitReq {
    /// A name from `limit_req_zones`.
    pub zone: String,
    /// Excess requests queued (delayed to the rate) before refusing.
    #[serde(default)]
    pub burst: u64,
    /// Serve the burst at once (still counted).
    #[serde(default)]
    pub nodelay: bool,
    /// Serve the first `delay` excess requests without delay.
    #[serde(default)]
    pub delay: u64,
    /// The status of a refusal (nginx `limit_req_status`, 503).
    #[serde(default = "service_unavailable")]
    pub status: u16,
    /// Count and log, never delay nor refuse (nginx `limit_req_dry_run`).
    #[serde(default)]
    pub dry_run: bool,
}

/// One entry of a route's `limit_conn` (nginx `limit_conn zone N`, with
/// `limit_conn_status` and `limit_conn_dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConn {
    /// A name from `limit_conn_zones`.
    pub zone: String,
    /// The most requests of one key served at once.
    pub conn: u32,
    /// The status of a refusal (nginx `limit_conn_status`, 503).
    #[serde(default = "service_unavailable")]
    pub status: u16,
    /// Count and log, never refuse (nginx `limit_conn_dry_run`).
    #[serde(default)]
    pub dry_run: bool,
}

fn service_unavailable() -> u16 {
    503
}

/// A route's `limit_req` or `limit_conn`: one mapping, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits<T> {
    pub entries: Vec<T>,
    /// Written as a list (so an entry's path has its index).
    pub listed: bool,
}

impl<T> Default for Limits<T> {
    fn default() -> Self {
        Limits {
            entries: Vec::new(),
            listed: false,
        }
    }
}

impl<T> Limits<T> {
    /// The dotted path of entry `i` under `base` (`routes.0.limit_req`).
    pub fn path(&self, base: &str, i: usize) -> String {
        if self.listed {
            format!("{base}.{i}")
        } else {
            base.to_string()
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Limits<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Limits<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with zone, or a list of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Limits<T>, A::Error> {
                let one = T::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(Limits {
                    entries: vec![one],
                    listed: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Limits<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = s.next_element()? {
                    entries.push(e);
                }
                Ok(Limits {
                    entries,
                    listed: true,
                })
            }
            fn visit_unit<E>(self) -> Result<Limits<T>, E> {
                Ok(Limits::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The checks of the limit keys, each problem with its path.
pub(crate) fn check(c: &crate::root::Config, out: &mut Vec<Problem>) {
    for (name, z) in c.limit_req_zones.iter() {
        check_zone_key(&z.key, &format!("limit_req_zones.{name}.key"), out);
        if z.max_keys == 0 {
            out.push(Problem::at_value(
                format!("limit_req_zones.{name}.max_keys"),
                "max_keys must be more than 0",
            ));
        }
    }
    for (name, z) in c.limit_conn_zones.iter() {
        check_zone_key(&z.key, &format!("limit_conn_zones.{name}.key"), out);
        if z.max_keys == 0 {
            out.push(Problem::at_value(
                format!("limit_conn_zones.{name}.max_keys"),
                "max_keys must be more than 0",
            ));
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        for (key, set) in [
            ("limit_req", !r.limit_req.entries.is_empty()),
            ("limit_conn", !r.limit_conn.entries.is_empty()),
        ] {
            if set && r.respond.is_some() {
                out.push(Problem::at_key(
                    format!("routes.{i}.{key}"),
                    "a route that answers with return is not limited: nginx's return runs before the limits",
                ));
            }
        }
        check_route_req(c, &r.limit_req, &format!("routes.{i}.limit_req"), out);
        check_route_conn(c, &r.limit_conn, &format!("routes.{i}.limit_conn"), out);
    }
}

fn check_zone_key(key: &Template, path: &str, out: &mut Vec<Problem>) {
    if key.is_empty() {
        out.push(Problem::at_value(path, "key must not be empty"));
    }
}

/// A zone name that is not declared, with the names that are.
fn unknown_zone(section: &str, zone: &str, known: Vec<&str>) -> String {
    if known.is_empty() {
        format!("unknown zone `{zone}`: there is no {section}: section")
    } else {
        format!(
            "unknown zone `{zone}`, expected one of {}",
            known.join(", ")
        )
    }
}

fn check_status(status: u16, path: String, out: &mut Vec<Problem>) {
    if !(400..=599).contains(&status) {
        out.push(Problem::at_value(path, "status must be 400 to 599"));
    }
}

fn check_route_req(
    c: &crate::root::Config,
    l: &Limits<LimitReq>,
    base: &str,
    out: &mut Vec<Problem>,
) {
    for (i, e) in l.entries.iter().enumerate() {
        let at = l.path(base, i);
        if c.limit_req_zones.get(&e.zone).is_none() {
            let known = c.limit_req_zones.iter().map(|(n, _)| n).collect();
            out.push(Problem::at_value(
                format!("{at}.zone"),
                unknown_zone("limit_req_zones", &e.zone, known),
            ));
        }
        if l.entries[..i].iter().any(|o| o.zone == e.zone) {
            out.push(Problem::at_value(
                format!("{at}.zone"),
                format!("zone `{}` is already applied on this route", e.zone),
            ));
        }
        if e.nodelay && e.delay > 0 {
            out.push(Problem::at_key(
                format!("{at}.delay"),
                "delay and nodelay together: nodelay already serves the whole burst at once",
            ));
        }
        if e.burst > 1_000_000_000 || e.delay > 1_000_000_000 {
            let key = if e.burst > 1_000_000_000 {
                "burst"
            } else {
                "delay"
            };
            out.push(Problem::at_value(
                format!("{at}.{key}"),
                format!("{key} must be at most 1000000000"),
            ));
        }
        check_status(e.status, format!("{at}.status"), out);
        check_agree(l, i, |x| (x.status, x.dry_run), &at, out);
    }
}

fn check_route_conn(
    c: &crate::root::Config,
    l: &Limits<LimitConn>,
    base: &str,
    out: &mut Vec<Problem>,
) {
    for (i, e) in l.entries.iter().enumerate() {
        let at = l.path(base, i);
        if c.limit_conn_zones.get(&e.zone).is_none() {
            let known = c.limit_conn_zones.iter().map(|(n, _)| n).collect();
            out.push(Problem::at_value(
                format!("{at}.zone"),
                unknown_zone("limit_conn_zones", &e.zone, known),
            ));
        }
        if l.entries[..i].iter().any(|o| o.zone == e.zone) {
            out.push(Problem::at_value(
                format!("{at}.zone"),
                format!("zone `{}` is already applied on this route", e.zone),
            ));
        }
        if e.conn == 0 {
            out.push(Problem::at_value(
                format!("{at}.conn"),
                "conn must be at least 1",
            ));
        }
        check_status(e.status, format!("{at}.status"), out);
        check_agree(l, i, |x| (x.status, x.dry_run), &at, out);
    }
}

/// `status` and `dry_run` are the route's: entry `i` must say what the
/// first says (nginx has one `limit_req_status` per location).
fn check_agree<T>(
    l: &Limits<T>,
    i: usize,
    f: impl Fn(&T) -> (u16, bool),
    at: &str,
    out: &mut Vec<Problem>,
) {
    let (Some(first), Some(this)) = (l.entries.first(), l.entries.get(i)) else {
        return;
    };
    let ((s0, d0), (s, d)) = (f(first), f(this));
    if s != s0 {
        out.push(Problem::at_value(
            format!("{at}.status"),
            format!("the entries of one route share one status: the first says {s0}"),
        ));
    }
    if d != d0 {
        out.push(Problem::at_value(
            format!("{at}.dry_run"),
            format!("the entries of one route share one dry_run: the first says {d0}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_nginx_thousandths() {
        assert_eq!(Rate::parse("10r/s").unwrap().millis_per_second(), 10_000);
        assert_eq!(Rate::parse("1r/m").unwrap().millis_per_second(), 16);
        assert_eq!(Rate::parse(" 30 r/m").unwrap().millis_per_second(), 500);
        assert!(Rate::parse("0r/s").is_err());
        assert!(Rate::parse("10r/h").is_err());
        assert!(Rate::parse("r/s").is_err());
    }

    #[test]
    fn redis_urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6379, 2));
        assert_eq!(RedisUrl::parse("redis://h:1").unwrap().db, 0);
        for bad in [
            "redis://h",
            "http://h:1",
            "redis://:1",
            "redis://h:0",
            "redis://h:1/x",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod loading {
    const HEAD: &str = "\
listen: [127.0.0.1:1]
upstreams: { app: { servers: [ { addr: 127.0.0.1:2 } ] } }
limit_req_zones:
  per_ip: { key: \"$binary_remote_addr\", rate: 10r/s }
  fleet: { key: \"$http_x_tenant\", rate: 30r/m, store: \"redis://127.0.0.1:6379/1\", on_store_error: deny }
limit_conn_zones:
  per_ip: { key: \"$binary_remote_addr\" }
routes:
";

    fn err(routes: &str) -> String {
        crate::load_str("f.yaml", &format!("{HEAD}{routes}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_mapping_or_a_list() {
        let routes = concat!(
            "  - upstream: app\n",
            "    limit_req: { zone: per_ip, burst: 5, nodelay: true }\n",
            "    limit_conn: [ { zone: per_ip, conn: 2, status: 429 } ]\n",
        );
        let c = crate::load_str("f.yaml", &format!("{HEAD}{routes}")).unwrap();
        let r = &c.routes[0];
        assert!(!r.limit_req.listed);
        assert_eq!(r.limit_req.entries[0].burst, 5);
        assert_eq!(r.limit_req.entries[0].status, 503);
        assert!(r.limit_conn.listed);
        assert_eq!(r.limit_conn.entries[0].conn, 2);
        let fleet = c.limit_req_zones.get("fleet").unwrap();
        assert_eq!(fleet.rate.millis_per_second(), 500);
        assert_eq!(fleet.on_store_error, super::OnStoreError::Deny);
        assert!(matches!(&fleet.store, super::Store::Redis(u) if u.db == 1));
    }

    #[test]
    fn errors_have_positions() {
        let e = err("  - upstream: app\n    limit_req: { zone: nope }\n");
        assert!(
            e.starts_with("f.yaml:10:24: unknown zone `nope`, expected one of per_ip, fleet"),
            "{e}"
        );
        let e = err("  - upstream: app\n    limit_req: [ { zone: per_ip }, { zone: fleet, status: 429 } ]\n");
        assert!(
            e.starts_with("f.yaml:10:59: the entries of one route share one status"),
            "{e}"
        );
        let e = err("  - upstream: app\n    limit_conn: { zone: per_ip, conn: 0 }\n");
        assert!(
            e.starts_with("f.yaml:10:39: conn must be at least 1"),
            "{e}"
        );
        let e = err("  - upstream: app\n    limit_req: { zone: per_ip, burst: 2, bust: 1 }\n");
        assert!(e.starts_with("f.yaml:10:"), "{e}");
        assert!(e.contains("unknown field `bust`"), "{e}");
        let e = err("  - upstream: app\n    limit_conn: { zone: per_ip }\n");
        assert!(e.contains("missing field `conn`"), "{e}");
    }

    #[test]
    fn zone_errors_have_positions() {
        let text = HEAD.replace("rate: 10r/s", "rate: 10r/h");
        let e = crate::load_str("f.yaml", &text).unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:4:"), "{e}");
        assert!(e.contains("invalid rate `10r/h`"), "{e}");
        let text = HEAD.replace("redis://127.0.0.1:6379/1", "redis://nohost");
        let e = crate::load_str("f.yaml", &text).unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:5:"), "{e}");
        assert!(e.contains("invalid store `redis://nohost`"), "{e}");
        let text = HEAD.replace("$http_x_tenant", "$nope");
        let e = crate::load_str("f.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("unknown variable `$nope`"), "{e}");
    }
}
