//! A response head: the status line and header lines of an upstream's
//! response, parsed in place, with the framing and keepalive verdicts
//! Pingora 0.9's client session reaches (pingora-core
//! `protocols/http/v1/client.rs`). nginx's counterpart is
//! ngx_http_parse_status_line with ngx_http_proxy_process_header.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::error::from_httparse;
use crate::framing::{self, Framing};
use crate::line::{self, range_in, Line};
use crate::name::same_name;
use crate::{Parsed, WireError};

/// A parsed response head; every range points into the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code (100 to 999).
    pub status: u16,
    /// The reason phrase; empty when it holds obs-text (httparse's rule).
    pub reason: Range<usize>,
    /// HTTP/1.x
    pub minor: u8,
    /// The header lines in order.
    pub lines: Vec<Line>,
    /// Bytes of the head including the final empty line.
    pub len: usize,
    /// What `parse_response` found of the framing headers: whether there
    /// is a `Transfer-Encoding`, and the reconciled `Content-Length`
    /// (checked when there is none). `framing` reads them from here rather
    /// than from the lines again.
    transfer_encoding: bool,
    content_length: Option<u64>,
    /// A line is folded (obs-fold): a line break followed by a space or a
    /// tab.
    folded: bool,
    /// The first `Connection` line, by its index in `lines`.
    connection: Option<usize>,
    /// The first `X-Accel-Buffering` line, by its index in `lines`.
    accel: Option<usize>,
}

