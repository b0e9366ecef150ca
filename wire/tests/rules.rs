//! One test per wire rule ferry-wire matches from Pingora 0.9: the verdict
//! and, for accepted heads, the ranges into the buffer.

use ferry_wire::{
    parse_request, parse_response, unfold, ChunkedDecoder, Decoded, Framing, Parsed, RequestHead,
    ResponseHead, WireError,
};

fn req(buf: &[u8]) -> Result<RequestHead, WireError> {
    match parse_request(buf, 256)? {
        Parsed::Complete(h) => Ok(h),
        Parsed::Partial => Err(WireError::Header("partial")),
    }
}

fn resp(buf: &[u8]) -> Result<ResponseHead, WireError> {
    match parse_response(buf, 256)? {
        Parsed::Complete(h) => Ok(h),
        Parsed::Partial => Err(WireError::Header("partial")),
    }
}

/// Decodes a whole chunked body: (data, consumed, done).
fn chunked(input: &[u8]) -> Result<(Vec<u8>, usize, bool), WireError> {
    let mut d = ChunkedDecoder::new();
    let (mut at, mut out) = (0, Vec::new());
    loop {
        let Decoded {
            consumed,
            data,
            done,
        } = d.decode(&input[at..])?;
        out.extend_from_slice(&input[at..][data.clone()]);
        at += consumed;
        if done || (consumed == 0 && data.is_empty()) {
            return Ok((out, at, done));
        }
    }
}

#[test]
fn request_head_ranges_point_into_the_buffer() {
    let buf = b"GET /a?b HTTP/1.1\r\nHost:  example.com \r\nX-A: 1\r\n\r\nrest";
    let h = req(buf).expect("a plain GET parses");
    assert_eq!(&buf[h.method.clone()], b"GET");
    assert_eq!(&buf[h.target.clone()], b"/a?b");
    assert_eq!(h.minor, 1);
    assert_eq!(h.len, buf.len() - 4);
    assert_eq!(h.lines.len(), 2);
    assert_eq!(&buf[h.lines[0].name.clone()], b"Host");
    assert_eq!(
        &buf[h.lines[0].value.clone()],
        b"example.com",
        "value without surrounding whitespace"
    );
    assert_eq!(
        h.get(buf, "x-a"),
        Some(&b"1"[..]),
        "names match ASCII case-insensitively"
    );
    assert_eq!(h.framing(buf), Ok(Framing::Empty));
}

#[test]
fn incomplete_head_is_partial() {
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n", 256),
        Ok(Parsed::Partial)
    );
    assert_eq!(
        parse_response(b"HTTP/1.1 200 OK\r\n", 256),
        Ok(Parsed::Partial)
    );
}

#[test]
fn too_many_header_lines_are_refused() {
    let buf = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(parse_request(buf, 2), Err(WireError::TooManyHeaders));
    assert!(matches!(parse_request(buf, 3), Ok(Parsed::Complete(_))));
    assert!(
        matches!(parse_request(buf, 1000), Ok(Parsed::Complete(_))),
        "over the stack limit too"
    );
}

