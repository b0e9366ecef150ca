//! Ferry's proxy cache: what nginx would store and for how long
//! ([`freshness`]), the file of one entry ([`entry`]), the key and where
//! its file lives ([`key`]), one cache with its index and eviction
//! ([`zone`]), and the thread that writes its entries off the event loop
//! (`filler`). The proxy decides when to look and serves what is
//! found; this crate holds no request.
//!
//! nginx counterpart: `ngx_http_file_cache.c`, and the cache parts of
//! `ngx_http_upstream.c`.

pub mod entry;
mod filler;
pub mod freshness;
pub mod key;
pub mod zone;

pub use entry::{Entry, Served, Writer};
pub use filler::Filling;
pub use freshness::{decide, Decision};
pub use key::{Key, Values};
pub use zone::{Found, Zone};
