//! The header the client gets, made from the upstream's: as Pingora's
//! header, or, when nothing but the route's plan changes it, as the
//! server's lines edited on their way ([`forwarded`]).
//!
//! nginx counterpart: `ngx_http_upstream_process_headers` then
//! `ngx_http_upstream_send_response`: hidden headers dropped, `Location` /
//! `Refresh` rewritten (`proxy_redirect`), and the body re-framed for the
//! client: the upstream's `Content-Length` when it has one, else chunked to
//! an HTTP/1.1 client, or close-delimited to an HTTP/1.0 one.

use crate::client::response_head::{Framing, LineHead, Piece};
use crate::runtime::RouteRt;
use crate::upstream::head::{self, Head, Wire};
use ferry_filters::headers::{field_value, LineEdit, ResponsePlan};
use http::header::{self, HeaderValue};
use http::Version;
use pingora_error::Result;
use pingora_http::ResponseHeader;

/// What `X-Accel-Buffering` asks of this response, if anything.
pub fn accel_buffering(upstream: &Head) -> Option<bool> {
    // A name made once: a `&str` is parsed into one on every lookup.
    const X_ACCEL_BUFFERING: header::HeaderName =
        header::HeaderName::from_static("x-accel-buffering");
    let v = match upstream.wire() {
        // Found as the head was parsed.
        Some(w) => w.head.accel_buffering(&w.raw)?,
        None => upstream.get(&X_ACCEL_BUFFERING)?,
    };
    if v.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

/// Make the client's header of the upstream's, in place. `client_version`
/// is the client's HTTP version; `host` its Host header (for absolute
/// redirects).
pub fn build(
    route: &RouteRt,
    resp: &mut ResponseHeader,
    client_version: Version,
    host: &str,
    scheme: &str,
) -> Result<()> {
    // Names made once: a `&str` is parsed into one on every lookup.
    const REFRESH: header::HeaderName = header::HeaderName::from_static("refresh");
    let rewrite = |name: header::HeaderName, f: &dyn Fn(&str) -> Option<String>| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(f)
    };
    let (location, refresh) = if route.redirect.is_off() {
        (None, None)
    } else {
        (
            rewrite(header::LOCATION, &|v| {
                route.redirect.location(v, scheme, host)
            }),
            rewrite(REFRESH, &|v| route.redirect.refresh(v)),
        )
    };
    let has_length = resp.headers.contains_key(header::CONTENT_LENGTH);
    let status = resp.status.as_u16();
    let client_h1 = client_version != Version::HTTP_2;
    route.response_plan.build(resp, client_h1)?;
    if let Some(new) = location {
        resp.insert_header(header::LOCATION, new)?;
    }
    if let Some(new) = refresh {
        resp.insert_header("Refresh", new)?;
    }
    // The upstream's Content-Length was kept by the plan.
    if !has_length && !no_body(status) && client_version == Version::HTTP_11 {
        resp.insert_header(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )?;
    }
    Ok(())
}

