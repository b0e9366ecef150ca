//! Checks that need the whole file: names that must exist, duplicates, and
//! nginx's buffer rules (`ngx_http_proxy_merge_loc_conf`). Each problem is
//! reported with the path of what is wrong. Nothing here looks outside the
//! file: readable certificates, host names that resolve and Pingora's own
//! `server:` keys are checked where Ferry starts, with the same positions
//! ([`crate::Config::locate`]).

use crate::proxy_conf::ProxyConf;
use crate::root::Config;
use crate::upstream::Balance;
use std::net::SocketAddr;

/// A problem found after parsing: where (a dotted path into the document,
/// such as `upstreams.app.servers.0.addr`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    /// Point at the key rather than the value.
    pub at_key: bool,
}

impl Problem {
    /// A problem with the value at `path`.
    pub fn at_value(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
            at_key: false,
        }
    }

    /// A problem with the key at `path` itself.
    pub fn at_key(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            at_key: true,
            ..Problem::at_value(path, message)
        }
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem::at_value(path, message)
}

/// Check a parsed config; server addresses written as `ip:port` are
/// filled in (host names are resolved where Ferry starts).
pub fn validate(c: &mut Config) -> Vec<Problem> {
    let mut out = Vec::new();
    check_listen(c, &mut out);
    check_upstreams(c, &mut out);
    check_routes(c, &mut out);
    check_caches(c, &mut out);
    crate::limit::check(c, &mut out);
    if c.client_header_timeout.is_zero() {
        out.push(problem(
            "client_header_timeout",
            "client_header_timeout must be more than 0",
        ));
    }
    let large = c.large_client_header_buffers;
    if large.count == 0 || large.size.0 == 0 {
        out.push(problem(
            "large_client_header_buffers",
            "large_client_header_buffers needs at least one buffer of more than 0 bytes",
        ));
    }
    if c.client_header_buffer_size.0 == 0 {
        out.push(problem(
            "client_header_buffer_size",
            "client_header_buffer_size must be more than 0",
        ));
    }
    for (i, a) in c.resolver.addrs.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() && a.parse::<std::net::IpAddr>().is_err() {
            out.push(problem(
                format!("resolver.addrs.{i}"),
                format!("invalid DNS server `{a}`: expected ip or ip:port"),
            ));
        }
    }
    if c.resolver.timeout.is_zero() {
        out.push(problem("resolver.timeout", "timeout must be more than 0"));
    }
    if let Some(r) = &c.real_ip {
        for (i, cidr) in r.trusted.iter().enumerate() {
            if let Err(m) = crate::cidr::Cidr::parse(cidr) {
                out.push(problem(format!("real_ip.trusted.{i}"), m));
            }
        }
    }
    out
}

fn check_listen(c: &Config, out: &mut Vec<Problem>) {
    if c.listen.is_empty() {
        out.push(problem("listen", "at least one listen address is required"));
    }
    let mut seen: Vec<SocketAddr> = Vec::new();
    for (i, l) in c.listen.iter().enumerate() {
        let path = format!("listen.{i}.addr");
        match l.addr.parse::<SocketAddr>() {
            Ok(a) if seen.contains(&a) => out.push(problem(
                path,
                format!("duplicate listen address `{}`", l.addr),
            )),
            Ok(a) => seen.push(a),
            Err(_) => out.push(problem(
                path,
                format!("invalid listen address `{}`: expected ip:port", l.addr),
            )),
        }
    }
    if let Some(admin) = &c.admin {
        match admin.listen.parse::<SocketAddr>() {
            Ok(a) if seen.contains(&a) => out.push(problem(
                "admin.listen",
                format!(
                    "admin address `{}` is also a proxy listen address",
                    admin.listen
                ),
            )),
            Ok(_) => {}
            Err(_) => out.push(problem(
                "admin.listen",
                format!("invalid admin address `{}`: expected ip:port", admin.listen),
            )),
        }
    }
}

