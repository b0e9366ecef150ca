//! Header rules between the two connections.
//!
//! Request to the upstream (nginx `ngx_http_proxy_create_request`):
//! `Host: $proxy_host` unless `set_headers` says otherwise; the client's
//! hop-by-hop headers (`Connection`, `Keep-Alive`, `TE`, `Upgrade`, `Expect`,
//! `Proxy-Connection` and the names listed in its `Connection`) dropped;
//! `X-Forwarded-For: $proxy_add_x_forwarded_for` and `X-Forwarded-Proto:
//! $scheme` added (Ferry); `set_headers` applied
//! in order, `""` removing; framing set by Ferry.
//!
//! Response to the client (nginx `ngx_http_upstream_process_headers`):
//! `Date`, `Server`, `X-Pad`, `X-Accel-*` hidden (adjusted by `hide_headers` /
//! `pass_headers`); `Connection`, `Keep-Alive`, `Transfer-Encoding` and
//! `Content-Length` consumed (Ferry frames the body itself); `Server: ferry`.
//!
//! Plans are compiled once per route at start; building is per request.

use crate::fields::Fields;
use crate::variables::RequestVars;
use bytes::Bytes;
use ferry_conf::{HttpVersion, ProxyConf, Template};
use http::header::{self, HeaderName, HeaderValue};
use http::Version;
use pingora_error::Result;
use pingora_http::{IntoCaseHeaderName, RequestHeader, ResponseHeader};

/// nginx's default `proxy_hide_header` list.
pub const HIDDEN_BY_DEFAULT: [&str; 8] = [
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

/// Request headers never forwarded as they came (RFC 9110 hop-by-hop, plus
/// what Ferry sets itself).
const REQUEST_DROPPED: [&[u8]; 8] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"upgrade",
    b"expect",
    b"proxy-connection",
    b"content-length",
    b"transfer-encoding",
];

/// Response headers consumed by Ferry (framing and connection management).
/// `Content-Length` stays: a response with one is sent with it as it is.
const RESPONSE_CONSUMED: [HeaderName; 3] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
];

/// How the request body is framed towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and the client declared none.
    None,
    /// A known length (buffered body, or the client's Content-Length).
    Length(u64),
    /// Streamed with unknown length.
    Chunked,
}

/// The request-side rules of one route.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    host: Option<Template>,
    forwarded_for: Option<Template>,
    forwarded_proto: Option<Template>,
    set: Vec<(HeaderName, Template)>,
    removed: Vec<HeaderName>,
    version: HttpVersion,
    names: AddedNames,
    /// The same names as Pingora writes a header that kept no case.
    bare_names: AddedNames,
}

impl RequestPlan {
    pub fn new(conf: &ProxyConf) -> RequestPlan {
        let mut host = None;
        let mut forwarded_for =
            Some(Template::parse("$proxy_add_x_forwarded_for").unwrap_or_default());
        let mut forwarded_proto = Some(Template::parse("$scheme").unwrap_or_default());
        let (mut set, mut removed) = (Vec::new(), Vec::new());
        for (name, value) in conf.set_headers.iter() {
            // Names were checked by the loader; skip what still fails.
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let empty = value.is_empty();
            if name == header::HOST {
                host = (!empty).then(|| value.clone());
            } else if name == HeaderName::from_static("x-forwarded-for") {
                forwarded_for = (!empty).then(|| value.clone());
            } else if name == HeaderName::from_static("x-forwarded-proto") {
                forwarded_proto = (!empty).then(|| value.clone());
            } else if empty {
                removed.push(name);
            } else {
                set.push((name, value.clone()));
            }
        }
        RequestPlan {
            names: AddedNames::new(&set, false),
            bare_names: AddedNames::new(&set, true),
            host,
            forwarded_for,
            forwarded_proto,
            set,
            removed,
            version: conf.http_version,
        }
    }

