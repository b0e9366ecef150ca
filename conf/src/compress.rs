//! A route's `compress:` block: which responses are compressed, with which
//! algorithms and how hard (rule 27 of docs/config.md).
//!
//! nginx counterpart: the `gzip_*` directives of `ngx_http_gzip_filter_module`
//! (`gzip_types`, `gzip_min_length`, `gzip_comp_level`, `gzip_vary`,
//! `gzip_proxied`), with brotli and zstd beside gzip.

use serde::Deserialize;

/// A route's `compress:` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compress {
    /// In order of preference: the first one the client accepts wins.
    pub algorithms: Vec<Algorithm>,
    /// nginx `gzip_types`; `text/html` always; `*` = any type.
    pub types: Vec<String>,
    /// nginx `gzip_min_length`, compared with `Content-Length` when known.
    pub min_length: u64,
    /// nginx `gzip_comp_level` (1-9).
    pub level: u32,
    /// brotli quality (0-11).
    pub br_level: u32,
    /// zstd level (1-22).
    pub zstd_level: u32,
    /// nginx `gzip_vary`.
    pub vary: bool,
    /// nginx `gzip_proxied`.
    pub proxied: Vec<Proxied>,
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            algorithms: vec![Algorithm::Gzip],
            types: vec!["text/html".into()],
            min_length: 20,
            level: 1,
            br_level: 4,
            zstd_level: 3,
            vary: false,
            proxied: vec![Proxied::Off],
        }
    }
}

/// One content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "gzip")]
    Gzip,
    #[serde(rename = "br")]
    Br,
    #[serde(rename = "zstd")]
    Zstd,
}

impl Algorithm {
    /// The token of `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
        }
    }
}

/// One value of `proxied` (nginx `gzip_proxied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Proxied {
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "any")]
    Any,
    #[serde(rename = "expired")]
    Expired,
    #[serde(rename = "no-cache")]
    NoCache,
    #[serde(rename = "no-store")]
    NoStore,
    #[serde(rename = "private")]
    Private,
    #[serde(rename = "no_last_modified")]
    NoLastModified,
    #[serde(rename = "no_etag")]
    NoEtag,
    #[serde(rename = "auth")]
    Auth,
}

/// Check a route's `compress:` block; `base` is its path.
pub(crate) fn check(c: &Compress, base: &str, out: &mut Vec<crate::validate::Problem>) {
    use crate::validate::Problem;
    if c.algorithms.is_empty() {
        out.push(Problem::at_value(
            format!("{base}.algorithms"),
            "algorithms needs at least one of gzip, br, zstd",
        ));
    }
    for (i, a) in c.algorithms.iter().enumerate() {
        if c.algorithms[..i].contains(a) {
            out.push(Problem::at_value(
                format!("{base}.algorithms.{i}"),
                format!("`{}` is listed twice", a.token()),
            ));
        }
    }
    for (i, t) in c.types.iter().enumerate() {
        if t != "*" && !valid_type(t) {
            out.push(Problem::at_value(
                format!("{base}.types.{i}"),
                format!("`{t}` is not a media type (type/subtype, or \"*\")"),
            ));
        }
    }
    check_levels(c, base, out);
    if c.proxied.len() > 1 && c.proxied.contains(&Proxied::Off) {
        out.push(Problem::at_value(
            format!("{base}.proxied"),
            "off goes alone in proxied",
        ));
    }
}

fn valid_type(t: &str) -> bool {
    match t.split_once('/') {
        Some((a, b)) => !a.is_empty() && !b.is_empty() && !t.contains(char::is_whitespace),
        None => false,
    }
}

fn check_levels(c: &Compress, base: &str, out: &mut Vec<crate::validate::Problem>) {
    let levels = [
        ("level", c.level, 1, 9),
        ("br_level", c.br_level, 0, 11),
        ("zstd_level", c.zstd_level, 1, 22),
    ];
    for (key, v, lo, hi) in levels {
        if !(lo..=hi).contains(&v) {
            out.push(crate::validate::Problem::at_value(
                format!("{base}.{key}"),
                format!("{key} must be {lo} to {hi}"),
            ));
        }
    }
}
