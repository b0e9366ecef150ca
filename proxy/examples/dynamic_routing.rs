//! Tenant routing from a table kept in memory: a request with
//! `X-Tenant: NAME` goes to that tenant's server, chosen at run time by
//! `upstream_peer` (a `PeerChoice::Peer`, not a group in the YAML);
//! unknown tenants follow the route. The table is changed over HTTP by
//! the program itself: `PUT /_tenants/NAME` with `X-Server: ip:port` sets
//! a tenant, `DELETE /_tenants/NAME` removes it, both behind a bearer
//! token from the YAML. Tenant servers are tried, timed out, pooled and
//! logged as any other.
//!
//! ```sh
//! cargo run -p ferry --example dynamic_routing -- -c proxy/examples/dynamic_routing.yaml
//! curl -X PUT -H 'Authorization: Bearer change-me' -H 'X-Server: 127.0.0.1:9002' localhost:8080/_tenants/acme
//! curl -H 'X-Tenant: acme' localhost:8080/
//! ```

use ferry::bytes::Bytes;
use ferry::pingora_error::Result;
use ferry::pingora_http::ResponseHeader;
use ferry::{async_trait, Peer, PeerChoice, ProxyHttp, Session};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

/// The `tenants:` section of the YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The bearer token of `PUT` / `DELETE /_tenants/NAME`.
    token: String,
    /// Tenants known at start: name -> ip:port.
    #[serde(default)]
    initial: HashMap<String, SocketAddr>,
}

struct Tenants {
    token: String,
    table: RwLock<HashMap<String, SocketAddr>>,
}

async fn answer(s: &mut Session<'_>, status: u16, body: &str) -> Result<bool> {
    s.respond(
        ResponseHeader::build(status, None)?,
        Bytes::from(body.to_string()),
    )
    .await?;
    Ok(true)
}

impl Tenants {
    fn header<'a>(s: &'a Session, name: &str) -> Option<&'a str> {
        s.req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// `PUT` / `DELETE /_tenants/NAME`: change the table.
    async fn change(&self, s: &mut Session<'_>, name: String) -> Result<bool> {
        let bearer = Self::header(s, "authorization").and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(self.token.as_str()) {
            return answer(s, 401, "a change needs the bearer token\n").await;
        }
        let method = s.req_header().method.clone();
        if method == "DELETE" {
            self.table
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            return answer(s, 204, "").await;
        }
        if method != "PUT" {
            return answer(s, 405, "PUT or DELETE\n").await;
        }
        let Some(addr) = Self::header(s, "x-server").and_then(|v| v.parse::<SocketAddr>().ok())
        else {
            return answer(s, 400, "X-Server: ip:port is required\n").await;
        };
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, addr);
        answer(s, 204, "").await
    }
}

#[async_trait]
impl ProxyHttp for Tenants {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, s: &mut Session, _: &mut ()) -> Result<bool> {
        let path = s.req_header().uri.path().to_string();
        match path.strip_prefix("/_tenants/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                self.change(s, name.to_string()).await
            }
            _ => Ok(false),
        }
    }

    async fn upstream_peer(&self, s: &mut Session, _: &mut ()) -> Result<PeerChoice> {
        let server = Self::header(s, "x-tenant").and_then(|t| {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            table.get(t).copied().map(|addr| (t.to_string(), addr))
        });
        Ok(match server {
            Some((tenant, addr)) => PeerChoice::Peer(Box::new(
                Peer::new(addr)
                    .host(&format!("{tenant}.tenants"))
                    .connect_timeout(Duration::from_secs(2)),
            )),
            None => PeerChoice::Route,
        })
    }
}

fn main() {
    let code = ferry::Program::new("dynamic_routing")
        .version("1.0.0")
        .about("Routes each tenant to its own server, from a table changed at run time")
        .default_conf("proxy/examples/dynamic_routing.yaml")
        .settings("tenants")
        .run(|mut start: ferry::Start<Settings>| {
            let s = start.settings.take().ok_or_else(|| {
                ferry::conf::Problem::at_key(
                    "",
                    "the tenants: section (with its token) is required",
                )
            })?;
            if s.token.is_empty() {
                return Err(ferry::conf::Problem::at_value(
                    "tenants.token",
                    "the token may not be empty",
                ));
            }
            Ok(Tenants {
                token: s.token,
                table: RwLock::new(s.initial),
            })
        });
    std::process::exit(code);
}
