//! Ferry as a real process: a YAML written to a fresh directory, the
//! `ferry` binary started on a free loopback port, and a wait (bounded) until
//! it accepts connections.

use crate::WAIT;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Ferry {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    program: PathBuf,
    child: Child,
    /// The `server:` and `listen:` part the harness wrote.
    head: String,
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: Cargo builds a package's binaries before its
/// integration tests, next to their `deps/` directory.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target directory");
    dir.join("ferry-under-test")
}

/// This test process's directory under the system's temp dir, removed
/// when the process exits: a test run leaves nothing in `/tmp`.
fn process_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        extern "C" fn remove() {
            if let Some(d) = DIR.get() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        // SAFETY: `remove` is a plain function that only removes files.
        unsafe {
            libc::atexit(remove);
        }
        std::env::temp_dir().join(format!("ferry-test-{}", std::process::id()))
    })
}

/// A fresh directory for one test (inside [`process_dir`]).
pub fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = process_dir().join(N.fetch_add(1, Ordering::SeqCst).to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A free loopback port (for an admin listener, say), never the same one
/// twice in one test process: two tests running side by side must not be
/// handed one port between its release here and their servers' bind.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if GIVEN.lock().expect("ports").insert(port) {
            return port;
        }
    }
}

impl Ferry {
    /// Start Ferry with `body`: the YAML after `server:` and `listen:`
    /// (which the harness writes). `{tmp}` in it becomes a temp directory,
    /// `{dir}` the test's own directory.
    pub async fn start(body: &str) -> Ferry {
        Ferry::start_listen("", body).await
    }

    /// Like [`Ferry::start`], with listen options such as `sndbuf: 32k`.
    pub async fn start_listen(listen_opts: &str, body: &str) -> Ferry {
        Ferry::start_program(&binary(), listen_opts, body, 0).await
    }

    /// Like [`Ferry::start`], with more `server:` keys (`key: value`, one
    /// per line).
    pub async fn start_server_keys(server_keys: &str, body: &str) -> Ferry {
        let keys: String = server_keys.lines().map(|l| format!("  {l}\n")).collect();
        Ferry::start_program_with(&binary(), &keys, "", body, 0, None).await
    }

    /// Like [`Ferry::start_listen`], logging as `rust_log` says (a
    /// `RUST_LOG` filter, such as `info,ferry::client::sendfile=debug`).
    pub async fn start_logging(rust_log: &str, listen_opts: &str, body: &str) -> Ferry {
        Ferry::start_program_with(&binary(), "", listen_opts, body, 0, Some(rust_log)).await
    }

    /// Like [`Ferry::start`] with a real grace period: after a graceful stop
    /// or upgrade begins, requests in flight get `grace_secs` to finish (the
    /// other tests use 0 so their processes exit at once).
    pub async fn start_graceful(body: &str, grace_secs: u32) -> Ferry {
        Ferry::start_program(&binary(), "", body, grace_secs).await
    }

    /// Start `tests/src/bin/hooked.rs`, a program that overrides every hook.
    pub async fn start_hooked(body: &str) -> Ferry {
        Ferry::start_hooked_listen("", body).await
    }

    /// Like [`Ferry::start_hooked`], with listen options such as `h2c: true`.
    pub async fn start_hooked_listen(listen_opts: &str, body: &str) -> Ferry {
        Ferry::start_program(&binary().with_file_name("hooked"), listen_opts, body, 0).await
    }

    /// Start one of `proxy/examples/` (built by `cargo test --workspace`, or
    /// `cargo build -p ferry --examples`) with `body`.
    pub async fn start_example(name: &str, body: &str) -> Ferry {
        let exe = binary().with_file_name("examples").join(name);
        assert!(
            exe.exists(),
            "{} is not built: run `cargo build -p ferry --examples`",
            exe.display()
        );
        Ferry::start_program(&exe, "", body, 0).await
    }

    async fn start_program(
        program: &Path,
        listen_opts: &str,
        body: &str,
        grace_secs: u32,
    ) -> Ferry {
        Ferry::start_program_with(program, "", listen_opts, body, grace_secs, None).await
    }

