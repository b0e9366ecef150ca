//! A request-body gate: a JSON body that sets a forbidden field (by
//! default `"admin"`) is refused with 403 before any server sees it; every
//! other body goes upstream byte for byte, on every try.
//!
//! The body passes through `request_body_filter` piece by piece as Ferry
//! reads it; with `request_buffering: true` (the default) nothing is sent
//! upstream before the whole body was read, so the gate decides at the end
//! and a refused body never leaves Ferry. Retries replay the body Ferry
//! buffered, which is the filtered one.
//!
//! ```sh
//! cargo run -p ferry --example body_gate -- -c proxy/examples/body_gate.yaml
//! curl -d '{"name": "x"}' localhost:8080/users        # passes
//! curl -d '{"admin": true}' localhost:8080/users      # 403
//! ```

use ferry::bytes::{Bytes, BytesMut};
use ferry::pingora_error::{Error, ErrorType, Result};
use ferry::{async_trait, ProxyHttp, Session};
use serde::Deserialize;

/// The `body_gate:` section of the YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Top-level JSON fields a body may not set.
    forbidden: Vec<String>,
    /// Bodies larger than this are not inspected, only refused (bytes).
    #[serde(default = "max_inspected")]
    max_inspected: usize,
}

fn max_inspected() -> usize {
    1 << 20
}

struct Gate(Settings);

/// Per request: is the body JSON, and what of it was seen so far.
#[derive(Default)]
struct Seen {
    json: bool,
    body: BytesMut,
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = Seen;

    fn new_ctx(&self) -> Seen {
        Seen::default()
    }

    async fn request_filter(&self, s: &mut Session, seen: &mut Seen) -> Result<bool> {
        seen.json = s
            .req_header()
            .headers
            .get("content-type")
            .is_none_or(|v| v.as_bytes().starts_with(b"application/json"));
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        seen: &mut Seen,
    ) -> Result<()> {
        if !seen.json {
            return Ok(());
        }
        // Each piece goes on unchanged; a copy is kept to judge the whole.
        if let Some(piece) = body {
            if seen.body.len() + piece.len() > self.0.max_inspected {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "a JSON body too large to inspect",
                );
            }
            seen.body.extend_from_slice(piece);
        }
        if end_of_stream && !seen.body.is_empty() {
            let value: serde_json::Value = serde_json::from_slice(&seen.body).map_err(|e| {
                Error::explain(ErrorType::HTTPStatus(400), format!("not JSON: {e}"))
            })?;
            if let Some(field) = self
                .0
                .forbidden
                .iter()
                .find(|f| value.get(f.as_str()).is_some())
            {
                return Error::e_explain(
                    ErrorType::HTTPStatus(403),
                    format!("the body sets `{field}`"),
                );
            }
        }
        Ok(())
    }
}

fn main() {
    let code = ferry::Program::new("body_gate")
        .version("1.0.0")
        .about("Refuses JSON bodies that set a forbidden field")
        .default_conf("proxy/examples/body_gate.yaml")
        .settings("body_gate")
        .run(|mut start: ferry::Start<Settings>| {
            Ok(Gate(start.settings.take().unwrap_or(Settings {
                forbidden: vec!["admin".into()],
                max_inspected: max_inspected(),
            })))
        });
    std::process::exit(code);
}
