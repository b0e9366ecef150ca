//! Ferry's `ProxyHttp` trait: Pingora's hook names and shapes, with nginx's
//! upstream semantics behind them. Every hook has a default that does what
//! the YAML says, so the `ferry` binary is this trait with no overrides.
//!
//! The hooks are listed below in the order a request meets them; the
//! manual's hook page (`docs/hooks.md`) has the table of each with its
//! nginx counterpart and when it runs.
//!
//! The rules of the calls, Pingora's, on every path:
//!
//! - `request_body_filter` sees each piece of the client's body, and its
//!   last call has `end_of_stream` true: a request without a body gets one
//!   call, with `None`. With `request_buffering: false` the body streams to
//!   one try only; a try that fails mid-body ends the request there.
//! - `upstream_response_body_filter` sees each piece the upstream sends,
//!   its last call with `end_of_stream` true, whatever the framing.
//! - `response_filter` sees every response that came from an upstream or
//!   from the cache; Ferry's own answers (a `return:` route,
//!   [`Session::respond`](crate::Session::respond), error pages and
//!   `fail_to_proxy`) are written as they are, as in Pingora.
//! - `logging` runs once for every request, refused ones included.

use crate::hooks::peer_choice::{Peer, PeerChoice};
use crate::hooks::session::Session;
use crate::record::Request;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::Digest;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

pub use crate::upstream::next_upstream::RetryDecision;
/// Whether a response is stored in the route's cache, and for how long.
pub use ferry_cache::Decision as CacheDecision;

// The hooks' `Session` argument. async-trait (what programs compile
// against) wants it as written, `Session`; rustdoc's view of the hooks as
// plain `async fn` (`--cfg doc_async_trait`, Pingora's way of showing
// them) needs its lifetime spelled out.
#[cfg(not(doc_async_trait))]
macro_rules! session_type {
    () => {
        Session
    };
}
#[cfg(doc_async_trait)]
macro_rules! session_type {
    () => {
        Session<'_>
    };
}

/// What [`ProxyHttp::fail_to_proxy`] did: the status the client got (0:
/// none, the client was gone) and whether the connection may serve another
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailToProxy {
    /// The status sent, for the log and metrics; 0 when nothing was sent.
    pub error_code: u16,
    /// `false` closes the client connection after the answer.
    pub can_reuse_downstream: bool,
}

/// The status nginx answers an error with: its own (`HTTPStatus`), 502 for
/// an upstream's, none (0) for a client that is gone, 400 for another of
/// the client's, else 500.
pub fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            if e.esource() == &ErrorSource::Downstream =>
        {
            0
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 400,
            _ => 500,
        },
    }
}

