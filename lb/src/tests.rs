//! Group behaviour without sockets: tries, backup switch, single server,
//! max_conns, failure marking.

use crate::{Feedback, Group, Key, Peer};
use ferry_conf::Balance;
use std::time::Duration;

fn peer(port: u16, weight: u32, backup: bool) -> Peer {
    Peer {
        name: format!("127.0.0.1:{port}"),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        weight,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        max_conns: 0,
        backup,
        down: false,
        route: crate::sticky::derived_route(format!("127.0.0.1:{port}").parse().unwrap()),
        drain: false,
    }
}

fn addr(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn group(peers: Vec<Peer>) -> Group {
    let primaries = peers.iter().filter(|p| !p.backup).count();
    Group::new("g", Balance::RoundRobin, peers, primaries)
}

#[test]
fn each_peer_once_per_request_then_backup() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false), peer(3, 1, true)]);
    let mut c = g.cursor(0);
    assert_eq!(c.tries_left, 3);
    let a = g.select(&mut c, &Key::default()).unwrap();
    let b = g.select(&mut c, &Key::default()).unwrap();
    assert_ne!(a.index(), b.index());
    assert!(a.index() < 2 && b.index() < 2);
    let backup = g.select(&mut c, &Key::default()).unwrap();
    assert_eq!(backup.index(), 2);
    assert!(
        g.select(&mut c, &Key::default()).is_none(),
        "every peer tried"
    );
}

#[test]
fn failed_primaries_send_new_requests_to_backup() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, true)]);
    let mut c = g.cursor(0);
    let a = g.select(&mut c, &Key::default()).unwrap();
    assert_eq!(a.index(), 0);
    a.free(Feedback::Failed, &mut c);
    assert!(g.is_failed(addr(1)));
    let mut c2 = g.cursor(0);
    assert_eq!(g.select(&mut c2, &Key::default()).unwrap().index(), 1);
}

#[test]
fn single_server_has_no_retry_and_no_marking() {
    let g = group(vec![peer(1, 1, false)]);
    let mut c = g.cursor(0);
    assert_eq!(c.tries_left, 1);
    let a = g.select(&mut c, &Key::default()).unwrap();
    a.free(Feedback::Failed, &mut c);
    assert_eq!(c.tries_left, 0);
    assert!(!g.is_failed(addr(1)));
    assert_eq!(g.snapshot(), vec![(0, 0)]);
}

#[test]
fn tries_limit_and_down_peers() {
    let mut peers = vec![peer(1, 1, false), peer(2, 1, false), peer(3, 1, false)];
    peers[2].down = true;
    let g = group(peers);
    assert_eq!(g.cursor(0).tries_left, 2);
    assert_eq!(g.cursor(1).tries_left, 1);
    let mut c = g.cursor(0);
    let picks: Vec<usize> = (0..2)
        .map(|_| g.select(&mut c, &Key::default()).unwrap().index())
        .collect();
    assert!(!picks.contains(&2));
}

#[test]
fn max_conns_full_peer_is_skipped_and_lease_drop_releases() {
    let mut peers = vec![peer(1, 1, false), peer(2, 1, true)];
    peers[0].max_conns = 1;
    let g = group(peers);
    let mut c1 = g.cursor(0);
    let held = g.select(&mut c1, &Key::default()).unwrap();
    assert_eq!(held.index(), 0);
    let mut c2 = g.cursor(0);
    assert_eq!(
        g.select(&mut c2, &Key::default()).unwrap().index(),
        1,
        "full primary: backup"
    );
    drop(held);
    let mut c3 = g.cursor(0);
    assert_eq!(g.select(&mut c3, &Key::default()).unwrap().index(), 0);
}

#[test]
fn next_feedback_does_not_count() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false)]);
    let mut c = g.cursor(0);
    let a = g.select(&mut c, &Key::default()).unwrap();
    let at = a.peer().addr;
    a.free(Feedback::Next, &mut c);
    assert_eq!(c.tries_left, 1);
    assert!(!g.is_failed(at));
}

