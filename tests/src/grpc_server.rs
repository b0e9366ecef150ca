//! A gRPC test server (nginx's counterpart: the server behind `grpc_pass`):
//! the echo service of [`crate::grpc`] on tonic's generic server pieces
//! over hyper's HTTP/2, cleartext with prior knowledge (h2c) or TLS with
//! ALPN `h2`. It records the request headers of every call (`te`,
//! `grpc-timeout`, `content-type`, ...) and counts connections, calls, and
//! calls that went away while the handler slept.

use crate::grpc::{
    parse_timeout, EchoReply, EchoRequest, BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY,
};
use crate::serve::{accept_loop, BoxIo};
use http::HeaderMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::server::{Grpc, ServerStreamingService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// A call as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenCall {
    /// Which connection it came on (0 = the first accepted).
    pub conn: usize,
    /// The method path, e.g. [`crate::grpc::UNARY`].
    pub path: String,
    /// The request headers, as they arrived.
    pub headers: HeaderMap,
}

impl SeenCall {
    /// One request header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        let value = self.headers.get(name)?.to_str().ok()?;
        Some(value.to_string())
    }
}

#[derive(Default)]
struct State {
    calls: AtomicUsize,
    cancelled: AtomicUsize,
    seen: Mutex<Vec<SeenCall>>,
}

/// A running gRPC server; stops (with its connections) when dropped.
pub struct GrpcServer {
    /// Where it listens (127.0.0.1, a port of its own).
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    /// A server speaking h2c (HTTP/2 with prior knowledge, no TLS).
    pub async fn start() -> GrpcServer {
        GrpcServer::serve(None).await
    }

