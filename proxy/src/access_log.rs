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
use crate::request::record::Request;
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

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64()))
}

/// One request's line.
pub fn line(r: &Request, method: &str, uri: &str, route: &str) -> String {
    let join = |f: &dyn Fn(&crate::request::record::Try) -> String| {
        r.tries.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let v = serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "request_id": r.id,
        "client": r.client_ip_text(),
        "method": method,
        "uri": uri,
        "host": r.host,
        "route": route,
        "status": r.status,
        "bytes": r.body_bytes_sent,
        "request_time": format!("{:.3}", r.start.elapsed().as_secs_f64()),
        "upstream_addr": r.upstream_addr(),
        "upstream_status": r.upstream_status(),
        "upstream_response_time": join(&|t| secs(t.response_time)),
        "upstream_header_time": join(&|t| secs(t.header_time)),
        "spilled": r.spilled_bytes > 0,
        "spilled_bytes": r.spilled_bytes,
        "truncated": r.truncated,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}
