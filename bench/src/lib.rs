//! What the benchmark's baseline programs share: their command line
//! (`NAME LISTEN BACKEND [more]`) and a one-worker Pingora server.

use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;

/// The listen address, the backend address and any further arguments;
/// exits with a usage line when the first two are missing.
pub fn args(name: &str) -> (String, String, Vec<String>) {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: {name} LISTEN BACKEND");
        std::process::exit(2);
    };
    (listen, backend, args.collect())
}

/// A bootstrapped Pingora server with one worker thread, as the benchmark
/// pins every proxy to one CPU. `work_stealing: false` is Pingora's
/// single-threaded runtime, which Ferry also picks for one thread.
pub fn one_thread_server(name: &str, work_stealing: bool) -> Server {
    let conf = ServerConf {
        threads: 1,
        work_stealing,
        pid_file: format!("/tmp/{name}.pid"),
        upgrade_sock: format!("/tmp/{name}.sock"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server
}
