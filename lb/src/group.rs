//! An upstream group at run time: its peers, their shared live state, and
//! the per-request cursor that remembers which peers a request tried.
//!
//! nginx counterpart: `ngx_http_upstream_rr_peers_t` (primaries, with the
//! backups in `peers->next`), `ngx_http_upstream_get_round_robin_peer` and
//! `ngx_http_upstream_free_round_robin_peer`.

use crate::hash::{HashWalk, Ring};
use crate::passive_health::PeerState;
use crate::tried::Tried;
use crate::{ip_hash, least_conn, least_time, random, smooth_weighted};
use ferry_conf::{Balance, Server, Upstream};
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
    /// Its name for `sticky`: `route:`, or derived from `addr` ([`crate::sticky`]).
    pub route: String,
    /// `drain: true` in the YAML: only requests bound by `sticky` reach it.
    pub drain: bool,
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

/// What a request brings to the balancer: the rendered `hash_key`, the
/// client's address (for `ip_hash`) and the route `sticky` binds it to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Key<'a> {
    pub hash: &'a [u8],
    pub client_ip: Option<IpAddr>,
    pub sticky: Option<&'a str>,
}

/// What a request knows while it walks the group (nginx `rrp` + `pc->tries`).
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The members' generation `tried` refers to.
    generation: u64,
    tried: Tried,
    /// The members `tried` indexes, to find its peers again by address
    /// when the members change.
    peers: Arc<[Peer]>,
    on_backup: bool,
    /// Tries this request may still make (nginx `pc->tries`).
    pub tries_left: u32,
    /// The hash balancers' walk, continued on every try (nginx `hp`).
    walk: HashWalk,
}

/// The members of a group at one moment: replaced whole when a reload or a
/// DNS answer changes them (a new `generation`), with each surviving
/// server's live state carried over by address.
struct Members {
    generation: u64,
    balance: Balance,
    peers: Arc<[Peer]>,
    /// Peers `0..primaries` are primaries, the rest backups.
    primaries: usize,
    weights: Vec<u32>,
    state: Vec<PeerState>,
    /// One primary and no backup: no failure accounting, no retry (nginx `peers->single`).
    single: bool,
    /// `hash` with `consistent: true`: the ketama ring of the primaries.
    ring: Option<Ring>,
}

struct Inner {
    name: String,
    members: Mutex<Members>,
    /// `members.generation`, readable without the lock.
    generation: std::sync::atomic::AtomicU64,
}

/// An upstream group; cheap to clone, shared by every thread of the process.
/// Its members may change while it serves ([`Group::update`]): a request
/// that started before keeps its tries and its lease.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .field("peers", &self.peers())
            .finish()
    }
}

/// An address a lookup gave for a server entry: with SRV, its own target
/// name and weight, and whether its priority makes it a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The entry (or SRV target) it came from, as `GET /upstreams` shows.
    pub name: String,
    pub addr: SocketAddr,
    /// SRV's weight; `None`: the entry's.
    pub weight: Option<u32>,
    /// A backup server (the entry's `backup`, or a lower SRV priority).
    pub backup: bool,
}

/// The peers of a config group, primaries first; `answers` gives the
/// addresses of an entry looked up while running (`None`: the loader's
/// `resolved`). Returns the peers and how many are primaries.
pub fn expand(
    u: &Upstream,
    answers: &dyn Fn(&Server) -> Option<Vec<Answer>>,
) -> (Vec<Peer>, usize) {
    let mut all = Vec::new();
    for s in &u.servers {
        let found = answers(s).unwrap_or_else(|| {
            s.resolved
                .iter()
                .map(|a| Answer {
                    name: s.addr.clone(),
                    addr: *a,
                    weight: None,
                    backup: s.backup,
                })
                .collect()
        });
        all.extend(found.into_iter().map(|a| Peer {
            name: a.name,
            addr: a.addr,
            weight: a.weight.unwrap_or(s.weight).max(1),
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout.get(),
            max_conns: s.max_conns,
            backup: a.backup,
            down: s.down,
            route: match s.route.as_str() {
                "" => crate::sticky::derived_route(a.addr),
                r => r.to_string(),
            },
            drain: s.drain,
        }));
    }
    let (mut peers, backups): (Vec<Peer>, Vec<Peer>) = all.into_iter().partition(|p| !p.backup);
    let primaries = peers.len();
    peers.extend(backups);
    (peers, primaries)
}

