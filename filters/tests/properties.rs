//! What must hold for any input: the event pipe and the unbuffered pipe
//! deliver exactly the upstream's bytes, in order, whatever the schedule of
//! read sizes, upstream delays and client stalls (on tokio's paused clock,
//! so a schedule of seconds runs in microseconds); the request body buffer
//! replays exactly what was pushed, in memory or spilled; an upstream
//! request built by the header rules is one request, whatever the client's
//! headers.

use bytes::Bytes;
use ferry_filters::event_pipe::{self, EventPipeConf};
use ferry_filters::headers::{BodyFraming, RequestPlan};
use ferry_filters::pipe::{DownstreamBody, NoFilter, PipeError, UpstreamBody};
use ferry_filters::request_body::RequestBody;
use ferry_filters::variables::RequestVars;
use pingora_http::RequestHeader;
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An upstream that hands out `pieces`, each after its delay.
struct Scripted {
    pieces: Vec<(Vec<u8>, u64)>,
    next: usize,
    released: Arc<AtomicBool>,
}

impl UpstreamBody for Scripted {
    async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        let Some((piece, delay_ms)) = self.pieces.get(self.next).cloned() else {
            return Ok(None);
        };
        self.next += 1;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Ok(Some(Bytes::from(piece)))
    }
    fn is_done(&mut self) -> bool {
        self.next == self.pieces.len()
    }
    async fn release(self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

/// A client that stalls before each write by the next of `stalls`.
struct Stalling {
    stalls: Vec<u64>,
    writes: usize,
    got: Arc<Mutex<Vec<u8>>>,
    ended: Arc<AtomicBool>,
}

impl Stalling {
    async fn stall(&mut self) {
        if self.stalls.is_empty() {
            return;
        }
        let ms = self.stalls[self.writes % self.stalls.len()];
        self.writes += 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl DownstreamBody for Stalling {
    async fn write(&mut self, data: Bytes) -> Result<(), PipeError> {
        self.stall().await;
        self.got.lock().unwrap().extend_from_slice(&data);
        Ok(())
    }
    async fn end(&mut self, last: Bytes) -> Result<(), PipeError> {
        self.stall().await;
        self.got.lock().unwrap().extend_from_slice(&last);
        self.ended.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Pieces of 1..20000 bytes, each with its own content and a delay.
fn pieces() -> impl Strategy<Value = Vec<(Vec<u8>, u64)>> {
    prop::collection::vec(
        (1usize..20_000, any::<u8>(), 0u64..50)
            .prop_map(|(n, seed, d)| ((0..n).map(|i| seed.wrapping_add(i as u8)).collect(), d)),
        0..12,
    )
}

/// What the pipe delivered, whether the client's body was ended, whether
/// the upstream was released, and the pipe's error.
fn pipe(
    buffered: Option<EventPipeConf>,
    pieces: Vec<(Vec<u8>, u64)>,
    stalls: Vec<u64>,
) -> (Vec<u8>, bool, bool, Option<PipeError>) {
    let released = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(AtomicBool::new(false));
    let up = Scripted {
        pieces,
        next: 0,
        released: released.clone(),
    };
    let client = Stalling {
        stalls,
        writes: 0,
        got: got.clone(),
        ended: ended.clone(),
    };
    let out = paused().block_on(async move {
        let mut filter = NoFilter;
        match &buffered {
            Some(conf) => event_pipe::run(conf, up, client, &mut filter).await,
            None => ferry_filters::unbuffered::run(up, client, &mut filter).await,
        }
    });
    let bytes = got.lock().unwrap().clone();
    (
        bytes,
        ended.load(Ordering::SeqCst),
        released.load(Ordering::SeqCst),
        out.error,
    )
}

fn conf(buffers: usize, busy: usize, max_temp: u64, dir: &std::path::Path) -> EventPipeConf {
    EventPipeConf {
        memory: buffers,
        busy,
        max_temp_file_size: max_temp,
        temp_file_write_size: busy,
        temp_path: dir.to_path_buf(),
        limit_rate: 0,
        ignore_client_abort: false,
    }
}

/// Client headers drawn from the names a smuggler plays with.
fn client_headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let name = prop::sample::select(vec![
        "transfer-encoding",
        "content-length",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "expect",
        "host",
        "x-a",
        "x-forwarded-for",
    ]);
    let value = prop::sample::select(vec![
        "chunked",
        "0",
        "5",
        "close",
        "keep-alive",
        "x-a",
        "upgrade",
        "websocket",
        "gzip, chunked",
        "100-continue",
        "a.example",
        "1.2.3.4",
    ]);
    prop::collection::vec((name, value.prop_map(str::to_string)), 0..10)
}

fn framing() -> impl Strategy<Value = BodyFraming> {
    prop_oneof![
        Just(BodyFraming::None),
        (0u64..100_000).prop_map(BodyFraming::Length),
        Just(BodyFraming::Chunked),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the client sent, the upstream request has one `Host`, no
    /// hop-by-hop header, and exactly the framing Ferry chose: no second
    /// request can hide in it.
    #[test]
    fn the_upstream_request_has_one_framing_and_no_hop_by_hop_header(
        headers in client_headers(),
        framing in framing(),
    ) {
        let mut client = RequestHeader::build("POST", b"/x", None).unwrap();
        for (n, v) in &headers {
            client.append_header(*n, v.as_str()).unwrap();
        }
        let vars = RequestVars {
            method: "POST",
            request_uri: "/x",
            uri: "/x",
            host: "t",
            headers: ferry_filters::fields::Fields::Header(&client),
            remote_addr: "127.0.0.1",
            remote_port: 1,
            scheme: "http",
            proxy_host: "app",
            request_id: test_id(),
            upstream_addr: "",
            upstream_status: "",
            upstream_cache_status: "",
            limit_req_status: "",
            limit_conn_status: "",
            upstream_headers: None,
        };
        let plan = RequestPlan::new(&ferry_conf::ProxyConf::default());
        let req = plan.build(&client, &vars, framing).unwrap();
        let h = &req.headers;
        for hop in ["connection", "keep-alive", "te", "upgrade", "proxy-connection", "expect"] {
            prop_assert!(!h.contains_key(hop), "{hop} went upstream");
        }
        prop_assert_eq!(h.get_all("host").iter().count(), 1);
        let te: Vec<_> = h.get_all("transfer-encoding").iter().collect();
        let cl: Vec<_> = h.get_all("content-length").iter().collect();
        match framing {
            BodyFraming::None => prop_assert!(te.is_empty() && cl.is_empty()),
            BodyFraming::Length(n) => {
                prop_assert!(te.is_empty());
                prop_assert_eq!(cl.len(), 1);
                prop_assert_eq!(cl[0].to_str().unwrap(), n.to_string());
            }
            BodyFraming::Chunked => {
                prop_assert!(cl.is_empty());
                prop_assert_eq!(te.len(), 1);
                prop_assert_eq!(te[0].as_bytes(), b"chunked");
            }
        }
    }

    #[test]
    fn the_event_pipe_delivers_exactly_the_upstream_bytes(
        pieces in pieces(),
        stalls in prop::collection::vec(0u64..100, 0..6),
        memory in 4096usize..65_536,
        busy in 4096usize..16_384,
        spill in prop_oneof![Just(0u64), 1u64 << 20..4u64 << 20],
    ) {
        let dir = std::env::temp_dir().join(format!("ferry-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let want: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.clone()).collect();
        let (got, ended, released, error) = pipe(Some(conf(memory, busy, spill, &dir)), pieces, stalls);
        let _ = std::fs::remove_dir(&dir);
        prop_assert_eq!(error, None);
        prop_assert!(got == want, "{} bytes delivered of {}", got.len(), want.len());
        prop_assert!(ended, "the client's body was ended");
        prop_assert!(released, "the upstream was released");
    }

    #[test]
    fn the_unbuffered_pipe_delivers_exactly_the_upstream_bytes(
        pieces in pieces(),
        stalls in prop::collection::vec(0u64..100, 0..6),
    ) {
        let want: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.clone()).collect();
        let (got, ended, released, error) = pipe(None, pieces, stalls);
        prop_assert_eq!(error, None);
        prop_assert!(got == want, "{} bytes delivered of {}", got.len(), want.len());
        prop_assert!(ended);
        prop_assert!(released);
    }

    #[test]
    fn the_request_body_buffer_replays_what_was_pushed(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5000), 0..20),
        limit in 0usize..20_000,
    ) {
        let dir = std::env::temp_dir().join(format!("ferry-prop-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut body = RequestBody::new();
        for c in &chunks {
            body.push(c, limit, &dir).unwrap();
        }
        let want: Vec<u8> = chunks.concat();
        prop_assert_eq!(body.len(), want.len() as u64);
        // Replayed twice: every try sends the same bytes.
        for _ in 0..2 {
            let mut replay = body.replay();
            let mut got = Vec::new();
            while let Some(c) = replay.next_chunk().unwrap() {
                got.extend_from_slice(&c);
            }
            prop_assert!(got == want);
        }
        drop(body);
        let _ = std::fs::remove_dir(&dir);
    }
}

/// A `$request_id` for tests: made by the first template that uses it.
fn test_id() -> ferry_filters::variables::RequestId<'static> {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ferry_filters::variables::RequestId {
        cell: &ID,
        make: || "id".to_string(),
    }
}
