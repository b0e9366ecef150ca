//! PROXY protocol v1 and v2 on listeners with `proxy_protocol: true`: the
//! balancer in front (HAProxy, a cloud L4 balancer) opens every connection
//! with a header naming the real client. Ferry reads exactly that header
//! (parsed by the `ppp` crate) before Pingora reads HTTP, and uses the
//! address when the connection comes from a `real_ip.trusted` address; an
//! untrusted sender's header is read and ignored. A connection without a
//! valid header is closed.
//!
//! nginx counterpart: `listen ... proxy_protocol` with `set_real_ip_from`
//! and `real_ip_header proxy_protocol`.

use ppp::HeaderResult;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// v2's 12-byte signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How long a sender may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Read exactly one PROXY header (v1 or v2) off the stream.
async fn read_proxy_header(s: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 16];
    s.read_exact(&mut buf[..5]).await.ok()?;
    if buf[..5] == V2_SIGNATURE[..5] {
        s.read_exact(&mut buf[5..16]).await.ok()?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        buf.resize(16 + len, 0);
        s.read_exact(&mut buf[16..]).await.ok()?;
        return Some(buf);
    }
    buf.truncate(5);
    // v1: a text line of at most 107 bytes ending in CRLF.
    while buf.len() < 107 && buf.last() != Some(&b'\n') {
        buf.push(s.read_u8().await.ok()?);
    }
    Some(buf)
}

/// The source address of a parsed header, if it names one.
fn source(bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            ppp::v2::Addresses::IPv6(a) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            _ => None,
        }),
        HeaderResult::V1(Err(e)) => Err(format!("bad PROXY v1 header: {e:?}")),
        HeaderResult::V2(Err(e)) => Err(format!("bad PROXY v2 header: {e:?}")),
    }
}

/// The PROXY protocol reader of a listener with `proxy_protocol: true`.
pub(crate) struct ProxyProtocol {
    /// Senders whose announced address is believed (`real_ip.trusted`).
    pub trusted: Option<Arc<crate::client::real_ip::RealIpRule>>,
}

impl ProxyProtocol {
    /// Read the header off a new connection from `peer`: the client it
    /// announces when the sender is trusted (`Ok(None)` otherwise), or
    /// `Err` when there is no valid header in time and the connection must
    /// close.
    pub(crate) async fn read(
        &self,
        stream: &mut (impl AsyncRead + Unpin),
        peer: SocketAddr,
    ) -> Result<Option<SocketAddr>, ()> {
        let header = tokio::time::timeout(HEADER_TIMEOUT, read_proxy_header(stream))
            .await
            .ok()
            .flatten()
            .ok_or(())?;
        let announced = source(&header).map_err(|e| log::warn!("closing a connection: {e}"))?;
        let trusted = matches!(&self.trusted, Some(rule) if rule.trusts(peer.ip()));
        Ok(announced.filter(|_| trusted))
    }
}

#[cfg(test)]
mod tests {
    use super::source;

    #[test]
    fn parses_both_versions() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n";
        assert_eq!(
            source(v1).unwrap().unwrap().to_string(),
            "203.0.113.7:51000"
        );
        assert_eq!(source(b"PROXY UNKNOWN\r\n").unwrap(), None);
        let mut v2 = super::V2_SIGNATURE.to_vec();
        v2.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0xC3, 0x50, 0, 80,
        ]);
        assert_eq!(
            source(&v2).unwrap().unwrap().to_string(),
            "198.51.100.9:50000"
        );
        assert!(source(b"PROXY NOPE\r\n").is_err());
    }
}
