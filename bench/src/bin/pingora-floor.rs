//! The floor: the least a proxy built on Pingora's HTTP/1 sessions, its
//! `Connector` keepalive pool and its server can cost per request. Each
//! request is read with Pingora's server session, its header copied to an
//! upstream connection from the pool, the response header and body copied
//! back, and the connection released. No routing, no retries, no
//! timeouts, no logging, no metrics: not a proxy anyone should run, only a
//! measure of what the parts Ferry builds on cost by themselves.
//! It allocates with mimalloc, as the `ferry` binary does, so that the two
//! differ only in the work Ferry does.
//! `pingora-floor LISTEN BACKEND`

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use std::sync::Arc;

#[global_allocator]
static ALLOC: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;

struct Floor {
    connector: Connector,
    peer: HttpPeer,
}

impl Floor {
    /// One request, header to body end; `None` when either side failed.
    async fn proxy(&self, session: &mut ServerSession) -> Option<()> {
        let mut up = match self.connector.reused_http_session(&self.peer).await {
            Some(s) => s,
            None => self.connector.get_http_session(&self.peer).await.ok()?.0,
        };
        up.write_request_header(Box::new(session.req_header().clone()))
            .await
            .ok()?;
        up.read_response().await.ok()?;
        let header = up.resp_header()?.clone();
        session.write_response_header(Box::new(header)).await.ok()?;
        while let Some(b) = up.read_body_bytes().await.ok()? {
            session.write_response_body(b, false).await.ok()?;
        }
        session
            .write_response_body(bytes::Bytes::new(), true)
            .await
            .ok()?;
        up.respect_keepalive();
        self.connector
            .release_http_session(up, &self.peer, None)
            .await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for Floor {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        self.proxy(&mut session).await?;
        let settings = HttpPersistentSettings::for_session(&session);
        let reused = session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(reused, settings))
    }
}

fn main() {
    let (listen, backend, _) = ferry_bench::args("pingora-floor");
    let mut server = ferry_bench::one_thread_server("pingora-floor", false);
    let floor = Floor {
        connector: Connector::new(None),
        peer: HttpPeer::new(backend.as_str(), false, String::new()),
    };
    let mut svc = Service::new("floor".to_string(), floor);
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
