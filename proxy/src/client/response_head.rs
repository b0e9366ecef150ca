//! A response head as the bytes an HTTP/1 client gets: the status line and
//! the header lines as Pingora's session writes them (names in the case
//! they came in, else Pingora's titled or lower case), `Date` and
//! `Connection` set in place or added at the end, and what frames the
//! body, seen on the same pass. A head of lines that are not a header's
//! (a server's, forwarded) is written the same way from its pieces.
//!
//! nginx counterpart: `ngx_http_header_filter`, which writes the status
//! line, its own `Date` and `Connection`, then the header lines.

use ferry_filters::headers::bare_case;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;

/// What frames the body, as the header lines said it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// The last `Transfer-Encoding` coding is `chunked`.
    pub chunked: bool,
    /// A `Content-Length` came.
    pub has_length: bool,
    /// Every `Content-Length` value, reconciled: `None` when absent or when
    /// they are not one number.
    pub length: Option<usize>,
}

/// Write `header` to `buf`, `added` lines after its own (names it does not
/// have, as an `append_header` of each would place them). `connection`: a
/// final header's `Connection` value (with `Date`, set as Pingora sets
/// both); `None` for a `1xx`.
pub(crate) fn write(
    header: &ResponseHeader,
    added: &[(&str, String)],
    connection: Option<&str>,
    buf: &mut Vec<u8>,
) -> Result<Framing> {
    let version = match header.version {
        http::Version::HTTP_09 => "HTTP/0.9 ",
        http::Version::HTTP_10 => "HTTP/1.0 ",
        http::Version::HTTP_11 => "HTTP/1.1 ",
        _ => return Error::e_explain(ErrorType::WriteError, "serializing response header"),
    };
    buf.extend_from_slice(version.as_bytes());
    let reason = header.get_reason_phrase().map(str::as_bytes);
    status_line(buf, header.status.as_u16(), reason);
    let mut cases = header.case_header_iter();
    let own = header.headers.iter().map(|(name, value)| {
        let case = cases.next().map(|(c, _)| c.as_slice());
        (
            case.unwrap_or_else(|| bare_case(name).as_bytes()),
            value.as_bytes(),
        )
    });
    let added = added.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    let framing = lines(own, added, connection, buf);
    buf.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// A piece of a head made of lines that are not a header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Whole lines, each `Name: value` and CRLF, written as they are.
    Lines(&'a [u8]),
    /// One line, its name and value.
    Line(&'a [u8], &'a [u8]),
    /// A `Date` line: the session's date takes the first one's place and
    /// drops the rest (a `1xx` keeps it as it is).
    Date(&'a [u8], &'a [u8]),
    /// A `Connection` line, the same way.
    Connection(&'a [u8], &'a [u8]),
}

/// An HTTP/1.1 head of lines: `status`, `reason` (as Pingora's header
/// gives it: `None` writes none), the pieces, and what frames the body
/// as they say.
#[derive(Debug)]
pub(crate) struct LineHead<'a> {
    pub status: u16,
    pub reason: Option<&'a [u8]>,
    pub pieces: Vec<Piece<'a>>,
    pub framing: Framing,
}

/// Write `head`, then `added` lines, as [`write`] writes a header holding
/// the same lines.
pub(crate) fn write_lines(
    head: &LineHead<'_>,
    added: &[(&str, String)],
    connection: Option<&str>,
    buf: &mut Vec<u8>,
) -> Framing {
    buf.extend_from_slice(b"HTTP/1.1 ");
    status_line(buf, head.status, head.reason);
    let date = pingora_core::protocols::http::date::get_cached_date();
    let (mut dated, mut connected) = (false, false);
    for piece in &head.pieces {
        match (*piece, connection) {
            (Piece::Lines(bytes), _) => buf.extend_from_slice(bytes),
            (Piece::Line(n, v), _) | (Piece::Date(n, v) | Piece::Connection(n, v), None) => {
                line(buf, n, v)
            }
            (Piece::Date(..), Some(_)) => {
                if !std::mem::replace(&mut dated, true) {
                    line(buf, b"Date", date.as_bytes());
                }
            }
            (Piece::Connection(..), Some(c)) => {
                if !std::mem::replace(&mut connected, true) {
                    line(buf, b"Connection", c.as_bytes());
                }
            }
        }
    }
    for (name, value) in added {
        line(buf, name.as_bytes(), value.as_bytes());
    }
    if let Some(c) = connection {
        if !dated {
            line(buf, b"Date", date.as_bytes());
        }
        if !connected {
            line(buf, b"Connection", c.as_bytes());
        }
    }
    buf.extend_from_slice(b"\r\n");
    head.framing
}

/// The status line after its version.
fn status_line(buf: &mut Vec<u8>, status: u16, reason: Option<&[u8]>) {
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    buf.extend_from_slice(&digits);
    buf.push(b' ');
    buf.extend_from_slice(reason.unwrap_or_default());
    buf.extend_from_slice(b"\r\n");
}

