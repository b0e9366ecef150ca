//! Compression of responses on their way to the client (a route's
//! `compress:`, rule 27): whether a response is compressed, with which
//! algorithm, the header changes that go with it, and the streaming
//! encoder the body pipe and cache HITs push each piece through.
//!
//! nginx counterpart: `ngx_http_gzip_filter_module` (its header filter's
//! checks, `ngx_http_gzip_ok` for `Accept-Encoding` and `gzip_proxied`,
//! `ngx_http_weak_etag`), with brotli and zstd beside gzip.

use bytes::Bytes;
use ferry_conf::{Compress, CompressAlgorithm as Algorithm, Proxied};
use http::header::{self, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use std::io::Write;

/// Decide for one response; when it is compressed, its header is changed
/// (`Content-Encoding`, no `Content-Length` nor `Accept-Ranges`, a weak
/// `ETag`, chunked for HTTP/1.1) and the encoder for its body returned.
/// `Vary: Accept-Encoding` (with `vary`) goes on every response that
/// could have been compressed, as nginx's `gzip_vary` does.
pub(crate) fn decide(
    conf: Option<&Compress>,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    flush: bool,
) -> Option<Encoder> {
    let conf = conf?;
    if !compressible(conf, req, resp) {
        return None;
    }
    if conf.vary {
        let _ = resp.append_header(header::VARY, "Accept-Encoding");
    }
    if req.version == http::Version::HTTP_10 || req.version == http::Version::HTTP_09 {
        return None; // nginx gzip_http_version 1.1
    }
    if req.headers.contains_key(header::VIA) && !proxied_ok(&conf.proxied, req, resp) {
        return None;
    }
    let algorithm = choose(&conf.algorithms, req)?;
    let encoder = Encoder::new(conf, algorithm, flush)?;
    rewrite_header(resp, algorithm, req.version).ok()?;
    Some(encoder)
}

/// The response's own checks (nginx's header filter, before
/// `ngx_http_gzip_ok`): status, no encoding yet, length, type, a body,
/// and `Cache-Control: no-transform` (RFC 9111 5.2.2.6).
fn compressible(conf: &Compress, req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    if !matches!(status, 200 | 403 | 404) || req.method == http::Method::HEAD {
        return false;
    }
    let h = &resp.headers;
    if h.get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    let length = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if let Some(n) = length.and_then(|v| v.trim().parse::<u64>().ok()) {
        if n < conf.min_length {
            return false;
        }
    }
    if has_token(h, header::CACHE_CONTROL, "no-transform") {
        return false;
    }
    type_listed(conf, h.get(header::CONTENT_TYPE))
}

/// nginx `gzip_types`: `text/html` always, `*` any, else the type without
/// its parameters, case-insensitively.
fn type_listed(conf: &Compress, content_type: Option<&HeaderValue>) -> bool {
    if conf.types.iter().any(|t| t == "*") {
        return true;
    }
    let Some(v) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let t = v.split(';').next().unwrap_or_default().trim();
    t.eq_ignore_ascii_case("text/html") || conf.types.iter().any(|x| x.eq_ignore_ascii_case(t))
}

fn has_token(h: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(token)
        })
}

/// nginx `gzip_proxied` for a request with `Via` (`ngx_http_gzip_ok`).
fn proxied_ok(p: &[Proxied], req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let h = &resp.headers;
    if p.contains(&Proxied::Off) {
        return false;
    }
    if p.contains(&Proxied::Any)
        || (p.contains(&Proxied::Auth) && req.headers.contains_key(header::AUTHORIZATION))
    {
        return true;
    }
    if let Some(expires) = h.get(header::EXPIRES) {
        return p.contains(&Proxied::Expired) && expired(expires, h.get(header::DATE));
    }
    if h.contains_key(header::CACHE_CONTROL) {
        let cc = |t| has_token(h, header::CACHE_CONTROL, t);
        return (p.contains(&Proxied::NoCache) && cc("no-cache"))
            || (p.contains(&Proxied::NoStore) && cc("no-store"))
            || (p.contains(&Proxied::Private) && cc("private"));
    }
    // As nginx's code has it: the flag and the header together refuse.
    if p.contains(&Proxied::NoLastModified) && h.contains_key(header::LAST_MODIFIED) {
        return false;
    }
    !(p.contains(&Proxied::NoEtag) && h.contains_key(header::ETAG))
}

