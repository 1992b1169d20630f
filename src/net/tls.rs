//! TLS client trust for every link that dials out over TLS: the manager link, HLS over
//! HTTPS, RTMPS, and the tunnels' QUIC. rustls with the ring provider and webpki roots,
//! plus SHA-256 pins of the peer's leaf certificate.
//!
//! One verifier, four rules ([`ServerTrust`]):
//! - `WebPki`: chain to a public root and name the host.
//! - `WebPkiAndPin`: the same, and the leaf must also be one of the pins (manager with a pin).
//! - `PinOrWebPki`: the leaf is one of the pins, or the chain is good (`tunnel_tls`, RTMPS
//!   with a pin): relays and private ingest points usually present a self-signed cert.
//! - `PinOnly`: chain and name are not checked, the pin alone decides (manager
//!   `accept_self_signed_cert`).
//! - `Insecure`: anything (`tunnel_tls.insecure_skip_verify`; the caller raises the event).
//!
//! The handshake signature is verified under every rule, so whoever answers must hold the
//! private key of the certificate it presented. Config validation refuses
//! `accept_self_signed_cert` without `cert_fingerprint`, so the manager never runs `Insecure`.

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

/// How a server's certificate is trusted; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    WebPki,
    WebPkiAndPin(Vec<[u8; 32]>),
    PinOrWebPki(Vec<[u8; 32]>),
    PinOnly(Vec<[u8; 32]>),
    Insecure,
}

impl ServerTrust {
    /// The manager's rule: no pin is webpki; a pin is checked on top of the chain, or alone
    /// when the manager is self-signed.
    pub fn manager(pin: Option<[u8; 32]>, accept_self_signed: bool) -> ServerTrust {
        match (pin, accept_self_signed) {
            (None, _) => ServerTrust::WebPki,
            (Some(p), false) => ServerTrust::WebPkiAndPin(vec![p]),
            (Some(p), true) => ServerTrust::PinOnly(vec![p]),
        }
    }

    /// Pins if any, else webpki (tunnels, RTMPS): a pinned cert need not chain anywhere.
    pub fn pins_or_webpki(pins: Vec<[u8; 32]>, insecure: bool) -> ServerTrust {
        match (insecure, pins.is_empty()) {
            (true, _) => ServerTrust::Insecure,
            (false, true) => ServerTrust::WebPki,
            (false, false) => ServerTrust::PinOrWebPki(pins),
        }
    }
}

/// A rustls client config that trusts servers by `trust`. Callers set their ALPN.
pub fn client_config(trust: &ServerTrust) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier(trust)?)
        .with_no_client_auth())
}

fn verifier(trust: &ServerTrust) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let provider = provider();
    let roots = Arc::new(RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(TlsError::Roots)?;
    let (pins, chain) = match trust {
        ServerTrust::WebPki => return Ok(webpki),
        ServerTrust::WebPkiAndPin(p) => (p.clone(), Chain::Required(webpki)),
        ServerTrust::PinOrWebPki(p) => (p.clone(), Chain::Alternative(webpki)),
        ServerTrust::PinOnly(p) => (p.clone(), Chain::Ignored),
        ServerTrust::Insecure => (Vec::new(), Chain::Ignored),
    };
    Ok(Arc::new(PinnedVerifier {
        insecure: matches!(trust, ServerTrust::Insecure),
        pins,
        chain,
        algorithms: provider.signature_verification_algorithms,
    }))
}

#[derive(Debug)]
enum Chain {
    /// The chain must verify and the leaf must be pinned.
    Required(Arc<WebPkiServerVerifier>),
    /// A pinned leaf is enough; otherwise the chain must verify.
    Alternative(Arc<WebPkiServerVerifier>),
    /// Only the pins decide.
    Ignored,
}

#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<[u8; 32]>,
    chain: Chain,
    /// Accept any leaf (signatures are still checked).
    insecure: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn pinned(&self, leaf: &CertificateDer<'_>) -> bool {
        let got = sha256(leaf.as_ref());
        // Every pin is compared, so the time does not say which one matched.
        self.pins
            .iter()
            .fold(false, |hit, pin| ct_eq(&got, pin) | hit)
    }
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
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let verify_chain = |chain: &WebPkiServerVerifier| {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        match &self.chain {
            Chain::Required(chain) => {
                verify_chain(chain)?;
            }
            Chain::Alternative(chain) => {
                if !self.pinned(end_entity) {
                    return verify_chain(chain);
                }
            }
            Chain::Ignored => {}
        }
        if self.pinned(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            // A fingerprint is public: logging it helps the operator fix a rotated cert.
            tracing::warn!(
                presented = %fingerprint_hex(&sha256(end_entity.as_ref())),
                "server certificate does not match cert_fingerprint(s)"
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
        for pin in [None, Some([1; 32])] {
            for self_signed in [false, true] {
                client_config(&ServerTrust::manager(pin, self_signed)).unwrap();
            }
        }
        client_config(&ServerTrust::pins_or_webpki(vec![[2; 32]], false)).unwrap();
        client_config(&ServerTrust::pins_or_webpki(Vec::new(), true)).unwrap();
    }

    fn verdict(trust: ServerTrust, cert: &CertificateDer<'static>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("relay").unwrap();
        verifier(&trust)
            .unwrap()
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn self_signed_is_trusted_by_its_pin_only() {
        let key = rcgen::generate_simple_self_signed(vec!["relay".into()]).unwrap();
        let cert = key.cert.der().clone();
        let pin = sha256(cert.as_ref());
        assert!(verdict(ServerTrust::PinOrWebPki(vec![[9; 32], pin]), &cert).is_ok());
        assert!(verdict(ServerTrust::PinOnly(vec![pin]), &cert).is_ok());
        assert!(verdict(ServerTrust::Insecure, &cert).is_ok());
        // No public root signed it: the chain fails wherever it is asked for.
        for trust in [
            ServerTrust::WebPki,
            ServerTrust::WebPkiAndPin(vec![pin]),
            ServerTrust::PinOrWebPki(vec![[9; 32]]),
            ServerTrust::PinOnly(vec![[9; 32]]),
        ] {
            assert!(verdict(trust.clone(), &cert).is_err(), "{trust:?}");
        }
        assert_eq!(fingerprint_hex(&[0xab, 0x01]), "AB:01");
    }
}
