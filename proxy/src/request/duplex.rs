//! A response that comes while its request body still streams: both
//! directions of an HTTP/2 stream at once (gRPC's bidirectional and
//! server-answers-early calls), each piece through the program's body
//! hooks, and the server's trailers to the client at the end.
//!
//! nginx counterpart: the gRPC module's and HTTP/2 proxy's full-duplex
//! handling (`ngx_http_grpc_body_output_filter` sending the rest of the
//! request body while `ngx_http_upstream_process_non_buffered_request`
//! relays the response). Neither the event pipe nor the cache is in the
//! way: such a response is relayed as it comes, as `buffering: false`.

use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::End;
use crate::request::body_stream::{self, Piece, Streamed};
use crate::response::body_pipe::end_body;
use crate::upstream::connect::Conn;
use bytes::Bytes;
use ferry_filters::headers::BodyFraming;
use pingora_error::Result;

/// The request body's way on: its framing and how far it went.
pub(crate) type OpenBody = (BodyFraming, Streamed);

/// Relay both ways until the server's response ends (its trailers sent
/// on); the rest of the request body, if any, is not sent.
pub(crate) async fn relay<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    mut conn: Conn,
    (framing, mut streamed): OpenBody,
) -> End {
    let moved = async {
        loop {
            tokio::select! {
                read = body_stream::read(s.downstream), if !streamed.ended => {
                    let piece = body_stream::filter(app, s, ctx, (framing, &mut streamed), read?);
                    match piece.await? {
                        Piece::Data(p) => conn.session.write_body(&p).await?,
                        Piece::Nothing => {}
                        Piece::End => conn.session.finish_body().await?,
                    }
                }
                read = conn.session.read_body_bytes() => {
                    if to_client(app, s, ctx, &mut conn, read?).await? {
                        return Ok(());
                    }
                }
            }
        }
    };
    let moved: Result<()> = moved.await;
    match moved {
        Ok(()) => {
            conn.release().await;
            End::Complete
        }
        Err(e) => {
            log::error!("gRPC/HTTP/2 stream cut short: {e}");
            conn.close();
            End::Truncated
        }
    }
}

/// One piece of the response through both body hooks to the client; at
/// its end the trailers follow. `true`: the response is done.
async fn to_client<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    conn: &mut Conn,
    read: Option<Bytes>,
) -> Result<bool> {
    let end = read.is_none() || conn.session.is_body_done();
    let mut piece = read;
    app.upstream_response_body_filter(s.request, &mut piece, end, ctx)?;
    app.response_body_filter(s.request, &mut piece, end, ctx)?;
    let piece = piece.unwrap_or_default();
    s.request.body_bytes_sent += piece.len() as u64;
    if !end {
        if !piece.is_empty() {
            s.downstream.write_response_body(piece, false).await?;
        }
        return Ok(false);
    }
    let mut trailers = conn.session.read_trailers().await?.unwrap_or_default();
    if !trailers.is_empty() {
        app.upstream_response_trailer_filter(s.request, &mut trailers, ctx)?;
    }
    if s.downstream.is_http2() && !trailers.is_empty() {
        app.response_trailer_filter(s.request, &mut trailers, ctx)?;
    }
    let trailers = (s.downstream.is_http2() && !trailers.is_empty()).then_some(trailers);
    end_body(s.downstream, piece, trailers).await?;
    Ok(true)
}
