//! Differential harness: the same bytes to ferry-wire and to Pingora 0.9's
//! own HTTP/1 sessions (server side for requests, client side for
//! responses, over an in-memory stream), and any disagreement in verdict,
//! head or body as an `Err`. nginx has no counterpart; this is how Ferry
//! keeps its own wire path equal to the Pingora path it replaces.
//!
//! What is compared:
//! - how the message ends: head refused, head incomplete (EOF inside the
//!   head), body complete, body truncated (EOF before the framing's end:
//!   Pingora's `ConnectionClosed`), body invalid (a chunked-coding error);
//! - for accepted heads: method, target, version, status, every header
//!   (name ASCII-lowercased, value bytes) in Pingora's `HeaderMap` order
//!   (grouped by name in order of first appearance), with `Content-Length`
//!   dropped when `Transfer-Encoding` is present as Pingora drops it, and
//!   the keepalive verdict;
//! - the body bytes: equal when the body is complete or truncated; when
//!   both call the body invalid, one must be a prefix of the other (where
//!   a run of data is cut before the error depends on read sizes).
//!
//! Documented exceptions (each narrow, each named in the code):
//! - `escaped target`: Pingora percent-escapes a request target httparse
//!   refuses and parses again; ferry-wire refuses it. Excused only when
//!   ferry-wire refused the request line and Pingora's target differs from
//!   the raw one.
//! - folded response values: compared in Pingora's unfolded form
//!   (`ferry_wire::unfold`, applied when `has_folds` says a line is
//!   folded), which a caller forwarding them uses too.
//! - `authority target`: ferry-wire accepts, and Pingora refuses, a request
//!   whose target is not origin-form or `*` (absolute-form, authority-form)
//!   or whose method is CONNECT: Pingora's authority checks
//!   (pingora-core and pingora-http `authority.rs`) are the caller's.
//! - the target's fragment: Pingora drops `#...` (and an empty target
//!   becomes `/`); the comparison applies the same to ferry-wire's raw
//!   target.
//!
//! ferry-wire is driven the way a session drives it: parse the head, then
//! by `Framing`: `Length(n)` takes the next n bytes (fewer is truncated),
//! `Chunked` runs a `ChunkedDecoder` (fed whole, byte by byte and in
//! 3-byte pieces, which must agree), `UntilClose` takes the rest, `Empty`
//! nothing. Responses are read as answers to `GET` (or `HEAD`) with
//! `Upgrade: websocket`, so a 101 switches protocols; 1xx heads are read
//! and compared until the final one.

#![allow(dead_code)]

use std::io::Cursor;

use ferry_wire::{
    parse_request, parse_response, ChunkedDecoder, Framing, Line, Parsed, RequestHead,
    ResponseHead, WireError,
};
use pingora_core::protocols::http::v1::{client, server};
use tokio::io::AsyncWriteExt;

/// Pingora's header-count limit (pingora-core `v1/common.rs` MAX_HEADERS).
pub const MAX_HEADERS: usize = 256;
/// Informational heads read before giving up on a response.
const MAX_INTERIM: usize = 16;
/// Past this, a chunked body's split property is not checked: an
/// incomplete chunk-size line longer than 8 KiB is refused, so the verdict
/// depends on how the bytes arrive (in Pingora as in ferry-wire).
const SPLIT_CHECK_LIMIT: usize = 8 * 1024;

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    HeadRefused,
    HeadIncomplete,
    BodyComplete,
    BodyTruncated,
    BodyInvalid,
}

/// An accepted head, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub status: u16,
    pub minor: u8,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What one side made of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub heads: Vec<Head>,
    pub body: Vec<u8>,
    pub end: End,
    /// Keepalive verdict, when both sides can state one.
    pub keepalive: Option<bool>,
    /// Pingora's error, for the report.
    pub why: String,
}

impl Outcome {
    fn ended(end: End, why: String) -> Self {
        Outcome {
            heads: Vec::new(),
            body: Vec::new(),
            end,
            keepalive: None,
            why,
        }
    }
}

/// ferry-wire and Pingora agree on this request.
pub fn check_request(bytes: &[u8]) -> Result<(), String> {
    request_end(bytes).map(|_| ())
}

