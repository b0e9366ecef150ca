//! One request, from its header to its log line: the HTTP app that reads
//! each request on a connection, the phases that serve it ([`flow`]),
//! routing, the client's body, Ferry's own answers, and the record every
//! hook and the access log read.
//!
//! nginx counterpart: `ngx_http_process_request` through
//! `ngx_http_finalize_request`.

pub(crate) mod body_stream;
pub(crate) mod client_body;
pub(crate) mod duplex;
pub(crate) mod finalize;
pub(crate) mod flow;
pub(crate) mod http_app;
pub(crate) mod leg;
pub(crate) mod route;
pub(crate) mod sticky;
