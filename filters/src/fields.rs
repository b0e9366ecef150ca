//! A request's header fields as a step reads them: Pingora's header (made
//! for a program's hook, or for an HTTP/2 client), or the lines of the
//! head as it came, with no header made.
//!
//! nginx counterpart: `r->headers_in.headers`, the list of the lines as
//! parsed, each a pair of slices of the read buffer.

use ferry_wire::Line;
use http::HeaderName;
use pingora_http::RequestHeader;

/// A request's header fields.
#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    /// Pingora's header.
    Header(&'a RequestHeader),
    /// The lines of the head `raw` as it came.
    Lines { raw: &'a [u8], lines: &'a [Line] },
}

impl<'a> Fields<'a> {
    /// The first value of the field `name` (lower case).
    #[inline]
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        match *self {
            Fields::Header(h) => header_get(h, name),
            Fields::Lines { raw, lines } => lines
                .iter()
                .find(|l| named(raw, l, name.as_bytes()))
                .map(|l| value(raw, l)),
        }
    }

    /// The first value of the field `name`.
    #[inline]
    pub fn get_name(&self, name: &HeaderName) -> Option<&'a [u8]> {
        match *self {
            Fields::Header(h) => header_get(h, name),
            Fields::Lines { .. } => self.get(name.as_str()),
        }
    }

    /// Every value of the field `name` (lower case), in order.
    pub fn get_all(&self, name: &str) -> Vec<&'a [u8]> {
        self.values(name).collect()
    }

    /// Every value of the field `name` (lower case), in order, one by one.
    #[inline]
    pub fn values<'n>(&self, name: &'n str) -> Values<'a, 'n> {
        match *self {
            Fields::Header(h) => Values::Header(h.headers.get_all(name).into_iter()),
            Fields::Lines { raw, lines } => Values::Lines {
                raw,
                lines: lines.iter(),
                name,
            },
        }
    }

    /// How many lines there are.
    pub fn len(&self) -> usize {
        match *self {
            Fields::Header(h) => h.headers.len(),
            Fields::Lines { lines, .. } => lines.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the names keep the case they came in (a header made for an
    /// HTTP/2 client has lower-case names only).
    pub fn has_case(&self) -> bool {
        match *self {
            Fields::Header(h) => h.has_case(),
            Fields::Lines { .. } => true,
        }
    }

    /// Each line's name as it is written (the case it came in, else the
    /// name Pingora writes: see [`crate::headers::bare_case`]) and value:
    /// in a header, the lines of one name together in the order the names
    /// first came; as lines, in the order they came.
    pub fn for_each(&self, mut each: impl FnMut(&'a [u8], &'a [u8])) {
        match *self {
            Fields::Header(h) if h.has_case() => {
                // The two maps of a case-preserving header iterate in step.
                for ((_, value), (case, _)) in h.headers.iter().zip(h.case_header_iter()) {
                    each(case.as_slice(), value.as_bytes());
                }
            }
            Fields::Header(h) => {
                for (name, value) in h.headers.iter() {
                    each(crate::headers::bare_case(name).as_bytes(), value.as_bytes());
                }
            }
            Fields::Lines { raw, lines } => {
                for l in lines {
                    each(raw.get(l.name.clone()).unwrap_or_default(), value(raw, l));
                }
            }
        }
    }
}

/// The values of one field, as [`Fields::values`] finds them.
pub enum Values<'a, 'n> {
    /// In Pingora's header.
    Header(http::header::ValueIter<'a, http::HeaderValue>),
    /// In the lines that came.
    Lines {
        raw: &'a [u8],
        lines: std::slice::Iter<'a, Line>,
        name: &'n str,
    },
}

impl<'a> Iterator for Values<'a, '_> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Header(values) => next_value(values),
            Values::Lines { raw, lines, name } => lines
                .find(|l| named(raw, l, name.as_bytes()))
                .map(|l| value(raw, l)),
        }
    }
}

// A header's lookups stay out of line: inlined, their hashing made every
// lookup in the lines (the usual case) save and restore a frame's worth of
// registers.

#[inline(never)]
fn header_get(h: &RequestHeader, name: impl http::header::AsHeaderName) -> Option<&[u8]> {
    h.headers.get(name).map(|v| v.as_bytes())
}

#[inline(never)]
fn next_value<'a>(values: &mut http::header::ValueIter<'a, http::HeaderValue>) -> Option<&'a [u8]> {
    values.next().map(|v| v.as_bytes())
}

#[inline]
fn named(raw: &[u8], line: &Line, name: &[u8]) -> bool {
    // Most lines are told apart by their length alone.
    line.name.len() == name.len()
        && raw
            .get(line.name.clone())
            .is_some_and(|n| ferry_wire::same_name(n, name))
}

fn value<'a>(raw: &'a [u8], line: &Line) -> &'a [u8] {
    raw.get(line.value.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_header_say_the_same() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nAccept: */*\r\nx-two: 2\r\n\r\n";
        let Ok(ferry_wire::Parsed::Complete(head)) = ferry_wire::parse_request(raw, 16) else {
            panic!("a complete head");
        };
        let mut header = RequestHeader::build("GET", b"/", None).expect("a header");
        for l in &head.lines {
            let name = String::from_utf8(raw[l.name.clone()].to_vec()).expect("text");
            header
                .append_header(name, &raw[l.value.clone()])
                .expect("a line");
        }
        let lines = Fields::Lines {
            raw,
            lines: &head.lines,
        };
        let made = Fields::Header(&header);
        for name in ["host", "x-two", "accept", "none"] {
            assert_eq!(lines.get(name), made.get(name), "{name}");
            assert_eq!(lines.get_all(name), made.get_all(name), "{name}");
        }
        let x_two = HeaderName::from_static("x-two");
        assert_eq!(lines.get_name(&x_two), Some(&b"1"[..]));
        assert_eq!(
            (lines.len(), lines.has_case()),
            (made.len(), made.has_case())
        );
        let mut in_order = Vec::new();
        lines.for_each(|n, v| in_order.push((n, v)));
        assert_eq!(
            in_order,
            [
                (&b"Host"[..], &b"a"[..]),
                (b"X-Two", b"1"),
                (b"Accept", b"*/*"),
                (b"x-two", b"2")
            ]
        );
    }
}
