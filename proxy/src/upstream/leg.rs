//! What one kind of upstream request brings to the upstream loop
//! ([`crate::upstream::tries`]): which group the next try goes to, the
//! balancer's key, the request header and its hooks, the body and where
//! it comes from, what a program says of failures and of the response
//! header, and the record of tries. A client's request, an upgrade and a
//! subrequest are each a `Leg`.
//!
//! nginx counterpart: the `ngx_http_upstream_t` callbacks a module sets
//! (`create_request`, `reinit_request`, `process_header`) and
//! `r->request_body`.

use crate::upstream::connect::Conn;
use crate::upstream::group::Upstream;
use crate::upstream::head::Head;
use crate::upstream::next_upstream::RetryDecision;
use crate::upstream::peer::UpstreamPeer;
use crate::upstream::request_head::RequestHead;
use crate::upstream::try_record::TryList;
use ferry_filters::request_body::RequestBody;
use ferry_lb::Lease;
use pingora_error::{Error, Result};
use std::net::IpAddr;
use std::sync::Arc;

/// What one kind of upstream request brings to the loop.
pub(crate) trait Leg {
    /// nginx `peer.get`'s group: the one the next try goes to.
    async fn group(&mut self) -> Result<Arc<Upstream>>;
    /// What the balancer of `upstream` is given: the rendered `hash_key`
    /// (empty when the group has none) and the client's address.
    fn key(&self, upstream: &Upstream) -> (String, Option<IpAddr>);
    /// The route `sticky` binds this request to in `upstream` (nginx
    /// `pc->hint`): `None` without one.
    fn sticky(&self, _upstream: &Upstream) -> Option<String> {
        None
    }
    /// The Pingora peer, with its timeouts, for the server leased.
    fn peer(&self, upstream: &Arc<Upstream>, lease: &Lease) -> Arc<UpstreamPeer>;
    /// The request head for this try (nginx `create_request`, then any
    /// hook that changes it); `h1`: the try's connection is HTTP/1, which
    /// may take the head as bytes.
    async fn request(&mut self, upstream: &Upstream, h1: bool) -> Result<RequestHead>;
    /// Where this try's request body comes from.
    fn body(&mut self) -> BodySource<'_>;
    /// The body streams from the client: it can go to one try only.
    fn body_streams(&self) -> bool;
    /// The next piece of a streamed body as the client sent it (`None` at
    /// its end). Safe to give up: a piece read is never lost.
    async fn read_piece(&mut self) -> Result<Option<bytes::Bytes>>;
    /// A piece [`Leg::read_piece`] gave, through the program's filter.
    async fn filter_piece(&mut self, read: Option<bytes::Bytes>) -> Result<Piece>;
    /// The next piece of a streamed body to send, or its end.
    async fn stream_piece(&mut self) -> Result<Option<bytes::Bytes>> {
        loop {
            let read = self.read_piece().await?;
            match self.filter_piece(read).await? {
                Piece::Data(p) => return Ok(Some(p)),
                Piece::Nothing => continue,
                Piece::End => return Ok(None),
            }
        }
    }
    /// The try has its connection (a hook's look at it); an error ends the
    /// request.
    async fn connected(&mut self, conn: &Conn) -> Result<()>;
    /// A try could not connect: `e` carries the rules' retry verdict, and
    /// comes back with the program's.
    fn fail_to_connect(&mut self, peer: &UpstreamPeer, e: Box<Error>) -> Box<Error>;
    /// A try failed after connecting; as [`Leg::fail_to_connect`].
    fn error_while_proxy(&mut self, peer: &UpstreamPeer, e: Box<Error>, reused: bool)
        -> Box<Error>;
    /// The response header, before the retry decision (a hook's say).
    async fn response(&mut self, head: &mut Head) -> Result<RetryDecision>;
    /// The request's record of tries.
    fn tries(&mut self) -> &mut TryList;
}

/// What one piece of a streamed body came to, through the filter.
pub(crate) enum Piece {
    /// Bytes to send.
    Data(bytes::Bytes),
    /// The filter kept nothing of this piece: read the next.
    Nothing,
    /// The body's end.
    End,
}

/// Where the request body comes from on this try.
pub enum BodySource<'a> {
    /// Read whole before the first try.
    Buffered(&'a RequestBody),
    /// Streamed from the client as it arrives (only on the first try),
    /// piece by piece from [`Leg::stream_piece`].
    Stream,
    /// A body in memory (subrequests).
    Memory(&'a bytes::Bytes),
    None,
}
