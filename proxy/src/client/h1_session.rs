//! Ferry's own HTTP/1 server session, for a request without a body: its
//! head read once into one buffer and parsed with `ferry-wire` (httparse),
//! kept as those lines (Pingora's `RequestHeader` made of them only when
//! asked for), the response header written from a header or from a
//! server's lines, the body framed by `Content-Length`, chunked, or the
//! connection's close.
//!
//! nginx counterpart: `ngx_http_read_request_header` and
//! `ngx_http_process_request_headers` (reading), `ngx_http_header_filter`
//! and `ngx_http_chunked_filter` (writing).
//!
//! Only the common request takes this path: one without a body, with an
//! origin-form target, no `Upgrade`, any method but `CONNECT`. Anything
//! else, and any head `ferry-wire` refuses, goes to Pingora's session with
//! the bytes read so far ([`Read::Pingora`]), which parses them again and
//! gives its own verdict: the refusals stay Pingora's, byte for byte. What this
//! session does is Pingora's `v1::server::HttpSession` for such a request:
//! the same keepalive rules, the same `Date` and `Connection` headers, the
//! same framing and flushes (its tests compare the two on the same bytes).

use crate::client::header_clock::ClockedStream;
use crate::client::response_head;
use bytes::{Bytes, BytesMut};
use ferry_wire::{Framing, Parsed, RequestHead};
use http::header;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::OnceLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first read's room (Pingora's `INIT_HEADER_BUF_SIZE`).
const FIRST_READ: usize = 4096;

/// What reading the next request's head came to.
pub(crate) enum Read {
    /// A request this session serves: its head, parsed from the bytes.
    Head(RequestHead, BytesMut),
    /// A request for Pingora's session: every byte read so far, to parse
    /// again.
    Pingora(BytesMut),
    /// The client closed, or sent nothing in time, before a request began
    /// (or the service stops).
    Closed,
    /// The read failed mid-head: the header clock's timeout or size bound,
    /// a reset, the client closing.
    Failed(std::io::Error),
}

/// Read the next request's head from `stream`, `ahead` (bytes a client
/// sent before) first; each read waits at most `limit` seconds (Pingora's
/// keepalive or read timeout).
pub(crate) async fn read_request(
    stream: &mut ClockedStream,
    ahead: Option<BytesMut>,
    limit: Option<u64>,
) -> Read {
    let mut buf = ahead
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| BytesMut::with_capacity(FIRST_READ));
    let mut parse_first = !buf.is_empty();
    loop {
        if !parse_first {
            if buf.len() > ferry_wire::MAX_HEAD_BYTES {
                return Read::Pingora(buf);
            }
            let read = match limit {
                Some(secs) => {
                    let read = stream.read_buf(&mut buf);
                    match ferry_timer::timeout(std::time::Duration::from_secs(secs), read).await {
                        Ok(r) => r,
                        Err(_) => return Read::Closed,
                    }
                }
                None => stream.read_buf(&mut buf).await,
            };
            match read {
                Ok(0) if buf.is_empty() => return Read::Closed,
                Ok(0) => return Read::Failed(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(_) if buf.is_empty() => return Read::Closed,
                Err(e) => return Read::Failed(e),
            }
        }
        parse_first = false;
        match ferry_wire::parse_request(&buf, ferry_wire::MAX_HEADERS) {
            Ok(Parsed::Partial) => continue,
            Ok(Parsed::Complete(head)) if simple(&head, &buf) => return Read::Head(head, buf),
            Ok(Parsed::Complete(_)) | Err(_) => return Read::Pingora(buf),
        }
    }
}

/// A request this session serves: no body, no upgrade, not `CONNECT`, an
/// origin-form target.
fn simple(head: &RequestHead, buf: &[u8]) -> bool {
    matches!(head.framing(buf), Ok(Framing::Empty))
        && buf.get(head.target.start) == Some(&b'/')
        && buf.get(head.method.clone()) != Some(b"CONNECT")
        && head.get(buf, "upgrade").is_none()
}

/// How the response body is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// No final header written yet.
    Unset,
    /// `Content-Length`: how many, how many written.
    Length(usize, usize),
    Chunked,
    /// Until the connection closes.
    UntilClose,
    /// Written to its end.
    Done,
}