#[test]
fn request_obs_fold_and_space_before_colon_are_refused() {
    assert!(matches!(
        req(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
        Err(WireError::Header(_))
    ));
    assert!(matches!(
        req(b"GET / HTTP/1.1\r\nX : a\r\n\r\n"),
        Err(WireError::Header(_))
    ));
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let buf = b"GET / HTTP/1.1\nHost: h\n\n";
    let h = req(buf).expect("bare LF parses");
    assert_eq!(h.len, buf.len());
    assert_eq!(h.get(buf, "host"), Some(&b"h"[..]));
}

#[test]
fn second_host_or_userinfo_is_refused() {
    assert_eq!(
        req(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        Err(WireError::BadHost)
    );
    assert_eq!(
        req(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        Err(WireError::BadHost)
    );
}

#[test]
fn origin_target_with_bytes_the_http_crate_refuses_is_refused() {
    assert!(matches!(
        req(b"GET /a`b HTTP/1.1\r\n\r\n"),
        Err(WireError::Header(_))
    ));
    assert!(matches!(
        req(b"GET /?a\"b HTTP/1.1\r\n\r\n"),
        Err(WireError::Header(_))
    ));
    let ok = b"GET /a?b`c{} HTTP/1.1\r\n\r\n";
    assert_eq!(
        &ok[req(ok).expect("backquote in a query is fine").target],
        b"/a?b`c{}"
    );
}

#[test]
fn content_length_frames_a_request() {
    let buf = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        req(buf).expect("parses").framing(buf),
        Ok(Framing::Length(5))
    );
    let zero = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(req(zero).expect("parses").framing(zero), Ok(Framing::Empty));
}

#[test]
fn identical_content_lengths_collapse() {
    for buf in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 003\r\n\r\n",
    ] {
        assert_eq!(
            req(buf).expect("parses").framing(buf),
            Ok(Framing::Length(3))
        );
    }
}

#[test]
fn invalid_or_differing_content_length_is_refused() {
    for value in [
        "3, 4",
        "+3",
        "-1",
        "1 2",
        "0x3",
        "",
        "3,",
        "18446744073709551616",
        "3\u{e9}",
    ] {
        let buf = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            req(buf.as_bytes()),
            Err(WireError::BadContentLength),
            "{value:?}"
        );
    }
    let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
    assert_eq!(req(two), Err(WireError::BadContentLength));
}

#[test]
fn chunked_final_coding_frames_a_request_and_overrides_content_length() {
    for te in ["chunked", "ChUnKeD", "gzip, chunked", "gzip,chunked "] {
        let buf =
            format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\nContent-Length: x\r\n\r\n");
        let h =
            req(buf.as_bytes()).expect("chunked last is accepted, a bad Content-Length ignored");
        assert_eq!(h.framing(buf.as_bytes()), Ok(Framing::Chunked), "{te:?}");
    }
}

#[test]
fn last_transfer_encoding_line_decides() {
    let last_chunked =
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        req(last_chunked).expect("parses").framing(last_chunked),
        Ok(Framing::Chunked)
    );
    let last_gzip =
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(req(last_gzip), Err(WireError::BadTransferEncoding));
}

#[test]
fn request_transfer_encoding_not_ending_in_chunked_is_refused() {
    for te in ["gzip", "chunked, gzip", "chunked,", "xchunked", "identity"] {
        let buf = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            req(buf.as_bytes()),
            Err(WireError::BadTransferEncoding),
            "{te:?}"
        );
    }
}

#[test]
fn http10_request_with_transfer_encoding_is_refused() {
    let buf = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(req(buf), Err(WireError::BadTransferEncoding));
}

#[test]
fn request_without_length_has_no_body_even_with_upgrade() {
    let buf = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes";
    assert_eq!(req(buf).expect("parses").framing(buf), Ok(Framing::Empty));
}

#[test]
fn request_keepalive_follows_connection_then_version() {
    let cases: [(&[u8], bool); 7] = [
        (b"GET / HTTP/1.1\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, x\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nConnection: x\r\nConnection: close\r\n\r\n",
            true,
        ),
    ];
    for (buf, keepalive) in cases {
        let h = req(buf).expect("parses");
        assert_eq!(
            h.keepalive(buf),
            keepalive,
            "{:?}",
            buf.escape_ascii().to_string()
        );
    }
}

#[test]
fn transfer_encoding_with_content_length_disables_keepalive() {
    let buf = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    let h = req(buf).expect("parses");
    assert_eq!(h.framing(buf), Ok(Framing::Chunked));
    assert!(!h.keepalive(buf));
}

#[test]
fn response_head_ranges_and_reason() {
    let buf = b"HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
    let h = resp(buf).expect("parses");
    assert_eq!((h.status, h.minor), (404, 0));
    assert_eq!(&buf[h.reason.clone()], b"Not Found");
    assert_eq!(h.len, buf.len() - 2);
    assert_eq!(h.framing(buf, false), Ok(Framing::Length(2)));
}

#[test]
fn response_space_before_colon_and_obs_fold_are_accepted() {
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\nX-F: a\r\n  b\r\n\r\nz";
    let h = resp(buf).expect("Pingora's response parser allows both");
    assert_eq!(h.framing(buf, false), Ok(Framing::Length(1)));
    let folded = h.get(buf, "x-f").expect("the folded line");
    assert_eq!(folded, b"a\r\n  b", "the range spans the fold");
    assert_eq!(&*unfold(folded), b"a b", "unfold gives Pingora's form");
}

