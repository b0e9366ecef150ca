//! An upstream group at run time: its peers, their shared live state, and
//! the per-request cursor that remembers which peers a request tried.
//!
//! nginx counterpart: `ngx_http_upstream_rr_peers_t` (primaries, with the
//! backups in `peers->next`), `ngx_http_upstream_get_round_robin_peer` and
//! `ngx_http_upstream_free_round_robin_peer`.

use crate::hash::{HashWalk, Ring};
use crate::passive_health::PeerState;
use crate::{ip_hash, least_conn, random, smooth_weighted};
use ferry_conf::{Balance, Upstream};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One server address of a group (a host name that resolves to several
/// addresses gives several peers, as in nginx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `addr` as written in the config.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub max_conns: u32,
    pub backup: bool,
    pub down: bool,
}

/// How a try on a peer ended, for passive health (nginx `NGX_PEER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Completed, or failed in a way that does not count.
    Ok,
    /// error / timeout / invalid_header, or an http_5xx/429 that led to a retry.
    Failed,
    /// http_403 / http_404 led to a retry: never counts (nginx `NGX_PEER_NEXT`).
    Next,
}

/// What a request brings to the balancer: the rendered `hash_key` and the
/// client's address (for `ip_hash`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Key<'a> {
    pub hash: &'a [u8],
    pub client_ip: Option<IpAddr>,
}

/// What a request knows while it walks the group (nginx `rrp` + `pc->tries`).
#[derive(Debug, Clone)]
pub struct Cursor {
    tried: Vec<bool>,
    on_backup: bool,
    /// Tries this request may still make (nginx `pc->tries`).
    pub tries_left: u32,
    /// The hash balancers' walk, continued on every try (nginx `hp`).
    walk: HashWalk,
}

struct Inner {
    name: String,
    balance: Balance,
    peers: Vec<Peer>,
    /// Peers `0..primaries` are primaries, the rest backups.
    primaries: usize,
    weights: Vec<u32>,
    state: Mutex<Vec<PeerState>>,
    /// One primary and no backup: no failure accounting, no retry (nginx `peers->single`).
    single: bool,
    /// `hash` with `consistent: true`: the ketama ring of the primaries.
    ring: Option<Ring>,
}

/// An upstream group; cheap to clone, shared by every thread of the process.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .field("peers", &self.inner.peers)
            .finish()
    }
}

impl Group {
    /// Build from a loaded config group (addresses already resolved).
    pub fn from_conf(name: &str, u: &Upstream) -> Group {
        let expand = |backup: bool| {
            u.servers
                .iter()
                .filter(move |s| s.backup == backup)
                .flat_map(|s| {
                    s.resolved.iter().map(move |a| Peer {
                        name: s.addr.clone(),
                        addr: *a,
                        weight: s.weight.max(1),
                        max_fails: s.max_fails,
                        fail_timeout: s.fail_timeout.get(),
                        max_conns: s.max_conns,
                        backup: s.backup,
                        down: s.down,
                    })
                })
        };
        let mut peers: Vec<Peer> = expand(false).collect();
        let primaries = peers.len();
        peers.extend(expand(true));
        let mut g = Group::new(name, u.balance, peers, primaries);
        if u.balance == Balance::Hash && u.consistent {
            if let Some(inner) = Arc::get_mut(&mut g.inner) {
                let ring = Ring::new(
                    inner.peers[..primaries]
                        .iter()
                        .map(|p| (p.name.as_str(), p.weight)),
                );
                inner.ring = Some(ring);
            }
        }
        g
    }

    /// Build from peers; `peers[..primaries]` are the primaries.
    pub fn new(name: &str, balance: Balance, peers: Vec<Peer>, primaries: usize) -> Group {
        let weights = peers.iter().map(|p| p.weight).collect();
        let state = peers.iter().map(|p| PeerState::new(p.weight)).collect();
        let single = primaries == 1 && peers.len() == 1;
        Group {
            inner: Arc::new(Inner {
                name: name.to_string(),
                balance,
                peers,
                primaries,
                weights,
                state: Mutex::new(state),
                single,
                ring: None,
            }),
        }
    }

