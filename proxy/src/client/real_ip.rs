//! The real client address behind trusted proxies.
//!
//! nginx counterpart: `ngx_http_realip_module` with `set_real_ip_from`,
//! `real_ip_header X-Forwarded-For` and `real_ip_recursive on`: only when the
//! connection comes from a trusted address, the header is walked from the
//! right, past trusted addresses; the first untrusted one is the client (the
//! leftmost when all are trusted). Headers from untrusted peers are ignored.
//! `$remote_addr`, `ip_hash` and the access log then use it.

use ferry_conf::{Cidr, RealIp};
use ferry_filters::fields::Fields;
use std::net::{IpAddr, SocketAddr};

pub struct RealIpRule {
    trusted: Vec<Cidr>,
    header: http::HeaderName,
}

impl RealIpRule {
    pub fn new(conf: &RealIp) -> Option<RealIpRule> {
        Some(RealIpRule {
            trusted: conf
                .trusted
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .collect(),
            header: http::HeaderName::from_bytes(conf.header.as_bytes()).ok()?,
        })
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address for a connection from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: Fields<'_>) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let listed: Vec<IpAddr> = headers
            .get_all(self.header.as_str())
            .into_iter()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let mut chosen = None;
        for ip in listed.iter().rev() {
            chosen = Some(*ip);
            if !self.trusts(*ip) {
                break;
            }
        }
        chosen.map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RealIpRule {
        RealIpRule::new(&RealIp {
            trusted: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            header: "X-Forwarded-For".into(),
        })
        .unwrap()
    }

    fn xff(v: &str) -> pingora_http::RequestHeader {
        let mut h = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
        h.insert_header("x-forwarded-for", v).unwrap();
        h
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let got = rule().client(peer, Fields::Header(&xff("6.6.6.6, 1.2.3.4, 10.0.0.7")));
        assert_eq!(
            got.ip().to_string(),
            "1.2.3.4",
            "a spoofed left part is ignored"
        );
        let got = rule().client(peer, Fields::Header(&xff("10.1.1.1, 10.0.0.7")));
        assert_eq!(
            got.ip().to_string(),
            "10.1.1.1",
            "all trusted: the leftmost"
        );
        let untrusted: SocketAddr = "8.8.8.8:1".parse().unwrap();
        assert_eq!(
            rule().client(untrusted, Fields::Header(&xff("1.2.3.4"))),
            untrusted
        );
    }
}
