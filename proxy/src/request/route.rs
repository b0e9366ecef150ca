//! Route matching: which route takes a request.
//!
//! As docs/config.md says: routes whose `host` equals the request's host
//! (case-insensitive, port ignored) are the candidates, else the routes
//! without `host`; among them the longest `path_prefix` the normalised path
//! starts with wins, ties to the first in the file. nginx counterpart:
//! `server_name` selection, then prefix `location` matching on the
//! normalised URI (`ngx_http_parse_complex_uri`).

/// The request path as nginx matches it: percent-decoded, `.` and `..`
/// resolved, `//` merged, no query. `None` for a path that climbs above the
/// root (nginx answers 400).
pub fn normalize_path(raw: &str) -> Option<String> {
    let end = raw.bytes().position(|b| b == b'?' || b == b'#');
    let path = raw.get(..end.unwrap_or(raw.len())).unwrap_or("");
    if is_normal(path.as_bytes()) {
        return Some(path.to_string());
    }
    resolve(path)
}

/// Most paths are normal already: absolute, with nothing to decode and no
/// empty, `.` or `..` segment (no `%`, `//` or `/.`). One pass.
fn is_normal(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
        && path.iter().enumerate().all(|(i, &b)| match b {
            b'%' => false,
            b'/' => !matches!(path.get(i + 1), Some(b'/' | b'.')),
            _ => true,
        })
}

/// Decode and resolve `.` and `..` segments: the whole of nginx's work.
fn resolve(path: &str) -> Option<String> {
    let decoded = percent_decode(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if s.is_empty() || (trailing && !out.is_empty()) {
        s.push('/');
    }
    Some(s)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host a request names: `Host` without its port, lower-cased.
pub fn request_host(host_header: Option<&[u8]>) -> String {
    let raw = host_header.unwrap_or_default();
    match ferry_wire::text(raw) {
        Ok(h) => host_of(h),
        Err(_) => host_of(&String::from_utf8_lossy(raw)),
    }
}

fn host_of(h: &str) -> String {
    let h = h.trim();
    let no_port = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        // The last `:`, found byte by byte (a host is a few bytes long).
        match h.bytes().rposition(|b| b == b':') {
            Some(at) if h.as_bytes()[at + 1..].iter().all(u8::is_ascii_digit) => &h[..at],
            _ => h,
        }
    };
    // `admin.local.` is `admin.local` (nginx drops one trailing dot).
    let no_dot = no_port.strip_suffix('.').unwrap_or(no_port);
    no_dot.to_ascii_lowercase()
}

/// nginx's `ngx_http_validate_host`: no path separator, no control byte or
/// space, no empty label (`a..b`), not empty; an IPv6 literal in brackets.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let mut literal = false;
    let mut prev_dot = false;
    for (i, &b) in host.iter().enumerate() {
        match b {
            b'.' if prev_dot => return false,
            b'[' if i == 0 => literal = true,
            b']' if literal => literal = false,
            b'/' | b'\\' => return false,
            0..=0x20 | 0x7f => return false,
            _ => {}
        }
        prev_dot = b == b'.';
    }
    !host.is_empty() && !literal && host != b"."
}

/// What a route matcher needs: the route's host and prefix, in file order.
pub struct Matcher {
    entries: Vec<(Option<String>, String)>,
}

impl Matcher {
    pub fn new<'a>(routes: impl Iterator<Item = (Option<&'a str>, &'a str)>) -> Matcher {
        Matcher {
            entries: routes
                .map(|(h, p)| (h.map(str::to_ascii_lowercase), p.to_string()))
                .collect(),
        }
    }

    /// The index of the route for `host` and a normalised `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        let host_routes = self.entries.iter().any(|(h, _)| h.as_deref() == Some(host));
        let mut best: Option<(usize, usize)> = None;
        for (i, (h, prefix)) in self.entries.iter().enumerate() {
            let candidate = if host_routes {
                h.as_deref() == Some(host)
            } else {
                h.is_none()
            };
            if candidate
                && path.starts_with(prefix.as_str())
                && best.is_none_or(|(_, l)| prefix.len() > l)
            {
                best = Some((i, prefix.len()));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_as_nginx_checks_them() {
        for ok in ["example.com", "a.b:8080", "[::1]:80", "x_y", "admin.local."] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["a/b", "a\\b", "a..b", "", "a b", "[::1", "."] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        assert_eq!(request_host(Some(b"Admin.Local.:80")), "admin.local");
        let cases: [(&[u8], &str); 7] = [
            (b" [::1]:80 ", "::1"),
            (b"a.b:x80", "a.b:x80"),
            (b"a.b:", "a.b"),
            (b"example.COM", "example.com"),
            (b"h:1:2", "h:1"),
            (b"\xffA:80", "\u{fffd}a"),
            (b"", ""),
        ];
        for (raw, host) in cases {
            assert_eq!(request_host(Some(raw)), host, "{raw:?}");
        }
        assert_eq!(request_host(None), "");
    }

    #[test]
    fn normalizes_like_nginx() {
        assert_eq!(normalize_path("/a/./b/../c?x=1").as_deref(), Some("/a/c"));
        assert_eq!(normalize_path("/a%2Fb//c/").as_deref(), Some("/a/b/c/"));
        assert_eq!(normalize_path("/api%20x").as_deref(), Some("/api x"));
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/a/..").as_deref(), Some("/"));
        assert_eq!(normalize_path("/../etc"), None);
        // Paths taken as they are agree with the full resolution.
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/api/v1/x.json",
            "/a-b_c~d/e",
            "/x:y@z/",
            "/a.b/c.",
        ] {
            assert_eq!(normalize_path(p), resolve(p), "{p}");
            assert_eq!(normalize_path(p).as_deref(), Some(p));
        }
        // The one-pass check says what the four searches said.
        let searched = |p: &str| {
            p.starts_with('/') && !p.contains('%') && !p.contains("//") && !p.contains("/.")
        };
        for p in [
            "",
            "a/b",
            "/",
            "//",
            "/.",
            "/.well-known/x",
            "/a/",
            "/a%",
            "/a//b",
            "/a./b",
            "/a/.",
            "/é/x",
        ] {
            assert_eq!(is_normal(p.as_bytes()), searched(p), "{p:?}");
        }
    }

    #[test]
    fn host_then_longest_prefix() {
        let m = Matcher::new(
            [
                (None, "/"),
                (None, "/api"),
                (Some("Example.com"), "/"),
                (Some("example.com"), "/static/"),
                (None, "/api"),
            ]
            .into_iter(),
        );
        assert_eq!(
            m.find("other", "/apix"),
            Some(1),
            "prefix match as nginx: /api matches /apix"
        );
        assert_eq!(m.find("other", "/x"), Some(0));
        assert_eq!(m.find("example.com", "/static/a"), Some(3));
        assert_eq!(m.find("example.com", "/api"), Some(2));
        let none = Matcher::new([(None, "/api/")].into_iter());
        assert_eq!(none.find("h", "/x"), None);
        assert_eq!(request_host(Some(b"Example.COM:8080")), "example.com");
        assert_eq!(request_host(Some(b"[::1]:80")), "::1");
    }
}
