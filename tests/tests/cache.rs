//! The proxy cache against real backends: what is stored and what is not
//! (nginx's rules), HITs served from disk without the backend, Vary,
//! revalidation, stale answers, the lock, ranges, eviction, a restart, a
//! corrupt file, purging and the counters.

use ferry_tests::admin::Admin;
use ferry_tests::backend::{Backend, Reply, Seen};
use ferry_tests::client::http;
use ferry_tests::ferry::{fresh_dir, Ferry};
use ferry_tests::raw::{Raw, Step};
use ferry_tests::yaml::group;
use reqwest::header::HeaderMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A cache `c` at `path`, a group `app` of `backend`, one route to it that
/// reports `$upstream_cache_status` in `X-Cache`, with `cache` (keys of
/// its `cache:` after `zone: c`) and more `zone` keys.
fn conf(backend: SocketAddr, path: &str, zone: &str, cache: &str) -> String {
    format!(
        "caches:\n  c: {{ path: \"{path}\"{sep}{zone} }}\nupstreams:\n{}routes:\n  - upstream: app\n    proxy: {{ add_headers: {{ X-Cache: \"$upstream_cache_status\" }} }}\n    cache: {{ zone: c{csep}{cache} }}\n",
        group("app", &[(backend, "")]),
        sep = if zone.is_empty() { "" } else { ", " },
        csep = if cache.is_empty() { "" } else { ", " },
    )
}

/// Fresh for ten minutes by `valid:` alone.
const VALID: &str = "valid: { 200: 10m }";

async fn start(backend: SocketAddr, cache: &str) -> Ferry {
    Ferry::start(&conf(backend, "{tmp}/cache", "", cache)).await
}

/// As [`start`], with no idle connections kept: a backend that is dropped
/// is gone at once.
async fn start_unpooled(backend: SocketAddr, cache: &str) -> Ferry {
    let yaml = conf(backend, "{tmp}/cache", "", cache)
        .replace("    servers:\n", "    keepalive: 0\n    servers:\n");
    Ferry::start(&yaml).await
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(r: reqwest::RequestBuilder) -> Got {
    let r = r.send().await.expect("request");
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.expect("body").to_vec(),
    }
}

async fn get(ferry: &Ferry, path: &str) -> Got {
    send(http().get(ferry.url(path))).await
}

