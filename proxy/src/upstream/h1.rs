//! Ferry's HTTP/1.1 client session: one try's request written to a
//! connection from the group's pool, and its response read back. The head
//! is parsed in place with `ferry-wire` (the parser the differential fuzz
//! target holds to Pingora's verdicts), its fields handed to Ferry as
//! slices of the one buffer it was read into, and the body delimited by its
//! framing: a length, chunks, or the server's close.
//!
//! nginx counterpart: the proxy module's `create_request`,
//! `process_status_line` and `process_header`, and its input filters
//! (`ngx_http_proxy_copy_filter`, `ngx_http_proxy_chunked_filter`).
//!
//! A read or a write that can finish at once arms no timer; one that must
//! wait is bounded by the route's `read_timeout` / `send_timeout`, as
//! nginx's timers are, between two successive operations.

use crate::upstream::head::Head;
use crate::upstream::keepalive::Usage;
use crate::upstream::request_head::WireHead;
use bytes::{Buf, Bytes, BytesMut};
use ferry_filters::headers::BodyFraming;
use ferry_wire::{ChunkedDecoder, Framing, Parsed, ResponseHead};
use pingora_core::protocols::{Digest, Stream, UniqueIDType};
use pingora_error::{Error, ErrorType, OrErr, Result, RetryType};
use pingora_http::RequestHeader;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pingora's error type for a body that ended short (its `body` module's).
const PREMATURE_BODY_END: ErrorType = ErrorType::new("PrematureBodyEnd");

/// Room made in the read buffer before a read of the head.
const HEAD_READ: usize = 4096;
/// Room made in the read buffer before a read of the body.
const BODY_READ: usize = 64 * 1024;
/// A body piece smaller than this is copied out of the read buffer, which
/// stays for the next read; a larger one is split off it, no copy. A small
/// piece split off would keep its whole buffer alive while the pipe holds
/// it (a slow server's 1 KiB reads, each pinning 64 KiB).
const COPY_BELOW: usize = 16 * 1024;

/// Where the response body stands.
enum Body {
    /// No final head read yet.
    Unread,
    /// This many bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the server closes (no length, or after a `101`).
    UntilClose,
    Done,
}

/// How the request body goes out.
#[derive(Clone, Copy)]
enum Send {
    /// This many bytes still to send.
    Length(u64),
    Chunked,
    /// As they come (after a `101`).
    Raw,
}

/// What of the request the response's reading depends on.
#[derive(Default, Clone, Copy)]
struct Asked {
    head: bool,
    upgrade: bool,
    close: bool,
    /// The answer's header is made with its names' case.
    keep_case: bool,
}

/// One try's HTTP/1.1 exchange with its server.
pub struct H1 {
    stream: Stream,
    /// Bytes read and not handed out yet: the head, then the body.
    buf: BytesMut,
    /// The last response head as received.
    raw: Bytes,
    head: Option<Head>,
    body: Body,
    send: Send,
    asked: Asked,
    upgraded: bool,
    /// The response allows the connection to be reused after its body.
    keepalive: bool,
    /// The server sent bytes past the body's end.
    overread: bool,
    digest: OnceLock<Digest>,
    /// What the connection served before this exchange.
    pub usage: Usage,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

impl H1 {
    /// An exchange on `stream`, which served `usage` before.
    pub fn new(stream: Stream, usage: Usage) -> H1 {
        H1 {
            usage,
            stream,
            // Every exchange reads a head: its room made at once.
            buf: BytesMut::with_capacity(HEAD_READ),
            raw: Bytes::new(),
            head: None,
            body: Body::Unread,
            send: Send::Length(0),
            asked: Asked::default(),
            upgraded: false,
            keepalive: false,
            overread: false,
            digest: OnceLock::new(),
            read_timeout: None,
            write_timeout: None,
        }
    }

    pub fn id(&self) -> UniqueIDType {
        self.stream.id()
    }

    /// The connection's digest (TLS, timing, socket), made when first asked.
    pub fn digest(&self) -> &Digest {
        self.digest.get_or_init(|| Digest {
            ssl_digest: self.stream.get_ssl_digest(),
            timing_digest: self.stream.get_timing_digest(),
            proxy_digest: self.stream.get_proxy_digest(),
            socket_digest: self.stream.get_socket_digest(),
        })
    }