/// `Expires` before `Date` (or now, without one); either not readable:
/// not expired.
fn expired(expires: &HeaderValue, date: Option<&HeaderValue>) -> bool {
    let parse = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    let Some(e) = parse(expires) else {
        return false;
    };
    let now = match date {
        Some(d) => parse(d),
        None => Some(std::time::SystemTime::now()),
    };
    now.is_some_and(|now| e < now)
}

/// The first of `algorithms` the client's `Accept-Encoding` accepts: named
/// with a q above 0, or covered by `*` with one. A `q=0` refuses.
fn choose(algorithms: &[Algorithm], req: &RequestHeader) -> Option<Algorithm> {
    let accepted: Vec<(String, bool)> = req
        .headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(coding)
        .collect();
    let q = |name: &str| accepted.iter().find(|(n, _)| n == name).map(|(_, ok)| *ok);
    algorithms
        .iter()
        .copied()
        .find(|a| q(a.token()).or_else(|| q("*")).unwrap_or(false))
}

/// One `Accept-Encoding` element: its coding (lower case) and whether its
/// q-value is above 0.
fn coding(item: &str) -> Option<(String, bool)> {
    let mut parts = item.split(';');
    let name = parts.next()?.trim().to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    let mut ok = true;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                ok = quantity(v.trim());
            }
        }
    }
    Some((name, ok))
}

/// A q-value above 0, as nginx reads it (`ngx_http_gzip_quantity`): `0`
/// or `1`, then at most 3 decimals, at most 1; anything else refuses.
fn quantity(v: &str) -> bool {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(int == "0" || int == "1") || frac.len() > 3 || !digits(frac) {
        return false;
    }
    let q = v.parse::<f32>().unwrap_or(0.0);
    q > 0.0 && q <= 1.0
}

/// The header of a compressed response.
fn rewrite_header(
    resp: &mut ResponseHeader,
    algorithm: Algorithm,
    version: http::Version,
) -> pingora_error::Result<()> {
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.remove_header(&header::ACCEPT_RANGES);
    resp.insert_header(header::CONTENT_ENCODING, algorithm.token())?;
    if version == http::Version::HTTP_11 {
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    weak_etag(resp)
}

/// nginx `ngx_http_weak_etag`: `"x"` becomes `W/"x"`; a weak one stays; one
/// that is neither is dropped.
fn weak_etag(resp: &mut ResponseHeader) -> pingora_error::Result<()> {
    let Some(etag) = resp
        .headers
        .get(header::ETAG)
        .map(|v| v.as_bytes().to_vec())
    else {
        return Ok(());
    };
    if etag.starts_with(b"W/") {
        return Ok(());
    }
    if !etag.starts_with(b"\"") {
        resp.remove_header(&header::ETAG);
        return Ok(());
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(&etag);
    resp.insert_header(header::ETAG, weak)
}

/// A response body's encoder: each piece in, what is ready out (flushed
/// at once when `flush`: an unbuffered route), the rest at the end.
pub(crate) struct Encoder {
    inner: Inner,
    flush: bool,
}

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// `None` when the encoder cannot start (never with the levels the
    /// loader allows): the response then goes uncompressed.
    fn new(conf: &Compress, algorithm: Algorithm, flush: bool) -> Option<Encoder> {
        let inner = match algorithm {
            Algorithm::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(conf.level),
            )),
            Algorithm::Br => Inner::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                conf.br_level,
                22,
            )))),
            Algorithm::Zstd => Inner::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), conf.zstd_level as i32).ok()?,
            ),
        };
        Some(Encoder { inner, flush })
    }

    /// One piece of the body; what the encoder has ready (maybe empty).
    pub(crate) fn piece(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let flush = self.flush;
        match &mut self.inner {
            Inner::Gzip(e) => step(e, data, flush).map(|()| take(e.get_mut())),
            Inner::Br(Some(e)) => step(&mut **e, data, flush).map(|()| take(e.get_mut())),
            Inner::Zstd(e) => step(e, data, flush).map(|()| take(e.get_mut())),
            Inner::Br(None) => Err(std::io::Error::other("a piece after the end")),
        }
    }

    /// The body's last piece: the encoder's end of stream after it.
    pub(crate) fn finish(&mut self, last: &[u8]) -> std::io::Result<Bytes> {
        let mut out = self.piece(last)?.to_vec();
        match &mut self.inner {
            Inner::Gzip(e) => e.try_finish().map(|()| out.extend(take(e.get_mut())))?,
            Inner::Br(b) => {
                if let Some(e) = b.take() {
                    out.extend(e.into_inner());
                }
            }
            Inner::Zstd(e) => e.do_finish().map(|()| out.extend(take(e.get_mut())))?,
        }
        Ok(out.into())
    }
}