/// A backend whose body is its hit count, `n0`, `n1`, ..., with `headers`.
async fn counting(headers: &'static [(&'static str, &'static str)]) -> Backend {
    Backend::start(Arc::new(move |i, _| {
        let mut r = Reply::ok(format!("n{i}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    }))
    .await
}

/// A backend like [`counting`] whose first answer waits `ms`.
async fn slow_first(ms: u64) -> Backend {
    Backend::start(Arc::new(move |i, _| {
        let mut r = Reply::ok(format!("n{i}"));
        if i == 0 {
            r.delay = Some(std::time::Duration::from_millis(ms));
        }
        r
    }))
    .await
}

/// Every entry file under `dir` (not the writers' `tmp/`).
fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(l1) = std::fs::read_dir(dir) else {
        return out;
    };
    for a in l1.flatten().filter(|e| e.file_name() != "tmp") {
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
    }
    out
}

/// The entry files once there are `n` (an entry is committed just after
/// its response's last byte went out).
async fn stored(dir: &Path, n: usize) -> Vec<PathBuf> {
    ferry_tests::until_or(|| {
        let files = entry_files(dir);
        (files.len() == n).then_some(files)
    })
    .await
    .unwrap_or_else(|| panic!("{n} entries in {}: {:?}", dir.display(), entry_files(dir)))
}

#[tokio::test]
async fn a_hit_is_served_from_disk_without_the_backend() {
    let b = counting(&[("Content-Type", "text/plain")]).await;
    let admin = Admin::new();
    let ferry = Ferry::start(&format!(
        "{}access_log: \"{{dir}}/access.log\"\n{}",
        admin.yaml(""),
        conf(b.addr, "{tmp}/cache", "", VALID)
    ))
    .await;
    let first = get(&ferry, "/a").await;
    assert_eq!(
        (first.status, first.text().as_str(), first.cache()),
        (200, "n0", "MISS")
    );
    for _ in 0..3 {
        let again = get(&ferry, "/a").await;
        assert_eq!(
            (again.status, again.text().as_str(), again.cache()),
            (200, "n0", "HIT")
        );
        assert_eq!(again.headers["content-type"], "text/plain");
        assert_eq!(again.headers["content-length"], "2");
    }
    assert_eq!(b.hits(), 1, "the HITs never reached the backend");
    assert_eq!(
        admin
            .metric("ferry_cache_requests_total{cache=\"c\",status=\"HIT\"}")
            .await,
        3
    );
    assert_eq!(
        admin
            .metric("ferry_cache_requests_total{cache=\"c\",status=\"MISS\"}")
            .await,
        1
    );
    assert_eq!(admin.metric("ferry_cache_entries{cache=\"c\"}").await, 1);
    assert!(
        admin
            .metric("ferry_cache_stored_bytes_total{cache=\"c\"}")
            .await
            > 2
    );
    assert!(admin.metric("ferry_cache_size_bytes{cache=\"c\"}").await > 2);
    let log = ferry_tests::until_or(|| {
        let text = std::fs::read_to_string(ferry.dir.join("access.log")).ok()?;
        (text.lines().count() >= 4).then_some(text)
    })
    .await
    .expect("four access-log lines");
    let statuses: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["upstream_cache_status"]
                .to_string()
        })
        .collect();
    assert_eq!(statuses, ["\"MISS\"", "\"HIT\"", "\"HIT\"", "\"HIT\""]);
}

#[tokio::test]
async fn what_nginx_does_not_store_is_fetched_every_time() {
    let b = Backend::start(Arc::new(|i, r: &Seen| {
        let reply = Reply::ok(format!("n{i}"));
        match r.uri.as_str() {
            "/cookie" => reply.header("Set-Cookie", "a=b"),
            "/private" => reply.header("Cache-Control", "private"),
            "/no-cache" => reply.header("Cache-Control", "no-cache"),
            "/no-store" => reply.header("Cache-Control", "no-store"),
            "/private-field" => reply
                .header("Cache-Control", "private=\"X-Secret\"")
                .header("X-Secret", &format!("victim{i}")),
            "/no-cache-field" => reply
                .header("Cache-Control", "no-cache=\"X-Secret\"")
                .header("X-Secret", &format!("victim{i}")),
            "/max-age-negative" => reply.header("Cache-Control", "max-age=-1"),
            "/max-age-fraction" => reply.header("Cache-Control", "max-age=60.5"),
            "/max-age-hex" => reply.header("Cache-Control", "max-age=0x3c"),
            "/max-age-0" => reply.header("Cache-Control", "max-age=0"),
            "/vary-star" => reply.header("Vary", "*"),
            "/expired" => reply.header("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            "/accel-0" => reply.header("X-Accel-Expires", "0"),
            "/teapot" => Reply::status(418, "tea"),
            _ => reply,
        }
    }))
    .await;
    let ferry = start(b.addr, VALID).await;
    for path in [
        "/cookie",
        "/private",
        "/no-cache",
        "/no-store",
        "/private-field",
        "/no-cache-field",
        "/max-age-negative",
        "/max-age-fraction",
        "/max-age-hex",
        "/max-age-0",
        "/vary-star",
        "/expired",
        "/accel-0",
        "/teapot",
    ] {
        let before = b.hits();
        let one = get(&ferry, path).await;
        let two = get(&ferry, path).await;
        assert_eq!((one.cache(), two.cache()), ("MISS", "MISS"), "{path}");
        assert_eq!(b.hits(), before + 2, "{path} was fetched twice");
        assert!(
            one.headers.get("x-accel-expires").is_none(),
            "hidden from clients"
        );
        if let Some(secret) = two.headers.get("x-secret") {
            let own = format!("victim{}", before + 1);
            assert_eq!(secret.to_str().ok(), Some(own.as_str()), "{path}: leaked");
        }
    }
}

#[tokio::test]
async fn freshness_headers_and_the_query_make_the_entry() {
    let b = Backend::start(Arc::new(|i, r: &Seen| {
        let reply = Reply::ok(format!("n{i}"));
        match r.uri.as_str() {
            "/accel-60" => reply
                .header("X-Accel-Expires", "60")
                .header("Cache-Control", "no-store"),
            "/max-age" => reply.header("Cache-Control", "max-age=60"),
            _ => reply,
        }
    }))
    .await;
    // No `valid:`: only the headers say how long.
    let ferry = start(b.addr, "").await;
    for path in ["/accel-60", "/max-age"] {
        assert_eq!(get(&ferry, path).await.cache(), "MISS");
        let hit = get(&ferry, path).await;
        assert_eq!(hit.cache(), "HIT", "{path}");
        assert!(hit.headers.get("x-accel-expires").is_none());
    }
    assert_eq!(b.hits(), 2);
    // Without headers or `valid`: never stored.
    get(&ferry, "/plain").await;
    assert_eq!(get(&ferry, "/plain").await.cache(), "MISS");
    assert_eq!(b.hits(), 4);

    let q = counting(&[]).await;
    let ferry = start(q.addr, VALID).await;
    assert_eq!(get(&ferry, "/q?a=1").await.text(), "n0");
    assert_eq!(get(&ferry, "/q?a=2").await.text(), "n1");
    let hit = get(&ferry, "/q?a=1").await;
    assert_eq!((hit.text().as_str(), hit.cache()), ("n0", "HIT"));
    assert_eq!(q.hits(), 2, "the query is part of the key");
}

#[tokio::test]
async fn post_is_not_stored_and_head_is_fetched_as_get() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, VALID).await;
    for _ in 0..2 {
        let r = send(http().post(ferry.url("/p")).body("x")).await;
        assert_eq!(r.cache(), "", "POST is not a cached method");
    }
    assert_eq!(b.hits(), 2);
    assert_eq!(b.last().method, "POST");

    let head = send(http().head(ferry.url("/h"))).await;
    assert_eq!(
        (head.status, head.cache(), head.body.len()),
        (200, "MISS", 0)
    );
    assert_eq!(b.last().method, "GET", "convert_head fetches with GET");
    // The HEAD's answer ends with its header; the body it fetched goes on
    // into the entry (as in nginx, a request before its end is a miss).
    stored(&ferry.tmp().join("cache"), 1).await;
    let hit = get(&ferry, "/h").await;
    assert_eq!((hit.cache(), hit.text().as_str()), ("HIT", "n2"));
    let head = send(http().head(ferry.url("/h"))).await;
    assert_eq!((head.cache(), head.body.len()), ("HIT", 0));
    assert_eq!(b.hits(), 3);
}

#[tokio::test]
async fn an_expired_entry_is_revalidated_with_its_etag() {
    let b = Backend::start(Arc::new(|_, r: &Seen| {
        if r.headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Reply::status(304, "").header("Cache-Control", "max-age=60");
        }
        Reply::ok("one")
            .header("ETag", "\"v1\"")
            .header("Cache-Control", "max-age=1")
    }))
    .await;
    let ferry = start(b.addr, "revalidate: true").await;
    assert_eq!(get(&ferry, "/r").await.cache(), "MISS");
    // Until the second runs out.
    let r = until_expired(&ferry, "/r").await;
    assert_eq!(
        (r.status, r.cache(), r.text().as_str()),
        (200, "REVALIDATED", "one")
    );
    assert_eq!(b.last().headers["if-none-match"], "\"v1\"");
    let hit = get(&ferry, "/r").await;
    assert_eq!(
        (hit.cache(), hit.text().as_str()),
        ("HIT", "one"),
        "the 304 refreshed it"
    );
    // A client's own validator gets a 304 from the entry.
    let nm = send(
        http()
            .get(ferry.url("/r"))
            .header("If-None-Match", "\"v1\""),
    )
    .await;
    assert_eq!((nm.status, nm.body.len()), (304, 0));
    assert_eq!(b.hits(), 2);
}

