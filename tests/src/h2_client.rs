//! A raw HTTP/2 test client on `h2::client`: cleartext with prior knowledge
//! (h2c) or TLS with ALPN `h2`, one connection per [`H2Client`], any number
//! of streams on it. It gives back the response as it came (status,
//! headers, body, trailers, whether the headers ended the stream) or the
//! h2 error (a stream reset's code, a GOAWAY), where a full client would
//! hide them. Every request is bounded by [`crate::WAIT`].

use crate::WAIT;
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::HeaderMap;
use std::net::SocketAddr;

/// A response as it came.
#[derive(Debug, Clone)]
pub struct H2Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// The response's HEADERS frame ended the stream: no body, no trailers
    /// (a gRPC trailers-only response).
    pub headers_only: bool,
}

impl H2Response {
    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        Some(self.headers.get(name)?.to_str().ok()?.to_string())
    }

    /// One trailer's value, if present and text.
    pub fn trailer(&self, name: &str) -> Option<String> {
        let trailers = self.trailers.as_ref()?;
        Some(trailers.get(name)?.to_str().ok()?.to_string())
    }
}

/// One HTTP/2 connection; dropping it closes the connection.
pub struct H2Client {
    send: SendRequest<Bytes>,
    authority: String,
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Client {
    /// Connect to `addr` with prior knowledge (h2c); panics if it cannot.
    pub async fn h2c(addr: SocketAddr) -> H2Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        H2Client::over(Box::new(tcp), addr, "http").await
    }

    /// Connect to `addr` over TLS (ALPN `h2`) as `localhost`, trusting
    /// `ca`; panics if it cannot.
    pub async fn tls(addr: SocketAddr, ca: &crate::tls::SelfSigned) -> H2Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let connector = crate::tls::connector(&[ca], b"h2");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        H2Client::over(Box::new(tls), addr, "https").await
    }

    async fn over(io: crate::serve::BoxIo, addr: SocketAddr, scheme: &'static str) -> H2Client {
        let handshake = tokio::time::timeout(WAIT, h2::client::handshake(io));
        let (send, connection) = handshake.await.expect("in time").expect("h2 handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Client {
            send,
            authority: addr.to_string(),
            scheme,
            task,
        }
    }

    /// A request head for `method` and `path` on this connection's
    /// authority, with `headers` added.
    pub fn head(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}://{}{path}", self.scheme, self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).expect("a valid request head")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<H2Response, h2::Error> {
        let head = self.head("GET", path, &[]);
        self.send(head, Bytes::new(), None).await
    }

    /// A gRPC call written by hand: `req` framed as the body of a POST to
    /// `path` (`content-type: application/grpc`, `te: trailers`, and
    /// `headers`). For checks on the wire: a trailers-only answer, the
    /// trailers as sent. [`crate::grpc::unframe`] reads the body.
    pub async fn grpc(
        &self,
        path: &str,
        req: &crate::grpc::EchoRequest,
        headers: &[(&str, &str)],
    ) -> Result<H2Response, h2::Error> {
        let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
        all.extend_from_slice(headers);
        let head = self.head("POST", path, &all);
        self.send(head, crate::grpc::frame(req), None).await
    }

    /// Send `head`, then `body` and `trailers` (either may be empty), and
    /// read the whole response. Several may run at once, each its own
    /// stream on this connection.
    pub async fn send(
        &self,
        head: http::Request<()>,
        body: Bytes,
        trailers: Option<HeaderMap>,
    ) -> Result<H2Response, h2::Error> {
        let exchange = async {
            let mut ready = self.send.clone().ready().await?;
            let end = body.is_empty() && trailers.is_none();
            let (response, mut stream) = ready.send_request(head, end)?;
            if !body.is_empty() {
                stream.send_data(body, trailers.is_none())?;
            }
            if let Some(trailers) = trailers {
                stream.send_trailers(trailers)?;
            }
            read_response(response.await?).await
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("an HTTP/2 exchange done in time")
    }
}

async fn read_response(response: http::Response<h2::RecvStream>) -> Result<H2Response, h2::Error> {
    let (parts, mut body) = response.into_parts();
    let headers_only = body.is_end_stream();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok(H2Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes.freeze(),
        trailers,
        headers_only,
    })
}
