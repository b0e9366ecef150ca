//! Prometheus metrics, served as text at `admin.listen` `/metrics`.
//!
//! Recorded once per request, at its end, from Ferry's record of it
//! ([`crate::record::Request`]); the live numbers are requests in
//! flight, servers taken out by `max_fails`, reloads and DNS lookups.

use crate::record::{Request, TryOutcome};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::borrow::Cow;
use std::sync::OnceLock;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub in_flight: IntGauge,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub spilled_responses: IntCounter,
    pub spilled_bytes: IntCounter,
    pub truncated: IntCounter,
    pub request_seconds: HistogramVec,
    pub access_log_dropped: IntCounter,
    pub bad_requests: IntCounterVec,
    pub reloads: IntCounterVec,
    pub dns_lookups: IntCounterVec,
    pub cache: CacheMetrics,
    pub upstream: UpstreamMetrics,
    pub limit: LimitMetrics,
}

/// The limit zones' series.
pub struct LimitMetrics {
    pub requests: IntCounterVec,
    pub store_errors: IntCounterVec,
}

/// The upstream tries' series.
pub struct UpstreamMetrics {
    /// Bumped when a scrape may have removed a server's series: a route's
    /// kept try series ([`RouteSeries`]) from before it are found again.
    forgotten: std::sync::atomic::AtomicU64,
    pub tries: IntCounterVec,
    pub retries: IntCounterVec,
    pub marked_failed: IntCounterVec,
    pub header_seconds: HistogramVec,
}

/// The caches' series.
pub struct CacheMetrics {
    pub requests: IntCounterVec,
    pub stored_bytes: IntCounterVec,
    pub entries: IntGaugeVec,
    pub size: IntGaugeVec,
    pub keys: IntGaugeVec,
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = r.register(Box::new(g.clone()));
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = r.register(Box::new(c.clone()));
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    let _ = r.register(Box::new(c.clone()));
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = exponential_buckets(0.0005, 2.0, 16).unwrap_or_default();
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    let _ = r.register(Box::new(h.clone()));
    h
}

/// The registry `/metrics` is rendered from: a program registers its own
/// collectors here and they appear beside Ferry's.
pub(crate) fn registry() -> &'static Registry {
    &metrics().registry
}

/// Count a server taken out by `max_fails` (the upstream loop's report).
pub(crate) fn count_marked_failed(group: &str, addr: std::net::SocketAddr) {
    metrics()
        .upstream
        .marked_failed
        .with_label_values(&[group, &addr.to_string()])
        .inc();
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let r = Registry::new();
        let in_flight = IntGauge::new("ferry_requests_in_flight", "Requests being served")
            .expect("valid metric");
        let _ = r.register(Box::new(in_flight.clone()));
        let m = Metrics {
            requests: counter_vec(
                &r,
                "ferry_requests_total",
                "Requests by route and status",
                &["route", "status"],
            ),
            in_flight,
            bytes_in: counter(
                &r,
                "ferry_request_body_bytes_total",
                "Request body bytes read from clients",
            ),
            bytes_out: counter(
                &r,
                "ferry_response_body_bytes_total",
                "Response body bytes sent to clients",
            ),
            spilled_responses: counter(
                &r,
                "ferry_spilled_responses_total",
                "Responses buffered to a temp file",
            ),
            spilled_bytes: counter(
                &r,
                "ferry_spilled_bytes_total",
                "Response bytes written to temp files",
            ),
            truncated: counter(
                &r,
                "ferry_truncated_responses_total",
                "Responses cut short after the header",
            ),
            request_seconds: histogram(
                &r,
                "ferry_request_duration_seconds",
                "Total request time",
                &["route"],
            ),
            access_log_dropped: counter(
                &r,
                "ferry_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind",
            ),
            bad_requests: counter_vec(
                &r,
                "ferry_bad_requests_total",
                "Requests refused before routing, by reason (malformed, header_too_large, header_timeout, smuggling, bad_path)",
                &["reason"],
            ),
            reloads: counter_vec(
                &r,
                "ferry_config_reloads_total",
                "Reloads of the configuration file, by result (ok, error)",
                &["result"],
            ),
            dns_lookups: counter_vec(
                &r,
                "ferry_dns_lookups_total",
                "Lookups of discovered servers, by result (ok, empty, error)",
                &["result"],
            ),
            cache: CacheMetrics::new(&r),
            upstream: UpstreamMetrics::new(&r),
            limit: LimitMetrics::new(&r),
            registry: r,
        };
        m.known_series();
        m
    })
}