#[tokio::test]
async fn a_dead_server_gets_the_stale_entry() {
    let b = counting(&[("Cache-Control", "max-age=1")]).await;
    let addr = b.addr;
    let ferry = start_unpooled(addr, "use_stale: [error, timeout]").await;
    assert_eq!(get(&ferry, "/s").await.text(), "n0");
    drop(b);
    let r = until_expired(&ferry, "/s").await;
    assert_eq!(
        (r.status, r.cache(), r.text().as_str()),
        (200, "STALE", "n0")
    );

    // Without use_stale the client gets the 502.
    let b = counting(&[("Cache-Control", "max-age=1")]).await;
    let addr = b.addr;
    let ferry = start_unpooled(addr, "").await;
    get(&ferry, "/s").await;
    drop(b);
    assert_eq!(until_expired(&ferry, "/s").await.status, 502);
}

#[tokio::test]
async fn five_concurrent_misses_make_one_upstream_request() {
    let b = Backend::start(Arc::new(|i, _| {
        let mut r = Reply::ok(format!("n{i}"));
        r.delay = Some(std::time::Duration::from_millis(300));
        r
    }))
    .await;
    let ferry = start(b.addr, &format!("{VALID}, lock: true")).await;
    let url = ferry.url("/l");
    let all = futures_join(5, |_| send(http().get(url.clone()))).await;
    assert_eq!(b.hits(), 1, "one request filled the entry");
    let mut statuses: Vec<&str> = all.iter().map(|g| g.cache()).collect();
    statuses.sort();
    assert_eq!(statuses, ["HIT", "HIT", "HIT", "HIT", "MISS"]);
    assert!(all.iter().all(|g| g.text() == "n0"));
}

async fn futures_join<F, Fut>(n: usize, f: F) -> Vec<Got>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Got> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

#[tokio::test]
async fn a_3mb_body_is_byte_identical_on_a_hit() {
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let b = {
        let body = bytes::Bytes::from(body.clone());
        Backend::start(Arc::new(move |_, _| Reply::ok(body.clone()))).await
    };
    // The route's pipe keeps 8 x 4k in memory; the rest of a slow
    // client's share goes to its temp file; the entry streams to disk.
    let ferry = start(b.addr, VALID).await;
    let miss = get(&ferry, "/big").await;
    assert_eq!(miss.cache(), "MISS");
    assert!(miss.body == body, "the MISS is whole");
    let hit = get(&ferry, "/big").await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.body.len(), body.len());
    assert!(hit.body == body, "the HIT is byte for byte the response");
    assert_eq!(b.hits(), 1);
    let files = stored(&ferry.tmp().join("cache"), 1).await;
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(
        size > 3 << 20 && size < (3 << 20) + 4096,
        "one file of the body and its head: {size}"
    );
}

#[tokio::test]
async fn vary_keeps_one_entry_per_variant() {
    let b = Backend::start(Arc::new(|_, r: &Seen| {
        let enc = r
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        Reply::ok(enc).header("Vary", "Accept-Encoding")
    }))
    .await;
    let ferry = start(b.addr, VALID).await;
    let with = |enc: &'static str| {
        let url = ferry.url("/v");
        async move { send(http().get(url).header("Accept-Encoding", enc)).await }
    };
    assert_eq!(with("gzip").await.text(), "gzip");
    assert_eq!(with("br").await.text(), "br");
    let g = with("gzip").await;
    let r = with("br").await;
    assert_eq!((g.cache(), g.text().as_str()), ("HIT", "gzip"));
    assert_eq!((r.cache(), r.text().as_str()), ("HIT", "br"));
    assert_eq!(b.hits(), 2);
}

