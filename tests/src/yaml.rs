//! The `upstreams:` and `routes:` YAML most tests need.

use std::net::SocketAddr;

/// One group: `  NAME:\n    servers:` with each server's extra keys
/// (`"max_fails: 0"`, `"backup: true"`, or `""`).
pub fn group(name: &str, servers: &[(SocketAddr, &str)]) -> String {
    let mut s = format!("  {name}:\n    servers:\n");
    for (a, extra) in servers {
        let sep = if extra.is_empty() { "" } else { ", " };
        s.push_str(&format!("      - {{ addr: \"{a}\"{sep}{extra} }}\n"));
    }
    s
}

/// A group `app` of `servers` and one route to it with `proxy` settings
/// (the inside of `proxy: { ... }`, or `""`).
pub fn single(servers: &[SocketAddr], proxy: &str) -> String {
    let list: Vec<(SocketAddr, &str)> = servers.iter().map(|a| (*a, "")).collect();
    format!(
        "upstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ {proxy} }}\n",
        group("app", &list)
    )
}