#[test]
fn an_update_keeps_the_state_of_servers_that_stay() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false)]);
    let mut c = g.cursor(0);
    let a = g.select(&mut c, &Key::default()).unwrap();
    let failed = a.peer().addr;
    a.free(Feedback::Failed, &mut c);
    let mut c2 = g.cursor(0);
    let held = g.select(&mut c2, &Key::default()).unwrap();
    let busy = held.peer().addr;
    assert_ne!(failed, busy);
    // Reload: both stay, a third joins, in another order.
    g.update(
        Balance::RoundRobin,
        false,
        vec![peer(3, 1, false), peer(2, 1, false), peer(1, 1, false)],
        3,
        true,
    );
    assert!(g.is_failed(failed), "the failure window survives");
    let report = g.report();
    let of = |a| report.iter().find(|r| r.peer.addr == a).unwrap();
    assert_eq!(of(busy).active, 1, "the request in flight is still counted");
    assert_eq!(of(addr(3)).active, 0);
    drop(held);
    assert_eq!(
        g.report().iter().map(|r| r.active).sum::<u32>(),
        0,
        "released across the change"
    );
}

#[test]
fn a_cursor_finds_its_tries_again_after_an_update() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false)]);
    let mut c = g.cursor(0);
    let first = g.select(&mut c, &Key::default()).unwrap().peer().addr;
    // The same two servers in the other order: the next try is the other one.
    g.update(
        Balance::RoundRobin,
        false,
        vec![peer(2, 1, false), peer(1, 1, false)],
        2,
        false,
    );
    let second = g.select(&mut c, &Key::default()).unwrap().peer().addr;
    assert_ne!(first, second);
    assert!(g.select(&mut c, &Key::default()).is_none());
}

#[test]
fn a_server_that_left_takes_nothing_and_its_lease_still_ends() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false)]);
    let mut c = g.cursor(0);
    let a = g.select(&mut c, &Key::default()).unwrap();
    let gone = a.peer().addr;
    let stays = if gone == addr(1) { 2 } else { 1 };
    g.update(
        Balance::RoundRobin,
        false,
        vec![peer(stays, 1, false)],
        1,
        false,
    );
    assert_eq!(a.peer().addr, gone, "the lease still names its server");
    a.free(Feedback::Failed, &mut c);
    for _ in 0..4 {
        let mut c = g.cursor(0);
        assert_eq!(
            g.select(&mut c, &Key::default()).unwrap().peer().addr,
            addr(stays)
        );
    }
    g.update(Balance::RoundRobin, false, vec![], 0, false);
    assert!(
        g.select(&mut g.cursor(0), &Key::default()).is_none(),
        "an empty group has no live server"
    );
}

#[test]
fn down_and_drain_hold_a_server_until_a_reload() {
    let g = group(vec![peer(1, 1, false), peer(2, 1, false)]);
    assert!(g.hold(addr(1), Some(true), None));
    assert!(g.hold(addr(2), None, Some(true)));
    assert!(!g.hold(addr(9), Some(true), None), "not a member");
    let states: Vec<_> = g.report().iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["down", "draining"]);
    assert!(g.select(&mut g.cursor(0), &Key::default()).is_none());
    // A DNS change keeps the holds; a reload clears them.
    g.update(
        Balance::RoundRobin,
        false,
        vec![peer(1, 1, false), peer(2, 1, false)],
        2,
        false,
    );
    assert!(g.select(&mut g.cursor(0), &Key::default()).is_none());
    g.update(
        Balance::RoundRobin,
        false,
        vec![peer(1, 1, false), peer(2, 1, false)],
        2,
        true,
    );
    let states: Vec<_> = g.report().iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["up", "up"]);
    let served = g.select(&mut g.cursor(0), &Key::default()).unwrap();
    assert_eq!(g.report().iter().map(|r| r.requests).sum::<u64>(), 1);
    drop(served);
}