/// ferry-wire and Pingora agree on this response (to a HEAD request when
/// `request_was_head`).
pub fn check_response(bytes: &[u8], request_was_head: bool) -> Result<(), String> {
    response_end(bytes, request_was_head).map(|_| ())
}

/// The fuzz target's input: the first byte chooses a request (0 mod 3), a
/// response (1) or a response to HEAD (2); the rest is the message.
pub fn check_tagged(data: &[u8]) -> Result<(), String> {
    match data.split_first() {
        None => Ok(()),
        Some((kind, msg)) if kind % 3 == 0 => check_request(msg),
        Some((kind, msg)) => check_response(msg, kind % 3 == 2),
    }
}

/// `check_request`, and how the request ended when both agree.
pub fn request_end(bytes: &[u8]) -> Result<End, String> {
    let ours = ferry_request(bytes)?;
    let theirs = runtime().block_on(pingora_request(bytes));
    if escaped_target(bytes, &ours, &theirs) || authority_target(&ours, &theirs) {
        return Ok(theirs.end);
    }
    compare(&ours, &theirs)
        .map(|()| ours.end)
        .map_err(|e| format!("request {:?}: {e}", bytes.escape_ascii().to_string()))
}

/// `check_response`, and how the response ended when both agree.
pub fn response_end(bytes: &[u8], request_was_head: bool) -> Result<End, String> {
    let ours = ferry_response(bytes, request_was_head)?;
    let theirs = runtime().block_on(pingora_response(bytes, request_was_head));
    compare(&ours, &theirs).map(|()| ours.end).map_err(|e| {
        format!(
            "response (HEAD: {request_was_head}) {:?}: {e}",
            bytes.escape_ascii().to_string()
        )
    })
}

/// Any disagreement between two outcomes, described.
pub fn compare(ours: &Outcome, theirs: &Outcome) -> Result<(), String> {
    if ours.end != theirs.end {
        return Err(format!(
            "verdict: ferry-wire {:?}, Pingora {:?} ({})",
            ours.end, theirs.end, theirs.why
        ));
    }
    if ours.heads != theirs.heads {
        return Err(format!(
            "heads: ferry-wire {:?}, Pingora {:?}",
            ours.heads, theirs.heads
        ));
    }
    let body_agrees = if ours.end == End::BodyInvalid {
        ours.body.starts_with(&theirs.body) || theirs.body.starts_with(&ours.body)
    } else {
        ours.body == theirs.body
    };
    if !body_agrees {
        return Err(format!(
            "body ({:?}): ferry-wire {:?}, Pingora {:?}",
            ours.end,
            ours.body.escape_ascii().to_string(),
            theirs.body.escape_ascii().to_string()
        ));
    }
    if let (Some(a), Some(b)) = (ours.keepalive, theirs.keepalive) {
        if a != b {
            return Err(format!("keepalive: ferry-wire {a}, Pingora {b}"));
        }
    }
    Ok(())
}

