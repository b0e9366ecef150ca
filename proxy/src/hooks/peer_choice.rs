//! What `upstream_peer` answers: the route's group, another group from the
//! YAML, or a server computed at run time.
//!
//! nginx counterpart: `proxy_pass http://$variable`, where the address is
//! made per request rather than written in an `upstream {}` block.

use std::net::SocketAddr;
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
/// settings; timeouts not set here are the route's.
///
/// ```
/// let peer = ferry::Peer::new("127.0.0.1:9001".parse().unwrap())
///     .tls("api.example.com")
///     .read_timeout(std::time::Duration::from_secs(5));
/// assert!(peer.tls);
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
    /// The `Host` sent upstream (`$proxy_host`); empty: the address.
    pub host: String,
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
        }
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

    /// The name the try is recorded and pooled under.
    pub(crate) fn label(&self) -> String {
        if self.host.is_empty() {
            self.addr.to_string()
        } else {
            self.host.clone()
        }
    }
}