/// Parses a response head from the start of `buf` with Pingora's httparse
/// configuration for responses: spaces before a header's colon and obs-fold
/// continuation lines are accepted (a folded value's range spans the fold).
/// Refuses more than `max_headers` lines, a status below 100, and an
/// invalid `Content-Length` when there is no `Transfer-Encoding`.
pub fn parse_response(buf: &[u8], max_headers: usize) -> Result<Parsed<ResponseHead>, WireError> {
    let head = line::with_slots(max_headers, |slots| parse_with(buf, slots))?;
    match head {
        Parsed::Complete(h) => {
            let mut h = h;
            if h.status < 100 {
                return Err(WireError::BadStatus);
            }
            // One pass over the names for what framing and keepalive read;
            // each `Content-Length` reconciled on the way (a wrong one is
            // an error only without `Transfer-Encoding`, which may come
            // later).
            let mut length: Result<Option<u64>, WireError> = Ok(None);
            for (i, l) in h.lines.iter().enumerate() {
                let name = buf.get(l.name.clone()).unwrap_or_default();
                match name.len() {
                    17 if same_name(name, b"transfer-encoding") => h.transfer_encoding = true,
                    17 if h.accel.is_none() && same_name(name, b"x-accel-buffering") => {
                        h.accel = Some(i);
                    }
                    14 if same_name(name, b"content-length") => {
                        if let Ok(found) = &mut length {
                            let value = buf.get(l.value.clone()).unwrap_or_default();
                            let value = match h.folded {
                                true => line::unfold(value),
                                false => std::borrow::Cow::Borrowed(value),
                            };
                            if let Err(e) = framing::reconcile(&value, found) {
                                length = Err(e);
                            }
                        }
                    }
                    10 if h.connection.is_none() && same_name(name, b"connection") => {
                        h.connection = Some(i);
                    }
                    _ => {}
                }
            }
            if !h.transfer_encoding {
                h.content_length = length?;
            }
            Ok(Parsed::Complete(h))
        }
        Parsed::Partial => Ok(Parsed::Partial),
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Parsed<ResponseHead>, WireError> {
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let mut resp = httparse::Response::new(&mut []);
    let status = config
        .parse_response_with_uninit_headers(&mut resp, buf, headers)
        .map_err(from_httparse)?;
    let httparse::Status::Complete(len) = status else {
        return Ok(Parsed::Partial);
    };
    let Some(code) = resp.code else {
        return Err(WireError::Header("status"));
    };
    let reason = match resp.reason {
        Some(r) if !r.is_empty() => range_in(buf, r.as_bytes()),
        _ => 0..0,
    };
    Ok(Parsed::Complete(ResponseHead {
        status: code,
        reason,
        minor: resp.version.unwrap_or(1),
        lines: line::lines_of(buf, resp.headers),
        len,
        transfer_encoding: false,
        content_length: None,
        folded: has_fold(&buf[..len], resp.headers.len()),
        connection: None,
        accel: None,
    }))
}

/// A line break followed by a space or a tab: the only way a response
/// value httparse accepts can hold a CR, an LF or a NUL (see `unfold`).
/// httparse ends the status line and each header line at a line break, and
/// takes none elsewhere but in a fold: a head of `lines` header lines has
/// `lines + 2` of them (the empty line's included) unless one is folded.
fn has_fold(head: &[u8], lines: usize) -> bool {
    memchr::memchr_iter(b'\n', head).count() != lines + 2
}

impl ResponseHead {
    /// Whether a value is folded (obs-fold): only then may [`unfold`]
    /// change one, and a caller may take every value as it is otherwise.
    ///
    /// [`unfold`]: crate::unfold
    pub fn has_folds(&self) -> bool {
        self.folded
    }

    /// Whether a `Transfer-Encoding` line came.
    pub fn has_transfer_encoding(&self) -> bool {
        self.transfer_encoding
    }

    /// The reconciled `Content-Length`, when one came and no
    /// `Transfer-Encoding` did.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The first `X-Accel-Buffering` value, found in the parse's one pass
    /// over the names: the one field a proxy reads of every response
    /// beside the framing ones (nginx's `ngx_http_upstream_process_buffering`).
    pub fn accel_buffering<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        let l = self.lines.get(self.accel?)?;
        buf.get(l.value.clone())
    }

    /// The first field named `name` (ASCII case-insensitive).
    pub fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        line::first(&self.lines, buf, name)
    }

    /// Where the body ends, in Pingora's order: 1xx other than 101 has none
    /// (another head follows); 204 and 304 have none; a response to HEAD has
    /// none; 101 relays until close; then `Transfer-Encoding` with `chunked`
    /// final is `Chunked` (`Content-Length` ignored), any other
    /// `Transfer-Encoding` (even on HTTP/1.0) is `UntilClose`; then the
    /// reconciled `Content-Length`; else `UntilClose`.
    pub fn framing(&self, buf: &[u8], request_was_head: bool) -> Result<Framing, WireError> {
        match self.status {
            101 if !request_was_head => return Ok(Framing::UntilClose),
            100..=199 | 204 | 304 => return Ok(Framing::Empty),
            _ if request_was_head => return Ok(Framing::Empty),
            _ => {}
        }
        if self.transfer_encoding {
            return Ok(if framing::chunked_is_final(&self.lines, buf) {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        match self.content_length {
            Some(0) => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
            None => Ok(Framing::UntilClose),
        }
    }

    /// Whether the upstream connection may be reused after this response's
    /// body, given it ended exactly where its framing said: never after a
    /// 101 or a close-delimited body, nor for an HTTP/1.0 response with
    /// `Transfer-Encoding`; else `Connection: keep-alive` (exactly) or
    /// HTTP/1.1 without a `close` token. (Pingora also refuses reuse when
    /// the upstream sent bytes past the body, and when the request said
    /// `Connection: close`: the caller knows those.)
    pub fn keepalive(&self, buf: &[u8]) -> bool {
        self.keepalive_after(buf, false)
    }

    /// `keepalive` for a response to the given request method: a response
    /// to HEAD has no body, so it is never close-delimited.
    pub fn keepalive_after(&self, buf: &[u8], request_was_head: bool) -> bool {
        match self.framing(buf, request_was_head) {
            Ok(f) => self.keepalive_with(buf, f),
            Err(_) => false,
        }
    }

    /// `keepalive` for a response whose `framing` the caller already has
    /// (what `framing` returned for this head): the head is not read again
    /// for it.
    pub fn keepalive_with(&self, buf: &[u8], framing: Framing) -> bool {
        if self.status == 101 || self.is_informational() || framing == Framing::UntilClose {
            return false;
        }
        if self.minor == 0 && self.transfer_encoding {
            return false;
        }
        let line = self.connection.and_then(|i| self.lines.get(i));
        let connection = line.and_then(|l| buf.get(l.value.clone()));
        let verdict = connection.and_then(|v| framing::connection_verdict(&line::unfold(v)));
        verdict.unwrap_or(self.minor == 1)
    }

    /// A 1xx other than 101: an interim response; the real head follows.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}