#[tokio::test]
async fn a_truncated_response_is_never_stored() {
    let raw = Raw::start(Arc::new(|_| {
        vec![
            Step::text("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            Step::Send(vec![b'x'; 500]),
            Step::Close,
        ]
    }))
    .await;
    let ferry = start(raw.addr, VALID).await;
    for _ in 0..2 {
        let r = http().get(ferry.url("/t")).send().await.expect("header");
        assert!(
            r.bytes().await.is_err(),
            "the client sees the body cut short"
        );
    }
    assert_eq!(raw.hits(), 2, "nothing was stored");
    let dir = ferry.tmp().join("cache");
    assert!(entry_files(&dir).is_empty());
    // The cache's writer thread removes an abandoned fill's temp file, after
    // the client saw its body cut: waited for, bounded.
    ferry_tests::until("no temp file left behind", || {
        std::fs::read_dir(dir.join("tmp")).unwrap().count() == 0
    })
    .await;
}

#[tokio::test]
async fn the_cache_s_templates_see_the_client_address() {
    let b = counting(&[]).await;
    let rules = format!("{VALID}, key: \"$remote_addr$request_uri\", bypass: [\"$remote_addr\"]");
    let ferry = start(b.addr, &rules).await;
    get(&ferry, "/a").await;
    let again = get(&ferry, "/a").await;
    assert_eq!(again.cache(), "BYPASS", "127.0.0.1 is not empty nor \"0\"");
    let entries = stored(&ferry.tmp().join("cache"), 1).await;
    assert_eq!(entries.len(), 1);
    let file = std::fs::read(&entries[0]).expect("the entry");
    let key = b"127.0.0.1/a";
    assert!(
        file.windows(key.len()).any(|w| w == key),
        "keyed by the address"
    );
}

#[tokio::test]
async fn bypass_fetches_and_stores_the_new_response() {
    let b = counting(&[]).await;
    let ferry = start(
        b.addr,
        &format!("{VALID}, bypass: [\"$http_x_refresh\"], no_cache: [\"$arg_nostore\"]"),
    )
    .await;
    assert_eq!(get(&ferry, "/b").await.text(), "n0");
    assert_eq!(get(&ferry, "/b").await.cache(), "HIT");
    let fresh = send(http().get(ferry.url("/b")).header("X-Refresh", "1")).await;
    assert_eq!((fresh.cache(), fresh.text().as_str()), ("BYPASS", "n1"));
    let zero = send(http().get(ferry.url("/b")).header("X-Refresh", "0")).await;
    assert_eq!(
        (zero.cache(), zero.text().as_str()),
        ("HIT", "n1"),
        "\"0\" is no"
    );
    // no_cache: fetched, not stored.
    assert_eq!(get(&ferry, "/n?nostore=1").await.text(), "n2");
    assert_eq!(get(&ferry, "/n?nostore=1").await.text(), "n3");
    assert_eq!(b.hits(), 4);
}

#[tokio::test]
async fn min_uses_stores_on_the_nth_request() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, &format!("{VALID}, min_uses: 2")).await;
    assert_eq!(get(&ferry, "/m").await.text(), "n0");
    assert_eq!(get(&ferry, "/m").await.text(), "n1");
    let hit = get(&ferry, "/m").await;
    assert_eq!((hit.cache(), hit.text().as_str()), ("HIT", "n1"));
}

#[tokio::test]
async fn ranges_are_answered_from_the_entry() {
    let b = Backend::start(Arc::new(|_, _| Reply::ok("0123456789"))).await;
    let ferry = start(b.addr, VALID).await;
    get(&ferry, "/range").await;
    let part = send(http().get(ferry.url("/range")).header("Range", "bytes=2-5")).await;
    assert_eq!((part.status, part.text().as_str()), (206, "2345"));
    assert_eq!(part.headers["content-range"], "bytes 2-5/10");
    assert_eq!(part.cache(), "HIT");
    let tail = send(http().get(ferry.url("/range")).header("Range", "bytes=-3")).await;
    assert_eq!((tail.status, tail.text().as_str()), (206, "789"));
    let none = send(
        http()
            .get(ferry.url("/range"))
            .header("Range", "bytes=20-30"),
    )
    .await;
    assert_eq!(none.status, 416);
    assert_eq!(none.headers["content-range"], "bytes */10");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn a_whole_hit_says_accept_ranges_bytes_once() {
    let b = Backend::start(Arc::new(|_, r: &Seen| {
        let reply = Reply::ok("0123456789");
        match r.uri.as_str() {
            "/said" => reply.header("Accept-Ranges", "bytes"),
            "/other" => reply.header("Accept-Ranges", "none"),
            _ => reply,
        }
    }))
    .await;
    let ferry = start(b.addr, VALID).await;
    for path in ["/said", "/unsaid", "/other"] {
        get(&ferry, path).await;
        let hit = get(&ferry, path).await;
        assert_eq!((hit.cache(), hit.text().as_str()), ("HIT", "0123456789"));
        let said: Vec<_> = hit.headers.get_all("accept-ranges").iter().collect();
        assert_eq!(said, ["bytes"], "{path}");
    }
}

#[tokio::test]
async fn a_hit_follows_the_route_rules_of_the_configuration_serving_it() {
    let b = Backend::start(Arc::new(|_, _: &Seen| {
        Reply::ok("body")
            .header("X-Secret", "s")
            .header("X-Other", "o")
    }))
    .await;
    let hiding = |name: &str| {
        conf(b.addr, "{tmp}/cache", "", VALID).replace(
            "proxy: { add_headers",
            &format!("proxy: {{ hide_headers: [{name}], add_headers"),
        )
    };
    let ferry = Ferry::start(&hiding("X-Secret")).await;
    assert_eq!(get(&ferry, "/r").await.cache(), "MISS");
    for _ in 0..2 {
        let hit = get(&ferry, "/r").await;
        assert_eq!(hit.cache(), "HIT");
        assert!(hit.headers.get("x-secret").is_none());
        assert_eq!(hit.headers["x-other"], "o");
    }
    // The same entry, served by the next configuration's rules.
    ferry.rewrite(&hiding("X-Other"));
    ferry.reload().await;
    let hit = get(&ferry, "/r").await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.headers["x-secret"], "s");
    assert!(hit.headers.get("x-other").is_none());
    // An HTTP/1.0 client's HIT is its own.
    let old = send(http().get(ferry.url("/r")).version(http::Version::HTTP_10)).await;
    assert_eq!((old.status, old.cache()), (200, "HIT"));
    assert!(old.headers.get("x-other").is_none());
}

