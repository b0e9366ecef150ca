//! The `listen:` sockets, their accept loops, and each accepted
//! connection's start: the PROXY protocol header, TLS, the header clock;
//! then its requests ([`FerryHttp::serve`]).
//!
//! nginx counterpart: `ngx_event_accept` and `ngx_http_init_connection`
//! (the listening socket's `backlog`, `sndbuf` and `rcvbuf`; a connection
//! that costs its socket and a small structure until its first byte).
//!
//! Ferry accepts for itself, as a service of Pingora's server: the server
//! still owns the process, its signals and its graceful upgrade (the
//! listening sockets go into and come out of its fd table, by address),
//! and TLS is Pingora's acceptor. Pingora's listening service would give
//! every connection its buffered stream, a socket digest and a task sized
//! for a TLS handshake, about 2.3 KiB for the connection's whole life, more
//! than an idle nginx connection costs in all; a connection accepted here
//! is a [`ClientStream`] and one task.

use crate::client::certs::{tls_acceptor, Certs, Current};
use crate::client::header_clock::{ClockedStream, Transport};
use crate::client::proxy_protocol::ProxyProtocol;
use crate::client::stream::ClientStream;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::live::Live;
use crate::request::http_app::FerryHttp;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The accept queue when `backlog` is not set: nginx's `NGX_LISTEN_BACKLOG`
/// on Linux (the kernel caps any at `net.core.somaxconn`).
const DEFAULT_BACKLOG: u32 = 511;
/// How long a TLS client may take over its handshake (Pingora's limit).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// An address still held by a process that is going away: tries, half a
/// second apart, each failure logged (nginx's five tries).
const BIND_TRIES: u32 = 5;

/// One `listen:` entry, ready to bind.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) listen: ferry_conf::Listen,
    /// Pingora's TLS acceptor, for a `tls:` entry: the current one, which
    /// a reload replaces ([`crate::client::certs`]).
    pub(crate) tls: Option<Current>,
}

/// The `listen:` entries ready to bind, TLS ones with their acceptor, and
/// those acceptors for reloads to replace; or the first entry whose
/// certificate and key cannot be used, and why.
pub(crate) fn endpoints(listen: &[ferry_conf::Listen]) -> Result<(Vec<Endpoint>, Certs), String> {
    let mut certs = Certs::default();
    let mut out = Vec::new();
    for l in listen {
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let acceptor =
                    tls_acceptor(&t.cert, &t.key).map_err(|e| format!("listen {}: {e}", l.addr))?;
                let current = Arc::new(ArcSwap::from_pointee(acceptor));
                certs.add(&l.addr, current.clone());
                Some(current)
            }
        };
        out.push(Endpoint {
            listen: l.clone(),
            tls,
        });
    }
    Ok((out, certs))
}

/// Ferry's proxy listeners: one service of Pingora's server.
pub(crate) struct Listeners<P: ProxyHttp> {
    pub(crate) http: Arc<FerryHttp<P>>,
    pub(crate) endpoints: Vec<Endpoint>,
}

#[async_trait]
impl<P: ProxyHttp> pingora_core::services::Service for Listeners<P> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let mut loops = Vec::new();
        for endpoint in &self.endpoints {
            let listener = match bind(&endpoint.listen, fds.as_ref()).await {
                Ok(l) => {
                    let tls = if endpoint.tls.is_some() { " (TLS)" } else { "" };
                    log::info!("listening on {}{tls}", endpoint.listen.addr);
                    Arc::new(l)
                }
                Err(e) => {
                    log::error!("listen {}: {e}; stopping", endpoint.listen.addr);
                    std::process::exit(1);
                }
            };
            let endpoint = Arc::new(endpoint.clone());
            for _ in 0..listeners_per_fd.max(1) {
                loops.push(tokio::spawn(accept_loop(
                    self.http.clone(),
                    self.http.live.clone(),
                    endpoint.clone(),
                    listener.clone(),
                    shutdown.clone(),
                )));
            }
        }
        for l in loops {
            let _ = l.await;
        }
        self.http.stopping().await;
    }

    fn name(&self) -> &str {
        "ferry"
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(
            self.endpoints
                .iter()
                .map(|e| e.listen.addr.clone())
                .collect(),
        )
    }
}

