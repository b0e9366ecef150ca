//! What sits between Ferry's two connections.
//!
//! - [`request_body`]: the client's body, buffered (memory, then an unlinked
//!   temp file) so every try can replay it (nginx `client_body_buffer_size`).
//! - [`fields`]: a request's header fields, as Pingora's header holds them
//!   or as the lines of the head that came.
//! - [`headers`]: the upstream request header and the client response header,
//!   built as nginx builds them.
//! - [`redirect`]: `Location` / `Refresh` rewriting (`proxy_redirect`).
//! - [`variables`]: `$remote_addr`, `$host`, ... evaluated for one request.
//! - [`pipe`], [`whole_body`], [`event_pipe`], [`unbuffered`]: moving the
//!   response body: at once when one read brought all of it, else buffered
//!   with temp-file spill (nginx `ngx_event_pipe`) or unbuffered.
//! - [`temp_file`]: anonymous temp files that leave nothing behind.

pub mod event_pipe;
pub mod fields;
pub mod headers;
pub mod pipe;
pub mod redirect;
pub mod request_body;
pub mod temp_file;
pub mod unbuffered;
pub mod variables;
pub mod whole_body;

pub use pipe::{
    BodyFilter, DownstreamBody, FailKind, NoFilter, PipeError, PipeOutcome, Side, UpstreamBody,
};
