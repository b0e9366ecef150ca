//! Evaluating variable templates against one request (`$remote_addr`,
//! `$host`, `$arg_a`, `$http_x_real_ip`, ...).
//!
//! nginx counterpart: `ngx_http_variables.c` and `ngx_http_complex_value`.

use crate::fields::Fields;
use ferry_conf::{Segment, Template, Variable};
use http::header::{GetAll, HeaderValue};
use http::HeaderMap;
use std::sync::OnceLock;

/// Several values of one header, joined by `sep`.
fn join(values: GetAll<'_, HeaderValue>, sep: &str, out: &mut String) {
    join_bytes(values.iter().map(|v| v.as_bytes()), sep, out);
}

fn join_bytes<'v>(values: impl Iterator<Item = &'v [u8]>, sep: &str, out: &mut String) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&String::from_utf8_lossy(v));
    }
}

/// `$request_id`, made when a template first uses it (nginx makes its
/// variable so).
#[derive(Debug, Clone, Copy)]
pub struct RequestId<'a> {
    pub cell: &'a OnceLock<String>,
    pub make: fn() -> String,
}

impl RequestId<'_> {
    pub fn get(&self) -> &str {
        self.cell.get_or_init(self.make)
    }
}

/// What a template can see of a request. Borrowed; built once per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestVars<'a> {
    pub method: &'a str,
    /// The request URI as received (`$request_uri`).
    pub request_uri: &'a str,
    /// The normalised path (`$uri`): decoded, dot segments resolved.
    pub uri: &'a str,
    /// `$host`: Host without port, lower-cased.
    pub host: &'a str,
    pub headers: Fields<'a>,
    pub remote_addr: &'a str,
    pub remote_port: u16,
    pub scheme: &'a str,
    /// The group name (`$proxy_host`).
    pub proxy_host: &'a str,
    pub request_id: RequestId<'a>,
    pub upstream_addr: &'a str,
    pub upstream_status: &'a str,
    /// `$upstream_cache_status`: `HIT`, `MISS`, ... ("" without a cache).
    pub upstream_cache_status: &'a str,
    /// `$limit_req_status`: `PASSED`, `DELAYED`, ... ("" when no zone counted).
    pub limit_req_status: &'a str,
    /// `$limit_conn_status`: `PASSED`, `REJECTED`, ... ("" when no zone counted).
    pub limit_conn_status: &'a str,
    /// The chosen server's response header, once there is one
    /// (`$upstream_http_NAME`, `$upstream_cookie_NAME`).
    pub upstream_headers: Option<&'a HeaderMap>,
}

