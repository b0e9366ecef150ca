//! The access log: one JSON object per line per request, with nginx's
//! upstream variables as lists over the tries (`upstream_addr`:
//! `"10.0.0.1:80, 10.0.0.2:80"`, `upstream_status`: `"502, 200"`).
//!
//! A request formats its line in its thread's scratch buffer (no
//! allocation, the time's second formatted once, see `log_time`) and
//! appends it to one pending buffer under a lock held for the copy. A
//! writer thread takes the whole buffer every 50 ms and writes it in one
//! go: writing the log never blocks a request nor wakes a thread. When the
//! writer falls behind, lines are dropped and counted
//! (`ferry_access_log_dropped_total`).
//!
//! nginx counterpart: `access_log` with `log_format ... escape=json` and
//! `buffer=`/`flush=`.

use crate::metrics::metrics;
use crate::record::Request;
use crate::record::Try;
use ferry_conf::AccessLog;
use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

pub struct AccessLogger {
    pending: Arc<Pending>,
    writer: std::thread::Thread,
    /// The writer, joined by [`AccessLogger::finish`].
    joined: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Lines the requests wrote and the writer has not taken yet.
struct Pending {
    lines: Mutex<Vec<u8>>,
    /// The logger is gone: the writer writes what is left and ends.
    closed: AtomicBool,
}

/// The most the lines waiting for the writer may hold (16 Ki lines of
/// 512 bytes); lines past it are dropped.
const MAX_PENDING: usize = 8 << 20;

/// How often the writer writes out what the requests queued: a line is in
/// the file at most this long after its request ended (nginx's
/// `access_log ... flush=`).
const FLUSH_EVERY: Duration = Duration::from_millis(50);

thread_local! {
    /// This thread's line being formatted, kept for the next one.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AccessLogger {
    /// Start the writer; `None` for `access_log: off`.
    pub fn start(conf: &AccessLog) -> std::io::Result<Option<AccessLogger>> {
        let out: Box<dyn Write + Send> = match conf {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::Path(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let pending = Arc::new(Pending {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            closed: AtomicBool::new(false),
        });
        let theirs = pending.clone();
        let writer = std::thread::Builder::new()
            .name("ferry-access-log".into())
            .spawn(move || write_out(out, &theirs))?;
        Ok(Some(AccessLogger {
            pending,
            writer: writer.thread().clone(),
            joined: Mutex::new(Some(writer)),
        }))
    }

    /// Logs one finished request.
    pub(crate) fn log(&self, r: &Request, method: &str, uri: &str, route: &str) {
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            let times = (SystemTime::now(), r.start.elapsed());
            write_line(line, r, [method, uri, route], times);
            self.queue(line);
        });
    }

    fn queue(&self, line: &[u8]) {
        let mut lines = self
            .pending
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() > MAX_PENDING {
            drop(lines);
            metrics().access_log_dropped.inc();
            return;
        }
        lines.extend_from_slice(line);
    }
}

impl AccessLogger {
    /// Ferry is stopping, its event loops gone: the writer writes what the
    /// requests queued, and this returns once it has (the process may end
    /// right after).
    pub(crate) fn finish(&self) {
        self.pending.closed.store(true, Ordering::Release);
        self.writer.unpark();
        let writer = self
            .joined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

impl Drop for AccessLogger {
    /// The writer writes what is left now, not at its next turn.
    fn drop(&mut self) {
        self.pending.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// The writer thread: it is never woken by a request; every FLUSH_EVERY
/// it takes what the requests wrote and writes it in one go. (Woken per
/// line, it cost a request a thread switch and a write of its own: 31 us
/// on a 1 KB request.)
fn write_out(mut out: Box<dyn Write + Send>, pending: &Pending) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        // Read before taking the lines: what was written before the
        // logger went is in this batch.
        let closed = pending.closed.load(Ordering::Acquire);
        std::mem::swap(
            &mut *pending.lines.lock().unwrap_or_else(PoisonError::into_inner),
            &mut batch,
        );
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            if batch.capacity() > 1 << 20 {
                batch.shrink_to(64 * 1024); // after a burst
            }
        }
        if closed {
            return;
        }
    }
}

/// One request's line: a JSON object, its keys in alphabetical order,
/// written straight into `s`, with the time it ended and its
/// `request_time`. Each key is written with the comma and quotes around
/// it: one copy of a constant per field.
fn write_line(
    s: &mut Vec<u8>,
    r: &Request,
    [method, uri, route]: [&str; 3],
    (now, request_time): (SystemTime, Duration),
) {
    s.extend_from_slice(b"{\"bytes\":");
    number(s, r.body_bytes_sent);
    s.extend_from_slice(b",\"client\":\"");
    client(s, r.client_addr);
    s.extend_from_slice(b"\",\"host\":\"");
    escaped(s, &r.host);
    s.extend_from_slice(b"\",\"limit_conn_status\":\"");
    escaped(s, r.limit_conn_status.as_str());
    s.extend_from_slice(b"\",\"limit_req_status\":\"");
    escaped(s, r.limit_req_status.as_str());
    s.extend_from_slice(b"\",\"method\":\"");
    escaped(s, method);
    s.extend_from_slice(b"\",\"request_id\":\"");
    escaped(s, r.id());
    s.extend_from_slice(b"\",\"request_time\":\"");
    millis(s, request_time);
    s.extend_from_slice(b"\",\"route\":\"");
    escaped(s, route);
    s.extend_from_slice(b"\",\"spilled\":");
    boolean(s, r.spilled_bytes > 0);
    s.extend_from_slice(b",\"spilled_bytes\":");
    number(s, r.spilled_bytes);
    s.extend_from_slice(b",\"status\":");
    number(s, u64::from(r.status));
    s.extend_from_slice(b",\"time\":\"");
    crate::log_time::push(s, now);
    s.extend_from_slice(b"\",\"truncated\":");
    boolean(s, r.truncated);
    s.extend_from_slice(b",\"upstream_addr\":\"");
    list(s, &r.tries, |s, t| escaped(s, &t.addr));
    s.extend_from_slice(b"\",\"upstream_cache_status\":\"");
    escaped(s, r.cache_status.as_str());
    s.extend_from_slice(b"\",\"upstream_header_time\":\"");
    list(s, &r.tries, |s, t| secs(s, t.header_time));
    s.extend_from_slice(b"\",\"upstream_response_time\":\"");
    list(s, &r.tries, |s, t| secs(s, t.response_time));
    s.extend_from_slice(b"\",\"upstream_status\":\"");
    list(s, &r.tries, |s, t| number(s, u64::from(t.logged_status())));
    s.extend_from_slice(b"\",\"uri\":\"");
    escaped(s, uri);
    s.extend_from_slice(b"\"}\n");
}

/// One entry per try, `", "` between them (nginx's upstream variables).
fn list(s: &mut Vec<u8>, tries: &[Try], each: impl Fn(&mut Vec<u8>, &Try)) {
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            s.extend_from_slice(b", ");
        }
        each(s, t);
    }
}