/// The whole of an empty body: the encoder's end of stream (or nothing).
pub(crate) fn finish_empty(encoder: Option<Encoder>) -> Bytes {
    encoder
        .and_then(|mut e| e.finish(&[]).ok())
        .unwrap_or_default()
}

fn step<W: Write>(e: &mut W, data: &[u8], flush: bool) -> std::io::Result<()> {
    e.write_all(data)?;
    if flush {
        e.flush()?;
    }
    Ok(())
}

fn take(v: &mut Vec<u8>) -> Bytes {
    std::mem::take(v).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ae: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        r.insert_header("Accept-Encoding", ae).expect("header");
        r
    }

    #[test]
    fn accept_encoding_picks_the_first_acceptable_in_server_order() {
        let all = [Algorithm::Zstd, Algorithm::Br, Algorithm::Gzip];
        assert_eq!(choose(&all, &req("gzip, br")), Some(Algorithm::Br));
        assert_eq!(
            choose(&all, &req("gzip, br;q=0, zstd;q=0.000")),
            Some(Algorithm::Gzip)
        );
        assert_eq!(choose(&all, &req("*;q=0.1, zstd;q=0")), Some(Algorithm::Br));
        assert_eq!(choose(&all, &req("identity")), None);
        assert_eq!(
            choose(&[Algorithm::Gzip], &req("GZIP;Q=0.5")),
            Some(Algorithm::Gzip)
        );
        assert_eq!(choose(&[Algorithm::Gzip], &req("gzip;q=0")), None);
        for bad in ["gzip;q=1.5", "gzip;q=0.0001", "gzip;q=x", "gzip;q=.5"] {
            assert_eq!(choose(&[Algorithm::Gzip], &req(bad)), None, "{bad}");
        }
        assert_eq!(
            choose(&[Algorithm::Gzip], &req("gzip;q=0.001")),
            Some(Algorithm::Gzip)
        );
    }

    #[test]
    fn etags_become_weak_as_nginx_makes_them() {
        let mut r = ResponseHeader::build(200, None).expect("response");
        r.insert_header("ETag", "\"abc\"").expect("header");
        weak_etag(&mut r).expect("weak");
        assert_eq!(r.headers["etag"], "W/\"abc\"");
        weak_etag(&mut r).expect("weak");
        assert_eq!(r.headers["etag"], "W/\"abc\"");
        r.insert_header("ETag", "abc").expect("header");
        weak_etag(&mut r).expect("weak");
        assert!(r.headers.get("etag").is_none());
    }
}
