//! Validation of `[assertion] keys` and `route.assertion`.

use super::raw::{RawAssertionKeys, RawRouteAssertion, S};
use super::types::{AssertionKey, AuthMode, RouteAssertion};
use super::{is_reserved_header, ConfigError, Validator};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use std::time::Duration;

/// What a route's assertion depends on outside the route.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signing {
    /// `[assertion] keys` holds at least one key.
    pub keys: bool,
    /// `server.public_url` is set: it is the assertion's `iss`.
    pub issuer: bool,
}

/// Longer would make a stolen assertion worth replaying; apps see a fresh one well before it expires.
const MAX_TTL: Duration = Duration::from_secs(3600);
const MIN_TTL: Duration = Duration::from_secs(10);

impl Validator<'_> {
    pub(super) fn assertion_keys(
        &self,
        raw: &S<RawAssertionKeys>,
    ) -> Result<Vec<AssertionKey>, ConfigError> {
        let list = &raw.get_ref().keys;
        if list.get_ref().is_empty() {
            return self.err(
                list.span(),
                "assertion.keys",
                "at least one key (`passerelle keygen --assertion` makes one)",
            );
        }
        let mut keys = Vec::new();
        for k in list.get_ref() {
            let secret = self.secret(k, "assertion.keys")?;
            let der = PrivatePkcs8KeyDer::from_pem_slice(secret.expose().as_bytes()).or_else(|_| {
                self.err(
                    k.span(),
                    "assertion.keys",
                    "not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----): make one with `passerelle keygen --assertion`, or convert with `openssl pkcs8 -topk8 -nocrypt`",
                )
            })?;
            let der = der.secret_pkcs8_der().to_vec();
            if ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
                &ring::rand::SystemRandom::new(),
            )
            .is_err()
            {
                return self.err(
                    k.span(),
                    "assertion.keys",
                    "not a P-256 (ES256) key: make one with `passerelle keygen --assertion`",
                );
            }
            let key = AssertionKey(der);
            if keys.contains(&key) {
                return self.err(k.span(), "assertion.keys", "this key is listed twice");
            }
            keys.push(key);
        }
        Ok(keys)
    }

    pub(super) fn route_assertion(
        &self,
        raw: &S<RawRouteAssertion>,
        key: &str,
        auth: AuthMode,
        signing: Signing,
    ) -> Result<RouteAssertion, ConfigError> {
        let sub = |k: &str| format!("{key}.{k}");
        if auth == AuthMode::Public {
            return self.err(
                raw.span(),
                key,
                "a public route has no session: there is no identity to sign",
            );
        }
        if !signing.keys {
            return self.err(raw.span(), key, "needs a signing key: add `[assertion] keys = [\"file:/etc/passerelle/assertion.pem\"]` (`passerelle keygen --assertion` makes one)");
        }
        if !signing.issuer {
            return self.err(
                raw.span(),
                key,
                "the assertion's issuer (`iss`) is server.public_url: set it",
            );
        }
        let r = raw.get_ref();
        let header = match &r.header {
            Some(h) => {
                let name = http::HeaderName::from_bytes(h.get_ref().as_bytes())
                    .or_else(|_| self.err(h.span(), sub("header"), "not a valid header name"))?;
                if is_reserved_header(name.as_str()) || name == http::header::AUTHORIZATION {
                    return self.err(
                        h.span(),
                        sub("header"),
                        format!("`{}` is a protocol header", h.get_ref()),
                    );
                }
                name
            }
            None => http::HeaderName::from_static("x-passerelle-assertion"),
        };
        let audience = match &r.audience {
            Some(a) if a.get_ref().chars().any(char::is_control) => {
                return self.err(a.span(), sub("audience"), "holds a control character")
            }
            Some(a) if !a.get_ref().trim().is_empty() => a.get_ref().trim().to_string(),
            Some(a) => {
                return self.err(a.span(), sub("audience"), "empty: the name the app checks in `aud`")
            }
            None => {
                return self.err(raw.span(), sub("audience"), "required: the name the app checks in `aud` (its URL, say), so an assertion made for one app is refused by another")
            }
        };
        let ttl = self.positive_duration(&r.ttl, &sub("ttl"), Duration::from_secs(60))?;
        if let Some(t) = &r.ttl {
            if ttl > MAX_TTL {
                return self.err(
                    t.span(),
                    sub("ttl"),
                    "at most 1h: a new assertion is made as soon as half of it has passed",
                );
            }
            if ttl < MIN_TTL || ttl.subsec_nanos() != 0 {
                return self.err(t.span(), sub("ttl"), "whole seconds, at least 10s: `exp` counts in seconds, and a shorter life would have assertions expire on the way");
            }
        }
        Ok(RouteAssertion {
            header,
            audience,
            ttl,
        })
    }
}
