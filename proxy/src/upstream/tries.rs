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
use crate::upstream::head::Head;
use crate::upstream::leg::Leg;
use crate::upstream::next_upstream::{Failure, Outcome, Policy, Verdict};
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::read_header::read_response_header;
use crate::upstream::send_request::send;
use crate::upstream::try_record::{Try, TryOutcome};
use ferry_lb::{Cursor, Feedback, Key, Lease};
use pingora_error::{Error, ErrorType, Result};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// How the loop ended.
pub(crate) enum Chosen {
    /// This response goes to the client (boxed: it is moved through each
    /// step of the request's future, which would otherwise copy it).
    Response(Box<Response>),
    /// No response to use: answer with this status (502, 504).
    Fail(u16),
}

/// A chosen response: the connection its header was read on, the header,
/// and the server it came from.
pub(crate) struct Response {
    pub conn: Conn,
    pub header: Head,
    pub held: Held,
}

/// The server a chosen response came from, held until that response is
/// done (nginx frees the peer at finalize, so `least_conn` and `max_conns`
/// count it, a tunnel included).
pub(crate) struct Held {
    lease: Lease,
    cursor: Cursor,
    try_index: usize,
    /// The group the server is in.
    upstream: Arc<Upstream>,
    /// When the balancer picked the server, if `sticky` may read it.
    picked: Option<SystemTime>,
}

impl Held {
    /// The group of the server, and the server's route (for `sticky`).
    pub fn server(&self) -> (&Arc<Upstream>, &str) {
        (&self.upstream, &self.lease.peer().route)
    }

    /// When the balancer picked the server (nginx's `ngx_time()` in
    /// `get_peer`, where `sticky cookie` dates its `expires`).
    pub fn picked_at(&self) -> SystemTime {
        self.picked.unwrap_or_else(SystemTime::now)
    }

    /// The response is done: the try is complete in the record and the
    /// server's lease given back as a success (failures after the header
    /// do not count against `max_fails`, as in nginx).
    pub fn finish(self, tries: &mut [Try]) {
        let Held {
            mut lease,
            mut cursor,
            try_index,
            ..
        } = self;
        if let Some(t) = tries.get_mut(try_index) {
            t.outcome = TryOutcome::Used;
            t.response_time = Some(t.started.elapsed());
            lease.set_times(t.header_time, t.response_time);
        }
        lease.free(Feedback::Ok, &mut cursor);
    }
}

/// Where in a try it failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection was made (nginx's connect phase).
    Connect,
    /// Writing the request: from here on it may have reached the server
    /// (nginx `u->request_sent`).
    Send,
    /// Reading the response header.
    Header,
}

impl Phase {
    fn request_sent(self) -> bool {
        self != Phase::Connect
    }
}

impl TryFailed {
    /// The server said it never processed the request: an HTTP/2 stream
    /// it refused (`REFUSED_STREAM`) or left past its `GOAWAY` (RFC 9113,
    /// 8.7), which Pingora marks retryable. Such a try is an `error` whose
    /// request was not sent, as a refused connection is: it goes to the
    /// next server even when its method is not idempotent.
    fn unprocessed(&self) -> bool {
        matches!(self.error.etype(), ErrorType::H2Error) && self.error.retry.retry()
    }

    /// The server had the request (nginx `u->request_sent`).
    fn request_sent(&self) -> bool {
        self.phase.request_sent() && !self.unprocessed()
    }
}