impl UpstreamMetrics {
    fn new(r: &Registry) -> UpstreamMetrics {
        UpstreamMetrics {
            forgotten: std::sync::atomic::AtomicU64::new(0),
            tries: counter_vec(
                r,
                "ferry_upstream_tries_total",
                "Upstream tries by group, server and outcome",
                &["group", "server", "outcome"],
            ),
            retries: counter_vec(
                r,
                "ferry_retries_total",
                "Tries after the first, by group",
                &["group"],
            ),
            marked_failed: counter_vec(
                r,
                "ferry_servers_marked_failed_total",
                "Times a server was taken out by max_fails",
                &["group", "server"],
            ),
            header_seconds: histogram(
                r,
                "ferry_upstream_header_duration_seconds",
                "Time to the upstream response header, per try",
                &["group"],
            ),
        }
    }
}

impl LimitMetrics {
    fn new(r: &Registry) -> LimitMetrics {
        LimitMetrics {
            requests: counter_vec(
                r,
                "ferry_limit_requests_total",
                "Requests a limit zone counted, by result (passed, delayed, rejected, and the _dry_run forms)",
                &["zone", "result"],
            ),
            store_errors: counter_vec(
                r,
                "ferry_limit_store_errors_total",
                "Requests a limit zone's store (Redis) did not answer in time",
                &["zone"],
            ),
        }
    }
}

impl CacheMetrics {
    fn new(r: &Registry) -> CacheMetrics {
        CacheMetrics {
        requests: counter_vec(
            r,
            "ferry_cache_requests_total",
            "Requests on routes with a cache, by cache and $upstream_cache_status (HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS)",
            &["cache", "status"],
        ),
        stored_bytes: counter_vec(
            r,
            "ferry_cache_stored_bytes_total",
            "Bytes written into cache entries",
            &["cache"],
        ),
        entries: gauge_vec(
            r,
            "ferry_cache_entries",
            "Files a cache holds (entries, and the Vary lists of varying keys)",
            &["cache"],
        ),
        size: gauge_vec(
            r,
            "ferry_cache_size_bytes",
            "Bytes a cache holds on disk",
            &["cache"],
        ),
        keys: gauge_vec(
            r,
            "ferry_cache_keys",
            "Keys a cache tracks: its entries and its min_uses counts (at most max_keys)",
            &["cache"],
        ),
        }
    }
}

/// The reasons a request is refused before routing.
const REFUSALS: &[&str] = &[
    "malformed",
    "header_too_large",
    "header_timeout",
    "smuggling",
    "transfer_coding",
    "bad_target",
    "bad_path",
    "bad_host",
    "bad_method",
    "no_host",
];

/// What a cache did for a request (`$upstream_cache_status`).
const CACHE_STATUSES: &[&str] = &[
    "HIT",
    "MISS",
    "EXPIRED",
    "STALE",
    "UPDATING",
    "REVALIDATED",
    "BYPASS",
];

impl Metrics {
    /// Every series whose label values are known before anything happens,
    /// at 0 (Prometheus's advice: a rate of an absent series is nothing,
    /// not zero).
    fn known_series(&self) {
        for result in ["ok", "error"] {
            self.reloads.with_label_values(&[result]);
        }
        for result in ["ok", "empty", "error"] {
            self.dns_lookups.with_label_values(&[result]);
        }
        for reason in REFUSALS {
            self.bad_requests.with_label_values(&[reason]);
        }
    }

