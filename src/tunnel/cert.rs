//! The direct-mode server's certificate: self-signed (ECDSA P-256), made once and kept in the
//! data directory (`tunnel-cert.pem`, `tunnel-key.pem`) so its fingerprint, which the dialling
//! edge pins in `tunnel_tls.cert_fingerprints`, survives restarts and upgrades.
//!
//! The fingerprint is public and logged at info when the certificate is loaded or made; the
//! key is written 0600 and never logged.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::store::write_atomic;
use crate::net::tls::{fingerprint_hex, sha256};

pub const CERT_FILE: &str = "tunnel-cert.pem";
pub const KEY_FILE: &str = "tunnel-key.pem";
/// The name in the certificate: the SNI the direct client sends (the spec's `bilbycast-edge`).
pub const SERVER_NAME: &str = "bilbycast-edge";

/// The server's certificate and key, ready for rustls.
#[derive(Debug)]
pub struct ServerCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the DER certificate: what the other edge pins.
    pub fingerprint: [u8; 32],
}

impl Clone for ServerCert {
    fn clone(&self) -> Self {
        ServerCert {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

#[derive(Debug)]
pub enum CertError {
    /// A file could not be read or written.
    Io { path: PathBuf, error: io::Error },
    /// A file is there but does not hold a PEM certificate or key.
    Pem { path: PathBuf, error: String },
    /// rcgen could not make the certificate.
    Generate(rcgen::Error),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            CertError::Pem { path, error } => {
                write!(f, "{}: not a PEM file ({error})", path.display())
            }
            CertError::Generate(e) => write!(f, "making the tunnel certificate: {e}"),
        }
    }
}

impl std::error::Error for CertError {}

/// Load the certificate kept in `data_dir`, or make one and keep it there. A half-written
/// pair (one file without the other) is replaced; a pair that is there but unreadable is an
/// error, not silently replaced: the other edge pins its fingerprint.
pub fn load_or_create(data_dir: &Path) -> Result<ServerCert, CertError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    let (cert, made) = if cert_path.exists() && key_path.exists() {
        (load(&cert_path, &key_path)?, false)
    } else {
        (create(data_dir, &cert_path, &key_path)?, true)
    };
    tracing::info!(
        fingerprint = %fingerprint_hex(&cert.fingerprint),
        path = %cert_path.display(),
        "{} direct tunnel certificate (pin this fingerprint on the dialling edge)",
        if made { "made a new" } else { "loaded the" }
    );
    Ok(cert)
}

fn load(cert_path: &Path, key_path: &Path) -> Result<ServerCert, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| CertError::Io {
            path: path.to_owned(),
            error,
        })
    };
    let pem = |path: &Path, error: rustls::pki_types::pem::Error| CertError::Pem {
        path: path.to_owned(),
        error: error.to_string(),
    };
    let cert = CertificateDer::from_pem_slice(&read(cert_path)?).map_err(|e| pem(cert_path, e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| pem(key_path, e))?;
    Ok(ServerCert {
        fingerprint: sha256(cert.as_ref()),
        cert,
        key,
    })
}

fn create(data_dir: &Path, cert_path: &Path, key_path: &Path) -> Result<ServerCert, CertError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| CertError::Io { path, error }
    };
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(CertError::Generate)?;
    let params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(CertError::Generate)?;
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;
    // The key first: a crash between the two leaves no certificate, so the next start
    // makes a fresh pair instead of loading a certificate without its key.
    write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io(key_path))?;
    write_atomic(cert_path, cert.pem().as_bytes(), 0o644).map_err(io(cert_path))?;
    Ok(ServerCert {
        fingerprint: sha256(cert.der().as_ref()),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory of this test's own, removed on drop.
    pub(crate) struct Dir(pub PathBuf);
    impl Dir {
        pub(crate) fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("quoll-tunnel-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn made_once_then_reloaded_with_the_same_fingerprint() {
        let dir = Dir::new("cert-once");
        let first = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.cert, again.cert);
        assert_eq!(first.key.secret_der(), again.key.secret_der());
        // The fingerprint is logged, the key never.
        let key_pem = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let log = crate::testing::capture_logs(|| {
            load_or_create(dir.path()).unwrap();
        });
        assert!(log.contains(&fingerprint_hex(&first.fingerprint)), "{log}");
        assert!(!log.contains(&body[..40]), "{log}");
    }

    #[test]
    fn a_damaged_file_is_an_error_and_a_lone_certificate_is_replaced() {
        let dir = Dir::new("cert-damaged");
        let first = load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(CertError::Pem { .. })
        ));
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let fresh = load_or_create(dir.path()).unwrap();
        assert_ne!(fresh.fingerprint, first.fingerprint);
    }
}
