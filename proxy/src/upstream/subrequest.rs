//! Subrequests in memory: from a hook, send a request to a named upstream
//! group and get its status, headers and body back, bounded in size.
//!
//! nginx counterpart: `ngx_http_subrequest` with
//! `NGX_HTTP_SUBREQUEST_IN_MEMORY`, what `auth_request` is built on. The
//! request goes through the same upstream loop as a client's
//! ([`crate::upstream::tries`]): the group's balancer, passive health and
//! keepalive pool, and the `next_upstream` rules and timeouts of the route
//! the request matched (nginx's defaults when none did).

use crate::upstream::group::{make_peer, Upstream};
use crate::upstream::head::Head;
use crate::upstream::leg::BodySource;
use crate::upstream::leg::Leg;
use crate::upstream::next_upstream::{is_non_idempotent, Failure, Policy, RetryDecision};
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::request_head::RequestHead;
use crate::upstream::tries::{self, Chosen, Response};
use crate::upstream::try_record::TryList;
use bytes::{Bytes, BytesMut};
use ferry_conf::ProxyConf;
use ferry_lb::Lease;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a subrequest brought back.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubResponse {
    /// The upstream's status.
    pub status: u16,
    /// The upstream's response header, as it came.
    pub header: ResponseHeader,
    /// The whole body.
    pub body: Bytes,
}

/// A subrequest that could not be answered: no live server, every try
/// failed, or the body passed `limit`. `status()` is what nginx would give
/// (502, 504).
fn failed(status: u16, why: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), why.into())
}

/// A subrequest's part in the upstream loop: one group, a fixed request,
/// its body from memory.
struct SubrequestLeg<'a> {
    upstream: &'a Arc<Upstream>,
    proxy: &'a ProxyConf,
    req: &'a RequestHeader,
    body: &'a Bytes,
    client_ip: Option<IpAddr>,
    tries: TryList,
}

impl Leg for SubrequestLeg<'_> {
    async fn group(&mut self) -> Result<Arc<Upstream>> {
        Ok(self.upstream.clone())
    }

    fn key(&self, _upstream: &Upstream) -> (String, Option<IpAddr>) {
        (String::new(), self.client_ip)
    }

    fn peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer> {
        Arc::new(make_peer(upstream, lease.peer(), self.proxy))
    }

    async fn request(&mut self, _upstream: &Upstream, _h1: bool) -> Result<RequestHead> {
        Ok(RequestHead::Header(Box::new(self.req.clone())))
    }

    fn body(&mut self) -> BodySource<'_> {
        if self.body.is_empty() {
            BodySource::None
        } else {
            BodySource::Memory(self.body)
        }
    }

    fn body_streams(&self) -> bool {
        false
    }

    async fn read_piece(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn filter_piece(&mut self, _read: Option<Bytes>) -> Result<crate::upstream::leg::Piece> {
        Ok(crate::upstream::leg::Piece::End)
    }

    // A subrequest runs inside the hook that made it, with no client
    // session of its own: the connection hooks are that hook's to judge
    // from the result.
    async fn connected(&mut self, _conn: &crate::upstream::connect::Conn) -> Result<()> {
        Ok(())
    }

    fn fail_to_connect(&mut self, _peer: &UpstreamPeer, e: Box<Error>) -> Box<Error> {
        e
    }

    fn error_while_proxy(
        &mut self,
        _peer: &UpstreamPeer,
        e: Box<Error>,
        _reused: bool,
    ) -> Box<Error> {
        e
    }

    async fn response(&mut self, _head: &mut Head) -> Result<RetryDecision> {
        Ok(RetryDecision::Default)
    }

    fn tries(&mut self) -> &mut TryList {
        &mut self.tries
    }
}

