//! `next_upstream`: the conditions on which a request goes to the next server.
//!
//! nginx counterpart: `proxy_next_upstream` and its masks
//! (`ngx_http_proxy_next_upstream_masks`). `off` clears every other bit.

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use std::fmt;

/// One `next_upstream` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    Error,
    Timeout,
    InvalidHeader,
    Http500,
    Http502,
    Http503,
    Http504,
    Http403,
    Http404,
    Http429,
    NonIdempotent,
}

impl Condition {
    const ALL: [(&'static str, Condition); 11] = [
        ("error", Condition::Error),
        ("timeout", Condition::Timeout),
        ("invalid_header", Condition::InvalidHeader),
        ("http_500", Condition::Http500),
        ("http_502", Condition::Http502),
        ("http_503", Condition::Http503),
        ("http_504", Condition::Http504),
        ("http_403", Condition::Http403),
        ("http_404", Condition::Http404),
        ("http_429", Condition::Http429),
        ("non_idempotent", Condition::NonIdempotent),
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The condition an upstream status stands for, if any.
    pub fn for_status(status: u16) -> Option<Condition> {
        Some(match status {
            500 => Condition::Http500,
            502 => Condition::Http502,
            503 => Condition::Http503,
            504 => Condition::Http504,
            403 => Condition::Http403,
            404 => Condition::Http404,
            429 => Condition::Http429,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Condition::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// The set of enabled conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream(u16);

impl NextUpstream {
    pub const OFF: NextUpstream = NextUpstream(0);

    pub fn of(conds: &[Condition]) -> NextUpstream {
        NextUpstream(conds.iter().fold(0, |m, c| m | c.bit()))
    }
    pub fn has(self, c: Condition) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn is_off(self) -> bool {
        self.0 == 0
    }
    pub fn names(self) -> Vec<&'static str> {
        Condition::ALL
            .iter()
            .filter(|(_, c)| self.has(*c))
            .map(|(n, _)| *n)
            .collect()
    }
}

impl Default for NextUpstream {
    /// nginx's default: `error timeout`.
    fn default() -> Self {
        NextUpstream::of(&[Condition::Error, Condition::Timeout])
    }
}

fn parse_word(w: &str) -> Result<Option<Condition>, String> {
    if w == "off" {
        return Ok(None);
    }
    Condition::ALL
        .iter()
        .find(|(n, _)| *n == w)
        .map(|(_, c)| Some(*c))
        .ok_or_else(|| {
            format!(
                "unknown next_upstream condition `{w}`; expected error, timeout, invalid_header, \
                 http_500, http_502, http_503, http_504, http_403, http_404, http_429, \
                 non_idempotent or off"
            )
        })
}

/// A list item: a condition name, or `false` meaning `off`.
struct Word(Option<Condition>);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Word;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a next_upstream condition")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Word, E> {
                if v {
                    Err(E::custom("`true` is not a next_upstream condition"))
                } else {
                    Ok(Word(None))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Word, E> {
                parse_word(v).map(Word).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for NextUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NextUpstream;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of next_upstream conditions, or off")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<NextUpstream, E> {
                Word::deserialize(de::value::BoolDeserializer::new(v)).map(|_| NextUpstream::OFF)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NextUpstream, E> {
                match parse_word(v).map_err(E::custom)? {
                    None => Ok(NextUpstream::OFF),
                    Some(c) => Ok(NextUpstream::of(&[c])),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<NextUpstream, A::Error> {
                let mut conds = Vec::new();
                let mut off = false;
                while let Some(Word(w)) = s.next_element::<Word>()? {
                    match w {
                        Some(c) => conds.push(c),
                        None => off = true,
                    }
                }
                // nginx: `off` anywhere clears the other bits.
                Ok(if off {
                    NextUpstream::OFF
                } else {
                    NextUpstream::of(&conds)
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_error_timeout() {
        let n = NextUpstream::default();
        assert!(n.has(Condition::Error) && n.has(Condition::Timeout));
        assert!(!n.has(Condition::Http502));
        assert_eq!(n.names(), vec!["error", "timeout"]);
    }

    #[test]
    fn parses_forms() {
        let n: NextUpstream = serde_yaml::from_str("[http_500, non_idempotent]").unwrap();
        assert!(n.has(Condition::Http500) && n.has(Condition::NonIdempotent));
        assert!(!n.has(Condition::Error));
        let off: NextUpstream = serde_yaml::from_str("[off]").unwrap();
        assert!(off.is_off());
        let off: NextUpstream = serde_yaml::from_str("false").unwrap();
        assert!(off.is_off());
        let off: NextUpstream = serde_yaml::from_str("[false]").unwrap();
        assert!(off.is_off());
        assert!(serde_yaml::from_str::<NextUpstream>("[http_418]").is_err());
    }
}