#[tokio::test]
async fn max_size_evicts_the_least_recently_used() {
    let b = Backend::start(Arc::new(|_, r: &Seen| {
        Reply::ok(vec![b'e'; 1000]).header("X-Path", &r.uri)
    }))
    .await;
    let ferry = Ferry::start(&conf(b.addr, "{tmp}/cache", "max_size: 2500", VALID)).await;
    let dir = ferry.tmp().join("cache");
    for (i, p) in ["/e1", "/e2"].into_iter().enumerate() {
        assert_eq!(get(&ferry, p).await.cache(), "MISS");
        stored(&dir, i + 1).await;
    }
    assert_eq!(get(&ferry, "/e3").await.cache(), "MISS");
    let files = stored(&dir, 2).await;
    assert_eq!(
        files.len(),
        2,
        "two 1 KB entries fit in 2500 bytes, not three"
    );
    assert_eq!(get(&ferry, "/e3").await.cache(), "HIT", "the newest stays");
    assert_eq!(get(&ferry, "/e1").await.cache(), "MISS", "the oldest went");
}

#[tokio::test]
async fn entries_are_found_again_after_a_restart() {
    let b = counting(&[]).await;
    let dir = fresh_dir().join("kept");
    let yaml = conf(b.addr, &dir.display().to_string(), "", VALID);
    {
        let ferry = Ferry::start(&yaml).await;
        assert_eq!(get(&ferry, "/k").await.text(), "n0");
        stored(&dir, 1).await;
    }
    let ferry = Ferry::start(&yaml).await;
    let hit = get(&ferry, "/k").await;
    assert_eq!((hit.cache(), hit.text().as_str()), ("HIT", "n0"));
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn a_corrupt_file_is_a_miss_and_is_replaced() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, VALID).await;
    get(&ferry, "/c").await;
    let dir = ferry.tmp().join("cache");
    let files = stored(&dir, 1).await;
    let len = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::write(&files[0], vec![b'?'; len as usize]).unwrap();
    let r = get(&ferry, "/c").await;
    assert_eq!((r.cache(), r.text().as_str()), ("MISS", "n1"));
    stored(&dir, 1).await;
    let hit = get(&ferry, "/c").await;
    assert_eq!(
        (hit.cache(), hit.text().as_str()),
        ("HIT", "n1"),
        "stored again, whole"
    );
    // Cut short on disk: also a miss.
    let files = entry_files(&dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    f.set_len(len - 1).unwrap();
    assert_eq!(get(&ferry, "/c").await.text(), "n2");
}

#[tokio::test]
async fn the_admin_listener_purges_a_key() {
    let b = counting(&[]).await;
    let admin = Admin::new();
    let ferry = Ferry::start(&format!(
        "{}{}",
        admin.yaml("token: secret"),
        conf(b.addr, "{tmp}/cache", "", VALID)
    ))
    .await;
    get(&ferry, "/p?x=1").await;
    assert_eq!(get(&ferry, "/p?x=1").await.cache(), "HIT");
    let url = |q: &str| format!("http://{}/cache/c{q}", admin.addr);
    let key = "httpapp/p?x=1";
    let q = format!(
        "?key={}",
        key.replace('/', "%2F")
            .replace('?', "%3F")
            .replace('=', "%3D")
    );
    let no = http().delete(url(&q)).send().await.unwrap();
    assert_eq!(no.status(), 401);
    let ok = http()
        .delete(url(&q))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap().trim(), "{\"removed\":1}");
    assert_eq!(get(&ferry, "/p?x=1").await.cache(), "MISS");
    let unknown = http()
        .delete(format!("http://{}/cache/nope?key=a", admin.addr))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let keyless = http()
        .delete(url(""))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 400);
}

