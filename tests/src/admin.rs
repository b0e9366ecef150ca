//! The admin listener from a test: an `admin:` section on a free port, and
//! requests to it.

use crate::ferry::free_port;
use std::net::SocketAddr;

/// An admin listener for one Ferry.
pub struct Admin {
    pub addr: SocketAddr,
}

impl Admin {
    /// A free port for `admin.listen`.
    pub fn new() -> Admin {
        Admin {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }

    /// The `admin:` section, with `extra` keys (`token: t`, or `""`).
    pub fn yaml(&self, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { ", " };
        format!("admin: {{ listen: \"{}\"{sep}{extra} }}\n", self.addr)
    }

    /// `GET path`: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = crate::client::http()
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("admin GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// `GET /upstreams`, parsed.
    pub async fn upstreams(&self) -> serde_json::Value {
        let (status, body) = self.get("/upstreams").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// One server of `group` in `GET /upstreams`, by address.
    pub async fn server(&self, group: &str, addr: SocketAddr) -> serde_json::Value {
        let all = self.upstreams().await;
        all[group]["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["addr"] == addr.to_string()).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `PATCH path` with `body` and, when given, a bearer token: (status, body).
    pub async fn patch(&self, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
        let mut req = crate::client::http()
            .patch(format!("http://{}{path}", self.addr))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("admin PATCH");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// One sample of the Prometheus text, 0 when absent.
    pub async fn metric(&self, sample: &str) -> u64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin::new()
    }
}
