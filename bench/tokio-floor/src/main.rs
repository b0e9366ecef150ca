//! tokio-floor: the least an HTTP/1 keepalive proxy on tokio costs, a
//! measuring stick for the benchmark (no nginx counterpart; it stands beside
//! nginx's `proxy_pass`). One thread (current_thread runtime); each client
//! connection gets its own upstream connection; each request, then its
//! response, is framed by httparse and Content-Length and its bytes are
//! forwarded as they are. No chunked bodies, no edits, no timeouts.
//!   tokio-floor LISTEN_ADDR UPSTREAM_ADDR
use std::io::{Error, ErrorKind, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "usage: tokio-floor LISTEN UPSTREAM",
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen.as_str()).await?;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move { pass(client, &upstream).await });
        }
    })
}

/// Requests and responses of one client connection, until either side closes.
async fn pass(mut client: TcpStream, upstream: &str) -> Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    up.set_nodelay(true)?;
    let (mut from_client, mut from_up) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    loop {
        relay(&mut client, &mut up, &mut from_client, false).await?;
        relay(&mut up, &mut client, &mut from_up, true).await?;
    }
}

/// Forwards one message: read until its head is complete, then its
/// Content-Length body bytes; `buf` keeps what was read past its end.
async fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut Vec<u8>,
    response: bool,
) -> Result<()> {
    let mut left = loop {
        if let Some(len) = framing(buf, response)? {
            break len;
        }
        read_more(from, buf).await?;
    };
    while left > 0 {
        if buf.is_empty() {
            read_more(from, buf).await?;
        }
        let n = buf.len().min(left);
        to.write_all(&buf[..n]).await?;
        buf.drain(..n);
        left -= n;
    }
    Ok(())
}

/// The whole message's length (head and body) once its head is complete.
fn framing(buf: &[u8], response: bool) -> Result<Option<usize>> {
    let bad = |e: httparse::Error| Error::new(ErrorKind::InvalidData, e);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (status, headers) = if response {
        let mut r = httparse::Response::new(&mut headers);
        (r.parse(buf).map_err(bad)?, r.headers)
    } else {
        let mut r = httparse::Request::new(&mut headers);
        (r.parse(buf).map_err(bad)?, r.headers)
    };
    let httparse::Status::Complete(head) = status else {
        return Ok(None);
    };
    let length = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let body = match length.map(|h| {
        std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    }) {
        Some(Some(n)) => n,
        Some(None) => return Err(Error::new(ErrorKind::InvalidData, "bad Content-Length")),
        None if response => return Err(Error::new(ErrorKind::InvalidData, "no Content-Length")),
        None => 0,
    };
    Ok(Some(head + body))
}

async fn read_more(from: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    buf.reserve(65536);
    match from.read_buf(buf).await? {
        0 => Err(Error::from(ErrorKind::UnexpectedEof)),
        _ => Ok(()),
    }
}
