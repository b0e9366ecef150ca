//! A program built on Ferry that overrides every hook, for the tests that
//! check each one runs where it is documented (requests, upgrades,
//! retries, Ferry's own errors):
//!
//! - `early_request_filter`: `X-Rewrite: PATH` replaces the path before
//!   routing.
//! - `request_filter`: `/api/` needs `X-Api-Key: secret` (401 without);
//!   `X-Sub: GROUP` answers with a subrequest to GROUP.
//!   `X-Limit-Tenant: NAME` asks the `limit_req` zone `free` (or `pro`
//!   with `X-Plan: pro`) about NAME, and returns its refusal (429).
//! - `request_body_filter`: `secret` in a body becomes `******`; a body
//!   with `forbidden` gets 403. (`X-Eat-Body: 1` has `request_filter` read
//!   the body itself instead, the mistake Ferry answers with 500.)
//! - `upstream_peer`: `X-Group: NAME` sends the tries to that group,
//!   `X-Peer: ADDR` to that address (a run-time peer; `X-Peer-Unix: PATH`
//!   to a Unix socket; `X-Peer-H2: 1` over HTTP/2; `X-Peer-Tls: SNI` over TLS, verified with
//!   `X-Peer-Ca: FILE`, presenting `X-Peer-Cert: CERT KEY`), `X-Fallback:
//!   NAME` sends every try after the first to that group.
//! - `fail_to_connect`: `X-Retry-Connect: no` forbids retrying a refused
//!   connection.
//! - `upstream_response_body_filter`: `X-Upper: 1` upper-cases the body,
//!   `X-Double: 1` writes it twice (a body of another length).
//! - `upstream_response_trailer_filter` adds `x-hooked-trailer: upstream`;
//!   `response_trailer_filter` removes `x-secret-trailer`.
//! - `fail_to_proxy`: every error Ferry answers comes back as
//!   `{"hooked_error":CODE}`.
//! - `suppress_error_log`: `X-Quiet: 1` keeps the error out of the log;
//!   `request_summary` says `hooked summary: URI`.
//! - `request_cache_filter`: `X-No-Cache` keeps the request out of the
//!   cache; `cache_hit_filter`: `X-Invalidate` treats an entry as expired;
//!   `cache_miss` is listed in the hooks; `should_serve_stale`: `X-No-Stale`
//!   refuses a stale answer.
//! - `cache_key_callback`: `X-Tenant: NAME` puts the tenant into the
//!   cache key; `response_cache_filter`: a response with `X-Draft` is
//!   never stored.
//! - `persist_connection_context` / `on_connection_reuse` count a
//!   connection's requests: `response_filter` sends `X-Conn-Requests`.
//!   `X-Keepalive: SECS` sets the connection's keepalive timeout through
//!   Pingora's session (`request_filter`).
//! - a background task of its own (`Program::background`) and a metric
//!   of its own (`hooked_logged_total`, counted in `logging`).
//! - every hook appends its name to the context; `upstream_request_filter`
//!   sends the list upstream as `X-Hooks`, `response_filter` sends it to
//!   the client, and `logging` writes a line with the status, the tries,
//!   the hooks, the upstream body bytes and the error.

use ferry::bytes::Bytes;
use ferry::conf::LimitReq;
use ferry::pingora_core::protocols::Digest;
use ferry::pingora_error::{Error, ErrorType, Result};
use ferry::pingora_http::{RequestHeader, ResponseHeader};
use ferry::{
    async_trait, error_status, CacheDecision, FailToProxy, Peer, PeerChoice, ProxyHttp, Request,
    RetryDecision, Session,
};

struct Hooked;

#[derive(Default)]
struct Ctx {
    hooks: Vec<String>,
    /// Requests on this connection so far, this one included (kept from
    /// one request to the next by `persist_connection_context`).
    conn_requests: u64,
    upper: bool,
    double: bool,
    /// `upstream_response_body_filter` was called with the end.
    saw_end: bool,
    /// `request_body_filter` was called with the end.
    body_end: bool,
    upstream_bytes: u64,
}

impl Ctx {
    fn push(&mut self, hook: impl Into<String>) {
        self.hooks.push(hook.into());
    }
}

fn header<'a>(s: &'a Session, name: &str) -> Option<&'a str> {
    s.req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// The run-time peer the `X-Peer*` headers describe.
fn runtime_peer(s: &Session) -> Result<Option<Peer>> {
    let mut peer = match (header(s, "x-peer"), header(s, "x-peer-unix")) {
        (_, Some(path)) => Peer::unix(path),
        (Some(addr), None) => Peer::new(
            addr.parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad X-Peer"))?,
        ),
        (None, None) => return Ok(None),
    };
    if let Some(sni) = header(s, "x-peer-tls") {
        peer = peer.tls(sni);
    }
    if header(s, "x-peer-h2").is_some() {
        peer = peer.http2();
    }
    if let Some(ca) = header(s, "x-peer-ca") {
        peer = peer.ca_file(ca);
    }
    if let Some((cert, key)) = header(s, "x-peer-cert").and_then(|v| v.split_once(' ')) {
        peer = peer.client_cert(cert, key);
    }
    Ok(Some(peer))
}

