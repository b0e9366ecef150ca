//! The TLS listeners' certificates and keys, read again on every reload:
//! each `tls:` listener's acceptor sits behind a pointer that a reload
//! replaces, so new handshakes use the new pair while connections already
//! open keep the one they were made with.
//!
//! nginx counterpart: `ssl_certificate` and `ssl_certificate_key`, read
//! again by `nginx -s reload` (a changed path or a file replaced in place,
//! as certbot and cert-manager do).
//!
//! A reload builds every listener's new acceptor first and swaps them only
//! when all of them loaded: a pair that does not load is a positioned
//! error, and every listener keeps serving its old pair.

use arc_swap::ArcSwap;
use ferry_conf::{ConfErrors, Config, Problem};
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// A listener's current acceptor, shared by its accept loops and reloads.
pub(crate) type Current = Arc<ArcSwap<Acceptor>>;

/// The `tls:` listeners, by listen address.
#[derive(Default)]
pub(crate) struct Certs {
    listeners: Vec<(String, Current)>,
}

/// New acceptors, built and ready to be swapped in.
pub(crate) struct Loaded(Vec<(Current, Arc<Acceptor>)>);

impl Certs {
    /// Follow the listener at `addr`, which serves `current`.
    pub(crate) fn add(&mut self, addr: &str, current: Current) {
        self.listeners.push((addr.to_string(), current));
    }

    /// Build an acceptor for every `tls:` listener from `config` (the
    /// entry of the same address); each pair that does not load is a
    /// problem at its `cert`.
    pub(crate) fn load(&self, config: &Config) -> Result<Loaded, ConfErrors> {
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for (addr, current) in &self.listeners {
            let Some((i, tls)) = config
                .listen
                .iter()
                .enumerate()
                .filter(|(_, l)| &l.addr == addr)
                .find_map(|(i, l)| Some((i, l.tls.as_ref()?)))
            else {
                // Not in the file (or no longer TLS): the listener and its
                // pair stay as they are until an upgrade.
                continue;
            };
            match tls_acceptor(&tls.cert, &tls.key) {
                Ok(a) => built.push((current.clone(), Arc::new(a))),
                Err(m) => problems.push(Problem::at_value(format!("listen.{i}.tls.cert"), m)),
            }
        }
        if problems.is_empty() {
            Ok(Loaded(built))
        } else {
            Err(config.locate(problems))
        }
    }
}

impl Loaded {
    /// New handshakes use the new pairs from now on.
    pub(crate) fn swap_in(self) {
        for (current, acceptor) in self.0 {
            current.store(acceptor);
        }
    }
}

/// Pingora's TLS acceptor for a certificate and key (HTTP/2 offered), or
/// what is wrong with them. Pingora's `build` panics on files it cannot
/// use: the panic is caught, kept quiet, and its message returned.
pub(crate) fn tls_acceptor(cert: &str, key: &str) -> Result<Acceptor, String> {
    let mut settings = TlsSettings::intermediate(cert, key).map_err(|e| e.to_string())?;
    settings.enable_h2();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| settings.build()));
    std::panic::set_hook(hook);
    built.map_err(|panic| {
        let said = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unusable");
        // An unwrapped Pingora error: its context is the part worth saying
        // ("... keys may not be consistent: KeyMismatch").
        let said = said
            .split_once("Owned(\"")
            .and_then(|(_, rest)| rest.split_once("\")"))
            .map_or(said, |(context, _)| context);
        format!("cannot use the certificate and key: {said}")
    })
}
