//! Answering from a cache entry: the stored header through the route's
//! header rules and the response filter, a `304` when the client's
//! validators match, a byte range when asked (`206`, or `416` when it
//! cannot be satisfied; pingora-proxy's range filter; several ranges get
//! the whole entry), then the body read
//! from the file piece by piece through the response body filter, and
//! compressed for this client when the route's `compress:` says so. When
//! nothing must see or change the bytes and the client is HTTP/1 over plain
//! TCP, a body not already read with the head goes from the file to the
//! socket with sendfile(2) instead.
//!
//! nginx counterpart: `ngx_http_upstream_cache_send`, then the
//! not-modified and range header filters and `ngx_http_file_cache` output
//! (`sendfile on`).

use crate::client::downstream::Downstream;
use crate::client::sendfile::{self, Cut};
use crate::hooks::proxy_trait::ProxyHttp;
use crate::hooks::session::Session;
use crate::record::CacheStatus;
use crate::record::End;
use crate::response::compress;
use crate::response::header as response_header;
use crate::runtime::RouteRt;
use bytes::Bytes;
use ferry_cache::Entry;
use ferry_filters::fields::Fields;
use ferry_filters::headers::field_value;
use http::header;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::RangeType;
use std::sync::Arc;

/// How much of the file one read brings.
const PIECE: usize = 64 * 1024;

/// Answer the request from `entry`.
pub(crate) async fn answer<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    route: &RouteRt,
    entry: &Arc<Entry>,
    status: CacheStatus,
) -> Result<End> {
    s.request.cache_status = status;
    let kept = served(s, route, entry)?;
    let added = response_header::added(route, s, None);
    let (range, encoder, sent_from_file) = match as_kept(app, s, route, &kept, &added) {
        true => {
            // The entry's header as it is, the added lines after it.
            s.request.status = kept.status.as_u16();
            let range = 0..entry.head.body_len;
            let from_file = from_file(app, s, entry, &kept, range.clone(), false);
            s.downstream.write_kept_header(&kept, &added).await?;
            (range, None, from_file)
        }
        false => {
            let mut resp = Box::new(Arc::unwrap_or_clone(kept));
            let range = conditional(s.downstream, &mut resp, entry.head.body_len);
            for (name, value) in added {
                resp.append_header(name.to_string(), value)?;
            }
            app.response_filter(s, &mut resp, ctx).await?;
            let conf = route.conf.compress.as_ref();
            let encoder = compress::decide(conf, s.downstream.req_header(), &mut resp, false);
            s.request.status = resp.status.as_u16();
            let from_file = from_file(app, s, entry, &resp, range.clone(), encoder.is_some());
            s.downstream.write_response_header(resp).await?;
            (range, encoder, from_file)
        }
    };
    let head_only = s.downstream.method() == "HEAD";
    if head_only || range.is_empty() {
        let last = compress::finish_empty(encoder);
        return written(s.downstream.write_response_body(last, true).await);
    }
    if sent_from_file {
        if let Some(end) = send_file(s, route, entry, range.clone()).await {
            return Ok(end);
        }
    }
    read_and_write(app, s, ctx, entry, range, encoder).await
}

