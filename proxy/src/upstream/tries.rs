//! nginx's upstream loop, the one implementation Ferry has: pick a peer,
//! connect, send the request, read the response header; then use that
//! response, or go to the next server as `next_upstream` says, until a
//! response is chosen or the tries run out. Requests, upgrades and
//! subrequests all come through here; what differs between them (which
//! group, the request header and its hooks, the body) is their [`Leg`].
//!
//! nginx counterpart: `ngx_http_upstream_connect` -> `send_request` ->
//! `process_header` -> `test_next` / `ngx_http_upstream_next`, looping back
//! to `connect`. The rules themselves are [`Policy::decide`]; the peer
//! bookkeeping (tried set, backups, `max_fails`) lives in `ferry-lb`.
//!
//! Each try has one owner: the [`Held`] server of a chosen response, or,
//! inside the loop, the try being made. Its lease on the peer is given back
//! exactly once: by [`Held::finish`], by the loop when it moves on, or (a
//! request dropped mid-try, its client gone) by the lease's own drop, which
//! releases the connection count without judging the server.

use crate::upstream::connect::{connect, Conn};
use crate::upstream::group::Upstream;
use crate::upstream::next_upstream::{Failure, Outcome, Policy, RetryDecision, Verdict};
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::read_header::read_response_header;
use crate::upstream::send_request::{send, BodySource};
use crate::upstream::try_record::{Try, TryOutcome};
use ferry_lb::{Cursor, Feedback, Key, Lease};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// What one kind of upstream request brings to the loop.
pub(crate) trait Leg {
    /// nginx `peer.get`'s group: the one the next try goes to.
    async fn group(&mut self) -> Result<Arc<Upstream>>;
    /// What the balancer of `upstream` is given: the rendered `hash_key`
    /// (empty when the group has none) and the client's address.
    fn key(&self, upstream: &Upstream) -> (String, Option<IpAddr>);
    /// The Pingora peer, with its timeouts, for the server leased.
    fn peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer>;
    /// The request header for this try (nginx `create_request`, then any
    /// hook that changes it).
    async fn request(&mut self, upstream: &Upstream) -> Result<Box<RequestHeader>>;
    /// Where this try's request body comes from.
    fn body(&mut self) -> BodySource<'_>;
    /// The body streams from the client: it can go to one try only.
    fn body_streams(&self) -> bool;
    /// The response header, before the retry decision (a hook's say).
    async fn response(&mut self, header: &mut ResponseHeader) -> Result<RetryDecision>;
    /// The request's record of tries.
    fn tries(&mut self) -> &mut Vec<Try>;
}

/// How the loop ended.
pub(crate) enum Chosen {
    /// This response goes to the client.
    Response(Response),
    /// No response to use: answer with this status (502, 504).
    Fail(u16),
}

/// A chosen response: the connection its header was read on, the header,
/// and the server it came from.
pub(crate) struct Response {
    pub conn: Conn,
    pub header: ResponseHeader,
    pub held: Held,
}

/// The server a chosen response came from, held until that response is
/// done (nginx frees the peer at finalize, so `least_conn` and `max_conns`
/// count it, a tunnel included).
pub(crate) struct Held {
    lease: Lease,
    cursor: Cursor,
    try_index: usize,
}

impl Held {
    /// The response is done: the try is complete in the record and the
    /// server's lease given back as a success (failures after the header
    /// do not count against `max_fails`, as in nginx).
    pub fn finish(self, tries: &mut [Try]) {
        let Held {
            lease,
            mut cursor,
            try_index,
        } = self;
        if let Some(t) = tries.get_mut(try_index) {
            t.outcome = TryOutcome::Used;
            t.response_time = Some(t.started.elapsed());
        }
        lease.free(Feedback::Ok, &mut cursor);
    }
}

/// Why one try failed, and what nginx needs to know about it.
struct TryFailed {
    error: Box<Error>,
    /// Sending the request had started (nginx `u->request_sent`).
    request_sent: bool,
    /// The connection came from the keepalive pool.
    reused: bool,
}