    async fn start_program_with(
        program: &Path,
        server_keys: &str,
        listen_opts: &str,
        body: &str,
        grace_secs: u32,
        rust_log: Option<&str>,
    ) -> Ferry {
        let dir = fresh_dir();
        for _ in 0..5 {
            let port = free_port();
            let head = format!(
                "server:\n  threads: 1\n  pid_file: {d}/pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: {grace_secs}\n  graceful_shutdown_timeout_seconds: 1\n{server_keys}listen:\n  - {{ addr: \"127.0.0.1:{port}\"{sep}{listen_opts} }}\n",
                d = dir.display(),
                sep = if listen_opts.is_empty() { "" } else { ", " },
            );
            let conf = dir.join("ferry.yaml");
            std::fs::write(&conf, format!("{head}{}", fill(body, &dir))).expect("write yaml");
            let mut child = spawn(program, &conf, &dir, rust_log);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            if wait_listening(addr, &mut child).await {
                return Ferry {
                    addr,
                    dir,
                    program: program.to_path_buf(),
                    child,
                    head,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("ferry did not start; log:\n{}", read_log(&dir));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `{tmp}` directory.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the Ferry process that point into `dir`
    /// (temp files show as `DIR/#123 (deleted)`).
    pub fn fds_in(&self, dir: &Path) -> usize {
        let dir = dir.display().to_string();
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|it| {
                it.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|l| l.display().to_string().starts_with(&dir))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Start a second process on the same YAML with `--upgrade`: it waits
    /// for this one's listening sockets (sent on SIGQUIT). Its log goes to
    /// `ferry-upgrade.log`.
    pub fn spawn_successor(&self) -> Ferry {
        let log = std::fs::File::create(self.dir.join("ferry-upgrade.log")).expect("log file");
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.dir.join("ferry.yaml"))
            .arg("--upgrade")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the successor");
        Ferry {
            addr: self.addr,
            dir: self.dir.clone(),
            program: self.program.clone(),
            child,
            head: self.head.clone(),
        }
    }

    /// The line `tests/src/bin/hooked.rs`'s `logging` wrote for `uri`
    /// (waited for, bounded).
    pub async fn logged(&self, uri: &str) -> String {
        let needle = format!("logging: uri={uri} ");
        // Whole: stderr is unbuffered, and a line may be read while it is
        // still being written, piece by piece.
        let whole = |log: &str| {
            let at = log.find(&needle)?;
            let end = log[at..].find('\n')?;
            Some(log[at..at + end].to_string())
        };
        crate::until("the logging hook's line", || whole(&self.log()).is_some()).await;
        whole(&self.log()).unwrap_or_default()
    }

    /// The configuration file Ferry was started with.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("ferry.yaml")
    }

    /// Write a new configuration: `body` after the same `server:` and
    /// `listen:` (as [`Ferry::start`] takes it).
    pub fn rewrite(&self, body: &str) {
        self.rewrite_all(&format!("{}{}", self.head, fill(body, &self.dir)));
    }

    /// Replace the whole file (to write a bad one, or change `listen:`).
    pub fn rewrite_all(&self, yaml: &str) {
        // Written beside it and renamed: a reader never sees half a file.
        let tmp = self.dir.join("ferry.yaml.new");
        std::fs::write(&tmp, yaml).expect("write yaml");
        std::fs::rename(&tmp, self.conf()).expect("rename yaml");
    }

    /// How many reloads Ferry has finished (served or refused), by its log.
    pub fn reloads(&self) -> usize {
        let log = self.log();
        log.matches("is served from now on").count() + log.matches("reload: refused").count()
    }

    /// SIGHUP, then wait (bounded) until Ferry says how the reload went.
    pub async fn reload(&self) -> std::time::Duration {
        let before = self.reloads();
        self.signal(libc::SIGHUP);
        crate::until("the reload to finish", || self.reloads() > before).await
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Wait (bounded) for the process to exit; its exit status.
    pub async fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }
}

/// `{tmp}` and `{dir}` in a test's YAML.
fn fill(body: &str, dir: &Path) -> String {
    body.replace("{tmp}", &dir.join("tmp").display().to_string())
        .replace("{dir}", &dir.display().to_string())
}

fn spawn(program: &Path, conf: &Path, dir: &Path, rust_log: Option<&str>) -> Child {
    let log = std::fs::File::create(dir.join("ferry.log")).expect("log file");
    let filter = match rust_log {
        Some(f) => f.to_string(),
        None => std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "info".into()),
    };
    Command::new(program)
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", filter)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ferry")
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ferry.log")).unwrap_or_default()
}

/// Poll until the child itself listens on `addr`, or it exits, or [`WAIT`]
/// passes. A successful connect is not enough: while the port is held by
/// someone else, Pingora keeps retrying its bind, and the connect would
/// reach the other listener.
async fn wait_listening(addr: SocketAddr, child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if listens_on(child.id(), addr.port()) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Whether process `pid` holds a TCP socket listening on `port`: the
/// listening sockets' inodes from `/proc/net/tcp`, found among the
/// process's open files.
fn listens_on(pid: u32, port: u16) -> bool {
    holds_socket(pid, port, &["/proc/net/tcp", "/proc/net/tcp6"], "0A")
}

/// Whether process `pid` holds a UDP socket bound to `port`.
pub fn listens_udp(pid: u32, port: u16) -> bool {
    holds_socket(pid, port, &["/proc/net/udp", "/proc/net/udp6"], "07")
}

fn holds_socket(pid: u32, port: u16, tables: &[&str], state: &str) -> bool {
    let port = format!(":{port:04X}");
    let inodes: Vec<String> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let in_state = f.get(3) == Some(&state);
                    let on_port = f.get(1).is_some_and(|a| a.ends_with(&port));
                    let inode = f.get(9).filter(|_| in_state && on_port)?;
                    Some(format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
        })
        .unwrap_or(false)
}

/// Run `ferry -t -c FILE` on `yaml`: (exit code, stdout, stderr).
pub fn check(yaml: &str) -> (i32, String, String) {
    let dir = fresh_dir();
    let conf = dir.join("ferry.yaml");
    std::fs::write(&conf, yaml).expect("write yaml");
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run ferry -t");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(&conf.display().to_string(), "FILE"),
    )
}

/// Run example program `name` (from `proxy/examples/`) with `args`:
/// (exit code, stdout, stderr).
pub fn example_command(name: &str, args: &[&str]) -> (i32, String, String) {
    run_program(&binary().with_file_name("examples").join(name), args)
}

fn run_program(program: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("run the program");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the `ferry` binary with `args` (as an operator would, beside the
/// running one): (exit code, stdout, stderr).
pub fn command(args: &[&str]) -> (i32, String, String) {
    run_program(&binary(), args)
}
