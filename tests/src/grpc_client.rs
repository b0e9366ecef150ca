//! A gRPC test client (a real one: tonic's `Channel`, over h2c or TLS with
//! ALPN `h2`) calling the echo service of [`crate::grpc`], whichever server
//! answers: [`crate::grpc_server::GrpcServer`] directly, or Ferry in front
//! of it. Every call gives back an [`Outcome`]: status, replies, headers,
//! trailers; every call is bounded by [`crate::WAIT`].

use crate::grpc::{EchoReply, EchoRequest, BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY};
use crate::WAIT;
use http::uri::PathAndQuery;
use http::HeaderMap;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// What a call came back with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final `grpc-status` (or tonic's own code when the call failed
    /// below gRPC: UNAVAILABLE for a refused connection, CANCELLED for a
    /// `timeout` that ran out on the client's side).
    pub code: Code,
    /// The `grpc-message` (decoded).
    pub message: String,
    /// The replies received, in order.
    pub replies: Vec<EchoReply>,
    /// The response headers (of a trailers-only response: its one header
    /// block, less `grpc-status` and `grpc-message`).
    pub headers: HeaderMap,
    /// The trailers, less `grpc-status` and `grpc-message`.
    pub trailers: HeaderMap,
    /// The status came in the response headers: a trailers-only response
    /// (or a failure before any response).
    pub trailers_only: bool,
}

impl Outcome {
    /// The replies' texts.
    pub fn texts(&self) -> Vec<String> {
        self.replies.iter().map(|r| r.text.clone()).collect()
    }

    /// One trailer's value, if present and text.
    pub fn trailer(&self, name: &str) -> Option<String> {
        let value = self.trailers.get(name)?.to_str().ok()?;
        Some(value.to_string())
    }

    /// A call that ended with `status`: in the response headers (no
    /// `headers`: trailers-only, or no response), or after them.
    fn failed(status: Status, replies: Vec<EchoReply>, headers: Option<HeaderMap>) -> Outcome {
        let trailers_only = headers.is_none();
        let meta = status.metadata().clone().into_headers();
        let (headers, trailers) = match headers {
            None => (meta, HeaderMap::new()),
            Some(headers) => (headers, meta),
        };
        Outcome {
            code: status.code(),
            message: status.message().to_string(),
            replies,
            headers,
            trailers,
            trailers_only,
        }
    }
}

/// A gRPC client on one channel (one HTTP/2 connection, made on first use).
pub struct GrpcClient {
    grpc: tonic::client::Grpc<Channel>,
    timeout: Option<Duration>,
    headers: Vec<(String, String)>,
}

impl GrpcClient {
    /// A client speaking h2c (prior knowledge) to `addr`.
    pub fn h2c(addr: SocketAddr) -> GrpcClient {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        GrpcClient::on(endpoint.connect_timeout(WAIT).connect_lazy())
    }

