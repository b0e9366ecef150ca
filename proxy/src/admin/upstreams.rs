//! The upstream API: each group's servers as they stand, and a hand on them.
//!
//! nginx counterpart: the `/api/N/http/upstreams` endpoint of nginx Plus
//! (nginx OSS has none), reduced to what Ferry keeps.
//!
//! - `GET /upstreams`: `{"GROUP": {"balance": ..., "servers": [{"addr",
//!   "name", "state", "backup", "weight", "active", "requests", "fails"}]}}`,
//!   `name` being the YAML entry (or SRV target) the address came from and
//!   `state` one of `up`, `failed`, `down`, `draining`, `unhealthy`.
//! - `PATCH /upstreams/GROUP/servers/ADDR` with `{"down": bool}` and/or
//!   `{"drain": bool}`: until the next reload, the server takes no new
//!   requests (those in flight finish); draining, only those `sticky`
//!   binds to it, the same state as the YAML's `drain: true`. With `admin.token` set it needs
//!   `Authorization: Bearer TOKEN` (401 otherwise, and nothing changes).
//!   Bad JSON is a 400, an unknown group or server a 404, each with a
//!   one-line reason.

use crate::admin::{reply, text};
use crate::live::Live;
use http::Response;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;

/// The most a PATCH body may be.
const MAX_BODY: usize = 4096;

pub(crate) async fn serve(live: &Live, s: &mut ServerSession) -> Response<Vec<u8>> {
    let method = s.req_header().method.clone();
    let path = s.req_header().uri.path().to_string();
    let rest: Vec<&str> = path
        .trim_start_matches("/upstreams")
        .split('/')
        .skip(1)
        .collect();
    match (method.as_str(), rest.as_slice()) {
        ("GET", []) => reply(200, "application/json", list(live)),
        ("PATCH", [group, "servers", addr]) => {
            if !authorized(live, s) {
                return text(
                    401,
                    "a change needs Authorization: Bearer TOKEN (admin.token)",
                );
            }
            let body = match read_body(s).await {
                Ok(b) => b,
                Err(m) => return text(400, &m),
            };
            patch(live, group, addr, &body)
        }
        ("GET", _) | ("PATCH", _) => text(404, "no such resource: try GET /upstreams"),
        _ => text(
            405,
            "only GET /upstreams and PATCH /upstreams/GROUP/servers/ADDR",
        ),
    }
}

fn list(live: &Live) -> Vec<u8> {
    let rt = live.current();
    let mut out = Map::new();
    for (name, conf) in rt.config.upstreams.iter() {
        let Some(up) = rt.upstreams.get(name) else {
            continue;
        };
        let servers: Vec<Value> = up
            .group
            .report()
            .into_iter()
            .map(|r| {
                let mut server = json!({
                    "addr": r.peer.addr.to_string(),
                    "name": r.peer.name,
                    "state": r.state.as_str(),
                    "backup": r.peer.backup,
                    "weight": r.peer.weight,
                    "active": r.active,
                    "requests": r.requests,
                    "fails": r.fails,
                });
                if let ferry_conf::Balance::LeastTime(_) = conf.balance {
                    // least_time's averages, in ms (nginx API `header_time`, `response_time`).
                    server["header_time"] = json!(r.header_time);
                    server["response_time"] = json!(r.response_time);
                }
                server
            })
            .collect();
        out.insert(
            name.to_string(),
            json!({ "balance": conf.balance.as_str(), "servers": servers }),
        );
    }
    let mut body = serde_json::to_vec_pretty(&Value::Object(out)).unwrap_or_default();
    body.push(b'\n');
    body
}

/// No token set, or the request carries it.
pub(crate) fn authorized(live: &Live, s: &ServerSession) -> bool {
    let token = live
        .current()
        .config
        .admin
        .as_ref()
        .map(|a| a.token.clone())
        .unwrap_or_default();
    if token.is_empty() {
        return true;
    }
    let given = s
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same_secret(given.as_bytes(), token.as_bytes())
}

/// Compared in time independent of where the two differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn read_body(s: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(format!("the body is over {MAX_BODY} bytes"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("cannot read the body: {e}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    down: Option<bool>,
    drain: Option<bool>,
}

fn patch(live: &Live, group: &str, addr: &str, body: &[u8]) -> Response<Vec<u8>> {
    let change: Change = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return text(400, &format!("bad JSON: {e}")),
    };
    if change.down.is_none() && change.drain.is_none() {
        return text(
            400,
            "nothing to change: send {\"down\": true|false} or {\"drain\": true|false}",
        );
    }
    let rt = live.current();
    let Some(up) = rt.upstreams.get(group) else {
        return text(404, &format!("no upstream group `{group}`"));
    };
    let decoded = addr
        .replace("%5B", "[")
        .replace("%5D", "]")
        .replace("%3A", ":");
    let Ok(at) = decoded.parse::<SocketAddr>() else {
        return text(400, &format!("`{addr}` is not an ip:port address"));
    };
    if !up.group.hold(at, change.down, change.drain) {
        return text(404, &format!("group `{group}` has no server {at}"));
    }
    log::warn!(
        "admin: server {at} in group {group}: down={:?} drain={:?} (until the next reload)",
        change.down,
        change.drain
    );
    reply(200, "application/json", list(live))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(super::same_secret(b"abc", b"abc"));
        assert!(!super::same_secret(b"abc", b"abd"));
        assert!(!super::same_secret(b"ab", b"abc"));
        assert!(!super::same_secret(b"", b"abc"));
    }
}