/// Whether the entry's header goes to the client as it is, with the added
/// lines after it, no copy of it made: Ferry's own HTTP/1 session writes
/// it, and nothing would change it (no `response_filter`, no compression,
/// no range or validator in the request, `Accept-Ranges` already said, and
/// no added line naming one the header has or one the session sets). An
/// added value a header may not hold (a line break from the
/// configuration) takes the copy's way, where the header refuses it.
fn as_kept<P: ProxyHttp>(
    app: &P,
    s: &Session<'_>,
    route: &RouteRt,
    kept: &pingora_http::ResponseHeader,
    added: &[(&str, String)],
) -> bool {
    let req = s.downstream.fields();
    let set_by_session = ["date", "connection", "content-length", "transfer-encoding"];
    let clashes = |name: &str| {
        kept.headers.contains_key(name)
            || set_by_session.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    !app.filters_response_header()
        && s.downstream.is_ferry()
        && route.conf.compress.is_none()
        && req.get_name(&header::RANGE).is_none()
        && says_bytes(kept)
        && !not_modified(req, kept)
        && !added.iter().any(|(name, _)| clashes(name))
        && added.iter().all(|(_, value)| field_value(value.as_bytes()))
}

/// Whether the body goes from the entry file with sendfile(2): a plain-TCP
/// HTTP/1 client, a body no filter or encoder sees, framed by its length,
/// not in memory already.
fn from_file<P: ProxyHttp>(
    app: &P,
    s: &Session<'_>,
    entry: &Entry,
    resp: &pingora_http::ResponseHeader,
    range: std::ops::Range<u64>,
    encoding: bool,
) -> bool {
    let head_only = s.downstream.method() == "HEAD";
    !head_only
        && !range.is_empty()
        && !encoding
        && !app.filters_response_body()
        && framed_by_length(resp, range.end - range.start)
        && entry
            .body_read(range.start, (range.end - range.start) as usize)
            .is_none()
        && straight(s)
}

/// The stored header through the route's rules for this client: the one
/// the entry keeps for this route and kind of client when there is one,
/// else made (and kept, unless it depends on this request's host, as a
/// rewritten `Location` or `Refresh` does).
fn served(
    s: &Session<'_>,
    route: &RouteRt,
    entry: &Entry,
) -> Result<Arc<pingora_http::ResponseHeader>> {
    let version = s.downstream.version();
    let key = route.id << 4 | version_code(version);
    if let Some(kept) = entry.served.get(key) {
        return Ok(kept);
    }
    // Stored with the body's Content-Length, without Transfer-Encoding.
    let mut made = entry.head.header.clone();
    let (host, scheme) = (s.request.host.as_str(), s.request.scheme);
    response_header::build(route, &mut made, version, host, scheme)?;
    let h = &entry.head.header.headers;
    let made = Arc::new(made);
    if route.redirect.is_off() || !(h.contains_key(header::LOCATION) || h.contains_key("refresh")) {
        entry.served.keep(key, made.clone());
    }
    Ok(made)
}

/// A small number for each HTTP version.
fn version_code(v: http::Version) -> u64 {
    match v {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_11 => 2,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 5,
    }
}

/// The body read from the entry piece by piece, through the response body
/// filter and the encoder, written through Pingora's session.
async fn read_and_write<P: ProxyHttp>(
    app: &P,
    s: &mut Session<'_>,
    ctx: &mut P::CTX,
    entry: &Arc<Entry>,
    range: std::ops::Range<u64>,
    mut encoder: Option<compress::Encoder>,
) -> Result<End> {
    let mut at = range.start;
    while at < range.end {
        let want = (range.end - at).min(PIECE as u64) as usize;
        let piece = read_body(entry, at, want)
            .await
            .map_err(|e| Error::because(ErrorType::InternalError, "reading a cache entry", e));
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                // Checked when opened; changed on disk since.
                log::error!("{e}: {}", entry.path.display());
                s.request.truncated = true;
                return Ok(End::Truncated);
            }
        };
        at += piece.len() as u64;
        let mut body = Some(piece);
        app.response_body_filter(s.request, &mut body, false, ctx)?;
        let body = encoded(encoder.as_mut(), body.unwrap_or_default(), false)?;
        if !body.is_empty() {
            s.request.body_bytes_sent += body.len() as u64;
            if s.downstream.write_response_body(body, false).await.is_err() {
                s.request.truncated = true;
                return Ok(End::Truncated);
            }
        }
    }
    let mut last = None;
    app.response_body_filter(s.request, &mut last, true, ctx)?;
    let last = encoded(encoder.as_mut(), last.unwrap_or_default(), true)?;
    s.request.body_bytes_sent += last.len() as u64;
    written(s.downstream.write_response_body(last, true).await)
}

/// Whether the header going out frames the body by `Content-Length: len`
/// (a `response_filter` may have taken it away: Pingora then chunks, and
/// bytes sent past it would not be framed).
fn framed_by_length(resp: &pingora_http::ResponseHeader, len: u64) -> bool {
    let mut cls = resp.headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(cl), None) = (cls.next(), cls.next()) else {
        return false;
    };
    cl.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) == Some(len)
        && resp.headers.get(header::TRANSFER_ENCODING).is_none()
}

/// Whether the client's connection is plain TCP under HTTP/1; if so each
/// write to it is flushed from now on, so that the header is on the wire
/// before the body's first byte leaves the file.
fn straight(s: &Session<'_>) -> bool {
    let plain = crate::client::header_clock::plain_tcp(s.downstream.clock()).is_some();
    if plain {
        crate::client::header_clock::flush_each_write(s.downstream.clock());
    }
    plain
}