#[async_trait]
impl ProxyHttp for Hooked {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            conn_requests: 1,
            ..Ctx::default()
        }
    }

    fn persist_connection_context(
        &self,
        _s: &Session,
        ctx: &Ctx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(ctx.conn_requests))
    }

    fn on_connection_reuse(
        &self,
        _s: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(n) = prev.downcast::<u64>() {
            ctx.conn_requests = *n + 1;
        }
    }

    async fn early_request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.push("early_request_filter");
        if let Some(path) = header(s, "x-rewrite").map(str::to_string) {
            let uri = path
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad X-Rewrite"))?;
            s.req_header_mut().set_uri(uri);
        }
        Ok(())
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.push("request_filter");
        ctx.upper = header(s, "x-upper").is_some();
        ctx.double = header(s, "x-double").is_some();
        if let Some(secs) = header(s, "x-keepalive").and_then(|v| v.parse().ok()) {
            s.set_keepalive(Some(secs));
        }
        let req = s.req_header();
        let key = req.headers.get("x-api-key").map(|v| v.as_bytes());
        if req.uri.path().starts_with("/api/") && key != Some(b"secret") {
            s.respond(ResponseHeader::build(401, None)?, Bytes::from("no key\n"))
                .await?;
            return Ok(true);
        }
        if req.uri.path() == "/pingora-429" {
            // Pingora's own idiom (its rate limiter example): the answer
            // written on Pingora's session directly.
            let mut h = ResponseHeader::build(429, None)?;
            h.insert_header("Content-Length", "0")?;
            s.write_response_header(Box::new(h)).await?;
            return Ok(true);
        }
        if let Some(tenant) = header(s, "x-limit-tenant").map(str::to_string) {
            // A zone asked by the hook: the tenant is the key, the plan
            // picks the zone (and its burst).
            let pro = header(s, "x-plan") == Some("pro");
            let rule = LimitReq {
                zone: if pro { "pro" } else { "free" }.to_string(),
                burst: if pro { 10 } else { 1 },
                nodelay: true,
                delay: 0,
                status: 429,
                dry_run: false,
            };
            if let Some(refusal) = s.limit_req(&rule, &tenant).await?.refusal {
                return Err(refusal.into_error());
            }
        }
        if header(s, "x-eat-body").is_some() {
            // The mistake Ferry must not turn into an empty body upstream.
            while s.read_request_body().await?.is_some() {}
        }
        if let Some(group) = header(s, "x-sub").map(str::to_string) {
            let ask = RequestHeader::build("GET", b"/sub", None)?;
            let (status, body) = match s.subrequest(&group, ask, Bytes::new(), 1 << 16).await {
                Ok(r) => (r.status, r.body),
                Err(e) => match e.etype() {
                    ErrorType::HTTPStatus(c) => (*c, Bytes::new()),
                    _ => (500, Bytes::new()),
                },
            };
            s.respond(ResponseHeader::build(status, None)?, body)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.body_end |= end_of_stream;
        if !ctx.hooks.iter().any(|h| h == "request_body_filter") {
            ctx.push("request_body_filter");
        }
        if let Some(piece) = body {
            let text = String::from_utf8_lossy(piece);
            if text.contains("forbidden") {
                return Error::e_explain(ErrorType::HTTPStatus(403), "a forbidden body");
            }
            *piece = Bytes::from(text.replace("secret", "******"));
        }
        if end_of_stream {
            ctx.push("request_body_filter(end)");
        }
        Ok(())
    }

    async fn upstream_peer(&self, s: &mut Session, ctx: &mut Ctx) -> Result<PeerChoice> {
        ctx.push("upstream_peer");
        if let Some(g) = header(s, "x-fallback") {
            if !s.request().tries().is_empty() {
                return Ok(PeerChoice::Group(g.to_string()));
            }
        }
        if let Some(peer) = runtime_peer(s)? {
            return Ok(PeerChoice::Peer(Box::new(peer.host("runtime.test"))));
        }
        Ok(match header(s, "x-group") {
            Some(g) => PeerChoice::Group(g.to_string()),
            None => PeerChoice::Route,
        })
    }

    async fn connected_to_upstream(
        &self,
        _s: &mut Session,
        reused: bool,
        _peer: &ferry::Peer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let how = if reused { "reused" } else { "new" };
        let timed = digest.is_some_and(|d| !d.timing_digest.is_empty());
        ctx.push(format!(
            "connected_to_upstream({how},fd={},timed={timed})",
            fd > 0
        ));
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.push("upstream_request_filter");
        req.insert_header("X-Hooks", ctx.hooks.join(","))?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        s: &mut Session,
        _peer: &ferry::Peer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.push(format!("fail_to_connect(retry={})", e.retry()));
        if header(s, "x-retry-connect") == Some("no") {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &ferry::Peer,
        _s: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        reused: bool,
    ) -> Box<Error> {
        ctx.push(format!(
            "error_while_proxy(retry={},reused={reused})",
            e.retry()
        ));
        e
    }

    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RetryDecision> {
        ctx.push("upstream_response_filter");
        Ok(RetryDecision::Default)
    }

    fn request_cache_filter(&self, s: &Session, _ctx: &mut Ctx) -> Result<bool> {
        Ok(header(s, "x-no-cache").is_none())
    }

    fn cache_hit_filter(
        &self,
        s: &Session,
        _header: &ResponseHeader,
        _fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        ctx.push("cache_hit_filter");
        Ok(header(s, "x-invalidate").is_some())
    }

    fn cache_miss(&self, _s: &Session, ctx: &mut Ctx) {
        ctx.push("cache_miss");
    }

    fn should_serve_stale(&self, s: &Session, _ctx: &mut Ctx, _e: Option<&Error>) -> bool {
        header(s, "x-no-stale").is_none()
    }

    fn cache_key_callback(&self, s: &Session, key: String, ctx: &mut Ctx) -> Result<String> {
        ctx.push("cache_key_callback");
        Ok(format!("{}|{key}", header(s, "x-tenant").unwrap_or("-")))
    }

    fn response_cache_filter(
        &self,
        _s: &Session,
        resp: &ResponseHeader,
        decision: CacheDecision,
        ctx: &mut Ctx,
    ) -> Result<CacheDecision> {
        ctx.push("response_cache_filter");
        if resp.headers.contains_key("x-draft") {
            return Ok(CacheDecision::NoStore("draft"));
        }
        Ok(decision)
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.push("response_filter");
        if ctx.double {
            s.body_length_changes(resp)?;
        }
        resp.insert_header("X-Hooks", ctx.hooks.join(","))?;
        resp.insert_header("X-Conn-Requests", ctx.conn_requests.to_string())?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _r: &Request,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.saw_end |= end_of_stream;
        if let Some(b) = body {
            ctx.upstream_bytes += b.len() as u64;
            if ctx.upper {
                *b = Bytes::from(b.to_ascii_uppercase());
            }
            if ctx.double {
                *b = Bytes::from(b.repeat(2));
            }
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _r: &Request,
        trailers: &mut ferry::http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.push("upstream_response_trailer_filter");
        trailers.insert("x-hooked-trailer", "upstream".parse().expect("a value"));
        Ok(())
    }

    fn response_trailer_filter(
        &self,
        _r: &Request,
        trailers: &mut ferry::http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.push("response_trailer_filter");
        trailers.remove("x-secret-trailer");
        Ok(())
    }

    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        ctx.push("fail_to_proxy");
        let code = error_status(e);
        if code > 0 {
            if let Ok(mut h) = ResponseHeader::build(code, None) {
                let _ = h.insert_header("Content-Type", "application/json");
                let body = format!("{{\"hooked_error\":{code}}}");
                let _ = s.respond(h, Bytes::from(body)).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: true,
        }
    }

    fn suppress_error_log(&self, s: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        header(s, "x-quiet").is_some()
    }

    fn request_summary(&self, s: &Session, _ctx: &Ctx) -> String {
        format!("hooked summary: {}", s.request().uri())
    }

    async fn logging(&self, s: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        logged_total().inc();
        let r = s.request();
        let tries: Vec<&str> = r.tries().iter().map(|t| t.addr.as_str()).collect();
        let error = e.map_or_else(|| "-".to_string(), |e| e.to_string());
        eprintln!(
            "logging: uri={} status={} tries=[{}] hooks={} upstream_bytes={} body_end={} response_end={} error={}",
            r.uri(),
            r.status(),
            tries.join(" "),
            ctx.hooks.join(","),
            ctx.upstream_bytes,
            ctx.body_end,
            ctx.saw_end,
            error.replace('\n', " ")
        );
    }
}

fn main() {
    let code = ferry::Program::new("ferry")
        .version(env!("CARGO_PKG_VERSION"))
        .background("hooked background", Background)
        .run::<ferry::serde::de::IgnoredAny, _>(|_| Ok(Hooked));
    std::process::exit(code);
}

/// A background task of the program's own: says it runs, waits for the stop.
struct Background;

#[async_trait]
impl ferry::pingora_core::services::background::BackgroundService for Background {
    async fn start(&self, mut shutdown: ferry::pingora_core::server::ShutdownWatch) {
        eprintln!("hooked background: started");
        let _ = shutdown.changed().await;
        eprintln!("hooked background: stopped");
    }
}

/// A metric of the program's own, on Ferry's `/metrics`.
fn logged_total() -> &'static ferry::prometheus::IntCounter {
    static C: std::sync::OnceLock<ferry::prometheus::IntCounter> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let c = ferry::prometheus::IntCounter::new("hooked_logged_total", "Requests logged")
            .expect("a valid metric");
        let _ = ferry::metrics_registry().register(Box::new(c.clone()));
        c
    })
}
