//! Choosing the key that verifies a provider's signed JWT (signed userinfo, logout tokens): from the
//! provider's JWKS for asymmetric algorithms, the client secret for HS*. The algorithm must be one the
//! configuration allows, the key's family must match it, and a token without `kid` is accepted only
//! when exactly one key could have signed it.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header};

pub fn decoding_key(
    header: &Header,
    jwks: &JwkSet,
    client_secret: &str,
    allowed: &[Algorithm],
) -> Result<DecodingKey, String> {
    if !allowed.contains(&header.alg) {
        return Err(format!("signature algorithm {:?} not allowed", header.alg));
    }
    let alg = header.alg;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Ok(DecodingKey::from_secret(client_secret.as_bytes()));
    }
    let family = |jwk: &&Jwk| {
        matches!(
            (&jwk.algorithm, alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
        )
    };
    let mut candidates =
        jwks.keys
            .iter()
            .filter(family)
            .filter(|k| match (&header.kid, &k.common.key_id) {
                (Some(kid), Some(id)) => kid == id,
                (Some(_), None) => false,
                (None, _) => true,
            });
    let jwk = candidates
        .next()
        .ok_or_else(|| "no matching key in the provider's JWKS".to_string())?;
    if header.kid.is_none() && candidates.next().is_some() {
        return Err("JWT without kid and several candidate keys".into());
    }
    DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))
}

/// True when `aud` (a string or an array) names `client_id`.
pub fn audience_includes(aud: &serde_json::Value, client_id: &str) -> bool {
    match aud {
        serde_json::Value::String(a) => a == client_id,
        serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    }
}
