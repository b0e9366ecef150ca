//! DNS discovery against a real DNS server (dnsmasq, started by each test):
//! servers with `resolve: true` follow their name's A records, `service`
//! follows SRV records with their weights, a failed lookup (a timeout,
//! SERVFAIL, REFUSED) keeps the last answer, and a name that resolves to nothing empties the group (502).

use ferry_tests::admin::Admin;
use ferry_tests::backend::{Backend, Reply};
use ferry_tests::dns::{Dns, Failure};
use ferry_tests::ferry::Ferry;
use ferry_tests::WAIT;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn named_on(ip: &str, port: u16, name: &str) -> Backend {
    let n = name.to_string();
    Backend::start_on(
        &format!("{ip}:{port}"),
        Arc::new(move |_, _| Reply::ok(n.clone())),
    )
    .await
    .expect("bind the backend")
}

/// Two backends on one port, on 127.0.0.2 and 127.0.0.3 (an A record
/// gives an address; the port is the entry's).
async fn pair() -> (Backend, Backend) {
    loop {
        let one = named_on("127.0.0.2", 0, "one").await;
        if let Ok(two) = Backend::start_on(
            &format!("127.0.0.3:{}", one.addr.port()),
            Arc::new(|_, _| Reply::ok("two")),
        )
        .await
        {
            return (one, two);
        }
    }
}

fn conf(admin: &Admin, dns: &Dns, valid: &str, server: &str) -> String {
    format!(
        "{}{}upstreams:\n  app:\n    servers:\n      - {{ {server} }}\nroutes:\n  - upstream: app\n",
        admin.yaml(""),
        dns.resolver_yaml(valid)
    )
}

