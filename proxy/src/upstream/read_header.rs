//! Reading the upstream's response header.
//!
//! nginx counterpart: `ngx_http_upstream_process_header` and the proxy
//! module's status-line and header parsers (here: ferry-wire's, in
//! `h1.rs`). The whole header must fit in `buffer_size` ("upstream sent
//! too big header"), and framing nginx refuses is refused here too:
//! `Transfer-Encoding` other than a single `chunked`, `Transfer-Encoding`
//! with `Content-Length`, and (by the parser, with Pingora's verdicts) a bad
//! or conflicting `Content-Length`. All are `invalid_header`. Informational
//! responses (100, 103) are read past.

use crate::upstream::connect::Conn;
use http::header::TRANSFER_ENCODING;
use pingora_error::{Error, ErrorType, Result};

pub(crate) async fn read_response_header(conn: &mut Conn, buffer_size: usize) -> Result<()> {
    let s = &mut conn.session;
    let size = s.read_response_header().await?;
    if size > buffer_size {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            format!("upstream sent too big header: {size} bytes, buffer_size {buffer_size}"),
        );
    }
    // An HTTP/2 server's head has no `Transfer-Encoding` (`h2` refuses it).
    let Some(head) = s.h1_head() else {
        return Ok(());
    };
    if head.wire().is_some_and(|w| !w.head.has_transfer_encoding()) {
        return Ok(());
    }
    let te = head.values(&TRANSFER_ENCODING);
    if let Some(first) = te.first() {
        if te.len() > 1 || !first.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream sent unknown \"Transfer-Encoding\"",
            );
        }
        // A header made of the head drops Content-Length when
        // Transfer-Encoding is present; nginx refuses the pair.
        if head.wire().map_or_else(
            || {
                s.raw_header()
                    .is_some_and(|raw| contains_header(&raw, b"content-length"))
            },
            |w| w.head.get(&w.raw, "content-length").is_some(),
        ) {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream sent \"Content-Length\" and \"Transfer-Encoding\"",
            );
        }
    }
    Ok(())
}

/// Whether a raw header block has a field named `name` (lower-case).
fn contains_header(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_header_names_at_line_starts_only() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!super::contains_header(raw, b"content-length"));
        let raw = b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 1\r\n\r\n";
        assert!(super::contains_header(raw, b"content-length"));
    }
}
