//! The accept loop the HTTP/2 and gRPC test servers share: a loopback
//! listener on port 0, plain or TLS (ALPN `h2`), each connection a task the
//! loop owns, so dropping the server (aborting the loop) ends them all, as
//! stopping an nginx upstream server would.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A connection's byte stream, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed connection, as a server's per-connection function receives it.
pub type BoxIo = Box<dyn Io>;

/// A running accept loop: its address, the connections it accepted, and
/// the task (abort it to stop the server and all its connections).
pub(crate) struct Accepting {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    pub task: JoinHandle<()>,
}

/// Listen on a free loopback port; give every accepted connection (after
/// the TLS handshake when `tls` is set) to `serve` with its index (0, 1,
/// ...), in a task of its own.
pub(crate) async fn accept_loop<F, Fut>(
    tls: Option<tokio_rustls::TlsAcceptor>,
    serve: F,
) -> Accepting
where
    F: Fn(BoxIo, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    let serve = Arc::new(serve);
    let task = tokio::spawn(async move {
        let mut running = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let index = counted.fetch_add(1, Ordering::SeqCst);
            while running.try_join_next().is_some() {}
            let (tls, serve) = (tls.clone(), serve.clone());
            running.spawn(async move {
                match tls {
                    None => serve(Box::new(tcp), index).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(Box::new(stream), index).await
                        }
                    }
                }
            });
        }
    });
    Accepting { addr, conns, task }
}
