//! OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6: validating a `logout_token`.
//!
//! It is verified like an id_token (signature from the provider's keys, `iss`, `aud`, `iat`, `exp` when
//! present), and must look like a logout token and nothing else: the back-channel-logout event, a `sid`
//! or a `sub`, a `jti` for replay detection, and no `nonce`, so an id_token can never be replayed here.
//! `typ` is accepted as `logout+jwt` (recommended by §2.4) or absent, and refused otherwise: an access
//! token in JWT form (`at+jwt`) is not a logout token.

use super::jws::{audience_includes, decoding_key};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is a few hundred bytes; a much larger one is not read.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Tolerated clock difference with the provider.
const SKEW: i64 = 60;
/// How old a token without `exp` may be: §2.6 leaves it to the RP; a logout is sent at once.
const MAX_AGE: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Until when the `jti` must be remembered to refuse a replay.
    pub replay_until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("logout_token is not a JWT: {0}")]
    Malformed(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("iss is not the provider's issuer")]
    Issuer,
    #[error("aud does not include our client_id")]
    Audience,
    #[error("iat missing, or in the future")]
    IssuedAt,
    #[error("expired")]
    Expired,
    #[error("events does not hold the back-channel-logout event")]
    Events,
    #[error("neither sid nor sub")]
    NoSubject,
    #[error("a logout token must not contain a nonce")]
    Nonce,
    #[error("jti missing")]
    Jti,
    #[error("typ `{0}` is not logout+jwt")]
    Type(String),
}

pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub jwks: &'a JwkSet,
    pub allowed_algs: &'a [Algorithm],
    /// Seconds since the epoch.
    pub now: i64,
}

/// The `iss` a token claims, unverified: only to pick which provider's keys verify it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(String::from)
}