fn check_upstreams(c: &mut Config, out: &mut Vec<Problem>) {
    for (name, u) in c.upstreams.0.iter_mut() {
        let base = format!("upstreams.{name}");
        if u.servers.is_empty() {
            out.push(problem(
                format!("{base}.servers"),
                format!("upstream `{name}` has no servers"),
            ));
        }
        if u.balance == Balance::Hash && u.hash_key.is_none() {
            out.push(problem(
                format!("{base}.balance"),
                "balance: hash needs a hash_key",
            ));
        }
        crate::least_time::check(u, &base, out);
        if let Some(st) = &u.sticky {
            crate::sticky::check(st, &format!("{base}.sticky"), out);
        }
        if let Some(h) = &u.health_check {
            if h.interval.is_zero() {
                out.push(problem(
                    format!("{base}.health_check.interval"),
                    "interval must be more than 0",
                ));
            }
            if !h.path.starts_with('/') {
                out.push(problem(
                    format!("{base}.health_check.path"),
                    "path must start with /",
                ));
            }
        }
        for (i, s) in u.servers.iter_mut().enumerate() {
            let sp = format!("{base}.servers.{i}");
            if let Ok(a) = s.addr.parse::<SocketAddr>() {
                s.resolved = vec![a];
            }
            if !s.route.is_empty() {
                crate::sticky::check_route(&s.route, &format!("{sp}.route"), out);
            }
            if s.drain && s.down {
                out.push(Problem::at_key(
                    format!("{sp}.drain"),
                    "a server is either down or drain, not both",
                ));
            }
            if s.weight == 0 {
                out.push(problem(format!("{sp}.weight"), "weight must be at least 1"));
            }
            if !s.service.is_empty() && !s.resolve {
                out.push(problem(
                    format!("{sp}.service"),
                    "service needs resolve: true (it names SRV records looked up while running)",
                ));
            }
            if s.backup && !u.balance.allows_backup() {
                out.push(problem(
                    format!("{sp}.backup"),
                    format!(
                        "backup servers are not allowed with balance: {}",
                        u.balance.as_str()
                    ),
                ));
            }
        }
    }
}

fn check_routes(c: &Config, out: &mut Vec<Problem>) {
    for (i, r) in c.routes.iter().enumerate() {
        let base = format!("routes.{i}");
        match (&r.upstream, &r.respond) {
            (Some(_), Some(_)) => out.push(Problem {
                path: format!("{base}.return"),
                message: "a route has either upstream or return, not both".into(),
                at_key: true,
            }),
            (None, None) => out.push(problem(base.clone(), "a route needs upstream or return")),
            (Some(u), None) if c.upstreams.get(u).is_none() => out.push(problem(
                format!("{base}.upstream"),
                format!("unknown upstream `{u}`"),
            )),
            _ => {}
        }
        if !r.matcher.path_prefix.starts_with('/') {
            out.push(problem(
                format!("{base}.match.path_prefix"),
                "path_prefix must start with /",
            ));
        }
        if let Some(ret) = &r.respond {
            if !(100..=599).contains(&ret.status) {
                out.push(problem(
                    format!("{base}.return.status"),
                    "status must be 100 to 599",
                ));
            }
            if ret.location.is_some() && ![301, 302, 303, 307, 308].contains(&ret.status) {
                out.push(problem(
                    format!("{base}.return.location"),
                    "location goes with status 301, 302, 303, 307 or 308",
                ));
            }
            for (name, _) in ret.headers.iter() {
                check_header_name(name, &format!("{base}.return.headers.{name}"), out);
            }
        }
        check_proxy(&r.proxy, &format!("{base}.proxy"), out);
        if let Some(z) = &r.compress {
            crate::compress::check(z, &format!("{base}.compress"), out);
        }
        if let Some(cache) = &r.cache {
            if r.respond.is_some() {
                out.push(Problem::at_key(
                    format!("{base}.cache"),
                    "a route that answers with return has nothing to cache",
                ));
            }
            check_route_cache(c, cache, &format!("{base}.cache"), out);
        }
    }
}

fn check_caches(c: &Config, out: &mut Vec<Problem>) {
    for (name, zone) in c.caches.iter() {
        if zone.path.is_empty() {
            out.push(problem(
                format!("caches.{name}.path"),
                "path must not be empty",
            ));
        }
        if zone.inactive.is_zero() {
            out.push(problem(
                format!("caches.{name}.inactive"),
                "inactive must be more than 0",
            ));
        }
        if zone.max_keys == 0 {
            out.push(problem(
                format!("caches.{name}.max_keys"),
                "max_keys must be more than 0",
            ));
        }
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (name, zone) in c.caches.iter() {
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == zone.path) {
            out.push(problem(
                format!("caches.{name}.path"),
                format!("cache `{other}` already uses this path"),
            ));
        }
        seen.push((name, &zone.path));
    }
}

