//! `caches:` (where a cache lives and how large it may grow) and a route's
//! `cache:` (what it stores and when it answers from it).
//!
//! nginx counterpart: `proxy_cache_path` and the `proxy_cache_*`
//! directives of `ngx_http_proxy_module`.

use crate::ordered_map::OrderedMap;
use crate::template::Template;
use crate::units::{Duration, Size};
use serde::Deserialize;

/// One entry of `caches:` (nginx `proxy_cache_path`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheZone {
    /// The directory; created (0700) when missing.
    pub path: String,
    /// Least recently used entries are evicted past it.
    #[serde(default = "one_gigabyte")]
    pub max_size: Size,
    /// Entries not used for this long are removed, fresh or not.
    #[serde(default = "ten_minutes")]
    pub inactive: Duration,
    /// Keys tracked (stored entries and `min_uses` counts together); past
    /// it the least recently used goes, its file with it: the index's
    /// memory is bounded by it (nginx: the keys zone's size).
    #[serde(default = "eighty_thousand")]
    pub max_keys: usize,
}

fn eighty_thousand() -> usize {
    80_000
}

fn one_gigabyte() -> Size {
    Size(1 << 30)
}

fn ten_minutes() -> Duration {
    Duration::secs(600)
}

/// A route's `cache:` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteCache {
    /// A name from `caches:`.
    pub zone: String,
    /// nginx `proxy_cache_key`.
    pub key: Template,
    /// nginx `proxy_cache_valid`: status (or `any`) to how long a response
    /// without freshness headers is kept.
    pub valid: OrderedMap<Duration>,
    /// nginx `proxy_cache_methods` (GET and HEAD always).
    pub methods: Vec<String>,
    /// nginx `proxy_cache_min_uses`.
    pub min_uses: u32,
    /// nginx `proxy_cache_bypass`.
    pub bypass: Vec<Template>,
    /// nginx `proxy_no_cache`.
    pub no_cache: Vec<Template>,
    /// nginx `proxy_cache_use_stale`.
    pub use_stale: Vec<StaleCondition>,
    /// nginx `proxy_cache_background_update`.
    pub background_update: bool,
    /// nginx `proxy_cache_lock`.
    pub lock: bool,
    pub lock_timeout: Duration,
    pub lock_age: Duration,
    /// nginx `proxy_cache_revalidate`.
    pub revalidate: bool,
    /// nginx `proxy_cache_convert_head`.
    pub convert_head: bool,
    /// nginx `proxy_ignore_headers` (the cache's part of it).
    pub ignore_headers: Vec<String>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            zone: String::new(),
            key: Template::parse("$scheme$proxy_host$request_uri").unwrap_or_default(),
            valid: OrderedMap::default(),
            methods: vec!["GET".into(), "HEAD".into()],
            min_uses: 1,
            bypass: Vec::new(),
            no_cache: Vec::new(),
            use_stale: vec![StaleCondition::Off],
            background_update: false,
            lock: false,
            lock_timeout: Duration::secs(5),
            lock_age: Duration::secs(5),
            revalidate: false,
            convert_head: true,
            ignore_headers: Vec::new(),
        }
    }
}

/// One condition of `use_stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleCondition {
    Error,
    Timeout,
    InvalidHeader,
    Updating,
    #[serde(rename = "http_500")]
    Http500,
    #[serde(rename = "http_502")]
    Http502,
    #[serde(rename = "http_503")]
    Http503,
    #[serde(rename = "http_504")]
    Http504,
    #[serde(rename = "http_403")]
    Http403,
    #[serde(rename = "http_404")]
    Http404,
    #[serde(rename = "http_429")]
    Http429,
    Off,
}

/// The response headers `ignore_headers` may name.
pub const IGNORABLE_HEADERS: [&str; 5] = [
    "X-Accel-Expires",
    "Expires",
    "Cache-Control",
    "Set-Cookie",
    "Vary",
];
