//! The event pipe: buffered forwarding (`buffering: true`, the default).
//!
//! nginx counterpart: `ngx_event_pipe.c`. The upstream is read as fast as it
//! sends into at most `buffers.count x buffers.size` bytes of memory; the
//! client is written whatever is ready, at most `busy_buffers_size` at a time.
//! When memory is full and the client is not taking data, the oldest unsent
//! memory goes to a temp file (at most `temp_file_write_size` per write, at
//! most `max_temp_file_size` in all), and the client is later served from the
//! file before newer memory, in order. At the cap, or with
//! `max_temp_file_size: 0`, the upstream is not read until the client drains
//! (TCP backpressure). The upstream connection is released the moment its
//! body is complete, so a slow client never holds a backend.
//!
//! ```text
//!   upstream ──read──▶ [filter] ──▶ memory (in) ──────────────┐
//!                                     │ oldest, when full and   │ file first,
//!                                     ▼ the client is blocked   ▼ then memory
//!                                   temp file (out) ──────▶ busy (one write
//!                                                           in flight) ──▶ client
//! ```
//!
//! One task drives both ends: a read and a write may be in flight at once,
//! each as a future that owns its end and hands it back when done. "The
//! client is behind" is nginx's `!downstream->write->ready` made robust: the
//! write in flight has waited on the client for [`SPILL_GRACE`]. So a client
//! that keeps up is not spilled for, while a slow one is within
//! milliseconds.
//!
//! Memory: Pingora's body reader returns up to one socket read (64 KiB) at a
//! time and a read is never split, so the bound is the buffers plus one read.

use crate::pipe::{
    BodyFilter, DownstreamBody, FailKind, PipeError, PipeOutcome, Side, UpstreamBody,
};
use crate::temp_file::TempFile;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The event pipe's settings (a route's `proxy:` buffering keys).
#[derive(Debug, Clone)]
pub struct EventPipeConf {
    /// `buffers.count x buffers.size`: memory for body not yet sent.
    pub memory: usize,
    /// `busy_buffers_size`: the most handed to the client in one write.
    pub busy: usize,
    /// `max_temp_file_size`: 0 = never spill.
    pub max_temp_file_size: u64,
    /// `temp_file_write_size`: the most written to the file at once.
    pub temp_file_write_size: usize,
    pub temp_path: PathBuf,
    /// `limit_rate`: bytes per second read from the upstream; 0 = none.
    pub limit_rate: u64,
    /// `ignore_client_abort`: read the upstream to its end when the client goes.
    pub ignore_client_abort: bool,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A finished upstream read: the upstream end back, and what it read.
type Read<U> = (U, Result<Option<Bytes>, PipeError>);

/// The most handed to a client that keeps up in one write (one Pingora
/// read); a client that blocked gets at most `busy_buffers_size`.
const FAST_BATCH: usize = 64 * 1024;

/// How long a write must wait on the client, with memory full, before the
/// pipe spills: a client that keeps up finishes a write within microseconds,
/// a slow one stays blocked. (nginx spills at once; this keeps fast clients
/// off the disk.)
pub const SPILL_GRACE: Duration = Duration::from_millis(10);

/// Body that was read and not yet written: memory (`p->in`) and the part of
/// the temp file not yet sent (`p->out`, always older than memory). The write
/// in flight (nginx's busy buffers) is not counted here: it holds at most
/// one batch.
struct Buffered {
    memory: VecDeque<Bytes>,
    /// Bytes queued in `memory`: what `buffers` bounds and spilling frees.
    queued: usize,
    file: Option<TempFile>,
    file_sent: u64,
}

impl Buffered {
    fn file_pending(&self) -> bool {
        self.file.as_ref().is_some_and(|f| self.file_sent < f.len())
    }

    fn is_empty(&self) -> bool {
        self.memory.is_empty() && !self.file_pending()
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.queued += b.len();
            self.memory.push_back(b);
        }
    }

