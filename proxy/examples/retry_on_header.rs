//! A hook that forces a retry: an upstream answering with a header of our
//! choosing (here `X-Retry-Elsewhere: 1`, e.g. a server draining itself)
//! sends the request to the next server, whatever its status, as long as a
//! try is left. The header is seen before anything goes to the client, the
//! only moment a retry is possible.
//!
//! ```sh
//! cargo run -p ferry --example retry_on_header -- -c proxy/examples/retry_on_header.yaml
//! ```

use ferry::pingora_http::ResponseHeader;
use ferry::{async_trait, ProxyHttp, RetryDecision, Session};

struct RetryOnHeader;

#[async_trait]
impl ProxyHttp for RetryOnHeader {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_response_filter(
        &self,
        _: &mut Session,
        resp: &mut ResponseHeader,
        _: &mut (),
    ) -> ferry::pingora_error::Result<RetryDecision> {
        Ok(
            if resp
                .headers
                .get("x-retry-elsewhere")
                .is_some_and(|v| v == "1")
            {
                RetryDecision::Retry
            } else {
                RetryDecision::Default
            },
        )
    }
}

fn main() {
    std::process::exit(ferry::run(
        RetryOnHeader,
        "proxy/examples/retry_on_header.yaml",
    ));
}
