//! Reading the client's request body.
//!
//! nginx counterpart: `ngx_http_read_client_request_body`. With
//! `request_buffering: true` (the default) the whole body is read before the
//! first try, into memory up to `client_body_buffer_size` and an unlinked
//! temp file beyond, so every try can replay it. With `false` it streams to
//! the first try. `client_max_body_size` gives 413; `Expect: 100-continue` is
//! answered here (it is never sent upstream).

use crate::client::refusal::{body_failure_status, CLIENT_CLOSED};
use ferry_conf::ProxyConf;
use ferry_filters::headers::BodyFraming;
use ferry_filters::request_body::RequestBody;
use pingora_core::protocols::http::ServerSession;
use std::path::Path;

pub(crate) enum ClientBody {
    None,
    Buffered(RequestBody),
    /// Not read yet: streams to the upstream on the first try.
    Streamed(BodyFraming),
}

impl ClientBody {
    pub(crate) fn framing(&self) -> BodyFraming {
        match self {
            ClientBody::None => BodyFraming::None,
            ClientBody::Buffered(b) => BodyFraming::Length(b.len()),
            ClientBody::Streamed(f) => *f,
        }
    }
}

/// Why the body could not be read.
pub(crate) enum BodyFailed {
    /// Answer with this status (400, 408, 413, 500).
    Status(u16),
    /// The client is gone: nothing to answer (nginx logs 499).
    ClientGone,
}

fn declared_length(ds: &ServerSession) -> Option<u64> {
    ds.req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) async fn read(
    ds: &mut ServerSession,
    proxy: &ProxyConf,
) -> Result<ClientBody, BodyFailed> {
    let max = proxy.client_max_body_size.0;
    let declared = declared_length(ds);
    if max > 0 && declared.is_some_and(|n| n > max) {
        return Err(BodyFailed::Status(413));
    }
    if ds.is_body_empty() {
        let framing = if declared.is_some() {
            BodyFraming::Length(0)
        } else {
            BodyFraming::None
        };
        return Ok(match framing {
            BodyFraming::None => ClientBody::None,
            _ => ClientBody::Buffered(RequestBody::new()),
        });
    }
    let expects_continue = ds
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && ds.write_continue_response().await.is_err() {
        return Err(BodyFailed::ClientGone);
    }
    if !proxy.request_buffering {
        return Ok(ClientBody::Streamed(match declared {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Chunked,
        }));
    }
    let mut body = RequestBody::new();
    let limit = proxy.client_body_buffer_size.as_usize();
    let temp = Path::new(&proxy.temp_path);
    loop {
        match ds.read_request_body().await {
            Ok(Some(chunk)) => {
                if max > 0 && body.len() + chunk.len() as u64 > max {
                    return Err(BodyFailed::Status(413));
                }
                if let Err(e) = body.push(&chunk, limit, temp) {
                    log::error!("cannot buffer the request body in {}: {e}", proxy.temp_path);
                    return Err(BodyFailed::Status(500));
                }
            }
            Ok(None) => return Ok(ClientBody::Buffered(body)),
            Err(e) => {
                return Err(match body_failure_status(&e) {
                    CLIENT_CLOSED => BodyFailed::ClientGone,
                    status => BodyFailed::Status(status),
                })
            }
        }
    }
}