    /// A client speaking TLS (ALPN `h2`) to `addr` as `localhost`, trusting
    /// `ca`.
    pub fn tls(addr: SocketAddr, ca: &crate::tls::SelfSigned) -> GrpcClient {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.cert_pem))
            .domain_name("localhost");
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("TLS config");
        GrpcClient::on(endpoint.connect_timeout(WAIT).connect_lazy())
    }

    fn on(channel: Channel) -> GrpcClient {
        GrpcClient {
            grpc: tonic::client::Grpc::new(channel),
            timeout: None,
            headers: Vec::new(),
        }
    }

    /// Send `grpc-timeout` with every call. tonic also stops waiting for
    /// the response headers at it (CANCELLED, "Timeout expired").
    pub fn timeout(mut self, timeout: Duration) -> GrpcClient {
        self.timeout = Some(timeout);
        self
    }

    /// Send this request header (ASCII metadata) with every call.
    pub fn header(mut self, name: &str, value: &str) -> GrpcClient {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A unary call.
    pub async fn unary(&mut self, req: EchoRequest) -> Outcome {
        self.bounded(UNARY, vec![req]).await
    }

    /// A server-streaming call: all the replies, then the status.
    pub async fn server_stream(&mut self, req: EchoRequest) -> Outcome {
        self.bounded(SERVER_STREAM, vec![req]).await
    }

    /// A client-streaming call sending `reqs` (all at once).
    pub async fn client_stream(&mut self, reqs: Vec<EchoRequest>) -> Outcome {
        self.bounded(CLIENT_STREAM, reqs).await
    }

    /// A bidirectional call in lock step: sends the first request, waits
    /// for its echo, then sends the next, and so on; then ends its side.
    /// It completes only if both directions flow at once (full duplex).
    pub async fn bidi(&mut self, reqs: Vec<EchoRequest>) -> Outcome {
        let call = self.lock_step(reqs);
        tokio::time::timeout(WAIT, call)
            .await
            .expect("a bidi call done in time")
    }

    async fn bounded(&mut self, path: &'static str, reqs: Vec<EchoRequest>) -> Outcome {
        let call = async {
            let started = self.start(path, tokio_stream::iter(reqs)).await;
            finish(started, |_| ()).await
        };
        tokio::time::timeout(WAIT, call)
            .await
            .expect("a gRPC call done in time")
    }

    async fn lock_step(&mut self, reqs: Vec<EchoRequest>) -> Outcome {
        let (tx, rx) = tokio::sync::mpsc::channel(reqs.len().max(1));
        let mut pending = reqs.into_iter();
        let mut tx = Some(tx);
        next_or_end(&mut tx, pending.next());
        let input = tokio_stream::wrappers::ReceiverStream::new(rx);
        let started = self.start(BIDI, input).await;
        finish(started, |_| next_or_end(&mut tx, pending.next())).await
    }

    async fn start(
        &mut self,
        path: &'static str,
        input: impl tokio_stream::Stream<Item = EchoRequest> + Send + 'static,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        let mut req = Request::new(input);
        if let Some(timeout) = self.timeout {
            req.set_timeout(timeout);
        }
        for (name, value) in &self.headers {
            let name = tonic::metadata::MetadataKey::from_bytes(name.as_bytes());
            if let (Ok(name), Ok(value)) = (name, value.parse()) {
                req.metadata_mut().insert(name, value);
            }
        }
        let ready = self.grpc.ready().await;
        ready.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static(path);
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        self.grpc.streaming(req, path, codec).await
    }
}

/// Send `next`, or end the request stream when there is none.
fn next_or_end(tx: &mut Option<tokio::sync::mpsc::Sender<EchoRequest>>, next: Option<EchoRequest>) {
    match (tx.as_ref(), next) {
        (Some(sender), Some(next)) => {
            let _ = sender.try_send(next);
        }
        _ => *tx = None,
    }
}

/// Read a started call to its end, calling `on_reply` after each reply.
async fn finish(
    started: Result<Response<Streaming<EchoReply>>, Status>,
    mut on_reply: impl FnMut(&EchoReply),
) -> Outcome {
    let response = match started {
        Ok(response) => response,
        Err(status) => return Outcome::failed(status, Vec::new(), None),
    };
    let headers = response.metadata().clone().into_headers();
    let mut stream = response.into_inner();
    let mut replies = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(reply)) => {
                on_reply(&reply);
                replies.push(reply);
            }
            Ok(None) => break,
            Err(status) => return Outcome::failed(status, replies, Some(headers)),
        }
    }
    let trailers = match stream.trailers().await {
        Ok(t) => t.map(|t| t.into_headers()).unwrap_or_default(),
        Err(status) => return Outcome::failed(status, replies, Some(headers)),
    };
    ok_outcome(headers, replies, trailers)
}

fn ok_outcome(headers: HeaderMap, replies: Vec<EchoReply>, mut trailers: HeaderMap) -> Outcome {
    let trailers_only = headers.contains_key("grpc-status");
    trailers.remove("grpc-status");
    trailers.remove("grpc-message");
    Outcome {
        code: Code::Ok,
        message: String::new(),
        replies,
        headers,
        trailers,
        trailers_only,
    }
}