    fn is_overridden(&self, name: &[u8]) -> bool {
        let same = ferry_wire::same_name;
        let is = |n: &HeaderName| same(name, n.as_str().as_bytes());
        same(name, b"host")
            || same(name, b"x-forwarded-for")
            || same(name, b"x-forwarded-proto")
            || self.removed.iter().any(is)
            || self.set.iter().any(|(n, _)| is(n))
    }

    /// Whether a line of the client's header goes upstream as it came:
    /// not a hop-by-hop one, not one its `Connection` lists, not one this
    /// plan drops or sets.
    fn keeps<'a>(&'a self, client: Fields<'a>) -> impl Fn(&[u8]) -> bool + 'a {
        // Names listed in the client's Connection header are hop-by-hop too
        // (borrowed from its values: no copy of each).
        let listed: Vec<&[u8]> = client
            .values("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
            .collect();
        move |name: &[u8]| {
            !REQUEST_DROPPED
                .iter()
                .any(|d| ferry_wire::same_name(name, d))
                && !listed.iter().any(|l| ferry_wire::same_name(name, l))
                && !self.is_overridden(name)
        }
    }

    /// The lines this plan adds after the client's, in order: `Host`,
    /// `set_headers`, `X-Forwarded-For` and `-Proto`, the body's framing,
    /// and what the upstream's HTTP version asks for. None has a name of
    /// another (the client's were left out by [`RequestPlan::keeps`]).
    fn each_added(
        &self,
        names: &AddedNames,
        client: Fields<'_>,
        vars: &RequestVars,
        body: BodyFraming,
        mut each: impl FnMut(&Bytes, Value<'_>) -> Result<()>,
    ) -> Result<()> {
        // One buffer for every rendered value, each used before the next
        // (room for an address list and a host made at once).
        let mut v = String::with_capacity(64);
        match &self.host {
            Some(t) => {
                vars.render_into(t, &mut v);
                each(&names.host, Value::Text(&v))?;
            }
            None => each(&names.host, Value::Text(vars.proxy_host))?,
        }
        for ((_, t), case) in self.set.iter().zip(&names.set) {
            v.clear();
            vars.render_into(t, &mut v);
            if !v.is_empty() {
                each(case, Value::Set(&v))?;
            }
        }
        for (name, t) in [
            (&names.forwarded_for, &self.forwarded_for),
            (&names.forwarded_proto, &self.forwarded_proto),
        ] {
            v.clear();
            if let Some(t) = t {
                vars.render_into(t, &mut v);
            }
            if !v.is_empty() {
                each(name, Value::Text(&v))?;
            }
        }
        match body {
            BodyFraming::None => {}
            BodyFraming::Length(n) => each(&names.content_length, Value::Text(&n.to_string()))?,
            // HTTP/2 frames the body itself.
            BodyFraming::Chunked if self.version == HttpVersion::Http2 => {}
            BodyFraming::Chunked => each(&names.transfer_encoding, Value::Static("chunked"))?,
        }
        match self.version {
            HttpVersion::Http10 => each(&names.connection, Value::Static("close"))?,
            // The client may take trailers (gRPC needs them): the server is
            // told so, the only `TE` HTTP/2 allows.
            HttpVersion::Http2 if accepts_trailers(client) => {
                each(&names.te, Value::Static("trailers"))?
            }
            _ => {}
        }
        Ok(())
    }

    /// Build the upstream request from the client's: its headers copied in
    /// order (and case) into a header sized for them, less the ones dropped
    /// or set here, so nothing is cloned only to be removed.
    pub fn build(
        &self,
        client: &RequestHeader,
        vars: &RequestVars,
        body: BodyFraming,
    ) -> Result<RequestHeader> {
        let size = Some(client.headers.len() + self.set.len() + 4);
        let (method, path) = (client.method.clone(), client.raw_path());
        let mut req = if client.has_case() {
            RequestHeader::build(method, path, size)?
        } else {
            RequestHeader::build_no_case(method, path, size)?
        };
        let kept = self.keeps(Fields::Header(client));
        if client.has_case() {
            // The two maps of a case-preserving header iterate in step.
            for ((name, value), (case, _)) in client.headers.iter().zip(client.case_header_iter()) {
                if kept(name.as_str().as_bytes()) {
                    req.append_header(case.clone(), value.clone())?;
                }
            }
        } else {
            for (name, value) in client.headers.iter() {
                if kept(name.as_str().as_bytes()) {
                    req.append_header(name.clone(), value.clone())?;
                }
            }
        }
        req.set_version(match self.version {
            HttpVersion::Http10 => Version::HTTP_10,
            HttpVersion::Http11 => Version::HTTP_11,
            HttpVersion::Http2 => Version::HTTP_2,
        });
        self.each_added(
            &self.names,
            Fields::Header(client),
            vars,
            body,
            |name, value| {
                // `set_headers` lines are appended (two may share a name);
                // the others replace.
                let append = matches!(value, Value::Set(_));
                let value = value.into_header_value();
                let value = value.map_err(|_| {
                    pingora_error::Error::explain(
                        pingora_error::ErrorType::InvalidHTTPHeader,
                        "invalid header value",
                    )
                })?;
                if append {
                    req.append_header(name.clone(), value).map(drop)
                } else {
                    req.insert_header(name.clone(), value)
                }
            },
        )?;
        Ok(req)
    }

    /// Whether the upstream request says `Connection: close` (an HTTP/1.0
    /// upstream), as [`RequestPlan::write_h1`] writes it.
    pub fn asks_close(&self) -> bool {
        self.version == HttpVersion::Http10
    }

    /// The upstream request as HTTP/1 bytes, the very bytes Pingora would
    /// write for [`RequestPlan::build`]'s header, written straight from the
    /// client's header with no header of its own made (nginx's
    /// `ngx_http_proxy_create_request`). `None` where only the header will
    /// do: an HTTP/2 upstream, `set_headers` that name a framing header, or
    /// a target Pingora would refuse to write. A client header without its
    /// names' case (an HTTP/2 client's) is written with the names Pingora
    /// gives such a header.
    pub fn write_h1(
        &self,
        (method, path, client): (&str, &[u8], Fields<'_>),
        vars: &RequestVars,
        body: BodyFraming,
    ) -> Option<Vec<u8>> {
        let version: &[u8] = match self.version {
            HttpVersion::Http10 => b"HTTP/1.0",
            HttpVersion::Http11 => b"HTTP/1.1",
            HttpVersion::Http2 => return None,
        };
        if !self.names.wire || path.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r' | b' ')) {
            return None;
        }
        let mut out = Vec::with_capacity(256 + 64 * client.len());
        for part in [method.as_bytes(), b" ", path, b" ", version, b"\r\n"] {
            out.extend_from_slice(part);
        }
        let mut line = |name: &[u8], value: &[u8]| {
            for part in [name, b": ", value, b"\r\n"] {
                out.extend_from_slice(part);
            }
        };
        let kept = self.keeps(client);
        client.for_each(|name, value| {
            if kept(name) {
                line(name, value);
            }
        });
        let names = match client.has_case() {
            true => &self.names,
            false => &self.bare_names,
        };
        let mut valid = true;
        self.each_added(names, client, vars, body, |name, value| {
            let v = value.as_bytes();
            // What `HeaderValue` would refuse: the header path fails there.
            valid &= field_value(v);
            line(name, v);
            Ok(())
        })
        .ok()?;
        if !valid {
            return None;
        }
        out.extend_from_slice(b"\r\n");
        Some(out)
    }
}

/// The bytes `http` lets a header value hold: a tab, and visible ASCII or
/// obs-text (no CR, LF, NUL or other control). A value written as bytes
/// is checked with this where a `HeaderValue` would refuse it.
pub fn field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A value [`RequestPlan`] adds (rendered into a buffer the plan reuses).
enum Value<'a> {
    Text(&'a str),
    /// A `set_headers` line's.
    Set(&'a str),
    Static(&'static str),
}

impl Value<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Text(t) | Value::Set(t) => t.as_bytes(),
            Value::Static(t) => t.as_bytes(),
        }
    }

    fn into_header_value(self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        match self {
            Value::Text(t) | Value::Set(t) => HeaderValue::from_str(t),
            Value::Static(t) => Ok(HeaderValue::from_static(t)),
        }
    }
}

/// The names a plan adds, in the case they are written in (Pingora's, for
/// a name given as an `http` constant), made once per plan.
#[derive(Debug, Clone)]
struct AddedNames {
    host: Bytes,
    set: Vec<Bytes>,
    forwarded_for: Bytes,
    forwarded_proto: Bytes,
    content_length: Bytes,
    transfer_encoding: Bytes,
    connection: Bytes,
    te: Bytes,
    /// No `set_headers` name is one the plan may add again (framing,
    /// `Connection`, `TE`) or another's: each line then goes out once, as
    /// written, and [`RequestPlan::write_h1`] may write them.
    wire: bool,
}

impl AddedNames {
    /// The names in the case Pingora writes them: as given (an `http`
    /// constant title-cased), or, `bare`, as it writes a header that kept
    /// no case ([`bare_case`]).
    fn new(set: &[(HeaderName, Template)], bare: bool) -> AddedNames {
        let framing = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::TE,
        ];
        let unique = set
            .iter()
            .enumerate()
            .all(|(i, (n, _))| !framing.contains(n) && !set[..i].iter().any(|(m, _)| m == n));
        let case = |n: HeaderName| match bare {
            true => Bytes::copy_from_slice(bare_case(&n).as_bytes()),
            false => Bytes::copy_from_slice(n.into_case_header_name().as_slice()),
        };
        // Given as written; not among the names `bare_case` title-cases.
        let given = |text: &'static str| match bare {
            true => Bytes::from(text.to_ascii_lowercase()),
            false => Bytes::from_static(text.as_bytes()),
        };
        AddedNames {
            host: case(header::HOST),
            set: set.iter().map(|(n, _)| case(n.clone())).collect(),
            forwarded_for: given("X-Forwarded-For"),
            forwarded_proto: given("X-Forwarded-Proto"),
            content_length: case(header::CONTENT_LENGTH),
            transfer_encoding: case(header::TRANSFER_ENCODING),
            connection: case(header::CONNECTION),
            te: case(header::TE),
            wire: unique,
        }
    }
}

