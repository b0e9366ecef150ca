//! Whether a response may be stored, and for how long: nginx's decision.
//!
//! In order: `Set-Cookie` or `Vary: *` and it is never stored;
//! `X-Accel-Expires` (seconds, or `@` and a Unix time; `0` = do not store)
//! decides over everything below it; then `Cache-Control` (any `private`,
//! `no-cache`, `no-store`, with a field list or without = do not store;
//! `s-maxage`, then `max-age`, `0` or not digits = do not store), then `Expires` (in the past = do not store), then
//! the route's `valid` for the status (or `any`). Nothing says how long:
//! not stored. Each header can be left out of this with `ignore_headers`.
//! The `Cache-Control` parsing is pingora-cache's.
//!
//! nginx counterpart: `ngx_http_upstream_process_accel_expires`,
//! `_process_cache_control`, `_process_expires`, `_process_set_cookie`,
//! `_process_vary`, then `ngx_http_file_cache_valid` in
//! `ngx_http_upstream_send_response`.

use ferry_conf::RouteCache;
use pingora_cache::cache_control::{CacheControl, DirectiveKey};
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// What to do with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store it, fresh for this long from now.
    Store(Duration),
    /// Do not store it, and why.
    NoStore(&'static str),
}

fn ignored(conf: &RouteCache, name: &str) -> bool {
    conf.ignore_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// nginx's decision for a response of `status` with `header`, at `now`.
pub fn decide(
    conf: &RouteCache,
    status: u16,
    header: &ResponseHeader,
    now: SystemTime,
) -> Decision {
    let h = &header.headers;
    if !ignored(conf, "Set-Cookie") && h.contains_key(http::header::SET_COOKIE) {
        return Decision::NoStore("Set-Cookie");
    }
    if !ignored(conf, "Vary")
        && h.get_all(http::header::VARY).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|n| n.trim_ascii() == b"*")
        })
    {
        return Decision::NoStore("Vary: *");
    }
    if !ignored(conf, "X-Accel-Expires") {
        if let Some(v) = h.get("x-accel-expires").and_then(|v| v.to_str().ok()) {
            match accel_expires(v.trim(), now) {
                Some(Some(d)) => return Decision::Store(d),
                Some(None) => return Decision::NoStore("X-Accel-Expires: 0"),
                None => {}
            }
        }
    }
    if !ignored(conf, "Cache-Control") {
        if let Some(cc) = CacheControl::from_resp_headers(header) {
            match cache_control_age(&cc) {
                Some(Ok(d)) => return Decision::Store(d),
                Some(Err(why)) => return Decision::NoStore(why),
                None => {}
            }
        }
    }
    if !ignored(conf, "Expires") {
        if let Some(v) = h.get(http::header::EXPIRES) {
            let until = v
                .to_str()
                .ok()
                .and_then(|v| httpdate::parse_http_date(v).ok());
            return match until.and_then(|t| t.duration_since(now).ok()) {
                Some(d) if !d.is_zero() => Decision::Store(d),
                _ => Decision::NoStore("Expires in the past"),
            };
        }
    }
    match valid_for(conf, status) {
        Some(d) if !d.is_zero() => Decision::Store(d),
        _ => Decision::NoStore("no valid time for this status"),
    }
}

/// What `Cache-Control` says, as nginx reads it: any `private`,
/// `no-cache` or `no-store` (with a field list or without) is not stored;
/// `s-maxage`, else `max-age`, must be digits only and not 0 (anything
/// else, `-1`, `60.5`, `0x3c`, `"60"`, is no freshness lifetime: not
/// stored); `None` when it says nothing of the lifetime.
fn cache_control_age(cc: &CacheControl) -> Option<Result<Duration, &'static str>> {
    if cc.has_key("private") || cc.has_key("no-cache") || cc.has_key("no-store") {
        return Some(Err("Cache-Control: private, no-cache or no-store"));
    }
    let value = cc
        .directives
        .get(&DirectiveKey::SMaxAge)
        .or_else(|| cc.directives.get(&DirectiveKey::MaxAge))?;
    let digits = value.as_ref().map(|v| v.0.as_slice()).unwrap_or_default();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Some(Err("Cache-Control: max-age is not a number of seconds"));
    }
    let secs = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::from(u32::MAX));
    match secs {
        0 => Some(Err("Cache-Control: max-age=0")),
        s => Some(Ok(Duration::from_secs(s))),
    }
}

