//! A route's `proxy:` block: timeouts, retries, buffering, headers. Every key
//! is optional and defaults to nginx's value (1.29.7+ line).
//!
//! nginx counterpart: the `proxy_*` directives of `ngx_http_proxy_module` and
//! the core `send_timeout`, `client_max_body_size`, `client_body_buffer_size`.

use crate::next_upstream::NextUpstream;
use crate::ordered_map::OrderedMap;
use crate::template::Template;
use crate::units::{Duration, Size};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConf {
    pub connect_timeout: Duration,
    /// Gap between two writes of the request to the upstream.
    pub send_timeout: Duration,
    /// Gap between two reads from the upstream.
    pub read_timeout: Duration,
    /// nginx `send_timeout`: gap between two writes to the client.
    pub client_send_timeout: Duration,
    /// nginx `client_body_timeout`: gap between two reads of the client's
    /// body; past it the client gets 408.
    pub client_body_timeout: Duration,
    pub next_upstream: NextUpstream,
    /// 0 = no limit; counts the first try.
    pub next_upstream_tries: u32,
    /// 0 = no limit; budget from the first try.
    pub next_upstream_timeout: Duration,
    pub buffering: bool,
    /// The header buffer; the only buffer when buffering is off.
    pub buffer_size: Size,
    pub buffers: Buffers,
    pub busy_buffers_size: Size,
    /// 0 = never spill; stall the upstream instead.
    pub max_temp_file_size: Size,
    pub temp_file_write_size: Size,
    pub temp_path: String,
    pub request_buffering: bool,
    pub client_body_buffer_size: Size,
    /// 413 past it; 0 = no limit.
    pub client_max_body_size: Size,
    pub ignore_client_abort: bool,
    pub intercept_errors: bool,
    pub error_pages: BTreeMap<u16, ErrorPage>,
    /// Bytes per second read from the upstream; 0 = no limit.
    pub limit_rate: Size,
    pub http_version: HttpVersion,
    /// `""` removes the header.
    pub set_headers: OrderedMap<Template>,
    pub hide_headers: Vec<String>,
    pub pass_headers: Vec<String>,
    pub redirect: Redirect,
    /// Response headers to the client, templates (nginx `add_header ...
    /// always`).
    pub add_headers: OrderedMap<Template>,
}

impl Default for ProxyConf {
    fn default() -> Self {
        ProxyConf {
            connect_timeout: Duration::secs(60),
            send_timeout: Duration::secs(60),
            read_timeout: Duration::secs(60),
            client_send_timeout: Duration::secs(60),
            client_body_timeout: Duration::secs(60),
            next_upstream: NextUpstream::default(),
            next_upstream_tries: 0,
            next_upstream_timeout: Duration::secs(0),
            buffering: true,
            buffer_size: Size(4096),
            buffers: Buffers::default(),
            busy_buffers_size: Size(8192),
            max_temp_file_size: Size(1024 << 20),
            temp_file_write_size: Size(8192),
            temp_path: "/tmp/ferry".to_string(),
            request_buffering: true,
            client_body_buffer_size: Size(16 << 10),
            client_max_body_size: Size(1 << 20),
            ignore_client_abort: false,
            intercept_errors: false,
            error_pages: BTreeMap::new(),
            limit_rate: Size(0),
            http_version: HttpVersion::Http11,
            set_headers: OrderedMap::default(),
            hide_headers: Vec::new(),
            pass_headers: Vec::new(),
            redirect: Redirect::Default,
            add_headers: OrderedMap::default(),
        }
    }
}

impl ProxyConf {
    /// max(`buffer_size`, `buffers.size`): the unit nginx's buffer rules use.
    pub fn largest_buffer(&self) -> u64 {
        self.buffer_size.0.max(self.buffers.size.0)
    }
}

/// nginx `proxy_buffers N size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Buffers {
    pub count: u32,
    pub size: Size,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            count: 8,
            size: Size(4096),
        }
    }
}

/// One `error_pages` entry.
#[derive(Debug, Clone, PartialEq, Eq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPage {
    /// The status sent; defaults to the key.
    pub status: Option<u16>,
    #[serde(default)]
    pub body: String,
    #[serde(default = "text_html")]
    pub content_type: String,
}

fn text_html() -> String {
    "text/html".to_string()
}

/// `proxy_http_version`: 1.0, 1.1 or 2 (nginx 1.29.4: HTTP/2 to the
/// servers, prior knowledge on plain TCP, ALPN `h2` over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl<'de> Deserialize<'de> for HttpVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HttpVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.0\", \"1.1\" or \"2\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HttpVersion, E> {
                self.visit_str(&format!("{v:.1}"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HttpVersion, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HttpVersion, E> {
                match v.trim() {
                    "1.0" => Ok(HttpVersion::Http10),
                    "1.1" => Ok(HttpVersion::Http11),
                    "2" | "2.0" => Ok(HttpVersion::Http2),
                    other => Err(E::custom(format!(
                        "unsupported http_version `{other}`: expected \"1.0\", \"1.1\" or \"2\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `proxy_redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Rewrite `http://GROUP/` to the route's prefix on the client's scheme and host.
    Default,
    Off,
    Rules(Vec<RedirectRule>),
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectRule {
    pub from: String,
    pub to: String,
}

impl<'de> Deserialize<'de> for Redirect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Redirect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("default, off, or a list of { from, to }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Redirect, E> {
                if v {
                    Err(E::custom("redirect: use default, off or a list of rules"))
                } else {
                    Ok(Redirect::Off)
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Redirect, E> {
                match v {
                    "default" => Ok(Redirect::Default),
                    "off" => Ok(Redirect::Off),
                    other => Err(E::custom(format!(
                        "unknown redirect `{other}`: expected default, off or a list of rules"
                    ))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Redirect, A::Error> {
                Vec::<RedirectRule>::deserialize(de::value::SeqAccessDeserializer::new(s))
                    .map(Redirect::Rules)
            }
        }
        d.deserialize_any(V)
    }
}
