//! Starting Ferry: load and check the YAML, build the runtime, and hand
//! Pingora's server the listeners and the background tasks (health checks,
//! DNS discovery). Pingora owns the process from there: worker threads,
//! signals, graceful shutdown and upgrade; SIGHUP reloads
//! ([`crate::reload`]).

use crate::admin::{AdminApp, Draining, DrainingSignals};
use crate::cli::Args;
use crate::discovery::Discovery;
use crate::health_check::HealthChecks;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::listener::{endpoints, Listeners};
use crate::live::{Live, Loader};
use crate::request::http_app::FerryHttp;
use crate::runtime::{Answers, Runtime};
use ferry_conf::Config;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::server::configuration::Opt;
use pingora_core::server::RunArgs;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the `ferry` binary looks for its configuration.
pub const DEFAULT_CONF: &str = "/etc/ferry/ferry.yaml";

pub(crate) fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    // A second init (a program that set up its own logger) is fine.
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

pub(crate) fn start_server<P: ProxyHttp>(
    app: P,
    config: Config,
    load: Loader,
    args: &Args,
    file: PathBuf,
    services: Vec<Box<dyn pingora_core::services::ServiceWithDependents>>,
) -> i32 {
    crate::upstream::events::on_marked_failed(crate::metrics::count_marked_failed);
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, crate::preflight::server_conf(&config));
    server.bootstrap();
    if !args.daemon {
        write_pid_file(&server.configuration.pid_file);
    }
    let listen = config.listen.clone();
    let admin = config.admin.clone();
    let connector = ConnectorOptions::from_server_conf(&server.configuration);
    let runtime = match Runtime::build(config, &connector, None, &Answers::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("access_log: cannot open it: {e}");
            return 1;
        }
    };
    let (endpoints, certs) = match endpoints(&listen) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let live = Arc::new(Live::new(runtime, file, load, connector, certs));
    server.add_service(pingora_core::services::background::background_service(
        "health checks",
        HealthChecks { live: live.clone() },
    ));
    server.add_service(pingora_core::services::background::background_service(
        "dns discovery",
        Discovery { live: live.clone() },
    ));
    server.add_service(Listeners {
        http: Arc::new(FerryHttp::new(Arc::new(app), live.clone())),
        endpoints,
    });
    server.add_services(services);
    let draining = Draining::default();
    if let Some(a) = &admin {
        let app = AdminApp {
            draining: draining.clone(),
            live: live.clone(),
        };
        let mut svc = Service::new("ferry admin".to_string(), HttpServer::new_app(app));
        svc.add_tcp(&a.listen);
        server.add_service(svc);
    }
    let delay = admin.map_or(std::time::Duration::ZERO, |a| a.drain_delay.get());
    let at_exit = live.clone();
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingSignals {
            draining,
            delay,
            live,
        }),
    });
    // The requests are over: their access-log lines go out before the
    // process ends.
    if let Some(log) = &at_exit.current().access_log {
        log.finish();
    }
    0
}

/// `ferry -s reload` finds the process by this file (a daemon's is written
/// by Pingora as it forks).
fn write_pid_file(pid_file: &str) {
    if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
        log::warn!("cannot write the pid file {pid_file}: {e}");
    }
}
