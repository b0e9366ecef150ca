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
//! Each TLS listener's certificate and key are read again (a new path, or
//! the same files replaced in place): new handshakes use the new pair,
//! connections already open keep theirs ([`crate::client::certs`]). A pair
//! that does not load refuses the whole reload, with its position.
//!
//! What Pingora's server owns cannot change without a new process: the
//! listening sockets (`listen` but for its `tls` files, `admin.listen`) and
//! `server:`. A reload that changes them applies the rest and logs what it
//! left as it was.

use crate::live::Live;
use crate::metrics::metrics;
use crate::runtime::Runtime;
use ferry_conf::{ConfErrors, Config, Listen};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let began = SystemTime::now();
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
    let pid_file = crate::preflight::server_conf(&live.current().config).pid_file;
    report(&pid_file, began, &result);
    result
}

/// Where a reload's outcome is written for `ferry -s reload`: beside the
/// pid file, by which that command finds the process.
fn outcome_file(pid_file: &str) -> PathBuf {
    PathBuf::from(format!("{pid_file}.reload"))
}

/// Write the outcome of the reload that began at `began`: a first line
/// with that time (nanoseconds since the epoch) and `ok` or `refused`,
/// then the reasons. Written beside and renamed: a reader sees it whole.
fn report(pid_file: &str, began: SystemTime, result: &Result<(), Refused>) {
    let nanos = began.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let text = match result {
        Ok(()) => format!("{nanos} ok\n"),
        Err(e) => format!("{nanos} refused\n{e}\n"),
    };
    let file = outcome_file(pid_file);
    let tmp = PathBuf::from(format!("{pid_file}.reload.tmp"));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        log::warn!(
            "reload: cannot write its outcome to {} for `-s reload`: {e}",
            file.display()
        );
    }
}

/// The outcome of a reload that began at `since` or later, as the
/// running process wrote it for `ferry -s reload`: `None` while there is
/// none; the reasons when it was refused.
pub(crate) fn outcome_since(pid_file: &str, since: SystemTime) -> Option<Result<(), String>> {
    let text = std::fs::read_to_string(outcome_file(pid_file)).ok()?;
    let (first, reasons) = text.split_once('\n').unwrap_or((&text, ""));
    let (nanos, verdict) = first.split_once(' ')?;
    let since = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    if nanos.parse::<u128>().ok()? < since {
        return None;
    }
    match verdict {
        "ok" => Some(Ok(())),
        _ => Some(Err(reasons.trim_end().to_string())),
    }
}

fn reload_inner(live: &Live) -> Result<(), Refused> {
    let mut config = (live.load)(&live.file).map_err(Refused::Invalid)?;
    // Before anything is put back: the pairs, and their positions, are the
    // file's.
    let certs = live.certs.load(&config).map_err(Refused::Invalid)?;
    let old = live.current();
    for key in keep_what_needs_an_upgrade(&old.config, &mut config) {
        log::warn!("reload: `{key}` changed; it takes a graceful upgrade (--upgrade, then SIGQUIT), so it was not applied");
    }
    let runtime = Runtime::build(config, &live.connector, Some(&old), &live.answers)
        .map_err(|e| Refused::Unservable(format!("access_log: cannot open it: {e}")))?;
    certs.swap_in();
    live.replace(runtime);
    Ok(())
}

/// Put back into `new` what only a new process can change; the keys that
/// differed.
fn keep_what_needs_an_upgrade(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if !same_sockets(&old.listen, &new.listen) {
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

/// The same listening sockets: the entries equal but for their `tls`
/// files, which a reload reads again.
fn same_sockets(old: &[Listen], new: &[Listen]) -> bool {
    let socket = |l: &Listen| {
        let mut l = l.clone();
        if let Some(tls) = &mut l.tls {
            tls.cert.clear();
            tls.key.clear();
        }
        l
    };
    old.iter().map(socket).eq(new.iter().map(socket))
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
    fn new_certificate_files_are_no_new_listener() {
        let tls = |cert: &str| {
            format!("listen:\n  - {{ addr: 127.0.0.1:1, tls: {{ cert: {cert}, key: k.pem }} }}\nroutes: [{{ return: {{ status: 200 }} }}]\n")
        };
        let old = config(&tls("old.pem"));
        let mut new = config(&tls("new.pem"));
        assert!(keep_what_needs_an_upgrade(&old, &mut new).is_empty());
        assert_eq!(
            new.listen[0].tls.as_ref().map(|t| t.cert.as_str()),
            Some("new.pem")
        );
        let mut plain = config("listen: [127.0.0.1:1]\nroutes: [{ return: { status: 200 } }]\n");
        assert_eq!(
            keep_what_needs_an_upgrade(&old, &mut plain),
            ["listen"],
            "TLS off is a new listener"
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