/// Exception `escaped target`: ferry-wire refused the request line, and
/// Pingora did not, because its retry percent-escapes control bytes, space,
/// `<`, `>` and `"` in the target (pingora-core `escape_illegal_request_line`).
fn escaped_target(bytes: &[u8], ours: &Outcome, theirs: &Outcome) -> bool {
    // Pingora retries only after httparse's token or version error.
    let request_line_error = [WireError::Header("token"), WireError::Header("version")]
        .iter()
        .any(|e| ours.why == e.to_string());
    if !request_line_error || theirs.end == End::HeadRefused {
        return false;
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(b"");
    let Some(first_space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let end = line
        .windows(6)
        .rposition(|w| w == b" HTTP/")
        .unwrap_or(line.len());
    line.get(first_space + 1..end).is_some_and(|target| {
        target
            .iter()
            .any(|&b| b.is_ascii_control() || matches!(b, b' ' | b'<' | b'>' | b'"'))
    })
}

/// Exception `authority target`: only ferry-wire accepting and Pingora
/// refusing, and only for a target that is not origin-form or `*`, or a
/// CONNECT.
fn authority_target(ours: &Outcome, theirs: &Outcome) -> bool {
    if theirs.end != End::HeadRefused || ours.end == End::HeadRefused {
        return false;
    }
    ours.heads.first().is_some_and(|h| {
        h.method == b"CONNECT"
            || !(h.target.starts_with(b"/") || h.target.starts_with(b"?") || h.target == b"*")
    })
}

thread_local! {
    static RUNTIME: std::rc::Rc<tokio::runtime::Runtime> = std::rc::Rc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime"),
    );
}

fn runtime() -> std::rc::Rc<tokio::runtime::Runtime> {
    RUNTIME.with(|r| r.clone())
}

// ---- ferry-wire's side ----

fn ferry_request(bytes: &[u8]) -> Result<Outcome, String> {
    let head = match parse_request(bytes, MAX_HEADERS) {
        Err(e) => return Ok(Outcome::ended(End::HeadRefused, e.to_string())),
        Ok(Parsed::Partial) => return Ok(Outcome::ended(End::HeadIncomplete, String::new())),
        Ok(Parsed::Complete(h)) => h,
    };
    let framing = head
        .framing(bytes)
        .map_err(|e| format!("parse_request accepted a head whose framing is refused: {e}"))?;
    let (body, end, _) = read_body(&bytes[head.len..], framing)?;
    Ok(Outcome {
        heads: vec![request_view(&head, bytes)],
        body,
        end,
        keepalive: Some(head.keepalive(bytes)),
        why: String::new(),
    })
}

fn request_view(head: &RequestHead, buf: &[u8]) -> Head {
    let target = &buf[head.target.clone()];
    let target = match target.iter().position(|&b| b == b'#') {
        Some(0) => &b"/"[..],
        Some(i) => &target[..i],
        None => target,
    };
    Head {
        method: buf[head.method.clone()].to_vec(),
        target: target.to_vec(),
        status: 0,
        minor: head.minor,
        headers: grouped(&head.lines, buf, true),
    }
}

fn ferry_response(bytes: &[u8], request_was_head: bool) -> Result<Outcome, String> {
    let mut heads = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        let head = match parse_response(rest, MAX_HEADERS) {
            Err(e) => return Ok(Outcome::ended(End::HeadRefused, e.to_string())),
            Ok(Parsed::Partial) => return Ok(Outcome::ended(End::HeadIncomplete, String::new())),
            Ok(Parsed::Complete(h)) => h,
        };
        heads.push(response_view(&head, rest));
        at += head.len;
        if !head.is_informational() {
            return ferry_response_body(&bytes[at - head.len..], head, heads, request_was_head);
        }
        if heads.len() > MAX_INTERIM {
            return Ok(Outcome::ended(End::HeadIncomplete, "too many 1xx".into()));
        }
    }
}

fn ferry_response_body(
    buf: &[u8],
    head: ResponseHead,
    heads: Vec<Head>,
    request_was_head: bool,
) -> Result<Outcome, String> {
    let framing = head
        .framing(buf, request_was_head)
        .map_err(|e| format!("parse_response accepted a head whose framing is refused: {e}"))?;
    let (body, end, left) = read_body(&buf[head.len..], framing)?;
    // Pingora refuses reuse when bytes follow the body: compare only without.
    let keepalive = (end == End::BodyComplete && left == 0)
        .then(|| head.keepalive_after(buf, request_was_head));
    Ok(Outcome {
        heads,
        body,
        end,
        keepalive,
        why: String::new(),
    })
}

fn response_view(head: &ResponseHead, buf: &[u8]) -> Head {
    Head {
        method: Vec::new(),
        target: Vec::new(),
        status: head.status,
        minor: head.minor,
        // Unfolded only when the head says a line is folded, as Ferry's
        // upstream session does: a fold it missed would differ here.
        headers: grouped(&head.lines, buf, head.has_folds()),
    }
}