/// Why one try failed, and what nginx needs to know about it.
struct TryFailed {
    error: Box<Error>,
    phase: Phase,
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

/// The loop's state for one request (nginx keeps it in its
/// `ngx_http_upstream_t`): a cursor per group tries went to, the tries
/// that count against `next_upstream_tries`, whether a streamed body was
/// spent, and the group the program chose for the next try.
struct Tries {
    cursors: Cursors,
    limit: u32,
    /// Tries that count against `limit` (a stale keepalive one does not).
    counted: u32,
    body_used: bool,
    next_group: Option<Arc<Upstream>>,
}

/// A cursor per group the request's tries went to: almost always one,
/// kept inline.
type Cursors = smallvec::SmallVec<[(Arc<Upstream>, Cursor); 1]>;

/// The try being judged.
struct Current {
    upstream: Arc<Upstream>,
    /// Its group's cursor in [`Tries::cursors`].
    at: usize,
    lease: Lease,
    peer: Arc<UpstreamPeer>,
    /// Its place in the request's record of tries.
    index: usize,
    /// When the balancer picked it, if `sticky` may read it.
    picked: Option<SystemTime>,
}

/// What a try was judged: the rules' outcome and verdict, whether it was a
/// stale keepalive connection, the connection to close, and whether the
/// rules (and the program) would try again, tries aside.
struct Judged {
    outcome: Outcome,
    verdict: Verdict,
    stale: bool,
    conn: Option<Conn>,
    may_go_on: bool,
}

/// What follows a try.
enum Step {
    Respond(Box<Response>),
    Fail(u16),
    Again,
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
    let mut tries = Tries {
        cursors: Cursors::new(),
        limit: tries_limit,
        counted: 0,
        body_used: false,
        next_group: None,
    };
    loop {
        let upstream = match tries.next_group.take() {
            Some(u) => u,
            None => leg.group().await?,
        };
        let at = tries.cursor_for(&upstream);
        if tries.body_used {
            // A streamed body went to a try already: nothing to resend.
            return Ok(Chosen::Fail(502));
        }
        // One reading of the clock for the pick and the try's start.
        let now = Instant::now();
        let Some(lease) = select(leg, &upstream, &mut tries.cursors[at].1, now) else {
            return Ok(Chosen::Fail(Failure::NoLive.status()));
        };
        // Only `sticky cookie` reads it (for its `expires`).
        let picked = upstream.sticky.is_some().then(SystemTime::now);
        let peer = leg.peer(&upstream, &lease);
        let index = leg.tries().len();
        let record = new_try(peer.addr_text.clone(), &upstream, TryOutcome::Used, now);
        leg.tries().push(record);
        let generation = lease.members().1;
        let attempt = attempt(leg, &upstream, &peer, generation, buffer_size).await;
        let current = Current {
            upstream,
            at,
            lease,
            peer,
            index,
            picked,
        };
        match tries.next(leg, policy, current, attempt).await? {
            Step::Respond(r) => return Ok(Chosen::Response(r)),
            Step::Fail(status) => return Ok(Chosen::Fail(status)),
            Step::Again => {}
        }
    }
}

/// The balancer's pick in `upstream` for this leg, or `None` (recorded and
/// logged: nginx's "no live upstreams").
fn select<L: Leg>(
    leg: &mut L,
    upstream: &Upstream,
    cursor: &mut Cursor,
    now: Instant,
) -> Option<Lease> {
    let (hash, client_ip) = leg.key(upstream);
    let bound = leg.sticky(upstream);
    let key = Key {
        hash: hash.as_bytes(),
        client_ip,
        sticky: bound.as_deref(),
    };
    let lease = upstream.group.select_at(cursor, &key, now);
    if lease.is_none() {
        log::error!(
            "no live upstreams while connecting to upstream \"{}\"",
            upstream.name
        );
        let record = new_try(upstream.name.clone(), upstream, TryOutcome::NoLive, now);
        leg.tries().push(record);
    }
    lease
}

impl Tries {
    /// Tries the request has left after `counted` (`u32::MAX`: no limit).
    fn request_left(&self, counted: u32) -> u32 {
        match self.limit {
            0 => u32::MAX,
            limit => limit.saturating_sub(counted),
        }
    }

    /// The cursor of `upstream`, made on its first try.
    fn cursor_for(&mut self, upstream: &Arc<Upstream>) -> usize {
        cursor_for(&mut self.cursors, upstream, self.limit)
    }