/// The listening socket for `listen`: the one the previous process handed
/// over in a graceful upgrade, or a new one, entered in the fd table for
/// the next upgrade.
async fn bind(
    listen: &ferry_conf::Listen,
    fds: Option<&ListenFds>,
) -> std::io::Result<TcpListener> {
    let inherited = fds.and_then(|t| t.lock().get(&listen.addr).copied());
    let socket = match inherited {
        // SAFETY: the fd table holds listening sockets the server received
        // for this address and gives each to one service.
        Some(fd) => unsafe { TcpSocket::from_raw_fd(fd) },
        None => new_socket(&listen.addr).await?,
    };
    if let Some(s) = listen.sndbuf {
        socket.set_send_buffer_size(size(s.as_usize()))?;
    }
    if let Some(s) = listen.rcvbuf {
        socket.set_recv_buffer_size(size(s.as_usize()))?;
    }
    // On an inherited socket, `listen` again only sets the backlog.
    let listener = socket.listen(listen.backlog.unwrap_or(DEFAULT_BACKLOG))?;
    if inherited.is_none() {
        if let Some(t) = fds {
            t.lock().add(listen.addr.clone(), listener.as_raw_fd());
        }
    }
    Ok(listener)
}

/// A buffer size for `setsockopt` (larger ones are capped by the kernel).
fn size(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// A new socket bound to `addr`, waiting for a process that still holds it.
async fn new_socket(addr: &str) -> std::io::Result<TcpSocket> {
    let at: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let mut tries = 0;
    loop {
        let socket = match at {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(at) {
            Ok(()) => return Ok(socket),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries + 1 < BIND_TRIES => {
                tries += 1;
                // nginx: five tries half a second apart (a process that
                // is stopping may still hold the port), each one said.
                log::error!(
                    "listen {addr}: address already in use (another process holds it); trying again ({tries} of {})",
                    BIND_TRIES - 1
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Accept connections until the server stops.
async fn accept_loop<P: ProxyHttp>(
    http: Arc<FerryHttp<P>>,
    live: Arc<Live>,
    endpoint: Arc<Endpoint>,
    listener: Arc<TcpListener>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            changed = shutdown.changed() => match changed {
                Ok(()) if !*shutdown.borrow() => continue,
                _ => break,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                let accepted = Accepted {
                    live: live.clone(),
                    endpoint: endpoint.clone(),
                    tcp,
                    peer,
                };
                let http = http.clone();
                // Spread over the server's threads as Pingora's listener does.
                pingora_runtime::current_handle().spawn(connection(
                    http,
                    accepted,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                log::error!("accept on {}: {e}", endpoint.listen.addr);
                // Out of file descriptors: accept would fail again at once.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    log::info!("stopped listening on {}", endpoint.listen.addr);
}

/// One connection, from its start to its last request: the future its
/// task runs.
fn connection<P: ProxyHttp>(
    http: Arc<FerryHttp<P>>,
    accepted: Accepted,
    shutdown: ShutdownWatch,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // The task's future is the HTTP/1 loop itself, with only what it owns:
    // every byte of it is on every idle connection. The handshake (the
    // PROXY header, TLS) and the look for HTTP/2 run before it, boxed, so
    // a waiting connection's task carries neither their room nor the
    // accepted socket's; the handshake in a box of its own, so that an
    // HTTP/2 connection, served inside the second box for its whole life,
    // does not keep a TLS handshake's state too.
    let h2c = accepted.endpoint.listen.h2c;
    let begin = Box::pin(accepted.handshake());
    let first = {
        let http = http.clone();
        Box::pin(async move {
            let stream = begin.await?;
            http.serve_http2(stream, h2c, &shutdown).await
        })
    };
    http.serve_http1(first)
}

/// A connection just accepted.
struct Accepted {
    live: Arc<Live>,
    endpoint: Arc<Endpoint>,
    tcp: TcpStream,
    peer: SocketAddr,
}

impl Accepted {
    /// The stream its requests are read from: after the PROXY header and
    /// the TLS handshake, with the header clock under the session. `None`
    /// when the connection is closed before any request.
    async fn handshake(self) -> Option<Box<ClockedStream>> {
        if let Err(e) = self.tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY on a client connection: {e}");
        }
        let (limits, trusted) = {
            let rt = self.live.current();
            (rt.limits, rt.real_ip.clone())
        };
        let mut stream = ClientStream::new(self.tcp, self.peer);
        let announced = if self.endpoint.listen.proxy_protocol {
            let peer = stream.peer();
            ProxyProtocol { trusted }
                .read(&mut stream, peer)
                .await
                .ok()?
        } else {
            None
        };
        let transport = match &self.endpoint.tls {
            None => Transport::Plain(stream),
            Some(tls) => {
                // The pair current now: a reload after this leaves this
                // connection with it.
                let tls = tls.load_full();
                let stream = stream.under_tls();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.tls_handshake(stream)).await {
                    Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        log::error!("TLS handshake from {}: {e}", self.peer);
                        return None;
                    }
                    Err(_) => {
                        log::error!("TLS handshake from {}: timed out", self.peer);
                        return None;
                    }
                }
            }
        };
        Some(Box::new(ClockedStream::new(transport, limits, announced)))
    }
}
