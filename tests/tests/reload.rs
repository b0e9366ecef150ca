//! Reload: SIGHUP and `ferry -s reload` read the file again; new requests
//! take the new configuration at once, none is lost, a server that stays
//! keeps its state, and a bad file changes nothing.

use ferry_tests::admin::Admin;
use ferry_tests::backend::Backend;
use ferry_tests::ferry::{command, free_port, Ferry};
use ferry_tests::until;
use ferry_tests::yaml::{group, single};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Four clients send requests back to back while the file flips ten times
/// between one server and two: every request gets its 200, the added
/// server serves after each reload that adds it, and the first reload's
/// latency (SIGHUP to the first response from the added server) is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_steady_load_lose_no_request() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let one = single(&[a.addr], "");
    let two = single(&[a.addr, b.addr], "");
    let ferry = Ferry::start(&one).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let url = ferry.url("/");
            tokio::spawn(async move {
                let http = ferry_tests::client::http();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    until("the clients to be served", || {
        ok.load(Ordering::Relaxed) > 20
    })
    .await;
    let mut latency = None;
    for i in 0..10 {
        let adds = i % 2 == 0;
        ferry.rewrite(if adds { &two } else { &one });
        let hits_before = b.hits.load(Ordering::SeqCst);
        let sent = Instant::now();
        ferry.reload().await;
        if adds {
            until("the added server to serve", || {
                b.hits.load(Ordering::SeqCst) > hits_before
            })
            .await;
            latency.get_or_insert(sent.elapsed());
        }
        let served = ok.load(Ordering::Relaxed);
        until("requests on the new configuration", || {
            ok.load(Ordering::Relaxed) >= served + 20
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(ferry.log().matches("is served from now on").count(), 10);
    let b_after_last = b.hits.load(Ordering::SeqCst);
    let http = ferry_tests::client::http();
    for _ in 0..4 {
        assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "a");
    }
    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        b_after_last,
        "the removed server takes no new request"
    );
    eprintln!(
        "reload latency (SIGHUP to the first response from the added server): {:?}; {} requests served",
        latency.expect("measured"),
        ok.load(Ordering::Relaxed)
    );
}

/// A server marked failed (`max_fails: 1` within a minute) is still failed
/// after a reload that keeps it, and takes no request, while the rest of
/// the new file applies.
#[tokio::test]
async fn a_server_that_stays_keeps_its_failed_state() {
    let admin = Admin::new();
    let live = Backend::named("live").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let servers = group(
        "app",
        &[
            (dead, "fail_timeout: 60s"),
            (live.addr, "fail_timeout: 60s"),
        ],
    );
    let body = |extra_route: &str| {
        format!(
            "{}upstreams:\n{servers}routes:\n{extra_route}  - upstream: app\n",
            admin.yaml("")
        )
    };
    let ferry = Ferry::start(&body("")).await;
    let http = ferry_tests::client::http();
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/")).await,
        "live"
    );
    assert_eq!(admin.server("app", dead).await["state"], "failed");
    ferry.rewrite(&body(
        "  - match: { path_prefix: /new }\n    return: { status: 200, body: new }\n",
    ));
    ferry.reload().await;
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/new")).await,
        "new"
    );
    let before = admin.server("app", dead).await;
    assert_eq!(before["state"], "failed", "{before}");
    assert_eq!(before["fails"], 1);
    for _ in 0..4 {
        assert_eq!(
            ferry_tests::client::text(&http, ferry.url("/")).await,
            "live"
        );
    }
    assert_eq!(
        admin.server("app", dead).await["requests"],
        before["requests"],
        "the failed server was skipped"
    );
}

