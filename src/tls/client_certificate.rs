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
            subject: rfc4514(cert.subject()),
            issuer: rfc4514(cert.issuer()),
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

/// Short names RFC 4514 uses (from RFC 4519), by OID; any other type is written as its dotted OID.
const SHORT_NAMES: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.12", "title"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// A distinguished name as RFC 4514 writes it: most specific RDN first (`CN=…,O=…,C=FR`), special characters
/// escaped, a value that is not a string as `#` and the hex of its DER. The same certificate always gives the
/// same text, whatever library wrote it: applications compare it as a string.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::ToDer;
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
                    let value = match (short, attr.as_str()) {
                        (Some(_), Ok(text)) => escape_value(text),
                        _ => match attr.attr_value().to_der_vec() {
                            Ok(der) => format!(
                                "#{}",
                                der.iter().map(|b| format!("{b:02X}")).collect::<String>()
                            ),
                            Err(_) => String::new(),
                        },
                    };
                    format!("{}={value}", short.unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §2.4: `"+,;<>\` and NUL escaped everywhere, a leading `#` or space and a trailing space too.
fn escape_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_value("Martin, Alice"), "Martin\\, Alice");
        assert_eq!(escape_value("#1 "), "\\#1\\ ");
        assert_eq!(
            escape_value("a+b;c<d>e\"f\\g"),
            "a\\+b\\;c\\<d\\>e\\\"f\\\\g"
        );
        assert_eq!(escape_value("Hélène"), "Hélène");
    }
}
