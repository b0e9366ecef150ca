//! An accepted client connection as Pingora's `IO`: the socket, its
//! address, and a write buffer that exists only while a response is being
//! written.
//!
//! nginx counterpart: `ngx_connection_t` with the buffers
//! `ngx_http_set_keepalive` frees. Between two requests a keepalive
//! connection here holds its socket and a few words: the write buffer and
//! the socket digest Pingora's session asks for are made again by the next
//! request and dropped when the connection waits ([`ClientStream::idle`]).
//! Under TLS, which never waits there (an HTTP/2 connection stays open
//! between its streams), the write buffer goes at each flush that empties
//! it. Pingora's own stream keeps a 1,460-byte write buffer, a digest and
//! its layers for the connection's whole life.
//!
//! Writes are buffered as Pingora's are (a response header and a small body
//! leave in one `write`, at the flush Pingora's session makes); a response
//! head is made in the buffer itself. A write that does not fit, or on
//! plain TCP one of more than a few hundred bytes after a head, goes out at
//! once, in one `writev` with what was kept (not copied in).
//! A response whose writes must leave at once (an unbuffered one, or a
//! header before a body sent past the stream with sendfile(2),
//! [`crate::client::sendfile`]) is flushed write by write from above, by
//! the header clock (`flush_each_write`).

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The most bytes kept before they are sent: a response header and a small
/// body.
const KEEP: usize = 4096;
/// The most bytes of one write copied beside others already kept (see
/// `ClientStream::keep`).
const COPY_MOST: usize = 256;
/// The most slices one `writev` is given.
const MAX_SLICES: usize = 16;

/// One accepted TCP connection.
#[derive(Debug)]
pub(crate) struct ClientStream {
    tcp: TcpStream,
    peer: SocketAddr,
    established: SystemTime,
    /// Written and not yet sent. No allocation between responses.
    kept: Vec<u8>,
    /// `kept`'s room goes once a flush has sent it all: under TLS, where
    /// the connection never waits in [`ClientStream::idle`] (HTTP/2 holds
    /// it open between its streams).
    free_when_sent: bool,
    /// Made on the first ask of a request; dropped while the connection
    /// waits for the next one.
    digest: OnceLock<Arc<SocketDigest>>,
    proxy_digest: Option<Arc<ProxyDigest>>,
}

impl ClientStream {
    pub(crate) fn new(tcp: TcpStream, peer: SocketAddr) -> ClientStream {
        ClientStream {
            tcp,
            peer,
            established: SystemTime::now(),
            kept: Vec::new(),
            free_when_sent: false,
            digest: OnceLock::new(),
            proxy_digest: None,
        }
    }

    /// This stream carries TLS: the write buffer's room goes once a flush
    /// has sent what it held.
    pub(crate) fn under_tls(mut self) -> ClientStream {
        self.free_when_sent = true;
        self
    }

    /// The connection waits for its next request: the write buffer and
    /// the digest go (the next request makes them again); the socket to
    /// wait on comes back.
    pub(crate) fn idle(&mut self) -> &TcpStream {
        if self.kept.is_empty() {
            self.kept = Vec::new();
        }
        self.digest = OnceLock::new();
        &self.tcp
    }

