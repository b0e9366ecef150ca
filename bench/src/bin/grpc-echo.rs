//! The gRPC benchmark's backend: a unary echo server over cleartext HTTP/2
//! with prior knowledge (h2c), one thread. Each call's length-prefixed
//! message is sent back whole, then `grpc-status: 0` in trailers (3,
//! INVALID_ARGUMENT, when the body is not one gRPC message). nginx
//! counterpart: none; it stands where a gRPC server stands behind nginx's
//! `grpc_pass` and Ferry's `http_version: "2"`.
//!
//! `GET /count` answers three numbers: the calls it has answered with
//! status 0 (so the benchmark can check that every call its client saw
//! succeed reached this server), its open connections and the connections
//! it has accepted. Usage: `grpc-echo LISTEN`.

use bytes::{Bytes, BytesMut};
use h2::server::{self, SendResponse};
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: grpc-echo LISTEN");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.and_then(|rt| rt.block_on(serve(&addr)));
    if let Err(e) = result {
        eprintln!("grpc-echo: {addr}: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let counts = Arc::new(Counts::default());
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(sock, counts.clone()));
    }
}

/// What `GET /count` reports.
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    open: AtomicU64,
    accepted: AtomicU64,
}

async fn connection(sock: TcpStream, counts: Arc<Counts>) {
    if let Ok(mut conn) = server::handshake(sock).await {
        while let Some(Ok((request, respond))) = conn.accept().await {
            tokio::spawn(call(request, respond, counts.clone()));
        }
    }
    counts.open.fetch_sub(1, Ordering::Relaxed);
}

async fn call(request: Request<RecvStream>, respond: SendResponse<Bytes>, counts: Arc<Counts>) {
    if request.uri().path() == "/count" {
        let [a, o, c] =
            [&counts.answered, &counts.open, &counts.accepted].map(|n| n.load(Ordering::Relaxed));
        send(
            respond,
            "text/plain",
            Bytes::from(format!("{a} {o} {c}")),
            None,
        );
        return;
    }
    let Ok(message) = read_body(request.into_body()).await else {
        return;
    };
    let ok = is_one_message(&message);
    let status = HeaderValue::from_static(if ok { "0" } else { "3" });
    if send(respond, "application/grpc", message, Some(status)) && ok {
        counts.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends a 200 with `body`, then `grpc-status` in trailers when given;
/// whether all of it was queued.
fn send(
    mut respond: SendResponse<Bytes>,
    content_type: &'static str,
    body: Bytes,
    grpc_status: Option<HeaderValue>,
) -> bool {
    let mut head = Response::new(());
    head.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    let Ok(mut stream) = respond.send_response(head, false) else {
        return false;
    };
    let Some(status) = grpc_status else {
        return stream.send_data(body, true).is_ok();
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status);
    stream.send_data(body, false).is_ok() && stream.send_trailers(trailers).is_ok()
}

/// The whole request body, its flow-control window given back as it comes.
async fn read_body(mut body: RecvStream) -> Result<Bytes, h2::Error> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if more.is_empty() {
                    more.extend_from_slice(head);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    Ok(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    })
}

/// Whether `body` is exactly one uncompressed gRPC message: a 0 flag byte,
/// a 4-byte big-endian length, then that many bytes.
fn is_one_message(body: &[u8]) -> bool {
    let Some((prefix, message)) = body.split_first_chunk::<5>() else {
        return false;
    };
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    prefix[0] == 0 && usize::try_from(len).is_ok_and(|n| n == message.len())
}
