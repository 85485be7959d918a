//! The signed identity assertion (`route.assertion`): an ES256 JWT of what the route releases, for apps
//! that verify the identity rather than trust whoever can reach them.
//!
//! Headers alone are only as safe as the network path: anything that reaches the app without crossing
//! Passerelle can send them. The assertion is signed with a key only Passerelle holds; the app checks it
//! against `/.passerelle/jwks.json`, its `aud` and its `exp`.

use crate::config::{AssertionKey, RouteAssertion, RouteConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("assertion key cannot be loaded")]
    Key,
    #[error("assertion cannot be signed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The first key signs; every key is published, so that during a rotation the apps already know the next
/// key before it signs, and still know the previous one while its assertions live.
pub struct Signer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    /// The JWKS document, rendered once.
    jwks: bytes::Bytes,
}

impl Signer {
    /// `None` when no key is configured. The keys were loaded once by the configuration check.
    pub fn new(keys: &[AssertionKey], issuer: &str) -> Result<Option<Self>, AssertionError> {
        let Some(first) = keys.first() else {
            return Ok(None);
        };
        let mut published = Vec::new();
        for k in keys {
            published.push(public_jwk(k)?);
        }
        let kid = published[0]["kid"].as_str().unwrap_or_default().to_string();
        let jwks = serde_json::to_vec(&json!({ "keys": published })).unwrap_or_default();
        Ok(Some(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            kid,
            key: EncodingKey::from_ec_der(&first.0),
            jwks: jwks.into(),
        }))
    }

    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }

    /// The route's assertion for a session: `sub` and every claim the route maps to a header, in its JSON
    /// form (arrays stay arrays), with `iss`, `aud`, `iat`, `exp` and a random `jti`.
    pub fn sign(
        &self,
        route: &RouteConfig,
        assertion: &RouteAssertion,
        claims: &BTreeMap<String, Value>,
        now: u64,
    ) -> Result<(String, u64), AssertionError> {
        let exp = now + assertion.ttl.as_secs();
        let mut body = Map::new();
        if let Some(sub) = claims.get("sub") {
            body.insert("sub".into(), sub.clone());
        }
        for (_, claim) in &route.headers {
            if crate::tls::client_certificate::is_claim(claim) {
                continue;
            }
            if let Some(v) = claims.get(claim) {
                body.insert(claim.clone(), v.clone());
            }
        }
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut jti);
        // Registered claims last: a claim from the provider never replaces them.
        body.insert("iss".into(), self.issuer.clone().into());
        body.insert("aud".into(), assertion.audience.clone().into());
        body.insert("iat".into(), now.into());
        body.insert("exp".into(), exp.into());
        body.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        Ok((jsonwebtoken::encode(&header, &body, &self.key)?, exp))
    }
}

/// The public half of a key as a JWK, its `kid` the RFC 7638 thumbprint (stable across restarts and
/// replicas, so every replica names a key the same way).
fn public_jwk(key: &AssertionKey) -> Result<Value, AssertionError> {
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.0,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| AssertionError::Key)?;
    // An uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err(AssertionError::Key);
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    // RFC 7638 §3.2: the required members, in lexicographic order, without whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    Ok(
        json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256" }),
    )
}

/// A fresh P-256 key, PKCS#8 PEM: `passerelle keygen --assertion`.
pub fn generate_key_pem() -> Result<String, AssertionError> {
    let rng = ring::rand::SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| AssertionError::Key)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    fn key() -> AssertionKey {
        let pem = generate_key_pem().unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        AssertionKey(der.secret_pkcs8_der().to_vec())
    }

    fn route() -> (RouteConfig, RouteAssertion) {
        let toml = "[session]\nkeys=[\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n[[route]]\nupstream=\"http://127.0.0.1:1\"\nauth=\"public\"\n";
        let mut route = crate::config::parse(toml, "t.toml")
            .unwrap()
            .routes
            .remove(0);
        route.headers = vec![
            (
                http::HeaderName::from_static("x-auth-email"),
                "email".into(),
            ),
            (
                http::HeaderName::from_static("x-auth-roles"),
                "roles".into(),
            ),
        ];
        let assertion = RouteAssertion {
            header: http::HeaderName::from_static("x-passerelle-assertion"),
            audience: "https://app.example.gouv.fr".into(),
            ttl: std::time::Duration::from_secs(60),
        };
        (route, assertion)
    }

    #[test]
    fn signs_what_the_route_releases_and_verifies_with_the_published_key() {
        let keys = [key(), key()];
        let signer = Signer::new(&keys, "https://passerelle.example.gouv.fr/")
            .unwrap()
            .unwrap();
        let (route, assertion) = route();
        let claims: BTreeMap<String, Value> = [
            ("sub".to_string(), json!("abc")),
            ("email".to_string(), json!("helene@example.gouv.fr")),
            ("roles".to_string(), json!(["agent"])),
            ("siret".to_string(), json!("13002526500013")),
            ("iss".to_string(), json!("https://evil.example")),
        ]
        .into();
        let now = jsonwebtoken::get_current_timestamp();
        let (token, exp) = signer.sign(&route, &assertion, &claims, now).unwrap();
        assert_eq!(exp, now + 60);
        let jwks: Value = serde_json::from_slice(&signer.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = &jwks["keys"][0];
        assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
        let key =
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
                .unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["https://app.example.gouv.fr"]);
        v.set_issuer(&["https://passerelle.example.gouv.fr"]);
        let data = decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "abc");
        assert_eq!(data.claims["email"], "helene@example.gouv.fr");
        assert_eq!(data.claims["roles"], json!(["agent"]));
        assert!(
            data.claims.get("siret").is_none(),
            "not mapped by the route: not released"
        );
        assert_eq!(data.claims["iss"], "https://passerelle.example.gouv.fr");
        // The second key is published but does not verify what the first signed.
        let other = &jwks["keys"][1];
        let other = DecodingKey::from_ec_components(
            other["x"].as_str().unwrap(),
            other["y"].as_str().unwrap(),
        )
        .unwrap();
        assert!(decode::<Value>(&token, &other, &v).is_err());
    }
}
