//! The upstream's response head as it was read: its bytes and their lines,
//! made into Pingora's `ResponseHeader` only when a step must read or
//! change the header as one (a program's hook, the cache, compression,
//! `proxy_redirect`, `sticky`). A response that nothing but the route's
//! plan changes goes to an HTTP/1 client from its lines.
//!
//! nginx counterpart: `u->headers_in`, the upstream's header lines kept as
//! they were parsed, which `ngx_http_upstream_process_headers` copies to
//! the client's list.

use bytes::Bytes;
use ferry_filters::fields::Fields;
use ferry_wire::ResponseHead;
use http::HeaderName;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::ResponseHeader;

/// An upstream response head: as read, or made into Pingora's header.
pub(crate) enum Head {
    /// The bytes and their lines (an HTTP/1 server's, no value folded).
    Wire(Box<Wire>),
    /// Pingora's header: an HTTP/2 server's, or one a step asked for.
    Made(Box<ResponseHeader>),
}

/// An HTTP/1 head as read.
pub(crate) struct Wire {
    pub raw: Bytes,
    pub head: ResponseHead,
    /// Made with its names' case (for an HTTP/1 client).
    pub keep_case: bool,
}

impl Head {
    /// The head `head` parsed from `raw`. A folded value is unfolded now,
    /// in Pingora's header: the lines then no longer say the value.
    pub fn read(raw: Bytes, head: ResponseHead, keep_case: bool) -> Result<Head> {
        if head.has_folds() {
            return made(&head, &raw, keep_case).map(Head::Made);
        }
        Ok(Head::Wire(Box::new(Wire {
            raw,
            head,
            keep_case,
        })))
    }

    pub fn status(&self) -> u16 {
        match self {
            Head::Wire(w) => w.head.status,
            Head::Made(h) => h.status.as_u16(),
        }
    }

    /// The first value of the field `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        match self {
            Head::Wire(w) => w.fields().get(name.as_str()),
            Head::Made(h) => h.headers.get(name).map(|v| v.as_bytes()),
        }
    }

    /// Every value of the field `name`, in order.
    pub fn values(&self, name: &HeaderName) -> Vec<&[u8]> {
        match self {
            Head::Wire(w) => w.fields().get_all(name.as_str()),
            Head::Made(h) => h
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
        }
    }

    /// The head as read, while it was not made into a header.
    pub fn wire(&self) -> Option<&Wire> {
        match self {
            Head::Wire(w) => Some(w),
            Head::Made(_) => None,
        }
    }

    /// Pingora's header, made now if it was not.
    pub fn header(&mut self) -> Result<&mut ResponseHeader> {
        if let Head::Wire(w) = self {
            let header = made(&w.head, &w.raw, w.keep_case)?;
            *self = Head::Made(header);
        }
        match self {
            Head::Made(h) => Ok(h),
            Head::Wire(_) => Error::e_explain(ErrorType::InternalError, "a head not made"),
        }
    }

    /// Pingora's header, moved out.
    pub fn into_header(self) -> Result<Box<ResponseHeader>> {
        match self {
            Head::Wire(w) => made(&w.head, &w.raw, w.keep_case),
            Head::Made(h) => Ok(h),
        }
    }
}

impl Wire {
    /// The head's lines, to read by name.
    fn fields(&self) -> Fields<'_> {
        Fields::Lines {
            raw: &self.raw,
            lines: &self.head.lines,
        }
    }
}

