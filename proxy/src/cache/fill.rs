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

use bytes::Bytes;
use ferry_cache::{Filling, Key, Zone};
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Duration;

/// An entry being written (by the cache's writer thread: the request
/// never waits on the disk until the end, when the entry goes in place).
pub(crate) struct Fill {
    zone: Arc<Zone>,
    key: Key,
    /// `None` once handed to the writer to be put in place.
    filling: Option<Filling>,
    /// The upstream's `Content-Length`, when it sent one.
    expect: Option<u64>,
    /// Body bytes read from the upstream, before any filter changed them:
    /// what `expect` is checked against (a filter may change the length of
    /// what is stored).
    read: u64,
    /// The reader saw the body's end.
    pub ended: bool,
    /// Whether the entry went in place, once [`Fill::commit`] ran.
    stored: Option<bool>,
}

impl Fill {
    /// An entry for `key` (the variant a request with `headers` selects),
    /// fresh for `fresh`; `None` when the cache cannot write.
    pub(crate) fn new(
        zone: Arc<Zone>,
        key: &Key,
        headers: &http::HeaderMap,
        header: &ResponseHeader,
        fresh: Duration,
    ) -> Option<Fill> {
        let filling = zone.fill(key, headers, header, fresh)?;
        Some(Fill {
            expect: header
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            zone,
            key: key.clone(),
            filling: Some(filling),
            read: 0,
            ended: false,
            stored: None,
        })
    }

    /// One piece of the body as stored; `read`: its length as the
    /// upstream sent it.
    pub(crate) fn append(&mut self, read: usize, piece: Option<&Bytes>) {
        self.read += read as u64;
        if let (Some(f), Some(piece)) = (&mut self.filling, piece) {
            f.append(piece);
        }
    }

    /// The body's end was read: put the entry in place now, before the
    /// client has the response's last byte, so that a request made after
    /// this response finds it.
    pub(crate) async fn commit(&mut self) {
        let Some(filling) = self.filling.take() else {
            return;
        };
        if self.expect.is_some_and(|n| n != self.read) {
            log::info!(
                "cache {}: response for {} not whole ({} of {:?} bytes); not stored",
                self.zone.name,
                self.key.text,
                self.read,
                self.expect
            );
            self.stored = Some(false);
            return;
        }
        let stored = match filling.store().await {
            Ok(size) => {
                crate::metrics::metrics()
                    .cache
                    .stored_bytes
                    .with_label_values(&[&self.zone.name])
                    .inc_by(size);
                true
            }
            Err(e) => {
                log::info!(
                    "cache {}: response for {} not stored: {e}",
                    self.zone.name,
                    self.key.text
                );
                false
            }
        };
        self.stored = Some(stored);
    }

    /// The pipe is done: store the entry if the body came whole (when
    /// the reader has not already); whether it was stored.
    pub(crate) async fn finish(mut self) -> bool {
        if let Some(stored) = self.stored {
            return stored;
        }
        if !self.ended {
            let written = self.filling.as_ref().map_or(0, |f| f.written());
            log::info!(
                "cache {}: response for {} not whole ({written} bytes); not stored",
                self.zone.name,
                self.key.text,
            );
            return false;
        }
        self.commit().await;
        self.stored == Some(true)
    }
}

impl crate::response::body_pipe::BodyTap for Fill {
    fn piece(&mut self, read: usize, piece: Option<&Bytes>) {
        self.append(read, piece);
    }

    async fn end(&mut self) {
        self.ended = true;
        self.commit().await;
    }
}
