//! A group's HTTP/1 connections: new ones from Pingora's connector (TCP,
//! TLS), idle ones in a queue of Ferry's own, watched without a task each.
//!
//! nginx counterpart: the keepalive module's cache (`ngx_http_upstream_keepalive_module`):
//! a connection goes in when its response ended cleanly, comes out for
//! the next request to the same server (the most recently idle first), the
//! oldest makes room when the cache is full, and one is closed when its
//! `keepalive_timeout` passes or the server closes it.
//!
//! Pingora's own `TransportConnector::release_stream` spawns a task per
//! released connection to watch it, and taking it back waits for that task
//! to let go; its `ConnectionPool` keeps a node per server in a concurrent
//! map beside an LRU. Here the idle connections are one short queue, as
//! nginx's cache is, looked up by the server's key. A connection is
//! checked when it comes out (a closed one, or one with bytes nobody asked
//! for, is dropped then, as Pingora drops it), and one sweeper per group,
//! woken a few times per timeout while anything is idle, closes those whose
//! timeout passed and those the server closed. Every idle connection is
//! counted in the budget all groups share
//! (`server.upstream_keepalive_pool_size`), and leaves it when it leaves the
//! queue.

use crate::upstream::idle_budget::IdleBudget;
use crate::upstream::keepalive::Usage;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::Peer;
use pingora_error::Result;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// An idle connection: to which server (Pingora's reuse key), the
/// instant its `keepalive_timeout` ends, and what it served.
struct Idle {
    key: u64,
    stream: Stream,
    /// Its idle timeout's end, on the coarse clock (`ferry_timer::clock`).
    until_ms: u64,
    usage: Usage,
}

/// The longest a sweeper sleeps while connections are idle: a connection
/// the server closed is closed here at most this much later.
const SWEEP_MAX: Duration = Duration::from_secs(1);
/// The shortest (a very short `keepalive_timeout`).
const SWEEP_MIN: Duration = Duration::from_millis(50);

/// One group's connections (or the run-time servers' pool).
pub struct Pool {
    connector: TransportConnector,
    /// The idle connections, the least recently used first.
    idle: Mutex<VecDeque<Idle>>,
    /// The most kept idle (the group's `keepalive`).
    size: usize,
    /// The shortest `keepalive_timeout` put with, in milliseconds.
    shortest: AtomicU64,
    sweeper: AtomicBool,
    /// Wakes the sweeper: a connection was put in, or the pool is gone.
    wake: Arc<Notify>,
    /// Idle connections of every group, capped.
    budget: Arc<IdleBudget>,
}

