//! One try's exchange with its server, over HTTP/1.x or HTTP/2: Ferry's
//! own HTTP/1 session ([`crate::upstream::h1`]) and Pingora's HTTP/2 one
//! behind the few calls the upstream loop makes (send the header, the body
//! and its end; read the header, the body and, on HTTP/2, the trailers).
//!
//! nginx counterpart: the proxy module's HTTP/1 `create_request` /
//! `process_header` and, since 1.29.4, its HTTP/2 ones
//! (`proxy_http_version 2`), one request per stream.
//!
//! Both sessions are boxed: a try's connection moves through every step of a
//! request's future, and each step would otherwise carry a copy of it.

use crate::upstream::h1::H1 as H1Session;
use crate::upstream::head::Head;
use crate::upstream::request_head::RequestHead;
use bytes::Bytes;
use http::HeaderMap;
use pingora_core::protocols::http::v2::client::Http2Session as H2Session;
use pingora_core::protocols::{Digest, UniqueIDType};
use pingora_error::{Error, ErrorType, Result};
use std::time::Duration;

/// A try's session with its server.
pub enum UpstreamSession {
    H1(Box<H1Session>),
    H2(Box<H2Session>),
}

impl UpstreamSession {
    pub fn set_timeouts(&mut self, read: Option<Duration>, write: Option<Duration>) {
        match self {
            UpstreamSession::H1(s) => {
                s.read_timeout = read;
                s.write_timeout = write;
            }
            UpstreamSession::H2(s) => {
                s.read_timeout = read;
                s.write_timeout = write;
            }
        }
    }

    /// The HTTP/1 session (an upgrade's tunnel, which HTTP/2 never carries).
    pub fn h1(&mut self) -> Option<&mut H1Session> {
        match self {
            UpstreamSession::H1(s) => Some(s),
            UpstreamSession::H2(_) => None,
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, UpstreamSession::H2(_))
    }

    pub fn id(&self) -> UniqueIDType {
        match self {
            UpstreamSession::H1(s) => s.id(),
            UpstreamSession::H2(s) => s.fd(),
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match self {
            UpstreamSession::H1(s) => Some(s.digest()),
            UpstreamSession::H2(s) => s.digest(),
        }
    }

    pub async fn write_request_header(&mut self, req: RequestHead) -> Result<()> {
        match (self, req) {
            (UpstreamSession::H1(s), RequestHead::Header(req)) => s.write_request_header(req).await,
            (UpstreamSession::H1(s), RequestHead::Wire(w)) => s.write_request_wire(w).await,
            (UpstreamSession::H2(s), RequestHead::Header(req)) => {
                s.write_request_header(req, false)
            }
            (UpstreamSession::H2(_), RequestHead::Wire(_)) => Err(Error::explain(
                ErrorType::InternalError,
                "an HTTP/1 request head for an HTTP/2 stream",
            )),
        }
    }

    pub async fn write_body(&mut self, data: &Bytes) -> Result<()> {
        match self {
            UpstreamSession::H1(s) => s.write_body(data).await,
            UpstreamSession::H2(s) => s.write_request_body(data.clone(), false).await,
        }
    }

    pub async fn finish_body(&mut self) -> Result<()> {
        match self {
            UpstreamSession::H1(s) => s.finish_body().await,
            UpstreamSession::H2(s) => s.finish_request_body(),
        }
    }

    /// Read the response header (past any 1xx but a 101); its size in bytes
    /// as the server sent it (HTTP/2: names and values).
    pub async fn read_response_header(&mut self) -> Result<usize> {
        match self {
            UpstreamSession::H1(s) => loop {
                let size = s.read_response().await?;
                let status = s.head().map_or(0, Head::status);
                if !(100..200).contains(&status) || status == 101 {
                    return Ok(size);
                }
            },
            UpstreamSession::H2(s) => {
                // Read already while the request body streamed (full duplex).
                if s.response_header().is_none() {
                    s.read_response_header().await?;
                }
                let Some(h) = s.response_header() else {
                    return Error::e_explain(ErrorType::InvalidH2, "no response header");
                };
                Ok(h.headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 4)
                    .sum())
            }
        }
    }

    /// The raw header bytes (HTTP/1 only: HTTP/2 has no such text).
    pub fn raw_header(&self) -> Option<Bytes> {
        match self {
            UpstreamSession::H1(s) => Some(s.raw_header()),
            UpstreamSession::H2(_) => None,
        }
    }

    /// An HTTP/1 server's response head, as read.
    pub fn h1_head(&self) -> Option<&Head> {
        match self {
            UpstreamSession::H1(s) => s.head(),
            UpstreamSession::H2(_) => None,
        }
    }

    /// The response head, for the request to keep (HTTP/1: moved out of
    /// the session, which has no more use for it; HTTP/2: a copy).
    pub fn take_head(&mut self) -> Option<Head> {
        match self {
            UpstreamSession::H1(s) => s.take_head(),
            UpstreamSession::H2(s) => s.response_header().map(|h| Head::Made(Box::new(h.clone()))),
        }
    }

    /// The next piece of the response body, `None` at its end.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        match self {
            UpstreamSession::H1(s) => s.read_body_bytes().await,
            UpstreamSession::H2(s) => s.read_response_body().await,
        }
    }

    pub fn is_body_done(&mut self) -> bool {
        match self {
            UpstreamSession::H1(s) => s.is_body_done(),
            UpstreamSession::H2(s) => s.response_finished(),
        }
    }

    /// The response's trailers, once its body was read (HTTP/2).
    pub async fn read_trailers(&mut self) -> Result<Option<HeaderMap>> {
        match self {
            UpstreamSession::H1(_) => Ok(None),
            UpstreamSession::H2(s) => s.read_trailers().await,
        }
    }
}
