//! Loading tests: defaults, every accepted form, and each kind of error with
//! its exact line and column.

use super::*;

const GOOD: &str = "\
listen:
  - 127.0.0.1:8080
upstreams:
  app:
    servers:
      - addr: 127.0.0.1:9001
        weight: 5
      - { addr: 127.0.0.1:9002, backup: true }
routes:
  - match: { path_prefix: /api/ }
    upstream: app
    proxy:
      read_timeout: 1.5s
      buffers: { count: 4, size: 8K }
      busy_buffers_size: 16k
      temp_file_write_size: 16k
      next_upstream: [error, http_502]
      set_headers: { X-Real-IP: \"$remote_addr\", X-Gone: \"\" }
  - return: { status: 200, body: \"ok\\n\" }
";

fn err(text: &str) -> String {
    load_str("f.yaml", text).unwrap_err().to_string()
}

#[test]
fn loads_with_nginx_defaults() {
    let c = load_str("f.yaml", GOOD).unwrap();
    assert_eq!(c.listen[0].addr, "127.0.0.1:8080");
    let app = c.upstream("app").unwrap();
    assert_eq!(app.keepalive, 32);
    assert_eq!(app.servers[0].weight, 5);
    assert_eq!(app.servers[0].max_fails, 1);
    assert_eq!(app.servers[0].fail_timeout, Duration::secs(10));
    assert_eq!(
        app.servers[0].resolved,
        vec!["127.0.0.1:9001".parse().unwrap()]
    );
    assert!(app.servers[1].backup);
    let p = &c.routes[0].proxy;
    assert_eq!(p.connect_timeout, Duration::secs(60));
    assert_eq!(p.read_timeout.0, std::time::Duration::from_millis(1500));
    assert_eq!(p.buffers.size, Size(8192));
    assert!(p.next_upstream.has(Condition::Http502));
    assert!(!p.next_upstream.has(Condition::Timeout));
    assert_eq!(p.set_headers.0[0].0, "X-Real-IP");
    assert_eq!(p.set_headers.0[1].1.as_literal(), Some(""));
    let d = &c.routes[1].proxy;
    assert_eq!(d.buffer_size, Size(4096));
    assert_eq!(d.busy_buffers_size, Size(8192));
    assert_eq!(d.max_temp_file_size, Size(1 << 30));
    assert_eq!(d.client_max_body_size, Size(1 << 20));
    assert!(d.buffering && d.request_buffering);
    assert_eq!(c.routes[1].respond.as_ref().unwrap().body, "ok\n");
}

#[test]
fn client_header_timeout_defaults_to_nginx_and_must_be_positive() {
    let c = load_str("f.yaml", GOOD).unwrap();
    assert_eq!(c.client_header_timeout, Duration::secs(60));
    let c = load_str("f.yaml", &format!("client_header_timeout: 5s\n{GOOD}")).unwrap();
    assert_eq!(c.client_header_timeout, Duration::secs(5));
    let e = err(&format!("{GOOD}client_header_timeout: 0\n"));
    assert!(
        e.starts_with("f.yaml:20:24: client_header_timeout must be more than 0"),
        "{e}"
    );
}

#[test]
fn unknown_key_points_at_it() {
    let e = err("listen: [127.0.0.1:1]\nroutes:\n  - upstream: a\n    proxxy: {}\n");
    assert!(
        e.starts_with("f.yaml:4:5: routes[0]: unknown field `proxxy`"),
        "{e}"
    );
    let e = err("listen: [127.0.0.1:1]\nlisten_typo: 1\n");
    assert!(
        e.starts_with("f.yaml:2:1: unknown key `listen_typo`"),
        "{e}"
    );
}

#[test]
fn bad_units_point_at_the_value() {
    let e = err(
        "listen: [127.0.0.1:1]\nroutes:\n  - upstream: a\n    proxy:\n      buffer_size: 4kb\n",
    );
    assert!(
        e.starts_with("f.yaml:5:20: routes[0].proxy.buffer_size: invalid size `4kb`"),
        "{e}"
    );
    let e = err("listen: [127.0.0.1:1]\nroutes:\n  - upstream: a\n    proxy: { read_timeout: 10 parsecs }\n");
    assert!(
        e.starts_with("f.yaml:4:28: routes[0].proxy.read_timeout: invalid duration `10 parsecs`"),
        "{e}"
    );
}

#[test]
fn cross_checks_have_positions() {
    let text = "\
listen:
  - 127.0.0.1:8080
  - 127.0.0.1:8080
upstreams:
  empty:
    servers: []
  h:
    balance: hash
    hash_key: $request_uri
    servers:
      - { addr: 127.0.0.1:1, backup: true }
routes:
  - upstream: nope
  - upstream: h
    proxy:
      buffers: { count: 1 }
";
    let e = err(text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(
        lines,
        vec![
            "f.yaml:3:5: duplicate listen address `127.0.0.1:8080`",
            "f.yaml:6:14: upstream `empty` has no servers",
            "f.yaml:11:38: backup servers are not allowed with balance: hash",
            "f.yaml:13:15: unknown upstream `nope`",
            "f.yaml:15:5: busy_buffers_size must be at most (buffers.count - 1) x buffers.size = 0",
            "f.yaml:16:25: there must be at least 2 buffers",
        ],
        "{e}"
    );
}

#[test]
fn buffer_rules_are_nginx() {
    let base = "listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    proxy:\n";
    let e = err(&format!("{base}      busy_buffers_size: 2k\n"));
    assert!(
        e.contains("5:26: busy_buffers_size must be at least"),
        "{e}"
    );
    let e = err(&format!("{base}      max_temp_file_size: 1k\n"));
    assert!(
        e.contains("5:27: max_temp_file_size must be 0 or at least"),
        "{e}"
    );
    let e = err(&format!("{base}      temp_file_write_size: 1k\n"));
    assert!(e.contains("temp_file_write_size must be at least"), "{e}");
    assert!(load_str("f", &format!("{base}      max_temp_file_size: 0\n")).is_ok());
}

#[test]
fn route_shape_errors() {
    let e = err("listen: [127.0.0.1:1]\nupstreams: { a: { servers: [ { addr: 127.0.0.1:1 } ] } }\nroutes:\n  - upstream: a\n    return: { status: 200 }\n");
    assert!(
        e.starts_with("f.yaml:5:5: a route has either upstream or return"),
        "{e}"
    );
    let e = err("listen: [127.0.0.1:1]\nroutes:\n  - match: { path_prefix: api }\n");
    assert!(e.contains("3:5: a route needs upstream or return"), "{e}");
    assert!(e.contains("3:27: path_prefix must start with /"), "{e}");
}

#[test]
fn the_loader_looks_at_nothing_outside_the_file() {
    // Names are resolved, and files opened, where Ferry starts.
    let c = load_str("f.yaml", "listen:\n  - { addr: 127.0.0.1:1, tls: { cert: /nope.pem, key: /nope.key } }\nupstreams:\n  a:\n    servers:\n      - addr: no-such-host.invalid:80\n").unwrap();
    assert!(c.upstreams.get("a").unwrap().servers[0].resolved.is_empty());
}

#[derive(Debug, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Canary {
    header: String,
    #[serde(default)]
    percent: u32,
}

#[test]
fn extension_key_is_typed_with_positions() {
    let text = "listen: [127.0.0.1:1]\ncanary: { header: X-Canary }\n";
    assert!(err(text).contains("unknown key `canary`"));
    let (_, s) = load_str_with::<Canary>("f", text, Some("canary")).unwrap();
    assert_eq!(
        s,
        Some(Canary {
            header: "X-Canary".into(),
            percent: 0
        })
    );
    let bad = "listen: [127.0.0.1:1]\ncanary:\n  header: X\n  percnt: 5\n";
    let e = load_str_with::<Canary>("f.yaml", bad, Some("canary"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f.yaml:4:3: canary: unknown field `percnt`"),
        "{e}"
    );
}

#[test]
fn off_as_false_and_http_version_forms() {
    let c = load_str(
        "f",
        "listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 204 }\n    proxy: { next_upstream: false, redirect: off, http_version: 1.0 }\n",
    )
    .unwrap();
    assert!(c.routes[0].proxy.next_upstream.is_off());
    assert_eq!(c.routes[0].proxy.redirect, Redirect::Off);
    assert_eq!(c.routes[0].proxy.http_version, HttpVersion::Http10);
}

#[test]
fn duplicate_keys_are_errors_where_the_second_one_is() {
    let e = err("listen: [127.0.0.1:1]\nlisten: [127.0.0.1:2]\n");
    assert!(e.starts_with("f.yaml:2:"), "{e}");
    assert!(e.contains("duplicate key `listen`"), "{e}");
    let e = err("listen: [127.0.0.1:1]\nupstreams:\n  a: { servers: [ { addr: 127.0.0.1:1 } ] }\n  a: { servers: [ { addr: 127.0.0.1:2 } ] }\n");
    assert!(e.starts_with("f.yaml:4:"), "{e}");
    assert!(e.contains("duplicate key `a`"), "{e}");
    let e = err("listen: [127.0.0.1:1]\nserver:\n  threads: 1\n  threads: 2\n");
    assert!(e.starts_with("f.yaml:4:"), "{e}");
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let c = load_str("f.yaml", "\u{feff}listen: [127.0.0.1:1]\n").unwrap();
    assert_eq!(c.listen[0].addr, "127.0.0.1:1");
}

#[test]
fn deep_nesting_is_refused_at_once_with_its_position() {
    let text = format!("listen: {}", "[".repeat(50_000));
    let start = std::time::Instant::now();
    let e = err(&text);
    assert!(e.starts_with("f.yaml:1:"), "{e}");
    assert!(e.contains("nested deeper than 64 levels"), "{e}");
    // Not a timed test: the bound is only that it stops at the limit, not
    // after parsing all of it (which took seconds).
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn only_regular_files_are_read() {
    let e = crate::load_file(std::path::Path::new("/dev/null/.."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the file"), "{e}");
    let dir = std::env::temp_dir();
    let e = crate::load_file(&dir).unwrap_err().to_string();
    assert!(e.contains(":1:1: not a regular file"), "{e}");
    // A FIFO with no writer would block a reader forever.
    let fifo = dir.join(format!("ferry-conf-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let e = crate::load_file(&fifo).unwrap_err().to_string();
    let _ = std::fs::remove_file(&fifo);
    assert!(e.contains(":1:1: not a regular file"), "{e}");
}

#[test]
fn a_second_top_level_key_is_one_duplicate_not_its_children() {
    let e = err("routes:\n  - return: { status: 200 }\nroutes:\n  - return: { status: 201 }\n");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("f.yaml:3:1: duplicate key `routes`"), "{e}");
}

#[test]
fn every_section_s_problem_is_listed() {
    let e = err("upstreams:\n  a:\n    servers: [ { addr: 127.0.0.1:1 } ]\n    balance: nope\nroutes:\n  - upstream: a\n    proxy: { read_timeout: abc }\n");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with("f.yaml:4:") && lines[0].contains("nope"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("f.yaml:7:") && lines[1].contains("abc"),
        "{e}"
    );
}

#[test]
fn compress_defaults_and_errors_have_positions() {
    let base = "listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    compress:\n";
    let c = load_str("f.yaml", &format!("{base}      vary: true\n")).expect("loads");
    let z = c.routes[0].compress.clone().expect("compress");
    assert_eq!(z.algorithms, vec![CompressAlgorithm::Gzip]);
    assert_eq!(
        (z.min_length, z.level, z.br_level, z.zstd_level),
        (20, 1, 4, 3)
    );
    assert_eq!(z.proxied, vec![Proxied::Off]);
    let e = err(&format!("{base}      algorithms: [br, deflate]\n"));
    assert!(e.starts_with("f.yaml:5:24: "), "{e}");
    let e = err(&format!("{base}      level: 10\n"));
    assert_eq!(e.trim(), "f.yaml:5:14: level must be 1 to 9", "{e}");
    let e = err(&format!("{base}      types: [text/css, nope]\n"));
    assert!(
        e.starts_with("f.yaml:5:25: `nope` is not a media type"),
        "{e}"
    );
    let e = err(&format!("{base}      proxied: [off, any]\n"));
    assert_eq!(e.trim(), "f.yaml:5:16: off goes alone in proxied", "{e}");
    let e = err(&format!("{base}      algorithms: [br, br]\n"));
    assert!(e.starts_with("f.yaml:5:24: `br` is listed twice"), "{e}");
}

#[test]
fn sticky_forms_load_with_nginx_defaults() {
    let base = "listen: [127.0.0.1:1]\nroutes:\n  - upstream: app\nupstreams:\n  app:\n    servers:\n      - { addr: 127.0.0.1:2, route: a, drain: true }\n      - addr: 127.0.0.1:3\n    sticky:\n";
    let c = load_str(
        "f.yaml",
        &format!("{base}      cookie: {{ name: srv, expires: max, path: /, samesite: Lax }}\n"),
    )
    .expect("loads");
    let app = c.upstream("app").expect("app");
    let cookie = app
        .sticky
        .as_ref()
        .and_then(|s| s.cookie.clone())
        .expect("cookie");
    assert_eq!(cookie.expires, CookieExpires::Max);
    assert_eq!((cookie.name.as_str(), cookie.path.as_str()), ("srv", "/"));
    assert_eq!(
        (app.servers[0].route.as_str(), app.servers[0].drain),
        ("a", true)
    );
    assert_eq!(
        (app.servers[1].route.as_str(), app.servers[1].drain),
        ("", false)
    );
    let c = load_str(
        "f.yaml",
        &format!("{base}      cookie: {{ name: srv, expires: 1h }}\n"),
    )
    .expect("1h");
    let expires = c
        .upstream("app")
        .and_then(|u| u.sticky.clone())
        .and_then(|s| s.cookie)
        .map(|c| c.expires);
    assert_eq!(expires, Some(CookieExpires::Secs(3600)));
    let c = load_str(
        "f.yaml",
        &format!(
            "{base}      learn: {{ create: \"$upstream_cookie_sid\", lookup: \"$cookie_sid\" }}\n"
        ),
    )
    .expect("learn");
    let learn = c
        .upstream("app")
        .and_then(|u| u.sticky.clone())
        .and_then(|s| s.learn)
        .expect("learn");
    assert_eq!(
        (learn.timeout, learn.max_sessions, learn.header),
        (Duration::secs(600), 100_000, false)
    );
    let c = load_str(
        "f.yaml",
        &format!("{base}      route: [\"$cookie_route\", \"$arg_route\"]\n"),
    )
    .expect("route");
    let sticky = c
        .upstream("app")
        .and_then(|u| u.sticky.clone())
        .expect("sticky");
    assert!(matches!(sticky.mode(), Some(StickyMode::Route(r)) if r.len() == 2));
}

#[test]
fn sticky_errors_have_positions() {
    let base = "listen: [127.0.0.1:1]\nroutes:\n  - upstream: app\nupstreams:\n  app:\n    servers:\n      - addr: 127.0.0.1:2\n    sticky:\n";
    let e = err(&format!(
        "{base}      cookie: {{ name: srv }}\n      route: [\"$cookie_r\"]\n"
    ));
    assert_eq!(
        e.trim(),
        "f.yaml:8:5: sticky needs exactly one of cookie, route, learn",
        "{e}"
    );
    let e = err(&format!(
        "{base}      cookie: {{ name: srv, expires: soon }}\n"
    ));
    assert!(
        e.starts_with("f.yaml:9:37: ") && e.contains("invalid duration `soon`"),
        "{e}"
    );
    let e = err(&format!("{base}      cookie: {{ name: \"a b\" }}\n"));
    assert!(
        e.starts_with("f.yaml:9:23: `a b` is not a cookie name"),
        "{e}"
    );
    let e = err(&format!(
        "{base}      cookie: {{ name: s, samesite: loose }}\n"
    ));
    assert!(
        e.starts_with("f.yaml:9:36: samesite must be strict, lax or none"),
        "{e}"
    );
    let e = err(&format!("{base}      learn: {{ create: \"$upstream_cookie_sid\", lookup: \"$cookie_sid\", timeout: 0 }}\n"));
    assert_eq!(e.trim(), "f.yaml:9:80: timeout must be more than 0", "{e}");
    let e = err(&format!(
        "{base}      learn: {{ lookup: \"$cookie_sid\" }}\n"
    ));
    assert!(e.starts_with("f.yaml:9:7: learn needs create"), "{e}");
    let e = err(&format!("{base}      route: [\"$nope\"]\n"));
    assert!(
        e.starts_with("f.yaml:9:14: ") && e.contains("unknown variable `$nope`"),
        "{e}"
    );
    let e = err(&format!("{base}      route: [\"$cookie_r\", plain]\n"));
    assert_eq!(
        e.trim(),
        "f.yaml:9:28: `plain` names no variable (nginx: each is a variable)",
        "{e}"
    );
    let e = err(&format!("{base}      route: []\n"));
    assert!(
        e.starts_with("f.yaml:9:14: route needs at least one template"),
        "{e}"
    );
    let servers =
        "listen: [127.0.0.1:1]\nroutes:\n  - upstream: app\nupstreams:\n  app:\n    servers:\n";
    let e = err(&format!(
        "{servers}      - {{ addr: 127.0.0.1:2, route: \"{}\" }}\n",
        "x".repeat(33)
    ));
    assert_eq!(
        e.trim(),
        "f.yaml:7:37: route is longer than 32 bytes",
        "{e}"
    );
    let e = err(&format!(
        "{servers}      - {{ addr: 127.0.0.1:2, down: true, drain: true }}\n"
    ));
    assert_eq!(
        e.trim(),
        "f.yaml:7:42: a server is either down or drain, not both",
        "{e}"
    );
}
