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
#[derive(Debug, Clone, PartialEq)]
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
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), u16> {
        if self.ended {
            return Ok(());
        }
        let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        if self.line.saturating_add(n) <= self.line_limit
            && self.total.saturating_add(n) <= self.total_limit
        {
            self.feed_within(bytes);
            return Ok(());
        }
        while !bytes.is_empty() && !self.ended {
            let end = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
            let (line, rest) = bytes.split_at(end);
            self.feed_line(line)?;
            bytes = rest;
        }
        Ok(())
    }

    /// Count a piece of one line (its LF, if it came, last): at once when
    /// the piece, counted whole, stays within both bounds, else byte by
    /// byte to find the first it passes.
    fn feed_line(&mut self, piece: &[u8]) -> Result<(), u16> {
        let n = u32::try_from(piece.len()).unwrap_or(u32::MAX);
        let within = self.line.saturating_add(n) <= self.line_limit
            && self.total.saturating_add(n) <= self.total_limit;
        if !within {
            return piece.iter().try_for_each(|&b| self.feed_byte(b));
        }
        // No bound is passed: the counts at once.
        let (text, lf) = match piece.split_last() {
            Some((b'\n', text)) => (text, true),
            _ => (piece, false),
        };
        if self.lines == 0 {
            self.count_spaces(text);
        }
        let crs = text.iter().filter(|&&b| b == b'\r').count() as u32;
        self.total += n;
        self.line += text.len() as u32 - crs;
        if lf {
            // An empty line after the request line ends the header.
            self.ended = self.line == 0 && self.lines > 0;
            self.lines += 1;
            self.line = 0;
        }
        self.last = piece[piece.len() - 1];
        Ok(())
    }

    /// Count `bytes`, which cannot pass a bound whatever they hold (the
    /// common read: a whole header, shorter than a line may be): one scan
    /// for the line feeds, and a look at each line only to tell an empty
    /// one.
    fn feed_within(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            let text = &bytes[start..lf];
            if self.lines == 0 {
                self.count_spaces(text);
            }
            // A line of nothing but CRs counts as empty (its length is
            // its bytes less them).
            let empty = self.line == 0 && text.iter().all(|&b| b == b'\r');
            self.total += (lf + 1 - start) as u32;
            self.ended = empty && self.lines > 0;
            self.lines += 1;
            self.line = 0;
            self.last = b'\n';
            start = lf + 1;
            if self.ended {
                return;
            }
        }
        let text = &bytes[start..];
        if let Some(&last) = text.last() {
            if self.lines == 0 {
                self.count_spaces(text);
            }
            let crs = text.iter().filter(|&&b| b == b'\r').count();
            self.total += text.len() as u32;
            self.line += (text.len() - crs) as u32;
            self.last = last;
        }
    }

    /// The request line's spaces in `text`, a piece of it (`last`: the
    /// byte before it).
    fn count_spaces(&mut self, text: &[u8]) {
        let spaces = text.iter().filter(|&&b| b == b' ').count() as u32;
        if spaces > 0 {
            self.spaces += spaces;
            self.double_space |= (self.last == b' ' && text.first() == Some(&b' '))
                || text.windows(2).any(|w| w == b"  ");
        }
    }

    fn feed_byte(&mut self, b: u8) -> Result<(), u16> {
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

    /// The count as it was kept a byte at a time.
    fn byte_by_byte(b: &mut HeaderBound, bytes: &[u8]) -> Result<(), u16> {
        for &x in bytes {
            if b.ended {
                break;
            }
            b.feed_byte(x)?;
        }
        Ok(())
    }

    #[test]
    fn a_line_at_once_counts_as_a_byte_at_a_time() {
        let texts = [
            "GET / HTTP/1.1\r\nHost: t\r\nX-Long: abcdefghijklmnopqrstuvwxyz0123456789\r\n\r\nbody",
            "GET  /a\rb HTTP/1.1\nX: 1\r\r\n\nrest",
            "POST /x HTTP/1.1\r\nA: 1\r\nB: 22\r\nC: 333\r\nD: 4444\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\n\r\n",
        ];
        for text in texts {
            for (line_limit, total_limit) in [(8, 40), (16, 64), (30, 30), (64, 1024), (5, 1024)] {
                for split in 0..text.len() {
                    let (a, rest) = text.as_bytes().split_at(split);
                    let mut ours = HeaderBound::new(line_limit, total_limit);
                    let got = ours.feed(a).and_then(|()| ours.feed(rest));
                    let mut theirs = HeaderBound::new(line_limit, total_limit);
                    let want =
                        byte_by_byte(&mut theirs, a).and_then(|()| byte_by_byte(&mut theirs, rest));
                    assert_eq!(got, want, "{text:?} {line_limit}/{total_limit} at {split}");
                    if got.is_ok() {
                        assert_eq!(
                            ours, theirs,
                            "{text:?} {line_limit}/{total_limit} at {split}"
                        );
                    }
                }
            }
        }
    }

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
