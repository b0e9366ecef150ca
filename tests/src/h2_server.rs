//! A raw HTTP/2 test server (nginx's counterpart: an upstream server behind
//! `proxy_http_version 2`) on `h2::server`, cleartext with prior knowledge
//! (h2c) or TLS with ALPN `h2`. A handler picks, per stream, what to do:
//! answer (body, trailers, after a delay), reset the stream before any
//! response byte, or send GOAWAY. It counts connections and streams, so a
//! test can see several streams share one connection. For a GOAWAY that
//! leaves an in-flight stream unprocessed, see [`H2Server::goaway_after`].

use crate::serve::{accept_loop, BoxIo};
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A request as the server saw it, body and trailers read (for a stream
/// the server reset, the body is empty: it was not read).
#[derive(Debug, Clone)]
pub struct H2Seen {
    /// Which connection it came on (0 = the first accepted).
    pub conn: usize,
    /// Its HTTP/2 stream id.
    pub stream_id: u32,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct H2Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Sent as a trailers HEADERS frame after the body when not empty.
    pub trailers: Vec<(String, String)>,
    /// Wait this long before answering (ends early if the stream is reset).
    pub delay: Option<Duration>,
}

impl H2Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Bytes>) -> H2Reply {
        H2Reply::status(200, body)
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<Bytes>) -> H2Reply {
        H2Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            trailers: Vec::new(),
            delay: None,
        }
    }

    /// Add a response header.
    pub fn header(mut self, name: &str, value: &str) -> H2Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Add a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> H2Reply {
        self.trailers.push((name.into(), value.into()));
        self
    }

    /// Answer only after `delay`.
    pub fn delay(mut self, delay: Duration) -> H2Reply {
        self.delay = Some(delay);
        self
    }
}

/// What the server does with one stream.
#[derive(Debug, Clone)]
pub enum H2Act {
    /// Answer it.
    Respond(H2Reply),
    /// RST_STREAM with this code (e.g. `Reason::REFUSED_STREAM`,
    /// `Reason::INTERNAL_ERROR`) before any response byte.
    Reset(Reason),
    /// GOAWAY with this code and last_stream_id = the highest stream
    /// received (this one, when it is the newest): the stream counts as
    /// processed; then close the connection without answering it.
    GoAwayClose(Reason),
    /// A graceful GOAWAY (no new streams on this connection), then answer
    /// this stream; the connection closes when its streams are done.
    GoAwayRespond(H2Reply),
}

/// Picks the act for a stream: `(index of the stream among all the
/// server's streams, its request head)`.
pub type H2Handler = Arc<dyn Fn(usize, &http::request::Parts) -> H2Act + Send + Sync>;

#[derive(Default)]
pub(crate) struct Counts {
    pub streams: AtomicUsize,
    pub seen: Mutex<Vec<H2Seen>>,
}

/// A running HTTP/2 server; stops (with its connections) when dropped.
pub struct H2Server {
    /// Where it listens (127.0.0.1, a port of its own).
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address with nothing listening (a port no test of this process is
/// given again): connecting is refused.
pub fn down_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::ferry::free_port()))
}

impl H2Server {
    /// An h2c server acting by `handler`.
    pub async fn start(handler: H2Handler) -> H2Server {
        H2Server::serve(None, handler).await
    }

    /// A TLS server (ALPN `h2`, certificate `cert`) acting by `handler`.
    pub async fn start_tls(cert: &crate::tls::SelfSigned, handler: H2Handler) -> H2Server {
        H2Server::serve(Some(cert.acceptor_alpn(b"h2")), handler).await
    }

    /// An h2c server acting by `handler` that allows each connection at
    /// most `max_streams` streams at a time (SETTINGS_MAX_CONCURRENT_STREAMS).
    /// Streams past the limit (a client that opened them before it had the
    /// server's SETTINGS) are refused with REFUSED_STREAM (RFC 9113, 5.1.2).
    pub async fn start_limited(max_streams: u32, handler: H2Handler) -> H2Server {
        H2Server::serve_with(None, Some(max_streams), handler).await
    }

    /// An h2c server answering every request 200 with `name` as the body.
    pub async fn named(name: &str) -> H2Server {
        let name = Bytes::from(name.to_string());
        H2Server::start(Arc::new(move |_, _| {
            H2Act::Respond(H2Reply::ok(name.clone()))
        }))
        .await
    }

    /// An h2c server (raw frames, not h2) that answers the first `answered`
    /// streams of each connection with an empty 200, and on the next one
    /// sends GOAWAY (NO_ERROR) with last_stream_id = the last answered
    /// stream (0 when none): that stream was not processed (RFC 9113, 6.8);
    /// then it closes the connection. `goaway_after(0)` refuses every
    /// connection's first stream.
    pub async fn goaway_after(answered: usize) -> H2Server {
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let accepting = accept_loop(None, move |io, _| {
            crate::h2_goaway::serve_conn(io, answered, shared.clone())
        })
        .await;
        H2Server::from_parts(accepting, counts)
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, handler: H2Handler) -> H2Server {
        H2Server::serve_with(tls, None, handler).await
    }

