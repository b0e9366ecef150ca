//! Subrequests in memory: from a hook, send a request to a named upstream
//! group and get its status, headers and body back, bounded in size.
//!
//! nginx counterpart: `ngx_http_subrequest` with
//! `NGX_HTTP_SUBREQUEST_IN_MEMORY`, what `auth_request` is built on. The
//! group's balancer, passive health and keepalive pool are used; timeouts
//! and `next_upstream` rules are those of the route the request matched
//! (nginx's defaults when none did).

use crate::upstream::connect::connect;
use crate::upstream::next_upstream::{is_non_idempotent, Failure, Policy};
use crate::runtime::{make_peer, Runtime};
use crate::upstream::send_request::BodySource;
use crate::upstream::tries::exchange;
use bytes::{Bytes, BytesMut};
use ferry_conf::ProxyConf;
use ferry_lb::{Feedback, Key};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a subrequest brought back.
#[derive(Debug, Clone)]
pub struct SubResponse {
    pub status: u16,
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// A subrequest that could not be answered: no live server, every try
/// failed, or the body passed `limit`. `status()` is what nginx would give
/// (502, 504).
pub fn failed(status: u16, why: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), why.into())
}

pub async fn fetch(
    rt: &Runtime,
    proxy: &ProxyConf,
    group: &str,
    mut req: RequestHeader,
    body: Bytes,
    limit: usize,
    client_ip: Option<IpAddr>,
) -> Result<SubResponse> {
    let Some(up) = rt.upstreams.get(group) else {
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
    let mut cursor = up.group.cursor(proxy.next_upstream_tries);
    let key = Key {
        hash: b"",
        client_ip,
    };
    loop {
        let Some(lease) = up.group.select(&mut cursor, &key) else {
            return Err(failed(502, format!("no live upstreams in `{group}`")));
        };
        let peer = Arc::new(make_peer(up, lease.peer(), proxy));
        let result = match connect(up, &peer).await {
            Ok(mut conn) => {
                let source = if body.is_empty() {
                    BodySource::None
                } else {
                    BodySource::Memory(&body)
                };
                match exchange(
                    &mut conn,
                    Box::new(req.clone()),
                    source,
                    proxy.buffer_size.as_usize(),
                )
                .await
                {
                    Ok(()) => Ok(conn),
                    Err(f) => Err((f.error, true, f.reused)),
                }
            }
            Err(e) => Err((e, false, false)),
        };
        match result {
            Ok(mut conn) => {
                let Some(header) = conn.session.resp_header().cloned() else {
                    return Err(failed(502, "no response header"));
                };
                let status = header.status.as_u16();
                if policy.retry_status(status, cursor.tries_left) {
                    let fb = if status == 403 || status == 404 {
                        Feedback::Next
                    } else {
                        Feedback::Failed
                    };
                    lease.free(fb, &mut cursor);
                    conn.close();
                    continue;
                }
                let mut buf = BytesMut::new();
                loop {
                    match conn.session.read_body_bytes().await {
                        Ok(Some(b)) if buf.len() + b.len() > limit => {
                            conn.close();
                            lease.free(Feedback::Ok, &mut cursor);
                            return Err(failed(500, format!("subrequest body over {limit} bytes")));
                        }
                        Ok(Some(b)) => buf.extend_from_slice(&b),
                        Ok(None) => break,
                        Err(e) => {
                            conn.close();
                            lease.free(Feedback::Ok, &mut cursor);
                            return Err(failed(Failure::of(&e).status(), e.to_string()));
                        }
                    }
                }
                conn.release().await;
                lease.free(Feedback::Ok, &mut cursor);
                return Ok(SubResponse {
                    status,
                    header,
                    body: buf.freeze(),
                });
            }
            Err((e, request_sent, reused)) => {
                let f = Failure::of(&e);
                lease.free(Feedback::Failed, &mut cursor);
                if reused && f == Failure::Error {
                    cursor.tries_left += 1;
                }
                if !policy.retry_failure(f, request_sent, cursor.tries_left) {
                    return Err(failed(f.status(), e.to_string()));
                }
            }
        }
    }
}
