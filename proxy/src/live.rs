//! The configuration being served, as one pointer swapped whole: each
//! request takes the configuration current when it begins and keeps it to
//! its end, and a reload ([`crate::reload`]) or a DNS answer
//! ([`crate::discovery`]) changes what the next requests see. No lock on a
//! request's path: taking the current configuration is one atomic load.
//!
//! nginx counterpart: the `ngx_cycle` pointer, which a reload replaces for
//! new workers while the old ones finish their requests.

use crate::client::certs::Certs;
use crate::runtime::{Answers, Runtime};
use arc_swap::ArcSwap;
use ferry_conf::{ConfErrors, Config};
use pingora_core::connectors::ConnectorOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// How a configuration file is read and checked: the loader with the
/// program's own settings key, then the checks against the machine.
pub(crate) type Loader = Box<dyn Fn(&Path) -> Result<Config, ConfErrors> + Send + Sync>;

pub(crate) struct Live {
    current: ArcSwap<Runtime>,
    /// The file given with `-c`, read again on reload.
    pub(crate) file: PathBuf,
    pub(crate) load: Loader,
    /// The connector options every group's pool starts from (`server:`).
    pub(crate) connector: ConnectorOptions,
    /// The last DNS answers of the discovered servers.
    pub(crate) answers: Answers,
    /// The TLS listeners' acceptors, which a reload replaces.
    pub(crate) certs: Certs,
    /// Bumped on every new configuration, for the background tasks that
    /// follow it (DNS discovery, health checks).
    generation: watch::Sender<u64>,
}

impl Live {
    pub(crate) fn new(
        runtime: Runtime,
        file: PathBuf,
        load: Loader,
        connector: ConnectorOptions,
        certs: Certs,
    ) -> Live {
        Live {
            current: ArcSwap::from_pointee(runtime),
            file,
            load,
            connector,
            answers: Answers::default(),
            certs,
            generation: watch::Sender::new(0),
        }
    }

    /// The configuration for a request beginning now.
    pub(crate) fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Serve `runtime` from now on.
    pub(crate) fn replace(&self, runtime: Runtime) {
        self.current.store(Arc::new(runtime));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Wakes whenever the configuration was replaced.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
