//! Purging: `DELETE /cache/NAME?key=KEY` removes the entry stored under
//! `KEY` (the rendered `cache.key`, percent-encoded in the query) in the
//! cache `NAME`, every variant of it included. With `admin.token` set it
//! needs `Authorization: Bearer TOKEN`. Answers `200` with the number of
//! files removed (`0` when there was nothing), `404` for an unknown cache,
//! `400` without a key.
//!
//! nginx counterpart: none in nginx OSS (`proxy_cache_purge` is nginx
//! Plus); the admin listener stands in for the `PURGE` method.

use crate::admin::upstreams::authorized;
use crate::admin::{reply, text};
use crate::live::Live;
use http::Response;
use pingora_core::protocols::http::ServerSession;

pub(crate) async fn serve(live: &Live, s: &ServerSession) -> Response<Vec<u8>> {
    let req = s.req_header();
    if req.method != http::Method::DELETE {
        return text(405, "only DELETE /cache/NAME?key=KEY");
    }
    if !authorized(live, s) {
        return text(
            401,
            "a purge needs Authorization: Bearer TOKEN (admin.token)",
        );
    }
    let name = req.uri.path().trim_start_matches("/cache/");
    let rt = live.current();
    let Some(zone) = rt.caches.get(name) else {
        return text(404, &format!("no cache named `{name}`"));
    };
    let query = req.uri.query().unwrap_or("");
    let Some(key) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
    else {
        return text(400, "which entry? DELETE /cache/NAME?key=KEY");
    };
    let removed = zone.purge(&key);
    log::info!("cache {name}: purged `{key}` ({removed} files)");
    reply(
        200,
        "application/json",
        format!("{{\"removed\":{removed}}}\n").into_bytes(),
    )
}