/// The header lines. A set `Date` or `Connection` takes its name's first
/// place and drops the rest, as Pingora's `insert_header` does.
fn lines<'a>(
    own: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    added: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    connection: Option<&str>,
    buf: &mut Vec<u8>,
) -> Framing {
    let mut framing = Framing::default();
    let mut lengths = Lengths::default();
    let (mut dated, mut connected) = (false, false);
    let date = pingora_core::protocols::http::date::get_cached_date();
    for (name, value) in own {
        // By length first: most names are none of these four.
        let is = |n: &[u8]| ferry_wire::same_name(name, n);
        let set = match (connection, name.len()) {
            (Some(c), 10) if is(b"connection") => {
                Some((&mut connected, b"Connection".as_slice(), c.as_bytes()))
            }
            (Some(_), 4) if is(b"date") => Some((&mut dated, b"Date".as_slice(), date.as_bytes())),
            _ => None,
        };
        if let Some((done, bare, new)) = set {
            if !std::mem::replace(done, true) {
                line(buf, bare, new);
            }
            continue;
        }
        match name.len() {
            17 if is(b"transfer-encoding") => framing.chunked = last_coding_chunked(value),
            14 if is(b"content-length") => {
                framing.has_length = true;
                lengths.add(value);
            }
            _ => {}
        }
        line(buf, name, value);
    }
    for (name, value) in added {
        line(buf, name, value);
    }
    if let Some(c) = connection {
        if !dated {
            line(buf, b"Date", date.as_bytes());
        }
        if !connected {
            line(buf, b"Connection", c.as_bytes());
        }
    }
    framing.length = lengths.value();
    framing
}

fn line(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// The last coding of a `Transfer-Encoding` value is `chunked`.
fn last_coding_chunked(value: &[u8]) -> bool {
    let token = value.rsplit(|&b| b == b',').next().unwrap_or(value);
    token.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// `Content-Length` values, reconciled as Pingora does: identical values
/// (on several lines or in a list) are one; anything else is none.
#[derive(Default)]
struct Lengths {
    found: Option<usize>,
    bad: bool,
}

impl Lengths {
    fn add(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<usize>().ok());
            match (n, self.found) {
                (Some(n), Some(f)) if n != f => self.bad = true,
                (Some(n), _) => self.found = Some(n),
                (None, _) => self.bad = true,
            }
        }
    }

    fn value(&self) -> Option<usize> {
        self.found.filter(|_| !self.bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use http::header;

    /// Pingora's own serialization of `header` after its session set
    /// `Date` and `Connection` (its `http_resp_header_to_buf`).
    fn as_pingora_writes(mut header: ResponseHeader, connection: &str) -> Vec<u8> {
        let date = pingora_core::protocols::http::date::get_cached_date();
        header.insert_header(header::DATE, date).unwrap();
        header
            .insert_header(header::CONNECTION, connection)
            .unwrap();
        let mut buf = BytesMut::new();
        buf.put_slice(b"HTTP/1.1 ");
        buf.put_slice(header.status.as_str().as_bytes());
        buf.put_u8(b' ');
        buf.put_slice(header.get_reason_phrase().unwrap_or_default().as_bytes());
        buf.put_slice(b"\r\n");
        header.header_to_h1_wire(&mut buf);
        buf.put_slice(b"\r\n");
        buf.to_vec()
    }

    fn header(case: bool, lines: &[(&str, &str)]) -> ResponseHeader {
        let mut h = match case {
            true => ResponseHeader::build(200, None).unwrap(),
            false => ResponseHeader::build_no_case(200, None).unwrap(),
        };
        for (n, v) in lines {
            h.append_header(n.to_string(), *v).unwrap();
        }
        h
    }

    #[test]
    fn the_bytes_are_pingoras() {
        let shapes: [&[(&str, &str)]; 5] = [
            &[
                ("Server", "x"),
                ("date", "old"),
                ("Content-Length", "3"),
                ("X-A", "1"),
            ],
            &[
                ("X-A", "1"),
                ("Connection", "close"),
                ("x-b", "2"),
                ("CONNECTION", "x"),
            ],
            &[("Set-Cookie", "a=1"), ("X-A", "1"), ("set-cookie", "b=2")],
            &[
                ("Date", "1"),
                ("X-A", "1"),
                ("Date", "2"),
                ("Transfer-Encoding", "chunked"),
            ],
            &[],
        ];
        for lines in shapes {
            for case in [true, false] {
                for connection in ["keep-alive", "close"] {
                    let mut ours = Vec::new();
                    write(&header(case, lines), &[], Some(connection), &mut ours).unwrap();
                    let theirs = as_pingora_writes(header(case, lines), connection);
                    assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&theirs),
                        "{lines:?}, case {case}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_framing_is_seen_on_the_way() {
        let mut buf = Vec::new();
        let f = |lines: &[(&str, &str)], buf: &mut Vec<u8>| {
            write(&header(true, lines), &[], Some("close"), buf).unwrap()
        };
        let both = f(
            &[
                ("Content-Length", "5"),
                ("Transfer-Encoding", "gzip, chunked"),
            ],
            &mut buf,
        );
        assert!(both.chunked && both.has_length);
        assert_eq!(
            f(
                &[("Content-Length", "5, 5"), ("content-length", "5")],
                &mut buf
            )
            .length,
            Some(5)
        );
        for bad in ["5, 6", "-1", "", "5x"] {
            let framing = f(&[("Content-Length", bad)], &mut buf);
            assert_eq!(framing.length, None, "{bad:?}");
            assert!(framing.has_length);
        }
        assert!(!f(&[("Transfer-Encoding", "chunked, gzip")], &mut buf).chunked);
    }
}
