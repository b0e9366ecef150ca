//! Ferry's HTTP server: each request on a client connection read with
//! Pingora's session (HTTP/1 or HTTP/2) and served by
//! [`crate::request::flow`], then the connection's next request.
//!
//! nginx counterpart: `ngx_http_wait_request_handler` and
//! `ngx_http_process_request_headers` (read the header, 400 for a bad one),
//! then `ngx_http_finalize_request` and `ngx_http_set_keepalive`.
//!
//! [`crate::listener`] accepts the connection (TLS is Pingora's);
//! Ferry loops over an HTTP/1 connection's keepalive requests itself, so
//! that a connection waiting for its next request holds only its socket,
//! and hands HTTP/2 connections to Pingora's codec, one request per stream.
//! Ferry does not go through Pingora's own proxy loop
//! (`pingora_proxy::HttpProxy`): Ferry answers every
//! request itself, so that loop's per-request state (its session, module
//! and cache contexts, a large boxed future) bought nothing and cost a
//! fifth of the CPU of a small request. Upgrade requests (WebSocket) are
//! served the same way: routed, filtered, tried and then tunnelled by
//! [`crate::request::flow`].

use crate::client::downstream::Downstream;
use crate::client::h1_session::{self, H1Session, Read};
use crate::client::header_clock::ClockedStream;
use crate::client::idle_wait::{IdleClients, NextByte};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::End;
use crate::request::{finalize, flow};
use crate::response::respond;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::{ReusableHttpStream, ServerSession};
use pingora_core::protocols::ALPN;
use pingora_core::protocols::{Peek, Ssl};
use pingora_core::server::ShutdownWatch;
use pingora_error::ErrorType;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// How long Ferry keeps reading requests on connections it already
/// accepted, after its listeners stopped (graceful stop or upgrade). A
/// client that reused a keepalive connection just as the stop began has its
/// request on the way; dropping the connection at once would fail it (seen
/// in `graceful_upgrade_under_steady_load_drops_nothing`).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

pub struct FerryHttp<P: ProxyHttp> {
    pub app: Arc<P>,
    pub live: Arc<crate::live::Live>,
    /// The listeners stopped: each connection's request now is its last.
    closing: AtomicBool,
    /// Wakes the header reads when the service stops (after [`SETTLE`]).
    stop: Notify,
    /// The connections waiting for their next request; it says whether
    /// the service stopped.
    idle: Arc<IdleClients>,
}

impl<P: ProxyHttp> FerryHttp<P> {
    pub fn new(app: Arc<P>, live: Arc<crate::live::Live>) -> Self {
        FerryHttp {
            app,
            live,
            closing: AtomicBool::new(false),
            stop: Notify::new(),
            idle: IdleClients::new(),
        }
    }

    /// Resolves once the service is stopping (after [`SETTLE`]).
    async fn stopped(&self) {
        let notified = self.stop.notified();
        if self.idle.stopped() {
            return;
        }
        notified.await
    }

    /// Read the next request header.
    async fn next_request_header(&self, session: &mut ServerSession) -> NextRequest {
        // A client may send its next requests before reading this one's
        // answer (RFC 9112 9.3.2): they are served in order, as nginx does,
        // not dropped with the connection.
        session.set_pipelining_enabled(true);
        let read = tokio::select! {
            biased;
            r = session.read_request() => r,
            _ = self.stopped() => return NextRequest::Done,
        };
        let header_read = matches!(read, Ok(true));
        let refusal = match read {
            Ok(true) if session.req_header().method == http::Method::CONNECT => 405,
            Ok(true) => return NextRequest::Read,
            Ok(false) => return NextRequest::Done,
            Err(e) => match crate::client::header_clock::too_large_under(session) {
                Some(status) => status,
                None if matches!(e.etype(), ErrorType::InvalidHTTPHeader) => 400,
                None => {
                    log::debug!("reading a request header: {e}");
                    return NextRequest::Done;
                }
            },
        };
        NextRequest::Refused {
            status: refusal,
            header_read,
        }
    }
}

/// What reading the next request header came to.
enum NextRequest {
    /// A request to serve.
    Read,
    /// The connection is done: the client closed it, or the service stops.
    Done,
    /// The request is refused (`status`): answer, then close the
    /// connection. `header_read`: Pingora read its header (`CONNECT`).
    Refused { status: u16, header_read: bool },
}

/// How long a closing connection may take to send what it still has, when
/// no route says (nginx's `send_timeout` default).
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The connection after a request: its stream and the bytes its client
/// sent ahead, what the next session starts with, and what the program
/// kept.
type Reusable = (Back, NextSession, Kept);