/// The head `wire` as an HTTP/1 client gets it when nothing but the
/// route's plan changes it: the status, the reason as Pingora's header
/// gives it, and the lines in the order they came with the plan's edits
/// ([`ResponsePlan::line_edit`]; runs of lines kept as they came are
/// copied whole), then `Server` and `Transfer-Encoding` where [`build`]
/// adds them; `added` goes after these. `None` when the header must be
/// made: a `Location` or `Refresh` to rewrite (`rewrites`), an `added` name
/// the lines have or the session sets, an added value a header cannot
/// hold.
pub(crate) fn forwarded<'w>(
    plan: &ResponsePlan,
    rewrites: bool,
    wire: &'w Wire,
    added: &[(&str, String)],
    http11: bool,
) -> Option<LineHead<'w>> {
    let (raw, h) = (&wire.raw, &wire.head);
    if !wire.keep_case {
        return None;
    }
    let mut out = Pieces::new(raw, h.lines.len() + 2);
    let mut server = !plan.sets_server();
    let mut has_length = false;
    for l in &h.lines {
        let name = &raw[l.name.clone()];
        let is = |n: &[u8]| ferry_wire::same_name(name, n);
        if rewrites && (is(b"location") || is(b"refresh")) {
            return None;
        }
        let value = &raw[l.value.clone()];
        match plan.line_edit(name) {
            LineEdit::Keep => {
                has_length |= name.len() == 14 && is(b"content-length");
                out.line(l);
            }
            LineEdit::Date => out.push(Piece::Date(name, value)),
            LineEdit::Connection => out.push(Piece::Connection(name, value)),
            LineEdit::Drop => {}
            LineEdit::Server if server => {}
            LineEdit::Server => {
                server = true;
                out.push(Piece::Line(b"Server", b"ferry"));
            }
        }
    }
    if !server {
        out.push(Piece::Line(b"Server", b"ferry"));
    }
    // `read_header` refused a `Content-Length` beside `Transfer-Encoding`.
    let chunked = h.content_length().is_none() && !no_body(h.status) && http11;
    if chunked {
        out.push(Piece::Line(b"Transfer-Encoding", b"chunked"));
    }
    if !addable(wire, added) {
        return None;
    }
    let length = h.content_length().and_then(|n| usize::try_from(n).ok());
    let framing = Framing {
        chunked,
        has_length,
        length: length.filter(|_| has_length),
    };
    Some(LineHead {
        status: h.status,
        reason: reason(wire),
        pieces: out.done(),
        framing,
    })
}

/// Whether the `added` lines may follow the head's: no name the head has,
/// or the plan or the session sets, and no value a header cannot hold.
fn addable(wire: &Wire, added: &[(&str, String)]) -> bool {
    let (raw, h) = (&wire.raw, &wire.head);
    let set = [
        "date",
        "connection",
        "content-length",
        "transfer-encoding",
        "server",
    ];
    let clashes = |name: &str| {
        set.iter().any(|s| s.eq_ignore_ascii_case(name))
            || h.lines
                .iter()
                .any(|l| ferry_wire::same_name(&raw[l.name.clone()], name.as_bytes()))
    };
    !added
        .iter()
        .any(|(name, value)| clashes(name) || !field_value(value.as_bytes()))
}

/// The head's reason phrase as Pingora's header gives it: its own (none,
/// when not UTF-8), else the status's canonical one.
fn reason(wire: &Wire) -> Option<&[u8]> {
    let h = &wire.head;
    match h.reason.is_empty() {
        false => Some(head::reason(&wire.raw[h.reason.clone()]).as_bytes()),
        true => http::StatusCode::from_u16(h.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(str::as_bytes),
    }
}

/// Pieces of a head being made of the lines of `raw`: a line kept as it
/// came (`Name: value` and CRLF) joins the run before it when it follows
/// it in `raw`, so a run is copied at once.
struct Pieces<'w> {
    raw: &'w [u8],
    pieces: Vec<Piece<'w>>,
    run: Option<std::ops::Range<usize>>,
}

impl<'w> Pieces<'w> {
    fn new(raw: &'w [u8], lines: usize) -> Pieces<'w> {
        Pieces {
            raw,
            pieces: Vec::with_capacity(lines),
            run: None,
        }
    }

    /// A line kept: in the run when it is written as it came.
    fn line(&mut self, l: &ferry_wire::Line) {
        let (name, value) = (l.name.clone(), l.value.clone());
        let raw = self.raw;
        let as_is = raw.get(name.end..value.start) == Some(&b": "[..])
            && raw.get(value.end..value.end + 2) == Some(&b"\r\n"[..]);
        if !as_is {
            return self.push(Piece::Line(&raw[name], &raw[value]));
        }
        let line = name.start..value.end + 2;
        match &mut self.run {
            Some(run) if run.end == line.start => run.end = line.end,
            _ => {
                self.flush();
                self.run = Some(line);
            }
        }
    }

    fn push(&mut self, piece: Piece<'w>) {
        self.flush();
        self.pieces.push(piece);
    }

    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            self.pieces.push(Piece::Lines(&self.raw[run]));
        }
    }

    fn done(mut self) -> Vec<Piece<'w>> {
        self.flush();
        self.pieces
    }
}

