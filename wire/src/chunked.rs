//! The chunked transfer coding's decoder: chunk-size lines, chunk data, the
//! CRLF after each chunk, the trailer section and the final CRLF, fed in
//! whatever pieces the connection delivers. nginx's counterpart is
//! ngx_http_parse_chunked.
//!
//! The verdicts are Pingora 0.9's body reader's (pingora-core
//! `protocols/http/v1/body.rs`): chunk-size lines by httparse (extensions
//! ignored, an incomplete one longer than 8 KiB refused), exactly CRLF
//! after each chunk's data, trailer lines of any bytes but CR and LF each
//! ended by CRLF (a bare CR or LF refused), at most 64 KiB of trailers.

use std::ops::Range;

use crate::WireError;

/// Longest incomplete chunk-size line (with extensions) waited for.
const CHUNK_HEAD_LIMIT: usize = 8 * 1024;
/// Most trailer-section bytes accepted.
const TRAILER_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// Expecting the CR after a chunk's data.
    Cr,
    /// Expecting the LF after a chunk's data.
    Lf,
    /// After the last chunk's size line: `end` is how much of CRLF CRLF has
    /// been seen (it starts at 2: the size line's own CRLF), `read` the
    /// trailer bytes counted so far (as Pingora counts them).
    Trailers { end: u8, read: usize },
    /// The body has ended.
    Done,
}

/// Decodes one chunked body; keep one per body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

/// What one `decode` call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used up; the caller drops them before the next call.
    pub consumed: usize,
    /// Body data found, as a range into the input (possibly empty).
    pub data: Range<usize>,
    /// Whether the body (with its trailers) has ended.
    pub done: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing from the start of `input` up to and including the
    /// next run of chunk data (or the end of the body, or the end of
    /// `input`). `consumed == 0` with empty `data` and `done == false` means
    /// more bytes are needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, WireError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(stop(pos, true)),
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(stop(pos, false));
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Cr
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded {
                        consumed: pos + take,
                        data: pos..pos + take,
                        done: false,
                    });
                }
                State::Size => match size_line(rest)? {
                    Some((n, state)) => {
                        pos += n;
                        self.state = state;
                    }
                    None => return Ok(stop(pos, false)),
                },
                _ => {
                    let Some(&b) = rest.first() else {
                        return Ok(stop(pos, false));
                    };
                    self.state = self.framing_byte(b)?;
                    pos += 1;
                }
            }
        }
    }

    /// The state after one byte of the CRLF after chunk data or of the
    /// trailer section.
    fn framing_byte(&self, b: u8) -> Result<State, WireError> {
        match (self.state, b) {
            (State::Cr, b'\r') => Ok(State::Lf),
            (State::Lf, b'\n') => Ok(State::Size),
            (State::Cr | State::Lf, _) => Err(WireError::BadChunk("no CRLF after chunk data")),
            (State::Trailers { end: 3, .. }, b'\n') => Ok(State::Done),
            (State::Trailers { end: 1, read }, b'\n') => Ok(State::Trailers { end: 2, read }),
            (State::Trailers { end: 1 | 3, .. }, _) => Err(WireError::BadChunk("CR without LF")),
            (State::Trailers { end, read }, b'\r') => Ok(State::Trailers { end: end + 1, read }),
            (State::Trailers { .. }, b'\n') => Err(WireError::BadChunk("LF without CR")),
            (State::Trailers { end, read }, _) => {
                let read = read + usize::from(end) + 1;
                if read > TRAILER_LIMIT {
                    return Err(WireError::BadChunk("trailers too long"));
                }
                Ok(State::Trailers { end: 0, read })
            }
            (state, _) => Ok(state),
        }
    }
}

/// A chunk-size line at the start of `rest`: its length and the state after
/// it, or `None` when incomplete.
fn size_line(rest: &[u8]) -> Result<Option<(usize, State)>, WireError> {
    match httparse::parse_chunk_size(rest) {
        Err(_) => Err(WireError::BadChunk("chunk-size line")),
        Ok(httparse::Status::Partial) if rest.len() > CHUNK_HEAD_LIMIT => {
            Err(WireError::BadChunk("chunk-size line too long"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete((n, 0))) => {
            Ok(Some((n, State::Trailers { end: 2, read: 0 })))
        }
        Ok(httparse::Status::Complete((n, size))) => {
            // Pingora refuses a size whose end (with its CRLF) overflows an index.
            if size.checked_add(n as u64 + 2).is_none() {
                return Err(WireError::BadChunk("chunk size overflows"));
            }
            Ok(Some((n, State::Data(size))))
        }
    }
}

fn stop(pos: usize, done: bool) -> Decoded {
    Decoded {
        consumed: pos,
        data: pos..pos,
        done,
    }
}