/// A connection back from a finished request, and the bytes of the next
/// request the client sent already (pipelining), boxed: the connection's
/// state keeps room for them while it waits.
type Back = (Box<ClockedStream>, Option<Box<BytesMut>>);

/// What a kept-alive connection's next session starts with: Pingora's
/// `HttpPersistentSettings` less what Ferry carries itself (the program's
/// kept context, the pipelining opt-in, the bytes read ahead). Small,
/// because every idle connection's task holds it.
#[derive(Clone, Copy)]
struct NextSession {
    /// The keepalive timeout, in seconds.
    keepalive: Option<u32>,
    reuses: Option<u32>,
}

impl NextSession {
    /// A connection's first request: Pingora's default of 60 s between
    /// requests, none once the service is stopping.
    fn first(closing: bool) -> NextSession {
        NextSession {
            keepalive: (!closing).then_some(60),
            reuses: None,
        }
    }

    /// Pingora's bound on each read of a head: the keepalive timeout, or
    /// its 60 s read timeout.
    fn read_limit(self) -> Option<u64> {
        match self.keepalive {
            Some(0) => None,
            Some(secs) => Some(u64::from(secs)),
            None => Some(60),
        }
    }

    fn of(session: &Downstream) -> NextSession {
        NextSession {
            keepalive: session
                .get_keepalive()
                .map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            reuses: session.get_keepalive_reuses_remaining(),
        }
    }

    /// As Pingora's `HttpPersistentSettings::apply_to_session`: one reuse
    /// fewer left, and the bytes a client sent ahead parsed first.
    fn apply(self, session: &mut ServerSession, ahead: Option<Box<BytesMut>>) {
        session.set_keepalive(self.keepalive.map(u64::from));
        session.set_keepalive_reuses_remaining(self.reuses.map(|r| r.saturating_sub(1)));
        if let Some(ahead) = ahead {
            session.set_pipelined_prefix(*ahead);
        }
    }
}

/// What a program keeps from one request for the next on the same
/// HTTP/1 connection (`persist_connection_context`).
type Kept = Option<Box<dyn std::any::Any + Send + Sync>>;

