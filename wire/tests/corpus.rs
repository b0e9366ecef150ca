//! The differential harness (ferry-wire against Pingora 0.9's own HTTP/1
//! sessions) over the seed corpus in `fuzz/corpus/wire_diff/` and over
//! messages generated from a small HTTP/1 grammar, with truncations and
//! bit flips.

mod differential;

use differential::{End, Outcome};

use std::path::PathBuf;

use proptest::prelude::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_diff")
}

/// Runs the file through the harness as its name says: `req-*` a request,
/// `resp-head-*` a response to HEAD, `resp-*` a response.
fn check_file(name: &str, bytes: &[u8]) -> Result<End, String> {
    if name.starts_with("req-") {
        differential::request_end(bytes)
    } else if name.starts_with("resp-head-") {
        differential::response_end(bytes, true)
    } else if name.starts_with("resp-") {
        differential::response_end(bytes, false)
    } else {
        Err(format!("{name}: not named req-*, resp-* or resp-head-*"))
    }
}

#[test]
fn seed_corpus_agrees_with_pingora() {
    let mut failures = Vec::new();
    let mut ends = Vec::new();
    let entries = std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/wire_diff exists");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = std::fs::read(&path).expect("a corpus file reads");
        match check_file(&name, &bytes) {
            Ok(end) => ends.push(end),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ends.len() >= 40, "only {} corpus files", ends.len());
    // The corpus reaches every way a message can end, on both sides alike.
    for end in [
        End::HeadRefused,
        End::HeadIncomplete,
        End::BodyComplete,
        End::BodyTruncated,
        End::BodyInvalid,
    ] {
        assert!(ends.contains(&end), "no corpus file ends with {end:?}");
    }
}

/// The harness itself reports what it is meant to: a verdict, a body and a
/// header that differ.
#[test]
fn harness_reports_disagreements() {
    let base = Outcome {
        heads: Vec::new(),
        body: b"abc".to_vec(),
        end: End::BodyComplete,
        keepalive: Some(true),
        why: String::new(),
    };
    assert!(differential::compare(&base, &base).is_ok());
    let other_end = Outcome {
        end: End::BodyTruncated,
        ..base.clone()
    };
    assert!(differential::compare(&base, &other_end)
        .unwrap_err()
        .contains("verdict"));
    let other_body = Outcome {
        body: b"abd".to_vec(),
        ..base.clone()
    };
    assert!(differential::compare(&base, &other_body)
        .unwrap_err()
        .contains("body"));
    let other_keepalive = Outcome {
        keepalive: Some(false),
        ..base.clone()
    };
    assert!(differential::compare(&base, &other_keepalive)
        .unwrap_err()
        .contains("keepalive"));
    // A smuggling classic is refused by both, not merely alike.
    let smuggle =
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde";
    assert_eq!(differential::request_end(smuggle), Ok(End::HeadRefused));
}

// ---- the grammar ----

fn method() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "GET", "POST", "HEAD", "PUT", "OPTIONS", "PATCH", "get", "M-SEARCH", "CONNECT",
    ])
    .prop_map(str::to_string)
}

fn target() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/",
        "/a/b?c=d",
        "*",
        "/x#frag",
        "/%41",
        "/a b",
        "/é",
        "?q",
        "/a`b",
        "/?a`\"<",
        "#f",
        "http://h/x",
        "http://u@h/",
        "h:443",
        "http:/\\h/",
    ])
    .prop_map(str::to_string)
}

fn version() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/1.x",
    ])
}

/// A header line, with the framing and connection fields that matter most
/// in odd spellings.
fn header_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Transfer-Encoding",
        "transfer-encoding",
        "Connection",
        "Host",
        "Upgrade",
        "X-A",
        "Content-Length ",
        "Transfer-Encoding\t",
    ]);
    let value = prop::sample::select(vec![
        "0",
        "3",
        "5",
        "10",
        "3, 3",
        "3,5",
        "+3",
        "-1",
        " 3 ",
        "3 3",
        "0x3",
        "",
        "18446744073709551616",
        "chunked",
        "Chunked",
        "gzip, chunked",
        "chunked, gzip",
        "gzip",
        "chunked , ",
        "identity",
        "close",
        "keep-alive",
        "Keep-Alive",
        "upgrade, close",
        "keep-alive, close",
        "websocket",
        "a@b",
        "example.com",
    ]);
    (
        name,
        value,
        prop::sample::select(vec![": ", ":", ":  ", ":\t", ": \t"]),
    )
        .prop_map(|(n, v, sep)| format!("{n}{sep}{v}\r\n"))
}

