//! A request body streamed to the upstream as it arrives
//! (`request_buffering: false`): each piece read from the client, then
//! through the program's `request_body_filter`.
//!
//! nginx counterpart: `ngx_http_read_unbuffered_request_body` and the
//! request body filters it runs.
//!
//! Reading and filtering are two steps on purpose: the read is the only
//! wait, and it may be given up (a full-duplex gRPC stream waits on the
//! client and the server at once); a piece once read always goes through
//! the filter.

use crate::client::downstream::Downstream;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
pub(crate) use crate::upstream::leg::Piece;
use bytes::Bytes;
use ferry_filters::headers::BodyFraming;
use pingora_error::{Error, ErrorType, Result};

/// How far a streamed body went: bytes the filter let through, and
/// whether its end was seen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Streamed {
    pub bytes: u64,
    pub ended: bool,
}

fn as_client(mut e: Box<Error>) -> Box<Error> {
    e.as_down();
    e
}

/// The next piece as the client sent it (`None` at the body's end). Safe to
/// give up: nothing read is lost.
pub(crate) async fn read(ds: &mut Downstream) -> Result<Option<Bytes>> {
    loop {
        let read = ds.read_request_body().await.map_err(as_client)?;
        // Pingora hands back an empty piece when a read ends inside a
        // chunk-size line or a CRLF. Written to a chunked upstream body,
        // nothing would be the terminating `0\r\n\r\n`, and the rest of
        // the client's body a request of its choosing.
        if !read.as_ref().is_some_and(Bytes::is_empty) {
            return Ok(read);
        }
    }
}

/// `read` through `request_body_filter`. A body sent with a
/// `Content-Length` must keep its length (the upstream was told it).
pub(crate) async fn filter<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    (framing, streamed): (BodyFraming, &mut Streamed),
    read: Option<Bytes>,
) -> Result<Piece> {
    let end = read.is_none();
    let mut piece = read;
    app.request_body_filter(s, &mut piece, end, ctx)
        .await
        .map_err(as_client)?;
    streamed.ended = end;
    let piece = piece.filter(|p| !p.is_empty());
    streamed.bytes += piece.as_ref().map_or(0, |p| p.len() as u64);
    if let (true, BodyFraming::Length(n)) = (end, framing) {
        if streamed.bytes != n {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "request_body_filter made a streamed body of {} bytes out of one sent with Content-Length: {n}",
                    streamed.bytes
                ),
            );
        }
    }
    Ok(match piece {
        Some(p) => Piece::Data(p),
        None if end => Piece::End,
        None => Piece::Nothing,
    })
}
