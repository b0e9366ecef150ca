//! The baseline: a bare Pingora 0.9 proxy that passes every request to one
//! backend (Pingora's own streaming loop, keepalive pool, no retries, no
//! buffering). `pingora-passthrough LISTEN BACKEND [TLS_LISTEN CERT KEY]`:
//! the optional listener speaks TLS with HTTP/2 (ALPN), for the h2load run.

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Passthrough {
    backend: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.backend.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let (listen, backend, more) = ferry_bench::args("pingora-passthrough");
    // Pingora's default runtime (work stealing), as a Pingora user gets it.
    let mut server = ferry_bench::one_thread_server("pingora-passthrough", true);
    let mut svc = pingora_proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            backend: backend.clone(),
        },
    );
    svc.add_tcp(&listen);
    if let [tls_listen, cert, key] = more.as_slice() {
        let Ok(mut tls) = pingora_core::listeners::tls::TlsSettings::intermediate(cert, key) else {
            eprintln!("cannot load {cert} / {key}");
            std::process::exit(2);
        };
        tls.enable_h2();
        svc.add_tls_with_settings(tls_listen, None, tls);
    }
    server.add_service(svc);
    server.run_forever();
}