/// A chunked body: chunks with extensions, the last chunk, trailers.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        1usize..12,
        prop::sample::select(vec!["", ";a=b", " ;x", ";q=\"v\"", "  "]),
        prop::sample::select(vec!["\r\n", "\n", "\r\n", "\r\r\n"]),
    );
    (
        prop::collection::vec(chunk, 0..4),
        prop::sample::select(vec!["0", "000", "0;e=1"]),
        prop::sample::select(vec!["", "T: v\r\n", "T: v\r\nU: w\r\n", "bad\n", "X\r"]),
        prop::sample::select(vec!["\r\n", "", "\n", "\r\nGET / HTTP/1.1\r\n\r\n"]),
    )
        .prop_map(|(chunks, last, trailers, end)| {
            let mut out = Vec::new();
            for (size, ext, eol) in chunks {
                out.extend_from_slice(format!("{size:x}{ext}\r\n").as_bytes());
                out.extend(std::iter::repeat_n(b'd', size));
                out.extend_from_slice(eol.as_bytes());
            }
            out.extend_from_slice(format!("{last}\r\n{trailers}{end}").as_bytes());
            out
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"abc".to_vec()),
        Just(b"abcdefghij".to_vec()),
        chunked_body(),
    ]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n"])
}

/// Truncation at a point and one bit flipped, each sometimes.
fn mangle(
    mut bytes: Vec<u8>,
    cut: Option<prop::sample::Index>,
    flip: Option<(prop::sample::Index, u8)>,
) -> Vec<u8> {
    if let Some((at, bit)) = flip {
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << (bit % 8);
        }
    }
    if let Some(at) = cut {
        bytes.truncate(at.index(bytes.len() + 1));
    }
    bytes
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        line_end(),
        prop::collection::vec(header_line(), 0..5),
        body(),
    )
        .prop_map(|(m, t, v, eol, lines, body)| {
            let mut out = format!("{m} {t} {v}{eol}Host: h{eol}").into_bytes();
            for l in lines {
                out.extend_from_slice(l.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![
        "200 OK",
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "101 Switching",
        "103 Early Hints",
        "404 Not Found",
        "099 Low",
        "200",
        "500 \u{e9}",
    ]);
    let fold = prop::sample::select(vec!["", "X-F: a\r\n b\r\n", "X-S : v\r\n"]);
    (
        version(),
        status,
        prop::collection::vec(header_line(), 0..5),
        fold,
        body(),
    )
        .prop_map(|(v, s, lines, fold, body)| {
            let mut out = format!("{v} {s}\r\n{fold}").into_bytes();
            if s.starts_with("100") || s.starts_with("103") {
                out.extend_from_slice(b"\r\nHTTP/1.1 200 OK\r\n");
            }
            for l in lines {
                out.extend_from_slice(l.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
}

fn mangled<S: Strategy<Value = Vec<u8>>>(s: S) -> impl Strategy<Value = Vec<u8>> {
    (
        s,
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::option::weighted(0.2, (any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(b, cut, flip)| mangle(b, cut, flip))
}

/// A message past Pingora's first read (4 KiB head buffer, 64 KiB body
/// reads): a long header value, then a body by Content-Length or in large
/// chunks, sometimes cut short.
fn large_message() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        any::<bool>(),
        0usize..9000,
        prop::collection::vec(1usize..150_000, 1..3),
        any::<bool>(),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
    )
        .prop_map(|(is_request, pad, sizes, chunked, cut)| {
            let start = if is_request {
                "POST / HTTP/1.1\r\nHost: h\r\n"
            } else {
                "HTTP/1.1 200 OK\r\n"
            };
            let mut out = format!("{start}X-Pad: {}\r\n", "p".repeat(pad)).into_bytes();
            let total: usize = sizes.iter().sum();
            if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for size in sizes {
                    out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    out.extend(std::iter::repeat_n(b'c', size));
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(format!("Content-Length: {total}\r\n\r\n").as_bytes());
                out.extend(std::iter::repeat_n(b'l', total));
            }
            if let Some(at) = cut {
                out.truncate(at.index(out.len() + 1));
            }
            (out, is_request)
        })
}

fn cases() -> u32 {
    std::env::var("WIRE_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    // 2000 cases each run in about a second; WIRE_DIFF_CASES asks for more.
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn generated_requests_agree_with_pingora(bytes in mangled(request())) {
        if let Err(e) = differential::check_request(&bytes) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn generated_responses_agree_with_pingora(bytes in mangled(response()), head in any::<bool>()) {
        if let Err(e) = differential::check_response(&bytes, head) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn arbitrary_bytes_agree_with_pingora(
        kind in 0u8..3,
        start in prop::sample::select(vec!["", "GET / HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n"]),
        tail in prop::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut data = vec![kind];
        data.extend_from_slice(start.as_bytes());
        data.extend_from_slice(&tail);
        if let Err(e) = differential::check_tagged(&data) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn large_messages_agree_with_pingora((bytes, is_request) in large_message()) {
        let result = if is_request {
            differential::check_request(&bytes)
        } else {
            differential::check_response(&bytes, false)
        };
        if let Err(e) = result {
            return Err(TestCaseError::fail(e.chars().take(2000).collect::<String>()));
        }
    }

    #[test]
    fn chunked_decoder_agrees_with_itself_across_splits(body in mangled(chunked_body()), piece in 1usize..8) {
        let whole = differential::decode_chunked(&body, body.len().max(1)).map_err(TestCaseError::fail)?;
        let split = differential::decode_chunked(&body, piece).map_err(TestCaseError::fail)?;
        prop_assert_eq!(whole, split);
    }
}