pub(crate) async fn fetch(
    upstreams: &HashMap<String, Arc<Upstream>>,
    proxy: &ProxyConf,
    group: &str,
    req: RequestHeader,
    body: Bytes,
    limit: usize,
    client_ip: Option<IpAddr>,
) -> Result<SubResponse> {
    let mut sink = Memory {
        buf: BytesMut::new(),
        limit,
    };
    let header = fetch_to(upstreams, proxy, group, req, body, client_ip, &mut sink).await?;
    Ok(SubResponse {
        status: header.status.as_u16(),
        header,
        body: sink.buf.freeze(),
    })
}

/// Where a subrequest's response body goes, piece by piece.
pub(crate) trait BodySink: Send {
    /// The response header, before any body: `false` when the body is not
    /// wanted (the connection is then closed rather than read to its end).
    fn header(&mut self, header: &ResponseHeader) -> bool;
    /// One piece of the body; an error ends the subrequest.
    fn piece(&mut self, piece: &[u8]) -> Result<()>;
}

/// The body kept in memory, at most `limit` bytes.
struct Memory {
    buf: BytesMut,
    limit: usize,
}

impl BodySink for Memory {
    fn header(&mut self, _header: &ResponseHeader) -> bool {
        true
    }
    fn piece(&mut self, piece: &[u8]) -> Result<()> {
        if self.buf.len() + piece.len() > self.limit {
            return Err(failed(
                500,
                format!("subrequest body over {} bytes", self.limit),
            ));
        }
        self.buf.extend_from_slice(piece);
        Ok(())
    }
}

/// A subrequest whose body goes to `sink`; its response header.
pub(crate) async fn fetch_to<S: BodySink>(
    upstreams: &HashMap<String, Arc<Upstream>>,
    proxy: &ProxyConf,
    group: &str,
    mut req: RequestHeader,
    body: Bytes,
    client_ip: Option<IpAddr>,
    sink: &mut S,
) -> Result<ResponseHeader> {
    let Some(upstream) = upstreams.get(group) else {
        return Err(failed(
            500,
            format!("subrequest to unknown upstream `{group}`"),
        ));
    };
    req.insert_header(http::header::HOST, group)?;
    if body.is_empty() {
        req.remove_header(&http::header::CONTENT_LENGTH);
    } else {
        req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    let policy = Policy {
        conditions: proxy.next_upstream,
        non_idempotent: is_non_idempotent(req.method.as_str()),
        body_streamed: false,
        started: Instant::now(),
        budget: proxy.next_upstream_timeout.non_zero(),
    };
    let mut leg = SubrequestLeg {
        upstream,
        proxy,
        req: &req,
        body: &body,
        client_ip,
        tries: TryList::new(),
    };
    let buffer_size = proxy.buffer_size.as_usize();
    let chosen = tries::run(&mut leg, &policy, proxy.next_upstream_tries, buffer_size).await?;
    let Response { conn, header, held } = match chosen {
        Chosen::Response(r) => *r,
        Chosen::Fail(status) => {
            let last = leg.tries.last().map(|t| t.addr.as_str()).unwrap_or(group);
            return Err(failed(
                status,
                format!("subrequest to `{group}` failed ({last})"),
            ));
        }
    };
    let header = match header.into_header() {
        Ok(h) => h,
        Err(e) => {
            conn.close();
            held.finish(&mut leg.tries);
            return Err(e);
        }
    };
    let read = if sink.header(&header) {
        read_body(conn, sink).await
    } else {
        conn.close();
        Ok(())
    };
    held.finish(&mut leg.tries);
    read.map(|()| *header)
}

/// The whole body into `sink`; the connection back to the pool when it
/// was read to its end.
async fn read_body<S: BodySink>(
    mut conn: crate::upstream::connect::Conn,
    sink: &mut S,
) -> Result<()> {
    loop {
        match conn.session.read_body_bytes().await {
            Ok(Some(b)) => {
                if let Err(e) = sink.piece(&b) {
                    conn.close();
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                conn.close();
                return Err(failed(Failure::of(&e).status(), e.to_string()));
            }
        }
    }
    conn.release().await;
    Ok(())
}