pub fn verify(token: &str, expected: &Expected<'_>) -> Result<LogoutToken, LogoutTokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(LogoutTokenError::Malformed("too large".into()));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| LogoutTokenError::Malformed(e.to_string()))?;
    if let Some(typ) = &header.typ {
        let t = typ.to_ascii_lowercase();
        if t != "logout+jwt" && t != "application/logout+jwt" && t != "jwt" {
            return Err(LogoutTokenError::Type(typ.chars().take(32).collect()));
        }
    }
    let key = decoding_key(
        &header,
        expected.jwks,
        expected.client_secret,
        expected.allowed_algs,
    )
    .map_err(LogoutTokenError::Signature)?;
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| LogoutTokenError::Signature(e.to_string()))?
        .claims;
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(LogoutTokenError::Issuer);
    }
    if !claims
        .get("aud")
        .is_some_and(|a| audience_includes(a, expected.client_id))
    {
        return Err(LogoutTokenError::Audience);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LogoutTokenError::IssuedAt)?;
    if iat > expected.now + SKEW {
        return Err(LogoutTokenError::IssuedAt);
    }
    let replay_until = match claims.get("exp") {
        Some(exp) => {
            let exp = exp.as_i64().ok_or(LogoutTokenError::Expired)?;
            if exp + SKEW < expected.now {
                return Err(LogoutTokenError::Expired);
            }
            exp + SKEW
        }
        None => {
            if iat + MAX_AGE < expected.now {
                return Err(LogoutTokenError::Expired);
            }
            iat + MAX_AGE + SKEW
        }
    };
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    match claims.get("events") {
        Some(Value::Object(events)) if matches!(events.get(EVENT), Some(Value::Object(_))) => {}
        _ => return Err(LogoutTokenError::Events),
    }
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 1024)
            .map(String::from)
    };
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    let jti = text("jti").ok_or(LogoutTokenError::Jti)?;
    Ok(LogoutToken {
        sub,
        sid,
        jti,
        replay_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const ISS: &str = "https://op.example/realms/nc";
    const SECRET: &str = "client-secret-for-hs256-tests-0123";

    fn token(claims: Value, typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(String::from);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn good(now: i64) -> Value {
        json!({
            "iss": ISS, "aud": "client", "iat": now, "exp": now + 120, "jti": "j-1",
            "sid": "sid-1", "events": { EVENT: {} }
        })
    }

    fn check(t: &str, now: i64) -> Result<LogoutToken, LogoutTokenError> {
        let jwks = JwkSet { keys: Vec::new() };
        verify(
            t,
            &Expected {
                issuer: ISS,
                client_id: "client",
                client_secret: SECRET,
                jwks: &jwks,
                allowed_algs: &[Algorithm::HS256],
                now,
            },
        )
    }

    #[test]
    fn a_well_formed_token_passes() {
        let now = 1_900_000_000;
        let ok = check(&token(good(now), Some("logout+jwt")), now).unwrap();
        assert_eq!(ok.sid.as_deref(), Some("sid-1"));
        assert_eq!(ok.jti, "j-1");
        assert!(check(&token(good(now), None), now).is_ok());
    }

    #[test]
    fn every_rule_refuses_its_case() {
        let now = 1_900_000_000;
        let with = |f: &dyn Fn(&mut Map<String, Value>)| {
            let mut v = good(now);
            f(v.as_object_mut().unwrap());
            token(v, Some("logout+jwt"))
        };
        let cases: Vec<(String, LogoutTokenError)> = vec![
            (
                with(&|m| {
                    m.insert("nonce".into(), json!("n"));
                }),
                LogoutTokenError::Nonce,
            ),
            (
                with(&|m| {
                    m.remove("events");
                }),
                LogoutTokenError::Events,
            ),
            (
                with(&|m| {
                    m.insert("events".into(), json!({"other": {}}));
                }),
                LogoutTokenError::Events,
            ),
            (
                with(&|m| {
                    m.insert("events".into(), json!({ EVENT: "x" }));
                }),
                LogoutTokenError::Events,
            ),
            (
                with(&|m| {
                    m.insert("iss".into(), json!("https://evil.example"));
                }),
                LogoutTokenError::Issuer,
            ),
            (
                with(&|m| {
                    m.insert("aud".into(), json!(["someone-else"]));
                }),
                LogoutTokenError::Audience,
            ),
            (
                with(&|m| {
                    m.remove("aud");
                }),
                LogoutTokenError::Audience,
            ),
            (
                with(&|m| {
                    m.remove("iat");
                }),
                LogoutTokenError::IssuedAt,
            ),
            (
                with(&|m| {
                    m.insert("iat".into(), json!(now + 3600));
                }),
                LogoutTokenError::IssuedAt,
            ),
            (
                with(&|m| {
                    m.insert("exp".into(), json!(now - 3600));
                }),
                LogoutTokenError::Expired,
            ),
            (
                with(&|m| {
                    m.remove("exp");
                    m.insert("iat".into(), json!(now - 3600));
                }),
                LogoutTokenError::Expired,
            ),
            (
                with(&|m| {
                    m.remove("sid");
                }),
                LogoutTokenError::NoSubject,
            ),
            (
                with(&|m| {
                    m.remove("jti");
                }),
                LogoutTokenError::Jti,
            ),
            (
                token(good(now), Some("at+jwt")),
                LogoutTokenError::Type("at+jwt".into()),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(check(&t, now), Err(want.clone()), "{want}");
        }
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(now),
            &EncodingKey::from_secret(b"another secret entirely, not ours"),
        )
        .unwrap();
        assert!(matches!(
            check(&forged, now),
            Err(LogoutTokenError::Signature(_))
        ));
        let none_alg = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                good(now).to_string()
            )
        );
        assert!(check(&none_alg, now).is_err());
        assert!(matches!(
            check("garbage", now),
            Err(LogoutTokenError::Malformed(_))
        ));
        assert_eq!(
            claimed_issuer(&token(good(now), None)).as_deref(),
            Some(ISS)
        );
    }
}
