//! TLS for the manager link: rustls with the ring provider, webpki roots, and an optional
//! SHA-256 pin of the manager's leaf certificate.
//!
//! - No pin: the usual webpki verification (chain to a public root, host name).
//! - Pin: the same verification, and the leaf must also match the pin.
//! - Pin + `accept_self_signed_cert`: chain and name are not checked, the pin alone decides
//!   (that is what a pin is for). The handshake signature is still verified, so whoever
//!   answers must hold the pinned certificate's private key.
//!
//! Verification is never skipped without a pin: config validation refuses
//! `accept_self_signed_cert` without `cert_fingerprint`.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::secret::ct_eq;

#[derive(Debug)]
pub enum TlsError {
    Setup(rustls::Error),
    Roots(rustls::client::VerifierBuilderError),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Setup(e) => write!(f, "TLS setup: {e}"),
            TlsError::Roots(e) => write!(f, "TLS roots: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `AA:BB:…` for log lines.
pub fn fingerprint_hex(fp: &[u8]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client config for `manager` settings.
pub fn client_config(
    pin: Option<[u8; 32]>,
    accept_self_signed: bool,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(TlsError::Roots)?;
    let config = match pin {
        None => builder.with_webpki_verifier(webpki).with_no_client_auth(),
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin,
                chain: (!accept_self_signed).then_some(webpki),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    /// The webpki verifier, unless the pin alone is trusted (self-signed manager).
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let got = sha256(end_entity.as_ref());
        if ct_eq(&got, &self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            // A fingerprint is public: logging it helps the operator fix a rotated cert.
            tracing::warn!(
                presented = %fingerprint_hex(&got),
                "manager certificate does not match cert_fingerprint"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build() {
        client_config(None, false).unwrap();
        client_config(Some([1; 32]), false).unwrap();
        client_config(Some([1; 32]), true).unwrap();
        assert_eq!(fingerprint_hex(&[0xab, 0x01]), "AB:01");
    }
}