impl RequestVars<'_> {
    /// `$args`: the query string without `?`.
    pub fn args(&self) -> &str {
        self.request_uri.split_once('?').map_or("", |(_, q)| q)
    }

    /// `$arg_NAME`: the first query argument of that name, raw as sent.
    pub fn arg(&self, name: &str) -> &str {
        self.args()
            .split('&')
            .find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                k.eq_ignore_ascii_case(name).then_some(v)
            })
            .unwrap_or("")
    }

    /// `$http_NAME`: the request header (several joined by `, `).
    pub fn header(&self, name: &str, out: &mut String) {
        let sep = if name == "cookie" { "; " } else { ", " };
        join_bytes(self.headers.get_all(name).into_iter(), sep, out);
    }

    /// `$proxy_add_x_forwarded_for`: the client's X-Forwarded-For plus `$remote_addr`.
    pub fn proxy_add_x_forwarded_for(&self, out: &mut String) {
        let before = out.len();
        join_bytes(self.headers.values("x-forwarded-for"), ", ", out);
        if out.len() > before {
            out.push_str(", ");
        }
        out.push_str(self.remote_addr);
    }

    /// `$cookie_NAME`: the value of the request's first cookie of that
    /// name (compared without case, as nginx's `ngx_http_parse_cookie_lines`).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all("cookie")
            .into_iter()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim_start())
            })
    }

    /// `$upstream_cookie_NAME`: the value the response's first `Set-Cookie`
    /// of that name sets (nginx `ngx_http_parse_set_cookie_lines`).
    pub fn upstream_cookie(&self, name: &str) -> Option<&str> {
        self.upstream_headers?
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let (k, rest) = v.split_once('=')?;
                let value = rest.split(';').next().unwrap_or("");
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim_start())
            })
    }

    fn var(&self, v: &Variable, out: &mut String) {
        match v {
            Variable::RemoteAddr => out.push_str(self.remote_addr),
            Variable::RemotePort => out.push_str(&self.remote_port.to_string()),
            Variable::Host => out.push_str(self.host),
            Variable::RequestUri => out.push_str(self.request_uri),
            Variable::Uri => out.push_str(self.uri),
            Variable::Args => out.push_str(self.args()),
            Variable::Arg(name) => out.push_str(self.arg(name)),
            Variable::Http(name) => self.header(name, out),
            Variable::Scheme => out.push_str(self.scheme),
            Variable::ProxyHost => out.push_str(self.proxy_host),
            Variable::ProxyAddXForwardedFor => self.proxy_add_x_forwarded_for(out),
            Variable::RequestMethod => out.push_str(self.method),
            Variable::RequestId => out.push_str(self.request_id.get()),
            Variable::UpstreamAddr => out.push_str(self.upstream_addr),
            Variable::UpstreamStatus => out.push_str(self.upstream_status),
            Variable::UpstreamCacheStatus => out.push_str(self.upstream_cache_status),
            // Text in a string; a limit's key takes the address's bytes.
            Variable::BinaryRemoteAddr => out.push_str(self.remote_addr),
            Variable::LimitReqStatus => out.push_str(self.limit_req_status),
            Variable::LimitConnStatus => out.push_str(self.limit_conn_status),
            Variable::Cookie(name) => out.push_str(self.cookie(name).unwrap_or("")),
            Variable::UpstreamHttp(name) => {
                if let Some(h) = self.upstream_headers {
                    join(h.get_all(name.as_str()), ", ", out);
                }
            }
            Variable::UpstreamCookie(name) => {
                out.push_str(self.upstream_cookie(name).unwrap_or(""))
            }
        }
    }

    /// Evaluate a template.
    pub fn render(&self, t: &Template) -> String {
        let mut out = String::new();
        self.render_into(t, &mut out);
        out
    }

    /// Evaluate a template at the end of `out`.
    pub fn render_into(&self, t: &Template, out: &mut String) {
        if let Some(lit) = t.as_literal() {
            return out.push_str(lit);
        }
        for s in &t.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(v) => self.var(v, out),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `$request_id` for tests: made by the first template that uses it.
    pub(crate) fn test_id() -> RequestId<'static> {
        static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        RequestId {
            cell: &ID,
            make: || "id".to_string(),
        }
    }

    fn header(lines: &[(&str, &str)]) -> pingora_http::RequestHeader {
        let mut h = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in lines {
            h.append_header(name.to_string(), *value).unwrap();
        }
        h
    }

    #[test]
    fn renders_request_variables() {
        let h = header(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "9.9.9.9")]);
        let v = RequestVars {
            method: "GET",
            request_uri: "/a%20b?x=1&A=two",
            uri: "/a b",
            host: "example.com",
            headers: Fields::Header(&h),
            remote_addr: "10.0.0.1",
            remote_port: 5555,
            scheme: "http",
            proxy_host: "app",
            request_id: test_id(),
            upstream_addr: "",
            upstream_status: "",
            upstream_cache_status: "",
            limit_req_status: "",
            limit_conn_status: "",
            upstream_headers: None,
        };
        let t = Template::parse(
            "$request_method $uri $args $arg_a $http_x_real_ip $remote_addr:$remote_port",
        )
        .unwrap();
        assert_eq!(v.render(&t), "GET /a b x=1&A=two two 9.9.9.9 10.0.0.1:5555");
        let xff = Template::parse("$proxy_add_x_forwarded_for").unwrap();
        assert_eq!(v.render(&xff), "1.1.1.1, 10.0.0.1");
    }

    #[test]
    fn renders_request_cookies_and_the_upstream_response() {
        let h = header(&[("cookie", "a=1; SID = s-7;b=2")]);
        let mut up = HeaderMap::new();
        up.append("set-cookie", "other=x; path=/".parse().unwrap());
        up.append("set-cookie", "sid=new-9; Path=/; HttpOnly".parse().unwrap());
        up.append("x-session", "one".parse().unwrap());
        up.append("x-session", "two".parse().unwrap());
        let v = RequestVars {
            method: "GET",
            request_uri: "/",
            uri: "/",
            host: "h",
            headers: Fields::Header(&h),
            remote_addr: "10.0.0.1",
            remote_port: 1,
            scheme: "http",
            proxy_host: "app",
            request_id: test_id(),
            upstream_addr: "",
            upstream_status: "",
            upstream_cache_status: "",
            limit_req_status: "",
            limit_conn_status: "",
            upstream_headers: Some(&up),
        };
        let t = Template::parse(
            "$cookie_sid|$cookie_b|$cookie_none|$upstream_cookie_sid|$upstream_http_x_session",
        )
        .unwrap();
        assert_eq!(v.render(&t), "s-7|2||new-9|one, two");
        let before = RequestVars {
            upstream_headers: None,
            ..v
        };
        assert_eq!(before.render(&t), "s-7|2|||");
    }
}
