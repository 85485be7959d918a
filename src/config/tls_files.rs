//! Validation of `route.upstream_tls`: the CA bundle, the client certificate and key, SNI.
//!
//! Everything is read and parsed here, once: pingora's rustls connector `unwrap`s and `expect`s on
//! certificates and keys it cannot parse, so a file that reaches it must already be known good.

use super::raw::{RawUpstreamTls, S};
use super::types::{ClientCertificate, UpstreamTls};
use super::{ConfigError, Validator};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

impl Validator<'_> {
    pub(super) fn upstream_tls(
        &self,
        raw: &RawUpstreamTls,
        key: &str,
    ) -> Result<UpstreamTls, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        let ca = match &raw.ca_file {
            Some(f) => {
                let (path, pem) = self.read_file(f, &sub("ca_file"))?;
                let certs = certificates(&pem)
                    .or_else(|m| self.err(f.span(), sub("ca_file"), format!("`{path}`: {m}")))?;
                let mut roots = rustls::RootCertStore::empty();
                for der in &certs {
                    roots.add(CertificateDer::from(der.clone())).or_else(|e| {
                        self.err(
                            f.span(),
                            sub("ca_file"),
                            format!("`{path}`: a certificate cannot be a trust anchor: {e}"),
                        )
                    })?;
                }
                Some((path, certs))
            }
            None => None,
        };
        let client = match (&raw.cert, &raw.key) {
            (None, None) => None,
            (Some(c), None) => {
                return self.err(
                    c.span(),
                    sub("key"),
                    "a client certificate needs its private key: add `key`",
                )
            }
            (None, Some(k)) => {
                return self.err(
                    k.span(),
                    sub("cert"),
                    "a private key needs its client certificate: add `cert`",
                )
            }
            (Some(c), Some(k)) => {
                let (path, pem) = self.read_file(c, &sub("cert"))?;
                let chain = certificates(&pem)
                    .or_else(|m| self.err(c.span(), sub("cert"), format!("`{path}`: {m}")))?;
                let secret = self.secret(k, &sub("key"))?;
                let key_der = PrivateKeyDer::from_pem_slice(secret.expose().as_bytes())
                    .or_else(|_| {
                        self.err(
                            k.span(),
                            sub("key"),
                            "not a PEM private key (PKCS#8, EC or RSA), as `file:/path` or `env:NAME`",
                        )
                    })?;
                let key_bytes = key_der.secret_der().to_vec();
                // As pingora will read it, or it would unwrap a failure on the first connection.
                if PrivateKeyDer::try_from(key_bytes.clone()).is_err() {
                    return self.err(
                        k.span(),
                        sub("key"),
                        "a private key of a kind the TLS library cannot use",
                    );
                }
                let provider = rustls::crypto::ring::default_provider();
                rustls::sign::CertifiedKey::from_der(
                    chain.iter().cloned().map(CertificateDer::from).collect(),
                    key_der,
                    &provider,
                )
                .or_else(|e| {
                    self.err(
                        k.span(),
                        sub("key"),
                        format!("does not go with the certificate in `{path}`: {e}"),
                    )
                })?;
                Some(ClientCertificate {
                    chain,
                    key: key_bytes,
                })
            }
        };
        let sni = match &raw.sni {
            Some(s) => {
                let name = s.get_ref().trim().to_ascii_lowercase();
                if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                    return self.err(
                        s.span(),
                        sub("sni"),
                        format!("`{name}` is not a DNS name or an IP address"),
                    );
                }
                Some(name)
            }
            None => None,
        };
        let verify_hostname = match &raw.verify_hostname {
            // Against the system's roots, any public certificate for any name would do: anyone on the
            // path could present one of their own.
            Some(v) if !*v.get_ref() && ca.is_none() => {
                return self.err(v.span(), sub("verify_hostname"), "false only with `ca_file`: against the system's roots, any publicly trusted certificate for any name would be accepted")
            }
            Some(v) => *v.get_ref(),
            None => true,
        };
        Ok(UpstreamTls {
            ca,
            client,
            sni,
            verify_hostname,
        })
    }

    /// A file named by a path, with or without `file:`; its path is returned for messages.
    pub(super) fn read_file(
        &self,
        value: &S<String>,
        key: &str,
    ) -> Result<(String, Vec<u8>), ConfigError> {
        let path = value
            .get_ref()
            .strip_prefix("file:")
            .unwrap_or(value.get_ref())
            .to_string();
        match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) => self.err(value.span(), key, format!("cannot read `{path}`: {e}")),
        }
    }
}

/// Every certificate of a PEM bundle, each one parsed (x509-parser, as pingora will) so none can make it
/// panic later.
pub(super) fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| format!("not a readable PEM file: {e}"))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("a certificate cannot be parsed: {e}"))?;
        out.push(der.to_vec());
    }
    if out.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(out)
}