/// A file with a mistake changes nothing: the old routes keep serving, the
/// log has each problem with its position, and the error is counted.
/// `ferry -s reload` checks the file first: it prints the problem and
/// exits 1 without signalling; on a good file it signals and exits 0.
#[tokio::test]
async fn a_bad_file_keeps_the_old_configuration() {
    let admin = Admin::new();
    let backend = Backend::named("old").await;
    let good = format!("{}{}", admin.yaml(""), single(&[backend.addr], ""));
    let ferry = Ferry::start(&good).await;
    let http = ferry_tests::client::http();
    ferry.rewrite(&format!(
        "{}upstreams:\n{}routes:\n  - upstream: nope\n",
        admin.yaml(""),
        group("app", &[(backend.addr, "")])
    ));
    ferry.reload().await;
    let log = ferry.log();
    assert!(
        log.contains("ferry.yaml:15:15: unknown upstream `nope`"),
        "{log}"
    );
    assert!(log.contains("the old configuration keeps serving"));
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/")).await,
        "old"
    );
    assert_eq!(
        admin
            .metric("ferry_config_reloads_total{result=\"error\"}")
            .await,
        1
    );

    let conf = ferry.conf().display().to_string();
    let (code, _, err) = command(&["-s", "reload", "-c", &conf]);
    assert_eq!(code, 1);
    assert!(err.contains(":15:15: unknown upstream `nope`"), "{err}");
    assert_eq!(ferry.reloads(), 1, "a bad file is not signalled");

    ferry.rewrite(&format!(
        "{}upstreams:\n{}routes:\n  - match: {{ path_prefix: /v2 }}\n    return: {{ status: 200, body: v2 }}\n  - upstream: app\n",
        admin.yaml(""),
        group("app", &[(backend.addr, "")])
    ));
    let (code, out, err) = command(&["-s", "reload", "-c", &conf]);
    assert_eq!(code, 0, "{out}{err}");
    until("the signalled reload", || ferry.reloads() == 2).await;
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/v2")).await,
        "v2"
    );
    assert_eq!(
        admin
            .metric("ferry_config_reloads_total{result=\"ok\"}")
            .await,
        1
    );
}

/// `listen:` is Pingora's to change (a graceful upgrade): a reload that
/// changes it keeps the old listener, says so, and applies the rest.
#[tokio::test]
async fn a_new_listen_address_waits_for_an_upgrade() {
    let backend = Backend::named("app").await;
    let ferry = Ferry::start(&format!(
        "upstreams:\n{}routes:\n  - match: {{ path_prefix: /said }}\n    return: {{ status: 200, body: before }}\n  - upstream: app\n",
        group("app", &[(backend.addr, "")])
    ))
    .await;
    let conf = std::fs::read_to_string(ferry.conf()).expect("conf");
    let port = free_port();
    let moved = conf
        .replace(
            &format!("127.0.0.1:{}", ferry.addr.port()),
            &format!("127.0.0.1:{port}"),
        )
        .replace("body: before", "body: after");
    ferry.rewrite_all(&moved);
    ferry.reload().await;
    assert!(ferry.log().contains("`listen` changed"), "{}", ferry.log());
    let http = ferry_tests::client::http();
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/said")).await,
        "after"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the new address"
    );
}

/// A connection to a server that a reload removed is closed when its
/// response ends, not kept idle: when the server comes back, the next
/// request opens a new connection.
#[tokio::test]
async fn a_removed_server_keeps_no_idle_connection() {
    use ferry_tests::backend::Reply;
    let a = Backend::named("a").await;
    let b = Backend::start(Arc::new(|_, seen: &ferry_tests::backend::Seen| {
        let reply = Reply::ok("b");
        if seen.uri == "/slow" {
            // Long enough for the reload to land while it is in flight.
            return Reply {
                delay: Some(std::time::Duration::from_secs(3)),
                ..reply
            };
        }
        reply
    }))
    .await;
    let ferry = Ferry::start(&single(&[b.addr], "")).await;
    let http = ferry_tests::client::http();
    assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "b");
    assert_eq!(b.conns.load(Ordering::SeqCst), 1);
    let slow = {
        let (http, url) = (http.clone(), ferry.url("/slow"));
        tokio::spawn(async move { ferry_tests::client::text(&http, url).await })
    };
    until("the slow request at b", || {
        b.hits.load(Ordering::SeqCst) == 2
    })
    .await;
    ferry.rewrite(&single(&[a.addr], ""));
    ferry.reload().await;
    assert_eq!(
        slow.await.expect("slow request"),
        "b",
        "in flight, it finishes"
    );
    assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "a");
    ferry.rewrite(&single(&[b.addr], ""));
    ferry.reload().await;
    assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "b");
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        2,
        "the connection of the removed server was closed, not pooled"
    );
}