/// GET / until its answer is `want` (status and body), bounded by [`WAIT`].
async fn until_answer(ferry: &Ferry, want: (u16, &str)) {
    let http = ferry_tests::client::http();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(ferry.url("/")).send().await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if (status, body.as_str()) == want {
                return;
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "no {want:?} from Ferry; log:\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn servers(admin: &Admin) -> Vec<serde_json::Value> {
    admin.upstreams().await["app"]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Wait (bounded) until group `app` has `n` servers.
async fn until_servers(admin: &Admin, ferry: &Ferry, n: usize) {
    let start = Instant::now();
    while servers(admin).await.len() != n {
        assert!(start.elapsed() < WAIT, "{n} servers; log:\n{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ferry with one `resolve: true` entry for `app.test` on `one`'s port,
/// served by `one` once the first lookup answered.
async fn following(dns: &Dns, admin: &Admin, valid: &str, one: &Backend) -> Ferry {
    let entry = format!("addr: \"app.test:{}\", resolve: true", one.addr.port());
    let ferry = Ferry::start(&conf(admin, dns, valid, &entry)).await;
    until_answer(&ferry, (200, "one")).await;
    ferry
}

/// Ferry following `_http._tcp.app.test`, whose two SRV records point at
/// `a` and `b` with these (priority, weight), once both are members.
async fn srv_pair(a: &Backend, pa: (u16, u16), b: &Backend, pb: (u16, u16)) -> (Dns, Admin, Ferry) {
    let records = [
        format!(
            "_http._tcp.app.test,a.test,{},{},{}",
            a.addr.port(),
            pa.0,
            pa.1
        ),
        format!(
            "_http._tcp.app.test,b.test,{},{},{}",
            b.addr.port(),
            pb.0,
            pb.1
        ),
    ];
    let srv: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = Dns::start("127.0.0.1 a.test\n127.0.0.1 b.test\n", &srv).await;
    let admin = Admin::new();
    let entry = "addr: app.test, resolve: true, service: http";
    let ferry = Ferry::start(&conf(&admin, &dns, "0", entry)).await;
    until_servers(&admin, &ferry, 2).await;
    (dns, admin, ferry)
}

/// An A record that changes moves the traffic to the new address; the
/// report names the entry it came from.
#[tokio::test]
async fn a_changed_a_record_moves_the_server() {
    let (one, two) = pair().await;
    let dns = Dns::start("127.0.0.2 app.test\n", &[]).await;
    let admin = Admin::new();
    let ferry = following(&dns, &admin, "0", &one).await;
    let listed = servers(&admin).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], format!("app.test:{}", one.addr.port()));
    assert_eq!(listed[0]["addr"], one.addr.to_string());

    dns.set_hosts("127.0.0.3 app.test\n");
    until_answer(&ferry, (200, "two")).await;
    let hits = one.hits.load(Ordering::SeqCst);
    let http = ferry_tests::client::http();
    for _ in 0..3 {
        assert_eq!(
            ferry_tests::client::text(&http, ferry.url("/")).await,
            "two"
        );
    }
    assert_eq!(
        one.hits.load(Ordering::SeqCst),
        hits,
        "the old address takes nothing"
    );
    assert_eq!(servers(&admin).await[0]["addr"], two.addr.to_string());
    // The series of the address that left are gone; the new one's stay.
    let (_, text) = admin.get("/metrics").await;
    let series = |addr: String| {
        text.lines()
            .filter(|l| l.starts_with("ferry_upstream_tries_total{"))
            .filter(|l| l.contains(&format!("server=\"{addr}\"")))
            .count()
    };
    assert_eq!(series(one.addr.to_string()), 0, "{text}");
    assert!(series(two.addr.to_string()) > 0, "{text}");
}

/// Two A records are two servers, balanced like any two.
#[tokio::test]
async fn two_a_records_are_two_servers() {
    let (one, two) = pair().await;
    let dns = Dns::start("127.0.0.2 app.test\n127.0.0.3 app.test\n", &[]).await;
    let admin = Admin::new();
    let ferry = following(&dns, &admin, "0", &one).await;
    until_servers(&admin, &ferry, 2).await;
    let http = ferry_tests::client::http();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(ferry_tests::client::text(&http, ferry.url("/")).await);
    }
    got.sort();
    assert_eq!(got, ["one", "one", "two", "two"]);
    let _ = two;
}

/// `service: http` asks `_http._tcp.app.test`: two SRV records with
/// weights 3 and 1 give two servers that share 8 requests 6:2.
#[tokio::test]
async fn srv_records_give_servers_with_their_weights() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let (_dns, admin, ferry) = srv_pair(&a, (0, 3), &b, (0, 1)).await;
    let listed = servers(&admin).await;
    let weight_of = |addr: SocketAddr| {
        listed
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .map(|s| (s["weight"].clone(), s["name"].clone()))
    };
    assert_eq!(
        weight_of(a.addr),
        Some((3.into(), format!("a.test:{}", a.addr.port()).into()))
    );
    assert_eq!(weight_of(b.addr).map(|w| w.0), Some(1.into()));
    let http = ferry_tests::client::http();
    for _ in 0..8 {
        ferry_tests::client::text(&http, ferry.url("/")).await;
    }
    assert_eq!(
        (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst)),
        (6, 2)
    );
}