/// `$remote_addr` ("" when unknown), as `Request::client_ip_text`.
fn client(s: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        Some(SocketAddr::V4(a)) => {
            for (i, o) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    s.push(b'.');
                }
                number(s, u64::from(o));
            }
        }
        Some(a) => {
            let _ = write!(s, "{}", a.ip());
        }
        None => {}
    }
}

/// A decimal number, as `u64`'s `Display` (two digits at a time).
fn number(s: &mut Vec<u8>, v: u64) {
    s.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn boolean(s: &mut Vec<u8>, v: bool) {
    s.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Seconds with milliseconds, as nginx writes `$request_time` (the
/// milliseconds truncated), from integers: formatting a float was most of
/// a line's cost. `-` for none.
fn secs(s: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => millis(s, d),
        None => s.push(b'-'),
    }
}

fn millis(s: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis();
    number(s, (ms / 1000) as u64);
    let frac = (ms % 1000) as u32;
    s.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A JSON string's content (RFC 8259 escapes: quote, backslash, control
/// characters). The runs between escapes are copied whole.
fn escaped(s: &mut Vec<u8>, v: &str) {
    let v = v.as_bytes();
    if !needs_escape(v) {
        // Most values: copied in one go.
        s.extend_from_slice(v);
        return;
    }
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        s.extend_from_slice(&v[run..i]);
        if escaped.is_empty() {
            let _ = write!(s, "\\u{b:04x}");
        } else {
            s.extend_from_slice(escaped);
        }
        run = i + 1;
    }
    s.extend_from_slice(&v[run..]);
}

/// Whether `v` holds a byte JSON escapes (a quote, a backslash, a control
/// character), eight bytes at a time.
fn needs_escape(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` below `n` (n <= 128) sets its high bit here.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
}

#[cfg(test)]
mod tests {
    use crate::record::{Request, Try, TryOutcome};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    fn line(r: &Request, uri: &str, now: SystemTime, took: Duration) -> String {
        let mut s = Vec::new();
        super::write_line(&mut s, r, ["GET", uri, "route"], (now, took));
        String::from_utf8(s).expect("UTF-8 in, UTF-8 out")
    }

    fn a_try(addr: &str, status: Option<u16>, outcome: TryOutcome, ms: Option<u64>) -> Try {
        Try {
            addr: addr.into(),
            group: "app".into(),
            status,
            outcome,
            reused: false,
            started: Instant::now(),
            header_time: ms.map(Duration::from_millis),
            response_time: ms.map(|m| Duration::from_millis(m + 1_000)),
        }
    }

    #[test]
    fn escapes_are_found_at_every_place_in_a_word() {
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x01, 0x1f] {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    assert!(super::needs_escape(&v), "{v:?}");
                }
                let mut v = vec![b'a'; len];
                v[at] = 0x7f;
                assert!(!super::needs_escape(&v), "{v:?}");
                v[at] = 0xc3;
                assert!(!super::needs_escape(&v), "{v:?}");
            }
        }
    }

    #[test]
    fn times_are_seconds_with_milliseconds() {
        let text = |d| {
            let mut s = Vec::new();
            super::secs(&mut s, d);
            String::from_utf8(s).expect("ASCII")
        };
        assert_eq!(text(Some(Duration::from_micros(1_999))), "0.001");
        assert_eq!(text(Some(Duration::from_millis(12_345))), "12.345");
        assert_eq!(text(Some(Duration::from_millis(7))), "0.007");
        assert_eq!(
            text(Some(Duration::from_secs(86_400 * 400))),
            "34560000.000"
        );
        assert_eq!(text(None), "-");
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for v in [0, 9, 10, 99, 100, 65_535, 1 << 32, u64::MAX] {
            let mut s = Vec::new();
            super::number(&mut s, v);
            assert_eq!(s, v.to_string().into_bytes());
        }
        for ip in [
            "0.0.0.0",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
            "::1",
        ] {
            let a: std::net::SocketAddr = std::net::SocketAddr::new(ip.parse().expect("ip"), 80);
            let mut s = Vec::new();
            super::client(&mut s, Some(a));
            assert_eq!(
                s,
                Request::new(String::new(), Some(a))
                    .client_ip_text()
                    .into_bytes()
            );
        }
    }

    #[test]
    fn escaping_copies_plain_runs_and_escapes_the_rest() {
        let mut s = Vec::new();
        super::escaped(&mut s, "a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é/");
        assert_eq!(
            s,
            b"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh\x7f\xc3\xa9/".to_vec()
        );
    }

    /// The bytes of a line with two tries, as the line was written before
    /// it was formatted in place (the same request gave this line).
    #[test]
    fn a_line_keeps_its_fields_order_and_escapes() {
        let mut r = Request::new("req-42".into(), "203.0.113.9:5555".parse().ok());
        r.host = "ex\"ample.com".into();
        r.status = 200;
        r.body_bytes_sent = 1024;
        r.spilled_bytes = 7;
        r.limit_req_status = crate::limit::status::LimitStatus::Passed;
        r.tries
            .push(a_try("10.0.0.1:80", None, TryOutcome::Error, None));
        r.tries
            .push(a_try("10.0.0.2:80", Some(200), TryOutcome::Used, Some(2)));
        r.tries
            .push(a_try("app", None, TryOutcome::Timeout, Some(12_345)));
        let now = UNIX_EPOCH + Duration::from_millis(1_763_704_800_123);
        let got = line(&r, "/x?y=1\t", now, Duration::from_micros(4_999));
        let want = concat!(
            r#"{"bytes":1024,"client":"203.0.113.9","host":"ex\"ample.com","#,
            r#""limit_conn_status":"","limit_req_status":"PASSED","method":"GET","#,
            r#""request_id":"req-42","request_time":"0.004","route":"route","#,
            r#""spilled":true,"spilled_bytes":7,"status":200,"#,
            r#""time":"2025-11-21T06:00:00.123Z","truncated":false,"#,
            r#""upstream_addr":"10.0.0.1:80, 10.0.0.2:80, app","upstream_cache_status":"","#,
            r#""upstream_header_time":"-, 0.002, 12.345","#,
            r#""upstream_response_time":"-, 1.002, 13.345","#,
            r#""upstream_status":"502, 200, 504","uri":"/x?y=1\t"}"#,
            "\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_is_json_whatever_the_request_holds() {
        let mut r = Request::new("id1".into(), None);
        r.host = "h\"o\\st\u{1}\n".into();
        r.status = 200;
        let took = Duration::ZERO;
        let line = line(&r, "/a\"b\\c\td\u{7f}é", SystemTime::now(), took);
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["host"], "h\"o\\st\u{1}\n");
        assert_eq!(v["uri"], "/a\"b\\c\td\u{7f}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["spilled"], false);
        assert_eq!(v["upstream_addr"], "");
        assert_eq!(v["upstream_cache_status"], "");
        assert_eq!(v.as_object().map(|o| o.len()), Some(20));
    }
}
