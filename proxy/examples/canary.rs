//! Header-based canary routing: requests carrying a header (e.g.
//! `X-Canary: always`) go to the canary group; everything else follows the
//! route. The hook chooses the group; Ferry still balances, retries and
//! buffers within it.
//!
//! ```sh
//! cargo run -p ferry --example canary -- -c proxy/examples/canary.yaml
//! curl -H 'X-Canary: always' localhost:8080/
//! ```

use ferry::{async_trait, PeerChoice, ProxyHttp, Session};
use serde::Deserialize;

/// The `canary:` section of the YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The request header that asks for the canary.
    header: String,
    /// The value that does (e.g. `always`).
    value: String,
    /// The upstream group that serves it.
    group: String,
}

struct Canary(Settings);

#[async_trait]
impl ProxyHttp for Canary {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        s: &mut Session,
        _: &mut (),
    ) -> ferry::pingora_error::Result<PeerChoice> {
        let wants = s
            .req_header()
            .headers
            .get(self.0.header.as_str())
            .is_some_and(|v| v.as_bytes() == self.0.value.as_bytes());
        Ok(if wants {
            PeerChoice::Group(self.0.group.clone())
        } else {
            PeerChoice::Route
        })
    }
}

fn main() {
    // The program's own command line: `canary --help` and `canary -V` say
    // so, beside Ferry's flags.
    let code = ferry::Program::new("canary")
        .version("1.0.0")
        .about("Header-based canary routing on Ferry")
        .default_conf("proxy/examples/canary.yaml")
        .settings("canary")
        .run(|mut start: ferry::Start<Settings>| {
            let s = start.settings.take().unwrap_or(Settings {
                header: "X-Canary".into(),
                value: "always".into(),
                group: "canary".into(),
            });
            start.require_group(&s.group, "canary.group")?;
            Ok(Canary(s))
        });
    std::process::exit(code);
}
