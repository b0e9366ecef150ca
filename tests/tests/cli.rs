//! The `ferry` command line: `-t` pinpoints errors with
//! `FILE:LINE:COLUMN`, `--help`, `--version`, and the signals.

use ferry_tests::backend::Backend;
use ferry_tests::ferry::{binary, check, Ferry};

#[test]
fn check_ok_prints_ok() {
    let (code, out, err) =
        check("listen: [127.0.0.1:8080]\nroutes:\n  - return: { status: 200 }\n");
    assert_eq!((code, out.as_str(), err.as_str()), (0, "ok\n", ""));
}

#[test]
fn check_reports_each_problem_with_line_and_column() {
    let yaml = "\
listen:
  - 127.0.0.1:8080
  - 127.0.0.1:8080
upstreams:
  app:
    servers: []
routes:
  - upstream: nope
";
    let (code, out, err) = check(yaml);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "FILE:3:5: duplicate listen address `127.0.0.1:8080`\n\
         FILE:6:14: upstream `app` has no servers\n\
         FILE:8:15: unknown upstream `nope`\n"
    );
}

#[test]
fn check_reports_parse_errors_at_the_value() {
    let cases = [
        ("listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    proxy:\n      buffer_size: 4 kb\n", "FILE:5:20: routes[0].proxy.buffer_size: invalid size `4 kb`"),
        ("listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    proxy: { connect_timeout: soon }\n", "FILE:4:31: routes[0].proxy.connect_timeout: invalid duration `soon`"),
        ("listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    proxy: { next_upstream: [error, http_418] }\n", "FILE:4:37: routes[0].proxy.next_upstream[1]: unknown next_upstream condition `http_418`"),
        ("listen: [127.0.0.1:1]\nroutez: []\n", "FILE:2:1: unknown key `routez`"),
        ("server: { threadz: 2 }\nlisten: [127.0.0.1:1]\n", "FILE:1:11: unknown server key `threadz`"),
        ("listen: [127.0.0.1:1]\nupstreams:\n  a:\n    balance: ip_hash\n    servers: [ { addr: 127.0.0.1:1, backup: true } ]\n", "FILE:5:45: backup servers are not allowed with balance: ip_hash"),
        ("listen: [127.0.0.1:1]\nroutes:\n  - return: { status: 200 }\n    proxy: { buffers: { count: 4, size: 8k }, busy_buffers_size: 32k }\n", "FILE:4:66: busy_buffers_size must be at most (buffers.count - 1) x buffers.size = 24576"),
    ];
    for (yaml, want) in cases {
        let (code, _, err) = check(yaml);
        assert_eq!(code, 1, "{yaml}");
        assert!(err.starts_with(want), "want {want:?}\n got {err:?}");
    }
}

#[test]
fn missing_file_is_an_error() {
    let out = std::process::Command::new(binary())
        .args(["-t", "-c", "/nonexistent/ferry.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("/nonexistent/ferry.yaml:1:1: cannot read the file"),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    let out = std::process::Command::new(binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["-c, --conf", "-t, --test", "--upgrade", "SIGTERM"] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
    let out = std::process::Command::new(binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferry "));
}

#[tokio::test]
async fn sigterm_drains_and_sigint_stops() {
    let a = Backend::named("a").await;
    let conf = format!(
        "upstreams:\n  app:\n    servers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - upstream: app\n",
        a.addr
    );
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut ferry = Ferry::start(&conf).await;
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(ferry.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "a");
        ferry.signal(sig);
        let status = ferry.wait_exit().await;
        assert!(
            status.is_some(),
            "ferry did not exit on signal {sig}; log:\n{}",
            ferry.log()
        );
        assert!(
            tokio::net::TcpStream::connect(ferry.addr).await.is_err(),
            "still listening after {sig}"
        );
    }
}

/// A port another process holds is said at once, with the address, and
/// Ferry gives up after nginx's five tries (not half a minute in silence);
/// on a free port Ferry says where it listens when it starts.
#[test]
fn a_port_in_use_is_said_at_once_and_listening_addresses_are_logged() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address");
    let dir = ferry_tests::ferry::fresh_dir();
    let conf = dir.join("ferry.yaml");
    std::fs::write(
        &conf,
        format!(
            "server: {{ pid_file: \"{d}/pid\", upgrade_sock: \"{d}/up.sock\" }}\nlisten: [\"{addr}\"]\nroutes:\n  - return: {{ status: 200 }}\n",
            d = dir.display()
        ),
    )
    .expect("conf");
    let start = std::time::Instant::now();
    let out = std::process::Command::new(binary())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run ferry");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("listen {addr}: address already in use")),
        "{log}"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(15),
        "{log}"
    );
    drop(taken);
    let ferry = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(Ferry::start("routes:\n  - return: { status: 200 }\n"));
    assert!(
        ferry
            .log()
            .contains(&format!("listening on {}", ferry.addr)),
        "{}",
        ferry.log()
    );
}