    pub fn peers(&self) -> &[Peer] {
        &self.inner.peers
    }

    pub fn peer(&self, index: usize) -> &Peer {
        &self.inner.peers[index]
    }

    /// nginx `ngx_http_upstream_tries`: the peers not `down`, primaries and
    /// backups; 1 for a single server.
    pub fn max_tries(&self) -> u32 {
        if self.inner.single {
            return 1;
        }
        self.inner.peers.iter().filter(|p| !p.down).count() as u32
    }

    /// A cursor for one request; `tries_limit` is `next_upstream_tries` (0 = none).
    pub fn cursor(&self, tries_limit: u32) -> Cursor {
        let max = self.max_tries();
        Cursor {
            tried: vec![false; self.inner.peers.len()],
            on_backup: false,
            tries_left: if tries_limit == 0 {
                max
            } else {
                max.min(tries_limit)
            },
            walk: HashWalk::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PeerState>> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pick a peer for the next try, or `None` when no peer is live ("no
    /// live upstreams": every one tried, down, failed or full).
    pub fn select(&self, cursor: &mut Cursor, key: &Key) -> Option<Lease> {
        let now = Instant::now();
        let inner = &self.inner;
        let mut st = self.lock();
        let chosen = if inner.single {
            let p = &inner.peers[0];
            (!p.down && !st[0].is_full(p.max_conns) && !st[0].unhealthy).then_some(0)
        } else {
            let mut pick = None;
            if !cursor.on_backup {
                pick = self.pick_in(&mut st, cursor, 0..inner.primaries, now, key);
                if pick.is_none() && inner.peers.len() > inner.primaries {
                    // nginx switches this request to the backup list for good.
                    cursor.on_backup = true;
                    cursor.tried.iter_mut().for_each(|t| *t = false);
                }
            }
            if cursor.on_backup {
                pick = self.pick_in(
                    &mut st,
                    cursor,
                    inner.primaries..inner.peers.len(),
                    now,
                    key,
                );
            }
            pick
        }?;
        let peer = &inner.peers[chosen];
        st[chosen].on_selected(peer.fail_timeout, now);
        st[chosen].conns += 1;
        cursor.tried[chosen] = true;
        Some(Lease {
            group: self.clone(),
            index: chosen,
            freed: false,
        })
    }

    fn pick_in(
        &self,
        st: &mut [PeerState],
        cursor: &mut Cursor,
        range: std::ops::Range<usize>,
        now: Instant,
        key: &Key,
    ) -> Option<usize> {
        let inner = &self.inner;
        let usable = |st: &[PeerState], tried: &[bool], i: usize| {
            let p = &inner.peers[i];
            !tried[i]
                && !p.down
                && !st[i].unhealthy
                && !st[i].is_failed(p.max_fails, p.fail_timeout, now)
                && !st[i].is_full(p.max_conns)
        };
        let eligible: Vec<usize> = range
            .clone()
            .filter(|&i| usable(st, &cursor.tried, i))
            .collect();
        let primaries = &inner.weights[..inner.primaries];
        // The key-based balancers work on the primaries only (no backup is
        // allowed with them) and fall back to round robin as nginx does.
        let many = inner.primaries >= 2 && range.start == 0;
        let picked = match inner.balance {
            Balance::RoundRobin => None,
            Balance::LeastConn => return least_conn::pick(st, &inner.weights, &eligible),
            Balance::Hash if many && !key.hash.is_empty() => match &inner.ring {
                Some(ring) => {
                    let tried = cursor.tried.clone();
                    ring.pick(key.hash, &mut cursor.walk, |name| {
                        let same: Vec<usize> = (0..inner.primaries)
                            .filter(|&i| inner.peers[i].name == name && usable(st, &tried, i))
                            .collect();
                        smooth_weighted::pick(st, &inner.weights, &same)
                    })
                }
                None => crate::hash::pick(key.hash, primaries, &mut cursor.walk, |i| {
                    usable(st, &cursor.tried, i)
                }),
            },
            Balance::IpHash if many => {
                let addr = ip_hash::key(key.client_ip);
                ip_hash::pick(&addr, primaries, &mut cursor.walk, |i| {
                    usable(st, &cursor.tried, i)
                })
            }
            Balance::Random if many => random_two(st, primaries, &mut cursor.walk, |st, i| {
                usable(st, &cursor.tried, i)
            }),
            _ => None,
        };
        picked.or_else(|| smooth_weighted::pick(st, &inner.weights, &eligible))
    }

    /// An active health check's verdict on a peer; returns whether it changed.
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let mut st = self.lock();
        let Some(s) = st.get_mut(index) else {
            return false;
        };
        let changed = s.unhealthy == healthy;
        s.unhealthy = !healthy;
        changed
    }

    /// Per-peer `(fails, conns)`, for tests.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(u32, u32)> {
        self.lock().iter().map(|s| (s.fails, s.conns)).collect()
    }

    /// Whether passive health currently skips this peer.
    pub fn is_failed(&self, index: usize) -> bool {
        let p = &self.inner.peers[index];
        self.lock()[index].is_failed(p.max_fails, p.fail_timeout, Instant::now())
    }

    /// Returns whether this failure took the peer out (`max_fails` reached).
    fn release(
        &self,
        index: usize,
        feedback: Option<Feedback>,
        cursor: Option<&mut Cursor>,
    ) -> bool {
        let inner = &self.inner;
        let mut st = self.lock();
        let s = &mut st[index];
        s.conns = s.conns.saturating_sub(1);
        if inner.single {
            s.fails = 0;
            if let Some(c) = cursor {
                c.tries_left = 0;
            }
            return false;
        }
        let p = &inner.peers[index];
        let mut marked = false;
        match feedback {
            Some(Feedback::Failed) => {
                marked = s.on_failure(p.weight, p.max_fails, Instant::now());
                if marked {
                    log::warn!(
                        "upstream server temporarily disabled: {} in group {}",
                        p.name,
                        inner.name
                    );
                }
            }
            Some(Feedback::Ok) | Some(Feedback::Next) => s.on_success(),
            None => {}
        }
        if let Some(c) = cursor {
            c.tries_left = c.tries_left.saturating_sub(1);
        }
        marked
    }
}

/// nginx `random two`: two distinct weighted draws, the one with fewer
/// requests per weight (the second on a tie); `None` after 20 unusable draws.
fn random_two(
    st: &[PeerState],
    weights: &[u32],
    walk: &mut HashWalk,
    usable: impl Fn(&[PeerState], usize) -> bool,
) -> Option<usize> {
    let mut prev: Option<usize> = None;
    while !walk.exhausted() {
        let i = random::draw(weights);
        if prev != Some(i) && usable(st, i) {
            match prev {
                None => prev = Some(i),
                Some(p) => {
                    let (ci, cp) = (u64::from(st[i].conns), u64::from(st[p].conns));
                    let (wi, wp) = (u64::from(weights[i]), u64::from(weights[p]));
                    return Some(if ci * wp > cp * wi { p } else { i });
                }
            }
        }
        walk.tries += 1;
    }
    None
}

/// A peer taken for one try; give it back with [`Lease::free`]. Dropped
/// without that (a request that went away), it only releases its `conns`.
pub struct Lease {
    group: Group,
    index: usize,
    freed: bool,
}

impl Lease {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn peer(&self) -> &Peer {
        self.group.peer(self.index)
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// nginx `peer.free`: account the try and use up one of the request's
    /// tries. Returns whether this took the peer out (`max_fails` reached).
    pub fn free(mut self, feedback: Feedback, cursor: &mut Cursor) -> bool {
        self.freed = true;
        self.group.release(self.index, Some(feedback), Some(cursor))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.freed {
            self.group.release(self.index, None, None);
        }
    }
}
