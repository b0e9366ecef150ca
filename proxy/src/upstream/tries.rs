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
use crate::upstream::leg::Leg;
use crate::upstream::next_upstream::{Failure, Outcome, Policy, Verdict};
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::read_header::read_response_header;
use crate::upstream::send_request::send;
use crate::upstream::try_record::{Try, TryOutcome};
use ferry_lb::{Cursor, Feedback, Key, Lease};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Instant;

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
    /// No connection was made (nginx's connect phase).
    connecting: bool,
    /// Sending the request had started (nginx `u->request_sent`).
    request_sent: bool,
    /// The connection came from the keepalive pool.
    reused: bool,
}

/// How one try went: a response header, a failure of the try, or an error
/// that ends the request (a hook's).
enum Attempt {
    Header(Conn),
    Failed(TryFailed),
    Fatal(Box<Error>),
}

/// Run the loop for `leg` under `policy`. `tries_limit` is
/// `next_upstream_tries`, for the whole request whatever groups its tries
/// go to; `buffer_size` bounds the response header.
pub(crate) async fn run<L: Leg>(
    leg: &mut L,
    policy: &Policy,
    tries_limit: u32,
    buffer_size: usize,
) -> Result<Chosen> {
    // One cursor per group a leg sends tries to (usually just one).
    let mut cursors: Vec<(Arc<Upstream>, Cursor)> = Vec::new();
    let mut body_used = false;
    // Tries that count against `tries_limit` (a stale keepalive one does not).
    let mut counted: u32 = 0;
    // The group the program chose when this group's tries ran out.
    let mut next: Option<Arc<Upstream>> = None;

    loop {
        let upstream = match next.take() {
            Some(u) => u,
            None => leg.group().await?,
        };
        let at = cursor_for(&mut cursors, &upstream, tries_limit);
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
        let request_left = |counted: u32| match tries_limit {
            0 => u32::MAX,
            limit => limit.saturating_sub(counted),
        };
        let left = cursors[at].1.tries_left.min(request_left(counted));
        // Whether the rules (and the program) would try again, tries aside.
        let mut may_go_on = false;
        let (outcome, stale, conn, verdict) = match result {
            Attempt::Fatal(e) => return Err(e),
            Attempt::Header(conn) => {
                body_used = leg.body_streams();
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
                let mut verdict = policy.decide(outcome, left);
                let wanted_next = policy.decide(outcome, u32::MAX) == Verdict::Next;
                if verdict == Verdict::Respond
                    && wanted_next
                    && !body_used
                    && request_left(counted + 1) > 0
                    && cursors[at].1.tries_left <= 1
                {
                    // Out of tries in this group: the program may have another.
                    if let Some(other) = fallback(leg, &mut cursors, &upstream, tries_limit).await?
                    {
                        next = Some(other);
                        verdict = Verdict::Next;
                    }
                }
                if verdict == Verdict::Respond {
                    let cursor = cursors.swap_remove(at).1;
                    let held = Held {
                        lease,
                        cursor,
                        try_index,
                    };
                    return Ok(Chosen::Response(Response { conn, header, held }));
                }
                leg.tries()[try_index].outcome = TryOutcome::NextStatus(status);
                (outcome, false, Some(conn), verdict)
            }
            Attempt::Failed(failed) => {
                body_used = leg.body_streams() && failed.request_sent;
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
                let stale = failed.reused && failure == Failure::Error;
                let left = left + u32::from(stale);
                let rules = policy.decide(outcome, left);
                let (verdict, go_on) =
                    program_says(leg, &peer, failed, failure, rules, policy, left, body_used);
                may_go_on = go_on;
                (outcome, stale, None, verdict)
            }
        };
        let cursor = &mut cursors[at].1;
        let t = &mut leg.tries()[try_index];
        t.response_time = Some(t.started.elapsed());
        let server = lease.peer().addr;
        if lease.free(outcome.feedback(verdict), cursor) {
            crate::upstream::events::marked_failed(&upstream.name, server);
        }
        if stale {
            cursor.tries_left += 1;
        } else {
            counted += 1;
        }
        if let Some(conn) = conn {
            conn.close();
        }
        let Verdict::Fail(status) = verdict else {
            continue;
        };
        // This group's tries ran out, but the rules would go on: the
        // program may send the next try to another group (or server), as
        // long as the request has tries left.
        let out_of_tries = cursor.tries_left == 0 && may_go_on;
        if !out_of_tries || body_used || request_left(counted) == 0 {
            return Ok(Chosen::Fail(status));
        }
        match fallback(leg, &mut cursors, &upstream, tries_limit).await? {
            Some(other) => next = Some(other),
            None => return Ok(Chosen::Fail(status)),
        }
    }
}