fn check_route_cache(c: &Config, r: &crate::cache::RouteCache, base: &str, out: &mut Vec<Problem>) {
    if c.caches.get(&r.zone).is_none() {
        let known: Vec<&str> = c.caches.iter().map(|(n, _)| n).collect();
        out.push(problem(
            format!("{base}.zone"),
            if known.is_empty() {
                format!("unknown cache `{}`: there is no caches: section", r.zone)
            } else {
                format!(
                    "unknown cache `{}`, expected one of {}",
                    r.zone,
                    known.join(", ")
                )
            },
        ));
    }
    if r.key.is_empty() {
        out.push(problem(format!("{base}.key"), "key must not be empty"));
    }
    for (code, _) in r.valid.iter() {
        let ok = code == "any" || code.parse::<u16>().is_ok_and(|s| (100..=599).contains(&s));
        if !ok {
            out.push(Problem::at_key(
                format!("{base}.valid.{code}"),
                format!("valid keys are statuses 100 to 599 or `any`, not `{code}`"),
            ));
        }
    }
    for (i, m) in r.methods.iter().enumerate() {
        if !["GET", "HEAD", "POST"].contains(&m.as_str()) {
            out.push(problem(
                format!("{base}.methods.{i}"),
                format!("a cache stores GET, HEAD or POST, not `{m}`"),
            ));
        }
    }
    if r.min_uses == 0 {
        out.push(problem(
            format!("{base}.min_uses"),
            "min_uses must be at least 1",
        ));
    }
    for (i, h) in r.ignore_headers.iter().enumerate() {
        if !crate::cache::IGNORABLE_HEADERS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(h))
        {
            out.push(problem(
                format!("{base}.ignore_headers.{i}"),
                format!(
                    "`{h}` cannot be ignored: expected one of {}",
                    crate::cache::IGNORABLE_HEADERS.join(", ")
                ),
            ));
        }
    }
    let off = r.use_stale.contains(&crate::cache::StaleCondition::Off);
    if off && r.use_stale.len() > 1 {
        out.push(problem(
            format!("{base}.use_stale"),
            "off cannot be combined with other conditions",
        ));
    }
    if r.lock_timeout.is_zero() || r.lock_age.is_zero() {
        let key = if r.lock_timeout.is_zero() {
            "lock_timeout"
        } else {
            "lock_age"
        };
        out.push(problem(
            format!("{base}.{key}"),
            format!("{key} must be more than 0"),
        ));
    }
}

fn check_header_name(name: &str, path: &str, out: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        out.push(Problem {
            path: path.to_string(),
            message: format!("invalid header name `{name}`"),
            at_key: true,
        });
    }
}

/// nginx's rules for the proxy buffers, plus Ferry's own sanity checks.
fn check_proxy(p: &ProxyConf, base: &str, out: &mut Vec<Problem>) {
    let largest = p.largest_buffer();
    if p.buffer_size.0 == 0 {
        out.push(problem(
            format!("{base}.buffer_size"),
            "buffer_size must be more than 0",
        ));
    }
    if p.buffers.count < 2 {
        out.push(problem(
            format!("{base}.buffers.count"),
            "there must be at least 2 buffers",
        ));
    }
    if p.buffers.size.0 == 0 {
        out.push(problem(
            format!("{base}.buffers.size"),
            "buffers.size must be more than 0",
        ));
    }
    let max_busy = u64::from(p.buffers.count.saturating_sub(1)) * p.buffers.size.0;
    if p.busy_buffers_size.0 < largest {
        out.push(problem(
            format!("{base}.busy_buffers_size"),
            format!(
                "busy_buffers_size must be at least max(buffer_size, buffers.size) = {largest}"
            ),
        ));
    } else if p.busy_buffers_size.0 > max_busy {
        out.push(problem(
            format!("{base}.busy_buffers_size"),
            format!(
                "busy_buffers_size must be at most (buffers.count - 1) x buffers.size = {max_busy}"
            ),
        ));
    }
    if p.max_temp_file_size.0 != 0 && p.max_temp_file_size.0 < largest {
        out.push(problem(
            format!("{base}.max_temp_file_size"),
            format!("max_temp_file_size must be 0 or at least max(buffer_size, buffers.size) = {largest}"),
        ));
    }
    if p.temp_file_write_size.0 < largest {
        out.push(problem(
            format!("{base}.temp_file_write_size"),
            format!(
                "temp_file_write_size must be at least max(buffer_size, buffers.size) = {largest}"
            ),
        ));
    }
    if p.temp_path.is_empty() {
        out.push(problem(
            format!("{base}.temp_path"),
            "temp_path must not be empty",
        ));
    }
    if p.client_body_buffer_size.0 == 0 {
        out.push(problem(
            format!("{base}.client_body_buffer_size"),
            "client_body_buffer_size must be more than 0",
        ));
    }
    for (code, page) in &p.error_pages {
        if !(300..=599).contains(code) {
            out.push(problem(
                format!("{base}.error_pages.{code}"),
                "error_pages keys are statuses 300 to 599",
            ));
        }
        if page.status.is_some_and(|s| !(100..=599).contains(&s)) {
            out.push(problem(
                format!("{base}.error_pages.{code}.status"),
                "status must be 100 to 599",
            ));
        }
    }
    for (name, _) in p.set_headers.iter() {
        check_header_name(name, &format!("{base}.set_headers.{name}"), out);
    }
    for (i, name) in p.hide_headers.iter().enumerate() {
        check_header_name(name, &format!("{base}.hide_headers.{i}"), out);
    }
    for (i, name) in p.pass_headers.iter().enumerate() {
        check_header_name(name, &format!("{base}.pass_headers.{i}"), out);
    }
    for (name, _) in p.add_headers.iter() {
        check_header_name(name, &format!("{base}.add_headers.{name}"), out);
    }
}
