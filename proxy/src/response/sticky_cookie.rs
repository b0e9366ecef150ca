//! The `Set-Cookie` value `sticky cookie` adds to a response, byte for
//! byte as nginx writes it, so that Ferry and nginx in one fleet read each
//! other's cookies.
//!
//! nginx counterpart: `ngx_http_upstream_sticky_cookie_insert`
//! (ngx_http_upstream_sticky_module.c) and `ngx_http_cookie_time`
//! (src/core/ngx_times.c).

use ferry_conf::{CookieExpires, StickyCookie};

/// nginx's `expires=max`, written as one string.
const MAX_EXPIRES: &str = "; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000";

/// `NAME=ROUTE`, then in nginx's order: expires and max-age, domain,
/// httponly, secure, samesite, path. `now` is seconds since the epoch.
pub(crate) fn value(c: &StickyCookie, route: &str, domain: &str, now: u64) -> String {
    let mut out = format!("{}={route}", c.name);
    match c.expires {
        CookieExpires::Session => {}
        CookieExpires::Max => out.push_str(MAX_EXPIRES),
        CookieExpires::Secs(n) => {
            out.push_str("; expires=");
            out.push_str(&cookie_time(now.saturating_add(n)));
            out.push_str(&format!("; max-age={n}"));
        }
    }
    if !domain.is_empty() {
        out.push_str("; domain=");
        out.push_str(domain);
    }
    if c.httponly {
        out.push_str("; httponly");
    }
    if c.secure {
        out.push_str("; secure");
    }
    if !c.samesite.is_empty() {
        out.push_str("; samesite=");
        out.push_str(&c.samesite);
    }
    if !c.path.is_empty() {
        out.push_str("; path=");
        out.push_str(&c.path);
    }
    out
}

/// nginx `ngx_http_cookie_time`: `Thu, 31-Dec-37 23:55:55 GMT`, the year
/// in two digits up to 2037 and in four after.
fn cookie_time(t: u64) -> String {
    const WEEK: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (t / 86_400, t % 86_400);
    let (year, month, day) = crate::log_time::civil(days);
    let year = if year > 2037 { year } else { year % 100 };
    format!(
        "{}, {day:02}-{}-{year:02} {:02}:{:02}:{:02} GMT",
        WEEK[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(expires: CookieExpires) -> StickyCookie {
        StickyCookie {
            name: "srv_id".into(),
            expires,
            ..StickyCookie::default()
        }
    }

    /// nginx's `expires=max` is its `NGX_HTTP_STICKY_COOKIE_MAX_EXPIRES`,
    /// 2145916555 seconds: the same date `ngx_http_cookie_time` prints.
    #[test]
    fn cookie_time_as_nginx_prints_it() {
        assert_eq!(cookie_time(2_145_916_555), "Thu, 31-Dec-37 23:55:55 GMT");
        // `date -u -d @1000000000 '+%a, %d-%b-%y %H:%M:%S GMT'`
        assert_eq!(cookie_time(1_000_000_000), "Sun, 09-Sep-01 01:46:40 GMT");
        // After 2037 nginx writes four digits.
        assert_eq!(cookie_time(4_102_444_800), "Fri, 01-Jan-2100 00:00:00 GMT");
    }

    /// The layout of `ngx_http_upstream_sticky_cookie_insert`: for
    /// `sticky cookie srv_id expires=1h domain=.example.com httponly secure
    /// samesite=strict path=/`, path goes last.
    #[test]
    fn every_attribute_in_nginx_order() {
        let c = StickyCookie {
            path: "/".into(),
            httponly: true,
            secure: true,
            samesite: "strict".into(),
            ..cookie(CookieExpires::Secs(3600))
        };
        assert_eq!(
            value(&c, "a1", ".example.com", 1_000_000_000),
            "srv_id=a1; expires=Sun, 09-Sep-01 02:46:40 GMT; max-age=3600; \
             domain=.example.com; httponly; secure; samesite=strict; path=/"
        );
        assert_eq!(
            value(&cookie(CookieExpires::Max), "b2", "", 5),
            "srv_id=b2; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000"
        );
        assert_eq!(
            value(&cookie(CookieExpires::Session), "c3", "", 5),
            "srv_id=c3"
        );
    }

    /// The `Set-Cookie` values nginx 1.31.5 (built from nginx/nginx at
    /// commit 3f6f7824d4e2, see bench/results/2026-12-06-nginx131-sticky.txt)
    /// sent for servers 127.0.0.1:18081 and :18082, in the response whose
    /// `Date` was `Sun, 06 Dec 2026 12:20:19 GMT` (1796559619), for
    /// `sticky cookie srv_id expires=1h domain=.example.com path=/ httponly
    /// secure samesite=strict`, `sticky cookie srv_id expires=max`, and
    /// `sticky cookie srv_id` with `route=a` on the first server.
    #[test]
    fn the_bytes_nginx_131_sent() {
        let now = 1_796_559_619;
        let route = |port| ferry_lb::derived_route(([127, 0, 0, 1], port).into());
        let attrs = StickyCookie {
            path: "/".into(),
            httponly: true,
            secure: true,
            samesite: "strict".into(),
            ..cookie(CookieExpires::Secs(3600))
        };
        assert_eq!(
            value(&attrs, &route(18081), ".example.com", now),
            "srv_id=7f3797d6a7e152c9ae2760fc816c6014; expires=Sun, 06-Dec-26 13:20:19 GMT; \
             max-age=3600; domain=.example.com; httponly; secure; samesite=strict; path=/"
        );
        assert_eq!(
            value(&attrs, &route(18082), ".example.com", now),
            "srv_id=4900f59d6c4a944fb53a6d384b54b275; expires=Sun, 06-Dec-26 13:20:19 GMT; \
             max-age=3600; domain=.example.com; httponly; secure; samesite=strict; path=/"
        );
        assert_eq!(
            value(&cookie(CookieExpires::Max), &route(18081), "", now),
            "srv_id=7f3797d6a7e152c9ae2760fc816c6014; expires=Thu, 31-Dec-37 23:55:55 GMT; \
             max-age=315360000"
        );
        assert_eq!(
            value(&cookie(CookieExpires::Session), "a", "", now),
            "srv_id=a"
        );
    }
}
