//! What Ferry knows about one request as it goes: the route, each upstream
//! try, and how it ended. Hooks read it; `logging` gets it whole.
//!
//! nginx counterpart: the request's `upstream_states` array, from which
//! `$upstream_addr`, `$upstream_status` and `$upstream_response_time` are
//! made, one entry per try.

use crate::upstream::try_record::TryList;
pub use crate::upstream::try_record::{Try, TryOutcome};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// An IPv4 address in dotted decimal, without the formatting machinery
/// (this runs for every proxied request: `X-Forwarded-For`).
/// An IP address as text, on the stack (`$remote_addr`, made for every
/// request's `X-Forwarded-For`).
pub(crate) struct IpText {
    /// The longest text of an IPv6 address is 45 bytes.
    buf: [u8; 45],
    len: u8,
}

impl IpText {
    fn of(addr: Option<std::net::IpAddr>) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match addr {
            Some(std::net::IpAddr::V4(a)) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + o / 10 % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            Some(a) => {
                use std::io::Write;
                let mut rest = &mut t.buf[..];
                if write!(rest, "{a}").is_ok() {
                    let left = rest.len();
                    t.len = (t.buf.len() - left) as u8;
                }
            }
            None => {}
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(usize::from(self.len)) {
            *slot = b;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for IpText {
    type Target = str;
    fn deref(&self) -> &str {
        ferry_wire::text(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// What the route's cache did for a request (nginx
/// `$upstream_cache_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheStatus {
    /// The route has no cache, or the request is not one it stores.
    #[default]
    None,
    /// Not in the cache: fetched (and stored when it may be).
    Miss,
    /// `bypass` said to fetch; the response is stored.
    Bypass,
    /// In the cache but expired: fetched again.
    Expired,
    /// An expired entry answered: the upstream failed as `use_stale`
    /// allows, or it is being fetched in the background.
    Stale,
    /// An expired entry answered while another request updates it.
    Updating,
    /// An expired entry, confirmed by the upstream's 304.
    Revalidated,
    /// Answered from the cache.
    Hit,
}

impl CacheStatus {
    /// The variable's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Hit => "HIT",
        }
    }
}

/// One request's record: what the access log, the metrics and the
/// `logging` hook read, and hooks see through [`crate::Session::request`].
#[derive(Debug, Clone)]
pub struct Request {
    /// `$request_id`: unique in this process, sent upstream as `X-Request-Id`
    /// when the route says so. Made when first asked for, as nginx makes
    /// its variable.
    pub(crate) id: OnceLock<String>,
    /// When the request header was read.
    pub(crate) start: Instant,
    /// The client's address: the peer, or the one a trusted proxy announced
    /// (PROXY protocol, `real_ip`).
    pub(crate) client_addr: Option<SocketAddr>,
    /// `$scheme`: `https` on a TLS listener.
    pub(crate) scheme: &'static str,
    /// `$host`: the Host header without port, lower-cased.
    pub(crate) host: String,
    /// `$uri`: the normalised path.
    pub(crate) uri: String,
    /// The index of the matched route in `routes:`.
    pub(crate) route: Option<usize>,
    /// Every upstream try, in order (nginx's `upstream_states`).
    pub(crate) tries: TryList,
    /// The status sent to the client (0 until a header went out).
    pub(crate) status: u16,
    /// Body bytes sent to the client.
    pub(crate) body_bytes_sent: u64,
    /// Response body bytes written to a temp file.
    pub(crate) spilled_bytes: u64,
    /// The response to the client was cut short (upstream or client failure
    /// after the header went out).
    pub(crate) truncated: bool,
    /// `$upstream_cache_status`: what the route's cache did for this
    /// request.
    pub(crate) cache_status: CacheStatus,
    /// `$limit_req_status`: what the route's `limit_req` did.
    pub(crate) limit_req_status: crate::limit::status::LimitStatus,
    /// `$limit_conn_status`: what the route's `limit_conn` did.
    pub(crate) limit_conn_status: crate::limit::status::LimitStatus,
    /// The error the request ended with, handed to `logging`.
    pub(crate) error: Option<std::sync::Arc<pingora_error::Error>>,
}

impl Request {
    /// A record for a request that just began.
    pub(crate) fn new(id: String, client_addr: Option<SocketAddr>) -> Request {
        let mut r = Request::without_id(client_addr);
        r.id = OnceLock::from(id);
        r
    }

    /// A record whose id is made when first asked for.
    pub(crate) fn without_id(client_addr: Option<SocketAddr>) -> Request {
        Request {
            id: OnceLock::new(),
            start: Instant::now(),
            client_addr,
            scheme: "http",
            host: String::new(),
            uri: String::new(),
            route: None,
            tries: TryList::new(),
            status: 0,
            body_bytes_sent: 0,
            spilled_bytes: 0,
            truncated: false,
            cache_status: CacheStatus::None,
            limit_req_status: crate::limit::status::LimitStatus::None,
            limit_conn_status: crate::limit::status::LimitStatus::None,
            error: None,
        }
    }

    /// `$request_id`: unique in this process, sent upstream as
    /// `X-Request-Id` when the route says so.
    pub fn id(&self) -> &str {
        self.id.get_or_init(new_id)
    }

    /// `$request_id` for templates: made when one uses it.
    pub(crate) fn lazy_id(&self) -> ferry_filters::variables::RequestId<'_> {
        ferry_filters::variables::RequestId {
            cell: &self.id,
            make: new_id,
        }
    }

    /// When the request header was read.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The client's address: the peer, or the one a trusted proxy announced
    /// (PROXY protocol, `real_ip`).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addr
    }

    /// `$scheme`: `https` on a TLS listener.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// `$host`: the Host header without port, lower-cased.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `$uri`: the normalised path.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Every upstream try so far, in order (nginx's `upstream_states`).
    pub fn tries(&self) -> &[Try] {
        &self.tries
    }

    /// The status sent to the client (0 until a header went out).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes sent to the client.
    pub fn body_bytes_sent(&self) -> u64 {
        self.body_bytes_sent
    }

    /// The response to the client was cut short (upstream or client
    /// failure after the header went out).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// `$upstream_cache_status`: what the route's cache did.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }

    /// `$limit_req_status`: what the route's `limit_req` did (`PASSED`,
    /// `DELAYED`, `REJECTED`, ...; `None` when no zone counted it).
    pub fn limit_req_status(&self) -> crate::limit::status::LimitStatus {
        self.limit_req_status
    }

    /// `$limit_conn_status`: what the route's `limit_conn` did.
    pub fn limit_conn_status(&self) -> crate::limit::status::LimitStatus {
        self.limit_conn_status
    }

    /// `$remote_addr`: the client's IP address as text ("" when unknown).
    pub fn client_ip_text(&self) -> String {
        self.client_ip().to_string()
    }

    /// [`Request::client_ip_text`] on the stack.
    pub(crate) fn client_ip(&self) -> IpText {
        IpText::of(self.client_addr.map(|a| a.ip()))
    }

    /// `$upstream_addr`: `10.0.0.1:80, 10.0.0.2:80`.
    pub fn upstream_addr(&self) -> String {
        self.tries
            .iter()
            .map(|t| t.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `$upstream_status`: `502, 200`.
    pub fn upstream_status(&self) -> String {
        self.tries
            .iter()
            .map(|t| t.logged_status().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A new `$request_id`: unique in this process (a per-process base, then
/// a sequence number).
pub(crate) fn new_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    });
    hex_id(base, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// What `format!("{base:016x}{seq:08x}")` makes, without the formatter
/// (this runs for every request).
fn hex_id(base: u64, seq: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digit = |v: u64, i: u32| DIGITS[((v >> (4 * i)) & 0xf) as usize];
    let seq_digits = ((64 - seq.leading_zeros()).div_ceil(4)).max(8);
    let mut id = Vec::with_capacity(16 + seq_digits as usize);
    for i in (0..16).rev() {
        id.push(digit(base, i));
    }
    for i in (0..seq_digits).rev() {
        id.push(digit(seq, i));
    }
    // Hex digits are ASCII: always text.
    String::from_utf8(id).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_id_is_the_formatted_id() {
        for (base, seq) in [
            (0, 0),
            (0x0123_4567_89ab_cdef, 42),
            (u64::MAX, 0xffff_ffff),
            (7, 1 << 40),
        ] {
            assert_eq!(super::hex_id(base, seq), format!("{base:016x}{seq:08x}"));
        }
    }

    #[test]
    fn an_id_is_made_once_when_first_asked_for() {
        let r = Request::without_id(None);
        assert!(r.id.get().is_none());
        let id = r.id().to_string();
        assert_eq!((id.len(), r.id()), (24, id.as_str()));
        assert_ne!(Request::without_id(None).id(), id, "another request's");
        assert_eq!(Request::new("given".into(), None).id(), "given");
    }

    use super::*;

    #[test]
    fn client_ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
        ] {
            let a: SocketAddr = format!("{ip}:80").parse().unwrap();
            let r = Request::new(String::new(), Some(a));
            assert_eq!(r.client_ip_text(), ip);
        }
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(
            Request::new(String::new(), Some(v6)).client_ip_text(),
            "::1"
        );
        assert_eq!(Request::new(String::new(), None).client_ip_text(), "");
    }
}

/// How the client connection ends.
pub(crate) enum End {
    /// The response is complete; the connection may serve the next request.
    Complete,
    /// The response was cut short: close the connection without ending the
    /// body, so the client sees it is incomplete.
    Truncated,
}
