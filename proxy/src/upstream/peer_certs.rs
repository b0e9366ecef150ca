//! The certificates a run-time server is reached with: its own CA file (the
//! roots its certificate must chain to) and a client certificate and key
//! (mutual TLS), read from PEM files, checked, and kept until a file changes.
//!
//! nginx counterpart: `proxy_ssl_trusted_certificate` and
//! `proxy_ssl_certificate` / `proxy_ssl_certificate_key`, there per location,
//! here per server a program names at run time.
//!
//! Pingora's connector takes them per peer (`PeerOptions::ca`,
//! `HttpPeer::client_cert_key`) but panics on a certificate its parser
//! refuses and on a key rustls cannot type: every certificate and key is
//! therefore parsed here first, and a file that does not load is the try's
//! error, said with its path.

use pingora_core::protocols::tls::CaType;
use pingora_core::tls::PrivateKeyDer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use x509_parser::pem::Pem;

/// What a run-time server's TLS adds to the connector's settings.
#[derive(Default)]
pub(crate) struct PeerCerts {
    /// Roots for this server alone (instead of the system's).
    pub ca: Option<Arc<CaType>>,
    /// The client certificate chain and key presented to it.
    pub client: Option<Arc<CertKey>>,
    /// Tells pools apart: Pingora's pool key has the client certificate but
    /// not the CA, so a connection verified with one CA file is never
    /// handed to a request that named another.
    pub pool_key: u64,
}

/// The files a run-time server names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CertFiles {
    pub ca: Option<PathBuf>,
    /// Certificate chain, then key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Size and modification time of each file: a change reads them again.
type Stamp = Vec<(u64, Option<SystemTime>)>;

/// Loaded certificates by the files they came from.
#[derive(Default)]
pub(crate) struct CertCache {
    loaded: Mutex<HashMap<CertFiles, (Stamp, Arc<PeerCerts>)>>,
}

/// At most this many sets of files are kept (run-time servers are a
/// program's, and a program could name a new file per request).
const KEPT: usize = 64;

impl CertCache {
    /// The certificates of `files`, read again when a file changed.
    pub(crate) fn get(&self, files: &CertFiles) -> Result<Arc<PeerCerts>, String> {
        let stamp = stamp(files)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, certs)) = loaded.get(files) {
            if *s == stamp {
                return Ok(certs.clone());
            }
        }
        let certs = Arc::new(load(files)?);
        if loaded.len() >= KEPT {
            loaded.clear();
        }
        loaded.insert(files.clone(), (stamp, certs.clone()));
        Ok(certs)
    }
}

fn stamp(files: &CertFiles) -> Result<Stamp, String> {
    let paths = files
        .ca
        .iter()
        .chain(files.client.iter().flat_map(|(c, k)| [c, k]));
    paths
        .map(|p| {
            let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((m.len(), m.modified().ok()))
        })
        .collect()
}

fn load(files: &CertFiles) -> Result<PeerCerts, String> {
    let ca = match &files.ca {
        Some(p) => Some(ca_file(p)?),
        None => None,
    };
    let client = match &files.client {
        Some((c, k)) => Some(Arc::new(client_cert(c, k)?)),
        None => None,
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.ca.hash(&mut h);
    Ok(PeerCerts {
        ca,
        client,
        pool_key: if files.ca.is_some() { h.finish() } else { 0 },
    })
}

/// Every certificate of a PEM file, each parsed as Pingora will parse it.
fn certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let at = |m: String| format!("{}: {m}", path.display());
    let data = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    let mut ders = Vec::new();
    for pem in Pem::iter_from_buffer(&data) {
        let pem = pem.map_err(|e| at(format!("not PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        x509_parser::parse_x509_certificate(&pem.contents)
            .map_err(|e| at(format!("a certificate that does not parse: {e}")))?;
        ders.push(pem.contents);
    }
    if ders.is_empty() {
        return Err(at("no certificate".into()));
    }
    Ok(ders)
}

fn ca_file(path: &Path) -> Result<Arc<CaType>, String> {
    let roots: Vec<WrappedX509> = certificates(path)?
        .into_iter()
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect();
    Ok(Arc::from(roots.into_boxed_slice()))
}

fn client_cert(cert: &Path, key: &Path) -> Result<CertKey, String> {
    let chain = certificates(cert)?;
    let at = |m: &str| format!("{}: {m}", key.display());
    let data = std::fs::read(key).map_err(|e| at(&e.to_string()))?;
    let der = Pem::iter_from_buffer(&data)
        .filter_map(|p| p.ok())
        .find(|p| p.label.ends_with("PRIVATE KEY"))
        .map(|p| p.contents)
        .ok_or_else(|| at("no private key"))?;
    // The connector types the key this way, and unwraps the result.
    PrivateKeyDer::try_from(der.clone()).map_err(at)?;
    Ok(CertKey::new(chain, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-peer-certs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_that_does_not_load_is_said_with_its_path() {
        let d = dir();
        let junk = d.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let empty = d.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let cache = CertCache::default();
        for (p, says) in [
            (&junk, "does not parse"),
            (&empty, "no certificate"),
            (&d.join("absent.pem"), "absent.pem"),
        ] {
            let files = CertFiles {
                ca: Some(p.clone()),
                client: None,
            };
            let e = cache.get(&files).err().unwrap_or_default();
            assert!(e.contains(says) && e.contains(&*p.to_string_lossy()), "{e}");
        }
        let files = CertFiles {
            ca: None,
            client: Some((junk.clone(), empty.clone())),
        };
        assert!(cache.get(&files).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
