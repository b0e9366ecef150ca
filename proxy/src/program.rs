//! A program built on Ferry: its own command line (name, version,
//! description, flags beside Ferry's `-c`, `-t`, `-s reload`, `--upgrade`,
//! `--daemon`), its own settings in the YAML, and its start: `make` gets
//! the settings, the loaded configuration and the command line, may refuse
//! with a `FILE:LINE:COLUMN` problem, and runs under `-t` too.
//!
//! nginx counterpart: a module's `init_module` / `postconfiguration`,
//! where a module checks its directives against the whole configuration
//! before anything serves.

use crate::cli::Args;
use crate::hooks::proxy_trait::ProxyHttp;
use clap::{Args as _, FromArgMatches};
use ferry_conf::{Config, Problem};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::ServiceWithDependents;
use std::cell::RefCell;
use std::path::Path;

/// A program's command line and configuration, before it starts.
///
/// ```no_run
/// use ferry::{Program, ProxyHttp, Start};
/// use ferry::conf::Problem;
///
/// #[derive(ferry::serde::Deserialize)]
/// #[serde(crate = "ferry::serde")]
/// struct Settings { group: String }
///
/// struct Gateway { group: String, verbose: bool }
/// impl ProxyHttp for Gateway {
///     type CTX = ();
///     fn new_ctx(&self) {}
/// }
///
/// fn main() {
///     let code = Program::new("gateway")
///         .version("1.2.0")
///         .about("Our API gateway")
///         .default_conf("/etc/gateway.yaml")
///         .settings("gateway")
///         .arg(ferry::clap::Arg::new("verbose").long("verbose").action(ferry::clap::ArgAction::SetTrue))
///         .run(|mut start: Start<Settings>| {
///             let settings = start.settings.take().ok_or_else(|| {
///                 Problem::at_key("", "the gateway: section is required")
///             })?;
///             start.require_group(&settings.group, "gateway.group")?;
///             Ok(Gateway { group: settings.group, verbose: start.matches.get_flag("verbose") })
///         });
///     std::process::exit(code);
/// }
/// ```
pub struct Program {
    command: clap::Command,
    default_conf: String,
    settings: Option<String>,
    /// The program's own services, run by the same server.
    services: Vec<Box<dyn ServiceWithDependents>>,
}

/// What `make` is handed to build the program's proxy.
pub struct Start<'a, S> {
    /// The program's own settings (the YAML key given to
    /// [`Program::settings`]), `None` when the key is absent.
    pub settings: Option<S>,
    /// The loaded configuration, checked.
    pub config: &'a Config,
    /// The whole command line, the program's own flags included.
    pub matches: &'a clap::ArgMatches,
    required: &'a RefCell<Vec<String>>,
}

impl<S> Start<'_, S> {
    /// The program needs upstream group `name` (a group it names in
    /// `upstream_peer`): a problem at `path` (the setting that names it)
    /// when the YAML has no such group. A reload that removes it is
    /// refused too.
    pub fn require_group(&self, name: &str, path: &str) -> Result<(), Problem> {
        self.required.borrow_mut().push(name.to_string());
        match self.config.upstream(name) {
            Some(_) => Ok(()),
            None => Err(missing_group(name, path)),
        }
    }
}

/// How a reload reads the file: the same way as `-s reload` (once it is
/// whole, see `config_file`).
fn reload_loader<S: serde::de::DeserializeOwned>(
    key: Option<String>,
    required: Vec<String>,
    started_with: Option<String>,
) -> crate::live::Loader {
    // A reload reads the file the same way (once it is whole, see
    // `config_file`): the program's settings are checked (the program
    // keeps the ones it started with, and says so when they changed),
    // and the groups it needs must still be there.
    Box::new(move |path: &Path| {
        let (mut c, _) = crate::config_file::load_stable::<S>(path, key.as_deref())?;
        crate::preflight::check(&mut c)?;
        if let Some(k) = key.as_deref() {
            if settings_text(&c.source, Some(k)) != started_with {
                log::warn!("reload: the program's `{k}` settings changed; the program keeps the ones it started with until a restart or a graceful upgrade (--upgrade, then SIGQUIT)");
            }
        }
        let gone: Vec<Problem> = required
            .iter()
            .filter(|g| c.upstream(g).is_none())
            .map(|g| missing_group(g, "upstreams"))
            .collect();
        if gone.is_empty() {
            Ok(c)
        } else {
            Err(c.locate(gone))
        }
    })
}

/// The program's settings as the file has them (`None` without a key).
fn settings_text(source: &str, key: Option<&str>) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(source).ok()?;
    serde_yaml::to_string(doc.get(key?)?).ok()
}

fn missing_group(name: &str, path: &str) -> Problem {
    Problem::at_value(
        path,
        format!("unknown upstream `{name}`: the program sends requests to it"),
    )
}

