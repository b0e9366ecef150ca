//! After a `101 Switching Protocols`: bytes both ways between the client
//! and the upstream, as they come, until either side closes or both are
//! idle for the route's `read_timeout`.
//!
//! nginx counterpart: `ngx_http_upstream_upgrade` and
//! `ngx_http_upstream_process_upgraded`. Like nginx, an upgrade is a request
//! like any other up to its `101` (routed, filtered by every hook, retried
//! on connect failure, counted on its server); the tunnel is its body. Its
//! server stays leased while the tunnel is open, so `least_conn` and
//! `max_conns` see it, and the upstream connection is closed at the end,
//! never pooled.

use crate::client::downstream::Downstream;
use crate::upstream::connect::Conn;
use pingora_error::Result;
use std::time::Duration;

/// How a tunnel ended, and what went through it.
#[derive(Debug, Default)]
pub(crate) struct TunnelEnd {
    /// Bytes from the upstream to the client.
    pub to_client: u64,
    /// Bytes from the client to the upstream.
    pub to_upstream: u64,
}

/// Relay until one side is done. Errors end the tunnel like a close does:
/// the response is already under way, so there is nothing more to answer.
pub(crate) async fn relay(
    client: &mut Downstream,
    mut conn: Conn,
    idle: Option<Duration>,
) -> TunnelEnd {
    let mut end = TunnelEnd::default();
    client.set_read_timeout(idle);
    let Some(up) = conn.session.h1() else {
        // Upgrades go over HTTP/1.1 only (as nginx's).
        conn.close();
        return end;
    };
    // The request's (empty) body is done: from here the upstream gets the
    // client's bytes as they are.
    up.maybe_upgrade_body_writer();
    let result: Result<()> = async {
        loop {
            tokio::select! {
                from_client = client.read_request_body() => {
                    let Some(data) = from_client? else { break };
                    end.to_upstream += data.len() as u64;
                    up.write_body(&data).await?;
                }
                from_upstream = up.read_body_bytes() => {
                    let Some(data) = from_upstream? else { break };
                    end.to_client += data.len() as u64;
                    client.write_response_body(data, false).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        log::debug!("tunnel closed: {e}");
    }
    conn.close();
    end
}