/// How a server stands, as the upstream API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Up,
    /// Passive health took it out (`max_fails` within `fail_timeout`).
    Failed,
    /// `down: true` in the YAML or through the API.
    Down,
    Draining,
    /// An active health check took it out.
    Unhealthy,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Failed => "failed",
            ServerState::Down => "down",
            ServerState::Draining => "draining",
            ServerState::Unhealthy => "unhealthy",
        }
    }
}

/// One server of a group and its live numbers.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub peer: Peer,
    pub state: ServerState,
    /// Requests in flight (nginx `conns`).
    pub active: u32,
    pub requests: u64,
    pub fails: u32,
    /// least_time's averages (ms): time to the header, to the last byte.
    pub header_time: u64,
    pub response_time: u64,
}

fn members(
    generation: u64,
    balance: Balance,
    consistent: bool,
    peers: Vec<Peer>,
    primaries: usize,
) -> Members {
    let weights = peers.iter().map(|p| p.weight).collect();
    let state = peers
        .iter()
        .map(|p| PeerState {
            draining: p.drain,
            ..PeerState::new(p.weight)
        })
        .collect();
    let single = primaries == 1 && peers.len() == 1;
    let ring = (balance == Balance::Hash && consistent).then(|| {
        Ring::new(
            peers[..primaries]
                .iter()
                .map(|p| (p.name.as_str(), p.weight)),
        )
    });
    Members {
        generation,
        balance,
        peers: peers.into(),
        primaries,
        weights,
        state,
        single,
        ring,
    }
}

impl Group {
    /// Build from a loaded config group (addresses already resolved).
    pub fn from_conf(name: &str, u: &Upstream) -> Group {
        let (peers, primaries) = expand(u, &|_| None);
        Group::with(name, members(0, u.balance, u.consistent, peers, primaries))
    }

    /// Build from peers ([`expand`]); `peers[..primaries]` are the primaries.
    pub fn from_members(
        name: &str,
        balance: Balance,
        consistent: bool,
        peers: Vec<Peer>,
        primaries: usize,
    ) -> Group {
        Group::with(name, members(0, balance, consistent, peers, primaries))
    }

    /// Build from peers; `peers[..primaries]` are the primaries.
    pub fn new(name: &str, balance: Balance, peers: Vec<Peer>, primaries: usize) -> Group {
        Group::with(name, members(0, balance, false, peers, primaries))
    }

    fn with(name: &str, m: Members) -> Group {
        Group {
            inner: Arc::new(Inner {
                name: name.to_string(),
                generation: std::sync::atomic::AtomicU64::new(m.generation),
                members: Mutex::new(m),
            }),
        }
    }

    /// Replace the members (a reload, a new DNS answer). A server whose
    /// address was a member before keeps its live state: failures,
    /// requests in flight, health verdict; with `reload`, what the admin
    /// API set on it (down, draining) is cleared (draining is the YAML's
    /// `drain` again). Requests in flight on a
    /// server that left finish there, and are not counted any more.
    pub fn update(
        &self,
        balance: Balance,
        consistent: bool,
        peers: Vec<Peer>,
        primaries: usize,
        reload: bool,
    ) {
        let mut m = self.lock();
        let mut next = members(m.generation + 1, balance, consistent, peers, primaries);
        for (i, p) in next.peers.iter().enumerate() {
            if let Some(j) = m.peers.iter().position(|o| o.addr == p.addr) {
                let mut st = m.state[j].clone();
                st.effective_weight = st.effective_weight.min(i64::from(p.weight));
                if reload {
                    st.held_down = false;
                    st.draining = p.drain;
                }
                next.state[i] = st;
            }
        }
        self.inner
            .generation
            .store(next.generation, std::sync::atomic::Ordering::Release);
        *m = next;
    }

