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
    /// Count this point in [`Raw::marks`] (e.g. "the whole body was sent").
    Mark,
    /// Wait until the peer closes the connection, count it in
    /// [`Raw::closed`], and stop.
    AwaitClose,
    /// Send back whatever arrives until the peer closes (a tunnel's far end).
    Echo,
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
    /// [`Step::Mark`]s reached.
    pub marks: Arc<AtomicUsize>,
    /// Connections the peer closed while the script awaited it.
    pub closed: Arc<AtomicUsize>,
    /// Connections the peer closed between requests (an idle keepalive
    /// connection dropped by Ferry's pool, say).
    pub ended: Arc<AtomicUsize>,
    /// Writes that failed (the peer had gone).
    pub write_errors: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Default)]
struct Counters {
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<RawRequest>>>,
    marks: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    write_errors: Arc<AtomicUsize>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    pub async fn start(script: Script) -> Raw {
        Raw::start_with(script, None).await
    }

    /// With `sndbuf`, accepted sockets get that `SO_SNDBUF`, so the kernel
    /// cannot absorb a large body and backpressure shows.
    pub async fn start_with(script: Script, sndbuf: Option<usize>) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counters = Counters::default();
        let (c, k) = (conns.clone(), counters.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if let Some(size) = sndbuf {
                    set_sndbuf(&stream, size);
                }
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), k.clone()));
            }
        });
        Raw {
            addr,
            hits: counters.hits,
            conns,
            seen: counters.seen,
            marks: counters.marks,
            closed: counters.closed,
            ended: counters.ended,
            write_errors: counters.write_errors,
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

    pub fn marks(&self) -> usize {
        self.marks.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn set_sndbuf(stream: &TcpStream, size: usize) {
    use std::os::unix::io::AsRawFd;
    let v = size as libc::c_int;
    // SAFETY: setsockopt with a pointer to a local int of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn serve(mut stream: TcpStream, script: Script, k: Counters) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await else {
            k.ended.fetch_add(1, Ordering::SeqCst);
            return;
        };
        k.seen.lock().unwrap().push(req);
        let i = k.hits.fetch_add(1, Ordering::SeqCst);
        for step in script(i) {
            match step {
                Step::Send(b) => {
                    if stream.write_all(&b).await.is_err() {
                        k.write_errors.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                Step::Close => return,
                Step::Stall => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Mark => {
                    k.marks.fetch_add(1, Ordering::SeqCst);
                }
                Step::Echo => {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut b).await {
                        if n == 0 || stream.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                    return;
                }
                Step::AwaitClose => {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                    }
                    k.closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
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