/// Header lines as Pingora's `HeaderMap` iterates them: grouped by
/// lowercased name in order of first appearance; when `Transfer-Encoding`
/// is present `Content-Length` is removed as Pingora removes it (a
/// `HeaderMap` removal moves the last name into the removed one's place).
fn grouped(lines: &[Line], buf: &[u8], unfold: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let flat: Vec<(Vec<u8>, Vec<u8>)> = lines
        .iter()
        .map(|l| {
            let raw = &buf[l.value.clone()];
            let value = match unfold {
                true => ferry_wire::unfold(raw).into_owned(),
                false => raw.to_vec(),
            };
            (buf[l.name.clone()].to_ascii_lowercase(), value)
        })
        .collect();
    let mut names: Vec<&Vec<u8>> = Vec::new();
    for (n, _) in &flat {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let has_te = names.iter().any(|n| n.as_slice() == b"transfer-encoding");
    if let Some(cl) = names.iter().position(|n| n.as_slice() == b"content-length") {
        if has_te {
            names.swap_remove(cl);
        }
    }
    names
        .iter()
        .flat_map(|name| flat.iter().filter(move |(n, _)| n == *name).cloned())
        .collect()
}

/// The body after the head by `framing`: the bytes, how it ended, and how
/// many bytes were left after it.
fn read_body(rest: &[u8], framing: Framing) -> Result<(Vec<u8>, End, usize), String> {
    match framing {
        Framing::Empty => Ok((Vec::new(), End::BodyComplete, rest.len())),
        Framing::UntilClose => Ok((rest.to_vec(), End::BodyComplete, 0)),
        Framing::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= rest.len() => Ok((rest[..n].to_vec(), End::BodyComplete, rest.len() - n)),
            _ => Ok((rest.to_vec(), End::BodyTruncated, 0)),
        },
        Framing::Chunked => chunked_all_splits(rest),
    }
}

/// The chunked body decoded whole, byte by byte and in 3-byte pieces: all
/// three must agree (the decoder's own property).
fn chunked_all_splits(rest: &[u8]) -> Result<(Vec<u8>, End, usize), String> {
    let whole = decode_chunked(rest, rest.len().max(1))?;
    if rest.len() <= SPLIT_CHECK_LIMIT {
        for piece in [1, 3] {
            let split = decode_chunked(rest, piece)?;
            if split != whole {
                return Err(format!(
                    "ChunkedDecoder fed {piece} byte(s) at a time gives {split:?}, whole gives {whole:?}"
                ));
            }
        }
    }
    Ok(whole)
}

/// Drives a `ChunkedDecoder` as a session would, the input arriving in
/// `piece`-byte reads.
pub fn decode_chunked(input: &[u8], piece: usize) -> Result<(Vec<u8>, End, usize), String> {
    let mut decoder = ChunkedDecoder::new();
    let (mut pending, mut fed, mut body) = (Vec::new(), 0, Vec::new());
    // Each round either consumes a byte, emits data or takes a new piece.
    for _ in 0..(4 * input.len() + 16) {
        let d = match decoder.decode(&pending) {
            Ok(d) => d,
            Err(_) => return Ok((body, End::BodyInvalid, 0)),
        };
        if d.consumed > pending.len() || d.data.end > d.consumed || d.data.start > d.data.end {
            return Err(format!(
                "ChunkedDecoder returned {d:?} for {} bytes",
                pending.len()
            ));
        }
        body.extend_from_slice(&pending[d.data.clone()]);
        pending.drain(..d.consumed);
        if d.done {
            return Ok((body, End::BodyComplete, pending.len() + input.len() - fed));
        }
        if d.consumed == 0 {
            if fed == input.len() {
                return Ok((body, End::BodyTruncated, 0));
            }
            let next = (fed + piece).min(input.len());
            pending.extend_from_slice(&input[fed..next]);
            fed = next;
        }
    }
    Err("ChunkedDecoder made no progress".into())
}

// ---- Pingora's side ----

