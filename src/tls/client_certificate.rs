//! Client certificates (`server.tls.client_ca`): agents on the RIE often hold an RGS certificate on a smart
//! card. The listener asks for one without requiring it; one that is shown must chain to `client_ca` (and be
//! valid now, for client authentication) or the handshake fails. What it says becomes claims a route may
//! forward as headers (`tls_client_subject`, …) or require (`client_certificate = "required"`).
//!
//! Read once per connection at the end of the handshake, never from a request: a header can claim anything,
//! the handshake cannot.

use crate::config::ClientCa;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The claims a client certificate gives, as route headers name them.
pub const CLAIMS: [&str; 4] = [
    "tls_client_subject",
    "tls_client_issuer",
    "tls_client_serial",
    "tls_client_fingerprint",
];

pub fn is_claim(name: &str) -> bool {
    CLAIMS.contains(&name)
}

/// The verified certificate a connection's client showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// RFC 4514 distinguished name, e.g. `CN=Alice Martin,O=Ministère,C=FR`.
    pub subject: String,
    pub issuer: String,
    /// Upper-case hexadecimal, without separators, as RGS registers and CRLs list it.
    pub serial: String,
    /// SHA-256 of the DER certificate, lower-case hexadecimal: a pin on this one certificate (it changes with
    /// each renewal).
    pub fingerprint: String,
}

impl ClientIdentity {
    /// The identity in a leaf certificate rustls has already verified; `None` if it cannot be read.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(ClientIdentity {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert
                .raw_serial()
                .iter()
                .skip_while(|b| **b == 0)
                .map(|b| format!("{b:02X}"))
                .collect(),
            fingerprint: Sha256::digest(der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }

    pub fn claim(&self, name: &str) -> Option<&str> {
        match name {
            "tls_client_subject" => Some(&self.subject),
            "tls_client_issuer" => Some(&self.issuer),
            "tls_client_serial" => Some(&self.serial),
            "tls_client_fingerprint" => Some(&self.fingerprint),
            _ => None,
        }
    }
}

/// Verifies a shown certificate against `ca`, and lets a client show none (routes decide).
pub fn verifier(ca: &ClientCa) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in &ca.roots {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| e.to_string())?;
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())
}
