//! The client's request-header deadline, and the requests Pingora refuses
//! before Ferry sees them.
//!
//! nginx counterpart: `client_header_timeout` (a client has that long from
//! the first byte of a request to the end of its header, however it trickles
//! the bytes in) and the `client sent invalid header` / `client timed out`
//! lines of its error log. Pingora's own limit is per read, so a slowloris
//! client sending a byte every few seconds would hold a connection forever.
//!
//! Pingora reads the header; Ferry cannot sit inside that read. So the clock
//! sits under it, in the connection's byte stream: [`ClockedStream`] wraps
//! every accepted HTTP/1 connection. The first byte read between requests
//! starts the clock; Ferry stops it when the header has arrived (its request
//! hook runs: [`header_done`]) and rearms it for the next request when the
//! response is finished ([`request_done`]). A read still waiting when time
//! is up fails with `TimedOut`, and Pingora closes the connection. Bytes the
//! server writes while the clock runs are Pingora's own error answer to a
//! header it could not read (a malformed one, or one over its 1 MiB limit):
//! the stream counts and logs that once, since Pingora logs it only at debug
//! level.

use crate::client::header_bound::{HeaderBound, URI_TOO_LONG};
use crate::client::stream::ClientStream;
use crate::metrics::metrics;
use async_trait::async_trait;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pingora's header size limit (`MAX_HEADER_SIZE` in its HTTP/1 code).
const PINGORA_MAX_HEADER: usize = 1_048_575;

/// Between requests: the next byte read starts the clock.
const IDLE: u8 = 0;
/// Reading a header: the clock runs.
const HEADER: u8 = 1;
/// The header was read (Ferry has the request): no clock.
const REQUEST: u8 = 2;

/// An accepted connection with the header clock under it.
#[derive(Debug)]
pub struct ClockedStream {
    inner: Transport,
    state: AtomicU8,
    /// `client_header_timeout`, in milliseconds (every kept-alive
    /// connection holds this struct: it is kept to 224 bytes).
    limit_ms: u32,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Header bytes read since the clock started.
    header_bytes: u32,
    /// Pingora's refusal on this connection was already counted.
    refusal_seen: bool,
    /// The client a trusted PROXY protocol header announced (boxed: most
    /// connections have none, and every kept-alive one holds this).
    announced: Option<Box<SocketAddr>>,
    /// Each write is flushed at once: an unbuffered response's pieces
    /// leave as they come, none waiting below (in TLS or the client
    /// stream's buffer) for more.
    flush_each: AtomicBool,
    /// The header's size bound, counted as bytes arrive.
    bound: HeaderBound,
    /// The bound was passed: the status to refuse the request with.
    too_large: Option<u16>,
}

/// What a request header may take: time, and bytes.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    /// `client_header_timeout`.
    pub timeout: Duration,
    /// `large_client_header_buffers.size`: the longest line.
    pub line: usize,
    /// The most in all.
    pub total: usize,
}

/// The connection under the clock.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP: Ferry's client stream, held in place (no box of its own).
    Plain(ClientStream),
    /// TLS over the client stream: Pingora's acceptor's stream.
    Tls(Stream),
}

impl Transport {
    fn io(&self) -> &dyn IO {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &**s,
        }
    }

    fn io_mut(&mut self) -> &mut dyn IO {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &mut **s,
        }
    }
}

impl ClockedStream {
    pub(crate) fn new(
        inner: Transport,
        limits: HeaderLimits,
        announced: Option<SocketAddr>,
    ) -> ClockedStream {
        // HTTP/2 multiplexes requests over the connection: Pingora's h2
        // code owns its timeouts.
        let h2 = matches!(inner.io().selected_alpn_proto(), Some(ALPN::H2));
        ClockedStream {
            inner,
            state: AtomicU8::new(if h2 { REQUEST } else { IDLE }),
            limit_ms: u32::try_from(limits.timeout.as_millis()).unwrap_or(u32::MAX),
            deadline: Instant::now(),
            timer: None,
            header_bytes: 0,
            refusal_seen: h2,
            announced: announced.map(Box::new),
            flush_each: AtomicBool::new(false),
            bound: HeaderBound::new(limits.line, limits.total),
            too_large: None,
        }
    }

    /// Between two requests: what only a request needs goes (the clock's
    /// timer; the write buffer and digest of a plain stream), and the
    /// socket to wait on for the next request comes back. `None` over TLS,
    /// whose socket's readiness is not a request's: its next read waits
    /// instead.
    pub(crate) fn idle(&mut self) -> Option<&tokio::net::TcpStream> {
        self.timer = None;
        match &mut self.inner {
            Transport::Plain(s) => Some(s.idle()),
            Transport::Tls(_) => None,
        }
    }

    /// The client stream's write buffer, for a response head to be made
    /// in: on a plain connection whose request header was read, with no
    /// flush asked per write. `None`: the head is written as bytes.
    pub(crate) fn kept_buffer(&mut self) -> Option<&mut Vec<u8>> {
        let keeps = self.state.load(Ordering::Relaxed) == REQUEST
            && !self.flush_each.load(Ordering::Relaxed);
        match &mut self.inner {
            Transport::Plain(s) if keeps => Some(s.kept_buffer()),
            _ => None,
        }
    }

