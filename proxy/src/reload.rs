//! Reload: read the `-c` file again and serve it, without a restart.
//!
//! nginx counterpart: `nginx -s reload` (SIGHUP), where the master parses
//! the new file and starts new workers on it. Ferry has one process, so a
//! reload is a new compiled configuration swapped in ([`crate::live`]):
//! requests in flight finish with the one they began with, new ones take
//! the new one. A group that stays keeps its servers' live state by
//! address (failures, requests in flight, health) and its idle
//! connections; a bad file changes nothing.
//!
//! What Pingora's server owns cannot change without a new process: the
//! listening sockets (`listen`, `admin.listen`) and `server:`. A reload that
//! changes them applies the rest and logs what it left as it was.

use crate::live::Live;
use crate::metrics::metrics;
use crate::runtime::Runtime;
use ferry_conf::{ConfErrors, Config};

/// Why a reload was refused.
pub(crate) enum Refused {
    /// The file is not a valid configuration: each problem with its position.
    Invalid(ConfErrors),
    /// Valid, but it cannot be served (the access log cannot be opened).
    Unservable(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(e) => write!(f, "{e}"),
            Refused::Unservable(m) => f.write_str(m),
        }
    }
}

/// Read the file again and serve it. The old configuration keeps serving
/// when this fails.
pub(crate) fn reload(live: &Live) -> Result<(), Refused> {
    let result = reload_inner(live);
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics().reloads.with_label_values(&[label]).inc();
    match &result {
        Ok(()) => log::info!("reload: {} is served from now on", live.file.display()),
        Err(e) => {
            for line in e.to_string().lines() {
                log::error!("reload: {line}");
            }
            log::error!("reload: refused; the old configuration keeps serving");
        }
    }
    result
}

fn reload_inner(live: &Live) -> Result<(), Refused> {
    let mut config = (live.load)(&live.file).map_err(Refused::Invalid)?;
    let old = live.current();
    for key in keep_what_needs_an_upgrade(&old.config, &mut config) {
        log::warn!("reload: `{key}` changed; it takes a graceful upgrade (--upgrade, then SIGQUIT), so it was not applied");
    }
    let runtime = Runtime::build(config, &live.connector, Some(&old), &live.answers)
        .map_err(|e| Refused::Unservable(format!("access_log: cannot open it: {e}")))?;
    live.replace(runtime);
    Ok(())
}

/// Put back into `new` what only a new process can change; the keys that
/// differed.
fn keep_what_needs_an_upgrade(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if old.listen != new.listen {
        new.listen = old.listen.clone();
        kept.push("listen");
    }
    if old.server != new.server {
        new.server = old.server.clone();
        kept.push("server");
    }
    let listen = |c: &Config| c.admin.as_ref().map(|a| a.listen.clone());
    if listen(old) != listen(new) {
        new.admin = old.admin.clone();
        kept.push("admin.listen");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        ferry_conf::load_str("f.yaml", yaml).expect("valid")
    }

    #[test]
    fn listeners_and_server_stay_and_are_named() {
        let old = config("server: { threads: 1 }\nlisten: [127.0.0.1:1]\nadmin: { listen: 127.0.0.1:3 }\nroutes: [{ return: { status: 200 } }]\n");
        let mut new = config("server: { threads: 2 }\nlisten: [127.0.0.1:2]\nadmin: { listen: 127.0.0.1:4, token: t }\nroutes: [{ return: { status: 204 } }]\n");
        let kept = keep_what_needs_an_upgrade(&old, &mut new);
        assert_eq!(kept, ["listen", "server", "admin.listen"]);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.server, old.server);
        assert_eq!(new.admin, old.admin);
        assert_eq!(
            new.routes[0].respond.as_ref().map(|r| r.status),
            Some(204),
            "the rest applies"
        );
    }

    #[test]
    fn an_unchanged_admin_listener_takes_the_new_token() {
        let old = config("listen: [127.0.0.1:1]\nadmin: { listen: 127.0.0.1:3 }\nroutes: [{ return: { status: 200 } }]\n");
        let mut new = config("listen: [127.0.0.1:1]\nadmin: { listen: 127.0.0.1:3, token: t }\nroutes: [{ return: { status: 200 } }]\n");
        assert!(keep_what_needs_an_upgrade(&old, &mut new).is_empty());
        assert_eq!(new.admin.map(|a| a.token), Some("t".to_string()));
    }
}