/// One request's session on a client's HTTP/1 connection.
pub(crate) struct H1Session {
    stream: Box<ClockedStream>,
    /// The request head's lines, over `raw`.
    head: RequestHead,
    /// The target in `raw`, less any fragment (not part of it, RFC 9112
    /// 3.2, and dropped as Pingora's header drops it).
    target: std::ops::Range<usize>,
    /// Pingora's header of the request, made when first asked for (by a
    /// program's hook, or a step that needs it as one); from then on the
    /// request is what it says.
    request: OnceLock<Box<RequestHeader>>,
    /// Bytes after the head: the next requests a client sent ahead.
    ahead: BytesMut,
    /// Pingora's keepalive state: `None` off, `Some(0)` no timeout,
    /// `Some(secs)`.
    keepalive: Option<u64>,
    reuses: Option<u32>,
    /// The request asked for the connection's close (`Connection: close`,
    /// or HTTP/1.0 without `keep-alive`).
    asked_close: bool,
    /// The status of the response header written.
    written: Option<u16>,
    body: Body,
    /// `client_send_timeout`, on each body write (as Pingora's).
    write_timeout: Option<std::time::Duration>,
    /// The request head as it came.
    raw: Bytes,
}

impl H1Session {
    /// The session of the request `head` parsed from `buf`.
    pub(crate) fn new(
        stream: Box<ClockedStream>,
        head: RequestHead,
        mut buf: BytesMut,
    ) -> Box<H1Session> {
        let (keepalive, asked_close) = keepalive_of(&head, &buf);
        // Split only when bytes follow the head: a split shares the buffer,
        // which costs an allocation of its own.
        let ahead = match buf.len() > head.len {
            true => buf.split_off(head.len),
            false => BytesMut::new(),
        };
        let whole = head.target.clone();
        let target = match memchr::memchr(b'#', &buf[whole.clone()]) {
            Some(fragment) => whole.start..whole.start + fragment,
            None => whole,
        };
        Box::new(H1Session {
            stream,
            head,
            target,
            request: OnceLock::new(),
            ahead,
            keepalive,
            reuses: None,
            asked_close,
            written: None,
            body: Body::Unset,
            write_timeout: None,
            raw: buf.freeze(),
        })
    }

    /// Pingora's header of the request, made now if it was not.
    pub(crate) fn req_header(&self) -> &RequestHeader {
        self.request.get_or_init(|| made(&self.head, &self.raw))
    }

    pub(crate) fn req_header_mut(&mut self) -> &mut RequestHeader {
        if self.request.get().is_none() {
            self.request = OnceLock::from(made(&self.head, &self.raw));
        }
        match self.request.get_mut() {
            Some(r) => r,
            None => unreachable!("made above"),
        }
    }

    /// The target as it came, less any fragment.
    pub(crate) fn target(&self) -> &[u8] {
        &self.raw[self.target.clone()]
    }

    /// Whether the target is not the one that came: a hook changed it in
    /// the header made of the request. (That header's target is the one
    /// that came, less any fragment, until changed.)
    pub(crate) fn target_changed(&self) -> bool {
        self.request
            .get()
            .is_some_and(|made| made.raw_path() != self.target())
    }

    /// The request head as it came and its lines, while no one asked for
    /// Pingora's header of it (which a hook may have changed).
    pub(crate) fn wire(&self) -> Option<(&Bytes, &RequestHead)> {
        match self.request.get() {
            None => Some((&self.raw, &self.head)),
            Some(_) => None,
        }
    }

    pub(crate) fn stream(&self) -> &ClockedStream {
        &self.stream
    }

    /// The request head as the client sent it.
    pub(crate) fn raw_header(&self) -> Bytes {
        self.raw.clone()
    }