/// The hooks of a program built on Ferry. Implement the ones you need;
/// every other one does what the YAML says.
///
/// ```
/// use ferry::{async_trait, ProxyHttp, Session};
/// use ferry::pingora_error::Result;
///
/// /// Adds a header to every request sent upstream.
/// struct Tagger;
///
/// #[async_trait]
/// impl ProxyHttp for Tagger {
///     type CTX = ();
///     fn new_ctx(&self) {}
///
///     async fn upstream_request_filter(
///         &self,
///         _s: &mut Session,
///         req: &mut ferry::pingora_http::RequestHeader,
///         _ctx: &mut (),
///     ) -> Result<()> {
///         req.insert_header("X-Via", "ferry")?;
///         Ok(())
///     }
/// }
/// # let _ = || ferry::run(Tagger, "ferry.yaml");
/// ```
#[cfg_attr(not(doc_async_trait), async_trait)]
pub trait ProxyHttp: Send + Sync + 'static {
    /// Per-request state of your own.
    type CTX: Send + Sync;

    /// A fresh context for a request.
    fn new_ctx(&self) -> Self::CTX;

    /// Before routing (nginx's `post_read` and server-level rewrite
    /// phases): the request header may be changed here, and a changed
    /// path or `Host` is what the request is routed by. Requests Ferry
    /// refuses outright (a malformed target, request smuggling shapes)
    /// never reach it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// /// Serves `/v1/...` as `/api/...`: the new path picks the route.
    /// struct Legacy;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Legacy {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn early_request_filter(&self, s: &mut Session, _ctx: &mut ()) -> Result<()> {
    ///         let path = s.req_header().uri.path().to_string();
    ///         if let Some(rest) = path.strip_prefix("/v1/") {
    ///             let new = format!("/api/{rest}");
    ///             s.req_header_mut().set_uri(new.parse().expect("a path"));
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    async fn early_request_filter(
        &self,
        _session: &mut session_type!(),
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx's access and rewrite phases: inspect or change the request, or
    /// answer it with [`Session::respond`] and return `Ok(true)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::ResponseHeader;
    /// /// `/admin/` needs `X-Api-Key: secret`.
    /// struct Gate;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Gate {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn request_filter(&self, s: &mut Session, _ctx: &mut ()) -> Result<bool> {
    ///         let req = s.req_header();
    ///         let key = req.headers.get("x-api-key").map(|v| v.as_bytes());
    ///         if req.uri.path().starts_with("/admin/") && key != Some(&b"secret"[..]) {
    ///             let header = ResponseHeader::build(401, None)?;
    ///             s.respond(header, "no key\n".into()).await?;
    ///             return Ok(true);
    ///         }
    ///         Ok(false)
    ///     }
    /// }
    /// ```
    async fn request_filter(
        &self,
        _session: &mut session_type!(),
        _ctx: &mut Self::CTX,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Each piece of the client's request body, as it is read and before it
    /// is buffered (so every retry replays the filtered body); once more
    /// with `None` and `end_of_stream` after the last piece. Change the
    /// piece, hold it back (`None`), or fail the request with an error
    /// whose type is `HTTPStatus(code)` (the client gets `code`).
    ///
    /// With `request_buffering: true` (the default) the upstream gets the
    /// filtered body with its own `Content-Length`. With `false` the body
    /// streams: a filter that changes the length of a body the client sent
    /// with a `Content-Length` fails the request (502) rather than send a
    /// body that does not match its header.
    ///
    /// Read the body here, not through [`Session::pingora`] in
    /// `request_filter`: a body read there is gone, and Ferry answers 500
    /// rather than send the upstream an empty one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::bytes::{Bytes, BytesMut};
    /// # use ferry::pingora_error::{Error, ErrorType, Result};
    /// /// Refuses a body that mentions `"admin": true`, with 403.
    /// struct BodyGate;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for BodyGate {
    ///     type CTX = BytesMut;
    ///     fn new_ctx(&self) -> BytesMut { BytesMut::new() }
    ///
    ///     async fn request_body_filter(
    ///         &self,
    ///         _s: &mut Session,
    ///         body: &mut Option<Bytes>,
    ///         end_of_stream: bool,
    ///         seen: &mut BytesMut,
    ///     ) -> Result<()> {
    ///         if let Some(piece) = body {
    ///             seen.extend_from_slice(piece);
    ///         }
    ///         let text = String::from_utf8_lossy(seen);
    ///         if end_of_stream && text.contains("\"admin\": true") {
    ///             return Error::e_explain(ErrorType::HTTPStatus(403), "admin in the body");
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    async fn request_body_filter(
        &self,
        _session: &mut session_type!(),
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx `peer.get`: where the next try goes, called before every try;
    /// `session.request().tries` lists the tries so far. The tries are the
    /// request's: a fallback to another group (or a run-time
    /// [`Peer`](crate::Peer)) after a failure counts against the request's
    /// `next_upstream_tries`, and each group (each run-time address) is
    /// tried at most as often as it has servers.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, PeerChoice, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// /// The first try on the route's group; after a failure, `fallback`.
    /// struct Fallback;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Fallback {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn upstream_peer(&self, s: &mut Session, _ctx: &mut ()) -> Result<PeerChoice> {
    ///         Ok(if s.request().tries().is_empty() {
    ///             PeerChoice::Route
    ///         } else {
    ///             PeerChoice::Group("fallback".into())
    ///         })
    ///     }
    /// }
    /// ```
    async fn upstream_peer(
        &self,
        _session: &mut session_type!(),
        _ctx: &mut Self::CTX,
    ) -> Result<PeerChoice> {
        Ok(PeerChoice::Route)
    }

    /// A try has its connection: `reused` when it came from the keepalive
    /// pool. `fd` is the socket; `digest` has the connection's timing and
    /// TLS details. An error ends the request (no further try).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_core::protocols::Digest;
    /// # use ferry::Peer;
    /// /// Counts new connections against pooled ones.
    /// struct Count(std::sync::atomic::AtomicU64);
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Count {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn connected_to_upstream(
    ///         &self,
    ///         _s: &mut Session,
    ///         reused: bool,
    ///         _peer: &Peer,
    ///         _fd: std::os::unix::io::RawFd,
    ///         _digest: Option<&Digest>,
    ///         _ctx: &mut (),
    ///     ) -> Result<()> {
    ///         if !reused {
    ///             self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    #[allow(clippy::too_many_arguments)]
    async fn connected_to_upstream(
        &self,
        _session: &mut session_type!(),
        _reused: bool,
        _peer: &Peer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// What of this request's context the next request on the same
    /// HTTP/1 keepalive connection should get (a client certificate's
    /// identity, a connection's authentication): called when the request
    /// ended and the connection is kept. `None` (the default) keeps
    /// nothing; what is returned is held while the connection waits, and
    /// handed to [`on_connection_reuse`](ProxyHttp::on_connection_reuse).
    /// HTTP/2 streams share no such context.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// /// Counts the requests of each connection.
    /// struct PerConnection;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for PerConnection {
    ///     type CTX = u64;
    ///     fn new_ctx(&self) -> u64 { 1 }
    ///
    ///     fn persist_connection_context(
    ///         &self,
    ///         _s: &Session,
    ///         ctx: &u64,
    ///     ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
    ///         Some(Box::new(*ctx))
    ///     }
    ///
    ///     fn on_connection_reuse(
    ///         &self,
    ///         _s: &mut Session,
    ///         ctx: &mut u64,
    ///         prev: Box<dyn std::any::Any + Send + Sync>,
    ///     ) {
    ///         if let Ok(n) = prev.downcast::<u64>() {
    ///             *ctx = *n + 1;
    ///         }
    ///     }
    /// }
    /// ```
    fn persist_connection_context(
        &self,
        _session: &session_type!(),
        _ctx: &Self::CTX,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// A request on a reused HTTP/1 keepalive connection begins: `prev` is
    /// what [`persist_connection_context`](ProxyHttp::persist_connection_context)
    /// kept from the request before it. Called right after
    /// [`new_ctx`](ProxyHttp::new_ctx), before any other hook; not called
    /// when nothing was kept.
    fn on_connection_reuse(
        &self,
        _session: &mut session_type!(),
        _ctx: &mut Self::CTX,
        _prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
    }

    /// nginx `create_request` / `reinit_request`: the header about to be
    /// sent upstream, built from the client's by the route's rules. Runs on
    /// every try.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::RequestHeader;
    /// /// Tells the server which try this is.
    /// struct TryNumber;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for TryNumber {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn upstream_request_filter(
    ///         &self,
    ///         s: &mut Session,
    ///         req: &mut RequestHeader,
    ///         _ctx: &mut (),
    ///     ) -> Result<()> {
    ///         req.insert_header("X-Try", s.request().tries().len().to_string())?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    async fn upstream_request_filter(
        &self,
        _session: &mut session_type!(),
        _upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// A try could not connect (refused, timed out, TLS failed). `e`
    /// arrives with its retry flag set to what `next_upstream` decided
    /// (`e.retry.retry()`); set it (`e.set_retry(..)`) to decide otherwise.
    /// Whatever it says, a retry needs a try left and the
    /// `next_upstream_timeout` budget. The failure counts against the
    /// server's `max_fails` either way.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Error;
    /// # use ferry::Peer;
    /// /// Retries a refused connection even where `next_upstream` is `off`.
    /// struct AlwaysRetryConnect;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for AlwaysRetryConnect {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn fail_to_connect(
    ///         &self,
    ///         _s: &mut Session,
    ///         _peer: &Peer,
    ///         _ctx: &mut (),
    ///         mut e: Box<Error>,
    ///     ) -> Box<Error> {
    ///         e.set_retry(true);
    ///         e
    ///     }
    /// }
    /// ```
    fn fail_to_connect(
        &self,
        _session: &mut session_type!(),
        _peer: &Peer,
        _ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        e
    }

    /// A try failed after connecting: sending the request, or reading the
    /// response header (an error, a timeout, an invalid header).
    /// `client_reused` says the connection came from the pool. As with
    /// [`fail_to_connect`](ProxyHttp::fail_to_connect), `e`'s retry flag is
    /// `next_upstream`'s decision, and the hook may change it; a retry also
    /// needs a body that can be sent again (buffered, or not sent yet).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Error;
    /// # use ferry::Peer;
    /// /// Never retries a POST, whatever the YAML lists.
    /// struct NoPostRetry;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for NoPostRetry {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn error_while_proxy(
    ///         &self,
    ///         _peer: &Peer,
    ///         s: &mut Session,
    ///         mut e: Box<Error>,
    ///         _ctx: &mut (),
    ///         _client_reused: bool,
    ///     ) -> Box<Error> {
    ///         if s.req_header().method == "POST" {
    ///             e.set_retry(false);
    ///         }
    ///         e
    ///     }
    /// }
    /// ```
    fn error_while_proxy(
        &self,
        _peer: &Peer,
        _session: &mut session_type!(),
        e: Box<Error>,
        _ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        e
    }

    /// nginx `process_header`: the upstream's response header, before Ferry
    /// decides whether to try the next server. Retrying is possible only
    /// here: once the header went to the client, a failure truncates.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, RetryDecision, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::ResponseHeader;
    /// /// A server that says `X-Overloaded: 1` is skipped for the next one.
    /// struct Overload;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Overload {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn upstream_response_filter(
    ///         &self,
    ///         _s: &mut Session,
    ///         resp: &mut ResponseHeader,
    ///         _ctx: &mut (),
    ///     ) -> Result<RetryDecision> {
    ///         Ok(if resp.headers.contains_key("x-overloaded") {
    ///             RetryDecision::Retry
    ///         } else {
    ///             RetryDecision::Default
    ///         })
    ///     }
    /// }
    /// ```
    async fn upstream_response_filter(
        &self,
        _session: &mut session_type!(),
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<RetryDecision> {
        Ok(RetryDecision::Default)
    }

    /// nginx's header filter: the header as it will go to the client. A
    /// body filter that changes the body's length calls
    /// [`Session::body_length_changes`] here.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::ResponseHeader;
    /// /// Hides which server answered.
    /// struct Hide;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Hide {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn response_filter(
    ///         &self,
    ///         _s: &mut Session,
    ///         resp: &mut ResponseHeader,
    ///         _ctx: &mut (),
    ///     ) -> Result<()> {
    ///         resp.remove_header("x-powered-by");
    ///         Ok(())
    ///     }
    /// }
    /// ```
    async fn response_filter(
        &self,
        _session: &mut session_type!(),
        _response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// Each piece of the response body as it is read from the upstream,
    /// before the pipe buffers it (nginx's `input_filter`); once more with
    /// `None` and `end_of_stream` at its end. What it leaves is what the
    /// pipe buffers, spills and sends (through
    /// [`response_body_filter`](ProxyHttp::response_body_filter)). An error
    /// cuts the response short.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Request};
    /// # use ferry::bytes::Bytes;
    /// # use ferry::pingora_error::Result;
    /// /// Counts the bytes each upstream sent.
    /// struct Meter;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Meter {
    ///     type CTX = u64;
    ///     fn new_ctx(&self) -> u64 { 0 }
    ///
    ///     fn upstream_response_body_filter(
    ///         &self,
    ///         _r: &Request,
    ///         body: &mut Option<Bytes>,
    ///         _end_of_stream: bool,
    ///         read: &mut u64,
    ///     ) -> Result<()> {
    ///         *read += body.as_ref().map_or(0, |b| b.len() as u64);
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn upstream_response_body_filter(
        &self,
        _request: &Request,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// nginx's body filter: each piece of the response body on its way to
    /// the client (both pipes). Change it, or set it to `None` to hold it
    /// back; after the last piece it is called once more with `None` and
    /// `end_of_stream`. A filter that changes the length calls
    /// [`Session::body_length_changes`] in `response_filter`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Request};
    /// # use ferry::bytes::Bytes;
    /// # use ferry::pingora_error::Result;
    /// /// Upper-cases a text body (same length: no reframing needed).
    /// struct Shout;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Shout {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn response_body_filter(
    ///         &self,
    ///         _r: &Request,
    ///         body: &mut Option<Bytes>,
    ///         _end_of_stream: bool,
    ///         _ctx: &mut (),
    ///     ) -> Result<()> {
    ///         if let Some(b) = body {
    ///             *b = Bytes::from(b.to_ascii_uppercase());
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn response_body_filter(
        &self,
        _request: &Request,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether [`response_body_filter`](ProxyHttp::response_body_filter)
    /// must see every response body. A program that leaves it as it is may
    /// say `false`: a cache HIT's body then goes from the entry file to a
    /// plain-TCP HTTP/1 client with sendfile(2), never passing through it.
    fn filters_response_body(&self) -> bool {
        true
    }

    /// Whether the program defines any hook of its own. A program that
    /// leaves them all as they are (the `ferry` binary's [`DefaultProxy`])
    /// may say `false`: the calls that would do nothing are then not made
    /// (`early_request_filter`, `request_filter`, `request_body_filter` on
    /// an empty body, `upstream_peer`, `logging`), each a boxed future for
    /// every request. The `filters_*` and `watches_upstream_connections`
    /// say the same of one hook each.
    fn defines_hooks(&self) -> bool {
        true
    }

    /// Whether [`connected_to_upstream`](ProxyHttp::connected_to_upstream)
    /// must hear of every try's connection. A program that leaves it as it
    /// is may say `false`: the connection's digest and the peer's view are
    /// then not made for it.
    fn watches_upstream_connections(&self) -> bool {
        true
    }

    /// Whether [`upstream_request_filter`](ProxyHttp::upstream_request_filter)
    /// must see every request that goes to a server. A program that leaves
    /// it as it is may say `false`: a request to an HTTP/1 server whose
    /// route does not cache is then written straight from the client's
    /// header, with no header of its own made, and never passes through it.
    fn filters_upstream_request(&self) -> bool {
        true
    }

    /// Whether [`upstream_response_filter`](ProxyHttp::upstream_response_filter)
    /// must see every response header a server sends. A program that
    /// leaves it as it is may say `false`: the header is then not made into
    /// a `ResponseHeader` for it.
    fn filters_upstream_response(&self) -> bool {
        true
    }

    /// Whether [`response_filter`](ProxyHttp::response_filter) must see
    /// every response header. A program that leaves it as it is may say
    /// `false`: a cache HIT's header then goes to an HTTP/1 client
    /// straight from the one its entry keeps, with no copy made for it, and
    /// a server's header (when nothing else reads it as one) from the lines
    /// the server sent, with the route's edits.
    fn filters_response_header(&self) -> bool {
        true
    }

    /// The trailers an HTTP/2 server sent after the response body (gRPC's
    /// `grpc-status`), as they were read, after the last call of
    /// [`upstream_response_body_filter`](ProxyHttp::upstream_response_body_filter).
    /// Change them or clear them; an error cuts the response short.
    /// (Pingora's hook of this name.)
    fn upstream_response_trailer_filter(
        &self,
        _request: &Request,
        _trailers: &mut http::HeaderMap,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// The trailers on their way to an HTTP/2 client, after the last call
    /// of [`response_body_filter`](ProxyHttp::response_body_filter). An
    /// empty map sends none (the body's last frame ends the stream). An
    /// HTTP/1 client gets no trailers and this hook is not called.
    /// (Pingora's hook of this name.)
    fn response_trailer_filter(
        &self,
        _request: &Request,
        _trailers: &mut http::HeaderMap,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// The cache key of a request on a route with `cache:` (Pingora's
    /// `cache_key_callback`; nginx `proxy_cache_key`): `key` is the route's
    /// `key` template rendered; what this returns is the key looked up and
    /// stored under. Runs once per request, before the lookup.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// /// One entry per tenant: the `X-Tenant` header joins the key.
    /// struct PerTenant;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for PerTenant {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn cache_key_callback(&self, s: &Session, key: String, _ctx: &mut ()) -> Result<String> {
    ///         let tenant = s.req_header().headers.get("x-tenant");
    ///         let tenant = tenant.and_then(|v| v.to_str().ok()).unwrap_or("-");
    ///         Ok(format!("{tenant}|{key}"))
    ///     }
    /// }
    /// ```
    fn cache_key_callback(
        &self,
        _session: &session_type!(),
        key: String,
        _ctx: &mut Self::CTX,
    ) -> Result<String> {
        Ok(key)
    }

    /// Whether this request uses its route's cache at all (Pingora's
    /// `request_cache_filter`): `false` serves it as if the route had no
    /// cache (no lookup, nothing stored, no `$upstream_cache_status`).
    /// Runs after `request_filter` for the methods the cache serves.
    fn request_cache_filter(
        &self,
        _session: &session_type!(),
        _ctx: &mut Self::CTX,
    ) -> Result<bool> {
        Ok(true)
    }

    /// An entry was found (`fresh` when it has not expired): `true` treats
    /// it as expired (revalidated, refetched or answered stale as the
    /// route says), Pingora's `cache_hit_filter` forcing invalidation.
    fn cache_hit_filter(
        &self,
        _session: &session_type!(),
        _header: &ResponseHeader,
        _fresh: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<bool> {
        Ok(false)
    }

    /// A response is about to be stored (Pingora's `cache_miss`, called
    /// when a cacheable response is admitted).
    fn cache_miss(&self, _session: &session_type!(), _ctx: &mut Self::CTX) {}

    /// The route's `use_stale` would answer with the expired entry: `false`
    /// refuses (the upstream's answer or Ferry's error goes to the client
    /// instead). `error` is the upstream's failure (an `HTTPStatus` error
    /// for a status `use_stale` lists), `None` while another request
    /// updates the entry (`updating`).
    fn should_serve_stale(
        &self,
        _session: &session_type!(),
        _ctx: &mut Self::CTX,
        _error: Option<&Error>,
    ) -> bool {
        true
    }

    /// Whether a response is stored, and for how long (Pingora's
    /// `response_cache_filter`): `decision` is nginx's, from the headers and
    /// the route's `valid` (`Set-Cookie`, `Cache-Control`,
    /// `X-Accel-Expires`, `Expires`, `Vary: *`); what this returns is
    /// final. Also asked for a 304 that revalidates an entry (with the
    /// stored status): `NoStore` then leaves the entry's time as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, CacheDecision, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::ResponseHeader;
    /// /// Never store what the upstream marks as a draft.
    /// struct NoDrafts;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for NoDrafts {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn response_cache_filter(
    ///         &self,
    ///         _s: &Session,
    ///         resp: &ResponseHeader,
    ///         decision: CacheDecision,
    ///         _ctx: &mut (),
    ///     ) -> Result<CacheDecision> {
    ///         if resp.headers.contains_key("x-draft") {
    ///             return Ok(CacheDecision::NoStore("draft"));
    ///         }
    ///         Ok(decision)
    ///     }
    /// }
    /// ```
    fn response_cache_filter(
        &self,
        _session: &session_type!(),
        _response: &ResponseHeader,
        decision: CacheDecision,
        _ctx: &mut Self::CTX,
    ) -> Result<CacheDecision> {
        Ok(decision)
    }

    /// Every error Ferry answers itself goes here: a request it refuses
    /// (400, 501), no route (404), a body too large (413) or unreadable
    /// (400, 408), every try failed (502, 504), a hook's error (its
    /// `HTTPStatus`, else 500). The default sends Ferry's error page (the
    /// route's `error_pages` when it has one for the status); a program may
    /// answer with [`Session::respond`] instead. [`error_status`] is the
    /// status nginx would give `e`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, error_status, FailToProxy, ProxyHttp, Session};
    /// # use ferry::pingora_error::Error;
    /// # use ferry::pingora_http::ResponseHeader;
    /// /// Errors as JSON.
    /// struct JsonErrors;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for JsonErrors {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn fail_to_proxy(&self, s: &mut Session, e: &Error, _ctx: &mut ()) -> FailToProxy {
    ///         let code = error_status(e);
    ///         if code > 0 {
    ///             if let Ok(mut h) = ResponseHeader::build(code, None) {
    ///                 let _ = h.insert_header("Content-Type", "application/json");
    ///                 let body = format!("{{\"error\":{code}}}\n");
    ///                 let _ = s.respond(h, body.into()).await;
    ///             }
    ///         }
    ///         FailToProxy { error_code: code, can_reuse_downstream: true }
    ///     }
    /// }
    /// ```
    async fn fail_to_proxy(
        &self,
        session: &mut session_type!(),
        e: &Error,
        _ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = error_status(e);
        if code > 0 {
            if let Err(e) = session.respond_error(code).await {
                log::debug!("could not send the error page: {e}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: true,
        }
    }

    /// Whether to leave a request's error out of the error log (it still
    /// reaches `logging`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::{Error, ErrorType};
    /// /// Keeps a program's own 403s out of the error log.
    /// struct Quiet;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Quiet {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn suppress_error_log(&self, _s: &Session, _ctx: &(), e: &Error) -> bool {
    ///         matches!(e.etype(), ErrorType::HTTPStatus(403))
    ///     }
    /// }
    /// ```
    fn suppress_error_log(
        &self,
        _session: &session_type!(),
        _ctx: &Self::CTX,
        _error: &Error,
    ) -> bool {
        false
    }

    /// What the error log says about the request an error belongs to. The
    /// default is Pingora's summary: method, path, `Host`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// /// Adds the request id to error lines.
    /// struct WithId;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for WithId {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     fn request_summary(&self, s: &Session, _ctx: &()) -> String {
    ///         format!("{} id {}", s.summary(), s.request().id())
    ///     }
    /// }
    /// ```
    fn request_summary(&self, session: &session_type!(), _ctx: &Self::CTX) -> String {
        session.summary()
    }

    /// nginx's log phase: always last, with every try, the outcome, and the
    /// error the request ended with, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Error;
    /// /// One line per request, with its tries.
    /// struct Log;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Log {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn logging(&self, s: &mut Session, e: Option<&Error>, _ctx: &mut ()) {
    ///         let r = s.request();
    ///         let tries: Vec<&str> = r.tries().iter().map(|t| t.addr.as_str()).collect();
    ///         let error = e.map(|e| e.to_string()).unwrap_or_default();
    ///         eprintln!("{} {} [{}] {error}", r.uri(), r.status(), tries.join(" "));
    ///     }
    /// }
    /// ```
    async fn logging(
        &self,
        _session: &mut session_type!(),
        _e: Option<&Error>,
        _ctx: &mut Self::CTX,
    ) {
    }
}

/// The proxy the YAML describes, with no hook overridden.
pub struct DefaultProxy;

impl ProxyHttp for DefaultProxy {
    type CTX = ();
    fn new_ctx(&self) {}
    fn watches_upstream_connections(&self) -> bool {
        false
    }
    fn defines_hooks(&self) -> bool {
        false
    }
    fn filters_response_body(&self) -> bool {
        false
    }
    fn filters_upstream_request(&self) -> bool {
        false
    }
    fn filters_upstream_response(&self) -> bool {
        false
    }
    fn filters_response_header(&self) -> bool {
        false
    }
}