/// `range` of the entry's body from its file to the client's socket with
/// sendfile(2). `None` when the connection cannot take it that way (the
/// body then goes the read path; nothing was sent).
async fn send_file(
    s: &mut Session<'_>,
    route: &RouteRt,
    entry: &Arc<Entry>,
    range: std::ops::Range<u64>,
) -> Option<End> {
    let limit = route.proxy().client_send_timeout.non_zero();
    let to = crate::client::header_clock::plain_tcp(s.downstream.clock())?;
    if !to.holds_nothing() {
        return None;
    }
    let (at, len) = (entry.head.body_at + range.start, range.end - range.start);
    let sent = &mut s.request.body_bytes_sent;
    match sendfile::send(to, &entry.file, at, len, limit, sent).await {
        Ok(()) => log::debug!("sendfile: {len} bytes of {}", entry.path.display()),
        Err(cut) => {
            match cut {
                Cut::File(e) => log::error!("sending a cache entry: {e}: {}", entry.path.display()),
                Cut::TimedOut => log::info!("client timed out sending a cache entry"),
                Cut::Client(e) => log::debug!("client gone while sending a cache entry: {e}"),
            }
            s.request.truncated = true;
            return Some(End::Truncated);
        }
    }
    // Pingora's body writer did not see these bytes: its finish ends the
    // Content-Length body at the count it has (and says it is short, as
    // expected here), after which the session's own finish and keepalive go
    // on as after any body.
    let _ = s.downstream.finish_body().await;
    Some(End::Complete)
}

/// A piece of the entry as it goes to this client: compressed per client
/// when the route's `compress:` chose an encoder (entries are stored as the
/// upstream sent them).
fn encoded(encoder: Option<&mut compress::Encoder>, piece: Bytes, end: bool) -> Result<Bytes> {
    let Some(e) = encoder else {
        return Ok(piece);
    };
    let out = if end {
        e.finish(&piece)
    } else {
        e.piece(&piece)
    };
    out.map_err(|e| Error::because(ErrorType::InternalError, "compressing a cache entry", e))
}

/// Whether the header says `Accept-Ranges: bytes`, once.
fn says_bytes(resp: &pingora_http::ResponseHeader) -> bool {
    let mut values = resp.headers.get_all(header::ACCEPT_RANGES).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v == "bytes")
}

/// A `304` when the validators match, else the range asked for (`206`,
/// `416`), or the whole entry.
fn conditional(
    ds: &Downstream,
    resp: &mut pingora_http::ResponseHeader,
    body_len: u64,
) -> std::ops::Range<u64> {
    let mut range = 0..body_len;
    if not_modified(ds.fields(), resp) {
        let _ = resp.set_status(304);
        resp.remove_header(&header::CONTENT_LENGTH);
        range = 0..0;
    } else {
        // One range, or none that can be satisfied (416). Several ranges
        // get the whole entry (a server may ignore Range, RFC 9110 14.2):
        // only then is the filter's header set aside, so the header is
        // copied only when a range was asked for.
        if ds.fields().get_name(&header::RANGE).is_none() {
            // The filter's one change here would set `Accept-Ranges: bytes`,
            // which most stored headers already say.
            if !says_bytes(resp) {
                let _ = pingora_proxy::range_header_filter(ds.req_header(), resp, None);
            }
            return range;
        }
        let mut ranged = resp.clone();
        match pingora_proxy::range_header_filter(ds.req_header(), &mut ranged, None) {
            RangeType::Single(r) => {
                range = r.start as u64..r.end as u64;
                *resp = ranged;
            }
            RangeType::Invalid => {
                range = 0..0;
                *resp = ranged;
            }
            RangeType::None => *resp = ranged,
            RangeType::Multi(_) => {}
        }
    }
    range
}

fn written(r: Result<()>) -> Result<End> {
    Ok(match r {
        Ok(()) => End::Complete,
        Err(_) => End::Truncated,
    })
}

/// nginx's not-modified filter for a stored `200`: `If-None-Match` naming
/// its `ETag` (or `*`), else `If-Modified-Since` equal to its
/// `Last-Modified`.
fn not_modified(req: Fields<'_>, resp: &pingora_http::ResponseHeader) -> bool {
    if resp.status != 200 {
        return false;
    }
    if let Some(inm) = req.get_name(&header::IF_NONE_MATCH) {
        let Some(etag) = resp.headers.get(header::ETAG) else {
            return false;
        };
        let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        return inm.split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || weak(t) == weak(etag.as_bytes())
        });
    }
    match (
        req.get_name(&header::IF_MODIFIED_SINCE),
        resp.headers.get(header::LAST_MODIFIED),
    ) {
        (Some(ims), Some(lm)) => ims == lm.as_bytes(),
        _ => false,
    }
}

/// A piece of the entry's body: from what was read with its head, or read
/// from the disk on tokio's blocking threads (the event loop never waits
/// on the disk).
async fn read_body(entry: &Arc<Entry>, at: u64, want: usize) -> std::io::Result<Bytes> {
    if let Some(piece) = entry.body_read(at, want) {
        return Ok(piece);
    }
    let e = entry.clone();
    tokio::task::spawn_blocking(move || e.read_body(at, want))
        .await
        .map_err(std::io::Error::other)?
}