async fn pingora_request(bytes: &[u8]) -> Outcome {
    let stream = Cursor::new(bytes.to_vec());
    let mut session = server::HttpSession::new(Box::new(stream));
    match session.read_request().await {
        Ok(None) => return Outcome::ended(End::HeadIncomplete, "no request".into()),
        Err(e) => return Outcome::ended(head_error(e.etype().as_str()), e.to_string()),
        Ok(Some(_)) => {}
    }
    let req = session.req_header();
    let head = Head {
        method: req.method.as_str().as_bytes().to_vec(),
        target: req.raw_path().to_vec(),
        status: 0,
        minor: u8::from(req.version == http::Version::HTTP_11),
        headers: header_map(&req.headers),
    };
    let keepalive = Some(session.will_keepalive());
    let mut out = Outcome {
        heads: vec![head],
        body: Vec::new(),
        end: End::BodyComplete,
        keepalive,
        why: String::new(),
    };
    for _ in 0..(bytes.len() + 16) {
        match session.read_body_bytes().await {
            Ok(Some(b)) => out.body.extend_from_slice(&b),
            Ok(None) => return out,
            Err(e) => return body_error(out, e.etype().as_str(), e.to_string()),
        }
    }
    body_error(
        out,
        "Stuck",
        "Pingora's body reader made no progress".into(),
    )
}

async fn pingora_response(bytes: &[u8], request_was_head: bool) -> Outcome {
    let (ours, mut peer) = tokio::io::duplex(bytes.len() + 64 * 1024);
    if peer.write_all(bytes).await.is_err() || peer.shutdown().await.is_err() {
        return Outcome::ended(End::HeadIncomplete, "duplex write".into());
    }
    let mut session = client::HttpSession::new(Box::new(ours));
    if let Err(e) = session
        .write_request_header(Box::new(upgrade_request(request_was_head)))
        .await
    {
        return Outcome::ended(End::HeadIncomplete, e.to_string());
    }
    let mut out = Outcome::ended(End::BodyComplete, String::new());
    loop {
        if let Err(e) = session.read_response().await {
            return Outcome::ended(head_error(e.etype().as_str()), e.to_string());
        }
        let Some(resp) = session.resp_header() else {
            return Outcome::ended(End::HeadIncomplete, "no response head".into());
        };
        out.heads.push(Head {
            method: Vec::new(),
            target: Vec::new(),
            status: resp.status.as_u16(),
            minor: u8::from(resp.version == http::Version::HTTP_11),
            headers: header_map(&resp.headers),
        });
        let status = resp.status.as_u16();
        if !(100..200).contains(&status) || status == 101 {
            break;
        }
        if out.heads.len() > MAX_INTERIM {
            return Outcome::ended(End::HeadIncomplete, "too many 1xx".into());
        }
    }
    pingora_response_body(session, out, bytes.len()).await
}

async fn pingora_response_body(
    mut session: client::HttpSession,
    mut out: Outcome,
    len: usize,
) -> Outcome {
    for _ in 0..(len + 16) {
        match session.read_body_bytes().await {
            Ok(Some(b)) => out.body.extend_from_slice(&b),
            Ok(None) => {
                session.respect_keepalive();
                out.keepalive = Some(session.will_keepalive());
                return out;
            }
            Err(e) => return body_error(out, e.etype().as_str(), e.to_string()),
        }
    }
    body_error(
        out,
        "Stuck",
        "Pingora's body reader made no progress".into(),
    )
}

/// The request a response answers: GET (or HEAD) asking for an upgrade, so
/// that a 101 is a switch of protocols as in a proxied WebSocket.
fn upgrade_request(head: bool) -> pingora_http::RequestHeader {
    let method = if head { "HEAD" } else { "GET" };
    let mut req = pingora_http::RequestHeader::build(method, b"/", None)
        .expect("a fixed request head builds");
    for (name, value) in [
        ("Host", "t"),
        ("Upgrade", "websocket"),
        ("Connection", "upgrade"),
    ] {
        req.insert_header(name, value)
            .expect("a fixed header inserts");
    }
    req
}

fn header_map(map: &http::HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn head_error(etype: &str) -> End {
    match etype {
        "ConnectionClosed" => End::HeadIncomplete,
        _ => End::HeadRefused,
    }
}

fn body_error(mut out: Outcome, etype: &str, why: String) -> Outcome {
    out.end = match etype {
        "ConnectionClosed" => End::BodyTruncated,
        _ => End::BodyInvalid,
    };
    out.keepalive = None;
    out.why = why;
    out
}