#[test]
fn response_status_below_100_is_refused() {
    assert_eq!(resp(b"HTTP/1.1 099 Low\r\n\r\n"), Err(WireError::BadStatus));
}

#[test]
fn response_without_length_is_close_delimited() {
    let buf = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
    assert_eq!(
        resp(buf).expect("parses").framing(buf, false),
        Ok(Framing::UntilClose)
    );
}

#[test]
fn response_transfer_encoding_not_ending_in_chunked_is_close_delimited() {
    let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef";
    let h = resp(buf).expect("a response is not refused for it");
    assert_eq!(h.framing(buf, false), Ok(Framing::UntilClose));
    let chunked = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let h = resp(chunked).expect("HTTP/1.0 chunked response parses");
    assert_eq!(h.framing(chunked, false), Ok(Framing::Chunked));
    assert!(
        !h.keepalive(chunked),
        "HTTP/1.0 with Transfer-Encoding closes"
    );
}

#[test]
fn response_bad_content_length_is_refused_unless_transfer_encoding() {
    assert_eq!(
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n"),
        Err(WireError::BadContentLength)
    );
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        resp(buf).expect("TE overrides").framing(buf, false),
        Ok(Framing::Chunked)
    );
}

#[test]
fn no_body_for_204_304_head_and_1xx() {
    for (buf, head) in [
        (
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
            false,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", true),
        (b"HTTP/1.1 103 Early Hints\r\n\r\n", false),
    ] {
        assert_eq!(
            resp(buf).expect("parses").framing(buf, head),
            Ok(Framing::Empty)
        );
    }
}

#[test]
fn interim_responses_are_informational_but_101_is_not() {
    let c = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert!(resp(c).expect("parses").is_informational());
    let s = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let h = resp(s).expect("parses");
    assert!(!h.is_informational());
    assert_eq!(
        h.framing(s, false),
        Ok(Framing::UntilClose),
        "the upgraded stream"
    );
    assert!(!h.keepalive(s));
}

#[test]
fn response_keepalive_follows_connection_then_version() {
    let cases: [(&[u8], bool); 4] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            true,
        ),
    ];
    for (buf, keepalive) in cases {
        assert_eq!(resp(buf).expect("parses").keepalive(buf), keepalive);
    }
    let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
    let h = resp(no_length).expect("parses");
    assert!(!h.keepalive(no_length), "close-delimited");
    assert!(
        h.keepalive_after(no_length, true),
        "but not as an answer to HEAD"
    );
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let body = b"5;a=b\r\nhello\r\n6 ; x\r\n world\r\n0;last\r\nT: 1\r\nU: 2\r\n\r\nNEXT";
    let (data, consumed, done) = chunked(body).expect("decodes");
    assert_eq!(data, b"hello world");
    assert!(done);
    assert_eq!(&body[consumed..], b"NEXT", "stops at the end of the body");
}

#[test]
fn chunked_decode_returns_ranges_into_its_input() {
    let mut d = ChunkedDecoder::new();
    let input = b"3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(
        d.decode(input),
        Ok(Decoded {
            consumed: 6,
            data: 3..6,
            done: false
        })
    );
    assert_eq!(
        d.decode(&input[6..]),
        Ok(Decoded {
            consumed: 7,
            data: 7..7,
            done: true
        })
    );
}

#[test]
fn chunked_decode_waits_for_more_bytes() {
    let mut d = ChunkedDecoder::new();
    assert_eq!(
        d.decode(b"5"),
        Ok(Decoded {
            consumed: 0,
            data: 0..0,
            done: false
        })
    );
    assert_eq!(
        d.decode(b"5\r\nhe"),
        Ok(Decoded {
            consumed: 5,
            data: 3..5,
            done: false
        })
    );
    assert_eq!(
        d.decode(b"llo"),
        Ok(Decoded {
            consumed: 3,
            data: 0..3,
            done: false
        })
    );
    assert_eq!(
        d.decode(b"\r"),
        Ok(Decoded {
            consumed: 1,
            data: 1..1,
            done: false
        })
    );
}