    /// nginx's `ngx_http_upstream_next`: the one place that decides what
    /// follows a try, for a response header and a failure alike: this
    /// response, the next server (of this group, or of the one the program
    /// names when this group's tries ran out), or a failure's status.
    async fn next<L: Leg>(
        &mut self,
        leg: &mut L,
        policy: &Policy,
        c: Current,
        attempt: Attempt,
    ) -> Result<Step> {
        let left = self.cursors[c.at]
            .1
            .tries_left
            .min(self.request_left(self.counted));
        let mut judged = match attempt {
            Attempt::Fatal(e) => return Err(e),
            Attempt::Header(conn) => {
                let (mut judged, header) = self.header(leg, policy, &c, conn, left).await?;
                if judged.verdict == Verdict::Respond {
                    if let (Some(conn), Some(header)) = (judged.conn.take(), header) {
                        let took = leg.tries()[c.index].header_time;
                        return Ok(Step::Respond(self.respond(c, took, conn, header)));
                    }
                }
                judged
            }
            Attempt::Failed(failed) => self.failure(leg, policy, &c, failed, left),
        };
        let (upstream, at) = self.settle(leg, c, &mut judged);
        let Verdict::Fail(status) = judged.verdict else {
            return Ok(Step::Again);
        };
        // This group's tries ran out, but the rules would go on: the
        // program may send the next try to another group (or server), as
        // long as the request has tries left.
        let out_of_tries = self.cursors[at].1.tries_left == 0 && judged.may_go_on;
        if !out_of_tries || self.body_used || self.request_left(self.counted) == 0 {
            return Ok(Step::Fail(status));
        }
        match self.fallback(leg, &upstream).await? {
            Some(other) => {
                self.next_group = Some(other);
                Ok(Step::Again)
            }
            None => Ok(Step::Fail(status)),
        }
    }

    /// A response header: recorded, shown to the program, judged by the
    /// rules. When the rules want another try but this group has none left,
    /// the program may name another group. The header comes back when it
    /// is the one to use.
    async fn header<L: Leg>(
        &mut self,
        leg: &mut L,
        policy: &Policy,
        c: &Current,
        mut conn: Conn,
        left: u32,
    ) -> Result<(Judged, Option<Head>)> {
        self.body_used = leg.body_streams();
        let Some(mut header) = conn.session.take_head() else {
            return Error::e_explain(ErrorType::InternalError, "header read but absent");
        };
        let status = header.status();
        let t = &mut leg.tries()[c.index];
        t.reused = conn.reused;
        t.header_time = Some(t.started.elapsed());
        t.status = Some(status);
        let hook = leg.response(&mut header).await?;
        let outcome = Outcome::Status { status, hook };
        let mut verdict = policy.decide(outcome, left);
        let wanted_next = policy.decide(outcome, u32::MAX) == Verdict::Next;
        if verdict == Verdict::Respond
            && wanted_next
            && !self.body_used
            && self.request_left(self.counted + 1) > 0
            && self.cursors[c.at].1.tries_left <= 1
        {
            // Out of tries in this group: the program may have another.
            if let Some(other) = self.fallback(leg, &c.upstream).await? {
                self.next_group = Some(other);
                verdict = Verdict::Next;
            }
        }
        if verdict != Verdict::Respond {
            leg.tries()[c.index].outcome = TryOutcome::NextStatus(status);
        }
        let judged = Judged {
            outcome,
            verdict,
            stale: false,
            conn: Some(conn),
            may_go_on: false,
        };
        Ok((judged, Some(header)))
    }

    /// A failed try: recorded and logged, judged by the rules and then by
    /// the program (`fail_to_connect`, `error_while_proxy`).
    fn failure<L: Leg>(
        &mut self,
        leg: &mut L,
        policy: &Policy,
        c: &Current,
        failed: TryFailed,
        left: u32,
    ) -> Judged {
        self.body_used = leg.body_streams() && failed.phase.request_sent();
        let request_sent = failed.request_sent();
        let failure = match failed.unprocessed() {
            true => Failure::Error,
            false => Failure::of(&failed.error),
        };
        log_failure(failure, &c.lease, &c.upstream, &failed.error);
        let t = &mut leg.tries()[c.index];
        t.reused = failed.reused;
        t.outcome = match failure {
            Failure::Timeout => TryOutcome::Timeout,
            Failure::InvalidHeader => TryOutcome::InvalidHeader,
            Failure::Client { .. } => TryOutcome::Client,
            _ => TryOutcome::Error,
        };
        let outcome = Outcome::Failed {
            failure,
            request_sent,
        };
        // nginx: a stale keepalive connection does not use up a try.
        let stale = failed.reused && failure == Failure::Error;
        let left = left + u32::from(stale);
        let rules = policy.decide(outcome, left);
        let (verdict, may_go_on) = program_says(
            leg,
            &c.peer,
            failed,
            failure,
            rules,
            policy,
            left,
            self.body_used,
        );
        Judged {
            outcome,
            verdict,
            stale,
            conn: None,
            may_go_on,
        }
    }