/// Where the program sends the next try once `upstream` is out of tries:
/// another group (or run-time server) with tries left, or `None`.
async fn fallback<L: Leg>(
    leg: &mut L,
    cursors: &mut Vec<(Arc<Upstream>, Cursor)>,
    upstream: &Arc<Upstream>,
    tries_limit: u32,
) -> Result<Option<Arc<Upstream>>> {
    let other = leg.group().await?;
    if Arc::ptr_eq(&other, upstream) {
        return Ok(None);
    }
    let at = cursor_for(cursors, &other, tries_limit);
    Ok((cursors[at].1.tries_left > 0).then_some(other))
}

/// The cursor of `upstream` in `cursors`, made on its first try.
fn cursor_for(
    cursors: &mut Vec<(Arc<Upstream>, Cursor)>,
    upstream: &Arc<Upstream>,
    tries_limit: u32,
) -> usize {
    match cursors.iter().position(|(u, _)| Arc::ptr_eq(u, upstream)) {
        Some(i) => i,
        None => {
            cursors.push((upstream.clone(), upstream.group.cursor(tries_limit)));
            cursors.len() - 1
        }
    }
}

/// The program's word on a failed try (`fail_to_connect`,
/// `error_while_proxy`): whether the rules would try again (tries aside)
/// goes in as the error's retry flag, and the flag that comes back decides,
/// within what no program can change (a try left, the
/// `next_upstream_timeout` budget, a body that can be sent again). A
/// failure of the client's is never the program's to retry. Also returns
/// whether another try is wanted at all (for a fallback to another group).
#[allow(clippy::too_many_arguments)]
fn program_says<L: Leg>(
    leg: &mut L,
    peer: &UpstreamPeer,
    failed: TryFailed,
    failure: Failure,
    rules: Verdict,
    policy: &Policy,
    left: u32,
    body_used: bool,
) -> (Verdict, bool) {
    if let Failure::Client { .. } = failure {
        return (rules, false);
    }
    let wanted = failure.condition().is_some_and(|_| {
        policy.decide(
            Outcome::Failed {
                failure,
                request_sent: failed.request_sent,
            },
            u32::MAX,
        ) == Verdict::Next
    });
    let mut e = failed.error;
    e.set_retry(wanted);
    let mut e = if failed.connecting {
        leg.fail_to_connect(peer, e)
    } else {
        leg.error_while_proxy(peer, e, failed.reused)
    };
    e.retry.decide_reuse(failed.reused);
    let retry = e.retry() && !body_used;
    let verdict = match (retry, rules) {
        (true, Verdict::Next) | (false, Verdict::Fail(_)) => rules,
        (false, _) => Verdict::Fail(failure.status()),
        (true, _) if policy.may_go_on(left) => Verdict::Next,
        (true, _) => rules,
    };
    (verdict, retry)
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
) -> Attempt {
    let failed = |error, connecting, request_sent, reused| {
        Attempt::Failed(TryFailed {
            error,
            connecting,
            request_sent,
            reused,
        })
    };
    let mut conn = match connect(upstream, peer, generation).await {
        Ok(c) => c,
        Err(e) => return failed(e, true, false, false),
    };
    let reused = conn.reused;
    // The program's hooks: their errors end the request, not the try.
    if let Err(e) = leg.connected(&conn).await {
        conn.close();
        return Attempt::Fatal(e);
    }
    let req = match leg.request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            conn.close();
            return Attempt::Fatal(e);
        }
    };
    if let Err(e) = send(&mut conn, req, leg).await {
        return failed(e, false, true, reused);
    }
    if let Err(e) = read_response_header(&mut conn, buffer_size).await {
        return failed(e, false, true, reused);
    }
    Attempt::Header(conn)
}