#[test]
fn chunk_data_must_end_with_crlf() {
    assert!(matches!(
        chunked(b"5\r\nhelloXX0\r\n\r\n"),
        Err(WireError::BadChunk(_))
    ));
    assert!(matches!(
        chunked(b"1\r\na\n0\r\n\r\n"),
        Err(WireError::BadChunk(_))
    ));
}

#[test]
fn malformed_chunk_size_lines_are_refused() {
    for body in [
        &b"zz\r\n"[..],
        b"5\nhello\r\n",
        b"fffffffffffffffff\r\n",
        b"ffffffffffffffff\r\n",
    ] {
        assert!(
            matches!(chunked(body), Err(WireError::BadChunk(_))),
            "{:?}",
            body.escape_ascii().to_string()
        );
    }
}

#[test]
fn incomplete_chunk_size_line_over_8k_is_refused() {
    let mut body = b"1;".to_vec();
    body.extend(std::iter::repeat_n(b'x', 8 * 1024));
    assert!(matches!(chunked(&body), Err(WireError::BadChunk(_))));
    body.truncate(8 * 1024);
    assert_eq!(chunked(&body), Ok((Vec::new(), 0, false)), "shorter: waits");
}

#[test]
fn trailer_lines_must_end_with_crlf() {
    assert!(matches!(
        chunked(b"0\r\nT: v\n\r\n"),
        Err(WireError::BadChunk(_))
    ));
    assert!(matches!(
        chunked(b"0\r\nT: v\rX\r\n\r\n"),
        Err(WireError::BadChunk(_))
    ));
    assert!(matches!(chunked(b"0\r\n\n"), Err(WireError::BadChunk(_))));
    assert_eq!(chunked(b"0\r\n\r\n"), Ok((Vec::new(), 5, true)));
}

#[test]
fn trailers_over_64k_are_refused() {
    let mut body = b"0\r\nT: ".to_vec();
    body.extend(std::iter::repeat_n(b'v', 64 * 1024));
    body.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(chunked(&body), Err(WireError::BadChunk(_))));
}

#[test]
fn empty_chunk_size_is_the_last_chunk() {
    // httparse reads an empty size line as 0, and Pingora follows it.
    assert_eq!(chunked(b"\r\n\r\n"), Ok((Vec::new(), 4, true)));
}

#[test]
fn a_head_says_whether_a_line_is_folded() {
    let folded: [&[u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\n\r\n",
        b"HTTP/1.1 200 OK\nX-A: one\n\ttwo\n\n",
    ];
    for raw in folded {
        let head = resp(raw).unwrap();
        assert!(head.has_folds(), "{}", String::from_utf8_lossy(raw));
        let value = &raw[head.lines[0].value.clone()];
        assert!(matches!(unfold(value), std::borrow::Cow::Owned(_)));
    }
    let plain = b"HTTP/1.1 200 OK\r\nX-A: one two\r\nX-B:\t\r\n\r\n";
    let head = resp(plain).unwrap();
    assert!(!head.has_folds());
    for line in &head.lines {
        let value = &plain[line.value.clone()];
        assert!(matches!(unfold(value), std::borrow::Cow::Borrowed(_)));
    }
}

#[test]
fn the_first_accel_buffering_value_is_found_beside_the_framing_names() {
    let cases: [(&[u8], Option<&[u8]>); 4] = [
        (b"HTTP/1.1 200 OK\r\nX-Accel-Buffering: no\r\nContent-Length: 0\r\n\r\n", Some(b"no")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-accel-buffering: yes\r\nX-Accel-Buffering: no\r\n\r\n", Some(b"yes")),
        (b"HTTP/1.1 200 OK\r\nX-Accel-Bufferin: no\r\nContent-Length: 0\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None),
    ];
    for (buf, want) in cases {
        let h = resp(buf).expect("a head");
        assert_eq!(
            h.accel_buffering(buf),
            want,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    // Found with it, the chunked framing stays.
    let (buf, _) = cases[1];
    assert!(resp(buf).expect("a head").has_transfer_encoding());
}