impl<P: ProxyHttp> FerryHttp<P> {
    /// A connection's first step: an HTTP/2 connection's streams, each one
    /// request through `serve_one` (Pingora's codec and its stream loop);
    /// an HTTP/1 connection comes back untouched, for
    /// [`Self::serve_http1`]. `h2c`: the listener serves HTTP/2 with prior
    /// knowledge too.
    pub(crate) async fn serve_http2(
        self: &Arc<Self>,
        mut stream: Box<ClockedStream>,
        h2c: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Box<ClockedStream>> {
        let h2 = match stream.selected_alpn_proto() {
            Some(ALPN::H2) => true,
            _ => h2c && stream.get_ssl_digest().is_none() && h2_preface(&mut stream).await,
        };
        if !h2 {
            return Some(stream);
        }
        let h2 = Arc::new(Http2(self.clone()));
        Box::pin(h2.process_new(stream, shutdown)).await;
        None
    }

    /// The listeners stopped: after [`SETTLE`], connections waiting for a
    /// request close.
    pub(crate) async fn stopping(&self) {
        self.closing.store(true, Ordering::Release);
        tokio::time::sleep(SETTLE).await;
        // The flag first, then the wake: a header read that looked at the
        // flag too early is woken.
        self.idle.stop();
        self.stop.notify_waiters();
    }
}

/// The connection back from a finished request's session, and the bytes
/// of the next request the client sent already (pipelining), boxed: the
/// connection's state keeps room for them while it waits. A plain
/// function, so that none of the rest stays in that state.
fn take_back(reusable: ReusableHttpStream) -> Option<Back> {
    let (reused, ahead) = reusable.into_parts();
    // The stream the listener made comes back from Pingora's session.
    let clocked = reused.into_any().downcast::<ClockedStream>().ok()?;
    Some((clocked, ahead.map(Box::new)))
}

/// Whether a plain connection begins with HTTP/2's preface (prior
/// knowledge). It is peeked, not read: the bytes stay for the codec. A
/// preface that comes in pieces is waited for up to a second (a client
/// sends its 24 bytes at once); what is not a preface is HTTP/1.
async fn h2_preface(stream: &mut ClockedStream) -> bool {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for _ in 0..200 {
        // The preface has no zero byte: zeros left in `buf` were not peeked.
        let mut buf = [0u8; 24];
        match stream.try_peek(&mut buf).await {
            Ok(true) => {}
            _ => return false,
        }
        let got = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if buf[..got] != PREFACE[..got] {
            return false;
        }
        if got == PREFACE.len() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    false
}

/// HTTP/2 connections through Pingora's own loop (`ServerApp` for an
/// `HttpServerApp`), one request per stream.
struct Http2<P: ProxyHttp>(Arc<FerryHttp<P>>);

/// Pingora's codec takes a plain connection as HTTP/2 only with `h2c`
/// (it checks the preface again).
static H2C: std::sync::LazyLock<pingora_core::apps::HttpServerOptions> =
    std::sync::LazyLock::new(|| {
        let mut o = pingora_core::apps::HttpServerOptions::default();
        o.h2c = true;
        o
    });

#[async_trait]
impl<P: ProxyHttp> HttpServerApp for Http2<P> {
    fn server_options(&self) -> Option<&pingora_core::apps::HttpServerOptions> {
        Some(&H2C)
    }

    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Made in its box, as an HTTP/1 request's is: `Box::pin` would copy
        // the 10 KiB future into it (13K instructions per HTTP/2 request).
        crate::boxed::in_place(|| self.0.serve_one(session, None)).await;
        None
    }
}

impl<P: ProxyHttp> FerryHttp<P> {
    /// An HTTP/1 connection's requests, one after another, once `first`
    /// (the handshake, and HTTP/2's streams when the client speaks it)
    /// hands the connection back. Between two of them the connection holds
    /// only its stream (nginx's `ngx_http_set_keepalive`): no session, no
    /// header buffer, no request state, while it waits for the next
    /// request's first byte (the socket's readiness; the request's read
    /// takes the bytes).
    pub(crate) async fn serve_http1(
        self: Arc<Self>,
        first: std::pin::Pin<Box<impl std::future::Future<Output = Option<Box<ClockedStream>>>>>,
    ) {
        let Some(mut stream) = first.await else {
            return;
        };
        let mut next: Option<NextSession> = None;
        let mut ahead: Option<Box<BytesMut>> = None;
        let mut kept: Kept = None;
        loop {
            // Boxed: the request's large future (its session made inside
            // it, never in this loop's state) lives while it is served and
            // is gone before the connection waits for the next one.
            let request = crate::boxed::in_place(|| {
                self.serve_next(stream, ahead.take(), next.take(), kept.take())
            });
            let Some(((back, sent), then, keep)) = request.await else {
                return;
            };
            kept = keep;
            next = Some(then);
            (stream, ahead) = (back, sent);
            if ahead.is_none() {
                if let Some(wait) = self.next_request_arrives(&mut stream, then.keepalive) {
                    if !wait.await {
                        return;
                    }
                }
            }
        }
    }

    /// Read the next request's head on an HTTP/1 connection and serve it:
    /// with Ferry's own session when it has no body (the common request),
    /// else with Pingora's, which parses the bytes read again. The
    /// connection back when it can serve another.
    async fn serve_next(
        &self,
        mut stream: Box<ClockedStream>,
        ahead: Option<Box<BytesMut>>,
        next: Option<NextSession>,
        kept: Kept,
    ) -> Option<Reusable> {
        let next = next.unwrap_or_else(|| NextSession::first(self.closing.load(Ordering::Acquire)));
        let limit = next.read_limit();
        let read = tokio::select! {
            biased;
            r = h1_session::read_request(&mut stream, ahead.map(|a| *a), limit) => r,
            _ = self.stopped() => Read::Closed,
        };
        let head = match read {
            Read::Head(head, buf) => (head, buf),
            Read::Pingora(buf) => {
                let mut session = ServerSession::new_http1(stream);
                next.apply(&mut session, (!buf.is_empty()).then(|| Box::new(buf)));
                return self.serve_one(session, kept).await;
            }
            Read::Closed => {
                pingora_core::protocols::Shutdown::shutdown(&mut *stream).await;
                return None;
            }
            Read::Failed(e) => {
                let Some(status) = stream.too_large() else {
                    log::debug!("reading a request header: {e}");
                    pingora_core::protocols::Shutdown::shutdown(&mut *stream).await;
                    return None;
                };
                let session = ServerSession::new_http1(stream);
                return self.refuse(session, status, false).await;
            }
        };
        let mut session = Downstream::Ferry(H1Session::new(stream, head.0, head.1));
        if let Downstream::Ferry(s) = &mut session {
            s.set_reuses(next.reuses.map(|r| r.saturating_sub(1)));
        }
        let (next, keep) = self.serve_request(&mut session, kept).await?;
        let Downstream::Ferry(s) = session else {
            return None;
        };
        let (stream, ahead) = s.finish().await.ok().flatten()?;
        let ahead = (!ahead.is_empty()).then(|| Box::new(ahead));
        Some(((stream, ahead), next, keep))
    }

