//! Sending the request to the upstream: the header, then the body.
//!
//! nginx counterpart: `ngx_http_upstream_send_request` with `send_timeout`
//! between two writes. A buffered body is replayed from the request buffer
//! (memory, then temp file) on every try; with `request_buffering: false` the
//! body streams from the client, and once any of it was sent no retry is
//! possible.

use crate::upstream::connect::Conn;
use crate::upstream::leg::{BodySource, Leg, Piece};
use crate::upstream::request_head::RequestHead;
use pingora_error::{ErrorType, OrErr, Result};

/// Send `req` (a header boxed as Pingora takes it, so that the futures of
/// a try carry a pointer rather than the header) and then the leg's body.
pub async fn send<L: Leg>(conn: &mut Conn, req: RequestHead, leg: &mut L) -> Result<()> {
    conn.session.write_request_header(req).await?;
    let streams = matches!(leg.body(), BodySource::Stream);
    if streams && conn.session.is_h2() {
        return send_duplex(conn, leg).await;
    }
    let s = &mut conn.session;
    if streams {
        while let Some(chunk) = leg.stream_piece().await? {
            s.write_body(&chunk).await?;
        }
    } else {
        match leg.body() {
            BodySource::None | BodySource::Stream => {}
            BodySource::Memory(b) => {
                s.write_body(b).await?;
            }
            BodySource::Buffered(b) => {
                let mut replay = b.replay();
                while let Some(chunk) = replay
                    .next_chunk()
                    .or_err(ErrorType::InternalError, "reading the request body buffer")?
                {
                    s.write_body(&chunk).await?;
                }
            }
        }
    }
    s.finish_body().await?;
    Ok(())
}

/// A streamed body on an HTTP/2 stream: sent as it comes while the
/// response header is awaited, since a server may answer before the body
/// ends and wait for the client to read before it takes more (gRPC's
/// bidirectional calls). When the header comes first the rest of the body
/// is the response relay's to send (`request_open`).
async fn send_duplex<L: Leg>(conn: &mut Conn, leg: &mut L) -> Result<()> {
    loop {
        let read = tokio::select! {
            biased;
            header = conn.session.read_response_header() => {
                header?;
                conn.request_open = true;
                return Ok(());
            }
            read = leg.read_piece() => read?,
        };
        match leg.filter_piece(read).await? {
            Piece::Data(p) => conn.session.write_body(&p).await?,
            Piece::Nothing => {}
            Piece::End => return conn.session.finish_body().await,
        }
    }
}