    /// The next write: file data first (oldest), else memory coalesced up to
    /// `cap` bytes (the front piece split, without copying, when larger).
    fn next_batch(&mut self, cap: usize) -> Result<Option<Bytes>, PipeError> {
        if let Some(f) = self.file.as_ref().filter(|f| self.file_sent < f.len()) {
            let b = f.read_at(self.file_sent, cap).map_err(|e| {
                PipeError::new(
                    Side::TempFile,
                    FailKind::Error,
                    format!("reading temp file: {e}"),
                )
            })?;
            self.file_sent += b.len() as u64;
            return Ok(Some(b));
        }
        let Some(mut first) = self.memory.pop_front() else {
            return Ok(None);
        };
        if first.len() > cap {
            let rest = first.split_off(cap);
            self.memory.push_front(rest);
        }
        let batch = if self
            .memory
            .front()
            .is_none_or(|n| first.len() + n.len() > cap)
        {
            first
        } else {
            let mut joined = BytesMut::with_capacity(cap);
            joined.extend_from_slice(&first);
            while let Some(n) = self.memory.front() {
                if joined.len() + n.len() > cap {
                    break;
                }
                joined.extend_from_slice(n);
                self.memory.pop_front();
            }
            joined.freeze()
        };
        self.queued -= batch.len();
        Ok(Some(batch))
    }

    fn can_spill(&self, conf: &EventPipeConf) -> bool {
        let written = self.file.as_ref().map_or(0, |f| f.len());
        conf.max_temp_file_size > 0
            && self
                .memory
                .front()
                .is_some_and(|b| written + b.len() as u64 <= conf.max_temp_file_size)
    }

    /// nginx `ngx_event_pipe_write_chain_to_temp_file`: move the oldest memory
    /// pieces to the file, at most `temp_file_write_size` (at least one piece)
    /// and never past `max_temp_file_size`. Returns the bytes written.
    fn spill(&mut self, conf: &EventPipeConf) -> Result<u64, PipeError> {
        let file_err = |what: &str, e: std::io::Error| {
            PipeError::new(Side::TempFile, FailKind::Error, format!("{what}: {e}"))
        };
        if self.file.is_none() {
            let f = TempFile::create_in(&conf.temp_path).map_err(|e| {
                file_err(
                    &format!("creating a temp file in {}", conf.temp_path.display()),
                    e,
                )
            })?;
            log::warn!("an upstream response is buffered to a temporary file");
            self.file = Some(f);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let mut written = 0usize;
        while let Some(front) = self.memory.front() {
            let over_write_size = written > 0 && written + front.len() > conf.temp_file_write_size;
            let over_cap = file.len() + front.len() as u64 > conf.max_temp_file_size;
            if over_write_size || over_cap {
                break;
            }
            file.append(front)
                .map_err(|e| file_err("writing the temp file", e))?;
            written += front.len();
            self.queued -= front.len();
            self.memory.pop_front();
        }
        Ok(written as u64)
    }
}

/// `proxy_limit_rate`, as nginx computes it in `ngx_event_pipe_read_upstream`.
struct RateLimit {
    rate: u64,
    start: Instant,
}

impl RateLimit {
    /// How long to wait before the next read, having read `read` bytes so far.
    fn delay_before_read(&self, read: u64) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let allowed = self.rate * (self.start.elapsed().as_secs() + 1);
        (read >= allowed).then(|| Duration::from_millis((read - allowed) * 1000 / self.rate + 1))
    }

    /// After a read of `n` bytes: nginx waits `n * 1000 / rate` ms.
    fn delay_after_read(&self, n: u64) -> Option<Duration> {
        (self.rate > 0).then(|| Duration::from_millis(n * 1000 / self.rate))
    }
}

