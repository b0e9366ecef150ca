//! A real Redis for the limit tests: redis-server (Debian's package;
//! `.ci/run` installs it) on a free loopback port, no persistence, its
//! files in the test's own directory. A test may stop it and start it
//! again on the same port (an outage).

use crate::ferry::{free_port, fresh_dir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    /// redis-server on a free port, once it answers.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: 0,
            dir: fresh_dir(),
            child: None,
        };
        for _ in 0..5 {
            r.port = free_port();
            if r.run().await {
                return r;
            }
        }
        panic!("redis-server did not start (is it installed?)");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let start = Instant::now();
        while start.elapsed() < crate::WAIT {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.ping().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether it answers `PING`.
    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Kill it (an outage begins); its data goes with it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(self.run().await, "redis-server did not start again");
    }
}