impl Program {
    /// A program named `name` (its `--help` and `--version` say so).
    pub fn new(name: &'static str) -> Program {
        Program {
            command: clap::Command::new(name),
            default_conf: crate::server::DEFAULT_CONF.to_string(),
            settings: None,
            services: Vec::new(),
        }
    }

    /// What `--version` prints.
    pub fn version(mut self, version: &'static str) -> Program {
        self.command = self.command.version(version);
        self
    }

    /// The description `--help` starts with.
    pub fn about(mut self, about: &'static str) -> Program {
        self.command = self.command.about(about);
        self
    }

    /// The configuration file when `-c` is not given.
    pub fn default_conf(mut self, path: &str) -> Program {
        self.default_conf = path.to_string();
        self
    }

    /// The top-level YAML key of the program's own settings.
    pub fn settings(mut self, key: &str) -> Program {
        self.settings = Some(key.to_string());
        self
    }

    /// One of the program's own flags, beside Ferry's; read it from
    /// [`Start::matches`].
    pub fn arg(mut self, arg: impl Into<clap::Arg>) -> Program {
        self.command = self.command.arg(arg);
        self
    }

    /// A service of the program's own, run by the same Pingora server as
    /// the proxy (started and stopped with it, through graceful upgrades
    /// too): another listener (a Pingora `listening::Service`), or any
    /// `Service`. Pingora's `add_service`.
    pub fn service(mut self, service: impl ServiceWithDependents + 'static) -> Program {
        self.services.push(Box::new(service));
        self
    }

    /// A background task of the program's own (Pingora's
    /// `background_service`): `task.start` runs once the server starts and
    /// is told through its `ShutdownWatch` when it stops.
    pub fn background(
        self,
        name: &str,
        task: impl BackgroundService + Send + Sync + 'static,
    ) -> Program {
        self.service(background_service(name, task))
    }

    /// Parse the command line, load and check the configuration, build the
    /// proxy with `make` (under `-t` and `-s reload` as well), and serve.
    /// Returns the exit status for `-t`, `-s` and errors; serving returns
    /// only when Ferry stops.
    pub fn run<S, P>(self, make: impl FnOnce(Start<'_, S>) -> Result<P, Problem>) -> i32
    where
        S: serde::de::DeserializeOwned,
        P: ProxyHttp,
    {
        let command = Args::augment_args(self.command).after_help(crate::cli::SIGNALS);
        let matches = command.get_matches();
        let args = match Args::from_arg_matches(&matches) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        crate::server::init_logging();
        let path = args.conf.clone().unwrap_or(self.default_conf);
        let key = self.settings;
        // `-s reload` reads the file as the reload will: once it is whole.
        let read = if args.signal.is_some() {
            crate::config_file::load_stable::<S>
        } else {
            ferry_conf::load_file_with::<S>
        };
        let loaded = read(Path::new(&path), key.as_deref()).and_then(|(mut c, s)| {
            crate::preflight::check(&mut c)?;
            Ok((c, s))
        });
        let (config, settings) = match loaded {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                return 1;
            }
        };
        let required = RefCell::new(Vec::new());
        let start = Start {
            settings,
            config: &config,
            matches: &matches,
            required: &required,
        };
        let app = match make(start) {
            Ok(app) => app,
            Err(problem) => {
                eprintln!("{}", config.locate(vec![problem]));
                return 1;
            }
        };
        let required = required.into_inner();
        let started_with = settings_text(&config.source, key.as_deref());
        if args.test {
            println!("ok");
            return 0;
        }
        if let Some(signal) = &args.signal {
            let pid_file = crate::preflight::server_conf(&config).pid_file;
            return crate::cli::send_signal(signal, &pid_file);
        }
        let load = reload_loader::<S>(key, required, started_with);
        let services = self.services;
        crate::server::start_server(app, config, load, &args, path.into(), services)
    }
}

/// Run a program built on Ferry: the `ferry` command line (`-c FILE`, `-t`,
/// `-s reload`, `--upgrade`, `--daemon`) with `default_conf` when `-c` is
/// absent, the YAML of docs/config.md, Pingora's signals and graceful
/// upgrade. Returns the exit status for `-t` and for errors; serving
/// returns only when Ferry stops. For the program's own name, version and
/// flags, settings of its own or a check of its own at start, use
/// [`Program`]: `run` is its one-line form.
///
/// ```no_run
/// struct MyProxy;
/// impl ferry::ProxyHttp for MyProxy {
///     type CTX = ();
///     fn new_ctx(&self) {}
/// }
/// std::process::exit(ferry::run(MyProxy, "ferry.yaml"));
/// ```
pub fn run<P: ProxyHttp>(app: P, default_conf: &str) -> i32 {
    Program::new(program_name())
        .version(env!("CARGO_PKG_VERSION"))
        .default_conf(default_conf)
        .run::<serde::de::IgnoredAny, P>(|_| Ok(app))
}

/// The name the program was run as (its `--help` says it).
fn program_name() -> &'static str {
    let name = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "ferry".to_string());
    // Once per process, for clap's `&'static str`.
    Box::leak(name.into_boxed_str())
}
