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
    child: Option<Child>,
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

impl Dns {
    /// Start dnsmasq with `hosts` (lines of `IP NAME`) and `srv` records
    /// (`_service._tcp.NAME,TARGET,PORT,PRIORITY,WEIGHT`, dnsmasq's
    /// `--srv-host`).
    pub async fn start(hosts: &str, srv: &[&str]) -> Dns {
        let dir = fresh_dir();
        std::fs::write(dir.join("hosts"), hosts).expect("hosts file");
        for _ in 0..5 {
            let port = free_udp_port();
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-hosts",
                "--no-resolv",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--local-ttl=1",
                "--pid-file=",
                "--log-facility=-",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()));
            for r in srv {
                cmd.arg(format!("--srv-host={r}"));
            }
            if unsafe { libc::geteuid() } == 0 {
                // As root dnsmasq would drop to `nobody`; the test's files
                // stay readable either way, but keep it simple.
                cmd.arg("--user=root");
            }
            let log = std::fs::File::create(dir.join("dnsmasq.log")).expect("log");
            let mut child = match cmd.stdout(Stdio::null()).stderr(log).spawn() {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot run dnsmasq ({e}): the DNS tests need it (apt-get install -y dnsmasq)"
                ),
            };
            let listening = crate::until_or(|| {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                crate::ferry::listens_udp(child.id(), port).then_some(true)
            })
            .await;
            if listening == Some(true) {
                return Dns {
                    port,
                    dir,
                    child: Some(child),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "dnsmasq did not start; log:\n{}",
            std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default()
        );
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