    /// Write the request header; its framing decides how the body goes.
    pub async fn write_request_header(&mut self, req: Box<RequestHeader>) -> Result<()> {
        let wire = pingora_core::protocols::http::v1::client::http_req_header_to_wire(&req)
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "request-line contains forbidden delimiter bytes or unsupported HTTP version",
                )
            })?;
        self.asked = Asked {
            head: req.method == http::Method::HEAD,
            upgrade: pingora_core::protocols::http::v1::common::is_upgrade_req(&req),
            close: says_close(req.headers.get(http::header::CONNECTION)),
            keep_case: true,
        };
        self.send = request_framing(&req);
        self.write_all(&wire, "while writing request headers").await
    }

    /// Write a request head made as bytes; its framing decides how the
    /// body goes.
    pub async fn write_request_wire(&mut self, w: WireHead) -> Result<()> {
        self.asked = Asked {
            head: w.head,
            upgrade: false,
            close: w.close,
            keep_case: w.keep_case,
        };
        self.send = match w.body {
            BodyFraming::None => Send::Length(0),
            BodyFraming::Length(n) => Send::Length(n),
            BodyFraming::Chunked => Send::Chunked,
        };
        self.write_all(&w.bytes, "while writing request headers")
            .await
    }

    /// Write a piece of the request body, framed as its header said. Bytes
    /// past a `Content-Length` are not sent.
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        match self.send {
            Send::Length(left) => {
                let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if n < data.len() {
                    log::warn!("request body past its Content-Length: {left} bytes were left");
                }
                self.send = Send::Length(left - n as u64);
                self.write_all(&data[..n], "while writing body").await
            }
            Send::Chunked if data.is_empty() => Ok(()),
            Send::Chunked => {
                let mut chunk = Vec::with_capacity(data.len() + 12);
                chunk.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(data);
                chunk.extend_from_slice(b"\r\n");
                self.write_all(&chunk, "while writing body").await
            }
            Send::Raw => self.write_all(data, "while writing body").await,
        }
    }

    /// The request body is complete: the last chunk when chunked; a length
    /// not reached is an error.
    pub async fn finish_body(&mut self) -> Result<()> {
        match self.send {
            Send::Chunked => {
                self.send = Send::Length(0);
                self.write_all(b"0\r\n\r\n", "while writing body").await
            }
            Send::Length(0) | Send::Raw => Ok(()),
            Send::Length(left) => Error::e_explain(
                PREMATURE_BODY_END,
                format!("request body ended {left} bytes short of its Content-Length"),
            ),
        }
    }

    /// After a `101`: the client's bytes go to the server as they come.
    pub fn maybe_upgrade_body_writer(&mut self) {
        if self.upgraded {
            self.send = Send::Raw;
        }
    }

    /// Read the next response head (a `1xx` other than `101` included: the
    /// caller reads again); its size in bytes.
    pub async fn read_response(&mut self) -> Result<usize> {
        let head = self.read_head().await?;
        let size = head.len;
        self.raw = self.buf.split_to(size).freeze();
        let framing = head
            .framing(&self.raw, self.asked.head)
            .or_err(ErrorType::InvalidHTTPHeader, "response framing")?;
        self.upgraded = head.status == 101 && self.asked.upgrade;
        self.body = match framing {
            _ if head.is_informational() => Body::Unread,
            Framing::UntilClose if head.status == 101 && !self.asked.upgrade => Body::Done,
            Framing::Empty => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Body::UntilClose,
        };
        self.keepalive = !self.asked.close && head.keepalive_with(&self.raw, framing);
        self.head = Some(Head::read(self.raw.clone(), head, self.asked.keep_case)?);
        self.note_overread();
        Ok(size)
    }

    /// A head parsed from the buffer, read into as needed.
    async fn read_head(&mut self) -> Result<ResponseHead> {
        loop {
            if !self.buf.is_empty() {
                match ferry_wire::parse_response(&self.buf, ferry_wire::MAX_HEADERS) {
                    Ok(Parsed::Complete(head)) => return Ok(head),
                    Ok(Parsed::Partial) => {}
                    Err(e) => {
                        return Error::e_explain(
                            ErrorType::InvalidHTTPHeader,
                            format!("upstream response header: {e}"),
                        )
                    }
                }
                if self.buf.len() > ferry_wire::MAX_HEAD_BYTES {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        "upstream response header too large",
                    );
                }
            }
            let already = self.buf.len();
            if self
                .read_more(HEAD_READ, "while reading response headers")
                .await?
                == 0
            {
                let mut e = Error::explain(
                    ErrorType::ConnectionClosed,
                    format!("while reading response headers, bytes already read: {already}"),
                );
                e.retry = RetryType::ReusedOnly;
                return Err(e);
            }
        }
    }

    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The response head, moved out.
    pub fn take_head(&mut self) -> Option<Head> {
        self.head.take()
    }

    /// The last response head as the server sent it.
    pub fn raw_header(&self) -> Bytes {
        self.raw.clone()
    }

    pub fn is_body_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }

    /// The next piece of the response body, `None` at its end.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        loop {
            match &mut self.body {
                Body::Unread | Body::Done => return Ok(None),
                Body::Length(left) => {
                    let left = *left;
                    if self.buf.is_empty() && self.read_body_more().await? == 0 {
                        return Error::e_explain(
                            ErrorType::ConnectionClosed,
                            format!("upstream closed with {left} bytes of the body to come"),
                        );
                    }
                    let n = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.body = match left - n as u64 {
                        0 => Body::Done,
                        rest => Body::Length(rest),
                    };
                    let data = self.take(n, matches!(self.body, Body::Done));
                    self.note_overread();
                    return Ok(Some(data));
                }
                Body::Chunked(decoder) => {
                    let d = decoder
                        .decode(&self.buf)
                        .or_err(ErrorType::InvalidHTTPHeader, "upstream chunked body")?;
                    // The data run lies inside the bytes consumed.
                    let data = if d.data.is_empty() {
                        self.buf.advance(d.consumed);
                        None
                    } else {
                        self.buf.advance(d.data.start);
                        let piece = self.take(d.data.len(), d.done);
                        self.buf.advance(d.consumed - d.data.end);
                        Some(piece)
                    };
                    if d.done {
                        self.body = Body::Done;
                        self.note_overread();
                    } else if d.consumed == 0 && self.read_body_more().await? == 0 {
                        return Error::e_explain(
                            ErrorType::ConnectionClosed,
                            "upstream closed inside a chunked body",
                        );
                    }
                    if data.is_some() {
                        return Ok(data);
                    }
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && self.read_body_more().await? == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    let n = self.buf.len();
                    return Ok(Some(self.take(n, false)));
                }
            }
        }
    }

    /// The stream back for the pool when the exchange left it clean (the
    /// body read to its end, nothing past it, keepalive allowed); else
    /// closed.
    pub async fn reuse(mut self) -> Option<(Stream, Usage)> {
        let clean = self.is_body_done() && !self.overread && !self.upgraded;
        if clean && self.keepalive {
            return Some((self.stream, self.usage));
        }
        self.shutdown().await;
        None
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The buffer's first `n` bytes as a body piece: split off (no copy)
    /// when large or the body's `last` (no read into the buffer follows),
    /// copied when small (see [`COPY_BELOW`]).
    fn take(&mut self, n: usize, last: bool) -> Bytes {
        if last || n >= COPY_BELOW {
            return self.buf.split_to(n).freeze();
        }
        let piece = Bytes::copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        piece
    }

    /// Bytes left in the buffer after the body's end are the server's
    /// excess: the connection is not reused.
    fn note_overread(&mut self) {
        if matches!(self.body, Body::Done) && !self.buf.is_empty() && !self.upgraded {
            self.overread = true;
        }
    }

    async fn read_body_more(&mut self) -> Result<usize> {
        // Room for what is left of a body of known length and a byte past
        // it (a server that sends more is seen: its connection is not
        // reused), up to a full read: the rest of a small body that came
        // apart from its head needs no 64 KiB buffer.
        let room = match self.body {
            Body::Length(left) => {
                usize::try_from(left).map_or(BODY_READ, |l| l.saturating_add(1).min(BODY_READ))
            }
            _ => BODY_READ,
        };
        self.read_more(room, "while reading body").await
    }

    /// Read what the server sent into the buffer, with at least `room`
    /// free for it; 0 at the server's close.
    async fn read_more(&mut self, room: usize, what: &'static str) -> Result<usize> {
        if self.buf.capacity() - self.buf.len() < room {
            self.buf.reserve(room);
        }
        let read = self.stream.read_buf(&mut self.buf);
        match within(self.read_timeout, read).await {
            Some(Ok(n)) => Ok(n),
            Some(Err(e)) => {
                let os = e.raw_os_error().is_some();
                let mut e = Error::because(ErrorType::ReadError, what, e);
                if os {
                    e.retry = RetryType::ReusedOnly;
                }
                Err(e)
            }
            None => Error::e_explain(ErrorType::ReadTimedout, format!("{what} (timeout)")),
        }
    }

    async fn write_all(&mut self, data: &[u8], what: &'static str) -> Result<()> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(data).await?;
            stream.flush().await
        };
        match within(self.write_timeout, write).await {
            Some(r) => r.or_err(ErrorType::WriteError, what),
            None => Error::e_explain(ErrorType::WriteTimedout, format!("{what} (timeout)")),
        }
    }
}

