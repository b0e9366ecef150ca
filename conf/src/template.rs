//! Variable templates such as `"$remote_addr"` or `"$host$request_uri"`:
//! parsed once at load time into literal and variable segments.
//!
//! nginx counterpart: complex values (`ngx_http_complex_value`). Evaluation
//! needs a request, so it lives in `ferry-filters`; this is only the data.

use serde::de::{Deserialize, Deserializer, Error};

/// A variable Ferry knows how to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    RemoteAddr,
    RemotePort,
    Host,
    RequestUri,
    Uri,
    Args,
    /// `$arg_NAME`: a query argument.
    Arg(String),
    /// `$http_NAME`: a request header, `_` standing for `-`, lower-cased.
    Http(String),
    Scheme,
    ProxyHost,
    ProxyAddXForwardedFor,
    RequestMethod,
    RequestId,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamCacheStatus,
    /// `$binary_remote_addr`: the client address as a key (its 4 or 16
    /// bytes where a limit counts; its text in other templates).
    BinaryRemoteAddr,
    /// `$limit_req_status`: `PASSED`, `DELAYED`, `REJECTED`, ... .
    LimitReqStatus,
    /// `$limit_conn_status`: `PASSED`, `REJECTED`, `REJECTED_DRY_RUN`.
    LimitConnStatus,
    /// `$cookie_NAME`: a cookie of the request (the name case-insensitive, as nginx).
    Cookie(String),
    /// `$upstream_http_NAME`: a header of the chosen server's response,
    /// `_` standing for `-`, lower-cased.
    UpstreamHttp(String),
    /// `$upstream_cookie_NAME`: a cookie the chosen server's response sets.
    UpstreamCookie(String),
}

impl Variable {
    fn from_name(name: &str) -> Option<Variable> {
        Some(match name {
            "remote_addr" => Variable::RemoteAddr,
            "remote_port" => Variable::RemotePort,
            "host" => Variable::Host,
            "request_uri" => Variable::RequestUri,
            "uri" => Variable::Uri,
            "args" | "query_string" => Variable::Args,
            "scheme" => Variable::Scheme,
            "proxy_host" => Variable::ProxyHost,
            "proxy_add_x_forwarded_for" => Variable::ProxyAddXForwardedFor,
            "request_method" => Variable::RequestMethod,
            "request_id" => Variable::RequestId,
            "upstream_addr" => Variable::UpstreamAddr,
            "upstream_status" => Variable::UpstreamStatus,
            "upstream_cache_status" => Variable::UpstreamCacheStatus,
            "binary_remote_addr" => Variable::BinaryRemoteAddr,
            "limit_req_status" => Variable::LimitReqStatus,
            "limit_conn_status" => Variable::LimitConnStatus,
            _ => {
                let suffix = |p: &str| name.strip_prefix(p).filter(|s| !s.is_empty());
                if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Variable::Arg(arg.to_string())
                } else if let Some(c) = suffix("cookie_") {
                    Variable::Cookie(c.to_string())
                } else if let Some(h) = suffix("upstream_http_") {
                    Variable::UpstreamHttp(h.replace('_', "-").to_ascii_lowercase())
                } else if let Some(c) = suffix("upstream_cookie_") {
                    Variable::UpstreamCookie(c.to_string())
                } else if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    Variable::Http(h.replace('_', "-").to_ascii_lowercase())
                } else {
                    return None;
                }
            }
        })
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Var(Variable),
}

/// A parsed template; the source text is kept for messages and docs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub source: String,
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parse `$name`, `${name}` and `$$` (a literal `$`).
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '$' {
                lit.push(c);
                continue;
            }
            let braced = chars.peek().map(|&(_, c)| c) == Some('{');
            if chars.peek().map(|&(_, c)| c) == Some('$') {
                chars.next();
                lit.push('$');
                continue;
            }
            if braced {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if braced && chars.next().map(|(_, c)| c) != Some('}') {
                return Err(format!("unclosed `${{` in template `{source}`"));
            }
            if name.is_empty() {
                return Err(format!(
                    "`$` without a variable name in `{source}` (write `$$` for a literal `$`)"
                ));
            }
            let var = Variable::from_name(&name)
                .ok_or_else(|| format!("unknown variable `${name}` in `{source}`"))?;
            if !lit.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut lit)));
            }
            segments.push(Segment::Var(var));
        }
        if !lit.is_empty() {
            segments.push(Segment::Literal(lit));
        }
        Ok(Template {
            source: source.to_string(),
            segments,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether any of the template's variables is one `which` picks.
    pub fn uses(&self, which: impl Fn(&Variable) -> bool) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Var(v) if which(v)))
    }

    /// The template as one literal string, when it has no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [] => Some(""),
            [Segment::Literal(s)] => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variables_and_literals() {
        let t = Template::parse("$host:${remote_port}/x$$y$arg_a$http_x_real_ip").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Var(Variable::Host),
                Segment::Literal(":".into()),
                Segment::Var(Variable::RemotePort),
                Segment::Literal("/x$y".into()),
                Segment::Var(Variable::Arg("a".into())),
                Segment::Var(Variable::Http("x-real-ip".into())),
            ]
        );
    }

    #[test]
    fn parses_cookie_and_upstream_variables() {
        let t = Template::parse("$cookie_sid$upstream_http_x_session$upstream_cookie_SID").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Var(Variable::Cookie("sid".into())),
                Segment::Var(Variable::UpstreamHttp("x-session".into())),
                Segment::Var(Variable::UpstreamCookie("SID".into())),
            ]
        );
        assert!(Template::parse("$cookie_").is_err());
    }

    #[test]
    fn rejects_unknown_and_dangling() {
        assert!(Template::parse("$nope")
            .unwrap_err()
            .contains("unknown variable `$nope`"));
        assert!(Template::parse("a$").is_err());
        assert!(Template::parse("${host").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().as_literal(),
            Some("plain")
        );
    }
}