fn no_body(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

/// The route's `add_headers` (nginx `add_header ... always`), rendered for
/// this request, its tries, its cache status and the `upstream` response
/// header it comes from (`$upstream_http_NAME`; `None` from the cache).
pub(crate) fn add_headers(
    route: &RouteRt,
    s: &crate::hooks::session::Session<'_>,
    upstream: Option<&http::HeaderMap>,
    resp: &mut ResponseHeader,
) -> Result<()> {
    for (name, value) in added(route, s, upstream) {
        resp.append_header(name.to_string(), value)?;
    }
    Ok(())
}

/// The lines `add_headers` adds for this request: each name with its
/// value, those whose value came out empty left out.
pub(crate) fn added<'r>(
    route: &'r RouteRt,
    s: &crate::hooks::session::Session<'_>,
    upstream: Option<&http::HeaderMap>,
) -> Vec<(&'r str, String)> {
    let adds = &route.conf.proxy.add_headers;
    if adds.is_empty() {
        return Vec::new();
    }
    // Made only when a line uses them (each is a new string).
    use ferry_conf::Variable as V;
    let remote = s.remote_text(adds.iter().map(|(_, t)| t));
    let tried = adds
        .iter()
        .any(|(_, t)| t.uses(|v| matches!(v, V::UpstreamAddr | V::UpstreamStatus)));
    let (addr, status) = match tried {
        true => (s.request.upstream_addr(), s.request.upstream_status()),
        false => (String::new(), String::new()),
    };
    let group = route.conf.upstream.as_deref().unwrap_or("");
    let mut vars = s.vars(&remote, group);
    vars.upstream_addr = &addr;
    vars.upstream_status = &status;
    vars.upstream_headers = upstream;
    let rendered = adds.iter().map(|(name, value)| (name, vars.render(value)));
    rendered.filter(|(_, v)| !v.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::response_head;
    use std::collections::HashMap;

    fn route(yaml: &str) -> RouteRt {
        let conf = serde_yaml::from_str(yaml).expect("a route");
        crate::runtime::route_rt(&conf, &HashMap::new(), &HashMap::new())
    }

    fn read(raw: &'static [u8]) -> Head {
        let raw = bytes::Bytes::from_static(raw);
        let Ok(ferry_wire::Parsed::Complete(h)) = ferry_wire::parse_response(&raw, 16) else {
            panic!("a complete head");
        };
        Head::read(raw, h, true).expect("a head")
    }

    /// A head's status line, then its lines sorted: a header made loses
    /// the server's order where a line is removed (`HeaderMap` moves its
    /// last name into the hole), the forwarded lines keep it. The cached
    /// `Date` may turn between two writes.
    fn lines_of(bytes: Vec<u8>) -> (String, Vec<String>) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines = text.split("\r\n").map(|l| match l.starts_with("Date: ") {
            true => "Date: -".to_string(),
            false => l.to_string(),
        });
        let status = lines.next().expect("a status line");
        let mut rest: Vec<String> = lines.collect();
        assert_eq!(rest.split_off(rest.len() - 2), ["", ""], "the head's end");
        rest.sort();
        (status, rest)
    }

    #[test]
    fn forwarded_lines_are_the_bytes_of_the_header_made() {
        let heads: [&'static [u8]; 8] = [
            b"HTTP/1.1 200 OK\r\nServer: up\r\nDate: x\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n",
            b"HTTP/1.1 200 Fine\r\nx-pad: 1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\nX-Secret: s\r\nserver: a\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nserver: a\r\nSERVER: b\r\nx-mixed-CASE: v\r\n\r\n",
            b"HTTP/1.1 304 \r\nETag: \"e\"\r\nDate: a\r\ndate: b\r\n\r\n",
            b"HTTP/1.0 404 Gone\r\nX-B: caf\xc3\xa9\r\n\r\n",
            b"HTTP/1.1 599 \r\nX-C: 1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 \xff\xfe\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 302 Found\r\nLocation: http://app/x\r\nContent-Length: 0\r\n\r\n",
        ];
        let routes = [
            "upstream: app",
            "{upstream: app, proxy: {pass_headers: [server, x-pad], hide_headers: [x-secret, x-a]}}",
            "{upstream: app, proxy: {redirect: off}}",
        ];
        let added: [&[(&str, String)]; 2] = [&[], &[("X-Added", "v w".to_string())]];
        let mut compared = 0;
        for (raw, yaml, added, version, connection) in itertools_product(&heads, &routes, &added) {
            let route = route(yaml);
            let head = read(raw);
            let wire = head.wire().expect("as read");
            let http11 = version == Version::HTTP_11;
            let rewrites = !route.redirect.is_off();
            let plan = &route.response_plan;
            let Some(fw) = forwarded(plan, rewrites, wire, added, http11) else {
                // Only a Location to rewrite makes the header here.
                assert!(rewrites && wire.head.get(&wire.raw, "location").is_some());
                continue;
            };
            let mut ours = Vec::new();
            let framing = response_head::write_lines(&fw, added, Some(connection), &mut ours);
            drop(fw);
            let mut made = head.into_header().expect("made");
            build(&route, &mut made, version, "example.com", "http").expect("built");
            for (name, value) in added {
                made.append_header(name.to_string(), value.as_str())
                    .expect("added");
            }
            let mut theirs = Vec::new();
            let made_framing =
                response_head::write(&made, &[], Some(connection), &mut theirs).expect("written");
            assert_eq!(lines_of(ours), lines_of(theirs), "{yaml} {version:?}");
            assert_eq!(format!("{framing:?}"), format!("{made_framing:?}"));
            compared += 1;
        }
        assert_eq!(compared, 2 * 2 * 2 * (8 * 3 - 2));
    }

    /// Every head with every route, added lines, client version and
    /// `Connection` value.
    fn itertools_product<'a>(
        heads: &'a [&'static [u8]],
        routes: &'a [&'static str],
        added: &'a [&'a [(&'a str, String)]],
    ) -> impl Iterator<
        Item = (
            &'static [u8],
            &'static str,
            &'a [(&'a str, String)],
            Version,
            &'static str,
        ),
    > + 'a {
        heads.iter().flat_map(move |h| {
            routes.iter().flat_map(move |r| {
                added.iter().flat_map(move |a| {
                    [Version::HTTP_11, Version::HTTP_10]
                        .into_iter()
                        .flat_map(move |v| ["keep-alive", "close"].map(move |c| (*h, *r, *a, v, c)))
                })
            })
        })
    }

    #[test]
    fn a_head_that_must_be_made_is_not_forwarded() {
        let route = route("upstream: app");
        let head = read(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
        let wire = head.wire().expect("as read");
        let plan = &route.response_plan;
        let ok = |added: &[(&str, String)]| forwarded(plan, true, wire, added, true).is_some();
        assert!(ok(&[("X-B", "1".into())]));
        // A name the head has, or one the session sets.
        for name in [
            "x-a",
            "Server",
            "date",
            "Content-Length",
            "Transfer-Encoding",
        ] {
            assert!(!ok(&[(name, "1".into())]), "{name}");
        }
        // A value a header cannot hold.
        assert!(!ok(&[("X-B", "a\r\nX-Injected: 1".into())]));
        // The lines go in the order the server sent them, as nginx's do.
        let head = read(b"HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nX-A: 1\r\nSet-Cookie: b\r\n\r\n");
        let fw = forwarded(plan, true, head.wire().expect("as read"), &[], true).expect("lines");
        assert_eq!(
            fw.pieces[..],
            [
                Piece::Lines(b"Set-Cookie: a\r\nX-A: 1\r\nSet-Cookie: b\r\n"),
                Piece::Line(b"Server", b"ferry"),
                Piece::Line(b"Transfer-Encoding", b"chunked"),
            ]
        );
        // A line not written as `Name: value` goes as its name and value;
        // the lines around it as they came.
        let head = read(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B:2\r\nX-C: 3\nX-D: 4\r\n\r\n");
        let fw = forwarded(plan, true, head.wire().expect("as read"), &[], true).expect("lines");
        assert_eq!(
            fw.pieces[..4],
            [
                Piece::Lines(b"X-A: 1\r\n"),
                Piece::Line(b"X-B", b"2"),
                Piece::Line(b"X-C", b"3"),
                Piece::Lines(b"X-D: 4\r\n"),
            ]
        );
    }
}
