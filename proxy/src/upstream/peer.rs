//! The upstream peer Ferry hands Pingora's connector: Pingora's `HttpPeer`
//! with two per-request costs taken out of the keepalive pool's path.
//!
//! nginx counterpart: the `ngx_http_upstream_rr_peer_t` a try connects to,
//! and the keepalive module's cache lookup by that peer's `sockaddr`.
//!
//! - **The pool key is computed once.** Pingora keys idle connections by
//!   `Peer::reuse_hash`, which hashes the address, scheme, SNI and TLS
//!   options on every lookup and every release. A peer's settings never
//!   change after start, so Ferry hashes them when the peer is made, with
//!   Pingora's own function.
//! - **No `getpeername(2)` per reused connection.** Before handing out a
//!   pooled connection, Pingora asks the kernel for the socket's peer and
//!   compares it with the peer's address (`Peer::matches_fd`): a guard
//!   against two peers whose 64-bit keys collide in one pool. Ferry's pools
//!   are per group (see [`crate::upstream::connect`]), so a collision would need two
//!   servers of one group to share a 64-bit hash of their addresses; Ferry
//!   skips the system call, one per request.

use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::upstreams::peer::{HttpPeer, Peer, PeerOptions, Proxy, Tracer};
use pingora_core::utils::tls::CertKey;
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub struct UpstreamPeer {
    pub http: HttpPeer,
    /// `ip:port`, as a try records it (`$upstream_addr`), made once.
    pub addr_text: String,
    reuse_hash: u64,
}

impl UpstreamPeer {
    pub fn new(http: HttpPeer) -> Self {
        let addr_text = match http.address() {
            // nginx writes a Unix socket's `$upstream_addr` so.
            SocketAddr::Unix(_) => format!("unix:{}", http.address()),
            a => a.to_string(),
        };
        UpstreamPeer {
            addr_text,
            reuse_hash: http.reuse_hash(),
            http,
        }
    }
}

/// Streams one HTTP/2 connection to a server carries at once at most
/// (fewer when the server's `SETTINGS_MAX_CONCURRENT_STREAMS` says so).
const H2_STREAMS: usize = 100;

impl UpstreamPeer {
    /// This peer over HTTP/2: prior knowledge over plain TCP (h2c), ALPN
    /// `h2` over TLS; streams share a connection up to what the server
    /// allows.
    pub fn http2(self) -> UpstreamPeer {
        let mut http = self.http;
        http.options.alpn = pingora_core::protocols::ALPN::H2;
        http.options.max_h2_streams = H2_STREAMS;
        UpstreamPeer::new(http)
    }

    /// This peer over HTTP/1.1 (an upgrade, on a route with
    /// `http_version: "2"`); itself when it is so already.
    pub fn http1(self: Arc<Self>) -> Arc<Self> {
        if self.http.options.alpn.get_min_http_version() == 1 {
            return self;
        }
        let mut http = self.http.clone();
        http.options.alpn = pingora_core::protocols::ALPN::H1;
        Arc::new(UpstreamPeer::new(http))
    }
}

impl fmt::Display for UpstreamPeer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.http.fmt(f)
    }
}

impl Peer for UpstreamPeer {
    fn address(&self) -> &SocketAddr {
        self.http.address()
    }
    fn tls(&self) -> bool {
        self.http.tls()
    }
    fn sni(&self) -> &str {
        self.http.sni()
    }
    fn reuse_hash(&self) -> u64 {
        self.reuse_hash
    }
    fn get_peer_options(&self) -> Option<&PeerOptions> {
        self.http.get_peer_options()
    }
    fn get_mut_peer_options(&mut self) -> Option<&mut PeerOptions> {
        self.http.get_mut_peer_options()
    }
    fn get_proxy(&self) -> Option<&Proxy> {
        self.http.get_proxy()
    }
    fn matches_fd<V: std::os::unix::io::AsRawFd>(&self, _fd: V) -> bool {
        true
    }
    fn get_client_cert_key(&self) -> Option<&Arc<CertKey>> {
        self.http.get_client_cert_key()
    }
    fn get_tracer(&self) -> Option<Tracer> {
        self.http.get_tracer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_pingoras_key_and_settings() {
        let mut http = HttpPeer::new("127.0.0.1:8443", true, "example.com".to_string());
        http.options.verify_cert = false;
        let peer = UpstreamPeer::new(http.clone());
        assert_eq!(peer.reuse_hash(), http.reuse_hash());
        assert_eq!(peer.sni(), "example.com");
        assert!(peer.tls());
        assert!(!peer.verify_cert());
        assert_eq!(peer.to_string(), http.to_string());
        assert_eq!(peer.addr_text, "127.0.0.1:8443");
        let other = UpstreamPeer::new(HttpPeer::new("127.0.0.1:8444", true, "example.com".into()));
        assert_ne!(peer.reuse_hash(), other.reuse_hash());
    }
}