/// `work`, bounded by `limit` once it has to wait (`None`: the limit
/// passed). Work done at once arms no timer.
async fn within<F: Future>(limit: Option<Duration>, work: F) -> Option<F::Output> {
    match limit {
        Some(t) => ferry_timer::timeout(t, work).await.ok(),
        None => Some(work.await),
    }
}

/// How the request's body is framed on the wire: chunked when its last
/// transfer coding says so, else its `Content-Length` (none: no body).
fn request_framing(req: &RequestHeader) -> Send {
    let te = req.headers.get_all(http::header::TRANSFER_ENCODING);
    let last = te.iter().next_back().map(|v| v.as_bytes());
    let chunked = last.is_some_and(|v| {
        let token = v.rsplit(|&b| b == b',').next().unwrap_or(v);
        token.trim_ascii().eq_ignore_ascii_case(b"chunked")
    });
    if chunked {
        return Send::Chunked;
    }
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Send::Length(length)
}

/// A `Connection` value with a `close` token.
fn says_close(value: Option<&http::HeaderValue>) -> bool {
    value.is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/", None).expect("a request");
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).expect("a header");
        }
        req
    }

    #[test]
    fn the_request_body_is_framed_by_its_last_coding_else_its_length() {
        let chunked = request(&[("Transfer-Encoding", "gzip, chunked")]);
        assert!(matches!(request_framing(&chunked), Send::Chunked));
        let gzip = request(&[
            ("Transfer-Encoding", "chunked, gzip"),
            ("Content-Length", "3"),
        ]);
        assert!(matches!(request_framing(&gzip), Send::Length(3)));
        assert!(matches!(request_framing(&request(&[])), Send::Length(0)));
        let length = request(&[("Content-Length", " 12 ")]);
        assert!(matches!(request_framing(&length), Send::Length(12)));
    }

    #[test]
    fn a_close_token_anywhere_in_connection_means_close() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(says_close(Some(&v("Keep-Alive, CLOSE"))));
        assert!(says_close(Some(&v(" close "))));
        assert!(!says_close(Some(&v("keep-alive, closed"))));
        assert!(!says_close(None));
    }

    /// A session on a real loopback connection whose server writes `sent`.
    async fn session_reading(sent: Vec<u8>) -> H1 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("a client");
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request).await;
            let _ = s.write_all(&sent).await;
            let _ = s.shutdown().await;
        });
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("a connection");
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(tcp));
        let mut h1 = H1::new(stream, Usage::new());
        h1.read_timeout = Some(Duration::from_secs(10));
        let get = RequestHeader::build("GET", b"/", None).expect("a request");
        h1.write_request_header(Box::new(get)).await.expect("sent");
        h1
    }

    async fn body_of(h1: &mut H1) -> Vec<u8> {
        h1.read_response().await.expect("a head");
        let mut body = Vec::new();
        while let Some(piece) = h1.read_body_bytes().await.expect("a piece") {
            body.extend_from_slice(&piece);
        }
        body
    }

    #[tokio::test]
    async fn a_chunked_body_of_small_and_large_chunks_arrives_whole() {
        let big = vec![b'x'; 40_000];
        let mut sent =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n".to_vec();
        sent.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
        sent.extend_from_slice(&big);
        sent.extend_from_slice(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
        let mut h1 = session_reading(sent).await;
        let body = body_of(&mut h1).await;
        assert_eq!(body.len(), 5 + big.len());
        assert_eq!(&body[..5], b"hello");
        assert!(h1.is_body_done());
        assert!(
            h1.reuse().await.is_some(),
            "a clean chunked end keeps the connection"
        );
    }

    #[tokio::test]
    async fn bytes_past_a_content_length_forbid_reuse() {
        let mut sent = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_vec();
        sent.extend_from_slice(&[b'y'; 20_000]);
        sent.extend_from_slice(b"extra");
        let mut h1 = session_reading(sent).await;
        assert_eq!(body_of(&mut h1).await, vec![b'y'; 20_000]);
        assert!(h1.reuse().await.is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let sent = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec();
        let mut h1 = session_reading(sent).await;
        h1.read_response().await.expect("a head");
        assert_eq!(
            &h1.read_body_bytes().await.expect("a piece").expect("data")[..],
            b"abc"
        );
        let e = h1.read_body_bytes().await.expect_err("cut short");
        assert_eq!(e.etype(), &ErrorType::ConnectionClosed);
    }
}