/// The response head as Pingora's header type, each name and value a
/// slice of `raw` (no copy), names kept in the case they came in when
/// `keep_case` (else only the header map is made). With
/// `Transfer-Encoding`, `Content-Length` is dropped (RFC 9112 6.3), as
/// Pingora does.
fn made(head: &ResponseHead, raw: &Bytes, keep_case: bool) -> Result<Box<ResponseHeader>> {
    let size = Some(head.lines.len());
    let mut header = Box::new(match keep_case {
        true => ResponseHeader::build(head.status, size)?,
        false => ResponseHeader::build_no_case(head.status, size)?,
    });
    header.set_version(match head.minor {
        1 => http::Version::HTTP_11,
        _ => http::Version::HTTP_10,
    });
    if !head.reason.is_empty() {
        header.set_reason_phrase(Some(reason(&raw[head.reason.clone()])))?;
    }
    let mut chunked = false;
    for line in &head.lines {
        let name = raw.slice(line.name.clone());
        chunked |= name.eq_ignore_ascii_case(b"transfer-encoding");
        let value = match head.has_folds() {
            false => raw.slice(line.value.clone()),
            true => match ferry_wire::unfold(&raw[line.value.clone()]) {
                std::borrow::Cow::Borrowed(_) => raw.slice(line.value.clone()),
                std::borrow::Cow::Owned(v) => Bytes::from(v),
            },
        };
        // SAFETY: httparse admits only the bytes `http` allows in a value
        // (HTAB, SP to `~`, obs-text) but for a fold's CR and LF, and a
        // folded head's values went through `unfold`, which leaves no CR,
        // LF or NUL: Pingora's own check (`header_value_from_raw`) would
        // find nothing.
        let value = unsafe { http::HeaderValue::from_maybe_shared_unchecked(value) };
        header.append_header(name, value).or_err(
            ErrorType::InvalidHTTPHeader,
            "while parsing response header",
        )?;
    }
    if chunked {
        header.remove_header(&http::header::CONTENT_LENGTH);
    }
    Ok(header)
}

/// A reason phrase as Pingora's header keeps it: text, or none at all
/// (empty) when its bytes are not UTF-8.
pub(crate) fn reason(raw: &[u8]) -> &str {
    ferry_wire::text(raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::Parsed;

    fn parsed(raw: &'static [u8]) -> (Bytes, ResponseHead) {
        let raw = Bytes::from_static(raw);
        let Ok(Parsed::Complete(head)) = ferry_wire::parse_response(&raw, 16) else {
            panic!("a complete head");
        };
        (raw, head)
    }

    #[test]
    fn a_response_header_keeps_name_case_and_drops_length_under_chunked() {
        let (raw, head) = parsed(
            b"HTTP/1.1 200 Fine\r\nX-Mixed-Case: a\r\n  b\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-Obs: caf\xc3\xa9\tok ~\r\n\r\n",
        );
        let header = made(&head, &raw, true).expect("a header");
        assert_eq!(header.status.as_u16(), 200);
        assert_eq!(header.get_reason_phrase(), Some("Fine"));
        assert_eq!(header.headers["x-mixed-case"], "a b");
        assert!(header.headers.get("content-length").is_none());
        // Each value as Pingora's own check makes it.
        for (raw_value, name) in [
            (&b"a\r\n  b"[..], "x-mixed-case"),
            (b"caf\xc3\xa9\tok ~", "x-obs"),
        ] {
            let checked = pingora_http::header_value_from_raw(Bytes::copy_from_slice(raw_value));
            assert_eq!(
                header.headers[name].as_bytes(),
                checked.as_bytes(),
                "{name}"
            );
        }
        let mut wire = Vec::new();
        header.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).expect("text");
        assert!(wire.contains("X-Mixed-Case: a b\r\n"), "{wire}");
        // For an HTTP/2 client: the same header, without the names' case.
        let bare = made(&head, &raw, false).expect("a header");
        assert!(!bare.has_case() && header.has_case());
        assert_eq!(bare.headers, header.headers);
        assert_eq!(bare.get_reason_phrase(), Some("Fine"));
    }

    #[test]
    fn a_head_read_says_what_its_header_would() {
        let (raw, head) = parsed(
            b"HTTP/1.1 404 Gone\r\nSet-Cookie: a=1\r\nX-One: 1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n",
        );
        let mut read = Head::read(raw, head, true).expect("a head");
        assert!(read.wire().is_some());
        let cookie = http::header::SET_COOKIE;
        let ask = |h: &Head| {
            (
                h.status(),
                h.get(&cookie).map(<[u8]>::to_vec),
                h.values(&cookie)
                    .iter()
                    .map(|v| v.to_vec())
                    .collect::<Vec<_>>(),
                h.get(&http::header::CONTENT_TYPE).is_none(),
            )
        };
        let before = ask(&read);
        assert_eq!(before.0, 404);
        assert_eq!(before.2, vec![b"a=1".to_vec(), b"b=2".to_vec()]);
        read.header().expect("made");
        assert!(read.wire().is_none());
        assert_eq!(ask(&read), before);
        // A folded head is made at once.
        let (raw, head) = parsed(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n");
        let folded = Head::read(raw, head, true).expect("a head");
        assert!(folded.wire().is_none());
        assert_eq!(
            folded.get(&HeaderName::from_static("x-a")),
            Some(&b"a b"[..])
        );
    }
}