    pub(crate) fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.write_timeout = timeout;
    }

    /// Pingora's `set_server_keepalive`: a request that asked for the
    /// close keeps it.
    pub(crate) fn set_keepalive(&mut self, secs: Option<u64>) {
        self.keepalive = if self.asked_close { None } else { secs };
    }

    pub(crate) fn get_keepalive(&self) -> Option<u64> {
        self.keepalive
    }

    pub(crate) fn set_reuses(&mut self, reuses: Option<u32>) {
        self.reuses = reuses;
    }

    pub(crate) fn get_reuses(&self) -> Option<u32> {
        self.reuses
    }

    fn will_keepalive(&self) -> bool {
        self.keepalive.is_some() && self.reuses != Some(0)
    }

    /// The status of the response header written, if one was.
    pub(crate) fn response_written(&self) -> Option<u16> {
        self.written
    }

    /// Pingora's `write_response_header`: `Date` and `Connection` set, the
    /// body's framing chosen, the head written (and flushed when no body
    /// follows, or its length is not known).
    pub(crate) async fn write_response_header(
        &mut self,
        header: Box<ResponseHeader>,
    ) -> Result<()> {
        self.write_kept_header(&header, &[]).await
    }

    /// A header as it is (a cache entry's, shared), `added` lines after
    /// its own.
    pub(crate) async fn write_kept_header(
        &mut self,
        header: &ResponseHeader,
        added: &[(&str, String)],
    ) -> Result<()> {
        let status = header.status.as_u16();
        self.write_head(status, |connection, head| {
            response_head::write(header, added, connection, head)
        })
        .await
    }

    /// A server's header lines, as the route's plan left them, `added`
    /// lines after them.
    pub(crate) async fn write_lines(
        &mut self,
        lines: &response_head::LineHead<'_>,
        added: &[(&str, String)],
    ) -> Result<()> {
        self.write_head(lines.status, |connection, head| {
            Ok(response_head::write_lines(lines, added, connection, head))
        })
        .await
    }

    async fn write_head(
        &mut self,
        status: u16,
        write: impl FnOnce(Option<&str>, &mut Vec<u8>) -> Result<response_head::Framing>,
    ) -> Result<()> {
        if self.body != Body::Unset {
            log::warn!("Respond header is already sent, cannot send again");
            return Ok(());
        }
        let informational = (100..200).contains(&status);
        let connection = match (informational, self.will_keepalive()) {
            (true, _) => None,
            (false, true) => Some("keep-alive"),
            (false, false) => Some("close"),
        };
        // Made in the stream's write buffer where it may be, else in its own.
        let mut head = None;
        let framing = match self.stream.kept_buffer() {
            Some(kept) => {
                let before = kept.len();
                let made = write(connection, kept);
                if made.is_err() {
                    kept.truncate(before);
                }
                made?
            }
            None => {
                let mut own = Vec::with_capacity(1024);
                let made = write(connection, &mut own)?;
                head = Some(own);
                made
            }
        };
        if !informational {
            self.body = self.framing(status, &framing);
            if self.body == Body::UntilClose {
                self.keepalive = None;
            }
        }
        let flush = informational || !framing.has_length || self.body == Body::Length(0, 0);
        if let Some(head) = head {
            self.stream
                .write_all(&head)
                .await
                .or_err(ErrorType::WriteError, "writing response header")?;
        }
        if flush {
            self.flush("flushing response header").await?;
        }
        self.written = Some(status);
        Ok(())
    }

    /// The request's method is `HEAD`.
    fn is_head(&self) -> bool {
        match self.wire() {
            Some((raw, head)) => &raw[head.method.clone()] == b"HEAD",
            None => self.req_header().method == http::Method::HEAD,
        }
    }

    /// Pingora's `init_body_writer` for a final header.
    fn framing(&self, status: u16, framing: &response_head::Framing) -> Body {
        if status == 204 || status == 304 || self.is_head() {
            return Body::Length(0, 0);
        }
        if status == 101 {
            return Body::UntilClose;
        }
        if framing.chunked {
            return Body::Chunked;
        }
        match framing.length {
            Some(n) => Body::Length(n, 0),
            None => Body::UntilClose,
        }
    }

    /// Pingora's `write_response_body` on HTTP/1: `data`, then the body's
    /// end when `end`.
    pub(crate) async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if data.is_empty() && !end {
            return Ok(());
        }
        if !data.is_empty() {
            self.write_body(&data).await?;
        }
        if end {
            self.finish_body().await?;
        }
        Ok(())
    }

    /// Pingora's `write_body`: what the framing allows of `data`, within
    /// the write timeout.
    pub(crate) async fn write_body(&mut self, data: &[u8]) -> Result<Option<usize>> {
        match self.write_timeout {
            Some(t) => match ferry_timer::timeout(t, self.write_framed(data)).await {
                Ok(written) => written,
                Err(_) => Error::e_explain(
                    ErrorType::WriteTimedout,
                    format!("writing body, timeout: {t:?}"),
                ),
            },
            None => self.write_framed(data).await,
        }
    }

    /// Pingora's `BodyWriter::write_body`.
    async fn write_framed(&mut self, data: &[u8]) -> Result<Option<usize>> {
        let what = "while writing body";
        match self.body {
            Body::Length(total, written) => {
                if written >= total {
                    return Ok(None);
                }
                let n = data.len().min(total - written);
                if n < data.len() {
                    log::warn!("Trying to write data over content-length: {total}");
                }
                self.stream
                    .write_all(&data[..n])
                    .await
                    .or_err(ErrorType::WriteError, what)?;
                self.body = Body::Length(total, written + n);
                if written + n >= total {
                    self.flush("flushing body").await?;
                }
                Ok(Some(n))
            }
            Body::Chunked => {
                let size = format!("{:X}\r\n", data.len());
                self.write_flushed(&[size.as_bytes(), data, b"\r\n"])
                    .await?;
                Ok(Some(data.len()))
            }
            Body::UntilClose => {
                self.write_flushed(&[data]).await?;
                Ok(Some(data.len()))
            }
            Body::Unset | Body::Done => Ok(None),
        }
    }

    /// Pingora's `finish_body`: the last chunk, then a flush; an error when
    /// fewer bytes than `Content-Length` were written.
    pub(crate) async fn finish_body(&mut self) -> Result<()> {
        let before = self.body;
        if !matches!(before, Body::Unset) {
            self.body = Body::Done;
        }
        if before == Body::Chunked {
            self.stream
                .write_all(b"0\r\n\r\n")
                .await
                .or_err(ErrorType::WriteError, "while writing body")?;
        }
        // A length written to its end was flushed with its last piece (or,
        // none at all, with the header).
        let flushed = matches!(before, Body::Length(total, written) if written >= total);
        if !flushed {
            self.flush("flushing body").await?;
        }
        if let Body::Length(total, written) = before {
            if written < total {
                return Error::e_explain(
                    ErrorType::new("PrematureBodyEnd"),
                    format!("Content-length: {total} bytes written: {written}"),
                );
            }
        }
        Ok(())
    }

    /// `parts` written, then flushed (a chunk, a close-delimited piece).
    async fn write_flushed(&mut self, parts: &[&[u8]]) -> Result<()> {
        for part in parts {
            self.stream
                .write_all(part)
                .await
                .or_err(ErrorType::WriteError, "while writing body")?;
        }
        self.flush("flushing body").await
    }

    async fn flush(&mut self, what: &'static str) -> Result<()> {
        self.stream
            .flush()
            .await
            .or_err(ErrorType::WriteError, what)
    }

    /// Close the connection (Pingora's `shutdown`).
    pub(crate) async fn shutdown(&mut self) {
        pingora_core::protocols::Shutdown::shutdown(&mut *self.stream).await;
    }

    /// The response is done: the connection and the bytes its client sent
    /// ahead, when it may serve another request (Pingora's `finish` and
    /// `reuse`); else it is closed.
    pub(crate) async fn finish(
        mut self: Box<Self>,
    ) -> Result<Option<(Box<ClockedStream>, BytesMut)>> {
        self.finish_body().await?;
        if !self.will_keepalive() {
            self.shutdown().await;
            return Ok(None);
        }
        let H1Session { stream, ahead, .. } = *self;
        Ok(Some((stream, ahead)))
    }

    /// `$METHOD $PATH, Host: $HOST`, as Pingora's `request_summary`.
    pub(crate) fn request_summary(&self) -> String {
        let r = self.req_header();
        let host = r
            .headers
            .get(header::HOST)
            .map_or(&b""[..], |h| h.as_bytes());
        format!(
            "{} {}, Host: {}",
            r.method.as_str(),
            String::from_utf8_lossy(r.raw_path()),
            String::from_utf8_lossy(host)
        )
    }
}

