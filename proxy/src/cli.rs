//! The command line: `ferry -c FILE` serves, `ferry -t -c FILE` checks,
//! `ferry -s reload -c FILE` checks and tells the running Ferry to reload.
//!
//! nginx counterpart: `nginx -c FILE`, `nginx -t`, `nginx -s reload`.
//! Signals: SIGHUP reloads, SIGTERM drains gracefully, SIGINT stops fast,
//! SIGQUIT hands the listening sockets to a new process started with
//! `--upgrade`.

use clap::Parser;
use std::time::{Duration, Instant, SystemTime};

// Ferry's own flags, added to every program's command line; the program
// gives the name, version and description (`crate::Program`). (Not a doc
// comment: clap would take it for the description.)
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// The configuration file [default: the program's; /etc/ferry/ferry.yaml for ferry].
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    pub conf: Option<String>,

    /// Check the configuration and exit: prints `ok`, or `FILE:LINE:COLUMN: problem` lines.
    #[arg(short = 't', long = "test")]
    pub test: bool,

    /// Take over the listening sockets of a running Ferry (after SIGQUIT to it).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,

    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Check the configuration as -t does, then signal the running Ferry
    /// (named by `server.pid_file`): `reload` re-reads the file; exits 1
    /// when the running Ferry refuses it.
    #[arg(short = 's', long = "signal", value_name = "SIGNAL", value_parser = ["reload"])]
    pub signal: Option<String>,
}

/// What `--help` says of signals, for Ferry and for every program built on it.
pub(crate) const SIGNALS: &str = "Signals: SIGHUP reloads the configuration, SIGTERM drains \
    gracefully, SIGINT stops fast, SIGQUIT hands the listening sockets to a new process \
    started with --upgrade.";

/// `-s SIGNAL`: send it to the process in `pid_file`; the exit status.
pub(crate) fn send_signal(signal: &str, pid_file: &str) -> i32 {
    let sig = match signal {
        "reload" => libc::SIGHUP,
        other => {
            eprintln!("unknown signal `{other}`");
            return 1;
        }
    };
    let pid = match std::fs::read_to_string(pid_file) {
        Ok(text) => match text.trim().parse::<i32>() {
            Ok(p) if p > 0 => p,
            _ => {
                eprintln!("{pid_file}: no process id in it");
                return 1;
            }
        },
        Err(e) => {
            eprintln!("{pid_file}: cannot read the pid file ({e}); is Ferry running?");
            return 1;
        }
    };
    let sent = std::time::SystemTime::now();
    // SAFETY: kill(2) with a process id read from the pid file and a
    // constant signal; it touches no memory of this process.
    if unsafe { libc::kill(pid, sig) } != 0 {
        eprintln!(
            "cannot signal process {pid} (from {pid_file}): {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    println!("{signal}: signalled process {pid}");
    verdict(pid, pid_file, sent)
}

/// How long `-s reload` waits for the running process to say how its
/// reload went (it may wait for the file to settle, and resolve names).
const VERDICT_WAIT: Duration = Duration::from_secs(60);

/// Wait (bounded) for the outcome of the reload process `pid` began after
/// `sent`: exit status 0 when it serves the file, 1 when it refused it.
fn verdict(pid: i32, pid_file: &str, sent: SystemTime) -> i32 {
    let start = Instant::now();
    loop {
        match crate::reload::outcome_since(pid_file, sent) {
            Some(Ok(())) => {
                println!("reload: process {pid} serves the new configuration");
                return 0;
            }
            Some(Err(reasons)) => {
                eprintln!("{reasons}");
                eprintln!("reload: refused by process {pid}; the old configuration keeps serving");
                return 1;
            }
            None if start.elapsed() > VERDICT_WAIT => {
                eprintln!(
                    "reload: process {pid} did not say how the reload went within {VERDICT_WAIT:?}; see its log"
                );
                return 1;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
