//! `balance: hash` with `hash_key`: the same key goes to the same server,
//! mapped exactly as nginx maps it, so Ferry can replace nginx in a fleet
//! without moving keys.
//!
//! nginx counterpart: `ngx_http_upstream_hash_module.c`.
//! - Plain (`consistent: false`), Cache::Memcached compatible: the hash is
//!   `((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH`, taken modulo the
//!   total weight and walked over the servers' weights; an unusable server
//!   rehashes with the next counter.
//! - Consistent (ketama), Cache::Memcached::Fast compatible: every server
//!   puts `160 x weight` points on a ring, `crc32(HOST \0 PORT PREV_HASH)`
//!   chained from 0; a key goes to the first point at or after
//!   `crc32(KEY)`, and on to the next point when that server is unusable.
//!   Removing a server moves only its keys.
//!
//! After 20 unusable picks, or with an empty key or fewer than two servers,
//! nginx falls back to round robin; so does Ferry (the caller).

/// One request's walk (nginx `hp->hash`, `hp->rehash`, `hp->tries`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HashWalk {
    pub hash: u64,
    pub rehash: u32,
    pub tries: u32,
    started: bool,
}

impl HashWalk {
    /// Past nginx's limit of 20 unusable picks: fall back to round robin.
    pub fn exhausted(&self) -> bool {
        self.tries > 20
    }
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// The peer whose weight range holds `w` (weights walked in order).
pub fn walk(weights: &[u32], mut w: u64) -> usize {
    for (i, &wt) in weights.iter().enumerate() {
        if w < u64::from(wt) {
            return i;
        }
        w -= u64::from(wt);
    }
    weights.len().saturating_sub(1)
}

/// Plain hash: the next candidate for `key`, or `None` to fall back.
/// `usable(i)` says whether peer `i` may take the request.
pub fn pick(
    key: &[u8],
    weights: &[u32],
    walk_state: &mut HashWalk,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 || walk_state.exhausted() {
        return None;
    }
    loop {
        let counter = walk_state.rehash.to_string();
        let prefix: &[u8] = if walk_state.rehash > 0 {
            counter.as_bytes()
        } else {
            b""
        };
        let h = u64::from((crc32(&[prefix, key]) >> 16) & 0x7fff);
        walk_state.hash += h;
        walk_state.rehash += 1;
        let p = walk(weights, walk_state.hash % total);
        if usable(p) {
            return Some(p);
        }
        walk_state.tries += 1;
        if walk_state.exhausted() {
            return None;
        }
    }
}

/// The ketama ring of a group's primary servers.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// (point, index into `names`), sorted by point, duplicates removed.
    points: Vec<(u32, usize)>,
    /// Distinct server names (`addr` as written).
    pub names: Vec<String>,
}

impl Ring {
    /// `servers`: each peer's server name (as written in the config) and weight.
    pub fn new<'a>(servers: impl Iterator<Item = (&'a str, u32)>) -> Ring {
        let mut ring = Ring::default();
        for (name, weight) in servers {
            let idx = match ring.names.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    ring.names.push(name.to_string());
                    ring.names.len() - 1
                }
            };
            let (host, port) = split_server(name);
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..(160 * weight) {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                ring.points.push((prev, idx));
            }
        }
        ring.points.sort_by_key(|p| p.0);
        ring.points.dedup_by_key(|p| p.0);
        ring
    }

    /// nginx `ngx_http_upstream_find_chash_point`: the first point at or
    /// after `hash` (may be one past the end; lookups wrap).
    fn find(&self, hash: u32) -> usize {
        self.points.partition_point(|p| p.0 < hash)
    }

    /// Consistent hash: the next server name for `key` and the walk, or
    /// `None` to fall back. `choose(name)` picks a usable peer of that server
    /// (nginx: smooth round robin among its addresses), if any.
    pub fn pick(
        &self,
        key: &[u8],
        walk_state: &mut HashWalk,
        mut choose: impl FnMut(&str) -> Option<usize>,
    ) -> Option<usize> {
        if self.points.is_empty() || walk_state.exhausted() {
            return None;
        }
        if !walk_state.started {
            walk_state.hash = self.find(crc32(&[key])) as u64;
            walk_state.started = true;
        }
        loop {
            let (_, idx) = self.points[(walk_state.hash % self.points.len() as u64) as usize];
            if let Some(p) = choose(&self.names[idx]) {
                return Some(p);
            }
            walk_state.hash += 1;
            walk_state.tries += 1;
            if walk_state.exhausted() {
                return None;
            }
        }
    }
}

/// nginx splits a server name at its last `:` when digits follow.
fn split_server(name: &str) -> (&str, &str) {
    if let Some(rest) = name.strip_prefix("unix:") {
        return (rest, "");
    }
    match name.rfind(':') {
        Some(i) if name[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&name[..i], &name[i + 1..])
        }
        _ => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hash_is_cache_memcached_arithmetic() {
        // crc32("a") = 0xe8b7be43 -> (>> 16) & 0x7fff = 0x68b7 = 26807
        let mut w = HashWalk::default();
        let p = pick(b"a", &[1, 1, 1], &mut w, |_| true).unwrap();
        assert_eq!(w.hash, 26807);
        assert_eq!(p, (26807 % 3) as usize);
        // unusable: rehash with "1a"
        let mut w2 = HashWalk::default();
        let first = p;
        let second = pick(b"a", &[1, 1, 1], &mut w2, |i| i != first).unwrap();
        let h1 = u64::from((crc32(&[b"1", b"a"]) >> 16) & 0x7fff);
        assert_eq!(w2.hash, 26807 + h1);
        assert_ne!(second, first);
    }

    #[test]
    fn ring_moves_only_the_removed_servers_keys() {
        let three =
            Ring::new([("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.3:80", 1)].into_iter());
        let two = Ring::new([("10.0.0.1:80", 1), ("10.0.0.2:80", 1)].into_iter());
        assert_eq!(three.points.len(), 480);
        let name = |r: &Ring, k: &str| {
            let mut w = HashWalk::default();
            let mut got = String::new();
            r.pick(k.as_bytes(), &mut w, |n| {
                got = n.to_string();
                Some(0)
            });
            got
        };
        let mut moved = 0;
        for i in 0..2000 {
            let k = format!("/key/{i}");
            let (a, b) = (name(&three, &k), name(&two, &k));
            if a != "10.0.0.3:80" {
                assert_eq!(a, b, "{k} moved though its server stayed");
            } else {
                moved += 1;
            }
        }
        assert!(
            (500..830).contains(&moved),
            "about a third of keys were on the removed server: {moved}"
        );
    }

    #[test]
    fn splits_host_and_port_as_nginx() {
        assert_eq!(split_server("10.0.0.1:8080"), ("10.0.0.1", "8080"));
        assert_eq!(split_server("backend"), ("backend", ""));
        assert_eq!(split_server("unix:/tmp/s"), ("/tmp/s", ""));
    }
}
