//! Whether the client is still there, asked of its socket while Ferry
//! waits on the upstream (connect, send, the header, a slow body).
//!
//! nginx counterpart: `ngx_http_upstream_check_broken_connection`, which
//! peeks at the client socket (`recv` with `MSG_PEEK`) when it becomes
//! readable; Ferry peeks on Pingora's timer wheel instead, since the socket
//! belongs to Pingora's session. A client that sent more (a pipelined
//! request, its body) is still there; one that closed reads end-of-file.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// The client closed its end of the socket `fd` (or reset it).
pub(crate) fn has_closed(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer, on a socket the session
    // owns and keeps open for as long as this request runs.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // 0: the client closed; an error other than "would block": reset.
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

/// Run `work` unless the client on `fd` leaves first (`None` then: `work`
/// is dropped, and with it whatever it held upstream). Without a socket to
/// watch (`fd` is `None`: HTTP/2, or `ignore_client_abort`), just `work`.
/// Work that is done at once arms no timer.
pub(crate) async fn unless_client_leaves<F: Future>(fd: Option<i32>, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let Some(fd) = fd else {
        return Some(work.await);
    };
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    if let Poll::Ready(out) = first {
        return Some(out);
    }
    loop {
        let check = ferry_filters::pipe::client_check();
        // The work first: its end is what wakes the task nearly always,
        // and the check's slot is then not looked at.
        tokio::select! {
            biased;
            out = work.as_mut() => return Some(out),
            () = check => {
                if has_closed(fd) {
                    return None;
                }
            }
        }
    }
}
