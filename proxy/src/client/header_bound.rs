//! The size bound on a request header, counted on the bytes as they arrive
//! (before Pingora parses them, whose own limit is 1 MiB).
//!
//! nginx counterpart: `large_client_header_buffers`: a request line longer
//! than one buffer is 414 ("Request-URI Too Large"), a header line longer
//! than one buffer or a header larger than all of them is refused ("Request
//! Header Or Cookie Too Large"; Ferry answers 431). Only line lengths and
//! the total are counted here; the header itself is Pingora's to parse.

/// 414: the request line is longer than a large buffer.
pub(crate) const URI_TOO_LONG: u16 = 414;
/// 431: a header line, or the whole header, is too large.
pub(crate) const HEADER_TOO_LARGE: u16 = 431;

/// One request header's count so far. (Counted in `u32`: every kept-alive
/// connection holds one.)
#[derive(Debug)]
pub(crate) struct HeaderBound {
    /// The longest a line may be (`large_client_header_buffers.size`).
    line_limit: u32,
    /// The most the header may take in all.
    total_limit: u32,
    line: u32,
    lines: u32,
    total: u32,
    /// The empty line that ends the header was seen: the rest is body.
    ended: bool,
    /// Spaces in the request line, and whether two came together.
    spaces: u32,
    double_space: bool,
    last: u8,
}

/// A limit as counted: one below `u32::MAX` at most. Every count stops
/// at one past its limit (`feed` refuses then), so none overflows: the
/// line's at the line limit's, the lines' and spaces' at the total's.
fn limit(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).min(u32::MAX - 1)
}

impl HeaderBound {
    pub(crate) fn new(line_limit: usize, total_limit: usize) -> HeaderBound {
        HeaderBound::counting(limit(line_limit), limit(total_limit))
    }

    /// Nothing counted yet, under these limits.
    fn counting(line_limit: u32, total_limit: u32) -> HeaderBound {
        HeaderBound {
            line_limit,
            total_limit,
            line: 0,
            lines: 0,
            total: 0,
            ended: false,
            spaces: 0,
            double_space: false,
            last: 0,
        }
    }

    /// A new request header begins.
    pub(crate) fn reset(&mut self) {
        *self = HeaderBound::counting(self.line_limit, self.total_limit);
    }

    /// Count `bytes` read off the connection; `Err(status)` once the header
    /// passed a bound.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), u16> {
        for &b in bytes {
            if self.ended {
                return Ok(());
            }
            self.total += 1;
            match b {
                b'\n' => {
                    // An empty line after the request line ends the header.
                    self.ended = self.line == 0 && self.lines > 0;
                    self.lines += 1;
                    self.line = 0;
                }
                b'\r' => {}
                _ => self.line += 1,
            }
            if self.lines == 0 && b == b' ' {
                self.spaces += 1;
                self.double_space |= self.last == b' ';
            }
            self.last = b;
            if self.line > self.line_limit {
                return Err(if self.lines == 0 {
                    URI_TOO_LONG
                } else {
                    HEADER_TOO_LARGE
                });
            }
            if self.total > self.total_limit {
                return Err(HEADER_TOO_LARGE);
            }
        }
        Ok(())
    }
}

impl HeaderBound {
    /// Whether the request line as sent was `METHOD SP TARGET SP VERSION`,
    /// one space each; `None` until the whole line was seen here (its
    /// bytes may have come with the previous request's).
    pub(crate) fn request_line_spaced(&self) -> Option<bool> {
        (self.lines > 0).then_some(self.spaces == 2 && !self.double_space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_total_are_bounded_wherever_the_reads_split() {
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        let long_field = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(100));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 123456\r\n".repeat(30));
        let fits = "GET / HTTP/1.1\r\nHost: t\r\n\r\nbody after the header is not counted";
        for (text, want) in [
            (long_uri.as_str(), Err(URI_TOO_LONG)),
            (long_field.as_str(), Err(HEADER_TOO_LARGE)),
            (many.as_str(), Err(HEADER_TOO_LARGE)),
            (fits, Ok(())),
        ] {
            for split in 0..text.len() {
                let mut b = HeaderBound::new(64, 256);
                let (a, rest) = text.as_bytes().split_at(split);
                let got = b.feed(a).and_then(|()| b.feed(rest));
                assert_eq!(got, want, "{text:?} split at {split}");
            }
        }
        for (line, spaced) in [
            ("GET / HTTP/1.1\r\n", Some(true)),
            ("GET  / HTTP/1.1\r\n", Some(false)),
            ("GET /a b HTTP/1.1\r\n", Some(false)),
            ("GET / HTTP/1.1", None),
        ] {
            let mut b = HeaderBound::new(64, 256);
            b.feed(line.as_bytes()).unwrap();
            assert_eq!(b.request_line_spaced(), spaced, "{line:?}");
        }
        let mut b = HeaderBound::new(64, 256);
        assert!(b.feed(long_uri.as_bytes()).is_err());
        b.reset();
        assert_eq!(b.feed(fits.as_bytes()), Ok(()));
    }
}
