//! The response to the client: its header built from the upstream's, its
//! body through the event pipe or the unbuffered pipe, or, after a `101`,
//! a byte tunnel both ways.
//!
//! nginx counterpart: `ngx_http_upstream_send_response`,
//! `ngx_http_upstream_process_headers` and `ngx_http_upstream_upgrade`.

pub(crate) mod body_pipe;
pub(crate) mod compress;
pub(crate) mod grpc;
pub(crate) mod header;
pub(crate) mod respond;
pub(crate) mod sticky_cookie;
pub(crate) mod tunnel;