/// Poll a future once without a task to wake: `Some` if it is already done.
fn poll_now<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Await an optional future; never completes when there is none.
async fn maybe<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Run the pipe until the whole body reached the client or something failed.
/// `client` is usually a reborrow of the caller's session: it is dropped with
/// the pipe, and the caller has its session back.
pub async fn run<'a, U, C, F>(
    conf: &EventPipeConf,
    upstream: U,
    client: C,
    filter: &mut F,
) -> PipeOutcome
where
    U: UpstreamBody + 'a,
    C: DownstreamBody + 'a,
    F: BodyFilter + ?Sized,
{
    let mut p = EventPipe::new(conf, upstream, client, filter);
    loop {
        match p.write_downstream() {
            Flow::Again => continue,
            Flow::Stop => break,
            Flow::Go => {}
        }
        if p.client_gone && p.upstream_done {
            break;
        }
        if let Flow::Stop = p.read_upstream() {
            break;
        }
        if p.nothing_in_flight() {
            // Nothing in flight and nothing to start: the client took all and
            // the upstream is done, or nothing can move.
            if !(p.upstream_done && p.buf.is_empty()) {
                p.fail(PipeError::new(
                    Side::Client,
                    FailKind::Error,
                    "pipe stalled",
                ));
            }
            break;
        }
        p.arm_client_check();
        if let Flow::Stop = p.wait().await {
            break;
        }
    }
    p.finish().await
}

/// What the pipe does after a step.
enum Flow {
    /// Go on with the next step of this round.
    Go,
    /// Start the round again (a write finished at once).
    Again,
    /// Stop: done, or failed (the outcome says which).
    Stop,
}

/// The pipe's state: nginx's `ngx_event_pipe_t`, with the read and the write
/// in flight as futures that own their end and hand it back when done.
struct EventPipe<'a, 'f, U, C, F: ?Sized> {
    conf: &'f EventPipeConf,
    filter: &'f mut F,
    buf: Buffered,
    rate: RateLimit,
    out: PipeOutcome,
    /// The upstream end, when no read is in flight.
    up: Option<U>,
    /// The client end, when no write is in flight.
    client: Option<C>,
    reading: Option<Boxed<'a, Read<U>>>,
    writing: Option<Boxed<'a, Written<C>>>,
    /// `limit_rate`'s wait before the next read.
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Armed only while the pipe waits with nothing in flight to the client.
    client_check: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The upstream's body is complete (or failed): no more reads.
    upstream_done: bool,
    /// Since when the write in flight has waited on the client.
    blocked_since: Option<Instant>,
    /// Wakes the pipe when that wait becomes long enough to spill.
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last write did not complete at once: keep batches to `busy`.
    client_slow: bool,
    /// The client went away but `ignore_client_abort` keeps reading.
    client_gone: bool,
}