    fn timed_out(&mut self) -> io::Error {
        self.state.store(REQUEST, Ordering::Relaxed);
        metrics()
            .bad_requests
            .with_label_values(&["header_timeout"])
            .inc();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "client_header_timeout: no complete request header within {:?}",
                Duration::from_millis(self.limit_ms.into())
            ),
        )
    }

    /// Bytes written while the clock runs (or before any request): Pingora
    /// answering a header it could not read.
    fn note_refusal(&mut self, bytes: &[u8]) {
        if self.refusal_seen || self.state.load(Ordering::Relaxed) == REQUEST {
            return;
        }
        self.refusal_seen = true;
        let status = bytes
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("?");
        let reason = if self.too_large == Some(URI_TOO_LONG) {
            "uri_too_long"
        } else if self.too_large.is_some() || self.header_bytes as usize > PINGORA_MAX_HEADER {
            "header_too_large"
        } else {
            "malformed"
        };
        let peer = self
            .inner
            .io()
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        crate::client::refusal::refused(&peer, status, reason);
    }
}

/// The request header passed its size bound, under Pingora's session
/// (its read failed): the status to refuse it with (414 or 431).
pub(crate) fn too_large_under(s: &ServerSession) -> Option<u16> {
    let clock = s.stream()?.as_any().downcast_ref::<ClockedStream>()?;
    clock.too_large
}

impl ClockedStream {
    /// The request header passed its size bound: the status to refuse it
    /// with (414 or 431).
    pub(crate) fn too_large(&self) -> Option<u16> {
        self.too_large
    }

    /// The connection's peer.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Transport::Plain(s) => Some(s.peer()),
            Transport::Tls(s) => s.get_socket_digest()?.peer_addr()?.as_inet().copied(),
        }
    }

    /// The connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.inner, Transport::Tls(_))
    }
}

/// The client's own connection under `clock`, when it is HTTP/1 over plain
/// TCP: Ferry's stream under the header clock.
pub(crate) fn plain_tcp(clock: Option<&ClockedStream>) -> Option<&ClientStream> {
    match &clock?.inner {
        Transport::Plain(stream) => Some(stream),
        Transport::Tls(_) => None,
    }
}

/// Whether the request line as the client sent it was spaced as HTTP says
/// (one space between its three parts); `None` when the clock did not see
/// the whole line.
pub(crate) fn request_line_spaced(clock: Option<&ClockedStream>) -> Option<bool> {
    clock.and_then(|c| c.bound.request_line_spaced())
}

/// The client a trusted PROXY protocol header announced on this connection.
pub(crate) fn announced_client(clock: Option<&ClockedStream>) -> Option<SocketAddr> {
    clock.and_then(|c| c.announced.as_deref().copied())
}

/// The request header has arrived: stop the clock.
pub fn header_done(clock: Option<&ClockedStream>) {
    if let Some(c) = clock {
        c.state.store(REQUEST, Ordering::Relaxed);
    }
}

/// The response is finished: the next byte read starts the next request.
pub fn request_done(clock: Option<&ClockedStream>) {
    if let Some(c) = clock {
        c.state.store(IDLE, Ordering::Relaxed);
        c.flush_each.store(false, Ordering::Relaxed);
    }
}

/// From now on to the request's end, each write to the client is flushed
/// at once (nginx's unbuffered proxying sends what it has).
pub(crate) fn flush_each_write(clock: Option<&ClockedStream>) {
    if let Some(c) = clock {
        c.flush_each.store(true, Ordering::Relaxed);
    }
}

impl ClockedStream {
    /// After a write: a flush, when each write is flushed. Its error, if
    /// any, comes back on the next write or flush; a flush that must wait
    /// goes on then.
    fn flush_if_asked(&mut self, cx: &mut Context<'_>) {
        if self.flush_each.load(Ordering::Relaxed) {
            let _ = Pin::new(self.inner.io_mut()).poll_flush(cx);
        }
    }
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(me.inner.io_mut()).poll_read(cx, buf);
        let state = me.state.load(Ordering::Relaxed);
        match polled {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 && state == IDLE {
                    me.state.store(HEADER, Ordering::Relaxed);
                    me.deadline = Instant::now() + Duration::from_millis(me.limit_ms.into());
                    me.timer = None;
                    me.header_bytes = u32::try_from(n).unwrap_or(u32::MAX);
                    me.bound.reset();
                } else if n > 0 && state == HEADER {
                    me.header_bytes = me
                        .header_bytes
                        .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                    if Instant::now() >= me.deadline {
                        return Poll::Ready(Err(me.timed_out()));
                    }
                }
                if n > 0 && state != REQUEST && me.too_large.is_none() {
                    if let Err(status) = me.bound.feed(&buf.filled()[before..]) {
                        me.too_large = Some(status);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("request header too large ({status})"),
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if state == HEADER => {
                let deadline = me.deadline;
                let timer = me
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(me.timed_out()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.note_refusal(buf);
        let n = ready!(Pin::new(self.inner.io_mut()).poll_write(cx, buf))?;
        self.flush_if_asked(cx);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.note_refusal(first);
        }
        let n = ready!(Pin::new(self.inner.io_mut()).poll_write_vectored(cx, bufs))?;
        self.flush_if_asked(cx);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.io().is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.io_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.io_mut()).poll_shutdown(cx)
    }
}

// What Pingora asks of a connection, passed through.

#[async_trait]
impl Shutdown for ClockedStream {
    async fn shutdown(&mut self) {
        self.inner.io_mut().shutdown().await
    }
}

impl UniqueID for ClockedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.io().id()
    }
}

impl Ssl for ClockedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.io().get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.io().get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.io().selected_alpn_proto()
    }
}

impl GetTimingDigest for ClockedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.io().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.io().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.io().get_write_pending_time()
    }
}

impl GetProxyDigest for ClockedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.io().get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.io_mut().set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClockedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.io().get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.io_mut().set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClockedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.io_mut().try_peek(buf).await
    }
}
