//! Ferry's upstream groups: which server takes the next try.
//!
//! nginx counterpart: `ngx_http_upstream_round_robin.c` and the balancer
//! modules. A [`Group`] holds the peers of one `upstreams:` entry and their
//! live state (shared by all threads); a [`Cursor`] is one request's walk
//! through it (which peers it tried, whether it moved to the backups, how
//! many tries it has left); a [`Lease`] is one try on one peer, given back
//! with a [`Feedback`] that drives passive health (`max_fails`).

mod group;
pub mod hash;
pub mod ip_hash;
pub mod least_conn;
pub mod least_time;
mod md5;
pub mod passive_health;
pub mod random;
pub mod smooth_weighted;
pub mod sticky;
mod tried;

pub use group::{
    expand, Answer, Cursor, Feedback, Group, Key, Lease, Peer, ServerReport, ServerState,
};
pub use sticky::{derived_route, Sessions};

#[cfg(test)]
mod tests;
