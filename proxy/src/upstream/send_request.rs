//! Sending the request to the upstream: the header, then the body.
//!
//! nginx counterpart: `ngx_http_upstream_send_request` with `send_timeout`
//! between two writes. A buffered body is replayed from the request buffer
//! (memory, then temp file) on every try; with `request_buffering: false` the
//! body streams from the client, and once any of it was sent no retry is
//! possible.

use crate::upstream::connect::Conn;
use crate::upstream::leg::{BodySource, Leg};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;

/// Send `req` (boxed as Pingora takes it, so that the futures of a try
/// carry a pointer rather than the header) and then the leg's body.
pub async fn send<L: Leg>(conn: &mut Conn, req: Box<RequestHeader>, leg: &mut L) -> Result<()> {
    let s = &mut conn.session;
    s.write_request_header(req).await?;
    if matches!(leg.body(), BodySource::Stream) {
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
