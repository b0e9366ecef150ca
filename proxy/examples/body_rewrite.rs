//! A response-body filter that rewrites text while buffering is on:
//! every `from` becomes `to` in text responses, streamed (a match split
//! across two pieces is still found: the filter holds back the last
//! `from.len() - 1` bytes of each piece). The length changes, so the
//! response is reframed for the client with `Session::body_length_changes`:
//! chunked for HTTP/1.1, ended by the close for HTTP/1.0, HTTP/2 frames.
//!
//! ```sh
//! cargo run -p ferry --example body_rewrite -- -c proxy/examples/body_rewrite.yaml
//! ```

use ferry::bytes::{Bytes, BytesMut};
use ferry::pingora_http::ResponseHeader;
use ferry::{async_trait, ProxyHttp, Request, Session};
use serde::Deserialize;

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Settings {
    from: String,
    to: String,
}

struct Rewrite(Settings);

/// Per request: whether this response is rewritten, and the held-back tail.
#[derive(Default)]
struct Ctx {
    active: bool,
    tail: BytesMut,
}

impl Rewrite {
    /// Replace every `from` in `data`, left to right. Unless this is the end,
    /// stop at a tail that could be the start of a match the next piece
    /// completes; returns the output and how much of `data` it consumed.
    fn rewrite(&self, data: &[u8], end: bool) -> (BytesMut, usize) {
        let (from, to) = (self.0.from.as_bytes(), self.0.to.as_bytes());
        let mut out = BytesMut::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            if !from.is_empty() && rest.starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else if !end && rest.len() < from.len() && from.starts_with(rest) {
                break;
            } else {
                out.extend_from_slice(&rest[..1]);
                i += 1;
            }
        }
        (out, i)
    }
}

#[async_trait]
impl ProxyHttp for Rewrite {
    type CTX = Ctx;
    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> ferry::pingora_error::Result<()> {
        ctx.active = resp
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/"));
        if ctx.active {
            s.body_length_changes(resp)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _: &Request,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> ferry::pingora_error::Result<()> {
        if !ctx.active {
            return Ok(());
        }
        let mut data = std::mem::take(&mut ctx.tail);
        if let Some(b) = body.take() {
            data.extend_from_slice(&b);
        }
        let (out, used) = self.rewrite(&data, end);
        ctx.tail = data.split_off(used);
        *body = (!out.is_empty()).then(|| out.freeze());
        Ok(())
    }
}

fn main() {
    let code = ferry::Program::new("body_rewrite")
        .default_conf("proxy/examples/body_rewrite.yaml")
        .settings("rewrite")
        .run(|start: ferry::Start<Settings>| {
            Ok(Rewrite(start.settings.unwrap_or(Settings {
                from: "Hello".into(),
                to: "Howdy".into(),
            })))
        });
    std::process::exit(code);
}