/// A file written in place, piece by piece while it is held open, with a
/// reload asked for in the middle: many of its cut points parse (here each
/// piece ends after a route), and loading one would drop the later routes.
/// The reload waits until the file has settled, so once the writer is done
/// every route written is served. The writer writes each next piece when
/// Ferry's log says it is waiting for the file, so the reload is sure to
/// meet the file half-written.
#[tokio::test]
async fn a_reload_waits_for_a_file_still_being_written() {
    use std::io::Write;
    let route = |n: usize| {
        format!("  - match: {{ path_prefix: /r{n} }}\n    return: {{ status: 200, body: r{n} }}\n")
    };
    let ferry = Ferry::start(&format!("routes:\n{}", route(0))).await;
    let conf = std::fs::read_to_string(ferry.conf()).expect("conf");
    let head = &conf[..conf.find("routes:").expect("routes")];
    let pieces: Vec<String> = (0..4)
        .map(|p| {
            let routes: String = (1..=3).map(|i| route(p * 3 + i)).collect();
            if p == 0 {
                format!("{head}routes:\n{routes}")
            } else {
                routes
            }
        })
        .collect();
    let waits = || ferry.log().matches("waiting for it to settle").count();
    let reloads = ferry.reloads();
    // Counted before each write: the line it causes may come at once.
    let mut seen = waits();
    let mut file = std::fs::File::create(ferry.conf()).expect("open the file");
    file.write_all(pieces[0].as_bytes()).expect("write");
    ferry.signal(libc::SIGHUP);
    for piece in &pieces[1..] {
        // (Or the reload is over: it read the file half-written.)
        until("the reload to wait for the file", || {
            waits() > seen || ferry.reloads() > reloads
        })
        .await;
        seen = waits();
        file.write_all(piece.as_bytes()).expect("write");
    }
    drop(file);
    until("the reload to finish", || ferry.reloads() > reloads).await;
    assert!(
        ferry.log().contains("is served from now on"),
        "{}",
        ferry.log()
    );
    let http = ferry_tests::client::http();
    for n in 1..=12 {
        let r = http.get(ferry.url(&format!("/r{n}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "/r{n}");
        assert_eq!(r.text().await.unwrap(), format!("r{n}"));
    }
    assert_eq!(
        http.get(ferry.url("/r0")).send().await.unwrap().status(),
        404,
        "the old file's route is gone"
    );
}

/// `ferry -s reload` returns with the running Ferry's verdict: a file its
/// own check passes but the running process cannot serve (an access log
/// in a directory that does not exist) exits 1 with the reason.
#[tokio::test]
async fn ferry_s_reload_exits_1_when_the_running_ferry_refuses() {
    let ferry = Ferry::start("routes:\n  - return: { status: 200, body: old }\n").await;
    ferry.rewrite("access_log: /nonexistent-ferry-dir/access.log\nroutes:\n  - return: { status: 200, body: new }\n");
    let conf = ferry.conf().display().to_string();
    let (code, out, err) = command(&["-s", "reload", "-c", &conf]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("access_log: cannot open it"), "{err}");
    assert!(err.contains("refused"), "{err}");
    let http = ferry_tests::client::http();
    assert_eq!(
        ferry_tests::client::text(&http, ferry.url("/")).await,
        "old"
    );
}