/// The request head as Pingora's header type. `ferry-wire` admitted only a
/// head this header holds (its target checked by the `http` crate's
/// rules, as the differential fuzz target holds it to Pingora's), so the
/// fallback, an empty `GET /`, is never reached.
fn made(head: &RequestHead, raw: &Bytes) -> Box<RequestHeader> {
    request_header(head, raw).unwrap_or_else(|e| {
        log::error!("a request head ferry-wire admitted is not a header: {e}");
        Box::new(RequestHeader::from(http::Request::new(()).into_parts().0))
    })
}

/// The request head as Pingora's header type, as Pingora's session makes
/// it: names in the case they came in, values slices of the buffer.
fn request_header(head: &RequestHead, raw: &Bytes) -> Result<Box<RequestHeader>> {
    let method = ferry_wire::text(&raw[head.method.clone()]).unwrap_or_default();
    let target = &raw[head.target.clone()];
    let mut request = Box::new(RequestHeader::build(
        method,
        target,
        Some(head.lines.len()),
    )?);
    request.set_version(match head.minor {
        1 => http::Version::HTTP_11,
        _ => http::Version::HTTP_10,
    });
    for line in &head.lines {
        let name = raw.slice(line.name.clone());
        // SAFETY: httparse admitted the value, so it holds only bytes a
        // header value may (Pingora makes its values the same way).
        let value = unsafe {
            http::HeaderValue::from_maybe_shared_unchecked(raw.slice(line.value.clone()))
        };
        request
            .append_header(name, value)
            .or_err(ErrorType::InvalidHTTPHeader, "while parsing request header")?;
    }
    Ok(request)
}

