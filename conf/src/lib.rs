//! Ferry's configuration: the YAML of docs/config.md, parsed into plain typed data
//! with nginx's defaults, and checked so that every problem is reported as
//! `FILE:LINE:COLUMN: what is wrong`.
//!
//! ```no_run
//! let config = ferry_conf::load_file("ferry.yaml".as_ref())?;
//! # Ok::<(), ferry_conf::ConfErrors>(())
//! ```
//!
//! This crate holds data only; what the settings *do* lives in `ferry-lb`,
//! `ferry-filters` and `ferry`.

mod cache;
mod cidr;
mod compress;
mod error;
mod least_time;
mod limit;
mod listen;
mod next_upstream;
mod ordered_map;
mod positions;
mod proxy_conf;
mod root;
mod route;
mod sticky;
mod template;
mod units;
mod upstream;
mod validate;

pub use cache::{CacheZone, RouteCache, StaleCondition, IGNORABLE_HEADERS};
pub use cidr::Cidr;
pub use compress::{Algorithm as CompressAlgorithm, Compress, Proxied};
pub use error::{ConfError, ConfErrors};
pub use least_time::{LeastTime, Measure};
pub use limit::{
    LimitConn, LimitConnZone, LimitReq, LimitReqZone, Limits, OnStoreError, Rate, RedisUrl, Store,
};
pub use listen::{Listen, ListenTls};
pub use next_upstream::{Condition, NextUpstream};
pub use ordered_map::OrderedMap;
pub use positions::{Pos, Positions};
pub use proxy_conf::{Buffers, ErrorPage, HttpVersion, ProxyConf, Redirect, RedirectRule};
pub use root::{AccessLog, Admin, Config, HeaderBuffers, RealIp, Resolver};
pub use route::{Return, Route, RouteMatch};
pub use sticky::{CookieExpires, Sticky, StickyCookie, StickyLearn, StickyMode, ROUTE_MAX};
pub use template::{Segment, Template, Variable};
pub use units::{parse_duration, parse_size, Duration, Size};
pub use upstream::{Balance, HealthCheck, Server, Upstream, UpstreamTls};
pub use validate::Problem;

use serde::de::{DeserializeOwned, DeserializeSeed};
use std::path::Path;

/// Load and check a file.
pub fn load_file(path: &Path) -> Result<Config, ConfErrors> {
    load_file_with::<serde::de::IgnoredAny>(path, None).map(|(c, _)| c)
}

/// Load and check a file that may carry a program's own top-level key
/// (a program's own settings); its value is deserialized into `S`, with the same
/// `FILE:LINE:COLUMN` errors as the rest.
pub fn load_file_with<S: DeserializeOwned>(
    path: &Path,
    extension: Option<&str>,
) -> Result<(Config, Option<S>), ConfErrors> {
    let name = path.display().to_string();
    let whole = |message: String| {
        ConfErrors(vec![ConfError {
            file: name.clone(),
            line: 1,
            column: 1,
            message,
        }])
    };
    // A FIFO or a device would block or never end: only regular files.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(whole("not a regular file".to_string())),
        Ok(_) => {}
        Err(e) => return Err(whole(format!("cannot read the file: {e}"))),
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
    load_str_with(&name, &text, extension)
}

/// Load and check YAML text; `file` names it in messages.
pub fn load_str(file: &str, text: &str) -> Result<Config, ConfErrors> {
    load_str_with::<serde::de::IgnoredAny>(file, text, None).map(|(c, _)| c)
}

/// Load and check YAML text that may carry a program's own top-level key.
pub fn load_str_with<S: DeserializeOwned>(
    file: &str,
    text: &str,
    extension: Option<&str>,
) -> Result<(Config, Option<S>), ConfErrors> {
    let at = |line: usize, column: usize, message: String| ConfError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    // A UTF-8 byte order mark is no part of the YAML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let positions = Positions::index(text);
    if let Some(pos) = positions.too_deep() {
        let message = format!("nested deeper than {} levels", positions::MAX_DEPTH);
        return Err(ConfErrors(vec![at(pos.line, pos.column, message)]));
    }
    if !positions.duplicates().is_empty() {
        let errors = positions
            .duplicates()
            .iter()
            .map(|(key, pos)| at(pos.line, pos.column, format!("duplicate key `{key}`")))
            .collect();
        return Err(ConfErrors(errors));
    }
    let seed = root::RootSeed::<S> {
        file,
        extension,
        settings: std::marker::PhantomData,
    };
    let (mut config, settings) = match seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(c) => c,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let first = at(line, column, serde_message(&e));
            let mut errors = section_errors::<S>(file, text, extension);
            if !errors.iter().any(|x| (x.line, x.column) == (line, column)) {
                errors.push(first);
            }
            errors.sort_by_key(|x| (x.line, x.column));
            return Err(ConfErrors(errors));
        }
    };
    config.source = text.to_string();
    let problems = validate::validate(&mut config);
    if problems.is_empty() {
        return Ok((config, settings));
    }
    Err(config.locate(problems))
}

/// Every section's own problem, after the whole file failed to load:
/// serde stops at a file's first error, so each top-level key (a block at
/// column 1) is loaded again alone, at its own lines (the lines before it
/// kept as blank ones, so positions stay the file's). A section's missing
/// sibling is no problem of its own.
fn section_errors<S: DeserializeOwned>(
    file: &str,
    text: &str,
    extension: Option<&str>,
) -> Vec<ConfError> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && c != '#' && c != '-')
        })
        .map(|(i, _)| i)
        .collect();
    let mut errors = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let section = "\n".repeat(start) + &lines[start..end].join("\n") + "\n";
        let seed = root::RootSeed::<S> {
            file,
            extension,
            settings: std::marker::PhantomData,
        };
        if let Err(e) = seed.deserialize(serde_yaml::Deserializer::from_str(&section)) {
            let message = serde_message(&e);
            if message.starts_with("missing field") {
                continue;
            }
            let (line, column) = e
                .location()
                .map_or((start + 1, 1), |l| (l.line(), l.column()));
            errors.push(ConfError {
                file: file.to_string(),
                line,
                column,
                message,
            });
        }
    }
    errors
}

/// serde_yaml's message without its own " at line L column C" suffix.
fn serde_message(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if s[i..].contains(" column ") => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests;
