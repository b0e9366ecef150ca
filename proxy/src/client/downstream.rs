//! The client's side of one request: Ferry's own HTTP/1 session
//! ([`H1Session`], a request without a body) or Pingora's (HTTP/2, and an
//! HTTP/1 request with a body or an upgrade), behind the one face the
//! request's steps use.
//!
//! nginx counterpart: the `ngx_http_request_t` a module writes to through
//! `ngx_http_send_header` and `ngx_http_output_filter`, whatever the
//! protocol below.

use crate::client::h1_session::H1Session;
use crate::client::header_clock::ClockedStream;
use bytes::Bytes;
use ferry_filters::fields::Fields;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::protocols::UniqueID;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// One request's session with its client.
pub(crate) enum Downstream {
    /// Ferry's own HTTP/1 session.
    Ferry(Box<H1Session>),
    /// Pingora's session (boxed: an HTTP/1 one is large).
    Pingora(Box<ServerSession>),
}

impl Downstream {
    pub(crate) fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::Ferry(s) => s.req_header(),
            Downstream::Pingora(s) => s.req_header(),
        }
    }

    pub(crate) fn req_header_mut(&mut self) -> &mut RequestHeader {
        match self {
            Downstream::Ferry(s) => s.req_header_mut(),
            Downstream::Pingora(s) => s.req_header_mut(),
        }
    }

    /// The request head as it came, while no header was made of it
    /// (Ferry's session only).
    fn wire(&self) -> Option<(&Bytes, &ferry_wire::RequestHead)> {
        match self {
            Downstream::Ferry(s) => s.wire(),
            Downstream::Pingora(_) => None,
        }
    }

    /// Whether a hook changed the target of Ferry's session (Pingora's
    /// callers compare its header's URI).
    pub(crate) fn target_changed(&self) -> bool {
        match self {
            Downstream::Ferry(s) => s.target_changed(),
            Downstream::Pingora(_) => false,
        }
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &str {
        let Some((raw, head)) = self.wire() else {
            return self.req_header().method.as_str();
        };
        match &raw[head.method.clone()] {
            b"GET" => "GET",
            b"HEAD" => "HEAD",
            b"POST" => "POST",
            // A token: ASCII.
            other => ferry_wire::text(other).unwrap_or(""),
        }
    }

    /// The request's target as it came, less any fragment, which is not
    /// part of it (RFC 9112 3.2; Pingora's `raw_path`).
    pub(crate) fn raw_path(&self) -> &[u8] {
        match self {
            Downstream::Ferry(s) if s.wire().is_some() => s.target(),
            _ => self.req_header().raw_path(),
        }
    }

    pub(crate) fn version(&self) -> http::Version {
        match self.wire() {
            Some((_, head)) if head.minor == 1 => http::Version::HTTP_11,
            Some(_) => http::Version::HTTP_10,
            None => self.req_header().version,
        }
    }

    /// The request's header fields: the lines as they came while no
    /// header was made of them.
    pub(crate) fn fields(&self) -> Fields<'_> {
        match self.wire() {
            Some((raw, head)) => Fields::Lines {
                raw,
                lines: &head.lines,
            },
            None => Fields::Header(self.req_header()),
        }
    }

    /// Pingora's session, when it is one.
    pub(crate) fn pingora(&mut self) -> Option<&mut ServerSession> {
        match self {
            Downstream::Ferry(_) => None,
            Downstream::Pingora(s) => Some(s),
        }
    }

    /// Ferry's own session.
    pub(crate) fn is_ferry(&self) -> bool {
        matches!(self, Downstream::Ferry(_))
    }

    pub(crate) fn is_http2(&self) -> bool {
        matches!(self, Downstream::Pingora(s) if s.is_http2())
    }

    /// The connection is HTTP/1 (either session).
    pub(crate) fn is_http1(&self) -> bool {
        match self {
            Downstream::Ferry(_) => true,
            Downstream::Pingora(s) => s.as_http1().is_some(),
        }
    }

    /// The header clock under an HTTP/1 connection.
    pub(crate) fn clock(&self) -> Option<&ClockedStream> {
        match self {
            Downstream::Ferry(s) => Some(s.stream()),
            Downstream::Pingora(s) => s.stream()?.as_any().downcast_ref::<ClockedStream>(),
        }
    }

    /// The client's socket, on an HTTP/1 connection (HTTP/2 streams share
    /// theirs).
    pub(crate) fn http1_fd(&self) -> Option<i32> {
        match self {
            Downstream::Ferry(s) => Some(s.stream().id()),
            Downstream::Pingora(s) => s.as_http1().map(|h| h.stream().id()),
        }
    }

    /// The client's address (the connection's peer).
    pub(crate) fn client_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Downstream::Ferry(s) => s.stream().peer_addr(),
            Downstream::Pingora(s) => s.client_addr()?.as_inet().copied(),
        }
    }

    /// The connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Downstream::Ferry(s) => s.stream().is_tls(),
            Downstream::Pingora(s) => s.digest().is_some_and(|d| d.ssl_digest.is_some()),
        }
    }

    pub(crate) fn set_keepalive(&mut self, secs: Option<u64>) {
        match self {
            Downstream::Ferry(s) => s.set_keepalive(secs),
            Downstream::Pingora(s) => s.set_keepalive(secs),
        }
    }

    pub(crate) fn get_keepalive(&self) -> Option<u64> {
        match self {
            Downstream::Ferry(s) => s.get_keepalive(),
            Downstream::Pingora(s) => s.get_keepalive(),
        }
    }

    pub(crate) fn get_keepalive_reuses_remaining(&self) -> Option<u32> {
        match self {
            Downstream::Ferry(s) => s.get_reuses(),
            Downstream::Pingora(s) => s.get_keepalive_reuses_remaining(),
        }
    }

    pub(crate) async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Downstream::Ferry(_) => Ok(None),
            Downstream::Pingora(s) => s.read_request_body().await,
        }
    }

    pub(crate) fn is_body_empty(&mut self) -> bool {
        match self {
            Downstream::Ferry(_) => true,
            Downstream::Pingora(s) => s.is_body_empty(),
        }
    }

    pub(crate) fn body_bytes_read(&self) -> usize {
        match self {
            Downstream::Ferry(_) => 0,
            Downstream::Pingora(s) => s.body_bytes_read(),
        }
    }

    pub(crate) async fn write_continue_response(&mut self) -> Result<()> {
        match self {
            Downstream::Ferry(_) => Ok(()),
            Downstream::Pingora(s) => s.write_continue_response().await,
        }
    }

    pub(crate) async fn write_response_header(
        &mut self,
        header: Box<ResponseHeader>,
    ) -> Result<()> {
        match self {
            Downstream::Ferry(s) => s.write_response_header(header).await,
            Downstream::Pingora(s) => s.write_response_header(header).await,
        }
    }

    /// A cache entry's header as it is, `added` lines after it: Ferry's
    /// session only (the caller checked [`Downstream::is_ferry`]).
    pub(crate) async fn write_kept_header(
        &mut self,
        header: &std::sync::Arc<ResponseHeader>,
        added: &[(&str, String)],
    ) -> Result<()> {
        match self {
            Downstream::Ferry(s) => s.write_kept_header(header, added).await,
            Downstream::Pingora(_) => Error::e_explain(
                ErrorType::InternalError,
                "a kept header on Pingora's session",
            ),
        }
    }

    /// A server's header lines as the route's plan left them, `added`
    /// lines after them: Ferry's session only (the caller checked
    /// [`Downstream::is_ferry`]).
    pub(crate) async fn write_lines(
        &mut self,
        lines: &crate::client::response_head::LineHead<'_>,
        added: &[(&str, String)],
    ) -> Result<()> {
        match self {
            Downstream::Ferry(s) => s.write_lines(lines, added).await,
            Downstream::Pingora(_) => Error::e_explain(
                ErrorType::InternalError,
                "header lines on Pingora's session",
            ),
        }
    }

    pub(crate) async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        match self {
            Downstream::Ferry(s) => s.write_response_body(data, end).await,
            // Boxed: Pingora's write is a large future, which every step
            // that writes a body would otherwise carry (and copy) for
            // Ferry's session too.
            Downstream::Pingora(s) => Box::pin(s.write_response_body(data, end)).await,
        }
    }

    pub(crate) async fn finish_body(&mut self) -> Result<()> {
        match self {
            Downstream::Ferry(s) => s.finish_body().await,
            Downstream::Pingora(s) => s.finish_body().await,
        }
    }

    /// HTTP/2's tasks (a header that ends the stream, trailers); an HTTP/1
    /// session writes a header task's header and body.
    pub(crate) async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let s = match self {
            Downstream::Ferry(s) => s,
            Downstream::Pingora(s) => return s.response_duplex_vec(tasks).await,
        };
        let mut ended = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(h, end) => {
                    s.write_response_header(h).await?;
                    end
                }
                // An ending piece ends the body as it is written.
                HttpTask::Body(data, end) => {
                    s.write_response_body(data.unwrap_or_default(), end).await?;
                    ended |= end;
                    continue;
                }
                HttpTask::Done => true,
                _ => return Error::e_explain(ErrorType::InternalError, "an HTTP/2 task on HTTP/1"),
            };
            if end {
                s.finish_body().await?;
                ended = true;
            }
        }
        Ok(ended)
    }

    /// The status of the response header written, if one was.
    pub(crate) fn response_written(&self) -> Option<u16> {
        match self {
            Downstream::Ferry(s) => s.response_written(),
            Downstream::Pingora(s) => s.response_written().map(|h| h.status.as_u16()),
        }
    }

    pub(crate) fn request_summary(&self) -> String {
        match self {
            Downstream::Ferry(s) => s.request_summary(),
            Downstream::Pingora(s) => s.request_summary(),
        }
    }

    /// The request head as the client sent it (HTTP/1).
    pub(crate) fn raw_header(&self) -> Option<Bytes> {
        match self {
            Downstream::Ferry(s) => Some(s.raw_header()),
            Downstream::Pingora(s) => Some(s.as_http1()?.get_headers_raw_bytes()),
        }
    }

    pub(crate) fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        match self {
            Downstream::Ferry(s) => s.set_write_timeout(timeout),
            Downstream::Pingora(s) => s.set_write_timeout(timeout),
        }
    }

    /// The request body's read timeout (Ferry's session reads no body).
    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        if let Downstream::Pingora(s) = self {
            s.set_read_timeout(timeout);
        }
    }

    /// Trailers after the body: HTTP/2's (HTTP/1 sends none, as Pingora).
    pub(crate) async fn write_response_trailers(
        &mut self,
        trailers: http::HeaderMap,
    ) -> Result<()> {
        match self {
            Downstream::Ferry(_) => Ok(()),
            Downstream::Pingora(s) => Box::pin(s.write_response_trailers(trailers)).await,
        }
    }

    /// Pingora's `write_error_response`: the connection closes after it;
    /// nothing is written when a final header already was.
    pub(crate) async fn write_error_response(
        &mut self,
        resp: ResponseHeader,
        body: Bytes,
    ) -> Result<()> {
        let s = match self {
            Downstream::Ferry(s) => s,
            Downstream::Pingora(s) => return s.write_error_response(resp, body).await,
        };
        s.set_keepalive(None);
        if s.response_written()
            .is_some_and(|status| !(100..200).contains(&status) || status == 101)
        {
            return Ok(());
        }
        s.write_response_header(Box::new(resp)).await?;
        match body.is_empty() {
            true => s.finish_body().await,
            false => s.write_response_body(body, true).await,
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        match self {
            Downstream::Ferry(s) => s.shutdown().await,
            Downstream::Pingora(s) => s.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::header_clock::{HeaderLimits, Transport};
    use bytes::BytesMut;

    /// Ferry's session of `raw` on a real loopback connection.
    async fn ferrys(raw: &[u8]) -> (Downstream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        let client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("a connection");
        let (server, _) = listener.accept().await.expect("accepted");
        let io = pingora_core::protocols::l4::stream::Stream::from(server);
        let limits = HeaderLimits {
            timeout: Duration::from_secs(10),
            line: 8192,
            total: 32768,
        };
        let stream = ClockedStream::new(Transport::Tls(Box::new(io)), limits, None);
        let Ok(ferry_wire::Parsed::Complete(head)) =
            ferry_wire::parse_request(raw, ferry_wire::MAX_HEADERS)
        else {
            panic!("a complete head");
        };
        let session = H1Session::new(Box::new(stream), head, BytesMut::from(raw));
        (Downstream::Ferry(session), client)
    }

    #[tokio::test]
    async fn the_request_is_its_lines_until_a_header_is_made_and_then_the_header() {
        let (mut ds, _client) = ferrys(b"HEAD /a?b HTTP/1.0\r\nHost: h\r\nX-A: 1\r\n\r\n").await;
        assert!(matches!(ds.fields(), Fields::Lines { .. }));
        assert_eq!(
            (ds.method(), ds.raw_path(), ds.version()),
            ("HEAD", &b"/a?b"[..], http::Version::HTTP_10)
        );
        assert_eq!(ds.fields().get("x-a"), Some(&b"1"[..]));
        // A header only read changes nothing.
        assert_eq!(ds.req_header().uri.path(), "/a");
        assert!(!ds.target_changed());
        assert!(matches!(ds.fields(), Fields::Header(_)));
        // A hook's changes are the request from then on.
        let h = ds.req_header_mut();
        h.insert_header("X-A", "2").expect("set");
        h.set_uri(http::Uri::from_static("/z"));
        h.set_method(http::Method::GET);
        assert_eq!(ds.fields().get("x-a"), Some(&b"2"[..]));
        assert_eq!((ds.method(), ds.raw_path()), ("GET", &b"/z"[..]));
        assert!(ds.target_changed());
    }

    #[tokio::test]
    async fn a_fragment_alone_is_no_change_of_target() {
        let (ds, _client) = ferrys(b"GET /a?b#top HTTP/1.1\r\nHost: h\r\n\r\n").await;
        // Not part of the target: never sent upstream, logged or routed.
        assert_eq!(ds.raw_path(), b"/a?b");
        assert_eq!(ds.req_header().raw_path(), b"/a?b");
        assert!(!ds.target_changed());
    }
}