#[tokio::test]
async fn a_5xx_listed_in_use_stale_gets_the_entry() {
    let b = Backend::start(Arc::new(|i, _| {
        if i == 0 {
            Reply::ok("good").header("Cache-Control", "max-age=1")
        } else {
            Reply::status(503, "down")
        }
    }))
    .await;
    let ferry = start(b.addr, "use_stale: [http_503]").await;
    get(&ferry, "/u").await;
    let r = until_expired(&ferry, "/u").await;
    assert_eq!(
        (r.status, r.cache(), r.text().as_str()),
        (200, "STALE", "good")
    );
}

#[test]
fn cache_mistakes_are_reported_with_their_position() {
    let (code, _, out) = ferry_tests::ferry::check(
        "listen: [\"127.0.0.1:1\"]\ncaches:\n  c: { path: /tmp/x }\nupstreams:\n  app:\n    servers: [ { addr: \"127.0.0.1:1\" } ]\nroutes:\n  - upstream: app\n    cache: { zone: d, valid: { ok: 1m }, use_stale: [off, error] }\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("FILE:9:20: unknown cache `d`, expected one of c"),
        "{out}"
    );
    assert!(
        out.contains("valid keys are statuses 100 to 599 or `any`, not `ok`"),
        "{out}"
    );
    assert!(out.contains("off cannot be combined"), "{out}");
    let (code, _, out) = ferry_tests::ferry::check(
        "listen: [\"127.0.0.1:1\"]\ncaches:\n  c: { path: /etc/hostname/cache }\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("FILE:3:14: `/etc/hostname` is not a directory"),
        "{out}"
    );
}

/// Requests until the answer is not a HIT (the entry expired); bounded.
async fn until_expired(ferry: &Ferry, path: &str) -> Got {
    let start = std::time::Instant::now();
    loop {
        let r = get(ferry, path).await;
        if r.cache() != "HIT" || start.elapsed() > ferry_tests::WAIT {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// While a background update is on its way, another request for the
/// expired entry is answered UPDATING and starts no update of its own,
/// with or without the cache lock (nginx's `node->updating`).
#[tokio::test]
async fn one_background_update_at_a_time_without_a_lock() {
    let reply = |body: &str, age: u32| {
        Step::Send(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age={age}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    };
    // The update's answer comes a second late: the second request below
    // arrives while it is on its way.
    let b = Raw::start(Arc::new(move |i| match i {
        0 => vec![reply("n0", 1)],
        1 => vec![
            Step::Wait(std::time::Duration::from_secs(1)),
            reply("n1", 60),
        ],
        _ => vec![reply("nX", 60)],
    }))
    .await;
    let ferry = start(b.addr, "use_stale: [updating], background_update: true").await;
    assert_eq!(get(&ferry, "/one").await.text(), "n0");
    let r = until_expired(&ferry, "/one").await;
    assert_eq!((r.cache(), r.text().as_str()), ("STALE", "n0"));
    let again = get(&ferry, "/one").await;
    assert_eq!(
        (again.cache(), again.text().as_str()),
        ("UPDATING", "n0"),
        "the update is on its way"
    );
    let start = std::time::Instant::now();
    let mut r = get(&ferry, "/one").await;
    while r.text() != "n1" && start.elapsed() < ferry_tests::WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        r = get(&ferry, "/one").await;
    }
    assert_eq!((r.cache(), r.text().as_str()), ("HIT", "n1"));
    assert_eq!(b.hits(), 2, "one fill, one update");
}

#[tokio::test]
async fn background_update_answers_stale_and_refills() {
    // The first answer expires at once; the refilled one stays fresh (a
    // loaded machine must not see it expire before it is read).
    let b = Backend::start(Arc::new(|i, _: &Seen| {
        let age = if i == 0 { "max-age=1" } else { "max-age=60" };
        Reply::ok(format!("n{i}")).header("Cache-Control", age)
    }))
    .await;
    let ferry = start(b.addr, "use_stale: [updating], background_update: true").await;
    assert_eq!(get(&ferry, "/bg").await.text(), "n0");
    let r = until_expired(&ferry, "/bg").await;
    assert_eq!(
        (r.cache(), r.text().as_str()),
        ("STALE", "n0"),
        "answered at once, as it was"
    );
    let fresh = ferry_tests::until_or(|| (b.hits() == 2).then_some(())).await;
    assert!(fresh.is_some(), "the update reached the backend");
    let start = std::time::Instant::now();
    let mut r = get(&ferry, "/bg").await;
    while r.text() != "n1" && start.elapsed() < ferry_tests::WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        r = get(&ferry, "/bg").await;
    }
    assert_eq!(
        (r.cache(), r.text().as_str()),
        ("HIT", "n1"),
        "the update filled the entry"
    );
}

#[tokio::test]
async fn while_one_request_updates_the_others_get_updating() {
    let b = Backend::start(Arc::new(|i, _| {
        let mut r = Reply::ok(format!("n{i}")).header("Cache-Control", "max-age=1");
        if i > 0 {
            r.delay = Some(std::time::Duration::from_millis(1500));
        }
        r
    }))
    .await;
    let ferry = Arc::new(start(b.addr, "lock: true, use_stale: [updating]").await);
    get(&ferry, "/up").await;
    // The first request after expiry holds the lock and waits on the slow
    // backend.
    let f = ferry.clone();
    let updater = tokio::spawn(async move { until_expired(&f, "/up").await });
    assert!(ferry_tests::until_or(|| (b.hits() == 2).then_some(()))
        .await
        .is_some());
    let other = get(&ferry, "/up").await;
    assert_eq!((other.cache(), other.text().as_str()), ("UPDATING", "n0"));
    let updater = updater.await.unwrap();
    assert_eq!(
        (updater.cache(), updater.text().as_str()),
        ("EXPIRED", "n1")
    );
    assert_eq!(b.hits(), 2);
}

#[tokio::test]
async fn past_lock_timeout_a_waiter_fetches_without_storing() {
    let b = slow_first(1000).await;
    let ferry = start(b.addr, &format!("{VALID}, lock: true, lock_timeout: 100ms")).await;
    let url = ferry.url("/lt");
    let first = tokio::spawn(async move { send(http().get(url)).await });
    assert!(ferry_tests::until_or(|| (b.hits() == 1).then_some(()))
        .await
        .is_some());
    let waiter = get(&ferry, "/lt").await;
    assert_eq!(
        (waiter.cache(), waiter.text().as_str()),
        ("MISS", "n1"),
        "went on after 100 ms"
    );
    let first = first.await.unwrap();
    assert_eq!(first.text(), "n0");
    stored(&ferry.tmp().join("cache"), 1).await;
    let hit = get(&ferry, "/lt").await;
    assert_eq!(
        (hit.cache(), hit.text().as_str()),
        ("HIT", "n0"),
        "only the lock holder stored"
    );
}

#[tokio::test]
async fn inactive_entries_are_removed() {
    let b = counting(&[]).await;
    let ferry = Ferry::start(&conf(b.addr, "{tmp}/cache", "inactive: 1s", VALID)).await;
    get(&ferry, "/i").await;
    let dir = ferry.tmp().join("cache");
    stored(&dir, 1).await;
    stored(&dir, 0).await;
    let r = get(&ferry, "/i").await;
    assert_eq!((r.cache(), r.text().as_str()), ("MISS", "n1"));
}

#[tokio::test]
async fn entries_survive_a_graceful_upgrade() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, VALID).await;
    assert_eq!(get(&ferry, "/g").await.text(), "n0");
    stored(&ferry.tmp().join("cache"), 1).await;
    let mut next = ferry.spawn_successor();
    let sock = ferry.dir.join("upgrade.sock");
    assert!(
        ferry_tests::until_or(|| sock.exists().then_some(()))
            .await
            .is_some(),
        "the successor never opened the upgrade socket"
    );
    ferry.signal(libc::SIGQUIT);
    let mut old = ferry;
    assert!(
        old.wait_exit().await.is_some(),
        "the old process did not exit"
    );
    let hit = get(&next, "/g").await;
    assert_eq!(
        (hit.cache(), hit.text().as_str()),
        ("HIT", "n0"),
        "the new process found it"
    );
    assert_eq!(b.hits(), 1);
    next.signal(libc::SIGINT);
    let _ = next.wait_exit().await;
}

