//! `sticky`: the server a request is bound to. A server's route (its
//! `route:`, or the MD5 of its address), the pick of the bound server when
//! it may take the request, and the sessions `sticky learn` remembers.
//!
//! nginx counterpart: `ngx_http_upstream_get_rr_peer_by_sid`, the
//! `st_peer` part of `ngx_http_upstream_get_peer` and
//! `ngx_http_upstream_init_round_robin_sid` (ngx_http_upstream_round_robin.c),
//! and the session tree of `ngx_http_upstream_sticky_module.c`, kept here in
//! the process (no shared-memory zone) with a count bound instead of a size.

use crate::md5;
use crate::passive_health::PeerState;
use crate::tried::Tried;
use crate::Peer;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// nginx's route of a server written without `route=`: the MD5, in
/// lowercase hex, of its address as nginx prints it (`127.0.0.1:8080`,
/// `[::1]:8080`).
pub fn derived_route(addr: SocketAddr) -> String {
    let text = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    md5::hex(text.as_bytes())
}

/// The list a request picks from now (the primaries, or the backups once
/// it moved to them) and what it tried.
pub(crate) struct List<'a> {
    pub peers: &'a [Peer],
    pub weights: &'a [u32],
    pub tried: &'a Tried,
    pub range: Range<usize>,
    /// The group balances by round robin (and has more than one server).
    pub round_robin: bool,
}

/// The peer of `list` bound to `route`, when it may take the request
/// ([`bound`]); with round robin, the pick takes that peer's turn
/// ([`round_robin_turn`]).
pub(crate) fn pick(
    list: List<'_>,
    state: &mut [PeerState],
    route: Option<&str>,
    now: Instant,
) -> Option<usize> {
    let i = bound(
        list.peers,
        state,
        list.tried,
        list.range.clone(),
        route,
        now,
    )?;
    if list.round_robin {
        round_robin_turn(&list, state, i, now);
    }
    Some(i)
}

/// The peer in `range` whose route is `route`, when it may take the
/// request: not tried by it yet, not `down` (by the YAML or the admin
/// API), not failed (`max_fails`), not unhealthy, not full (`max_conns`).
/// A draining peer may: binding is what it still takes.
fn bound(
    peers: &[Peer],
    state: &[PeerState],
    tried: &Tried,
    range: Range<usize>,
    route: Option<&str>,
    now: Instant,
) -> Option<usize> {
    let route = route.filter(|r| !r.is_empty())?;
    let i = range.clone().find(|&i| peers[i].route == route)?;
    let (p, st) = (&peers[i], &state[i]);
    let usable = !tried.has(i)
        && !p.down
        && !st.held_down
        && !st.unhealthy
        && !st.is_failed(p.max_fails, p.fail_timeout, now)
        && !st.is_full(p.max_conns);
    usable.then_some(i)
}

/// nginx's round robin when the bound peer is the pick
/// (`ngx_http_upstream_get_peer` with `st_peer`): unless the bound peer's
/// current weight is already at the low limit, `-(total weight - its
/// weight)`, every peer round robin could pick gains its effective weight
/// as on any pass, and the bound peer gives back the total. Bound requests
/// thus count as its turns, and unbound ones go to the others.
fn round_robin_turn(list: &List<'_>, state: &mut [PeerState], bound: usize, now: Instant) {
    let weights = list.weights;
    let total_weight: i64 = list.range.clone().map(|i| i64::from(weights[i])).sum();
    if state[bound].current_weight <= -(total_weight - i64::from(weights[bound])) {
        return;
    }
    let mut total = 0;
    for i in list.range.clone() {
        if !crate::group::usable(list.peers, state, list.tried, i, now) {
            continue;
        }
        let st = &mut state[i];
        st.current_weight += st.effective_weight;
        total += st.effective_weight;
        if st.effective_weight < i64::from(weights[i]) {
            st.effective_weight += 1;
        }
    }
    state[bound].current_weight -= total;
}

/// One remembered session: the route of its server and when it was last
/// used (its place in the least-recently-used order is `seq`).
struct Session {
    route: Arc<str>,
    last: Instant,
    seq: u64,
}

