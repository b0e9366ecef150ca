//! The response body's first read, and no pipe when that was all of it.
//!
//! A small response usually arrives in one piece with its header, so its
//! body is complete after the first read: it is written and ended at once,
//! and the upstream connection goes back to the pool first. Only a body
//! that is not complete yet starts a pipe, buffered ([`crate::event_pipe`])
//! or not ([`crate::unbuffered`]), with that first piece as its first read.
//! The pipes are large state machines; built only when needed, a small
//! response neither allocates nor copies one.
//!
//! nginx counterpart: the part of `ngx_http_upstream_send_response` that
//! hands the pipe the body bytes already read with the header
//! (`p->preread_bufs`); with the whole body there, `ngx_event_pipe` finishes
//! in its first pass.

use crate::event_pipe::{self, EventPipeConf};
use crate::pipe::{
    read_watching, BodyFilter, DownstreamBody, PipeError, PipeOutcome, UpstreamBody,
};
use crate::unbuffered::{self, client_gone, last_piece};
use bytes::Bytes;

/// Move the body from `upstream` to `client`: buffered through the event
/// pipe with `pipe`'s settings, unbuffered without.
pub async fn run<U, C, F>(
    pipe: Option<&EventPipeConf>,
    mut upstream: U,
    mut client: C,
    filter: &mut F,
) -> PipeOutcome
where
    U: UpstreamBody,
    C: DownstreamBody,
    F: BodyFilter + ?Sized,
{
    let mut out = PipeOutcome::default();
    let read = if pipe.is_some_and(|p| p.ignore_client_abort) {
        Some(upstream.read().await)
    } else {
        read_watching(&mut upstream, &mut client).await
    };
    let first = match read {
        Some(Ok(piece)) => piece,
        Some(Err(e)) => {
            out.error = Some(e);
            return out;
        }
        None => {
            out.error = Some(client_gone());
            return out;
        }
    };
    if first.is_none() || upstream.is_done() {
        out.received = first.as_ref().map_or(0, |b| b.len() as u64);
        return last_piece(upstream, client, filter, first, out).await;
    }
    let upstream = Prefixed {
        first,
        rest: upstream,
    };
    match pipe {
        Some(conf) => Box::pin(event_pipe::run(conf, upstream, client, filter)).await,
        None => Box::pin(unbuffered::run(upstream, client, filter)).await,
    }
}

/// The upstream body with its first piece already read.
struct Prefixed<U> {
    first: Option<Bytes>,
    rest: U,
}

impl<U: UpstreamBody> UpstreamBody for Prefixed<U> {
    async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        match self.first.take() {
            Some(piece) => Ok(Some(piece)),
            None => self.rest.read().await,
        }
    }
    fn is_done(&mut self) -> bool {
        self.first.is_none() && self.rest.is_done()
    }
    async fn release(self) {
        self.rest.release().await
    }
}
