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
        self.acceptor_alpn(b"http/1.1")
    }

    /// A TLS acceptor serving this certificate, offering `alpn` (`b"h2"`
    /// for an HTTP/2 or gRPC server).
    pub fn acceptor_alpn(&self, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
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
        conf.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(conf))
    }

    /// As [`SelfSigned::acceptor`], refusing a client that does not present
    /// a certificate `client` signed (mutual TLS).
    pub fn acceptor_requiring(&self, client: &SelfSigned) -> tokio_rustls::TlsAcceptor {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&client.cert_pem) {
            roots.add(c).expect("client root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("client verifier");
        let key = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key")
        };
        let mut conf = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(rustls_pemfile_certs(&self.cert_pem), key)
            .expect("server config");
        conf.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(conf))
    }

    /// A TLS client that trusts this certificate (HTTP/1.1), for a test
    /// that speaks TLS over a stream it wrote to first.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        connector(&[self], b"http/1.1")
    }

    /// The certificate itself (DER), as a client receives it.
    pub fn der(&self) -> Vec<u8> {
        rustls_pemfile_certs(&self.cert_pem)
            .first()
            .map(|c| c.to_vec())
            .expect("a certificate")
    }

    /// Write this certificate and key over `other`'s files, in place (as a
    /// renewal does): same paths, new content.
    pub fn replace_files_of(&self, other: &SelfSigned) {
        std::fs::write(&other.cert_path, &self.cert_pem).expect("write cert");
        std::fs::write(&other.key_path, &self.key_pem).expect("write key");
    }

    /// The certificate for a reqwest client to trust.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("certificate")
    }
}

/// A TLS client trusting any of `trusted`, offering `alpn`.
pub fn connector(trusted: &[&SelfSigned], alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for t in trusted {
        for c in rustls_pemfile_certs(&t.cert_pem) {
            roots.add(c).expect("root certificate");
        }
    }
    let mut conf = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    conf.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(conf))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// A new TLS connection to `addr` for `localhost`, trusting any of
/// `trusted`; and the certificate (DER) the server sent in its handshake.
pub async fn handshake(
    addr: std::net::SocketAddr,
    trusted: &[&SelfSigned],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let connector = connector(trusted, b"http/1.1");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(crate::WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("the server's certificate");
    (tls, served)
}

/// `GET path` on an open HTTP/1.1 connection (kept open): the response's
/// status and body, read by its `Content-Length` (bounded by [`crate::WAIT`]).
pub async fn get_on<S>(stream: &mut S, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(crate::WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(whole) = whole_response(&bytes) {
                return Some(whole);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().flatten().expect("a whole response")
}

/// Status and body once `bytes` hold a whole response with a `Content-Length`.
fn whole_response(bytes: &[u8]) -> Option<(u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(bytes).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let length: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())?;
    let body = bytes.get(head..head + length)?;
    Some((resp.code?, String::from_utf8_lossy(body).into_owned()))
}
