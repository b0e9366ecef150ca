//! Kept-alive client connections waiting for their next request, and the
//! one clock that ends them: the keepalive timeout, or the service
//! stopping.
//!
//! nginx counterpart: `ngx_http_set_keepalive`, which arms the
//! connection's `keepalive_timeout` on its read event, and the
//! `ngx_close_idle_connections` of a graceful stop.
//!
//! A waiting connection holds a slot here (its deadline and its task's
//! waker, 24 bytes) and nothing else: no timer of its own, no waiter in a
//! notification list. One sweeper task, running while anything waits,
//! wakes those whose deadline passed every [`TICK`]; a stop wakes them all
//! at once. (A timer each was a boxed timer future on every idle
//! connection, and its registration on every request.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpStream;

/// How often the sweeper looks for deadlines that passed, and the unit
/// deadlines are kept in (rounded up): a connection closes no earlier than
/// its keepalive timeout, and at most two ticks later.
const TICK: Duration = Duration::from_millis(50);

/// [`TICK`] in milliseconds.
const TICK_MS: u64 = TICK.as_millis() as u64;

/// No slot held.
const NONE: u32 = u32::MAX;
/// No deadline (a keepalive timeout of zero: wait until the stop).
const NEVER: u32 = u32::MAX;

/// The connections of one service waiting for their next request.
pub(crate) struct IdleClients {
    slots: Mutex<Slots>,
    stopping: AtomicBool,
    /// The coarse clock's millisecond deadlines count their ticks from.
    epoch_ms: u64,
}

/// The slots, in chunks that never move: a growing vector would leave its
/// old buffers behind in the allocator, more than the slots themselves.
struct Slots {
    chunks: Vec<Box<[Slot]>>,
    /// The first free slot; each free slot names the next.
    free: u32,
    /// Slots made so far.
    made: u32,
    held: usize,
    sweeping: bool,
}

/// Slots per chunk (8 KiB).
const CHUNK: usize = 256;

enum Slot {
    Free {
        next: u32,
    },
    /// A waiting connection.
    Held {
        /// Ticks after the epoch.
        until: u32,
        waker: Option<Waker>,
        /// The deadline passed, or the service stops.
        ended: bool,
    },
}

impl Default for Slots {
    fn default() -> Slots {
        Slots {
            chunks: Vec::new(),
            free: NONE,
            made: 0,
            held: 0,
            sweeping: false,
        }
    }
}

impl IdleClients {
    pub(crate) fn new() -> Arc<IdleClients> {
        Arc::new(IdleClients {
            slots: Mutex::new(Slots::default()),
            stopping: AtomicBool::new(false),
            epoch_ms: ferry_timer::clock::now_ms(),
        })
    }

