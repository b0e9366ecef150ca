//! `sticky` on a request's way: the route it is bound to before the
//! balancer picks (its cookie, its route templates, or its learned
//! session), and after the chosen server answered, the cookie naming that
//! server and the session its response started.
//!
//! nginx counterpart: `ngx_http_upstream_sticky_init_peer` / `get_peer`
//! (the hint), `ngx_http_upstream_sticky_cookie_insert`, and
//! `ngx_http_upstream_sticky_learn_peer` from `free_peer` or, with
//! `header`, from `notify_peer` once the response header is in.

use crate::hooks::session::Session;
use crate::response::sticky_cookie;
use crate::upstream::group::Upstream;
use crate::upstream::head::Head;
use crate::upstream::tries::Held;
use ferry_conf::StickyMode;
use ferry_lb::Sessions;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The route this request is bound to in `upstream`, if any (nginx's
/// `stp->id`, or the server of the session it names).
pub(crate) fn hint(s: &Session<'_>, upstream: &Upstream) -> Option<String> {
    let mode = upstream.sticky.as_ref()?.mode()?;
    let remote = s.request.client_ip_text();
    let vars = s.vars(&remote, &upstream.name);
    match mode {
        StickyMode::Cookie(c) => vars
            .cookie(&c.name)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        StickyMode::Route(templates) => templates
            .iter()
            .map(|t| vars.render(t))
            .find(|v| !v.is_empty()),
        StickyMode::Learn(l) => {
            let id = vars.render(&l.lookup);
            if id.is_empty() {
                return None;
            }
            let sessions = upstream.sessions.as_ref()?;
            sessions.lookup(&id, Instant::now()).map(|r| r.to_string())
        }
    }
}

/// What `sticky` does with the chosen response: the cookie it adds, and
/// the session it learns (at the header, or when the response is done).
pub(crate) struct Bind {
    cookie: Option<String>,
    learn: Option<Learn>,
}

struct Learn {
    sessions: Arc<Sessions>,
    /// The session the response started (`create`).
    created: String,
    /// The session the request named (`lookup`).
    looked_up: String,
    route: String,
    at_header: bool,
}

impl Learn {
    fn now(&self) {
        let Learn {
            sessions,
            created,
            looked_up,
            route,
            ..
        } = self;
        sessions.learn(created, looked_up, route, Instant::now());
    }
}

impl Bind {
    /// Nothing to do: no `sticky` on the server's group.
    pub(crate) fn none() -> Bind {
        Bind {
            cookie: None,
            learn: None,
        }
    }

    /// For the response `head` of the server `held` (made into a header
    /// when `sticky learn` reads it).
    pub(crate) fn new(s: &Session<'_>, held: &Held, head: &mut Head) -> Result<Bind> {
        let (upstream, route) = held.server();
        let Some(mode) = upstream.sticky.as_ref().and_then(|st| st.mode()) else {
            return Ok(Bind::none());
        };
        let remote = s.request.client_ip_text();
        let mut vars = s.vars(&remote, &upstream.name);
        match mode {
            StickyMode::Cookie(c) => {
                let domain = vars.render(&c.domain);
                // nginx dates `expires` when it picks the server, not
                // when the response comes (a slow server's cookie expires
                // before `Date` + max-age).
                let now = held
                    .picked_at()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Ok(Bind {
                    cookie: Some(sticky_cookie::value(c, route, &domain, now)),
                    learn: None,
                })
            }
            StickyMode::Route(_) => Ok(Bind::none()),
            StickyMode::Learn(l) => {
                let Some(sessions) = upstream.sessions.clone() else {
                    return Ok(Bind::none());
                };
                let looked_up = vars.render(&l.lookup);
                vars.upstream_headers = Some(&head.header()?.headers);
                let learn = Learn {
                    sessions,
                    created: vars.render(&l.create),
                    looked_up,
                    route: route.to_string(),
                    at_header: l.header,
                };
                Ok(Bind {
                    cookie: None,
                    learn: Some(learn),
                })
            }
        }
    }

    /// Whether anything happens at the client's header: a cookie to set,
    /// or a session learned then.
    pub(crate) fn acts_at_header(&self) -> bool {
        self.cookie.is_some() || self.learn.as_ref().is_some_and(|l| l.at_header)
    }

    /// The client's header is ready: the cookie goes in, and with
    /// `header: true` the session is learned now, before the body.
    pub(crate) fn at_header(&self, header: &mut ResponseHeader) -> Result<()> {
        if let Some(c) = &self.cookie {
            header.append_header(http::header::SET_COOKIE, c.as_str())?;
        }
        if let Some(l) = self.learn.as_ref().filter(|l| l.at_header) {
            l.now();
        }
        Ok(())
    }

    /// The response is done (nginx frees the peer): the session is
    /// learned unless it was at the header.
    pub(crate) fn at_end(&self) {
        if let Some(l) = self.learn.as_ref().filter(|l| !l.at_header) {
            l.now();
        }
    }
}