impl Pool {
    /// `options.keepalive_pool_size` idle connections at most; the least
    /// recently used goes to make room.
    pub fn new(options: ConnectorOptions, budget: Arc<IdleBudget>) -> Pool {
        let size = options.keepalive_pool_size.max(1);
        Pool {
            budget,
            connector: TransportConnector::new(Some(options)),
            idle: Mutex::new(VecDeque::new()),
            size,
            shortest: AtomicU64::new(u64::MAX),
            sweeper: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A new connection to `peer` (TCP, and TLS when the peer asks).
    pub async fn connect<P: Peer + Send + Sync + 'static>(&self, peer: &P) -> Result<Stream> {
        self.connector.new_stream(peer).await
    }

    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection to `peer`, if one is still good: its timeout has
    /// not passed, it is connected to that peer, and the server has neither
    /// closed it nor sent anything. Those that are not are closed.
    pub fn take<P: Peer>(&self, peer: &P) -> Option<(Stream, Usage)> {
        let key = peer.reuse_hash();
        let now = ferry_timer::clock::now_ms();
        loop {
            let mut found = {
                let mut idle = self.idle();
                let at = idle.iter().rposition(|i| i.key == key)?;
                idle.remove(at)?
            };
            self.budget.leave(1);
            if found.until_ms > now
                && peer.matches_fd(found.stream.id())
                && still_good(&mut found.stream)
            {
                return Some((found.stream, found.usage));
            }
        }
    }

    /// Put `stream` (to the server `key`, having served `usage`) in, idle
    /// for at most `timeout`. A full pool closes its least recently used
    /// connection to make room; past the budget of all groups, `stream`
    /// is closed instead.
    pub fn put(self: &Arc<Self>, stream: Stream, key: u64, timeout: Duration, usage: Usage) {
        let wait = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = Idle {
            key,
            stream,
            until_ms: ferry_timer::clock::now_ms().saturating_add(wait),
            usage,
        };
        let evicted = {
            let mut queue = self.idle();
            let evicted = match queue.len() >= self.size {
                // Its place in the budget is the new one's.
                true => queue.pop_front(),
                false if self.budget.add() => None,
                false => return,
            };
            queue.push_back(idle);
            evicted
        };
        drop(evicted);
        self.shortest
            .fetch_min(timeout.as_millis() as u64, Ordering::Relaxed);
        if !self.sweeper.swap(true, Ordering::AcqRel) {
            let pool = Arc::downgrade(self);
            pingora_runtime::current_handle().spawn(sweep(pool, self.wake.clone()));
        }
        self.wake.notify_one();
    }

    /// Close what timed out or was closed by its server. How many stay
    /// idle.
    fn sweep_once(&self) -> usize {
        let now = ferry_timer::clock::now_ms();
        let mut gone = Vec::new();
        let left = {
            let mut idle = self.idle();
            let mut kept = VecDeque::with_capacity(idle.len());
            for mut i in idle.drain(..) {
                match i.until_ms > now && still_good(&mut i.stream) {
                    true => kept.push_back(i),
                    false => gone.push(i),
                }
            }
            *idle = kept;
            idle.len()
        };
        self.budget.leave(gone.len());
        drop(gone);
        left
    }

    /// How long the sweeper sleeps between two sweeps.
    fn sweep_every(&self) -> Duration {
        let shortest = Duration::from_millis(self.shortest.load(Ordering::Relaxed));
        (shortest / 4).clamp(SWEEP_MIN, SWEEP_MAX)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.budget.leave(self.idle().len());
        // The sweeper ends.
        self.wake.notify_one();
    }
}

/// The sweeper of `pool`: asleep while nothing is idle, else a sweep
/// every [`Pool::sweep_every`]. It ends with the pool.
async fn sweep(pool: Weak<Pool>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let every = match pool.upgrade() {
                Some(p) => p.sweep_every(),
                None => return,
            };
            ferry_timer::sleep(every).await;
            match pool.upgrade() {
                Some(p) if p.sweep_once() > 0 => {}
                Some(_) => break,
                None => return,
            }
        }
    }
}