    /// Wait for `socket` to be readable (the next request's first byte, or
    /// the client's close) without reading it. True when it is; false when
    /// `timeout` (none: no deadline) passed first, or the service stops.
    pub(crate) fn next_byte<'a>(
        self: &'a Arc<Self>,
        socket: &'a TcpStream,
        timeout: Option<Duration>,
    ) -> NextByte<'a> {
        // The first tick at or after the deadline: never early.
        let tick = TICK_MS;
        let until = match timeout {
            Some(t) if !t.is_zero() => {
                let wait = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                let at = self
                    .since_epoch_ms()
                    .saturating_add(wait + ferry_timer::clock::lag_ms());
                u32::try_from(at.div_ceil(tick)).unwrap_or(NEVER)
            }
            _ => NEVER,
        };
        NextByte {
            clients: self,
            socket,
            until,
            slot: NONE,
        }
    }

    /// The service stops: every waiting connection ends now, and every
    /// connection that comes to wait ends at once.
    pub(crate) fn stop(&self) {
        let wake: Vec<Waker> = {
            let mut s = self.lock();
            self.stopping.store(true, Ordering::Release);
            s.held_mut()
                .filter_map(|(_, waker, _)| waker.take())
                .collect()
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Whether the service stopped ([`IdleClients::stop`]).
    pub(crate) fn stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whole ticks since the epoch.
    fn ticks(&self) -> u32 {
        let ticks = self.since_epoch_ms() / TICK_MS;
        u32::try_from(ticks).unwrap_or(NEVER - 1)
    }

    /// Wake the connections whose deadline passed; false when none waits
    /// any more (the sweeper ends).
    /// Milliseconds since the epoch, by the coarse clock (which may trail:
    /// a deadline adds its lag, and is never early).
    fn since_epoch_ms(&self) -> u64 {
        ferry_timer::clock::now_ms().saturating_sub(self.epoch_ms)
    }

    fn sweep(&self) -> bool {
        let now = self.ticks();
        let wake: Vec<Waker> = {
            let mut s = self.lock();
            if s.held == 0 {
                *s = Slots::default();
                return false;
            }
            let passed = s
                .held_mut()
                .filter(|(until, _, ended)| !**ended && *until <= now);
            passed
                .filter_map(|(_, waker, ended)| {
                    *ended = true;
                    waker.take()
                })
                .collect()
        };
        wake.into_iter().for_each(Waker::wake);
        true
    }
}

impl Slots {
    fn slot(&mut self, i: u32) -> &mut Slot {
        &mut self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    /// The held slots: deadline, waker, ended.
    fn held_mut(&mut self) -> impl Iterator<Item = (u32, &mut Option<Waker>, &mut bool)> {
        let all = self.chunks.iter_mut().flat_map(|c| c.iter_mut());
        all.filter_map(|x| match x {
            Slot::Held {
                until,
                waker,
                ended,
            } => Some((*until, waker, ended)),
            Slot::Free { .. } => None,
        })
    }

    fn hold(&mut self, until: u32, waker: Waker) -> u32 {
        let i = match self.free {
            NONE => {
                if self.made as usize % CHUNK == 0 {
                    let chunk = (0..CHUNK).map(|_| Slot::Free { next: NONE }).collect();
                    self.chunks.push(chunk);
                }
                self.made += 1;
                self.made - 1
            }
            i => {
                if let Slot::Free { next } = *self.slot(i) {
                    self.free = next;
                }
                i
            }
        };
        *self.slot(i) = Slot::Held {
            until,
            waker: Some(waker),
            ended: false,
        };
        self.held += 1;
        i
    }

    fn release(&mut self, i: u32) {
        let next = self.free;
        *self.slot(i) = Slot::Free { next };
        self.free = i;
        self.held -= 1;
    }
}

/// The sweeper: runs while connections wait.
async fn sweep(clients: Arc<IdleClients>) {
    loop {
        ferry_timer::sleep(TICK).await;
        if !clients.sweep() {
            return;
        }
    }
}

/// [`IdleClients::next_byte`]'s future: the socket's readiness, and a slot
/// while it waits.
pub(crate) struct NextByte<'a> {
    clients: &'a Arc<IdleClients>,
    socket: &'a TcpStream,
    until: u32,
    slot: u32,
}

impl Future for NextByte<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.clients.stopped() {
            return Poll::Ready(false);
        }
        // Readiness only, no read: the request's own read takes the bytes
        // (one receive per request, as nginx's keepalive handler makes).
        // A readiness left from a read that filled its buffer ends the
        // wait early; that read then waits instead, under its own limit.
        if let Poll::Ready(ready) = self.socket.poll_read_ready(cx) {
            return Poll::Ready(ready.is_ok());
        }
        let clients = self.clients;
        let mut s = clients.lock();
        // Under the lock: a stop either finds this slot or is seen here.
        if clients.stopped() {
            return Poll::Ready(false);
        }
        if self.slot == NONE {
            self.slot = s.hold(self.until, cx.waker().clone());
            if !s.sweeping && self.until != NEVER {
                s.sweeping = true;
                drop(s);
                pingora_runtime::current_handle().spawn(sweep(clients.clone()));
            }
            return Poll::Pending;
        }
        match s.slot(self.slot) {
            Slot::Held { ended: true, .. } | Slot::Free { .. } => Poll::Ready(false),
            Slot::Held { waker: Some(w), .. } if w.will_wake(cx.waker()) => Poll::Pending,
            Slot::Held { waker, .. } => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for NextByte<'_> {
    fn drop(&mut self) {
        if self.slot != NONE {
            self.clients.lock().release(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Poll once: still waiting?
    async fn pending(f: Pin<&mut NextByte<'_>>) -> bool {
        let mut f = f;
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        // As after a request's read that drained it: nothing to read, and
        // the socket's readiness cleared.
        let drained = server.try_read(&mut [0u8; 16]);
        assert_eq!(
            drained.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
        (client, server)
    }

    #[tokio::test]
    async fn a_byte_ends_the_wait_and_frees_the_slot() {
        let clients = IdleClients::new();
        let (mut client, server) = pair().await;
        let mut wait = Box::pin(clients.next_byte(&server, Some(Duration::from_secs(60))));
        assert!(pending(wait.as_mut()).await);
        assert_eq!(clients.lock().held, 1);
        client.write_all(b"G").await.unwrap();
        assert!(wait.as_mut().await);
        drop(wait);
        assert_eq!(clients.lock().held, 0);
    }

    #[tokio::test]
    async fn a_close_ends_the_wait_and_a_timeout_ends_it_false() {
        let clients = IdleClients::new();
        let (client, server) = pair().await;
        drop(client);
        // A close makes the socket readable: the wait ends, and the read
        // after it finds the end.
        assert!(clients.next_byte(&server, None).await);
        let (_client, server) = pair().await;
        let waited = Instant::now();
        let timeout = Duration::from_millis(120);
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            clients.next_byte(&server, Some(timeout)),
        );
        assert!(!ended.await.unwrap());
        assert!(waited.elapsed() >= timeout);
    }

    #[test]
    fn slots_are_reused_and_their_chunks_go_when_none_waits() {
        let clients = IdleClients::new();
        let mut s = clients.lock();
        let first: Vec<u32> = (0..300)
            .map(|_| s.hold(NEVER, Waker::noop().clone()))
            .collect();
        assert_eq!((s.made, s.chunks.len(), s.held), (300, 2, 300));
        first.iter().rev().for_each(|&i| s.release(i));
        let again: Vec<u32> = (0..300)
            .map(|_| s.hold(NEVER, Waker::noop().clone()))
            .collect();
        assert_eq!(again, first, "freed slots are taken again, none made");
        assert_eq!(s.made, 300);
        again.iter().for_each(|&i| s.release(i));
        drop(s);
        assert!(!clients.sweep(), "nothing waits: the sweeper ends");
        assert!(clients.lock().chunks.is_empty());
    }

    #[tokio::test]
    async fn a_stop_ends_every_wait_and_those_after_it() {
        let clients = IdleClients::new();
        let (_c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let one = clients.next_byte(&s1, None);
        let mut one = std::pin::pin!(one);
        assert!(pending(one.as_mut()).await);
        clients.stop();
        assert!(!one.await);
        assert!(!clients.next_byte(&s2, Some(Duration::from_secs(60))).await);
    }
}
