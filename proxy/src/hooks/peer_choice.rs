//! What `upstream_peer` answers: the route's group, another group from the
//! YAML, or a server computed at run time.
//!
//! nginx counterpart: `proxy_pass http://$variable`, where the address is
//! made per request rather than written in an `upstream {}` block.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which servers the next try goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerChoice {
    /// The route's own `upstream`, with its balancer and health.
    Route,
    /// Another group from `upstreams:` (canary routing, a fallback group).
    Group(String),
    /// A server that is not in the YAML (a tenant table, a service
    /// registry): tried, timed out, pooled and logged as any other, with no
    /// passive health kept between requests.
    Peer(Box<Peer>),
}

/// A server chosen at run time ([`PeerChoice::Peer`]).
///
/// Its connections share one keepalive pool, kept per address and TLS
/// settings; timeouts not set here are the route's. A CA file or client
/// certificate is read when first used and again when it changes; one that
/// does not load fails the try (502), its path and the reason logged.
///
/// ```
/// let peer = ferry::Peer::new("127.0.0.1:9001".parse().unwrap())
///     .tls("api.example.com")
///     .ca_file("/etc/ferry/internal-ca.pem")
///     .client_cert("/etc/ferry/client.pem", "/etc/ferry/client.key")
///     .read_timeout(std::time::Duration::from_secs(5));
/// assert!(peer.tls);
/// let local = ferry::Peer::unix("/run/app.sock");
/// assert_eq!(local.unix.as_deref(), Some(std::path::Path::new("/run/app.sock")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// Where to connect.
    pub addr: SocketAddr,
    /// TLS to the server.
    pub tls: bool,
    /// With `tls`: the name sent in SNI and checked in the certificate.
    pub sni: String,
    /// With `tls`: verify the certificate and its name (on by default).
    pub verify: bool,
    /// nginx `proxy_connect_timeout`; `None`: the route's.
    pub connect_timeout: Option<Duration>,
    /// nginx `proxy_read_timeout`; `None`: the route's.
    pub read_timeout: Option<Duration>,
    /// nginx `proxy_send_timeout`; `None`: the route's.
    pub send_timeout: Option<Duration>,
    /// The `Host` sent upstream (`$proxy_host`); empty: the address
    /// (`localhost` for a Unix socket, as nginx sends).
    pub host: String,
    /// With `tls`: the PEM file of the roots the server's certificate must
    /// chain to, instead of the system's (nginx
    /// `proxy_ssl_trusted_certificate`).
    pub ca_file: Option<PathBuf>,
    /// With `tls`: the certificate chain and key files (PEM) presented to
    /// the server (mutual TLS; nginx `proxy_ssl_certificate` and
    /// `proxy_ssl_certificate_key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Connect to this Unix socket instead of `addr` (nginx
    /// `proxy_pass http://unix:/path`).
    pub unix: Option<PathBuf>,
    /// HTTP/2 to the server: prior knowledge in the clear, ALPN `h2` over
    /// TLS (nginx `proxy_http_version 2`); gRPC servers need it.
    pub http2: bool,
}

impl Peer {
    /// Plain HTTP to `addr`, with the route's timeouts.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            tls: false,
            sni: String::new(),
            verify: true,
            connect_timeout: None,
            read_timeout: None,
            send_timeout: None,
            host: String::new(),
            ca_file: None,
            client_cert: None,
            unix: None,
            http2: false,
        }
    }

    /// Plain HTTP to the Unix socket at `path` (`addr` is then unused), with
    /// the route's timeouts.
    pub fn unix(path: impl AsRef<Path>) -> Peer {
        let mut peer = Peer::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        peer.unix = Some(path.as_ref().to_path_buf());
        peer
    }

    /// TLS, with `sni` as the server's name.
    pub fn tls(mut self, sni: &str) -> Peer {
        self.tls = true;
        self.sni = sni.to_string();
        self
    }

    /// Skip certificate verification (a test server's self-signed one).
    pub fn insecure(mut self) -> Peer {
        self.verify = false;
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Peer {
        self.connect_timeout = Some(d);
        self
    }

    /// The timeout between two reads.
    pub fn read_timeout(mut self, d: Duration) -> Peer {
        self.read_timeout = Some(d);
        self
    }

    /// The timeout between two writes.
    pub fn send_timeout(mut self, d: Duration) -> Peer {
        self.send_timeout = Some(d);
        self
    }

    /// The `Host` header sent upstream.
    pub fn host(mut self, host: &str) -> Peer {
        self.host = host.to_string();
        self
    }

    /// Verify the server's certificate with the roots in `path` (PEM).
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Peer {
        self.ca_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Present the certificate chain in `cert` with the key in `key` (PEM).
    pub fn client_cert(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Peer {
        self.client_cert = Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        self
    }

    /// Speak HTTP/2 to the server.
    pub fn http2(mut self) -> Peer {
        self.http2 = true;
        self
    }

    /// The name the try is recorded and pooled under.
    pub(crate) fn label(&self) -> String {
        match (&self.unix, self.host.is_empty()) {
            (_, false) => self.host.clone(),
            (Some(_), true) => "localhost".to_string(),
            (None, true) => self.addr.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_is_localhost_unless_named() {
        assert_eq!(Peer::unix("/run/app.sock").label(), "localhost");
        assert_eq!(Peer::unix("/run/app.sock").host("app").label(), "app");
        let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(Peer::new(addr).label(), "127.0.0.1:9001");
    }
}
