//! `routes:`: which requests go where. First match wins: `host` (exact), then
//! the longest `path_prefix`.
//!
//! nginx counterpart: `server_name` plus prefix `location` blocks, with
//! `proxy_pass http://GROUP` or `return`.

use crate::ordered_map::OrderedMap;
use crate::proxy_conf::ProxyConf;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default, rename = "return")]
    pub respond: Option<Return>,
    #[serde(default)]
    pub proxy: ProxyConf,
    /// nginx `proxy_cache` and its directives; absent: no caching.
    #[serde(default)]
    pub cache: Option<crate::cache::RouteCache>,
    /// nginx `limit_req`: one mapping or a list of them.
    #[serde(default)]
    pub limit_req: crate::limit::Limits<crate::limit::LimitReq>,
    /// nginx `limit_conn`: one mapping or a list of them.
    #[serde(default)]
    pub limit_conn: crate::limit::Limits<crate::limit::LimitConn>,
    /// nginx `gzip` and its directives, with brotli and zstd; absent: off.
    #[serde(default)]
    pub compress: Option<crate::compress::Compress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteMatch {
    pub host: Option<String>,
    pub path_prefix: String,
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch {
            host: None,
            path_prefix: "/".to_string(),
        }
    }
}

/// A route that answers by itself (nginx `return`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Return {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: OrderedMap<String>,
    /// For 301, 302, 303, 307, 308.
    #[serde(default)]
    pub location: Option<String>,
}