/// The connection is still good to send a request on: reading it now
/// would wait (nothing came, not even its end). Pingora's own check.
fn still_good(stream: &mut Stream) -> bool {
    use std::future::Future;
    let mut one = [0u8; 1];
    // Unconstrained: with the task's budget spent, a read that could
    // finish would say it must wait.
    let read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut one)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    read.poll(&mut cx).is_pending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::upstreams::peer::HttpPeer;
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// The most any wait here takes.
    const WAIT: Duration = Duration::from_secs(5);

    /// A pool, a server, and the first connection's server side.
    async fn setup() -> (Arc<Pool>, HttpPeer, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = HttpPeer::new(l.local_addr().expect("addr"), false, String::new());
        let mut opts = ConnectorOptions::new(4);
        opts.keepalive_pool_size = 4;
        let budget = Arc::new(IdleBudget::new(100));
        (Arc::new(Pool::new(opts, budget)), peer, l)
    }

    async fn accept(l: &TcpListener) -> TcpStream {
        tokio::time::timeout(WAIT, l.accept())
            .await
            .expect("a connection in time")
            .expect("accept")
            .0
    }

    /// A connection put in the pool, idle for at most `idle`; its server
    /// side.
    async fn pooled(
        pool: &Arc<Pool>,
        peer: &HttpPeer,
        l: &TcpListener,
        idle: Duration,
    ) -> TcpStream {
        let conn = pool.connect(peer).await.expect("connect");
        let server = accept(l).await;
        pool.put(conn, peer.reuse_hash(), idle, Usage::new());
        server
    }

    /// The server side reads the end of its connection in time: Ferry's
    /// side closed it.
    async fn closed_by_ferry(server: &mut TcpStream) {
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(WAIT, server.read(&mut buf))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0, "the end of the connection, no bytes");
    }

    #[tokio::test]
    async fn a_connection_put_in_comes_back_out() {
        let (pool, peer, l) = setup().await;
        let conn = pool.connect(&peer).await.expect("connect");
        let _server = accept(&l).await;
        let id = conn.id();
        pool.put(
            conn,
            peer.reuse_hash(),
            Duration::from_secs(60),
            Usage::new(),
        );
        let (again, _) = pool.take(&peer).expect("the idle connection");
        assert_eq!(again.id(), id, "the same socket");
        assert!(pool.take(&peer).is_none(), "only one was idle");
    }

    #[tokio::test]
    async fn a_full_pool_closes_its_oldest_and_the_newest_comes_out_first() {
        let (pool, peer, l) = setup().await;
        let idle = Duration::from_secs(60);
        let mut oldest = pooled(&pool, &peer, &l, idle).await;
        let (mut ids, mut servers) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let conn = pool.connect(&peer).await.expect("connect");
            ids.push(conn.id());
            servers.push(accept(&l).await);
            pool.put(conn, peer.reuse_hash(), idle, Usage::new());
        }
        // Four fit (the pool's size): the fifth put closed the first.
        closed_by_ferry(&mut oldest).await;
        for id in ids.iter().rev() {
            let (c, _) = pool.take(&peer).expect("an idle connection");
            assert_eq!(c.id(), *id, "the most recently idle first");
        }
        assert!(pool.take(&peer).is_none());
    }

    #[tokio::test]
    async fn one_the_server_closed_or_wrote_on_is_not_taken() {
        let (pool, peer, l) = setup().await;
        for server_does in ["close", "write"] {
            let mut server = pooled(&pool, &peer, &l, Duration::from_secs(60)).await;
            match server_does {
                "close" => drop(server),
                _ => server
                    .write_all(b"HTTP/1.1 408\r\n\r\n")
                    .await
                    .expect("write"),
            }
            // The bytes or the end reach Ferry's socket; until then the
            // connection still looks good, and is put back for the next try.
            let start = Instant::now();
            loop {
                match pool.take(&peer) {
                    None => break,
                    Some((c, usage)) => {
                        pool.put(c, peer.reuse_hash(), Duration::from_secs(60), usage)
                    }
                }
                assert!(start.elapsed() < WAIT, "{server_does}: still taken");
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn the_sweeper_closes_what_timed_out_and_what_the_server_closed() {
        let (pool, peer, l) = setup().await;
        let mut old_server = pooled(&pool, &peer, &l, Duration::from_millis(200)).await;
        closed_by_ferry(&mut old_server).await;
        assert!(pool.take(&peer).is_none(), "the timed-out one is gone");

        let mut shut_server = pooled(&pool, &peer, &l, Duration::from_secs(60)).await;
        // The server ends its side; nobody takes the connection, and the
        // sweeper closes Ferry's side (nginx's keepalive close handler).
        shut_server.shutdown().await.expect("shutdown");
        closed_by_ferry(&mut shut_server).await;
        assert!(pool.take(&peer).is_none());
    }

    #[tokio::test]
    async fn every_idle_connection_is_in_the_budget_until_it_leaves() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = HttpPeer::new(l.local_addr().expect("addr"), false, String::new());
        let budget = Arc::new(IdleBudget::new(3));
        let mut opts = ConnectorOptions::new(2);
        opts.keepalive_pool_size = 2;
        let pool = Arc::new(Pool::new(opts, budget.clone()));
        let other = Arc::new(Pool::new(ConnectorOptions::new(4), budget.clone()));
        let idle = Duration::from_secs(60);
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(pooled(&pool, &peer, &l, idle).await);
        }
        // The third took the oldest's place in its pool of two.
        assert_eq!(budget.counted(), 2);
        closed_by_ferry(&mut servers[0]).await;
        // Another group's pool takes the budget's last place; past it, a
        // connection is closed rather than kept.
        servers.push(pooled(&other, &peer, &l, idle).await);
        let mut refused = pooled(&other, &peer, &l, idle).await;
        closed_by_ferry(&mut refused).await;
        assert_eq!(budget.counted(), 3);
        let (taken, usage) = pool.take(&peer).expect("an idle connection");
        assert_eq!((budget.counted(), usage.requests), (2, 0));
        pool.put(taken, peer.reuse_hash(), idle, usage);
        assert_eq!(budget.counted(), 3);
        drop(pool);
        assert_eq!(budget.counted(), 1, "a pool gone leaves the budget");
        drop(other);
        assert_eq!(budget.counted(), 0);
    }

    #[tokio::test]
    async fn the_sweeper_ends_with_its_pool() {
        let (pool, peer, l) = setup().await;
        let mut server = pooled(&pool, &peer, &l, Duration::from_secs(60)).await;
        let weak = Arc::downgrade(&pool);
        drop(pool);
        assert!(weak.upgrade().is_none(), "the sweeper holds no pool");
        closed_by_ferry(&mut server).await;
    }
}
