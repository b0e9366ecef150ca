//! Starting Ferry: load and check the YAML, build the runtime, and hand
//! Pingora's server the listeners. Pingora owns the process from there:
//! worker threads, signals, graceful shutdown and upgrade.

use crate::cli::Args;
use crate::health_check::HealthChecks;
use crate::pingora_glue::Glue;
use crate::proxy_trait::ProxyHttp;
use crate::runtime::Runtime;
use clap::Parser;
use ferry_conf::Config;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use std::path::Path;
use std::sync::Arc;

/// Run a Ferry binary: parse the command line, then check (`-t`) or serve.
/// Returns the exit status for `-t` and for errors; serving never returns.
pub fn main<P: ProxyHttp>(app: P) -> i32 {
    let args = Args::parse();
    init_logging();
    let config = match ferry_conf::load_file(Path::new(&args.conf)) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return 1;
        }
    };
    if args.test {
        println!("ok");
        return 0;
    }
    match unsupported(&config) {
        Some(what) => {
            eprintln!("{}: {what}", args.conf);
            1
        }
        None => serve(app, config, &args),
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    // A second init (a program that set up its own logger) is fine.
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// What this build cannot serve yet, said plainly rather than ignored.
fn unsupported(c: &Config) -> Option<String> {
    if c.listen.iter().any(|l| l.tls.is_some()) {
        return Some("listen: tls is not supported by this build yet".into());
    }
    if c.listen.iter().any(|l| l.proxy_protocol) {
        return Some("listen: proxy_protocol is not supported by this build yet".into());
    }
    None
}

fn serve<P: ProxyHttp>(app: P, config: Config, args: &Args) -> i32 {
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, config.server_conf());
    server.bootstrap();
    if config.admin.is_some() {
        log::warn!("admin: /healthz and /metrics are not served by this build yet");
    }
    let listen = config.listen.clone();
    let runtime = Arc::new(Runtime::new(config, &server.configuration));
    let checks: Vec<_> = runtime
        .config
        .upstreams
        .iter()
        .filter_map(|(name, u)| {
            Some((
                runtime.upstreams.get(name)?.clone(),
                u.health_check.clone()?,
            ))
        })
        .collect();
    if !checks.is_empty() {
        let service = HealthChecks { groups: checks };
        server.add_service(pingora_core::services::background::background_service(
            "health checks",
            service,
        ));
    }
    let glue = Glue {
        app: Arc::new(app),
        runtime,
    };
    let mut service =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, glue, "ferry");
    for l in &listen {
        let mut opts = TcpSocketOptions::default();
        opts.tcp_snd_buf = l.sndbuf.map(|s| s.as_usize());
        opts.tcp_recv_buf = l.rcvbuf.map(|s| s.as_usize());
        service.add_tcp_with_settings(&l.addr, opts);
    }
    server.add_service(service);
    server.run_forever()
}
