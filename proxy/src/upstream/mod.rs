//! The upstream leg: nginx's upstream loop (peer, connect, send, read the
//! header, next server or this response), once, for requests, upgrades and
//! subrequests alike.
//!
//! nginx counterpart: `ngx_http_upstream_connect` through
//! `ngx_http_upstream_next`, with the keepalive module's peer `get`/`free`.

pub(crate) mod connect;
pub(crate) mod events;
pub(crate) mod group;
pub(crate) mod h1;
pub(crate) mod head;
pub(crate) mod idle_budget;
pub(crate) mod keepalive;
pub(crate) mod leg;
pub(crate) mod next_upstream;
pub(crate) mod peer;
pub(crate) mod peer_certs;
pub(crate) mod pool;
pub(crate) mod read_header;
pub(crate) mod request_head;
pub(crate) mod send_request;
pub(crate) mod session;
pub(crate) mod subrequest;
pub(crate) mod tries;
pub(crate) mod try_record;
