//! The two ends of a response body pipe, and what a pipe reports.
//!
//! The proxy implements [`UpstreamBody`] over Pingora's upstream HTTP session
//! and [`DownstreamBody`] over its downstream session; the pipes in
//! [`crate::unbuffered`] and [`crate::event_pipe`] move the bytes.

use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::task::Poll;

/// Which end failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Upstream,
    Client,
    TempFile,
}

/// Timed out, or any other failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    Timeout,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeError {
    pub side: Side,
    pub kind: FailKind,
    pub message: String,
}

impl PipeError {
    pub fn new(side: Side, kind: FailKind, message: impl Into<String>) -> PipeError {
        PipeError {
            side,
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:?}: {}", self.side, self.kind, self.message)
    }
}

/// The upstream's response body.
pub trait UpstreamBody: Send {
    /// The next piece of body; `Ok(None)` once it is complete.
    fn read(&mut self) -> impl Future<Output = Result<Option<Bytes>, PipeError>> + Send;
    /// Whether the body is complete (nothing more to read).
    fn is_done(&mut self) -> bool;
    /// The body is complete: give the connection back (to the pool if it can
    /// be reused). Called at most once, as soon as the last byte was read.
    fn release(self) -> impl Future<Output = ()> + Send;
}

/// The client's side of the response body.
pub trait DownstreamBody: Send {
    /// Write one piece; waits while the client is not taking data.
    fn write(&mut self, data: Bytes) -> impl Future<Output = Result<(), PipeError>> + Send;
    /// Write the body's last bytes (maybe none) and end the body, in one
    /// go: an HTTP/2 client gets one DATA frame with END_STREAM rather than
    /// the data and then an empty frame.
    fn end(&mut self, last: Bytes) -> impl Future<Output = Result<(), PipeError>> + Send;
    /// Whether the client closed its connection (looked at without reading
    /// anything, as nginx's `recv(MSG_PEEK)` check). The pipes ask while they
    /// wait on the upstream with nothing in flight to the client.
    fn is_gone(&mut self) -> bool {
        false
    }
}

/// How often the pipes look for a client that went away while they wait on
/// the upstream.
pub const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Wait one `CLIENT_CHECK`. On Ferry's coarse timer rather than tokio's:
/// arming a tokio timer from a worker wakes the runtime's driver through its
/// eventfd (a `write` per response on the 1 KB benchmark path); this check
/// is almost always dropped before it fires, and arming it is a slot.
pub fn client_check() -> impl std::future::Future<Output = ()> {
    ferry_timer::sleep(CLIENT_CHECK)
}

/// Read the next piece from the upstream, looking in on the client while
/// the read waits: `None` when the client went away. A read that is ready at
/// once (the bytes came with the header, or sit in the socket) arms no
/// timer.
pub async fn read_watching<U: UpstreamBody, C: DownstreamBody>(
    upstream: &mut U,
    client: &mut C,
) -> Option<Result<Option<Bytes>, PipeError>> {
    let read = upstream.read();
    tokio::pin!(read);
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return Some(r);
    }
    let mut check = Box::pin(client_check());
    loop {
        // The read first: its end is what wakes the task nearly always.
        tokio::select! {
            biased;
            r = &mut read => return Some(r),
            () = &mut check => {
                if client.is_gone() {
                    return None;
                }
                check = Box::pin(client_check());
            }
        }
    }
}

/// The response body filter (nginx output/body filters, Ferry's
/// `response_body_filter`): sees every piece, may change or hold it;
/// `end` is set once, after the last piece, with `None`.
pub trait BodyFilter: Send {
    fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), String>;
}

/// A filter that passes everything through.
pub struct NoFilter;

impl BodyFilter for NoFilter {
    fn filter(&mut self, _: &mut Option<Bytes>, _: bool) -> Result<(), String> {
        Ok(())
    }
}

/// What happened in a pipe, for logs and metrics. A pipe that returns
/// without an error has ended the client's body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeOutcome {
    /// Body bytes read from the upstream.
    pub received: u64,
    /// Body bytes written to the client.
    pub sent: u64,
    /// The upstream body was read to its end (and released).
    pub upstream_complete: bool,
    /// Bytes written to the temp file.
    pub spilled: u64,
    /// Why the pipe stopped early; the client's response is then truncated.
    pub error: Option<PipeError>,
}

impl PipeOutcome {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}
