//! Forwarding the response body: Pingora's two sessions plugged into the
//! pipes of `ferry-filters` (at once when one read brought the whole body,
//! else buffered through the event pipe, or not).
//!
//! With the route's `compress:`, each piece to the client goes through the
//! encoder of `super::compress` (flushed piece by piece when unbuffered),
//! and the end flushes it.
//!
//! When the route's cache stores the response, each piece read is also
//! written to the entry's file (a [`BodyTap`]: `crate::cache::fill`).
//!
//! nginx counterpart: `ngx_http_upstream_send_response` choosing between
//! `ngx_event_pipe` and the non-buffered handlers; `X-Accel-Buffering`
//! switches per response.

use crate::client::downstream::Downstream;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::record::Request;
use crate::response::compress::Encoder;
use crate::runtime::RouteRt;
use crate::upstream::connect::Conn;
use bytes::Bytes;
use ferry_filters::pipe::{
    BodyFilter, DownstreamBody, FailKind, PipeError, PipeOutcome, Side, UpstreamBody,
};
use ferry_filters::whole_body;
use http::HeaderMap;
use pingora_error::{Error, ErrorType};

fn pipe_error(side: Side, e: &Error) -> PipeError {
    let kind = match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailKind::Timeout,
        _ => FailKind::Error,
    };
    PipeError::new(side, kind, e.to_string())
}

/// The program's hooks and its context, shared by the two ends of the
/// pipe: the reader runs `upstream_response_body_filter`, the pipe's
/// filter `response_body_filter`. (Never locked across an await: both
/// hooks are plain functions.)
struct Hooks<'a, P: ProxyHttp> {
    app: &'a P,
    request: &'a Request,
    ctx: std::sync::Mutex<&'a mut P::CTX>,
    /// An HTTP/2 server's trailers, read after the body, for the client end.
    trailers: std::sync::Mutex<Option<HeaderMap>>,
}

impl<'a, P: ProxyHttp> Hooks<'a, P> {
    fn ctx(&self) -> std::sync::MutexGuard<'_, &'a mut P::CTX> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a copy of the body goes as it is read: a cache entry being
/// filled (`crate::cache::fill`).
pub(crate) trait BodyTap: Send {
    /// One piece as the filter left it (`None`: it dropped it); `read`:
    /// its length as the upstream sent it.
    fn piece(&mut self, read: usize, piece: Option<&Bytes>);
    /// The body's end was read; done before the client has its last byte.
    fn end(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// The upstream end: the connection whose response header was read, each
/// piece through `upstream_response_body_filter`.
struct UpstreamReader<'h, 'a, P: ProxyHttp, T: BodyTap> {
    conn: Conn,
    hooks: &'h Hooks<'a, P>,
    ended: bool,
    /// Where a copy of the body goes, piece by piece as read.
    tap: Option<&'h mut T>,
}

impl<P: ProxyHttp, T: BodyTap> UpstreamBody for UpstreamReader<'_, '_, P, T> {
    async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let mut piece = self
                .conn
                .session
                .read_body_bytes()
                .await
                .map_err(|e| pipe_error(Side::Upstream, &e))?;
            let end = piece.is_none() || self.conn.session.is_body_done();
            let read = piece.as_ref().map_or(0, |p| p.len());
            {
                let h = self.hooks;
                let mut ctx = h.ctx.lock().unwrap_or_else(|e| e.into_inner());
                h.app
                    .upstream_response_body_filter(h.request, &mut piece, end, &mut ctx)
                    .map_err(|e| PipeError::new(Side::Upstream, FailKind::Error, e.to_string()))?;
            }
            self.ended = end;
            if end {
                self.trailers().await?;
            }
            if let Some(t) = &mut self.tap {
                t.piece(read, piece.as_ref());
                if end {
                    t.end().await;
                }
            }
            match piece {
                Some(p) if !p.is_empty() => return Ok(Some(p)),
                _ if end => return Ok(None),
                _ => continue,
            }
        }
    }
    fn is_done(&mut self) -> bool {
        // Done once the filter saw the end (it may add to the body there).
        self.ended
    }
    async fn release(self) {
        self.conn.release().await
    }
}

impl<P: ProxyHttp, T: BodyTap> UpstreamReader<'_, '_, P, T> {
    /// An HTTP/2 server's trailers, through `upstream_response_trailer_filter`,
    /// kept for the client end.
    async fn trailers(&mut self) -> Result<(), PipeError> {
        if !self.conn.session.is_h2() {
            return Ok(());
        }
        let read = self.conn.session.read_trailers().await;
        let mut trailers = match read {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(e) => return Err(pipe_error(Side::Upstream, &e)),
        };
        let h = self.hooks;
        h.app
            .upstream_response_trailer_filter(h.request, &mut trailers, &mut h.ctx())
            .map_err(|e| PipeError::new(Side::Upstream, FailKind::Error, e.to_string()))?;
        *h.trailers.lock().unwrap_or_else(|e| e.into_inner()) = Some(trailers);
        Ok(())
    }
}

/// The client end; with an encoder (`compress:`), each piece is
/// compressed on its way and the end flushes the encoder.
/// The third field counts the compressed bytes written (`$body_bytes_sent`
/// is what the client got, as nginx counts it).
/// The fourth gives the trailers to an HTTP/2 client.
struct ClientWriter<'a, 'h, P: ProxyHttp>(
    &'a mut Downstream,
    Option<Encoder>,
    &'a mut u64,
    &'h Hooks<'h, P>,
);

fn encode_error(e: std::io::Error) -> PipeError {
    PipeError::new(Side::Client, FailKind::Error, format!("compressing: {e}"))
}

impl<P: ProxyHttp> DownstreamBody for ClientWriter<'_, '_, P> {
    async fn write(&mut self, data: Bytes) -> Result<(), PipeError> {
        let data = match &mut self.1 {
            Some(e) => e.piece(&data).map_err(encode_error)?,
            None => data,
        };
        if data.is_empty() {
            return Ok(());
        }
        *self.2 += data.len() as u64;
        self.0
            .write_response_body(data, false)
            .await
            .map_err(|e| pipe_error(Side::Client, &e))
    }

