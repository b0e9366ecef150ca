//! A program built on Ferry that overrides every hook, for the tests that
//! check each one runs on every path (requests, upgrades, subrequests):
//!
//! - `request_filter`: `/api/` needs `X-Api-Key: secret` (401 without);
//!   `X-Sub: GROUP` answers with a subrequest to GROUP (its status and
//!   body).
//! - `upstream_peer`: `X-Group: NAME` sends the tries to that group.
//! - every hook appends its name to the context; `upstream_request_filter`
//!   sends the list upstream as `X-Hooks`, `response_filter` sends it to
//!   the client, and `logging` writes a line with the status and tries.

use ferry::bytes::Bytes;
use ferry::pingora_error::Result;
use ferry::pingora_http::{RequestHeader, ResponseHeader};
use ferry::{async_trait, PeerChoice, ProxyHttp, RetryDecision, Session};

struct Hooked;

#[async_trait]
impl ProxyHttp for Hooked {
    type CTX = Vec<&'static str>;

    fn new_ctx(&self) -> Self::CTX {
        Vec::new()
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.push("request_filter");
        let req = s.req_header();
        let key = req.headers.get("x-api-key").map(|v| v.as_bytes());
        if req.uri.path().starts_with("/api/") && key != Some(b"secret") {
            s.respond(ResponseHeader::build(401, None)?, Bytes::from("no key\n"))
                .await?;
            return Ok(true);
        }
        let sub = req
            .headers
            .get("x-sub")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(group) = sub {
            let ask = RequestHeader::build("GET", b"/sub", None)?;
            let (status, body) = match s.subrequest(&group, ask, Bytes::new(), 1 << 16).await {
                Ok(r) => (r.status, r.body),
                Err(e) => match e.etype() {
                    ferry::pingora_error::ErrorType::HTTPStatus(c) => (*c, Bytes::new()),
                    _ => (500, Bytes::new()),
                },
            };
            s.respond(ResponseHeader::build(status, None)?, body)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, s: &mut Session, ctx: &mut Self::CTX) -> Result<PeerChoice> {
        ctx.push("upstream_peer");
        Ok(match s.req_header().headers.get("x-group") {
            Some(g) => PeerChoice::Group(String::from_utf8_lossy(g.as_bytes()).into_owned()),
            None => PeerChoice::Route,
        })
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.push("upstream_request_filter");
        req.insert_header("X-Hooks", ctx.join(","))?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RetryDecision> {
        ctx.push("upstream_response_filter");
        Ok(RetryDecision::Default)
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.push("response_filter");
        resp.insert_header("X-Hooks", ctx.join(","))?;
        Ok(())
    }

    async fn logging(&self, s: &mut Session, ctx: &mut Self::CTX) {
        let r = s.request();
        let tries: Vec<&str> = r.tries.iter().map(|t| t.addr.as_str()).collect();
        eprintln!(
            "logging: uri={} status={} tries=[{}] hooks={}",
            r.uri,
            r.status,
            tries.join(" "),
            ctx.join(",")
        );
    }
}

fn main() {
    std::process::exit(ferry::main(Hooked));
}
