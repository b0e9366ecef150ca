//! A group's `sticky:` block: which server a request is bound to, by a
//! cookie Ferry sets, by a route the request names, or by a session the
//! server's response started (rule 25 of docs/config.md).
//!
//! nginx counterpart: the `sticky` directive of
//! `ngx_http_upstream_sticky_module` (1.29.6), and the `route=` / `drain`
//! parameters of `server`.

use crate::template::Template;
use crate::units::{parse_duration, Duration};
use crate::validate::Problem;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// nginx's longest `route=` (`NGX_HTTP_UPSTREAM_SID_LEN`, an MD5 in hex).
pub const ROUTE_MAX: usize = 32;

/// `sticky:`: exactly one of `cookie`, `route`, `learn`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sticky {
    pub cookie: Option<StickyCookie>,
    /// Templates; the first non-empty value names a server's route.
    pub route: Option<Vec<Template>>,
    pub learn: Option<StickyLearn>,
}

/// The one way a group binds requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMode<'a> {
    Cookie(&'a StickyCookie),
    Route(&'a [Template]),
    Learn(&'a StickyLearn),
}

impl Sticky {
    /// The way this block binds; `None` when it names none or several
    /// (an error `-t` reports).
    pub fn mode(&self) -> Option<StickyMode<'_>> {
        match (&self.cookie, &self.route, &self.learn) {
            (Some(c), None, None) => Some(StickyMode::Cookie(c)),
            (None, Some(r), None) => Some(StickyMode::Route(r)),
            (None, None, Some(l)) => Some(StickyMode::Learn(l)),
            _ => None,
        }
    }
}

/// `sticky: { cookie: ... }` (nginx `sticky cookie NAME ...`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyCookie {
    pub name: String,
    pub expires: CookieExpires,
    /// A template, as nginx's `domain=` takes variables.
    pub domain: Template,
    pub path: String,
    pub httponly: bool,
    pub secure: bool,
    /// `strict`, `lax`, `none`, or "" for none.
    pub samesite: String,
}

/// `expires`: none (a session cookie), nginx's `max`, or a time from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieExpires {
    #[default]
    Session,
    /// nginx's far future: `Thu, 31-Dec-37 23:55:55 GMT`, `max-age=315360000`.
    Max,
    /// Whole seconds from the pick of the server (nginx's `get_peer`).
    Secs(u64),
}

impl<'de> Deserialize<'de> for CookieExpires {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CookieExpires;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"\", max, or a duration such as 1h or 3600")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CookieExpires, E> {
                Ok(CookieExpires::Secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CookieExpires, E> {
                u64::try_from(v)
                    .map(CookieExpires::Secs)
                    .map_err(|_| E::custom("expires must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CookieExpires, E> {
                match v {
                    "" => Ok(CookieExpires::Session),
                    "max" => Ok(CookieExpires::Max),
                    _ => parse_duration(v)
                        .map(|d| CookieExpires::Secs(d.get().as_secs()))
                        .map_err(E::custom),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `sticky: { learn: ... }` (nginx `sticky learn create= lookup= ...`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyLearn {
    /// The session a response starts, e.g. `$upstream_cookie_sid`.
    pub create: Template,
    /// The session a request names, e.g. `$cookie_sid`.
    pub lookup: Template,
    /// A session unused this long is forgotten (nginx default 10m).
    pub timeout: Duration,
    /// Learn from the response header, before the body.
    pub header: bool,
    /// Sessions remembered at most; the least recently used goes first.
    pub max_sessions: usize,
}

impl Default for StickyLearn {
    fn default() -> Self {
        StickyLearn {
            create: Template::default(),
            lookup: Template::default(),
            timeout: Duration::secs(600),
            header: false,
            max_sessions: 100_000,
        }
    }
}

/// The problems of a group's `sticky:` at `base` (`upstreams.NAME.sticky`).
pub(crate) fn check(s: &Sticky, base: &str, out: &mut Vec<Problem>) {
    let named = [s.cookie.is_some(), s.route.is_some(), s.learn.is_some()];
    if named.iter().filter(|&&n| n).count() != 1 {
        out.push(Problem::at_key(
            base,
            "sticky needs exactly one of cookie, route, learn",
        ));
    }
    if let Some(c) = &s.cookie {
        check_cookie(c, &format!("{base}.cookie"), out);
    }
    if let Some(r) = &s.route {
        if r.is_empty() {
            out.push(Problem::at_value(
                format!("{base}.route"),
                "route needs at least one template, such as \"$cookie_route\"",
            ));
        }
        for (i, t) in r.iter().enumerate() {
            if t.as_literal().is_some() {
                out.push(Problem::at_value(
                    format!("{base}.route.{i}"),
                    format!(
                        "`{}` names no variable (nginx: each is a variable)",
                        t.source
                    ),
                ));
            }
        }
    }
    if let Some(l) = &s.learn {
        check_learn(l, &format!("{base}.learn"), out);
    }
}

fn check_cookie(c: &StickyCookie, base: &str, out: &mut Vec<Problem>) {
    if c.name.is_empty() {
        out.push(Problem::at_key(base, "cookie needs a name"));
    } else if !c.name.bytes().all(is_token_byte) {
        out.push(Problem::at_value(
            format!("{base}.name"),
            format!(
                "`{}` is not a cookie name (letters, digits, !#$%&'*+-.^_`|~)",
                c.name
            ),
        ));
    }
    let samesite = c.samesite.to_ascii_lowercase();
    if !["", "strict", "lax", "none"].contains(&samesite.as_str()) {
        out.push(Problem::at_value(
            format!("{base}.samesite"),
            format!("samesite must be strict, lax or none, not `{}`", c.samesite),
        ));
    }
    if c.path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        out.push(Problem::at_value(
            format!("{base}.path"),
            "path must not hold `;` or control characters",
        ));
    }
}

fn check_learn(l: &StickyLearn, base: &str, out: &mut Vec<Problem>) {
    for (key, t) in [("create", &l.create), ("lookup", &l.lookup)] {
        if t.is_empty() {
            out.push(Problem::at_key(
                base,
                format!("learn needs {key} (a template such as \"$upstream_cookie_sid\")"),
            ));
        } else if t.as_literal().is_some() {
            out.push(Problem::at_value(
                format!("{base}.{key}"),
                format!("{key} must name a variable, such as $cookie_sid"),
            ));
        }
    }
    if l.timeout.is_zero() {
        out.push(Problem::at_value(
            format!("{base}.timeout"),
            "timeout must be more than 0",
        ));
    }
    if l.max_sessions == 0 {
        out.push(Problem::at_value(
            format!("{base}.max_sessions"),
            "max_sessions must be more than 0",
        ));
    }
}

/// The problems of a server's `route:` (nginx: not longer than 32 bytes;
/// Ferry: a cookie's value, so no separators or spaces either).
pub(crate) fn check_route(route: &str, path: &str, out: &mut Vec<Problem>) {
    if route.len() > ROUTE_MAX {
        out.push(Problem::at_value(
            path,
            format!("route is longer than {ROUTE_MAX} bytes"),
        ));
    } else if !route
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        out.push(Problem::at_value(
            path,
            "route must be printable, without spaces, `;` or `,` (it is a cookie's value)",
        ));
    }
}

/// RFC 9110's `tchar`: what a cookie name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