impl<'a, 'f, U, C, F> EventPipe<'a, 'f, U, C, F>
where
    U: UpstreamBody + 'a,
    C: DownstreamBody + 'a,
    F: BodyFilter + ?Sized,
{
    fn new(conf: &'f EventPipeConf, upstream: U, client: C, filter: &'f mut F) -> Self {
        EventPipe {
            conf,
            filter,
            buf: Buffered {
                memory: VecDeque::new(),
                queued: 0,
                file: None,
                file_sent: 0,
            },
            rate: RateLimit {
                rate: conf.limit_rate,
                start: Instant::now(),
            },
            out: PipeOutcome::default(),
            up: Some(upstream),
            client: Some(client),
            reading: None,
            writing: None,
            delay: None,
            client_check: None,
            upstream_done: false,
            blocked_since: None,
            grace: None,
            client_slow: false,
            client_gone: false,
        }
    }

    fn fail(&mut self, e: PipeError) {
        self.out.error = Some(e);
    }

    /// nginx `ngx_event_pipe_write_to_downstream`: hand the client the next
    /// batch when nothing is in flight to it (file first, then memory).
    fn write_downstream(&mut self) -> Flow {
        if self.writing.is_some() || self.client_gone {
            return Flow::Go;
        }
        let cap = if self.client_slow {
            self.conf.busy
        } else {
            self.conf.busy.max(FAST_BATCH)
        };
        let batch = match self.buf.next_batch(cap) {
            Err(e) => {
                self.fail(e);
                return Flow::Stop;
            }
            Ok(None) if self.upstream_done => return Flow::Stop,
            Ok(None) => return Flow::Go,
            Ok(Some(batch)) => batch,
        };
        let Some(mut c) = self.client.take() else {
            return Flow::Stop;
        };
        let len = batch.len();
        let mut fut: Boxed<'a, Written<C>> = Box::pin(async move {
            let result = c.write(batch).await;
            Written {
                client: c,
                result,
                len,
            }
        });
        match poll_now(&mut fut) {
            Some(done) => {
                self.blocked_since = None;
                self.client_slow = false;
                if self.written(done) {
                    Flow::Again
                } else {
                    Flow::Stop
                }
            }
            None => {
                self.blocked_since = Some(Instant::now());
                self.client_slow = true;
                self.writing = Some(fut);
                Flow::Go
            }
        }
    }

    /// A write finished: account it; on a client error stop, or (with
    /// `ignore_client_abort`) go on reading the upstream. `false`: stop.
    fn written(&mut self, done: Written<C>) -> bool {
        if finish_write(done, &mut self.client, &mut self.out) {
            return true;
        }
        self.client_gone = on_client_error(self.conf, &mut self.up, &mut self.reading);
        self.client_gone
    }

    /// nginx `ngx_event_pipe_read_upstream`: read while there is memory;
    /// when memory is full and the client is behind, spill the oldest memory
    /// to the temp file first.
    fn read_upstream(&mut self) -> Flow {
        if self.reading.is_some() || self.upstream_done || self.delay.is_some() {
            return Flow::Go;
        }
        if self.client_gone {
            self.buf.memory.clear();
            self.buf.queued = 0;
        }
        if let Err(e) = self.spill_if_behind() {
            self.fail(e);
            return Flow::Stop;
        }
        if self.buf.queued < self.conf.memory {
            if let Some(d) = self.rate.delay_before_read(self.out.received) {
                self.delay = Some(Box::pin(tokio::time::sleep(d)));
            } else if let Some(mut u) = self.up.take() {
                self.reading = Some(Box::pin(async move {
                    let r = u.read().await;
                    (u, r)
                }));
            }
        }
        Flow::Go
    }

    /// With memory full: spill in `temp_file_write_size` steps until a read
    /// fits again, once the client has been blocked for [`SPILL_GRACE`]
    /// (before that, arm a timer for the moment it will have been).
    fn spill_if_behind(&mut self) -> Result<(), PipeError> {
        let full = self.buf.queued >= self.conf.memory;
        let behind = self
            .blocked_since
            .is_some_and(|t| t.elapsed() >= SPILL_GRACE);
        if full && !behind && self.grace.is_none() {
            if let Some(t) = self.blocked_since {
                self.grace = Some(Box::pin(tokio::time::sleep_until((t + SPILL_GRACE).into())));
            }
        }
        while behind && self.buf.queued >= self.conf.memory && self.buf.can_spill(self.conf) {
            self.out.spilled += self.buf.spill(self.conf)?;
        }
        Ok(())
    }

    fn nothing_in_flight(&self) -> bool {
        self.reading.is_none()
            && self.writing.is_none()
            && self.delay.is_none()
            && self.grace.is_none()
    }

    /// nginx's broken-connection check, while nothing is written to the
    /// client (a write would notice by itself).
    fn arm_client_check(&mut self) {
        if self.writing.is_some() || self.client_gone || self.conf.ignore_client_abort {
            self.client_check = None;
        } else if self.client_check.is_none() {
            self.client_check = Some(Box::pin(crate::pipe::client_check()));
        }
    }

    /// Wait for the first of: the write, the read, the rate limit's delay,
    /// the spill grace, the client check.
    async fn wait(&mut self) -> Flow {
        tokio::select! {
            done = maybe(&mut self.writing) => {
                self.writing = None;
                self.blocked_since = None;
                self.grace = None;
                if !self.written(done) {
                    return Flow::Stop;
                }
            }
            (u, r) = maybe(&mut self.reading) => {
                self.reading = None;
                return self.read_done(u, r).await;
            }
            () = maybe(&mut self.delay) => self.delay = None,
            () = maybe(&mut self.grace) => self.grace = None,
            () = maybe(&mut self.client_check) => {
                // A client that went away while the upstream is slow ends
                // the upstream request.
                self.client_check = None;
                if self.client.as_mut().is_some_and(|c| c.is_gone()) {
                    self.fail(PipeError::new(Side::Client, FailKind::Error, "client closed the connection"));
                    return Flow::Stop;
                }
            }
        }
        Flow::Go
    }

    /// A read finished: the piece through the filter into memory; at the
    /// end of the body the upstream is released at once (the client may
    /// take long).
    async fn read_done(&mut self, mut u: U, r: Result<Option<Bytes>, PipeError>) -> Flow {
        let piece = match r {
            Ok(piece) => piece,
            Err(e) => {
                // nginx: the client gets what was read, then a truncated
                // response.
                drop(u);
                self.upstream_done = true;
                self.fail(e);
                return Flow::Go;
            }
        };
        let n = piece.as_ref().map_or(0, |b| b.len() as u64);
        self.out.received += n;
        let end = piece.is_none() || u.is_done();
        let discard = self.client_gone;
        if let Err(e) = filter_into(self.filter, piece, false, &mut self.buf, discard) {
            self.fail(e);
            return Flow::Stop;
        }
        if !end {
            self.up = Some(u);
            if let Some(d) = self.rate.delay_after_read(n).filter(|d| !d.is_zero()) {
                self.delay = Some(Box::pin(tokio::time::sleep(d)));
            }
            return Flow::Go;
        }
        self.upstream_done = true;
        self.out.upstream_complete = true;
        u.release().await;
        if let Err(e) = filter_into(self.filter, None, true, &mut self.buf, discard) {
            self.fail(e);
            return Flow::Stop;
        }
        Flow::Go
    }

    /// The end: whatever is still in flight is dropped (only after an
    /// error, when the caller closes the client connection: an unfinished
    /// upstream read closes that connection; the temp file goes with the
    /// buffers); after a clean run the client's body is ended.
    async fn finish(mut self) -> PipeOutcome {
        self.reading = None;
        self.writing = None;
        if self.client_gone && self.out.error.is_none() {
            self.fail(PipeError::new(
                Side::Client,
                FailKind::Error,
                "client went away",
            ));
        }
        if self.out.error.is_none() {
            if let Some(c) = self.client.as_mut() {
                self.out.error = c.end(Bytes::new()).await.err();
            }
        }
        self.out
    }
}