    /// The response to use: its server held until it is done (and told
    /// its header arrived, for `least_time`).
    fn respond(
        &mut self,
        mut c: Current,
        header_time: Option<std::time::Duration>,
        conn: Conn,
        header: Head,
    ) -> Box<Response> {
        if let Some(t) = header_time {
            c.lease.header_arrived(t);
        }
        let cursor = self.cursors.swap_remove(c.at).1;
        let held = Held {
            lease: c.lease,
            cursor,
            try_index: c.index,
            upstream: c.upstream,
            picked: c.picked,
        };
        Box::new(Response { conn, header, held })
    }

    /// A try not used: its time recorded, its server given back with the
    /// rules' feedback (`max_fails`), its count taken, its connection
    /// closed. Its group and cursor come back.
    fn settle<L: Leg>(
        &mut self,
        leg: &mut L,
        c: Current,
        j: &mut Judged,
    ) -> (Arc<Upstream>, usize) {
        let t = &mut leg.tries()[c.index];
        t.response_time = Some(t.started.elapsed());
        let mut lease = c.lease;
        lease.set_times(t.header_time, t.response_time);
        let cursor = &mut self.cursors[c.at].1;
        let server = lease.peer().addr;
        if lease.free(j.outcome.feedback(j.verdict), cursor) {
            crate::upstream::events::marked_failed(&c.upstream.name, server);
        }
        if j.stale {
            cursor.tries_left += 1;
        } else {
            self.counted += 1;
        }
        if let Some(conn) = j.conn.take() {
            conn.close();
        }
        (c.upstream, c.at)
    }

    /// Where the program sends the next try once `upstream` is out of
    /// tries: another group (or run-time server) with tries left, or `None`.
    async fn fallback<L: Leg>(
        &mut self,
        leg: &mut L,
        upstream: &Arc<Upstream>,
    ) -> Result<Option<Arc<Upstream>>> {
        let other = leg.group().await?;
        if Arc::ptr_eq(&other, upstream) {
            return Ok(None);
        }
        let at = self.cursor_for(&other);
        Ok((self.cursors[at].1.tries_left > 0).then_some(other))
    }
}

/// The cursor of `upstream` in `cursors`, made on its first try.
fn cursor_for(cursors: &mut Cursors, upstream: &Arc<Upstream>, tries_limit: u32) -> usize {
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
                request_sent: failed.request_sent(),
            },
            u32::MAX,
        ) == Verdict::Next
    });
    let mut e = failed.error;
    e.set_retry(wanted);
    let mut e = if failed.phase == Phase::Connect {
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

fn new_try(addr: String, upstream: &Upstream, outcome: TryOutcome, started: Instant) -> Try {
    Try {
        addr,
        group: upstream.name.clone(),
        status: None,
        outcome,
        reused: false,
        started,
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
    let failed = |error, phase, reused| {
        Attempt::Failed(TryFailed {
            error,
            phase,
            reused,
        })
    };
    let mut conn = match connect(upstream, peer, generation).await {
        Ok(c) => c,
        Err(e) => return failed(e, Phase::Connect, false),
    };
    let reused = conn.reused;
    // The program's hooks: their errors end the request, not the try.
    if let Err(e) = leg.connected(&conn).await {
        conn.close();
        return Attempt::Fatal(e);
    }
    let req = match leg.request(upstream, !conn.session.is_h2()).await {
        Ok(r) => r,
        Err(e) => {
            conn.close();
            return Attempt::Fatal(e);
        }
    };
    if let Err(e) = send(&mut conn, req, leg).await {
        return failed(e, Phase::Send, reused);
    }
    if let Err(e) = read_response_header(&mut conn, buffer_size).await {
        return failed(e, Phase::Header, reused);
    }
    Attempt::Header(conn)
}