    /// Read one request's header with Pingora's session and serve it; the
    /// connection back when it can serve another.
    async fn serve_one(&self, mut session: ServerSession, kept: Kept) -> Option<Reusable> {
        match self.next_request_header(&mut session).await {
            NextRequest::Read => {}
            NextRequest::Done => {
                session.shutdown().await;
                return None;
            }
            NextRequest::Refused {
                status,
                header_read,
            } => return self.refuse(session, status, header_read).await,
        }
        // Boxed, and lent, not moved, to the request: each move would
        // copy it whole.
        let mut session = Downstream::Pingora(Box::new(session));
        let (next, keep) = self.serve_request(&mut session, kept).await?;
        let Downstream::Pingora(session) = session else {
            return None;
        };
        let reused = session.finish().await.ok().flatten()?;
        Some((take_back(reused)?, next, keep))
    }

    /// A request refused before it was served: answered, logged, then the
    /// connection closes lingering. (The refusals are counted and logged
    /// by the header clock as they go out. Boxed: an error page's future
    /// is three times the size of the header read's, and every idle
    /// connection would carry it.)
    async fn refuse(
        &self,
        session: ServerSession,
        status: u16,
        header_read: bool,
    ) -> Option<Reusable> {
        let rt = self.live.current();
        let mut session = Downstream::Pingora(Box::new(session));
        let _ = Box::pin(respond::refuse_unread(&mut session, status)).await;
        let refusal = finalize::refused(&*self.app, &rt, &mut session, status, header_read);
        Box::pin(refusal).await;
        if let Downstream::Pingora(session) = session {
            Box::pin(crate::client::lingering_close::lingering_close(*session)).await;
        }
        None
    }

    /// The wait for the next request's first byte, holding nothing for it:
    /// false when the keepalive timeout passed or the service is stopping
    /// (a close ends it true: the read finds it). `None` over TLS, whose
    /// readiness may be the record layer's: it goes straight to the next
    /// read. (A plain function: an
    /// async one would keep its arguments in every idle connection's task.)
    fn next_request_arrives<'a>(
        &'a self,
        stream: &'a mut ClockedStream,
        idle_secs: Option<u32>,
    ) -> Option<NextByte<'a>> {
        let timeout = idle_secs.map(|s| std::time::Duration::from_secs(s.into()));
        Some(self.idle.next_byte(stream.idle()?, timeout))
    }
}

impl<P: ProxyHttp> FerryHttp<P> {
    /// Serve one request whose header was read; when the connection can
    /// serve another, the settings, keepalive timeout and kept context its
    /// next request starts with.
    async fn serve_request(
        &self,
        session: &mut Downstream,
        kept: Kept,
    ) -> Option<(NextSession, Kept)> {
        if self.closing.load(Ordering::Acquire) {
            // The service is stopping: this is the connection's last request.
            session.set_keepalive(None);
        }
        // The configuration current now serves this request to its end,
        // whatever a reload swaps in meanwhile.
        let runtime = self.live.current();
        let rt = &*runtime;
        let mut request = finalize::begin(rt, session);
        let mut ctx = self.app.new_ctx();
        if let Some(prev) = kept {
            let mut s = Session {
                downstream: &mut *session,
                request: &mut request,
                runtime: rt,
            };
            self.app.on_connection_reuse(&mut s, &mut ctx, prev);
        }
        let served = flow::process_request(&*self.app, rt, session, &mut request, &mut ctx).await;
        let reusable = match served {
            Ok(End::Complete) => true,
            // Close without ending the body: the client sees it is cut.
            Ok(End::Truncated) => false,
            Err(e) => {
                finalize::failed(&*self.app, rt, session, &mut request, &mut ctx, e).await;
                false
            }
        };
        finalize::finalize(&*self.app, rt, session, &mut request, &mut ctx).await;
        if !reusable {
            // The last bytes of a cut-short response may still sit in
            // Pingora's write buffer: out with them, then close (bounded by
            // the route's client_send_timeout, for a client that stopped
            // reading).
            let limit = request.route.map_or(CLOSE_LIMIT, |i| {
                rt.routes[i].proxy().client_send_timeout.get()
            });
            let _ = ferry_timer::timeout(limit, session.shutdown()).await;
            return None;
        }
        let keep = {
            let s = Session {
                downstream: &mut *session,
                request: &mut request,
                runtime: rt,
            };
            self.app.persist_connection_context(&s, &ctx)
        };
        Some((NextSession::of(session), keep))
    }
}
