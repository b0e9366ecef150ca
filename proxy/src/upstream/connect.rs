//! Getting a connection to the chosen peer, and giving it back.
//!
//! nginx counterpart: `ngx_event_connect_peer` (with `connect_timeout`) and the
//! keepalive module's `get`/`free`. The connection comes from the group's
//! [`crate::upstream::pool::Pool`] (Pingora's connector, Ferry's idle queue), whose
//! idle pool holds that group's keepalive connections; `reused` says a
//! pooled one was taken.

use crate::upstream::group::Upstream;
use crate::upstream::h1::H1;
use crate::upstream::keepalive::Usage;
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::session::UpstreamSession;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::Peer;
use pingora_error::Result;
use std::sync::Arc;

/// An upstream connection for one try. Small on purpose (the session is
/// boxed, the peer shared): it is moved through every step of a request's
/// future, and each step would otherwise carry a copy of Pingora's session.
pub struct Conn {
    pub session: UpstreamSession,
    /// Taken from the keepalive pool rather than newly connected.
    pub reused: bool,
    pub peer: Arc<UpstreamPeer>,
    pub upstream: Arc<Upstream>,
    /// The group's member generation the peer was chosen from.
    generation: u64,
    /// The request body still streams from the client: the server answered
    /// before its end (an HTTP/2 stream in full duplex, as gRPC's).
    pub request_open: bool,
}

/// Connect (or take an idle connection) to `peer` of `upstream`, chosen
/// among the group's members of `generation`.
pub async fn connect(
    upstream: &Arc<Upstream>,
    peer: &Arc<UpstreamPeer>,
    generation: u64,
) -> Result<Conn> {
    let (mut session, reused) = if wants_h2(peer) {
        h2_session(upstream, peer).await?
    } else {
        let pool = &upstream.pool;
        let (stream, usage, reused) = match pool.take(&**peer) {
            Some((s, usage)) => (s, usage, true),
            // A new connection (TCP, maybe TLS) is a large future: boxed, so
            // that every request's own future does not carry (and copy) it.
            None => (Box::pin(pool.connect(&**peer)).await?, Usage::new(), false),
        };
        (
            UpstreamSession::H1(Box::new(H1::new(stream, usage))),
            reused,
        )
    };
    let o = &peer.http.options;
    session.set_timeouts(o.read_timeout, o.write_timeout);
    let conn = Conn {
        session,
        reused,
        peer: peer.clone(),
        upstream: upstream.clone(),
        generation,
        request_open: false,
    };
    Ok(conn)
}

/// The peer asks for HTTP/2 (`http_version: "2"`).
fn wants_h2(peer: &UpstreamPeer) -> bool {
    peer.get_peer_options()
        .is_some_and(|o| o.alpn.get_min_http_version() == 2)
}

/// A stream on a connection to `peer` with a stream free, else on a new
/// one. A TLS server that does not offer `h2` in ALPN gets HTTP/1.1.
async fn h2_session(
    upstream: &Upstream,
    peer: &Arc<UpstreamPeer>,
) -> Result<(UpstreamSession, bool)> {
    let h2 = upstream.h2.get();
    if let Some(s) = h2.reused_http_session(&**peer).await? {
        return Ok((UpstreamSession::H2(Box::new(s)), true));
    }
    let made: HttpSession = Box::pin(h2.new_http_session(&**peer)).await?;
    Ok(match made {
        HttpSession::H2(s) => (UpstreamSession::H2(Box::new(s)), false),
        HttpSession::H1(s) => (
            UpstreamSession::H1(Box::new(H1::new(s.into_inner(), Usage::new()))),
            false,
        ),
        HttpSession::Custom(_) => {
            return pingora_error::Error::e_explain(
                pingora_error::ErrorType::InternalError,
                "a custom protocol session",
            )
        }
    })
}

impl Conn {
    /// The response was read to its end: back to the pool when it can be
    /// reused (Pingora checks framing and `Connection: close`; Ferry checks
    /// the group's keepalive limits, and that the server is still one of
    /// the group's: a reload or a DNS answer may have removed it), closed
    /// otherwise.
    pub async fn release(self) {
        let ka = &self.upstream.keepalive;
        let member = || match self.peer.http._address.as_inet() {
            Some(a) => self.upstream.group.serves(*a, self.generation),
            None => true,
        };
        match self.session {
            UpstreamSession::H2(s) => {
                // The stream ends; its connection stays for other streams
                // (Pingora's pool keeps it while it has any), closed when it
                // has none and the server left the group.
                if member() {
                    let idle = Some(ka.idle_timeout);
                    self.upstream
                        .h2
                        .get()
                        .release_http_session(*s, &*self.peer, idle);
                }
            }
            UpstreamSession::H1(mut s) => {
                if !(member() && ka.after_request(&mut s.usage)) {
                    return s.shutdown().await;
                }
                if let Some((stream, usage)) = s.reuse().await {
                    let key = self.peer.reuse_hash();
                    self.upstream.pool.put(stream, key, ka.idle_timeout, usage);
                }
            }
        }
    }

    /// Give up on this connection (an error, or a response not read to its
    /// end): dropped, it closes.
    pub fn close(self) {}
}
