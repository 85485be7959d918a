//! The userinfo call, as JSON or as a signed JWT.
//!
//! openidconnect 4 verifies signed userinfo with RS256 only and without the client secret, while
//! ProConnect signs it with ES256 by default, or RS256, or HS256 keyed by the client secret. So the
//! signature is checked here with the `jsonwebtoken` crate against the provider's JWKS (or the client
//! secret for HS*), and the claims rules of OIDC Core §5.3.2 are applied: `sub` equal to the id_token's,
//! `iss` and `aud` ours when present.

use super::error::LoginError;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

/// Larger userinfo answers are refused: no federation sends this much about one person.
const MAX_BODY: usize = 256 * 1024;

pub struct UserInfoCheck<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub jwks: &'a JwkSet,
    pub expected_sub: &'a str,
    pub allowed_algs: &'a [Algorithm],
}

pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    access_token: &str,
    check: &UserInfoCheck<'_>,
) -> Result<Map<String, Value>, LoginError> {
    let fail = |m: String| LoginError::UserInfo(m);
    let unavailable = |m: String| LoginError::UserInfoUnavailable(m);
    let mut response = http
        .get(endpoint)
        .bearer_auth(access_token)
        .header("Accept", "application/jwt, application/json")
        .send()
        .await
        .map_err(|e| unavailable(super::error_chain(&e)))?;
    let status = response.status();
    let content_type = crate::media_type::media_type(response.headers()).unwrap_or_default();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable(super::error_chain(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(fail("response too large".into()));
        }
    }
    if !status.is_success() {
        return Err(unavailable(format!("HTTP {status}")));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| fail("response is not UTF-8".into()))?
        .trim();
    // ProConnect's userinfo route labels every answer application/jwt, JSON included (federations.md §4):
    // the body's shape decides.
    let claims = if text.starts_with('{') {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(fail(format!(
                    "response is not a valid JSON object (content type `{content_type}`)"
                )))
            }
        }
    } else if text.split('.').count() == 3 {
        verify_jwt(text, check)?
    } else {
        return Err(fail(format!(
            "response is neither a JSON object nor a JWT (content type `{content_type}`)"
        )));
    };
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if sub == check.expected_sub => Ok(claims),
        Some(_) => Err(fail("sub differs from the id_token's".into())),
        None => Err(fail("sub missing".into())),
    }
}

fn verify_jwt(token: &str, check: &UserInfoCheck<'_>) -> Result<Map<String, Value>, LoginError> {
    let fail = |m: String| LoginError::UserInfo(m);
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| fail(format!("bad JWT header: {e}")))?;
    let key =
        super::jws::decoding_key(&header, check.jwks, check.client_secret, check.allowed_algs)
            .map_err(fail)?;
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| fail(format!("signature rejected: {e}")))?;
    let claims = data.claims;
    if let Some(iss) = claims.get("iss") {
        if iss.as_str() != Some(check.issuer) {
            return Err(fail("iss is not the provider's issuer".into()));
        }
    }
    if let Some(aud) = claims.get("aud") {
        if !super::jws::audience_includes(aud, check.client_id) {
            return Err(fail("aud does not include our client_id".into()));
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        if exp + 60 < chrono::Utc::now().timestamp() {
            return Err(fail("expired".into()));
        }
    }
    Ok(claims)
}

/// The signature algorithms a provider may use for userinfo, from the configured id_token list.
pub fn algorithms(names: &[String]) -> Vec<Algorithm> {
    names
        .iter()
        .filter_map(|n| n.parse::<Algorithm>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn check<'a>(jwks: &'a JwkSet, algs: &'a [Algorithm]) -> UserInfoCheck<'a> {
        UserInfoCheck {
            issuer: "https://op.example/api/v2",
            client_id: "client",
            client_secret: "s3cret",
            jwks,
            expected_sub: "abc",
            allowed_algs: algs,
        }
    }

    fn hs256(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_userinfo_is_verified_with_the_client_secret() {
        let jwks = JwkSet { keys: vec![] };
        let algs = [Algorithm::HS256, Algorithm::ES256];
        let good = hs256(
            json!({"sub": "abc", "iss": "https://op.example/api/v2", "aud": "client", "siret": "1"}),
            "s3cret",
        );
        assert_eq!(
            verify_jwt(&good, &check(&jwks, &algs)).unwrap()["siret"],
            json!("1")
        );
        let forged = hs256(json!({"sub": "abc"}), "other");
        assert!(verify_jwt(&forged, &check(&jwks, &algs)).is_err());
        let wrong_iss = hs256(
            json!({"sub": "abc", "iss": "https://evil.example"}),
            "s3cret",
        );
        assert!(verify_jwt(&wrong_iss, &check(&jwks, &algs)).is_err());
        let wrong_aud = hs256(json!({"sub": "abc", "aud": ["someone-else"]}), "s3cret");
        assert!(verify_jwt(&wrong_aud, &check(&jwks, &algs)).is_err());
    }

    #[test]
    fn disallowed_algorithms_and_unsigned_tokens_are_refused() {
        let jwks = JwkSet { keys: vec![] };
        let token = hs256(json!({"sub": "abc"}), "s3cret");
        assert!(verify_jwt(&token, &check(&jwks, &[Algorithm::ES256])).is_err());
        // alg "none": header {"alg":"none"} . payload . empty signature
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhYmMifQ.";
        assert!(verify_jwt(none, &check(&jwks, &[Algorithm::HS256, Algorithm::ES256])).is_err());
    }
}
