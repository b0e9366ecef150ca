//! The checks a loaded configuration needs from the machine, run by `-t`
//! and before Ferry starts, reported at the file's line and column like the
//! loader's own: Pingora's `server:` keys (its `ServerConf`: threads,
//! pid_file, upgrade_sock, grace periods, ...; Pingora ignores unknown
//! keys, Ferry rejects them), certificates and CA files that must be
//! readable, and server host names, resolved here (nginx resolves them
//! when it reads its configuration).
//!
//! nginx counterpart: the parts of `nginx -t` that open files and call
//! the resolver.

use ferry_conf::{ConfErrors, Config, Problem};
use pingora_core::server::configuration::ServerConf;
use std::net::{SocketAddr, ToSocketAddrs};

/// Check `config` against the machine, filling in each server's resolved
/// addresses.
pub(crate) fn check(config: &mut Config) -> Result<(), ConfErrors> {
    let mut out = Vec::new();
    for (k, v) in &config.server {
        if let Err(m) = check_entry(k, v) {
            let path = format!("server.{}", k.as_str().unwrap_or("?"));
            out.push(Problem::at_key(path, m));
        }
    }
    for (i, l) in config.listen.iter().enumerate() {
        if let Some(tls) = &l.tls {
            let before = out.len();
            for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
                readable(file, format!("listen.{i}.tls.{key}"), &mut out);
            }
            if out.len() == before {
                if let Err(m) = crate::client::certs::tls_acceptor(&tls.cert, &tls.key) {
                    out.push(Problem::at_value(format!("listen.{i}.tls.cert"), m));
                }
            }
        }
    }
    for (name, u) in config.upstreams.0.iter_mut() {
        if let Some(ca) = &u.tls.ca_file {
            readable(ca, format!("upstreams.{name}.tls.ca_file"), &mut out);
        }
        for (i, s) in u.servers.iter_mut().enumerate() {
            // Discovered entries are looked up while running, through
            // `resolver:`; a name that does not resolve yet is no error.
            if !s.resolved.is_empty() || s.discovered() {
                continue;
            }
            match resolve(&s.addr) {
                Ok(a) => s.resolved = a,
                Err(m) => out.push(Problem::at_value(
                    format!("upstreams.{name}.servers.{i}.addr"),
                    m,
                )),
            }
        }
    }
    for (name, zone) in config.caches.iter() {
        if let Err(m) = cache_dir_usable(std::path::Path::new(&zone.path)) {
            out.push(Problem::at_value(format!("caches.{name}.path"), m));
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(config.locate(out))
    }
}

/// A cache's directory is one Ferry can write, or can make (nothing is
/// made here: `-t` changes nothing on disk).
fn cache_dir_usable(path: &std::path::Path) -> Result<(), String> {
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if !m.is_dir() => return Err(format!("`{}` is not a directory", at.display())),
            Ok(_) => break,
            Err(_) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Ok(()),
            },
        }
    }
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: access(2) with a NUL-terminated path it only reads.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(format!("cannot write in `{}`", at.display()));
    }
    Ok(())
}

fn readable(file: &str, path: String, out: &mut Vec<Problem>) {
    if std::fs::metadata(file).is_err() {
        out.push(Problem::at_value(path, format!("cannot read `{file}`")));
    }
}

/// Resolve `host:port` (port 80 when absent, as nginx).
pub(crate) fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let with_port = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:80")
    };
    match with_port.to_socket_addrs() {
        Ok(it) => {
            let v: Vec<SocketAddr> = it.collect();
            if v.is_empty() {
                Err(format!("host `{addr}` resolved to no address"))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!("cannot resolve `{addr}`: {e}")),
    }
}

/// Pingora's `ServerConf` from a checked configuration's `server:` section.
pub(crate) fn server_conf(config: &Config) -> ServerConf {
    to_server_conf(&config.server).unwrap_or_default()
}

