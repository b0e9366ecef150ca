//! The command line: `ferry -c FILE` serves, `ferry -t -c FILE` checks.
//!
//! nginx counterpart: `nginx -c FILE`, `nginx -t`. Signals are Pingora's:
//! SIGTERM drains gracefully, SIGINT stops fast, SIGQUIT hands the listening
//! sockets to a new process started with `--upgrade`.

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferry",
    version,
    about = "A reverse proxy with nginx's upstream semantics, on Pingora",
    after_help = "Signals: SIGTERM drains gracefully, SIGINT stops fast, SIGQUIT hands the \
                  listening sockets to a new process started with --upgrade."
)]
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
}
