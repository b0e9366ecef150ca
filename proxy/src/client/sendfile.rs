//! A response body sent from a file with sendfile(2): the kernel moves the
//! file's pages to the client's socket and the bytes never enter Ferry.
//! Only a plain-TCP HTTP/1 client has a socket to send to (TLS encrypts in
//! Ferry, HTTP/2 frames); the caller decides that nothing must see or
//! change the bytes. The socket stays tokio's: a call that would block
//! clears its readiness, and the next waits for it to be writable again.
//!
//! nginx counterpart: `ngx_linux_sendfile_chain`, with `send_timeout`
//! bounding each wait for the socket to take more and `sendfile_max_chunk`
//! (2 MiB) the most one call sends.

use crate::client::stream::ClientStream;
use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::Interest;

/// The most one call sends (nginx's `sendfile_max_chunk`); then the task
/// lets others run before it sends more.
const MAX_CHUNK: u64 = 2 << 20;

/// How a send ended short.
#[derive(Debug)]
pub(crate) enum Cut {
    /// The client went away (or its socket failed).
    Client(io::Error),
    /// The socket took nothing for the whole `send_timeout`.
    TimedOut,
    /// The file ended before the bytes asked for, or could not be read.
    File(io::Error),
}

/// Send `len` bytes of `file` from `offset` to `to`'s socket, adding them
/// to `sent` as they go. `limit` bounds each wait for the socket.
pub(crate) async fn send(
    to: &ClientStream,
    file: &File,
    offset: u64,
    len: u64,
    limit: Option<Duration>,
    sent: &mut u64,
) -> Result<(), Cut> {
    let tcp = to.tcp();
    let (out, from) = (tcp.as_raw_fd(), file.as_raw_fd());
    let (mut at, end) = (offset, offset + len);
    let mut since_wait = 0u64;
    while at < end {
        let want = (end - at).min(MAX_CHUNK);
        match tcp.try_io(Interest::WRITABLE, || once(out, from, at, want)) {
            Ok(0) => return Err(Cut::File(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                at += n as u64;
                *sent += n as u64;
                since_wait += n as u64;
                if since_wait >= MAX_CHUNK && at < end {
                    since_wait = 0;
                    tokio::task::yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                since_wait = 0;
                writable(to, limit).await?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Err(Cut::File(e)),
            Err(e) => return Err(Cut::Client(e)),
        }
    }
    Ok(())
}

/// Wait until the socket takes more, for at most `limit`.
async fn writable(to: &ClientStream, limit: Option<Duration>) -> Result<(), Cut> {
    let ready = to.tcp().writable();
    let r = match limit {
        Some(t) => match tokio::time::timeout(t, ready).await {
            Ok(r) => r,
            Err(_) => return Err(Cut::TimedOut),
        },
        None => ready.await,
    };
    r.map_err(Cut::Client)
}

/// One sendfile(2) call: up to `want` bytes of `from` at `at` to `out`.
fn once(out: RawFd, from: RawFd, at: u64, want: u64) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(at).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call (the socket and the
    // file are borrowed by the caller), and `off` is a live local.
    let n = unsafe { libc::sendfile(out, from, &mut off, want as usize) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