/// A name as Pingora writes it in a header that kept no case: a few
/// standard names title-cased, the rest in lower case, as `http` keeps
/// them (pingora-http's `titled_header_name_str`).
pub fn bare_case(name: &HeaderName) -> &str {
    match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

/// Whether the client's `TE` lists `trailers`.
fn accepts_trailers(client: Fields<'_>) -> bool {
    client
        .get_all("te")
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Whether the client asks for an upgrade that is forwarded as one: both
/// `Upgrade` and `Connection: upgrade`, and no body (otherwise `Upgrade` is
/// hop-by-hop and dropped like the rest).
pub fn wants_upgrade(h: Fields<'_>) -> bool {
    h.get("upgrade").is_some()
        && h.get("transfer-encoding").is_none()
        && h.get("content-length").is_none_or(|v| v == b"0")
        && h.get_all("connection")
            .into_iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Make `req`, built by a [`RequestPlan`], the upgrade the client asked
/// for: its `Upgrade` header and `Connection: upgrade`, over HTTP/1.1
/// (nginx needs `proxy_http_version 1.1` for the same).
pub fn forward_upgrade(
    req: &mut RequestHeader,
    client: &RequestHeader,
) -> pingora_error::Result<()> {
    req.set_version(Version::HTTP_11);
    for v in client.headers.get_all(header::UPGRADE) {
        req.append_header(header::UPGRADE, v.clone())?;
    }
    req.insert_header(header::CONNECTION, HeaderValue::from_static("upgrade"))?;
    Ok(())
}

/// What the response plan does to one of a server's header lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEdit {
    /// It goes to the client as it came.
    Keep,
    /// It does not go to the client.
    Drop,
    /// It becomes `Server: ferry` (a later `Server` line is dropped).
    Server,
    /// A `Date` line: the client's writer sets it in its place.
    Date,
    /// A `Connection` line: the client's writer sets it in its place.
    Connection,
}

/// The response-side rules of one route.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    hidden: Vec<HeaderName>,
    /// `hidden` as bytes, for [`ResponsePlan::line_edit`].
    hidden_names: Vec<Box<[u8]>>,
    /// Bit `n` set: a hidden name is `n` bytes long (below 64).
    hidden_lengths: u64,
    /// Bit `n` set: a name `n` bytes long may be edited (hidden, or one of
    /// those [`ResponsePlan::line_edit`] names).
    edited_lengths: u64,
    pass_server: bool,
}

impl ResponsePlan {
    pub fn new(conf: &ProxyConf) -> ResponsePlan {
        let passed = |n: &str| conf.pass_headers.iter().any(|p| p.eq_ignore_ascii_case(n));
        let mut hidden: Vec<HeaderName> = HIDDEN_BY_DEFAULT
            .iter()
            .filter(|n| !passed(n))
            .map(|n| HeaderName::from_static(n))
            .collect();
        for h in &conf.hide_headers {
            if let Ok(n) = HeaderName::from_bytes(h.as_bytes()) {
                if !passed(h) && !hidden.contains(&n) {
                    hidden.push(n);
                }
            }
        }
        let hidden_names: Vec<Box<[u8]>> = hidden
            .iter()
            .map(|n| n.as_str().as_bytes().into())
            .collect();
        let hidden_lengths = hidden_names
            .iter()
            .filter(|n| n.len() < 64)
            .fold(0, |bits, n| bits | 1 << n.len());
        let named = [
            b"date".len(),
            b"server".len(),
            b"connection".len(),
            b"keep-alive".len(),
            b"transfer-encoding".len(),
        ];
        let edited_lengths = named.iter().fold(hidden_lengths, |bits, n| bits | 1 << n);
        ResponsePlan {
            hidden,
            hidden_names,
            hidden_lengths,
            edited_lengths,
            pass_server: passed("server"),
        }
    }

    /// The client's response header, made from the upstream's in place:
    /// hidden and consumed headers removed, `Server: ferry` set. The
    /// upstream's `Content-Length` is kept; other framing is the caller's.
    ///
    /// `client_h1`: the client speaks HTTP/1, whose writer (Pingora's) sets
    /// `Date` and `Connection` itself, replacing the upstream's in place, so
    /// they are left for it rather than removed here.
    pub fn build(&self, resp: &mut ResponseHeader, client_h1: bool) -> pingora_error::Result<()> {
        resp.set_version(Version::HTTP_11);
        // One pass over the few headers the response has, then removals
        // of those present, instead of a lookup per name on the lists.
        let dropped: Vec<HeaderName> = resp
            .headers
            .keys()
            .filter(|n| {
                // `Server` is overwritten below rather than removed first.
                (RESPONSE_CONSUMED.contains(n) || self.hidden.contains(n))
                    && (self.pass_server || *n != header::SERVER)
                    && !(client_h1 && (*n == header::DATE || *n == header::CONNECTION))
            })
            .cloned()
            .collect();
        for name in &dropped {
            resp.remove_header(name);
        }
        if !self.pass_server {
            resp.insert_header(header::SERVER, HeaderValue::from_static("ferry"))?;
        }
        Ok(())
    }

    /// What [`ResponsePlan::build`] does to a server's line named `name`,
    /// for an HTTP/1 client, when the lines go to it as they came: dropped,
    /// kept, set in its place by the writer (`Date`, `Connection`), or
    /// (the first `Server`) made `Server: ferry`.
    #[inline]
    pub fn line_edit(&self, name: &[u8]) -> LineEdit {
        // Most names have a length no edited name has: kept at once.
        let len = name.len();
        if len < 64 && self.edited_lengths & (1 << len) == 0 {
            return LineEdit::Keep;
        }
        self.named_line_edit(name)
    }

    #[inline(never)]
    fn named_line_edit(&self, name: &[u8]) -> LineEdit {
        let is = |n: &[u8]| ferry_wire::same_name(name, n);
        match name.len() {
            6 if is(b"server") => {
                return match self.pass_server {
                    true => LineEdit::Keep,
                    false => LineEdit::Server,
                }
            }
            // Set in place by the client's writer, as `build` leaves them.
            4 if is(b"date") => return LineEdit::Date,
            10 if is(b"connection") => return LineEdit::Connection,
            10 if is(b"keep-alive") => return LineEdit::Drop,
            17 if is(b"transfer-encoding") => return LineEdit::Drop,
            _ => {}
        }
        // No hidden name is this long: nothing to compare.
        let len = name.len();
        if len < 64 && self.hidden_lengths & (1 << len) == 0 {
            return LineEdit::Keep;
        }
        match self.hidden_names.iter().any(|h| is(h)) {
            true => LineEdit::Drop,
            false => LineEdit::Keep,
        }
    }

    /// Whether [`ResponsePlan::build`] sets `Server: ferry`.
    pub fn sets_server(&self) -> bool {
        !self.pass_server
    }

    /// Whether a header name is hidden from the client.
    pub fn hides(&self, name: &str) -> bool {
        self.hidden
            .iter()
            .any(|h| h.as_str().eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(client: &RequestHeader) -> RequestVars<'_> {
        RequestVars {
            method: "GET",
            request_uri: "/x",
            uri: "/x",
            host: "example.com",
            headers: Fields::Header(client),
            remote_addr: "10.0.0.9",
            remote_port: 1,
            scheme: "http",
            proxy_host: "app",
            request_id: crate::variables::tests::test_id(),
            upstream_addr: "",
            upstream_status: "",
            upstream_cache_status: "",
            limit_req_status: "",
            limit_conn_status: "",
            upstream_headers: None,
        }
    }

    fn head(c: &RequestHeader) -> (&str, &[u8], Fields<'_>) {
        (c.method.as_str(), c.raw_path(), Fields::Header(c))
    }

    fn with_lines(method: &str, target: &[u8], lines: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target, None).unwrap();
        for (k, v) in lines {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn client() -> RequestHeader {
        with_lines(
            "GET",
            b"/x",
            &[
                ("Host", "example.com"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Upgrade", "h2c"),
                ("Expect", "100-continue"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Forwarded-For", "1.2.3.4"),
                ("X-Keep", "yes"),
                ("X-Gone", "bye"),
            ],
        )
    }

    #[test]
    fn the_lines_as_they_came_are_written_as_their_header_is() {
        let mut conf = ProxyConf::default();
        conf.set_headers =
            serde_yaml::from_str("{ X-Real-IP: \"$remote_addr\", X-Gone: \"\" }").unwrap();
        let plan = RequestPlan::new(&conf);
        let c = client();
        let mut raw = b"GET /x HTTP/1.1\r\n".to_vec();
        Fields::Header(&c).for_each(|n, v| {
            raw.extend_from_slice(&[n, b": ", v, b"\r\n"].concat());
        });
        raw.extend_from_slice(b"\r\n");
        let Ok(ferry_wire::Parsed::Complete(parsed)) = ferry_wire::parse_request(&raw, 64) else {
            panic!("a complete head");
        };
        let lines = Fields::Lines {
            raw: &raw,
            lines: &parsed.lines,
        };
        let v = vars(&c);
        for body in [
            BodyFraming::None,
            BodyFraming::Length(3),
            BodyFraming::Chunked,
        ] {
            let from_lines = plan.write_h1(("GET", b"/x", lines), &v, body);
            let from_header = plan.write_h1(head(&c), &v, body);
            assert_eq!(from_lines, from_header, "{body:?}");
        }
    }

    #[test]
    fn request_as_nginx_builds_it() {
        let mut conf = ProxyConf::default();
        conf.set_headers =
            serde_yaml::from_str("{ X-Real-IP: \"$remote_addr\", X-Gone: \"\" }").unwrap();
        let plan = RequestPlan::new(&conf);
        let c = client();
        let r = plan.build(&c, &vars(&c), BodyFraming::Length(5)).unwrap();
        let h = &r.headers;
        assert_eq!(h["host"], "app");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["content-length"], "5");
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "te",
            "upgrade",
            "expect",
            "proxy-connection",
            "x-gone",
        ] {
            assert!(!h.contains_key(gone), "{gone} must not be sent upstream");
        }
    }

    #[test]
    fn host_and_xff_overrides() {
        let mut conf = ProxyConf::default();
        conf.set_headers = serde_yaml::from_str("{ Host: \"\", X-Forwarded-For: \"\" }").unwrap();
        let c = client();
        let r = RequestPlan::new(&conf)
            .build(&c, &vars(&c), BodyFraming::None)
            .unwrap();
        assert_eq!(r.headers["host"], "app", "Host: \"\" means $proxy_host");
        assert!(!r.headers.contains_key("x-forwarded-for"));
        conf.set_headers = serde_yaml::from_str("{ Host: \"$host\" }").unwrap();
        let r = RequestPlan::new(&conf)
            .build(&c, &vars(&c), BodyFraming::None)
            .unwrap();
        assert_eq!(r.headers["host"], "example.com");
    }

    /// `write_h1` gives, byte for byte, what Pingora writes for `build`'s
    /// header, or `None` where only the header will do.
    #[test]
    fn wire_request_is_the_bytes_pingora_writes() {
        use pingora_core::protocols::http::v1::client::http_req_header_to_wire;
        let confs = [
            "{}",
            "{ set_headers: { X-Real-IP: \"$remote_addr\", X-Gone: \"\", x-lower: \"$host\" } }",
            "{ set_headers: { Host: \"$host:81\", X-Forwarded-For: \"\", X-Empty: \"$http_none\" } }",
            "{ http_version: \"1.0\" }",
            "{ set_headers: { Accept-Encoding: \"\", Content-Type: \"text/x\" } }",
        ];
        let lines = [
            ("X-A", "1"),
            ("host", "h"),
            ("X-B", "2"),
            ("x-a", "3"),
            ("Cookie", "c=1"),
        ];
        let dups = with_lines("POST", b"/d?x=1", &lines);
        let bare = with_lines("GET", b"/", &[("Host", "h")]);
        // An HTTP/2 client's header keeps no case: Pingora title-cases a
        // few standard names and writes the rest in lower case.
        let standard = [
            ("accept-ranges", "bytes"),
            ("age", "1"),
            ("cache-control", "no-cache"),
            ("content-type", "text/plain"),
            ("content-encoding", "gzip"),
            ("date", "now"),
            ("server", "s"),
            ("set-cookie", "a=b"),
            ("x-custom", "c"),
            ("accept", "*/*"),
        ];
        let no_case = |c: &RequestHeader, more: &[(&'static str, &'static str)]| {
            let mut h = RequestHeader::build_no_case(c.method.clone(), c.raw_path(), None).unwrap();
            for (n, v) in c.headers.iter() {
                h.append_header(n.clone(), v.clone()).unwrap();
            }
            for (n, v) in more {
                h.append_header(HeaderName::from_static(n), *v).unwrap();
            }
            h
        };
        let clients = [
            client(),
            dups.clone(),
            bare.clone(),
            no_case(&client(), &standard),
            no_case(&dups, &[]),
        ];
        let mut compared = 0;
        for conf in confs {
            let plan = RequestPlan::new(&serde_yaml::from_str(conf).unwrap());
            for c in clients.iter().cloned() {
                for body in [
                    BodyFraming::None,
                    BodyFraming::Length(5),
                    BodyFraming::Chunked,
                ] {
                    let v = vars(&c);
                    let wire = plan.write_h1(head(&c), &v, body).expect("written");
                    let built = plan.build(&c, &v, body).unwrap();
                    let pingora = http_req_header_to_wire(&built).unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&wire),
                        String::from_utf8_lossy(&pingora),
                        "{conf} {body:?}"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 75);
        // Where only Pingora's header will do.
        let v = vars(&dups);
        let h2 = RequestPlan::new(&serde_yaml::from_str("{ http_version: \"2\" }").unwrap());
        assert!(h2.write_h1(head(&dups), &v, BodyFraming::None).is_none());
        let twice = "{ set_headers: { X-Twice: \"1\", x-twice: \"2\" } }";
        let twice = RequestPlan::new(&serde_yaml::from_str(twice).unwrap());
        let built = twice.build(&dups, &v, BodyFraming::None).unwrap();
        assert_eq!(
            built.headers.get_all("x-twice").iter().count(),
            2,
            "both lines go"
        );
        assert!(twice.write_h1(head(&dups), &v, BodyFraming::None).is_none());
        let framing = "{ set_headers: { Connection: \"upgrade\" } }";
        let framing = RequestPlan::new(&serde_yaml::from_str(framing).unwrap());
        assert!(framing
            .write_h1(head(&dups), &v, BodyFraming::None)
            .is_none());
    }

    #[test]
    fn upstream_target_is_the_clients_as_it_came() {
        let plan = RequestPlan::new(&ProxyConf::default());
        for target in [
            b"/".as_slice(),
            b"/a/b?x=1&y=%20",
            b"/caf\xc3\xa9",
            b"/raw\xff?q",
            b"http://example.com/abs?x",
            b"*",
        ] {
            let mut c = RequestHeader::build("GET", target, None).unwrap();
            c.append_header("Host", "example.com").unwrap();
            let r = plan.build(&c, &vars(&c), BodyFraming::None).unwrap();
            assert_eq!(
                r.raw_path(),
                c.raw_path(),
                "{}",
                String::from_utf8_lossy(target)
            );
            assert_eq!(r.uri, c.uri);
        }
    }

    #[test]
    fn response_hides_nginx_defaults() {
        let mut up = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("Date", "x"),
            ("Server", "backend"),
            ("X-Pad", "x"),
            ("X-Accel-Buffering", "no"),
            ("Connection", "close"),
            ("Content-Length", "3"),
            ("X-App", "1"),
            ("X-Secret", "s"),
        ] {
            up.append_header(k, v).unwrap();
        }
        let mut conf = ProxyConf::default();
        conf.hide_headers = vec!["X-Secret".into()];
        conf.pass_headers = vec!["X-Pad".into()];
        let plan = ResponsePlan::new(&conf);
        // To an HTTP/2 client: everything hidden or hop-by-hop is removed.
        let mut r = up.clone();
        plan.build(&mut r, false).unwrap();
        assert_eq!(r.headers["server"], "ferry");
        assert_eq!(r.headers.get_all("server").iter().count(), 1);
        assert_eq!(r.headers["content-length"], "3");
        assert_eq!(r.headers["x-app"], "1");
        assert_eq!(r.headers["x-pad"], "x");
        for gone in ["date", "x-accel-buffering", "connection", "x-secret"] {
            assert!(!r.headers.contains_key(gone), "{gone} must be hidden");
        }
        // To an HTTP/1 client, Date and Connection are left for Pingora's
        // writer, which replaces both; the rest is the same.
        let mut r1 = up;
        plan.build(&mut r1, true).unwrap();
        assert_eq!(r1.headers.len(), r.headers.len() + 2);
        assert!(r1.headers.contains_key("date") && r1.headers.contains_key("connection"));
        for (name, value) in r.headers.iter() {
            assert_eq!(
                r1.headers.get_all(name).iter().collect::<Vec<_>>(),
                vec![value]
            );
        }
    }
}
