//! An HTTP/2 server connection written frame by frame, for the one thing
//! `h2::server` cannot do: a GOAWAY whose last_stream_id leaves a stream
//! the server has received unprocessed (RFC 9113, 6.8), as a server going
//! away under load does (nginx's counterpart: an upstream closing its
//! HTTP/2 connection with streams in flight). Served by
//! [`crate::h2_server::H2Server::goaway_after`].

use crate::h2_server::Counts;
use crate::serve::BoxIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM_AND_HEADERS: u8 = 0x5;
/// HPACK: `:status: 200`, index 8 of the static table.
const STATUS_200: u8 = 0x88;

/// Serve one connection: answer its first `answered` streams with an empty
/// 200, then GOAWAY at the next one, naming the last answered stream.
pub(crate) async fn serve_conn(mut io: BoxIo, answered: usize, counts: Arc<Counts>) {
    let mut preface = [0u8; 24];
    if io.read_exact(&mut preface).await.is_err()
        || write(&mut io, SETTINGS, 0, 0, &[]).await.is_err()
    {
        return;
    }
    let (mut newest, mut done) = (0u32, Vec::new());
    while let Some((kind, flags, stream, payload)) = read_frame(&mut io).await {
        let sent = match kind {
            SETTINGS if flags & ACK == 0 => write(&mut io, SETTINGS, ACK, 0, &[]).await,
            PING if flags & ACK == 0 => write(&mut io, PING, ACK, 0, &payload).await,
            HEADERS if stream > newest => {
                newest = stream;
                counts.streams.fetch_add(1, Ordering::SeqCst);
                if done.len() == answered {
                    break;
                }
                done.push(stream);
                write(
                    &mut io,
                    HEADERS,
                    END_STREAM_AND_HEADERS,
                    stream,
                    &[STATUS_200],
                )
                .await
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
    let last = done.last().copied().unwrap_or(0);
    let mut goaway = last.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    let _ = write(&mut io, GOAWAY, 0, 0, &goaway).await;
    let _ = io.shutdown().await;
    drain(&mut io).await;
}

/// Read until the peer closes (bounded), so it reads the GOAWAY before the
/// connection goes.
async fn drain(io: &mut BoxIo) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(crate::WAIT, async {
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One frame: type, flags, stream id, payload.
async fn read_frame(io: &mut BoxIo) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

async fn write(
    io: &mut BoxIo,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}
