//! A well-behaved backend: hyper's HTTP/1.1 server on a loopback port.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the backend answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply::status(200, body)
    }
    pub fn status(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

pub struct Backend {
    pub addr: SocketAddr,
    /// Requests answered.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// A backend that answers 200 with its `name` as the body.
    pub async fn named(name: &str) -> Backend {
        let n = name.to_string();
        Backend::start(Arc::new(move |_, _| Reply::ok(n.clone()))).await
    }

    /// A backend answering by `handler(hit_index, request)`, on a free port.
    pub async fn start(handler: Handler) -> Backend {
        Backend::start_on("127.0.0.1:0", handler)
            .await
            .expect("bind a loopback port")
    }

    /// A backend speaking TLS with `cert` (HTTP/1.1 inside).
    pub async fn start_tls(cert: &crate::tls::SelfSigned, handler: Handler) -> Backend {
        Backend::serve("127.0.0.1:0", handler, Some(cert.acceptor()))
            .await
            .expect("bind a loopback port")
    }

    /// A backend on a given address.
    pub async fn start_on(addr: &str, handler: Handler) -> std::io::Result<Backend> {
        Backend::serve(addr, handler, None).await
    }

    /// A backend speaking TLS with `cert` that accepts only clients
    /// presenting a certificate `client` signed (mutual TLS).
    pub async fn start_mtls(
        cert: &crate::tls::SelfSigned,
        client: &crate::tls::SelfSigned,
        handler: Handler,
    ) -> Backend {
        Backend::serve(
            "127.0.0.1:0",
            handler,
            Some(cert.acceptor_requiring(client)),
        )
        .await
        .expect("bind a loopback port")
    }

    /// A backend on the Unix socket at `path` (`addr` is then unused).
    pub async fn start_unix(path: &std::path::Path, handler: Handler) -> Backend {
        let listener = tokio::net::UnixListener::bind(path).expect("bind a Unix socket");
        let shared = Shared::new(handler);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    s.accepted(stream, None);
                }
            }
        });
        shared.backend(SocketAddr::from(([0, 0, 0, 0], 0)), task)
    }

    async fn serve(
        addr: &str,
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(handler);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    s.accepted(stream, tls.clone());
                }
            }
        });
        Ok(shared.backend(addr, task))
    }

    /// A backend answering with the value of one request header (`-` when
    /// absent): what the upstream saw.
    pub async fn echo_header(name: &'static str) -> Backend {
        Backend::start(Arc::new(move |_, r: &Seen| {
            Reply::ok(
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string(),
            )
        }))
        .await
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request seen")
    }
}

/// What a backend's connections share.
#[derive(Clone)]
struct Shared {
    handler: Handler,
    hits: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Shared {
    fn new(handler: Handler) -> Shared {
        Shared {
            handler,
            hits: Default::default(),
            conns: Default::default(),
            seen: Default::default(),
        }
    }

    /// A connection accepted: counted, then served on a task of its own.
    fn accepted<S>(&self, stream: S, tls: Option<tokio_rustls::TlsAcceptor>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.conns.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(self.clone().connection(stream, tls));
    }

    fn backend(self, addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> Backend {
        Backend {
            addr,
            hits: self.hits,
            conns: self.conns,
            seen: self.seen,
            task,
        }
    }

    /// Serve one connection (TLS first when `tls`) with hyper's HTTP/1.1.
    async fn connection<S>(self, stream: S, tls: Option<tokio_rustls::TlsAcceptor>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req: Request<Incoming>| {
            let s = self.clone();
            async move { Ok::<_, hyper::Error>(s.answer(req).await) }
        });
        let builder = hyper::server::conn::http1::Builder::new();
        match tls {
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
            Some(acceptor) => {
                if let Ok(tls_stream) = acceptor.accept(stream).await {
                    let _ = builder
                        .serve_connection(TokioIo::new(tls_stream), svc)
                        .await;
                }
            }
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let req = Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body,
        };
        let i = self.hits.fetch_add(1, Ordering::SeqCst);
        let reply = (self.handler)(i, &req);
        self.seen.lock().unwrap().push(req);
        if let Some(d) = reply.delay {
            tokio::time::sleep(d).await;
        }
        let mut resp = Response::builder().status(reply.status);
        for (k, v) in &reply.headers {
            resp = resp.header(k, v);
        }
        resp.body(Full::new(reply.body)).unwrap()
    }
}
