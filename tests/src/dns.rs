//! A real DNS server for the discovery tests: dnsmasq (Debian's package;
//! `.ci/run` installs it) on a free loopback UDP port, answering only from
//! a hosts file and SRV lines the test writes. Names under `.test` are
//! answered from that data alone (`NXDOMAIN` for the rest), with a TTL of
//! one second. A change to the hosts file is read on SIGHUP.

use crate::ferry::fresh_dir;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Dns {
    pub port: u16,
    dir: PathBuf,
    /// dnsmasq's arguments for the test's data.
    args: Vec<String>,
    child: Option<Child>,
    /// The dnsmasq behind a SERVFAIL one.
    behind: Option<Child>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback UDP port (dnsmasq takes the same number in TCP too).
fn free_udp_port() -> u16 {
    loop {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free udp port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How a restarted dnsmasq answers every question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// REFUSED: a dnsmasq with no data and no upstream server.
    Refused,
    /// SERVFAIL: a dnsmasq that validates DNSSEC in front of one that
    /// answers unsigned (the answer is bogus).
    ServFail,
}

/// A root trust anchor; the unsigned answers behind it cannot be proven.
const ROOT_ANCHOR: &str =
    "--trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// dnsmasq on 127.0.0.1:`port` with `args` after the common ones, once it
/// listens; `None` when it did not start.
async fn dnsmasq(dir: &std::path::Path, port: u16, args: &[String]) -> Option<Child> {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
        "--log-facility=-",
    ])
    .arg(format!("--port={port}"))
    .args(args);
    if unsafe { libc::geteuid() } == 0 {
        // As root dnsmasq would drop to `nobody`; the test's files stay
        // readable either way, but keep it simple.
        cmd.arg("--user=root");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dnsmasq.log"))
        .expect("log");
    let mut child = match cmd.stdout(Stdio::null()).stderr(log).spawn() {
        Ok(c) => c,
        Err(e) => {
            panic!("cannot run dnsmasq ({e}): the DNS tests need it (apt-get install -y dnsmasq)")
        }
    };
    let listening = crate::until_or(|| {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        crate::ferry::listens_udp(child.id(), port).then_some(true)
    })
    .await;
    if listening == Some(true) {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Dns {
    /// Start dnsmasq with `hosts` (lines of `IP NAME`) and `srv` records
    /// (`_service._tcp.NAME,TARGET,PORT,PRIORITY,WEIGHT`, dnsmasq's
    /// `--srv-host`).
    pub async fn start(hosts: &str, srv: &[&str]) -> Dns {
        let dir = fresh_dir();
        std::fs::write(dir.join("hosts"), hosts).expect("hosts file");
        let mut args = vec![
            "--local=/test/".to_string(),
            "--local-ttl=1".to_string(),
            format!("--addn-hosts={}", dir.join("hosts").display()),
        ];
        args.extend(srv.iter().map(|r| format!("--srv-host={r}")));
        for _ in 0..5 {
            let port = free_udp_port();
            if let Some(child) = dnsmasq(&dir, port, &args).await {
                return Dns {
                    port,
                    dir,
                    args,
                    child: Some(child),
                    behind: None,
                };
            }
        }
        panic!(
            "dnsmasq did not start; log:\n{}",
            std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default()
        );
    }

    /// From now on answer every question with `failure`, on the same port.
    pub async fn fail_with(&mut self, failure: Failure) {
        self.stop();
        let args = match failure {
            Failure::Refused => Vec::new(),
            Failure::ServFail => {
                let back = free_udp_port();
                let behind = dnsmasq(&self.dir, back, &self.args)
                    .await
                    .expect("the dnsmasq behind starts");
                self.behind = Some(behind);
                vec![
                    format!("--server=127.0.0.1#{back}"),
                    "--dnssec".to_string(),
                    "--dnssec-check-unsigned".to_string(),
                    ROOT_ANCHOR.to_string(),
                ]
            }
        };
        self.child = Some(self.restart(&args).await);
    }

    /// Answer from the hosts file again, on the same port.
    pub async fn recover(&mut self) {
        self.stop();
        let args = self.args.clone();
        self.child = Some(self.restart(&args).await);
    }

    async fn restart(&self, args: &[String]) -> Child {
        let start = std::time::Instant::now();
        loop {
            if let Some(c) = dnsmasq(&self.dir, self.port, args).await {
                return c;
            }
            assert!(
                start.elapsed() < crate::WAIT,
                "dnsmasq did not start again on {}; log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The `resolver:` section for Ferry, with `valid`.
    pub fn resolver_yaml(&self, valid: &str) -> String {
        format!(
            "resolver: {{ addrs: [\"127.0.0.1:{}\"], valid: {valid}, timeout: 1s }}\n",
            self.port
        )
    }

    /// Replace the hosts file and have dnsmasq read it again.
    pub fn set_hosts(&self, hosts: &str) {
        let tmp = self.dir.join("hosts.new");
        std::fs::write(&tmp, hosts).expect("hosts file");
        std::fs::rename(&tmp, self.dir.join("hosts")).expect("rename hosts");
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGHUP);
            }
        }
    }

    /// Stop answering (a DNS server that went away).
    pub fn stop(&mut self) {
        for mut c in [self.child.take(), self.behind.take()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