/// `valid:`'s time for `status`: its own entry, else `any`.
pub fn valid_for(conf: &RouteCache, status: u16) -> Option<Duration> {
    let code = status.to_string();
    conf.valid
        .get(&code)
        .or_else(|| conf.valid.get("any"))
        .map(|d| d.get())
}

/// `X-Accel-Expires`: `Some(Some(d))` fresh for `d`, `Some(None)` do not
/// store, `None` not a value nginx reads (the header is then ignored).
fn accel_expires(v: &str, now: SystemTime) -> Option<Option<Duration>> {
    if let Some(at) = v.strip_prefix('@') {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at.parse().ok()?);
        return Some(at.duration_since(now).ok().filter(|d| !d.is_zero()));
    }
    let secs: u64 = v.parse().ok()?;
    Some((secs > 0).then(|| Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_conf::Duration as ConfDuration;

    fn conf(valid: &[(&str, u64)], ignore: &[&str]) -> RouteCache {
        let mut c = RouteCache::default();
        for (k, s) in valid {
            c.valid.0.push((k.to_string(), ConfDuration::secs(*s)));
        }
        c.ignore_headers = ignore.iter().map(|s| s.to_string()).collect();
        c
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn d(status: u16, headers: &[(&str, &str)], c: &RouteCache) -> Decision {
        decide(c, status, &resp(status, headers), SystemTime::now())
    }

    #[test]
    fn nginx_order_of_freshness() {
        let c = conf(&[("200", 600)], &[]);
        assert_eq!(d(200, &[], &c), Decision::Store(Duration::from_secs(600)));
        assert!(matches!(d(404, &[], &c), Decision::NoStore(_)));
        let any = conf(&[("200", 600), ("any", 60)], &[]);
        assert_eq!(d(404, &[], &any), Decision::Store(Duration::from_secs(60)));
        assert_eq!(
            d(200, &[("Cache-Control", "max-age=30")], &c),
            Decision::Store(Duration::from_secs(30))
        );
        assert_eq!(
            d(200, &[("Cache-Control", "max-age=30, s-maxage=40")], &c),
            Decision::Store(Duration::from_secs(40))
        );
        assert_eq!(
            d(
                200,
                &[("X-Accel-Expires", "60"), ("Cache-Control", "no-store")],
                &c
            ),
            Decision::Store(Duration::from_secs(60))
        );
        assert!(matches!(
            d(200, &[("X-Accel-Expires", "0")], &c),
            Decision::NoStore(_)
        ));
        assert!(matches!(
            d(200, &[("Cache-Control", "private")], &c),
            Decision::NoStore(_)
        ));
        assert!(matches!(
            d(200, &[("Cache-Control", "max-age=0")], &c),
            Decision::NoStore(_)
        ));
        assert!(matches!(
            d(200, &[("Set-Cookie", "a=b")], &c),
            Decision::NoStore(_)
        ));
        assert!(matches!(
            d(200, &[("Vary", "Accept, *")], &c),
            Decision::NoStore(_)
        ));
        assert!(matches!(
            d(200, &[("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], &c),
            Decision::NoStore(_)
        ));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        assert!(
            matches!(d(200, &[("Expires", &later)], &c), Decision::Store(t) if t.as_secs() > 100)
        );
    }

    #[test]
    fn field_lists_and_bad_ages_are_not_stored() {
        let c = conf(&[("200", 600)], &[]);
        for cc in [
            "private=\"X-Secret\"",
            "no-cache=\"X-Secret\"",
            "public, private=X-Secret",
            "max-age=-1",
            "max-age=60.5",
            "max-age=0x3c",
            "max-age=\"60\"",
            "max-age=+60",
            "max-age=",
            "s-maxage=abc, max-age=60",
        ] {
            assert!(
                matches!(d(200, &[("Cache-Control", cc)], &c), Decision::NoStore(_)),
                "{cc} was stored"
            );
        }
        assert_eq!(
            d(200, &[("Cache-Control", "public, max-age=99999999999")], &c),
            Decision::Store(Duration::from_secs(99_999_999_999))
        );
    }

    #[test]
    fn ignored_headers_do_not_count() {
        let c = conf(
            &[("200", 600)],
            &["Set-Cookie", "cache-control", "X-Accel-Expires"],
        );
        assert_eq!(
            d(
                200,
                &[
                    ("Set-Cookie", "a=b"),
                    ("Cache-Control", "no-store"),
                    ("X-Accel-Expires", "0")
                ],
                &c
            ),
            Decision::Store(Duration::from_secs(600))
        );
    }
}