#[tokio::test]
async fn past_lock_age_one_more_request_goes_to_the_upstream() {
    let b = slow_first(1500).await;
    let ferry = Arc::new(start(b.addr, &format!("{VALID}, lock: true, lock_age: 200ms")).await);
    let f = ferry.clone();
    let first = tokio::spawn(async move { get(&f, "/la").await });
    assert!(ferry_tests::until_or(|| (b.hits() == 1).then_some(()))
        .await
        .is_some());
    // Waits behind the first until its lock is 200 ms old, then fetches.
    let second = get(&ferry, "/la").await;
    assert_eq!((second.cache(), second.text().as_str()), ("MISS", "n1"));
    assert_eq!(
        b.hits(),
        2,
        "the second went to the upstream while the first was still out"
    );
    assert_eq!(first.await.unwrap().text(), "n0");
}

/// One request on `conn` (kept alive): its status and body.
async fn on_conn(conn: &mut tokio::net::TcpStream, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(ferry_tests::WAIT, conn.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut lines);
        if let Ok(httparse::Status::Complete(at)) = resp.parse(&buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .expect("a Content-Length");
            if buf.len() >= at + len {
                let body = String::from_utf8_lossy(&buf[at..at + len]).into_owned();
                return (resp.code.unwrap_or(0), body);
            }
        }
    }
}

/// Ferry's open file descriptors.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// `pid`'s soft limit of open files set to `n`: the limit it had.
fn limit_fds(pid: u32, n: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let none = std::ptr::null();
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, none, &mut old) };
    assert_eq!(rc, 0, "read the limit");
    let new = libc::rlimit {
        rlim_cur: n,
        rlim_max: old.rlim_max,
    };
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "set the limit");
    old.rlim_cur
}

