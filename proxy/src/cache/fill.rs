//! Filling an entry: the response body, as the upstream sends it, is
//! written to a file in the cache's `tmp/` while the pipe carries it to the
//! client (its memory stays the route's buffers; the upstream is released
//! as soon as its body is read, however slow the client). The file becomes
//! the entry only when the upstream's body was read to its end and its
//! length is the one announced; otherwise it is removed.
//!
//! nginx counterpart: the event pipe with `p->cacheable` (every buffer goes
//! to the temp file) and `ngx_http_upstream_process_request`'s
//! `ngx_http_file_cache_update` or `_free`.

use crate::cache::lookup::Fetch;
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use ferry_cache::{Decision, Key, Writer, Zone};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Duration;

/// An entry being written.
pub(crate) struct Fill {
    zone: Arc<Zone>,
    key: Key,
    writer: Option<Writer>,
    fresh: Duration,
    /// The upstream's `Content-Length`, when it sent one.
    expect: Option<u64>,
    /// The reader saw the body's end.
    pub ended: bool,
}

impl Fill {
    /// Start filling, when this response is one to store.
    pub(crate) fn start<P: ProxyHttp>(
        fetch: &Fetch<'_>,
        app: &P,
        s: &Session<'_>,
        ctx: &mut P::CTX,
        header: &ResponseHeader,
    ) -> Result<Option<Fill>> {
        let status = header.status.as_u16();
        let head_fetched =
            s.req_header().method == http::Method::HEAD && !fetch.rc.conf.convert_head;
        if !fetch.store || status == 206 || head_fetched {
            return Ok(None);
        }
        let Decision::Store(fresh) = fetch.decision(app, s, ctx, status, header)? else {
            return Ok(None);
        };
        let zone = fetch.rc.zone.clone();
        Ok(Fill::new(
            zone,
            &fetch.key,
            &s.req_header().headers,
            header,
            fresh,
        ))
    }

    /// An entry for `key` (the variant a request with `headers` selects),
    /// fresh for `fresh`; `None` when its file cannot be started.
    pub(crate) fn new(
        zone: Arc<Zone>,
        key: &Key,
        headers: &http::HeaderMap,
        header: &ResponseHeader,
        fresh: Duration,
    ) -> Option<Fill> {
        match zone.writer(key, headers, header, fresh) {
            Ok((writer, key)) => Some(Fill {
                expect: header
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok()),
                zone,
                key,
                writer: Some(writer),
                fresh,
                ended: false,
            }),
            Err(e) => {
                log::error!("cache {}: cannot start an entry: {e}", zone.name);
                None
            }
        }
    }

    /// One piece of the body.
    pub(crate) fn append(&mut self, piece: &[u8]) {
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.append(piece) {
                log::error!(
                    "cache {}: writing an entry: {e}; not stored",
                    self.zone.name
                );
                self.writer = None;
            }
        }
    }

    /// The pipe is done: store the entry if the body came whole; whether
    /// it was.
    pub(crate) fn finish(mut self) -> bool {
        let Some(w) = self.writer.take() else {
            return false;
        };
        let whole = self.ended && self.expect.is_none_or(|n| n == w.written());
        if !whole {
            log::info!(
                "cache {}: response for {} not whole ({} bytes); not stored",
                self.zone.name,
                self.key.text,
                w.written()
            );
            return false;
        }
        match self.zone.stored(&self.key, w, self.fresh) {
            Ok(size) => {
                crate::metrics::metrics()
                    .cache_stored_bytes
                    .with_label_values(&[&self.zone.name])
                    .inc_by(size);
                true
            }
            Err(e) => {
                log::error!("cache {}: storing an entry: {e}", self.zone.name);
                false
            }
        }
    }
}