    /// Whether `addr`, a member at `generation`, is one still: without the
    /// lock while the members have not changed since.
    pub fn serves(&self, addr: SocketAddr, generation: u64) -> bool {
        let now = self
            .inner
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        now == generation || self.lock().peers.iter().any(|p| p.addr == addr)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The members now.
    pub fn peers(&self) -> Arc<[Peer]> {
        self.lock().peers.clone()
    }

    /// nginx `ngx_http_upstream_tries`: the peers not `down`, primaries and
    /// backups; 1 for a single server.
    pub fn max_tries(&self) -> u32 {
        max_tries(&self.lock())
    }

    /// A cursor for one request; `tries_limit` is `next_upstream_tries` (0 = none).
    pub fn cursor(&self, tries_limit: u32) -> Cursor {
        let m = self.lock();
        let max = max_tries(&m);
        Cursor {
            generation: m.generation,
            tried: Tried::default(),
            peers: m.peers.clone(),
            on_backup: false,
            tries_left: if tries_limit == 0 {
                max
            } else {
                max.min(tries_limit)
            },
            walk: HashWalk::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        self.inner.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pick a peer for the next try, or `None` when no peer is live ("no
    /// live upstreams": every one tried, down, failed or full).
    pub fn select(&self, cursor: &mut Cursor, key: &Key) -> Option<Lease> {
        self.select_at(cursor, key, Instant::now())
    }

    /// [`Group::select`] at `now`, a time the caller read just before (a
    /// try's pick and its start are one reading of the clock).
    pub fn select_at(&self, cursor: &mut Cursor, key: &Key, now: Instant) -> Option<Lease> {
        let mut guard = self.lock();
        let m = &mut *guard;
        if cursor.generation != m.generation {
            // The members changed since this request began: what it tried
            // is found again by address.
            let was: Vec<SocketAddr> = cursor.tried.iter().map(|i| cursor.peers[i].addr).collect();
            cursor.tried = Tried::default();
            for (i, p) in m.peers.iter().enumerate() {
                if was.contains(&p.addr) {
                    cursor.tried.set(i);
                }
            }
            cursor.peers = m.peers.clone();
            cursor.generation = m.generation;
        }
        let (primaries, all) = (m.primaries, m.peers.len());
        let list = crate::sticky::List {
            peers: &m.peers,
            weights: &m.weights,
            tried: &cursor.tried,
            range: if cursor.on_backup {
                primaries..all
            } else {
                0..primaries
            },
            round_robin: m.balance == Balance::RoundRobin && !m.single,
        };
        let bound = crate::sticky::pick(list, &mut m.state, key.sticky, now);
        let chosen = if bound.is_some() {
            bound
        } else if m.single {
            let p = &m.peers[0];
            (!p.down
                && !m.state[0].is_full(p.max_conns)
                && !m.state[0].unhealthy
                && !m.state[0].held())
            .then_some(0)
        } else {
            let mut pick = None;
            let (primaries, all) = (m.primaries, m.peers.len());
            if !cursor.on_backup {
                pick = pick_in(m, cursor, 0..primaries, now, key);
                if pick.is_none() && all > primaries {
                    // nginx switches this request to the backup list for good.
                    cursor.on_backup = true;
                    cursor.tried.clear();
                }
            }
            if cursor.on_backup {
                pick = pick_in(m, cursor, primaries..all, now, key);
            }
            pick
        }?;
        let peer = &m.peers[chosen];
        let st = &mut m.state[chosen];
        st.on_selected(peer.fail_timeout, now);
        let timing = least_time::on_selected(m.balance, m.single, st, now);
        st.conns += 1;
        st.requests += 1;
        cursor.tried.set(chosen);
        Some(Lease {
            group: self.clone(),
            peers: m.peers.clone(),
            generation: m.generation,
            index: chosen,
            freed: false,
            timing,
        })
    }

    /// An active health check's verdict on a server; returns whether it changed.
    pub fn set_healthy(&self, addr: SocketAddr, healthy: bool) -> bool {
        let mut m = self.lock();
        let Some(i) = m.peers.iter().position(|p| p.addr == addr) else {
            return false;
        };
        let s = &mut m.state[i];
        let changed = s.unhealthy == healthy;
        s.unhealthy = !healthy;
        changed
    }

    /// The admin API's `down` / `drain` on a server, until the next reload;
    /// `false` when the group has no server at `addr`.
    pub fn hold(&self, addr: SocketAddr, down: Option<bool>, drain: Option<bool>) -> bool {
        let mut m = self.lock();
        let Some(i) = m.peers.iter().position(|p| p.addr == addr) else {
            return false;
        };
        let s = &mut m.state[i];
        if let Some(d) = down {
            s.held_down = d;
        }
        if let Some(d) = drain {
            s.draining = d;
        }
        true
    }

    /// Every server with its state and numbers, in the group's order.
    pub fn report(&self) -> Vec<ServerReport> {
        let now = Instant::now();
        let m = self.lock();
        m.peers
            .iter()
            .zip(&m.state)
            .map(|(p, s)| ServerReport {
                peer: p.clone(),
                state: if p.down || s.held_down {
                    ServerState::Down
                } else if s.draining {
                    ServerState::Draining
                } else if s.unhealthy {
                    ServerState::Unhealthy
                } else if s.is_failed(p.max_fails, p.fail_timeout, now) {
                    ServerState::Failed
                } else {
                    ServerState::Up
                },
                active: s.conns,
                requests: s.requests,
                fails: s.fails,
                header_time: s.times.header_time,
                response_time: s.times.response_time,
            })
            .collect()
    }

    /// Per-peer `(fails, conns)`, for tests.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(u32, u32)> {
        self.lock()
            .state
            .iter()
            .map(|s| (s.fails, s.conns))
            .collect()
    }

    /// Every peer's live state, for tests.
    #[cfg(test)]
    pub(crate) fn states(&self) -> Vec<PeerState> {
        self.lock().state.clone()
    }

    /// Whether passive health currently skips the server at `addr`.
    pub fn is_failed(&self, addr: SocketAddr) -> bool {
        let m = self.lock();
        m.peers.iter().zip(&m.state).any(|(p, s)| {
            p.addr == addr && s.is_failed(p.max_fails, p.fail_timeout, Instant::now())
        })
    }

    /// Returns whether this failure took the peer out (`max_fails` reached).
    fn release(
        &self,
        lease: &Lease,
        feedback: Option<Feedback>,
        cursor: Option<&mut Cursor>,
    ) -> bool {
        let mut guard = self.lock();
        let m = &mut *guard;
        let Some(index) = index_of(m, lease) else {
            // A server that left the group mid-try still used up the try.
            if let Some(c) = cursor {
                c.tries_left = c.tries_left.saturating_sub(1);
            }
            return false;
        };
        let s = &mut m.state[index];
        s.conns = s.conns.saturating_sub(1);
        least_time::on_free(m.balance, s, &lease.timing, feedback);
        if m.single {
            s.fails = 0;
            if let Some(c) = cursor {
                c.tries_left = 0;
            }
            return false;
        }
        let p = &m.peers[index];
        let mut marked = false;
        match feedback {
            Some(Feedback::Failed) => {
                marked = s.on_failure(p.weight, p.max_fails, Instant::now());
                if marked {
                    log::warn!(
                        "upstream server temporarily disabled: {} in group {}",
                        p.name,
                        self.inner.name
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

/// Where a lease's peer is among the members now (`None`: it left).
fn index_of(m: &Members, lease: &Lease) -> Option<usize> {
    if m.generation == lease.generation {
        return Some(lease.index);
    }
    let addr = lease.peer().addr;
    m.peers.iter().position(|p| p.addr == addr)
}

fn max_tries(m: &Members) -> u32 {
    if m.single {
        return 1;
    }
    m.peers.iter().filter(|p| !p.down).count() as u32
}

pub(crate) fn usable(
    peers: &[Peer],
    state: &[PeerState],
    tried: &Tried,
    i: usize,
    now: Instant,
) -> bool {
    let (p, st) = (&peers[i], &state[i]);
    !tried.has(i)
        && !p.down
        && !st.held()
        && !st.unhealthy
        && !st.is_failed(p.max_fails, p.fail_timeout, now)
        && !st.is_full(p.max_conns)
}

fn pick_in(
    m: &mut Members,
    cursor: &mut Cursor,
    range: std::ops::Range<usize>,
    now: Instant,
    key: &Key,
) -> Option<usize> {
    let (peers, state, weights, primaries) = (&m.peers, &mut m.state, &m.weights, m.primaries);
    let tried = &cursor.tried;
    let eligible: Vec<usize> = range
        .clone()
        .filter(|&i| usable(peers, state, tried, i, now))
        .collect();
    // The key-based balancers work on the primaries only (no backup is
    // allowed with them) and fall back to round robin as nginx does.
    let many = primaries >= 2 && range.start == 0;
    let picked = match m.balance {
        Balance::RoundRobin => None,
        Balance::LeastConn => return least_conn::pick(state, weights, &eligible),
        Balance::LeastTime(lt) => {
            return least_time::pick(state, peers, weights, &eligible, lt, now);
        }
        Balance::Hash if many && !key.hash.is_empty() => match &m.ring {
            Some(ring) => ring.pick(key.hash, &mut cursor.walk, |name| {
                let same: Vec<usize> = (0..primaries)
                    .filter(|&i| peers[i].name == name && usable(peers, state, tried, i, now))
                    .collect();
                smooth_weighted::pick(state, weights, &same)
            }),
            None => crate::hash::pick(key.hash, &weights[..primaries], &mut cursor.walk, |i| {
                usable(peers, state, tried, i, now)
            }),
        },
        Balance::IpHash if many => {
            let addr = ip_hash::key(key.client_ip);
            ip_hash::pick(&addr, &weights[..primaries], &mut cursor.walk, |i| {
                usable(peers, state, tried, i, now)
            })
        }
        Balance::Random if many => {
            random_two(state, &weights[..primaries], &mut cursor.walk, |st, i| {
                usable(peers, st, tried, i, now)
            })
        }
        _ => None,
    };
    picked.or_else(|| smooth_weighted::pick(state, weights, &eligible))
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
    /// The members when it was taken: its peer stays readable after a change.
    peers: Arc<[Peer]>,
    generation: u64,
    index: usize,
    freed: bool,
    timing: least_time::Timing,
}

impl Lease {
    /// The peer's position among the members when it was taken.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The members when it was taken, and their generation.
    pub fn members(&self) -> (&[Peer], u64) {
        (&self.peers, self.generation)
    }

    pub fn peer(&self) -> &Peer {
        &self.peers[self.index]
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// The try's `$upstream_header_time` and `$upstream_response_time`,
    /// for `least_time` when the lease is freed.
    pub fn set_times(&mut self, header: Option<Duration>, response: Option<Duration>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.timing.header = header.map(ms);
        self.timing.response = response.map(ms);
    }

    /// nginx `peer.notify(NGX_HTTP_UPSTREAM_NOTIFY_HEADER)`: the header of
    /// the response to use arrived after `header_time` (`least_time`).
    pub fn header_arrived(&mut self, header_time: Duration) {
        if !self.timing.counts_header {
            return;
        }
        let ms = u64::try_from(header_time.as_millis()).unwrap_or(u64::MAX);
        let group = self.group.clone();
        let mut guard = group.lock();
        let m = &mut *guard;
        if let Some(i) = index_of(m, self) {
            least_time::on_header(m.balance, &mut m.state[i], &mut self.timing, ms);
        }
    }

    /// nginx `peer.free`: account the try and use up one of the request's
    /// tries. Returns whether this took the peer out (`max_fails` reached).
    pub fn free(mut self, feedback: Feedback, cursor: &mut Cursor) -> bool {
        self.freed = true;
        let group = self.group.clone();
        group.release(&self, Some(feedback), Some(cursor))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.freed {
            let group = self.group.clone();
            group.release(self, None, None);
        }
    }
}