    async fn serve_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        max_streams: Option<u32>,
        handler: H2Handler,
    ) -> H2Server {
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let mut builder = h2::server::Builder::new();
        if let Some(max) = max_streams {
            builder.max_concurrent_streams(max);
        }
        let accepting = accept_loop(tls, move |io, index| {
            let conn = Conn {
                index,
                handler: handler.clone(),
                counts: shared.clone(),
            };
            conn.serve(builder.handshake(io))
        })
        .await;
        H2Server::from_parts(accepting, counts)
    }

    fn from_parts(accepting: crate::serve::Accepting, counts: Arc<Counts>) -> H2Server {
        H2Server {
            addr: accepting.addr,
            conns: accepting.conns,
            counts,
            task: accepting.task,
        }
    }

    /// TCP connections accepted.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Streams (requests) received, on all connections.
    pub fn streams(&self) -> usize {
        self.counts.streams.load(Ordering::SeqCst)
    }

    /// Every request seen, in the order the server acted on them (not
    /// kept by [`H2Server::goaway_after`]).
    pub fn seen(&self) -> Vec<H2Seen> {
        self.counts.seen.lock().expect("seen").clone()
    }

    /// The last request seen; panics when there was none.
    pub fn last(&self) -> H2Seen {
        self.seen().pop().expect("no request seen")
    }
}

/// What a stream asks of its connection; `done` says the connection did.
struct Shutdown {
    abrupt: Option<Reason>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// One connection being served: its index, the handler, the counts.
struct Conn {
    index: usize,
    handler: H2Handler,
    counts: Arc<Counts>,
}

impl Conn {
    async fn serve(self, handshake: h2::server::Handshake<BoxIo, Bytes>) {
        let Ok(mut connection) = handshake.await else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut streams = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                next = connection.accept() => {
                    let Some(Ok((req, respond))) = next else { break };
                    while streams.try_join_next().is_some() {}
                    streams.spawn(self.stream(tx.clone()).run(req, respond));
                }
                Some(shutdown) = rx.recv() => {
                    match shutdown.abrupt {
                        Some(reason) => connection.abrupt_shutdown(reason),
                        None => connection.graceful_shutdown(),
                    }
                    let _ = shutdown.done.send(());
                }
            }
        }
    }

    fn stream(&self, tx: mpsc::UnboundedSender<Shutdown>) -> Stream {
        Stream {
            conn: self.index,
            index: self.counts.streams.fetch_add(1, Ordering::SeqCst),
            handler: self.handler.clone(),
            counts: self.counts.clone(),
            tx,
        }
    }
}

/// One stream being served.
struct Stream {
    conn: usize,
    index: usize,
    handler: H2Handler,
    counts: Arc<Counts>,
    tx: mpsc::UnboundedSender<Shutdown>,
}

impl Stream {
    async fn run(self, req: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let (parts, mut body) = req.into_parts();
        let act = (self.handler)(self.index, &parts);
        let (body, trailers) = match act {
            H2Act::Reset(_) => (Bytes::new(), None),
            _ => read_body(&mut body).await,
        };
        let seen = H2Seen {
            conn: self.conn,
            stream_id: respond.stream_id().as_u32(),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
            headers: parts.headers,
            body,
            trailers,
        };
        self.counts.seen.lock().expect("seen").push(seen);
        match act {
            H2Act::Respond(reply) => answer(&mut respond, reply).await,
            H2Act::Reset(reason) => respond.send_reset(reason),
            H2Act::GoAwayClose(reason) => {
                self.shut_down(Some(reason)).await;
                let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            }
            H2Act::GoAwayRespond(reply) => {
                self.shut_down(None).await;
                answer(&mut respond, reply).await;
            }
        }
    }
}

impl Stream {
    /// Have the connection send GOAWAY (abrupt with a reason, else
    /// graceful), and wait until it has.
    async fn shut_down(&self, abrupt: Option<Reason>) {
        let (done, sent) = tokio::sync::oneshot::channel();
        if self.tx.send(Shutdown { abrupt, done }).is_ok() {
            let _ = sent.await;
        }
    }
}

/// The request body and trailers, as far as they come.
async fn read_body(body: &mut RecvStream) -> (Bytes, Option<HeaderMap>) {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return (out.freeze(), None);
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.ok().flatten();
    (out.freeze(), trailers)
}

/// Send `reply` (after its delay, unless the stream is reset meanwhile).
async fn answer(respond: &mut SendResponse<Bytes>, reply: H2Reply) {
    if let Some(delay) = reply.delay {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
        }
    }
    let mut head = http::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        head = head.header(k, v);
    }
    let Ok(head) = head.body(()) else { return };
    let (has_body, has_trailers) = (!reply.body.is_empty(), !reply.trailers.is_empty());
    let Ok(mut send) = respond.send_response(head, !has_body && !has_trailers) else {
        return;
    };
    if has_body && send.send_data(reply.body, !has_trailers).is_err() {
        return;
    }
    if has_trailers {
        let _ = send.send_trailers(header_map(&reply.trailers));
    }
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = http::HeaderName::from_bytes(k.as_bytes());
        if let (Ok(name), Ok(value)) = (name, http::HeaderValue::from_str(v)) {
            map.append(name, value);
        }
    }
    map
}
