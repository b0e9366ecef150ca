//! Closing a connection whose request was refused while the client may
//! still be sending it (a header past its bound, a malformed one): the
//! answer goes out, the write side is shut, and what the client still sends
//! is read and dropped for a while before the close. Closing at once, with
//! unread bytes, would reset the connection, and the client could lose the
//! answer.
//!
//! nginx counterpart: `ngx_http_set_lingering_close` (`lingering_close on`,
//! `lingering_time` 30s, `lingering_timeout` 5s).

use pingora_core::protocols::http::ServerSession;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// nginx `lingering_time`: the longest a refused connection is drained.
const LINGERING_TIME: Duration = Duration::from_secs(30);
/// nginx `lingering_timeout`: the longest wait for more bytes.
const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn lingering_close(session: ServerSession) {
    let ServerSession::H1(h1) = session else {
        return;
    };
    let mut stream = h1.into_inner();
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGERING_TIME;
    let mut scratch = vec![0u8; 4096];
    while Instant::now() < until {
        match ferry_timer::timeout(LINGERING_TIMEOUT, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
