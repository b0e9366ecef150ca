//! A backend that misbehaves on purpose: a plain TCP server that reads each
//! request (httparse for the head, Content-Length for the body) and then
//! does what its script says: send these bytes, close, stall.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Close the connection.
    Close,
    /// Never answer (until the test ends).
    Stall,
    /// Wait, then go on.
    Wait(Duration),
}

impl Step {
    /// A complete response with `Content-Length`.
    pub fn response(status: u16, body: &str) -> Step {
        Step::Send(
            format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
    pub fn text(s: &str) -> Step {
        Step::Send(s.as_bytes().to_vec())
    }
}

/// The steps for the request with this index (0-based, over all connections).
pub type Script = Arc<dyn Fn(usize) -> Vec<Step> + Send + Sync>;

/// A request as read off the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub head: String,
    pub body: Vec<u8>,
}

pub struct Raw {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub conns: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<RawRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    pub async fn start(script: Script) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, c, s) = (hits.clone(), conns.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), h.clone(), s.clone()));
            }
        });
        Raw {
            addr,
            hits,
            conns,
            seen,
            task,
        }
    }

    /// Always the same steps.
    pub async fn always(steps: Vec<Step>) -> Raw {
        Raw::start(Arc::new(move |_| steps.clone())).await
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<RawRequest>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        seen.lock().unwrap().push(req);
        let i = hits.fetch_add(1, Ordering::SeqCst);
        for step in script(i) {
            match step {
                Step::Send(b) => {
                    if stream.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Step::Close => return,
                Step::Stall => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Step::Wait(d) => tokio::time::sleep(d).await,
            }
        }
    }
}

/// Read one request: the head with httparse, then a Content-Length body.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            while buf.len() < n + len {
                let mut chunk = [0u8; 65536];
                let r = stream.read(&mut chunk).await.ok()?;
                if r == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..r]);
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Some(RawRequest { head, body });
        }
        let mut chunk = [0u8; 65536];
        let r = stream.read(&mut chunk).await.ok()?;
        if r == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..r]);
    }
}