/// Run the loop for `leg` under `policy`. `tries_limit` is
/// `next_upstream_tries`; `buffer_size` bounds the response header.
pub(crate) async fn run<L: Leg>(
    leg: &mut L,
    policy: &Policy,
    tries_limit: u32,
    buffer_size: usize,
) -> Result<Chosen> {
    // One cursor per group a leg sends tries to (usually just one).
    let mut cursors: Vec<(Arc<Upstream>, Cursor)> = Vec::new();
    let mut body_used = false;

    loop {
        let upstream = leg.group().await?;
        let at = match cursors.iter().position(|(u, _)| Arc::ptr_eq(u, &upstream)) {
            Some(i) => i,
            None => {
                cursors.push((upstream.clone(), upstream.group.cursor(tries_limit)));
                cursors.len() - 1
            }
        };
        if body_used {
            // A streamed body went to a try already: nothing to resend.
            return Ok(Chosen::Fail(502));
        }
        let (hash, client_ip) = leg.key(&upstream);
        let key = Key {
            hash: hash.as_bytes(),
            client_ip,
        };
        let cursor = &mut cursors[at].1;
        let Some(lease) = upstream.group.select(cursor, &key) else {
            log::error!(
                "no live upstreams while connecting to upstream \"{}\"",
                upstream.name
            );
            let record = new_try(upstream.name.clone(), &upstream, TryOutcome::NoLive);
            leg.tries().push(record);
            return Ok(Chosen::Fail(Failure::NoLive.status()));
        };
        let peer = leg.peer(&upstream, &lease);
        let try_index = leg.tries().len();
        let record = new_try(peer.addr_text.clone(), &upstream, TryOutcome::Used);
        leg.tries().push(record);

        let generation = lease.members().1;
        let result = attempt(leg, &upstream, &peer, generation, buffer_size).await;
        body_used = leg.body_streams() && result.as_ref().map_or_else(|f| f.request_sent, |_| true);
        let cursor = &mut cursors[at].1;
        let (outcome, stale, conn) = match result {
            Ok(conn) => {
                let Some(header) = conn.session.resp_header() else {
                    return Error::e_explain(ErrorType::InternalError, "header read but absent");
                };
                let mut header = header.clone();
                let status = header.status.as_u16();
                let t = &mut leg.tries()[try_index];
                t.reused = conn.reused;
                t.header_time = Some(t.started.elapsed());
                t.status = Some(status);
                let hook = leg.response(&mut header).await?;
                let outcome = Outcome::Status { status, hook };
                if policy.decide(outcome, cursor.tries_left) == Verdict::Respond {
                    let cursor = cursors.swap_remove(at).1;
                    let held = Held {
                        lease,
                        cursor,
                        try_index,
                    };
                    return Ok(Chosen::Response(Response { conn, header, held }));
                }
                leg.tries()[try_index].outcome = TryOutcome::NextStatus(status);
                (outcome, false, Some(conn))
            }
            Err(failed) => {
                let failure = Failure::of(&failed.error);
                log_failure(failure, &lease, &upstream, &failed.error);
                let t = &mut leg.tries()[try_index];
                t.reused = failed.reused;
                t.outcome = match failure {
                    Failure::Timeout => TryOutcome::Timeout,
                    Failure::InvalidHeader => TryOutcome::InvalidHeader,
                    Failure::Client { .. } => TryOutcome::Client,
                    _ => TryOutcome::Error,
                };
                let outcome = Outcome::Failed {
                    failure,
                    request_sent: failed.request_sent,
                };
                // nginx: a stale keepalive connection does not use up a try.
                (outcome, failed.reused && failure == Failure::Error, None)
            }
        };
        let verdict = policy.decide(outcome, cursor.tries_left + u32::from(stale));
        let t = &mut leg.tries()[try_index];
        t.response_time = Some(t.started.elapsed());
        let server = lease.peer().addr;
        if lease.free(outcome.feedback(verdict), cursor) {
            crate::metrics::metrics()
                .marked_failed
                .with_label_values(&[upstream.name.as_str(), &server.to_string()])
                .inc();
        }
        if stale {
            cursor.tries_left += 1;
        }
        if let Some(conn) = conn {
            conn.close();
        }
        if let Verdict::Fail(status) = verdict {
            return Ok(Chosen::Fail(status));
        }
    }
}

fn log_failure(f: Failure, lease: &Lease, upstream: &Upstream, e: &Error) {
    if let Failure::Client { .. } = f {
        log::info!(
            "client failed while its body went to upstream {}: {e}",
            lease.peer().addr
        );
        return;
    }
    let what = match f {
        Failure::Timeout => "upstream timed out",
        Failure::InvalidHeader => "upstream sent invalid header",
        _ => "upstream failed",
    };
    log::error!(
        "{what} while talking to upstream {} (group {}): {e}",
        lease.peer().addr,
        upstream.name,
    );
}

fn new_try(addr: String, upstream: &Upstream, outcome: TryOutcome) -> Try {
    Try {
        addr,
        group: upstream.name.clone(),
        status: None,
        outcome,
        reused: false,
        started: Instant::now(),
        header_time: None,
        response_time: None,
    }
}

/// One try: connect, build the request, send it, read the response header.
async fn attempt<L: Leg>(
    leg: &mut L,
    upstream: &Arc<Upstream>,
    peer: &Arc<UpstreamPeer>,
    generation: u64,
    buffer_size: usize,
) -> std::result::Result<Conn, TryFailed> {
    let failed = |error, request_sent, reused| TryFailed {
        error,
        request_sent,
        reused,
    };
    let mut conn = connect(upstream, peer, generation)
        .await
        .map_err(|e| failed(e, false, false))?;
    let reused = conn.reused;
    let req = leg
        .request(upstream)
        .await
        .map_err(|e| failed(e, false, reused))?;
    send(&mut conn, req, leg.body())
        .await
        .map_err(|e| failed(e, true, reused))?;
    read_response_header(&mut conn, buffer_size)
        .await
        .map_err(|e| failed(e, true, reused))?;
    Ok(conn)
}