/// When the DNS server goes away, lookups fail, are counted, and the last
/// answer keeps serving.
#[tokio::test]
async fn a_failed_lookup_keeps_the_last_answer() {
    let (one, _two) = pair().await;
    let mut dns = Dns::start("127.0.0.2 app.test\n", &[]).await;
    let admin = Admin::new();
    let ferry = following(&dns, &admin, "300ms", &one).await;
    dns.stop();
    let start = Instant::now();
    while admin
        .metric("ferry_dns_lookups_total{result=\"error\"}")
        .await
        < 2
    {
        assert!(
            start.elapsed() < WAIT,
            "failed lookups; log:\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ferry.log().contains("keeping the last answer"));
    let http = ferry_tests::client::http();
    for _ in 0..3 {
        assert_eq!(
            ferry_tests::client::text(&http, ferry.url("/")).await,
            "one"
        );
    }
    assert_eq!(servers(&admin).await.len(), 1);
}

/// Wait (bounded) until the counter `name` has reached `n`.
async fn until_metric(admin: &Admin, ferry: &Ferry, name: &str, n: u64) {
    let start = Instant::now();
    while admin.metric(name).await < n {
        assert!(start.elapsed() < WAIT, "{name} {n}; log:\n{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SERVFAIL and REFUSED say nothing of the name (only NXDOMAIN or an empty
/// answer do): through such an outage the last answer keeps serving, each
/// failed lookup is counted as an error and the outage is logged once;
/// when the server answers again, so does discovery.
#[tokio::test]
async fn servfail_and_refused_keep_the_last_answer() {
    for failure in [Failure::ServFail, Failure::Refused] {
        let (one, _two) = pair().await;
        let mut dns = Dns::start("127.0.0.2 app.test\n", &[]).await;
        let admin = Admin::new();
        let ferry = following(&dns, &admin, "200ms", &one).await;
        dns.fail_with(failure).await;
        let errors = "ferry_dns_lookups_total{result=\"error\"}";
        until_metric(&admin, &ferry, errors, 4).await;
        let http = ferry_tests::client::http();
        for _ in 0..3 {
            assert_eq!(
                ferry_tests::client::text(&http, ferry.url("/")).await,
                "one",
                "{failure:?}"
            );
        }
        assert_eq!(servers(&admin).await.len(), 1, "{failure:?}");
        assert_eq!(
            admin
                .metric("ferry_dns_lookups_total{result=\"empty\"}")
                .await,
            0,
            "{failure:?}"
        );
        let log = ferry.log();
        assert_eq!(
            log.matches("cannot look up app.test").count(),
            1,
            "{failure:?}: one line per outage; log:\n{log}"
        );
        let ok = admin.metric("ferry_dns_lookups_total{result=\"ok\"}").await;
        dns.recover().await;
        until_metric(
            &admin,
            &ferry,
            "ferry_dns_lookups_total{result=\"ok\"}",
            ok + 1,
        )
        .await;
        assert!(
            ferry.log().contains("app.test answers again"),
            "{failure:?}"
        );
        assert_eq!(servers(&admin).await.len(), 1, "{failure:?}");
    }
}

/// A name that stops resolving (NXDOMAIN) leaves the group with no
/// server: requests get 502 until it resolves again.
#[tokio::test]
async fn a_name_that_resolves_to_nothing_empties_the_group() {
    let (one, _two) = pair().await;
    let dns = Dns::start("127.0.0.2 app.test\n", &[]).await;
    let admin = Admin::new();
    let entry = format!("addr: \"app.test:{}\", resolve: true", one.addr.port());
    let ferry = Ferry::start(&conf(&admin, &dns, "0", &entry)).await;
    until_answer(&ferry, (200, "one")).await;
    dns.set_hosts("");
    let start = Instant::now();
    while !servers(&admin).await.is_empty() {
        assert!(
            start.elapsed() < WAIT,
            "an empty group; log:\n{}",
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = ferry_tests::client::http()
        .get(ferry.url("/"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 502);
    dns.set_hosts("127.0.0.2 app.test\n");
    until_answer(&ferry, (200, "one")).await;
}

/// SRV priorities as nginx uses them: the lowest value's records are
/// primaries, the others backups, used only when no primary can serve.
#[tokio::test]
async fn a_lower_srv_priority_gives_backup_servers() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let (_dns, admin, ferry) = srv_pair(&a, (0, 1), &b, (10, 1)).await;
    let backup_of = |listed: &[serde_json::Value], addr: SocketAddr| {
        listed
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .map(|s| s["backup"].clone())
    };
    let listed = servers(&admin).await;
    assert_eq!(backup_of(&listed, a.addr), Some(false.into()));
    assert_eq!(backup_of(&listed, b.addr), Some(true.into()));
    let http = ferry_tests::client::http();
    for _ in 0..4 {
        assert_eq!(ferry_tests::client::text(&http, ferry.url("/")).await, "a");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}
