//! The `server:` section: Pingora's own `ServerConf` (threads, pid_file,
//! upgrade_sock, grace periods, keepalive pool size, ...), passed through.
//! Pingora ignores unknown keys; Ferry rejects them, with their position.

use pingora_core::server::configuration::ServerConf;

/// The keys `ServerConf` knows, read off its own serialization so the list
/// follows the Pingora version in use.
pub fn known_keys() -> Vec<String> {
    match serde_yaml::to_value(ServerConf::default()) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Check one `server:` entry: `Err(message)` for an unknown key or a value of
/// the wrong type.
pub fn check_entry(key: &serde_yaml::Value, value: &serde_yaml::Value) -> Result<(), String> {
    let name = key.as_str().unwrap_or("?");
    if !known_keys().iter().any(|k| k == name) {
        return Err(format!(
            "unknown server key `{name}`; expected one of Pingora's ServerConf keys: {}",
            known_keys().join(", ")
        ));
    }
    let mut one = serde_yaml::Mapping::new();
    one.insert(key.clone(), value.clone());
    let conf = serde_yaml::from_value::<ServerConf>(serde_yaml::Value::Mapping(one))
        .map_err(|e| format!("server.{name}: {e}"))?;
    // Pingora parses these later with unwrap(): check them here.
    let v4 = conf
        .client_bind_to_ipv4
        .iter()
        .map(|a| (a, a.parse::<std::net::Ipv4Addr>().is_ok()));
    let v6 = conf
        .client_bind_to_ipv6
        .iter()
        .map(|a| (a, a.parse::<std::net::Ipv6Addr>().is_ok()));
    match v4.chain(v6).find(|(_, ok)| !ok) {
        Some((bad, _)) => Err(format!(
            "server.{name}: `{bad}` is not an IP address of that family"
        )),
        None => Ok(()),
    }
}

/// The whole section as a `ServerConf`.
///
/// One default differs from Pingora's: with one thread and no
/// `work_stealing` key, Ferry runs Pingora's single-threaded runtime
/// (`work_stealing: false`). With one worker there is nothing to steal, and
/// the single-threaded scheduler costs about 10% less CPU per small request
/// (docs/performance.md). A `work_stealing` the file sets is kept.
pub fn to_server_conf(m: &serde_yaml::Mapping) -> Result<ServerConf, String> {
    let mut conf: ServerConf =
        serde_yaml::from_value(serde_yaml::Value::Mapping(m.clone())).map_err(|e| e.to_string())?;
    if conf.threads <= 1 && !m.contains_key("work_stealing") {
        conf.work_stealing = false;
    }
    Ok(conf)
}