    /// The Prometheus text exposition, with each cache's size as it is
    /// now, and no series left of a server that is no longer a member of
    /// its configured group (`servers`: each group's members now), so the
    /// series follow the fleet, not its history.
    pub fn render_with(
        &self,
        caches: &std::collections::HashMap<String, std::sync::Arc<ferry_cache::Zone>>,
        servers: &std::collections::HashMap<&str, Vec<String>>,
    ) -> Vec<u8> {
        forget_gone(&self.upstream.tries, servers);
        forget_gone(&self.upstream.marked_failed, servers);
        self.upstream
            .forgotten
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        for (name, zone) in caches {
            for status in CACHE_STATUSES {
                self.cache
                    .requests
                    .with_label_values(&[name.as_str(), status]);
            }
            self.cache
                .entries
                .with_label_values(&[name])
                .set(zone.entries() as i64);
            self.cache
                .size
                .with_label_values(&[name])
                .set(zone.size() as i64);
            self.cache
                .keys
                .with_label_values(&[name])
                .set(zone.keys() as i64);
        }
        self.render()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Account a finished request (`series`: its route's, if it has one;
    /// `cache`: the route's cache, if any).
    pub fn record(
        &self,
        r: &Request,
        route: &str,
        series: Option<&RouteSeries>,
        cache: Option<&str>,
        request_body_bytes: u64,
    ) {
        if let (Some(zone), status) = (cache, r.cache_status.as_str()) {
            if !status.is_empty() {
                self.cache.requests.with_label_values(&[zone, status]).inc();
            }
        }
        let requests = || {
            let mut digits = [0; 3];
            let code = status_label(r.status, &mut digits);
            self.requests.with_label_values(&[route, &*code])
        };
        match series.zip(COMMON.iter().position(|&c| c == r.status)) {
            Some((s, i)) => s.requests[i].get_or_init(requests).inc(),
            None => requests().inc(),
        }
        let seconds = || self.request_seconds.with_label_values(&[route]);
        let elapsed = r.start.elapsed().as_secs_f64();
        match series {
            Some(s) => s.seconds.get_or_init(seconds).observe(elapsed),
            None => seconds().observe(elapsed),
        }
        self.bytes_in.inc_by(request_body_bytes);
        self.bytes_out.inc_by(r.body_bytes_sent);
        if r.spilled_bytes > 0 {
            self.spilled_responses.inc();
            self.spilled_bytes.inc_by(r.spilled_bytes);
        }
        if r.truncated {
            self.truncated.inc();
        }
        for (i, t) in r.tries.iter().enumerate() {
            if i == 0 && r.tries.len() == 1 && t.outcome == TryOutcome::Used {
                if let Some(s) = series {
                    self.upstream.record_used(t, s);
                    continue;
                }
            }
            let outcome: Cow<str> = match t.outcome {
                TryOutcome::Used => "success".into(),
                TryOutcome::NextStatus(s) => format!("http_{s}").into(),
                TryOutcome::Error => "error".into(),
                TryOutcome::Timeout => "timeout".into(),
                TryOutcome::InvalidHeader => "invalid_header".into(),
                TryOutcome::NoLive => "no_live".into(),
                TryOutcome::Client => "client".into(),
            };
            self.upstream
                .tries
                .with_label_values(&[t.group.as_str(), t.addr.as_str(), &*outcome])
                .inc();
            if i > 0 {
                self.upstream.retries.with_label_values(&[&t.group]).inc();
            }
            if let Some(h) = t.header_time {
                self.upstream
                    .header_seconds
                    .with_label_values(&[&t.group])
                    .observe(h.as_secs_f64());
            }
        }
    }
}

/// The statuses whose `ferry_requests_total` series a route keeps found.
const COMMON: [u16; 8] = [200, 204, 206, 301, 302, 304, 404, 502];

/// A route's own series, each found on its first use and kept for the
/// route's life: finding one by its label values hashes them under the
/// vector's lock, for every request. Made empty, so that a route shows no
/// series before it serves.
#[derive(Default)]
pub(crate) struct RouteSeries {
    seconds: OnceLock<Histogram>,
    /// `ferry_requests_total{route, status}` for the statuses of [`COMMON`].
    requests: [OnceLock<IntCounter>; COMMON.len()],
    /// The series of the last server a request's one try used.
    last_try: std::sync::Mutex<Option<TrySeries>>,
}

/// A server's series for a try it answered: `ferry_upstream_tries_total`
/// with outcome `success`, and its group's header time; kept until a
/// scrape may have removed them (`forgotten` then differs).
struct TrySeries {
    group: String,
    addr: String,
    forgotten: u64,
    used: IntCounter,
    header: Histogram,
}

impl UpstreamMetrics {
    /// A request's one try that the server answered, through the route's
    /// kept series when they are this server's.
    fn record_used(&self, t: &crate::record::Try, series: &RouteSeries) {
        let forgotten = self.forgotten.load(std::sync::atomic::Ordering::Acquire);
        let mut last = series.last_try.lock().unwrap_or_else(|e| e.into_inner());
        let kept = last
            .as_ref()
            .is_some_and(|k| k.forgotten == forgotten && k.addr == t.addr && k.group == t.group);
        if !kept {
            *last = Some(TrySeries {
                group: t.group.clone(),
                addr: t.addr.clone(),
                forgotten,
                used: self
                    .tries
                    .with_label_values(&[&t.group, &t.addr, "success"]),
                header: self.header_seconds.with_label_values(&[&t.group]),
            });
        }
        if let Some(k) = &*last {
            k.used.inc();
            if let Some(h) = t.header_time {
                k.header.observe(h.as_secs_f64());
            }
        }
    }
}

/// Remove the series of `vec` whose `group` label names a configured
/// group of which its `server` is no longer a member.
fn forget_gone(vec: &IntCounterVec, servers: &std::collections::HashMap<&str, Vec<String>>) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
            let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
            let at = |n: &str| names.iter().position(|x| *x == n).map(|i| labels[i]);
            let (Some(group), Some(server)) = (at("group"), at("server")) else {
                continue;
            };
            if servers
                .get(group)
                .is_some_and(|members| !members.iter().any(|a| a == server))
            {
                let _ = vec.remove(&label_map(&names, &labels));
            }
        }
    }
}