    async fn end(&mut self, last: Bytes) -> Result<(), PipeError> {
        let last = match &mut self.1 {
            Some(e) => e.finish(&last).map_err(encode_error)?,
            None => last,
        };
        *self.2 += last.len() as u64;
        let trailers = self.trailers()?;
        // On the heap, made in place: the write's future is large, and the
        // pipe's steps above would each copy it.
        crate::boxed::in_place(|| end_body(self.0, last, trailers))
            .await
            .map_err(|e| pipe_error(Side::Client, &e))
    }

    fn is_gone(&mut self) -> bool {
        self.0
            .http1_fd()
            .is_some_and(crate::client::liveness::has_closed)
    }
}

impl<P: ProxyHttp> ClientWriter<'_, '_, P> {
    /// The server's trailers through `response_trailer_filter`, for an
    /// HTTP/2 client (an HTTP/1 one gets none); `None`: the body's last
    /// frame ends the stream.
    fn trailers(&mut self) -> Result<Option<HeaderMap>, PipeError> {
        let h = self.3;
        let taken = h.trailers.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut t) = taken.filter(|_| self.0.is_http2()) else {
            return Ok(None);
        };
        h.app
            .response_trailer_filter(h.request, &mut t, &mut h.ctx())
            .map_err(|e| PipeError::new(Side::Client, FailKind::Error, e.to_string()))?;
        Ok((!t.is_empty()).then_some(t))
    }
}

/// The body's last piece to the client, then its trailers when there are
/// any (they end the stream instead of the last piece).
pub(crate) async fn end_body(
    client: &mut Downstream,
    last: Bytes,
    trailers: Option<HeaderMap>,
) -> pingora_error::Result<()> {
    match trailers {
        None => client.write_response_body(last, true).await,
        Some(t) => {
            client.write_response_body(last, false).await?;
            client.write_response_trailers(t).await
        }
    }
}

/// The user's `response_body_filter` as the pipes' filter.
struct HookFilter<'h, 'a, P: ProxyHttp>(&'h Hooks<'a, P>);

impl<P: ProxyHttp> BodyFilter for HookFilter<'_, '_, P> {
    fn filter(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), String> {
        let h = self.0;
        let mut ctx = h.ctx.lock().unwrap_or_else(|e| e.into_inner());
        h.app
            .response_body_filter(h.request, body, end, &mut ctx)
            .map_err(|e| e.to_string())
    }
}

/// Move the body from `conn` to the client, then end it (the final chunk).
/// On failure the response stays truncated: the caller closes the client
/// connection without ending the body.
#[allow(clippy::too_many_arguments)]
pub async fn forward<P: ProxyHttp, T: BodyTap>(
    app: &P,
    ctx: &mut P::CTX,
    request: &Request,
    route: &RouteRt,
    client: &mut Downstream,
    conn: Conn,
    (buffered, encoder): (bool, Option<Encoder>),
    tap: Option<&mut T>,
) -> PipeOutcome {
    let hooks = Hooks {
        app,
        request,
        ctx: std::sync::Mutex::new(ctx),
        trailers: std::sync::Mutex::new(None),
    };
    let mut filter = HookFilter(&hooks);
    let reader = UpstreamReader {
        conn,
        hooks: &hooks,
        ended: false,
        tap,
    };
    let pipe = buffered.then_some(&route.pipe);
    let compressed = encoder.is_some();
    let mut written = 0;
    let writer = ClientWriter(client, encoder, &mut written, &hooks);
    let mut out = whole_body::run(pipe, reader, writer, &mut filter).await;
    if compressed {
        out.sent = written;
    }
    out
}