/// With no file descriptor left (EMFILE), an entry that cannot be opened
/// is a miss, never taken for corruption: every file stays, and once
/// descriptors are back the same entries are HITs.
#[tokio::test]
async fn running_out_of_file_descriptors_keeps_the_entries() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, VALID).await;
    let dir = ferry.tmp().join("cache");
    for p in ["/a", "/b", "/c"] {
        assert_eq!(get(&ferry, p).await.cache(), "MISS");
    }
    let files = stored(&dir, 3).await;
    let mut conn = tokio::net::TcpStream::connect(ferry.addr)
        .await
        .expect("connect");
    assert_eq!(on_conn(&mut conn, "/a").await, (200, "n0".to_string()));
    let fds = open_fds(ferry.pid());
    assert!(fds > 3);
    let was = limit_fds(ferry.pid(), 3);
    for p in ["/a", "/b", "/c"] {
        let (status, _) = on_conn(&mut conn, p).await;
        assert!(status == 200 || status >= 500, "{p}: {status}");
    }
    limit_fds(ferry.pid(), was);
    assert!(
        ferry.log().contains("cannot read"),
        "the failed opens are logged; log:\n{}",
        ferry.log()
    );
    for f in &files {
        assert!(f.exists(), "{} was removed", f.display());
    }
    for (p, body) in [("/a", "n0"), ("/b", "n1"), ("/c", "n2")] {
        let again = get(&ferry, p).await;
        assert_eq!((again.cache(), again.text().as_str()), ("HIT", body), "{p}");
    }
}

/// A FIFO planted where an entry's file goes is refused, not opened for
/// a read that would wait forever: the request is a miss answered by the
/// backend, and the entry stored over it is a HIT.
#[tokio::test]
async fn a_fifo_at_an_entry_path_is_refused() {
    let b = counting(&[]).await;
    let ferry = start(b.addr, VALID).await;
    let dir = ferry.tmp().join("cache");
    assert_eq!(get(&ferry, "/f").await.cache(), "MISS");
    let file = stored(&dir, 1).await.remove(0);
    std::fs::remove_file(&file).expect("remove the entry");
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).expect("path");
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let got = tokio::time::timeout(ferry_tests::WAIT, get(&ferry, "/f"))
        .await
        .expect("an answer, not a hang");
    assert_eq!((got.cache(), got.text().as_str()), ("MISS", "n1"));
    ferry_tests::until_or(|| std::fs::metadata(&file).ok()?.is_file().then_some(()))
        .await
        .expect("the entry stored over the FIFO");
    assert_eq!(get(&ferry, "/f").await.cache(), "HIT");
}

/// `max_keys` bounds the keys a cache tracks: past it the least recently
/// used entry goes with its file, and `min_uses` counts of a flood of
/// keys never stored share the same bound.
#[tokio::test]
async fn max_keys_bounds_entries_and_use_counts() {
    let b = counting(&[]).await;
    let admin = Admin::new();
    let yaml = format!(
        "{}{}",
        admin.yaml(""),
        conf(b.addr, "{tmp}/cache", "max_keys: 3", VALID)
    );
    let ferry = Ferry::start(&yaml).await;
    let dir = ferry.tmp().join("cache");
    for i in 0..5 {
        assert_eq!(get(&ferry, &format!("/k{i}")).await.cache(), "MISS");
        stored(&dir, (i + 1).min(3)).await;
    }
    assert_eq!(admin.metric("ferry_cache_keys{cache=\"c\"}").await, 3);
    assert_eq!(get(&ferry, "/k4").await.cache(), "HIT");
    assert_eq!(get(&ferry, "/k0").await.cache(), "MISS", "evicted");
    drop(ferry);

    let admin = Admin::new();
    let yaml = format!(
        "{}{}",
        admin.yaml(""),
        conf(
            b.addr,
            "{tmp}/cache",
            "max_keys: 50",
            "valid: { 200: 10m }, min_uses: 2"
        )
    );
    let ferry = Ferry::start(&yaml).await;
    let http = http();
    for i in 0..400 {
        let r = http.get(ferry.url(&format!("/flood?{i}"))).send().await;
        assert_eq!(r.expect("answer").status(), 200);
    }
    assert_eq!(admin.metric("ferry_cache_keys{cache=\"c\"}").await, 50);
    assert_eq!(admin.metric("ferry_cache_entries{cache=\"c\"}").await, 0);
}

#[tokio::test]
async fn an_added_value_with_a_line_break_never_becomes_a_header_of_its_own() {
    // `Accept-Ranges` said: a HIT's header can go out as its entry keeps it.
    let b = counting(&[("Accept-Ranges", "bytes")]).await;
    let good = conf(b.addr, "{tmp}/cache", "", VALID);
    let ferry = Ferry::start(&good).await;
    assert_eq!(get(&ferry, "/r").await.cache(), "MISS");
    assert_eq!(get(&ferry, "/r").await.cache(), "HIT");
    // YAML's escapes make a value a header cannot hold.
    ferry.rewrite(&good.replace(
        "add_headers: { X-Cache: \"$upstream_cache_status\" }",
        "add_headers: { X-Cache: \"$upstream_cache_status\", X-Bad: \"a\\r\\nX-Injected: 1\" }",
    ));
    ferry.reload().await;
    for _ in 0..2 {
        let got = get(&ferry, "/r").await;
        assert!(
            got.headers.get("x-injected").is_none(),
            "status {}",
            got.status
        );
        assert!(got.headers.get("x-bad").is_none(), "status {}", got.status);
    }
    assert_eq!(b.hits(), 1, "the entry answered");
}
