//! Reading the client's request body.
//!
//! nginx counterpart: `ngx_http_read_client_request_body`. With
//! `request_buffering: true` (the default) the whole body is read before the
//! first try, into memory up to `client_body_buffer_size` and an unlinked
//! temp file beyond, so every try can replay it. With `false` it streams to
//! the first try. `client_max_body_size` gives 413; `Expect: 100-continue` is
//! answered here (it is never sent upstream).

use crate::client::downstream::Downstream;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::upstream::next_upstream::{body_failure_status, CLIENT_CLOSED};
use ferry_conf::ProxyConf;
use ferry_filters::headers::BodyFraming;
use ferry_filters::request_body::RequestBody;
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
    /// Answer with this status (400, 408, 413, 500, or the body filter's),
    /// for this reason.
    Status(u16, String),
    /// The client is gone: nothing to answer (nginx logs 499).
    ClientGone,
}

fn declared_length(ds: &Downstream) -> Option<u64> {
    ds.fields()
        .get_name(&http::header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Read the body as the route says, each piece through the program's
/// `request_body_filter` before it is buffered.
pub(crate) async fn read<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    proxy: &ProxyConf,
) -> Result<ClientBody, BodyFailed> {
    let max = proxy.client_max_body_size.0;
    let declared = declared_length(s.downstream);
    if max > 0 && declared.is_some_and(|n| n > max) {
        return Err(status(
            413,
            "the declared body is over client_max_body_size",
        ));
    }
    if s.downstream.body_bytes_read() > 0 {
        // A hook read the body through `Session::pingora` and kept it:
        // sending the upstream what is left would send it nothing.
        log::error!(
            "the request body was read by a hook and not handed back (filter it in request_body_filter instead)"
        );
        return Err(status(500, "the request body was read by a hook"));
    }
    if s.downstream.is_http2() && declared == Some(0) {
        no_data_on_h2_stream(s).await?;
    }
    if s.downstream.is_body_empty() {
        // Pingora's rule: the filter sees every body's end, an empty one's
        // too (once, with `None`).
        if app.defines_hooks() {
            if let Err(e) = app.request_body_filter(s, &mut None, true, ctx).await {
                return Err(filter_refused(&e));
            }
        }
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
    let expects_continue = s
        .downstream
        .fields()
        .get_name(&http::header::EXPECT)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && s.downstream.write_continue_response().await.is_err() {
        return Err(BodyFailed::ClientGone);
    }
    if !proxy.request_buffering {
        return Ok(ClientBody::Streamed(match declared {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::Chunked,
        }));
    }
    buffer(app, s, ctx, proxy).await
}

/// The body read whole before the first try: memory up to
/// `client_body_buffer_size`, then an unlinked temp file; each piece
/// through `request_body_filter`; 413 past `client_max_body_size`.
async fn buffer<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    proxy: &ProxyConf,
) -> Result<ClientBody, BodyFailed> {
    let max = proxy.client_max_body_size.0;
    let mut body = RequestBody::new();
    let limit = proxy.client_body_buffer_size.as_usize();
    let temp = Path::new(&proxy.temp_path);
    loop {
        let mut piece = match s.downstream.read_request_body().await {
            Ok(p) => p,
            Err(e) => {
                return Err(match body_failure_status(&e) {
                    CLIENT_CLOSED => BodyFailed::ClientGone,
                    code => status(code, &e.to_string()),
                })
            }
        };
        let end = piece.is_none();
        if let Err(e) = app.request_body_filter(s, &mut piece, end, ctx).await {
            return Err(filter_refused(&e));
        }
        if let Some(chunk) = piece {
            if max > 0 && body.len() + chunk.len() as u64 > max {
                return Err(status(413, "the body is over client_max_body_size"));
            }
            if let Err(e) = body.push(&chunk, limit, temp) {
                log::error!("cannot buffer the request body in {}: {e}", proxy.temp_path);
                return Err(status(500, "cannot buffer the request body"));
            }
        }
        if end {
            return Ok(ClientBody::Buffered(body));
        }
    }
}

/// An HTTP/2 stream that declares no body must end without DATA: nginx
/// answers 400 before anything goes upstream (Pingora's session takes the
/// declared 0 for an empty body and would not look).
async fn no_data_on_h2_stream(s: &mut Session<'_>) -> Result<(), BodyFailed> {
    match s.downstream.read_request_body().await {
        Ok(None) => Ok(()),
        Ok(Some(b)) if b.is_empty() => Ok(()),
        _ => Err(status(
            400,
            "HTTP/2 DATA on a stream with content-length: 0",
        )),
    }
}

/// `request_body_filter` refused the body: its status (500 by default).
fn filter_refused(e: &pingora_error::Error) -> BodyFailed {
    let code = match crate::hooks::proxy_trait::error_status(e) {
        0 => 500,
        c => c,
    };
    status(code, &format!("request_body_filter: {e}"))
}

fn status(code: u16, why: &str) -> BodyFailed {
    BodyFailed::Status(code, why.to_string())
}