    /// The socket, for a body sent past the stream.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Nothing written waits to be sent.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.kept.is_empty()
    }

    /// The address the connection came from.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Send what is kept: `Ready(Ok)` once nothing is.
    fn poll_send_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.kept.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.kept))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.kept.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Send what is kept and then `bufs` in one `writev` for as long as
    /// the kernel takes it all: how many of `bufs`' bytes went out, once
    /// some did.
    fn poll_send_with_kept(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.kept.is_empty() {
                return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&self.kept);
            let count = 1 + bufs.len().min(MAX_SLICES - 1);
            slices[1..count].copy_from_slice(&bufs[..count - 1]);
            let n = ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < self.kept.len() {
                self.kept.drain(..n);
                continue;
            }
            let theirs = n - self.kept.len();
            self.kept.clear();
            if theirs > 0 {
                return Poll::Ready(Ok(theirs));
            }
        }
    }

    /// The buffer of what is kept, for a response head to be made in it
    /// rather than copied into it (it leaves at the next flush, or with the
    /// first write that does not fit beside it).
    pub(crate) fn kept_buffer(&mut self) -> &mut Vec<u8> {
        if self.kept.capacity() == 0 {
            self.kept.reserve_exact(KEEP);
        }
        &mut self.kept
    }

    /// Keep `bufs` when they fit beside what is kept.
    fn keep(&mut self, bufs: &[IoSlice<'_>], len: usize) -> bool {
        if self.kept.len() + len > KEEP {
            return false;
        }
        // On plain TCP, a piece of some size goes out at once beside what is
        // kept (a response head and its body in one `writev`, as nginx's
        // chain), rather than copied in only to leave at the flush.
        if !self.free_when_sent && len > COPY_MOST && !self.kept.is_empty() {
            return false;
        }
        if self.kept.capacity() == 0 {
            self.kept.reserve_exact(KEEP);
        }
        for b in bufs {
            self.kept.extend_from_slice(b);
        }
        true
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if me.keep(bufs, len) {
            return Poll::Ready(Ok(len));
        }
        me.poll_send_with_kept(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send_kept(cx))?;
        if me.free_when_sent {
            me.kept = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send_kept(cx))?;
        Pin::new(&mut me.tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Peek for ClientStream {
    /// Wait for the next request's first byte, holding nothing for it: the
    /// write buffer and the digest go. `Ok(true)` when a byte is there
    /// (left in the socket for the header's read), an error at the end of
    /// the stream.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.idle().peek(buf).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(true),
        }
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            log::debug!("closing a client connection: {e}");
        }
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for ClientStream {}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.proxy_digest.clone()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.proxy_digest = Some(Arc::new(digest));
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let digest = self.digest.get_or_init(|| {
            let d = SocketDigest::from_raw_fd(self.tcp.as_raw_fd());
            let _ = d.peer_addr.set(Some(PeerAddr::Inet(self.peer)));
            Arc::new(d)
        });
        Some(digest.clone())
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.digest = OnceLock::from(Arc::new(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair: Ferry's side as a `ClientStream`, and the client.
    async fn pair() -> (ClientStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (tcp, peer) = l.accept().await.expect("accept");
        (ClientStream::new(tcp, peer), client)
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush_and_large_ones_go_at_once() {
        let (mut s, mut client) = pair().await;
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(s.kept.len(), 19, "kept until the flush");
        let big = vec![b'x'; KEEP * 2];
        s.write_all(&big).await.expect("write");
        assert!(
            s.kept.is_empty(),
            "the kept bytes left with the large write"
        );
        s.write_all(b"tail").await.expect("write");
        s.flush().await.expect("flush");
        let mut got = vec![0u8; 19 + big.len() + 4];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..19], b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(got[19..19 + big.len()].iter().all(|b| *b == b'x'));
        assert_eq!(&got[19 + big.len()..], b"tail");
    }

    #[tokio::test]
    async fn waiting_holds_nothing_and_leaves_the_byte_for_the_read() {
        let (mut s, mut client) = pair().await;
        s.write_all(b"hi").await.expect("write");
        s.flush().await.expect("flush");
        let digest = s.get_socket_digest().expect("digest");
        assert_eq!(
            digest.peer_addr().and_then(|a| a.as_inet()).copied(),
            Some(client.local_addr().expect("addr"))
        );
        client.write_all(b"G").await.expect("write");
        let mut one = [0u8; 1];
        assert!(s.try_peek(&mut one).await.expect("peek"));
        assert_eq!(s.kept.capacity(), 0, "no write buffer while waiting");
        assert!(s.digest.get().is_none(), "no digest while waiting");
        let mut read = [0u8; 1];
        s.read_exact(&mut read).await.expect("read");
        assert_eq!(&read, b"G", "the peeked byte is still there to read");
        drop(client);
        assert!(s.try_peek(&mut one).await.is_err(), "the client closed");
    }

    #[tokio::test]
    async fn under_tls_the_write_buffer_goes_at_each_flush() {
        let (s, mut client) = pair().await;
        let mut s = s.under_tls();
        s.write_all(b"record").await.expect("write");
        assert!(
            s.kept.capacity() > 0,
            "small writes are kept until the flush"
        );
        s.flush().await.expect("flush");
        assert_eq!(s.kept.capacity(), 0, "no write buffer once it is sent");
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"record");

        let (mut plain, _client) = pair().await;
        plain.write_all(b"x").await.expect("write");
        plain.flush().await.expect("flush");
        assert!(
            plain.kept.capacity() > 0,
            "plain TCP keeps it for the request"
        );
        let _ = plain.idle();
        assert_eq!(plain.kept.capacity(), 0, "until the connection waits");
    }
}
