//! An `auth_request` gate: before a request goes upstream, a subrequest
//! asks an auth service. 2xx: the request passes, with headers copied from
//! the auth answer (e.g. `X-User`); 401 or 403: the client gets that status
//! (401 keeps `WWW-Authenticate`); anything else: 500, as nginx's
//! `auth_request` does.
//!
//! ```sh
//! cargo run -p ferry --example auth_gate -- -c proxy/examples/auth_gate.yaml
//! ```

use ferry::bytes::Bytes;
use ferry::pingora_http::{RequestHeader, ResponseHeader};
use ferry::{async_trait, ProxyHttp, Session};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The upstream group of the auth service.
    group: String,
    /// The path asked there.
    path: String,
    /// Headers copied from a 2xx auth answer onto the request.
    #[serde(default)]
    copy_headers: Vec<String>,
}

struct Gate(Settings);

async fn deny(
    s: &mut Session<'_>,
    status: u16,
    auth: Option<&ResponseHeader>,
) -> ferry::pingora_error::Result<bool> {
    let mut h = ResponseHeader::build(status, None)?;
    if let Some(a) = auth.filter(|_| status == 401) {
        for v in a.headers.get_all("www-authenticate") {
            h.append_header("WWW-Authenticate", v.clone())?;
        }
    }
    s.respond(h, Bytes::new()).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(
        &self,
        s: &mut Session,
        _: &mut (),
    ) -> ferry::pingora_error::Result<bool> {
        let mut ask = RequestHeader::build("GET", self.0.path.as_bytes(), None)?;
        let client = s.req_header();
        let original = String::from_utf8_lossy(client.raw_path()).into_owned();
        if let Some(auth) = client.headers.get("authorization").cloned() {
            ask.insert_header("Authorization", auth)?;
        }
        ask.insert_header("X-Original-URI", original)?;
        let answer = match s
            .subrequest(&self.0.group, ask, Bytes::new(), 64 * 1024)
            .await
        {
            Ok(a) => a,
            Err(_) => return deny(s, 500, None).await,
        };
        match answer.status {
            200..=299 => {
                for name in &self.0.copy_headers {
                    if let Some(v) = answer.header.headers.get(name.as_str()).cloned() {
                        s.req_header_mut().insert_header(name.clone(), v)?;
                    }
                }
                Ok(false)
            }
            401 | 403 => deny(s, answer.status, Some(&answer.header)).await,
            _ => deny(s, 500, None).await,
        }
    }
}

fn main() {
    let code = ferry::Program::new("auth_gate")
        .default_conf("proxy/examples/auth_gate.yaml")
        .settings("auth")
        .run(|start: ferry::Start<Settings>| {
            let s = start.settings.unwrap_or(Settings {
                group: "auth".into(),
                path: "/check".into(),
                copy_headers: vec!["X-User".into()],
            });
            // The group the subrequests go to must exist: checked at start
            // and by `-t`, not found out by the first request.
            if start.config.upstream(&s.group).is_none() {
                return Err(ferry::conf::Problem::at_value(
                    "auth.group",
                    format!("unknown upstream `{}`", s.group),
                ));
            }
            Ok(Gate(s))
        });
    std::process::exit(code);
}
