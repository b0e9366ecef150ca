//! `listen:` entries: a plain `address:port`, or a mapping with TLS and socket
//! options. nginx counterpart: the `listen` directive.

use crate::units::Size;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub addr: String,
    #[serde(default)]
    pub tls: Option<ListenTls>,
    #[serde(default)]
    pub backlog: Option<u32>,
    #[serde(default)]
    pub sndbuf: Option<Size>,
    #[serde(default)]
    pub rcvbuf: Option<Size>,
    #[serde(default)]
    pub proxy_protocol: bool,
    /// A plain listener also serves HTTP/2 with prior knowledge (nginx
    /// `http2 on` without TLS), beside HTTP/1.x.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    pub cert: String,
    pub key: String,
}

/// A listen entry as written: a string or a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEntry(pub Listen);

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address:port, or a mapping with addr")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                Ok(ListenEntry(Listen {
                    addr: v.to_string(),
                    tls: None,
                    backlog: None,
                    sndbuf: None,
                    rcvbuf: None,
                    proxy_protocol: false,
                    h2c: false,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<ListenEntry, A::Error> {
                Listen::deserialize(de::value::MapAccessDeserializer::new(m)).map(ListenEntry)
            }
        }
        d.deserialize_any(V)
    }
}
