//! The unbuffered pipe (`buffering: false`, or `X-Accel-Buffering: no`):
//! read a piece from the upstream, write it to the client, and read again
//! only once the client took it. The client's speed rules; the upstream
//! connection is held for the whole download.
//!
//! nginx counterpart: `ngx_http_upstream_process_non_buffered_request`. nginx
//! reads into one `proxy_buffer_size` buffer; Ferry reads what Pingora's body
//! reader returns (one socket read) and holds only that piece.

use crate::pipe::{
    read_watching, BodyFilter, DownstreamBody, FailKind, PipeError, PipeOutcome, Side, UpstreamBody,
};
use bytes::Bytes;

pub async fn run<U: UpstreamBody, C: DownstreamBody, F: BodyFilter + ?Sized>(
    mut upstream: U,
    mut client: C,
    filter: &mut F,
) -> PipeOutcome {
    let mut out = PipeOutcome::default();
    loop {
        // Wait for the upstream, looking in on the client meanwhile.
        let Some(read) = read_watching(&mut upstream, &mut client).await else {
            out.error = Some(client_gone());
            return out;
        };
        let piece = match read {
            Ok(p) => p,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        out.received += piece.as_ref().map_or(0, |b| b.len() as u64);
        if piece.is_some() && !upstream.is_done() {
            if let Err(e) = pass(&mut client, filter, piece, false, &mut out).await {
                out.error = Some(e);
                return out;
            }
            continue;
        }
        return last_piece(upstream, client, filter, piece, out).await;
    }
}

pub(crate) fn client_gone() -> PipeError {
    PipeError::new(
        Side::Client,
        FailKind::Error,
        "client closed the connection",
    )
}

/// The upstream body is complete with `piece`: free the upstream before the
/// client has it all, then write the piece and end the body.
pub(crate) async fn last_piece<U: UpstreamBody, C: DownstreamBody, F: BodyFilter + ?Sized>(
    upstream: U,
    mut client: C,
    filter: &mut F,
    piece: Option<Bytes>,
    mut out: PipeOutcome,
) -> PipeOutcome {
    out.upstream_complete = true;
    upstream.release().await;
    out.error = finish(&mut client, filter, piece, &mut out).await.err();
    out
}

/// Run the last piece, then the end, through the filter; write what comes
/// out and end the body, with the last bytes when the end adds none.
async fn finish<C: DownstreamBody, F: BodyFilter + ?Sized>(
    client: &mut C,
    filter: &mut F,
    mut piece: Option<Bytes>,
    out: &mut PipeOutcome,
) -> Result<(), PipeError> {
    if piece.is_some() {
        run_filter(filter, &mut piece, false)?;
    }
    let mut tail = None;
    run_filter(filter, &mut tail, true)?;
    let last = match (non_empty(piece), non_empty(tail)) {
        (Some(p), Some(t)) => {
            let n = p.len() as u64;
            client.write(p).await?;
            out.sent += n;
            t
        }
        (p, t) => p.or(t).unwrap_or_default(),
    };
    let n = last.len() as u64;
    client.end(last).await?;
    out.sent += n;
    Ok(())
}

/// Run one piece through the filter and write what comes out.
pub(crate) async fn pass<C: DownstreamBody, F: BodyFilter + ?Sized>(
    client: &mut C,
    filter: &mut F,
    mut piece: Option<Bytes>,
    end: bool,
    out: &mut PipeOutcome,
) -> Result<(), PipeError> {
    run_filter(filter, &mut piece, end)?;
    if let Some(b) = non_empty(piece) {
        let n = b.len() as u64;
        client.write(b).await?;
        out.sent += n;
    }
    Ok(())
}

fn run_filter<F: BodyFilter + ?Sized>(
    filter: &mut F,
    piece: &mut Option<Bytes>,
    end: bool,
) -> Result<(), PipeError> {
    filter
        .filter(piece, end)
        .map_err(|m| PipeError::new(Side::Client, FailKind::Error, m))
}

fn non_empty(piece: Option<Bytes>) -> Option<Bytes> {
    piece.filter(|b| !b.is_empty())
}
