//! nginx's units: sizes (`512`, `4k`, `1m`, `1g`) and durations (`500ms`, `60s`,
//! `1.5s`, `5m`, `1h`, `1m30s`, or an integer of seconds).
//!
//! nginx counterparts: `ngx_parse_size` and `ngx_parse_time`. Suffixes are
//! case-insensitive for sizes, as in nginx.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }
    /// The size as a `usize`, saturating on 32-bit machines.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Parse an nginx size: digits with an optional `k`, `m` or `g` suffix.
pub fn parse_size(s: &str) -> Result<Size, String> {
    let t = s.trim();
    let (digits, mult) = match t.as_bytes().last().map(|b| b.to_ascii_lowercase()) {
        Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid size `{s}`: expected bytes or a number with k, m or g (e.g. 4k)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Size)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512, 4k, 1m or 1g")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration; `0` means "none" wherever nginx says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
    /// `None` for zero ("no limit"), the duration otherwise.
    pub fn non_zero(self) -> Option<std::time::Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

/// Parse an nginx duration: one or more `NUMBER UNIT` parts (`1m30s`, `1.5s`),
/// units `ms s m h d w`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration `{s}`: expected e.g. 500ms, 60s, 1.5s, 5m, 1h or seconds");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit_len = rest[num_len..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604800.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[num_len + unit_len..];
    }
    secs_to_duration(total).ok_or_else(bad)
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs))
        .then(|| Duration(std::time::Duration::from_secs_f64(secs)))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 60s, 5m, 1h or an integer of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: must not be negative"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                secs_to_duration(v).ok_or_else(|| E::custom(format!("invalid duration `{v}`")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(Size(512)));
        assert_eq!(parse_size("4k"), Ok(Size(4096)));
        assert_eq!(parse_size("4K"), Ok(Size(4096)));
        assert_eq!(parse_size("1m"), Ok(Size(1 << 20)));
        assert_eq!(parse_size("1024m"), Ok(Size(1 << 30)));
        assert_eq!(parse_size("1g"), Ok(Size(1 << 30)));
        assert!(parse_size("4kb").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().0, D::from_millis(500));
        assert_eq!(parse_duration("60s").unwrap().0, D::from_secs(60));
        assert_eq!(parse_duration("1.5s").unwrap().0, D::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap().0, D::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap().0, D::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap().0, D::from_secs(90));
        assert_eq!(parse_duration("10").unwrap().0, D::from_secs(10));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }
}
