//! `balance: ip_hash`: a client address always goes to the same server;
//! IPv4 by its first three octets (a whole /24 together), IPv6 whole.
//!
//! nginx counterpart: `ngx_http_upstream_get_ip_hash_peer`:
//! `hash = 89; for each byte: hash = (hash * 113 + byte) % 6271`, then
//! `hash % total_weight` walked over the weights; an unusable server
//! iterates the hash again. After 20 unusable picks, or with fewer than two
//! servers, round robin (the caller).

use crate::hash::{walk, HashWalk};
use std::net::IpAddr;

/// The bytes nginx hashes for a client address.
pub fn key(ip: Option<IpAddr>) -> Vec<u8> {
    match ip {
        Some(IpAddr::V4(v4)) => v4.octets()[..3].to_vec(),
        Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
        // nginx's pseudo address for non-IP clients (unix sockets).
        None => vec![0, 0, 0],
    }
}

pub fn pick(
    addr: &[u8],
    weights: &[u32],
    state: &mut HashWalk,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 || state.exhausted() {
        return None;
    }
    if state.rehash == 0 {
        state.hash = 89;
        state.rehash = 1;
    }
    loop {
        for &b in addr {
            state.hash = (state.hash * 113 + u64::from(b)) % 6271;
        }
        let p = walk(weights, state.hash % total);
        if usable(p) {
            return Some(p);
        }
        state.tries += 1;
        if state.exhausted() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_24_maps_together() {
        let w = [1, 1, 1];
        let pick_for = |ip: &str| {
            let mut s = HashWalk::default();
            pick(&key(Some(ip.parse().unwrap())), &w, &mut s, |_| true).unwrap()
        };
        assert_eq!(pick_for("192.168.1.10"), pick_for("192.168.1.200"));
        // nginx arithmetic for 10.0.0.x: 89 -> (89*113+10)%6271 ... by hand:
        let mut h: u64 = 89;
        for b in [10u64, 0, 0] {
            h = (h * 113 + b) % 6271;
        }
        assert_eq!(pick_for("10.0.0.1"), (h % 3) as usize);
    }
}
