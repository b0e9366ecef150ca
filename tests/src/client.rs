//! A raw client for checks on the bytes a client receives (truncation, final
//! chunk, framing), where a full HTTP client would hide them.

use crate::WAIT;

/// GET `url` and return the body as text.
pub async fn text(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    http.get(url)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

/// A real HTTP client (reqwest) that never goes through a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `request` and read until the server closes (bounded by [`WAIT`]).
/// Returns the bytes and whether the server closed the connection.
pub async fn exchange(addr: SocketAddr, request: &str) -> (Vec<u8>, bool) {
    exchange_bytes(addr, request.as_bytes()).await
}

/// [`exchange`] for a request that is not text (a binary PROXY header, say).
pub async fn exchange_bytes(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect to ferry");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    (out, closed)
}

/// A GET with `Connection: close`.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

/// The status of a raw response.
pub fn status_of(bytes: &[u8]) -> u16 {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(_) => resp.code.unwrap_or(0),
        Err(_) => 0,
    }
}

/// The header block and the body of a raw response.
pub fn split(bytes: &[u8]) -> (String, Vec<u8>) {
    match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (
            String::from_utf8_lossy(&bytes[..i]).to_ascii_lowercase(),
            bytes[i + 4..].to_vec(),
        ),
        None => (
            String::from_utf8_lossy(bytes).to_ascii_lowercase(),
            Vec::new(),
        ),
    }
}