/// Pingora's `respect_keepalive` (kept alive with no timeout, or not), and
/// whether the request asked for the close, which `set_server_keepalive`
/// keeps.
fn keepalive_of(head: &RequestHead, buf: &[u8]) -> (Option<u64>, bool) {
    let keepalive = head.keepalive(buf).then_some(0);
    (keepalive, head.connection(buf) == Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::http::ServerSession;

    fn parsed(raw: &[u8]) -> RequestHead {
        match ferry_wire::parse_request(raw, ferry_wire::MAX_HEADERS) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("{other:?}: {}", String::from_utf8_lossy(raw)),
        }
    }

    /// The header and keepalive Pingora's session makes of the same bytes.
    async fn pingoras(raw: &[u8]) -> ServerSession {
        let bytes = std::io::Cursor::new(raw.to_vec());
        let mut s = ServerSession::new_http1(Box::new(bytes));
        assert!(s.read_request().await.expect("Pingora reads it"));
        s
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_read_as_pingora_reads_it() {
        let requests: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a/b?c=d&e HTTP/1.1\r\nhost: a\r\nX-Mixed-Case: 1\r\nx-mixed-case: 2\r\nConnection: close\r\n\r\n",
            b"HEAD /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            b"DELETE /x HTTP/1.0\r\nUser-Agent: t\r\n\r\n",
            b"GET /p%20q HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: te, close\r\n\r\n",
            b"OPTIONS /o HTTP/1.1\nHost: a\nAccept: */*\n\nGET /next HTTP/1.1\r\n\r\n",
        ];
        for raw in requests {
            let head = parsed(raw);
            assert!(simple(&head, raw), "{}", String::from_utf8_lossy(raw));
            let ours = request_header(&head, &Bytes::copy_from_slice(&raw[..head.len])).unwrap();
            let mut session = pingoras(raw).await;
            let theirs = session.req_header();
            let what = String::from_utf8_lossy(raw);
            assert_eq!(ours.method, theirs.method, "{what}");
            assert_eq!(ours.raw_path(), theirs.raw_path(), "{what}");
            assert_eq!(ours.uri, theirs.uri, "{what}");
            assert_eq!(ours.version, theirs.version, "{what}");
            let lines = |h: &RequestHeader| -> Vec<(Vec<u8>, Vec<u8>)> {
                h.case_header_iter()
                    .map(|(n, v)| (n.as_slice().to_vec(), v.as_bytes().to_vec()))
                    .collect()
            };
            assert_eq!(lines(&ours), lines(theirs), "{what}");
            let (keepalive, asked_close) = keepalive_of(&head, raw);
            assert_eq!(keepalive, session.get_keepalive(), "{what}");
            session.set_keepalive(Some(5));
            let kept = (!asked_close).then_some(5);
            assert_eq!(kept, session.get_keepalive(), "{what}: a timeout set later");
        }
    }

    #[test]
    fn a_request_with_a_body_or_an_upgrade_goes_to_pingora() {
        let requests: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for raw in requests {
            assert!(
                !simple(&parsed(raw), raw),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
