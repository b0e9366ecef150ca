//! Getting a connection to the chosen peer, and giving it back.
//!
//! nginx counterpart: `ngx_event_connect_peer` (with `connect_timeout`) and the
//! keepalive module's `get`/`free`. The connection comes from Pingora's
//! `Connector`, one per group, whose idle pool holds that group's keepalive
//! connections; `reused` says a pooled one was taken.

use crate::upstream::group::Upstream;
use crate::upstream::idle_budget::ConnId;
use crate::upstream::peer::UpstreamPeer;
use pingora_core::protocols::http::v1::client::HttpSession as H1Session;
use pingora_core::protocols::UniqueID;
use pingora_error::Result;
use std::sync::Arc;
use std::time::SystemTime;

/// An upstream connection for one try. Small on purpose (the session is
/// boxed, the peer shared): it is moved through every step of a request's
/// future, and each step would otherwise carry a copy of Pingora's session.
pub struct Conn {
    pub session: Box<H1Session>,
    /// Taken from the keepalive pool rather than newly connected.
    pub reused: bool,
    pub peer: Arc<UpstreamPeer>,
    pub upstream: Arc<Upstream>,
    /// The group's member generation the peer was chosen from.
    generation: u64,
}

/// Connect (or take an idle connection) to `peer` of `upstream`, chosen
/// among the group's members of `generation`.
pub async fn connect(
    upstream: &Arc<Upstream>,
    peer: &Arc<UpstreamPeer>,
    generation: u64,
) -> Result<Conn> {
    let connector = &upstream.connector;
    let (session, reused) = match connector.reused_http_session(&**peer).await {
        Some(s) => (s, true),
        // A new connection (TCP, maybe TLS) is a large future: boxed, so
        // that every request's own future does not carry (and copy) it.
        None => Box::pin(connector.get_http_session(&**peer)).await?,
    };
    let mut session = Box::new(session);
    session.read_timeout = peer.http.options.read_timeout;
    session.write_timeout = peer.http.options.write_timeout;
    let conn = Conn {
        session,
        reused,
        peer: peer.clone(),
        upstream: upstream.clone(),
        generation,
    };
    if reused {
        upstream.keepalive.taken(conn.id());
    }
    Ok(conn)
}

impl Conn {
    fn id(&self) -> ConnId {
        let made = self
            .session
            .digest()
            .timing_digest
            .first()
            .and_then(|t| t.as_ref())
            .map_or(SystemTime::UNIX_EPOCH, |t| t.established_ts);
        (self.session.id(), made)
    }

    /// The response was read to its end: back to the pool when it can be
    /// reused (Pingora checks framing and `Connection: close`; Ferry checks
    /// the group's keepalive limits, and that the server is still one of
    /// the group's: a reload or a DNS answer may have removed it), closed
    /// otherwise.
    pub async fn release(self) {
        let id = self.id();
        let ka = &self.upstream.keepalive;
        let member = || match self.peer.http._address.as_inet() {
            Some(a) => self.upstream.group.serves(*a, self.generation),
            None => true,
        };
        if member() && ka.after_request(id) {
            // Boxed: Pingora's release future holds two copies of its session.
            let release = self.upstream.connector.release_http_session(
                *self.session,
                &*self.peer,
                Some(ka.idle_timeout),
            );
            Box::pin(release).await;
        } else {
            ka.forget(id);
            let mut s = self.session;
            s.shutdown().await;
        }
    }

    /// Give up on this connection (an error, or a response not read to its end).
    pub fn close(self) {
        self.upstream.keepalive.forget(self.id());
    }
}