/// The keys `ServerConf` knows, read off its own serialization so the list
/// follows the Pingora version in use.
fn known_keys() -> Vec<String> {
    match serde_yaml::to_value(ServerConf::default()) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Check one `server:` entry: `Err(message)` for an unknown key or a value of
/// the wrong type.
fn check_entry(key: &serde_yaml::Value, value: &serde_yaml::Value) -> Result<(), String> {
    let name = key.as_str().unwrap_or("?");
    if !known_keys().iter().any(|k| k == name) {
        return Err(format!(
            "unknown server key `{name}`; expected one of Pingora's ServerConf keys: {}",
            known_keys().join(", ")
        ));
    }
    let mut one = serde_yaml::Mapping::new();
    one.insert(key.clone(), value.clone());
    let conf = serde_yaml::from_value::<ServerConf>(serde_yaml::Value::Mapping(one))
        .map_err(|e| format!("server.{name}: {e}"))?;
    // Pingora parses these later with unwrap(): check them here.
    let v4 = conf
        .client_bind_to_ipv4
        .iter()
        .map(|a| (a, a.parse::<std::net::Ipv4Addr>().is_ok()));
    let v6 = conf
        .client_bind_to_ipv6
        .iter()
        .map(|a| (a, a.parse::<std::net::Ipv6Addr>().is_ok()));
    match v4.chain(v6).find(|(_, ok)| !ok) {
        Some((bad, _)) => Err(format!(
            "server.{name}: `{bad}` is not an IP address of that family"
        )),
        None => Ok(()),
    }
}

/// The whole section as a `ServerConf`.
///
/// One default differs from Pingora's: with one thread and no
/// `work_stealing` key, Ferry runs Pingora's single-threaded runtime
/// (`work_stealing: false`). With one worker there is nothing to steal, and
/// the single-threaded scheduler costs about 10% less CPU per small request
/// (docs/performance.md). A `work_stealing` the file sets is kept.
fn to_server_conf(m: &serde_yaml::Mapping) -> Result<ServerConf, String> {
    let mut conf: ServerConf =
        serde_yaml::from_value(serde_yaml::Value::Mapping(m.clone())).map_err(|e| e.to_string())?;
    if conf.threads <= 1 && !m.contains_key("work_stealing") {
        conf.work_stealing = false;
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str) -> Config {
        ferry_conf::load_str("f.yaml", text).expect("the loader's own checks pass")
    }

    fn err(text: &str) -> String {
        check(&mut loaded(text)).unwrap_err().to_string()
    }

    #[test]
    fn server_section_is_pingora_serverconf() {
        let mut c =
            loaded("server:\n  threads: 3\n  grace_period_seconds: 1\nlisten: [127.0.0.1:1]\n");
        assert!(check(&mut c).is_ok());
        let sc = server_conf(&c);
        assert_eq!(sc.threads, 3);
        assert_eq!(sc.grace_period_seconds, Some(1));
        assert!(
            sc.work_stealing,
            "Pingora's default with more than one thread"
        );
        // One thread: Pingora's single-threaded runtime, unless the file says.
        assert!(!server_conf(&loaded("listen: [127.0.0.1:1]\n")).work_stealing);
        let kept = loaded("server:\n  work_stealing: true\nlisten: [127.0.0.1:1]\n");
        assert!(server_conf(&kept).work_stealing);
        let e = err("server:\n  threadz: 3\nlisten: [127.0.0.1:1]\n");
        assert!(
            e.starts_with("f.yaml:2:3: unknown server key `threadz`"),
            "{e}"
        );
        let e = err("server:\n  client_bind_to_ipv4: [nope]\nlisten: [127.0.0.1:1]\n");
        assert!(e.contains("`nope` is not an IP address"), "{e}");
        let e = err("server:\n  threads: many\nlisten: [127.0.0.1:1]\n");
        assert!(
            e.starts_with("f.yaml:2:3: server.threads: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn names_resolve_here_and_an_unresolvable_one_has_its_position() {
        let mut c = loaded(
            "listen: [127.0.0.1:1]\nupstreams:\n  a:\n    servers:\n      - addr: localhost:81\n",
        );
        assert!(c
            .upstreams
            .0
            .iter()
            .all(|(_, u)| u.servers[0].resolved.is_empty()));
        check(&mut c).unwrap();
        let (_, a) = &c.upstreams.0[0];
        assert!(a.servers[0]
            .resolved
            .iter()
            .all(|s| s.port() == 81 && s.ip().is_loopback()));
        let e = err("listen: [127.0.0.1:1]\nupstreams:\n  a:\n    servers:\n      - addr: no-such-host.invalid:80\n");
        assert!(
            e.starts_with("f.yaml:5:15: cannot resolve `no-such-host.invalid:80`"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_certificates_have_positions() {
        let e =
            err("listen:\n  - { addr: 127.0.0.1:1, tls: { cert: /nope.pem, key: /nope.key } }\n");
        assert!(e.contains("f.yaml:2:39: cannot read `/nope.pem`"), "{e}");
    }
}
