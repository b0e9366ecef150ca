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
    let path = raw.split(['?', '#']).next().unwrap_or("");
    // Most paths are normal already: absolute, with nothing to decode and
    // no empty, `.` or `..` segment.
    if path.starts_with('/')
        && !path.contains(['%'])
        && !path.contains("//")
        && !path.contains("/.")
    {
        return Some(path.to_string());
    }
    resolve(path)
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
    let h = host_header.map(String::from_utf8_lossy).unwrap_or_default();
    let h = h.trim();
    let no_port = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        h.rsplit_once(':').map_or(h, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                h
            }
        })
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
