//! The access log: one JSON object per line per request, with nginx's
//! upstream variables as lists over the tries (`upstream_addr`:
//! `"10.0.0.1:80, 10.0.0.2:80"`, `upstream_status`: `"502, 200"`).
//!
//! Lines go through a bounded queue to a writer thread that writes them
//! out in batches every 50 ms: writing the log never blocks a request nor
//! wakes a thread. When the writer falls behind, lines are dropped and
//! counted (`ferry_access_log_dropped_total`).
//!
//! nginx counterpart: `access_log` with `log_format ... escape=json`.

use crate::metrics::metrics;
use crate::record::Request;
use ferry_conf::AccessLog;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

pub struct AccessLogger {
    tx: SyncSender<String>,
}

const QUEUE: usize = 16 * 1024;

/// How often the writer writes out what the requests queued: a line is in
/// the file at most this long after its request ended (nginx's
/// `access_log ... flush=`).
const FLUSH_EVERY: Duration = Duration::from_millis(50);

impl AccessLogger {
    /// Start the writer; `None` for `access_log: off`.
    pub fn start(conf: &AccessLog) -> std::io::Result<Option<AccessLogger>> {
        let mut out: Box<dyn Write + Send> = match conf {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::Path(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("ferry-access-log".into())
            .spawn(move || {
                // The writer is never woken by a request: it looks at the
                // queue every FLUSH_EVERY and writes what is there in one
                // go. (Woken per line, it cost a request a thread switch
                // and a write of its own: 31 us on a 1 KB request.)
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    let gone = loop {
                        match rx.try_recv() {
                            Ok(line) => {
                                let _ = buf.write_all(line.as_bytes());
                            }
                            Err(TryRecvError::Empty) => break false,
                            Err(TryRecvError::Disconnected) => break true,
                        }
                    };
                    let _ = buf.flush();
                    if gone {
                        return;
                    }
                }
            })?;
        Ok(Some(AccessLogger { tx }))
    }

    pub fn log(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            metrics().access_log_dropped.inc();
        }
    }
}

/// Seconds with milliseconds, as nginx writes `$request_time` (the
/// milliseconds truncated), from integers: formatting a float was most of
/// a line's cost.
fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), millis_text)
}

fn millis_text(d: Duration) -> String {
    let ms = d.as_millis();
    let mut out = (ms / 1000).to_string();
    let frac = (ms % 1000) as u32;
    out.push('.');
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
    out
}

/// One request's line: a JSON object, its keys in alphabetical order,
/// written straight into one string (no JSON tree per request).
pub fn line(r: &Request, method: &str, uri: &str, route: &str) -> String {
    let join = |f: &dyn Fn(&crate::record::Try) -> String| {
        r.tries.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let request_time = millis_text(r.start.elapsed());
    let mut s = String::with_capacity(384 + uri.len());
    s.push('{');
    number(&mut s, "bytes", r.body_bytes_sent);
    text(&mut s, "client", &r.client_ip_text());
    text(&mut s, "host", &r.host);
    text(&mut s, "limit_conn_status", r.limit_conn_status.as_str());
    text(&mut s, "limit_req_status", r.limit_req_status.as_str());
    text(&mut s, "method", method);
    text(&mut s, "request_id", &r.id);
    text(&mut s, "request_time", &request_time);
    text(&mut s, "route", route);
    boolean(&mut s, "spilled", r.spilled_bytes > 0);
    number(&mut s, "spilled_bytes", r.spilled_bytes);
    number(&mut s, "status", u64::from(r.status));
    text(&mut s, "time", &time);
    boolean(&mut s, "truncated", r.truncated);
    text(&mut s, "upstream_addr", &r.upstream_addr());
    text(&mut s, "upstream_cache_status", r.cache_status.as_str());
    text(
        &mut s,
        "upstream_header_time",
        &join(&|t| secs(t.header_time)),
    );
    text(
        &mut s,
        "upstream_response_time",
        &join(&|t| secs(t.response_time)),
    );
    text(&mut s, "upstream_status", &r.upstream_status());
    text(&mut s, "uri", uri);
    s.pop(); // the last comma
    s.push_str("}\n");
    s
}

fn key(s: &mut String, k: &str) {
    s.push('"');
    s.push_str(k);
    s.push_str("\":");
}

fn number(s: &mut String, k: &str, v: u64) {
    use std::fmt::Write as _;
    key(s, k);
    let _ = write!(s, "{v},");
}

fn boolean(s: &mut String, k: &str, v: bool) {
    key(s, k);
    s.push_str(if v { "true," } else { "false," });
}

/// A JSON string (RFC 8259 escapes: quote, backslash, control characters).
/// The runs between escapes are copied whole: every escaped byte is ASCII,
/// a character of its own, so the slices fall on character boundaries.
fn text(s: &mut String, k: &str, v: &str) {
    use std::fmt::Write as _;
    key(s, k);
    s.push('"');
    if !needs_escape(v.as_bytes()) {
        // Most values: copied in one go.
        s.push_str(v);
        s.push_str("\",");
        return;
    }
    let mut run = 0;
    for (i, b) in v.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        s.push_str(&v[run..i]);
        if escaped.is_empty() {
            let _ = write!(s, "\\u{b:04x}");
        } else {
            s.push_str(escaped);
        }
        run = i + 1;
    }
    s.push_str(&v[run..]);
    s.push_str("\",");
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
        use std::time::Duration;
        assert_eq!(super::millis_text(Duration::from_micros(1_999)), "0.001");
        assert_eq!(super::millis_text(Duration::from_millis(12_345)), "12.345");
        assert_eq!(super::millis_text(Duration::from_millis(7)), "0.007");
        assert_eq!(super::secs(None), "-");
    }

    #[test]
    fn a_line_is_json_whatever_the_request_holds() {
        let mut r = crate::record::Request::new("id1".into(), None);
        r.host = "h\"o\\st\u{1}\n".into();
        r.status = 200;
        let line = super::line(&r, "GET", "/a\"b\\c\td\u{7f}é", "route");
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