fn label_map<'a>(
    names: &[&'a str],
    values: &[&'a str],
) -> std::collections::HashMap<&'a str, &'a str> {
    names.iter().copied().zip(values.iter().copied()).collect()
}

/// A status as its label (`"200"`), written on the stack: three ASCII
/// digits for 100-999; other values (0: no response) through the formatter.
fn status_label(status: u16, digits: &mut [u8; 3]) -> Cow<'_, str> {
    if !(100..=999).contains(&status) {
        return status.to_string().into();
    }
    digits[0] = b'0' + (status / 100) as u8;
    digits[1] = b'0' + (status / 10 % 10) as u8;
    digits[2] = b'0' + (status % 10) as u8;
    ferry_wire::text(digits).map_or_else(|_| status.to_string().into(), Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_route_s_kept_series_are_the_ones_its_labels_name() {
        let m = super::metrics();
        let series = super::RouteSeries::default();
        let route = "kept-series.test/";
        for (status, kept) in [(200, true), (200, true), (200, false), (418, true)] {
            let mut r = crate::record::Request::new(String::new(), None);
            r.status = status;
            m.record(&r, route, kept.then_some(&series), None, 0);
        }
        let count = |status: &str| m.requests.with_label_values(&[route, status]).get();
        assert_eq!((count("200"), count("418")), (3, 1));
        let seconds = m.request_seconds.with_label_values(&[route]);
        assert_eq!(seconds.get_sample_count(), 4);
        assert!(series.requests[0].get().is_some() && series.seconds.get().is_some());
    }

    #[test]
    fn a_route_s_kept_try_series_count_as_the_labelled_ones_and_follow_a_scrape() {
        use crate::record::{Try, TryOutcome};
        let m = super::metrics();
        let series = super::RouteSeries::default();
        let (group, addrs) = ("kept-tries.test", ["10.9.9.1:80", "10.9.9.2:80"]);
        let request = |addr: &str| {
            let mut r = crate::record::Request::new(String::new(), None);
            r.tries.push(Try {
                addr: addr.to_string(),
                group: group.to_string(),
                status: Some(200),
                outcome: TryOutcome::Used,
                reused: false,
                started: std::time::Instant::now(),
                header_time: Some(std::time::Duration::from_millis(3)),
                response_time: None,
            });
            r
        };
        let used = |addr: &str| {
            m.upstream
                .tries
                .with_label_values(&[group, addr, "success"])
                .get()
        };
        let headers = || {
            m.upstream
                .header_seconds
                .with_label_values(&[group])
                .get_sample_count()
        };
        for addr in [addrs[0], addrs[0], addrs[1], addrs[0]] {
            m.record(&request(addr), "kept-tries.test/", Some(&series), None, 0);
        }
        assert_eq!((used(addrs[0]), used(addrs[1]), headers()), (3, 1, 4));
        // A scrape after the first server left its group removes its series;
        // back again, it counts in a series that is scraped.
        let servers = std::collections::HashMap::from([(group, vec![addrs[1].to_string()])]);
        m.render_with(&Default::default(), &servers);
        m.record(
            &request(addrs[0]),
            "kept-tries.test/",
            Some(&series),
            None,
            0,
        );
        let text = String::from_utf8(m.render_with(&Default::default(), &Default::default()));
        let text = text.expect("UTF-8");
        let line = format!(
            "ferry_upstream_tries_total{{group=\"{group}\",outcome=\"success\",server=\"{}\"}} 1",
            addrs[0]
        );
        assert!(text.contains(&line), "{line} not in the scrape");
    }

    #[test]
    fn status_labels() {
        for s in [0, 7, 99, 100, 200, 404, 502, 999, 1000] {
            assert_eq!(super::status_label(s, &mut [0; 3]), s.to_string());
        }
    }
}