/// A finished client write: the client end back, and what it carried.
struct Written<C> {
    client: C,
    result: Result<(), PipeError>,
    len: usize,
}

/// Account a finished write; `false` when it failed.
fn finish_write<C>(w: Written<C>, client: &mut Option<C>, out: &mut PipeOutcome) -> bool {
    *client = Some(w.client);
    match w.result {
        Ok(()) => {
            out.sent += w.len as u64;
            true
        }
        Err(e) => {
            out.error = Some(e);
            false
        }
    }
}

/// The client failed. With `ignore_client_abort`, keep reading the upstream to
/// its end (returns true); otherwise stop everything (returns false).
fn on_client_error<U, R>(
    conf: &EventPipeConf,
    up: &mut Option<U>,
    reading: &mut Option<R>,
) -> bool {
    if conf.ignore_client_abort {
        return true;
    }
    *reading = None;
    *up = None;
    false
}

fn filter_into<F: BodyFilter + ?Sized>(
    filter: &mut F,
    mut piece: Option<Bytes>,
    end: bool,
    buf: &mut Buffered,
    discard: bool,
) -> Result<(), PipeError> {
    if piece.is_none() && !end {
        return Ok(());
    }
    filter
        .filter(&mut piece, end)
        .map_err(|m| PipeError::new(Side::Client, FailKind::Error, m))?;
    if let Some(b) = piece {
        if !discard {
            buf.push(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::NoFilter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Upstream end over an in-memory stream with backpressure.
    struct Up {
        rd: DuplexStream,
        /// The most each read returns, in turn (Pingora's reads vary up to
        /// 64 KiB).
        read_sizes: Vec<usize>,
        reads: usize,
        total: usize,
        read: usize,
        released: Arc<AtomicBool>,
    }

    impl UpstreamBody for Up {
        async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
            let size = self.read_sizes[self.reads % self.read_sizes.len()];
            self.reads += 1;
            let mut b = vec![0u8; size];
            let n = self
                .rd
                .read(&mut b)
                .await
                .map_err(|e| PipeError::new(Side::Upstream, FailKind::Error, e.to_string()))?;
            if n == 0 {
                return if self.read == self.total {
                    Ok(None)
                } else {
                    Err(PipeError::new(
                        Side::Upstream,
                        FailKind::Error,
                        "closed early",
                    ))
                };
            }
            self.read += n;
            b.truncate(n);
            Ok(Some(b.into()))
        }
        fn is_done(&mut self) -> bool {
            self.read == self.total
        }
        async fn release(self) {
            self.released.store(true, Ordering::SeqCst);
        }
    }

    struct Client(DuplexStream);

    impl DownstreamBody for Client {
        async fn write(&mut self, data: Bytes) -> Result<(), PipeError> {
            self.0
                .write_all(&data)
                .await
                .map_err(|e| PipeError::new(Side::Client, FailKind::Error, e.to_string()))
        }
        async fn end(&mut self, last: Bytes) -> Result<(), PipeError> {
            self.write(last).await
        }
    }

    fn conf(dir: &str, max_temp: u64) -> EventPipeConf {
        EventPipeConf {
            memory: 8 * 4096,
            busy: 8192,
            max_temp_file_size: max_temp,
            temp_file_write_size: 8192,
            temp_path: std::env::temp_dir().join(format!("ferry-ep-{dir}-{}", std::process::id())),
            limit_rate: 0,
            ignore_client_abort: false,
        }
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 253) as u8).collect()
    }

    struct Setup {
        producer: tokio::task::JoinHandle<()>,
        pipe: tokio::task::JoinHandle<PipeOutcome>,
        client_rd: DuplexStream,
        released: Arc<AtomicBool>,
    }

    /// An upstream sending `data` in 16 KiB reads, a client whose socket
    /// holds 16 KiB.
    fn setup(data: Vec<u8>, conf: EventPipeConf) -> Setup {
        setup_reads(data, conf, vec![16 * 1024])
    }

    fn setup_reads(data: Vec<u8>, conf: EventPipeConf, read_sizes: Vec<usize>) -> Setup {
        let (mut up_wr, up_rd) = tokio::io::duplex(64 * 1024);
        let (client_wr, client_rd) = tokio::io::duplex(16 * 1024);
        let released = Arc::new(AtomicBool::new(false));
        let up = Up {
            rd: up_rd,
            read_sizes,
            reads: 0,
            total: data.len(),
            read: 0,
            released: released.clone(),
        };
        let producer = tokio::spawn(async move {
            up_wr.write_all(&data).await.unwrap();
        });
        let pipe =
            tokio::spawn(async move { run(&conf, up, Client(client_wr), &mut NoFilter).await });
        Setup {
            producer,
            pipe,
            client_rd,
            released,
        }
    }

    async fn read_all(rd: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        rd.read_exact(&mut out).await.unwrap();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn slow_client_spills_and_upstream_finishes_first() {
        let data = body(1 << 20);
        let mut s = setup(data.clone(), conf("spill", 1 << 30));
        // The client reads nothing; the upstream still sends it all.
        s.producer.await.unwrap();
        while !s.released.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let got = read_all(&mut s.client_rd, data.len()).await;
        let out = s.pipe.await.unwrap();
        assert!(out.ok(), "{:?}", out.error);
        assert!(out.spilled > 900_000, "spilled {}", out.spilled);
        assert_eq!(out.sent, data.len() as u64);
        assert!(got == data, "bytes differ");
        gone("spill");
    }

    /// The test's temp directory removed (its files were unlinked already).
    fn gone(dir: &str) {
        let _ = std::fs::remove_dir(
            std::env::temp_dir().join(format!("ferry-ep-{dir}-{}", std::process::id())),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reads_larger_than_memory_keep_spilling() {
        // Reads of 20 KiB then 64 KiB against 32 KiB of memory and 8 KiB
        // spill writes: one spill step frees the small piece only; the pipe
        // must spill as often as it takes for the next read to fit.
        let data = body(1 << 20);
        let mut s = setup_reads(
            data.clone(),
            conf("big", 1 << 30),
            vec![20 * 1024, 64 * 1024],
        );
        s.producer.await.unwrap();
        while !s.released.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let got = read_all(&mut s.client_rd, data.len()).await;
        let out = s.pipe.await.unwrap();
        assert!(out.ok() && out.spilled > 0);
        assert!(got == data);
        gone("big");
    }

    #[tokio::test(start_paused = true)]
    async fn no_spill_means_backpressure() {
        let data = body(1 << 20);
        let mut s = setup(data.clone(), conf("nospill", 0));
        // With the clock paused, this timeout fires only once every task is
        // stuck: the upstream cannot finish while the client reads nothing.
        let stuck = tokio::time::timeout(Duration::from_secs(5), &mut s.producer).await;
        assert!(
            stuck.is_err(),
            "upstream finished without the client reading"
        );
        assert!(!s.released.load(Ordering::SeqCst));
        let got = read_all(&mut s.client_rd, data.len()).await;
        let out = s.pipe.await.unwrap();
        assert_eq!(out.spilled, 0);
        assert!(out.upstream_complete);
        assert!(got == data);
    }

    #[tokio::test(start_paused = true)]
    async fn small_temp_cap_stalls_after_the_cap_and_keeps_order() {
        let data = body(1 << 20);
        let mut s = setup(data.clone(), conf("cap", 4096));
        let stuck = tokio::time::timeout(Duration::from_secs(5), &mut s.producer).await;
        assert!(stuck.is_err());
        let got = read_all(&mut s.client_rd, data.len()).await;
        let out = s.pipe.await.unwrap();
        assert!(out.spilled <= 4096, "spilled {}", out.spilled);
        assert!(got == data);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_client_never_spills() {
        let data = body(1 << 20);
        let mut s = setup(data.clone(), conf("fast", 1 << 30));
        let reader = tokio::spawn(async move { read_all(&mut s.client_rd, 1 << 20).await });
        let got = reader.await.unwrap();
        let out = s.pipe.await.unwrap();
        assert!(out.ok());
        assert_eq!(
            out.spilled, 0,
            "a client that keeps up is never spilled for"
        );
        assert!(got == data);
    }

    #[tokio::test(start_paused = true)]
    async fn client_abort_stops_reading_and_leaves_no_file() {
        let c = conf("abort", 1 << 30);
        let dir = c.temp_path.clone();
        let data = body(1 << 20);
        let s = setup(data, c);
        drop(s.client_rd);
        let out = s.pipe.await.unwrap();
        assert_eq!(out.error.as_ref().map(|e| e.side), Some(Side::Client));
        assert!(!out.upstream_complete);
        if dir.exists() {
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        }
    }

    #[test]
    fn limit_rate_is_nginx_arithmetic() {
        let r = RateLimit {
            rate: 1000,
            start: Instant::now(),
        };
        assert_eq!(r.delay_before_read(0), None);
        assert_eq!(r.delay_before_read(1500), Some(Duration::from_millis(501)));
        assert_eq!(r.delay_after_read(250), Some(Duration::from_millis(250)));
    }
}
