//! The client connection, before and between requests: the PROXY protocol
//! header from a trusted balancer, the whole-header deadline, the real
//! client address, and the count of what was refused.
//!
//! nginx counterpart: `ngx_http_init_connection` and
//! `ngx_http_wait_request_handler` (with `proxy_protocol`,
//! `client_header_timeout` and the realip module).

pub(crate) mod certs;
pub(crate) mod downstream;
pub(crate) mod h1_session;
pub(crate) mod header_bound;
pub(crate) mod header_clock;
pub(crate) mod idle_wait;
pub(crate) mod lingering_close;
pub(crate) mod liveness;
pub(crate) mod proxy_protocol;
pub(crate) mod real_ip;
pub(crate) mod refusal;
pub(crate) mod response_head;
pub(crate) mod sendfile;
pub(crate) mod stream;