    /// A server speaking TLS with `cert`, ALPN `h2`.
    pub async fn start_tls(cert: &crate::tls::SelfSigned) -> GrpcServer {
        GrpcServer::serve(Some(cert.acceptor_alpn(b"h2"))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcServer {
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accepting =
            accept_loop(tls, move |io, conn| serve_conn(io, conn, shared.clone())).await;
        GrpcServer {
            addr: accepting.addr,
            conns: accepting.conns,
            state,
            task: accepting.task,
        }
    }

    /// TCP connections accepted.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Calls (HTTP/2 streams) received, any method.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls that went away (stream reset, connection closed) while their
    /// handler slept (`sleep_ms`): what a client's or a proxy's cancel does.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Every call seen, in arrival order.
    pub fn seen(&self) -> Vec<SeenCall> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// The last call seen; panics when there was none.
    pub fn last(&self) -> SeenCall {
        self.seen().pop().expect("no call seen")
    }
}

async fn serve_conn(io: BoxIo, conn: usize, state: Arc<State>) {
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(dispatch(state, conn, req).await) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Record the call and hand it to its method. Unary and client streaming
/// go through tonic's streaming entry points too (same bytes on the wire),
/// so every method can end with custom trailers.
async fn dispatch(
    state: Arc<State>,
    conn: usize,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let seen = SeenCall {
        conn,
        path: path.clone(),
        headers: req.headers().clone(),
    };
    state.seen.lock().expect("seen").push(seen);
    let timeout = req.headers().get("grpc-timeout");
    let timeout = timeout.and_then(|v| parse_timeout(v.to_str().ok()?));
    let call = Call {
        state,
        deadline: timeout.map(|t| Instant::now() + t),
    };
    let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
    match path.as_str() {
        UNARY => grpc.server_streaming(OneIn(call, false), req).await,
        SERVER_STREAM => grpc.server_streaming(OneIn(call, true), req).await,
        CLIENT_STREAM => grpc.streaming(ManyIn(call, false), req).await,
        BIDI => grpc.streaming(ManyIn(call, true), req).await,
        _ => Status::unimplemented(format!("no method {path}")).into_http(),
    }
}

type Replies =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;
type Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Replies>, Status>> + Send>>;

/// One call being answered: the server's state and the call's deadline.
#[derive(Clone)]
struct Call {
    state: Arc<State>,
    deadline: Option<Instant>,
}

/// Unary (`false`) or server streaming (`true`).
struct OneIn(Call, bool);

/// Client streaming (`false`) or bidirectional (`true`).
struct ManyIn(Call, bool);

impl ServerStreamingService<EchoRequest> for OneIn {
    type Response = EchoReply;
    type ResponseStream = Replies;
    type Future = Answer;

    fn call(&mut self, request: Request<EchoRequest>) -> Answer {
        let (call, streaming) = (self.0.clone(), self.1);
        Box::pin(async move { call.one_in(request.into_inner(), streaming).await })
    }
}

impl StreamingService<EchoRequest> for ManyIn {
    type Response = EchoReply;
    type ResponseStream = Replies;
    type Future = Answer;

    fn call(&mut self, request: Request<Streaming<EchoRequest>>) -> Answer {
        let (call, bidi) = (self.0.clone(), self.1);
        let input = request.into_inner();
        match bidi {
            true => Box::pin(async move { Ok(Response::new(echo_each(input))) }),
            false => Box::pin(async move { call.many_in(input).await }),
        }
    }
}

impl Call {
    async fn one_in(self, m: EchoRequest, streaming: bool) -> Result<Response<Replies>, Status> {
        self.pause(&m).await?;
        if m.status != 0 && !m.status_after_body {
            return Err(status_of(&m));
        }
        let replies = match streaming {
            true => (0..m.count)
                .map(|i| reply(format!("{}-{i}", m.text), i))
                .collect(),
            false => vec![reply(m.text.clone(), 0)],
        };
        let interval = Duration::from_millis(m.interval_ms);
        Ok(Response::new(send_all(replies, interval, ending(&m))))
    }

    async fn many_in(self, mut input: Streaming<EchoRequest>) -> Result<Response<Replies>, Status> {
        let (mut first, mut text, mut n) = (None, String::new(), 0);
        while let Some(m) = input.message().await? {
            text.push_str(&m.text);
            n += 1;
            first.get_or_insert(m);
        }
        let m = first.unwrap_or_default();
        self.pause(&m).await?;
        if m.status != 0 && !m.status_after_body {
            return Err(status_of(&m));
        }
        let replies = vec![reply(text, n)];
        Ok(Response::new(send_all(replies, Duration::ZERO, ending(&m))))
    }

    /// Sleep `sleep_ms`, or until the deadline when that comes first (then
    /// DEADLINE_EXCEEDED), counting the call as cancelled if it goes away
    /// meanwhile.
    async fn pause(&self, m: &EchoRequest) -> Result<(), Status> {
        if m.sleep_ms == 0 {
            return Ok(());
        }
        let wake = Instant::now() + Duration::from_millis(m.sleep_ms);
        let mut guard = CountIfDropped(Some(&self.state.cancelled));
        let result = match self.deadline {
            Some(deadline) if deadline < wake && !m.ignore_deadline => {
                tokio::time::sleep_until(deadline).await;
                Err(Status::deadline_exceeded("deadline exceeded"))
            }
            _ => {
                tokio::time::sleep_until(wake).await;
                Ok(())
            }
        };
        guard.0 = None;
        result
    }
}

/// Adds one to its counter when dropped still armed.
struct CountIfDropped<'a>(Option<&'a AtomicUsize>);

impl Drop for CountIfDropped<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Bidi: echo each request as it arrives; a request with a `status` ends
/// the call with it; trailers asked for along the way end an OK call.
fn echo_each(mut input: Streaming<EchoRequest>) -> Replies {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let (mut index, mut trailers) = (0, EchoRequest::default());
        loop {
            let m = match input.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => return drop(tx.send(Err(status)).await),
            };
            if m.status != 0 {
                return drop(tx.send(Err(status_of(&m))).await);
            }
            trailers.trailers.extend(m.trailers.clone());
            if tx.send(Ok(reply(m.text, index))).await.is_err() {
                return;
            }
            index += 1;
        }
        if let Some(end) = ending(&trailers) {
            let _ = tx.send(Err(end)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Send `replies` (`interval` apart), then `end` as the final status.
fn send_all(replies: Vec<EchoReply>, interval: Duration, end: Option<Status>) -> Replies {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for (i, r) in replies.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(r)).await.is_err() {
                return;
            }
        }
        if let Some(end) = end {
            let _ = tx.send(Err(end)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn reply(text: String, index: u32) -> EchoReply {
    EchoReply { text, index }
}

/// The final status the request asks for after its replies: its error
/// status, or OK carrying its trailers (tonic writes a status's metadata
/// into the trailers); `None` for a plain OK.
fn ending(m: &EchoRequest) -> Option<Status> {
    if m.status != 0 {
        return Some(status_of(m));
    }
    let metadata = metadata_of(m);
    (!metadata.is_empty()).then(|| Status::with_metadata(tonic::Code::Ok, "", metadata))
}

fn status_of(m: &EchoRequest) -> Status {
    let code = tonic::Code::from_i32(m.status);
    Status::with_metadata(code, m.message.clone(), metadata_of(m))
}

fn metadata_of(m: &EchoRequest) -> tonic::metadata::MetadataMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &m.trailers {
        let name = http::HeaderName::from_bytes(k.as_bytes());
        if let (Ok(name), Ok(value)) = (name, http::HeaderValue::from_str(v)) {
            headers.insert(name, value);
        }
    }
    tonic::metadata::MetadataMap::from_headers(headers)
}