struct Table {
    /// By the MD5 of the session id, as nginx keys them.
    by_id: HashMap<[u8; 16], Session>,
    /// Least recently used first.
    order: BTreeMap<u64, [u8; 16]>,
    next_seq: u64,
    timeout: Duration,
    max: usize,
}

/// The sessions of one group's `sticky learn`: id -> route, each kept for
/// `timeout` since its last use, at most `max` of them (the least recently
/// used going first). Shared by every thread; kept across reloads.
pub struct Sessions {
    table: Mutex<Table>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("len", &self.len())
            .finish()
    }
}

impl Sessions {
    pub fn new(timeout: Duration, max: usize) -> Sessions {
        Sessions {
            table: Mutex::new(Table {
                by_id: HashMap::new(),
                order: BTreeMap::new(),
                next_seq: 0,
                timeout,
                max: max.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload's new `timeout` and `max_sessions`.
    pub fn configure(&self, timeout: Duration, max: usize) {
        let mut t = self.lock();
        t.timeout = timeout;
        t.max = max.max(1);
        t.evict(Instant::now());
    }

    /// The route of session `id`, while it is remembered.
    pub fn lookup(&self, id: &str, now: Instant) -> Option<Arc<str>> {
        let mut t = self.lock();
        t.evict(now);
        t.by_id
            .get(&md5::digest(id.as_bytes()))
            .map(|s| s.route.clone())
    }

    /// nginx `ngx_http_upstream_sticky_learn_peer`: after a response from
    /// the server at `route`, the session the response `created` (or else
    /// the one the request `looked_up`) is bound to that server and its
    /// time renewed; only a created one is remembered anew.
    pub fn learn(&self, created: &str, looked_up: &str, route: &str, now: Instant) {
        let (id, create) = match (created, looked_up) {
            ("", "") => return,
            ("", id) => (id, false),
            (id, _) => (id, true),
        };
        let key = md5::digest(id.as_bytes());
        let mut t = self.lock();
        t.evict(now);
        let seq = t.next_seq;
        t.next_seq += 1;
        if let Some(s) = t.by_id.get_mut(&key) {
            let old = std::mem::replace(&mut s.seq, seq);
            s.last = now;
            if &*s.route != route {
                s.route = route.into();
            }
            t.order.remove(&old);
            t.order.insert(seq, key);
        } else if create {
            let route = route.into();
            t.by_id.insert(
                key,
                Session {
                    route,
                    last: now,
                    seq,
                },
            );
            t.order.insert(seq, key);
            t.evict(now);
        }
    }

    /// Forget the sessions whose server is gone (a reload): those whose
    /// route `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut t = self.lock();
        let gone: Vec<([u8; 16], u64)> = t
            .by_id
            .iter()
            .filter(|(_, s)| !keep(&s.route))
            .map(|(k, s)| (*k, s.seq))
            .collect();
        for (key, seq) in gone {
            t.by_id.remove(&key);
            t.order.remove(&seq);
        }
    }

    /// Sessions remembered now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    /// Drop what timed out, then the least recently used past `max`.
    fn evict(&mut self, now: Instant) {
        while let Some((&seq, &key)) = self.order.first_key_value() {
            let expired = self
                .by_id
                .get(&key)
                .is_none_or(|s| now.saturating_duration_since(s.last) >= self.timeout);
            if !expired && self.by_id.len() <= self.max {
                break;
            }
            self.order.remove(&seq);
            self.by_id.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feedback, Group, Key};
    use ferry_conf::Balance;

    fn peer(port: u16, route: &str) -> Peer {
        Peer {
            name: format!("127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
            route: route.to_string(),
            drain: false,
        }
    }

    fn bound_to(route: &str) -> Key<'_> {
        Key {
            sticky: Some(route),
            ..Key::default()
        }
    }

    #[test]
    fn a_bound_request_goes_to_its_server_while_usable() {
        let g = Group::new(
            "g",
            Balance::RoundRobin,
            vec![peer(1, "a"), peer(2, "b")],
            2,
        );
        for _ in 0..4 {
            let mut c = g.cursor(0);
            assert_eq!(g.select(&mut c, &bound_to("b")).map(|l| l.index()), Some(1));
        }
        let mut c = g.cursor(0);
        let first = g.select(&mut c, &bound_to("b")).expect("bound");
        first.free(Feedback::Failed, &mut c);
        // Tried (and now failed): the next try is the balancer's.
        assert_eq!(g.select(&mut c, &bound_to("b")).map(|l| l.index()), Some(0));
        let mut fresh = g.cursor(0);
        let again = g.select(&mut fresh, &bound_to("b")).map(|l| l.index());
        assert_eq!(
            again,
            Some(0),
            "max_fails took b out: binding does not override it"
        );
        let mut unknown = g.cursor(0);
        assert!(g.select(&mut unknown, &bound_to("zzz")).is_some());
    }

    /// nginx: with weights 1, 1 a request bound to `a` takes `a`'s turn,
    /// so the next unbound request goes to `b` (without the accounting it
    /// would be `a` again).
    #[test]
    fn a_bound_request_takes_its_servers_round_robin_turn() {
        let g = Group::new(
            "g",
            Balance::RoundRobin,
            vec![peer(1, "a"), peer(2, "b")],
            2,
        );
        let pick = |key: &Key| g.select(&mut g.cursor(0), key).map(|l| l.index());
        assert_eq!(pick(&bound_to("a")), Some(0));
        let unbound: Vec<Option<usize>> = (0..4).map(|_| pick(&Key::default())).collect();
        assert_eq!(unbound, [Some(1), Some(0), Some(1), Some(0)]);
        // At the low limit the bound peer is taken without touching the weights.
        let g = Group::new(
            "g",
            Balance::RoundRobin,
            vec![peer(1, "a"), peer(2, "b")],
            2,
        );
        let pick = |key: &Key| g.select(&mut g.cursor(0), key).map(|l| l.index());
        let bound: Vec<Option<usize>> = (0..3).map(|_| pick(&bound_to("a"))).collect();
        assert_eq!(bound, [Some(0); 3]);
        assert_eq!(pick(&Key::default()), Some(1));
    }

    #[test]
    fn a_draining_server_takes_only_bound_requests_and_down_none() {
        let mut peers = vec![peer(1, "a"), peer(2, "b")];
        peers[1].drain = true;
        let g = Group::new("g", Balance::RoundRobin, peers, 2);
        for _ in 0..4 {
            let mut c = g.cursor(0);
            assert_eq!(
                g.select(&mut c, &Key::default()).map(|l| l.index()),
                Some(0)
            );
        }
        let mut c = g.cursor(0);
        assert_eq!(g.select(&mut c, &bound_to("b")).map(|l| l.index()), Some(1));
        assert!(g.hold(SocketAddr::from(([127, 0, 0, 1], 2)), Some(true), None));
        let mut c = g.cursor(0);
        assert_eq!(g.select(&mut c, &bound_to("b")).map(|l| l.index()), Some(0));
        g.hold(
            SocketAddr::from(([127, 0, 0, 1], 2)),
            Some(false),
            Some(false),
        );
        let picks: Vec<usize> = (0..4)
            .filter_map(|_| {
                g.select(&mut g.cursor(0), &Key::default())
                    .map(|l| l.index())
            })
            .collect();
        assert!(
            picks.contains(&1),
            "the API's drain: false undoes the YAML's: {picks:?}"
        );
    }

    /// nginx's derived route for 127.0.0.1:8080 is `md5("127.0.0.1:8080")`
    /// in hex (ngx_http_upstream_init_round_robin_sid hashes `peer->name`,
    /// the address as `ngx_sock_ntop` prints it); the constant is what
    /// `printf '127.0.0.1:8080' | md5sum` gives (and `[::1]:8080` for IPv6,
    /// `ngx_sock_ntop` putting the address in brackets).
    #[test]
    fn derived_route_is_nginx_md5_of_address() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(derived_route(a), "5958c386bf5e9109ac10d2a628645aea");
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(derived_route(b), "1c2e56fe441d2a91a692b6e4ac8b5c9b");
    }

    /// The routes nginx itself put in its cookies for these addresses:
    /// nginx 1.31.5 built from nginx/nginx at commit 3f6f7824d4e2, see
    /// bench/results/2026-12-06-nginx131-sticky.txt (`Set-Cookie:
    /// srv_id=7f37...` from the server answering "backend 18081").
    #[test]
    fn derived_route_is_what_nginx_131_sent() {
        let a: SocketAddr = "127.0.0.1:18081".parse().unwrap();
        assert_eq!(derived_route(a), "7f3797d6a7e152c9ae2760fc816c6014");
        let b: SocketAddr = "127.0.0.1:18082".parse().unwrap();
        assert_eq!(derived_route(b), "4900f59d6c4a944fb53a6d384b54b275");
    }

    /// The servers nginx 1.31.5 chose, in order, for the requests of
    /// bench/results/2026-12-06-nginx131-sticky.txt (built from nginx/nginx
    /// at commit 3f6f7824d4e2): upstream `routes` (`route=a`, `route=b`)
    /// got no cookie twice, `srv_id=b` twice, then an unknown
    /// `srv_id=nosuchserver` twice, and answered from 18081, 18082, 18082,
    /// 18082, 18081, 18081; upstream `attrs` (derived routes) got no cookie
    /// twice, then the cookie of 18082 three times: 18081, 18082, then
    /// 18082 each time.
    #[test]
    fn picks_in_the_order_nginx_131_made_them() {
        let g = Group::new(
            "routes",
            Balance::RoundRobin,
            vec![peer(18081, "a"), peer(18082, "b")],
            2,
        );
        let pick = |key: &Key| g.select(&mut g.cursor(0), key).map(|l| l.index());
        let keys = [
            Key::default(),
            Key::default(),
            bound_to("b"),
            bound_to("b"),
            bound_to("nosuchserver"),
            bound_to("nosuchserver"),
        ];
        let picks: Vec<Option<usize>> = keys.iter().map(pick).collect();
        let nginx = [0, 1, 1, 1, 0, 0].map(Some);
        assert_eq!(picks, nginx);

        let derived = |port| derived_route(SocketAddr::from(([127, 0, 0, 1], port)));
        let (ra, rb) = (derived(18081), derived(18082));
        let g = Group::new(
            "attrs",
            Balance::RoundRobin,
            vec![peer(18081, &ra), peer(18082, &rb)],
            2,
        );
        let pick = |key: &Key| g.select(&mut g.cursor(0), key).map(|l| l.index());
        let mut picks = vec![pick(&Key::default()), pick(&Key::default())];
        picks.extend((0..3).map(|_| pick(&bound_to(&rb))));
        assert_eq!(picks, [0, 1, 1, 1, 1].map(Some));
    }

    #[test]
    fn sessions_learn_lookup_and_renew() {
        let s = Sessions::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        s.learn("", "a", "r1", t0);
        assert!(s.lookup("a", t0).is_none(), "a lookup alone never creates");
        s.learn("a", "", "r1", t0);
        assert_eq!(s.lookup("a", t0).as_deref(), Some("r1"));
        s.learn("", "a", "r2", t0 + Duration::from_secs(8));
        let later = t0 + Duration::from_secs(15);
        assert_eq!(s.lookup("a", later).as_deref(), Some("r2"), "renewed at 8s");
        assert!(s.lookup("a", t0 + Duration::from_secs(18)).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_past_max_lose_the_least_recently_used() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        s.learn("a", "", "r1", t0);
        s.learn("b", "", "r2", t0);
        s.learn("", "a", "r1", t0);
        s.learn("c", "", "r3", t0);
        assert_eq!(s.len(), 2);
        assert!(s.lookup("b", t0).is_none(), "b was the least recently used");
        assert_eq!(s.lookup("a", t0).as_deref(), Some("r1"));
        s.retain(|r| r != "r1");
        assert!(s.lookup("a", t0).is_none());
        assert_eq!(s.lookup("c", t0).as_deref(), Some("r3"));
    }
}
