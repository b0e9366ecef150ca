//! Self-signed certificates made for one test (rcgen), written as PEM files
//! Ferry can read, and the rustls pieces a test backend or client needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl SelfSigned {
    /// A certificate for `names`, its files in `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> SelfSigned {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        let (cert_pem, key_pem) = (ck.cert.pem(), ck.key_pair.serialize_pem());
        let tag = std::process::id();
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let cert_path = dir.join(format!("cert-{tag}-{n}.pem"));
        let key_path = dir.join(format!("key-{tag}-{n}.pem"));
        std::fs::write(&cert_path, &cert_pem).expect("write cert");
        std::fs::write(&key_path, &key_pem).expect("write key");
        SelfSigned {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
        }
    }

    /// A TLS acceptor serving this certificate (HTTP/1.1).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = rustls_pemfile_certs(&self.cert_pem);
        let key = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key")
        };
        let mut conf = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        conf.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(conf))
    }

    /// A TLS client that trusts this certificate (HTTP/1.1), for a test
    /// that speaks TLS over a stream it wrote to first.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&self.cert_pem) {
            roots.add(c).expect("root certificate");
        }
        let mut conf = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        conf.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(conf))
    }

    /// The certificate for a reqwest client to trust.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("certificate")
    }
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}
