//! `POST {prefix}/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//!
//! The provider posts a `logout_token` when a person's session ends there. Passerelle ends every session
//! that provider `sid` covers (or, without `sid`, every session of that `sub` with that provider), on every
//! replica. 200 on success; 400 with a JSON error for anything else: a provider, or anyone on the network,
//! never gets a 5xx for bad input.

use super::{Gateway, Reply};
use crate::oidc::{LogoutToken, LogoutTokenError};
use crate::session::{Cause, StoreError};
use pingora::proxy::Session as HttpSession;

/// A form with one logout token is well under this.
const MAX_BODY: usize = 64 * 1024;

fn error(status: u16, code: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": code, "error_description": description}),
    )
}

/// Reads the form body, bounded: the request comes from the network, before any check.
async fn read_form(session: &mut HttpSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(400, "invalid_request", "body too large"));
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(error(400, "invalid_request", "unreadable body")),
        }
    }
}

pub async fn handle(gw: &Gateway, session: &mut HttpSession, request_id: &str) -> Reply {
    if session.req_header().method != http::Method::POST {
        return error(405, "invalid_request", "POST a logout_token").header("Allow", "POST".into());
    }
    let content_type = crate::media_type::media_type(&session.req_header().headers);
    if content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return error(
            400,
            "invalid_request",
            "expected application/x-www-form-urlencoded",
        );
    }
    let body = match read_form(session).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let token = match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => t,
        _ => {
            return error(
                400,
                "invalid_request",
                "exactly one logout_token is expected",
            )
        }
    };
    let verified = match verify(gw, &token).await {
        Ok(v) => v,
        Err(Refusal::Keys(e)) => {
            // Our side failed (the provider's keys could not be fetched): the provider should retry.
            tracing::error!(request_id, error = %e, "back-channel logout: provider keys unavailable");
            return error(503, "temporarily_unavailable", "signing keys unavailable")
                .header("Retry-After", "5".into());
        }
        Err(e) => {
            tracing::warn!(request_id, error = %e, "back-channel logout refused");
            return error(400, "invalid_request", &e.to_string());
        }
    };
    let mut carried_out = 0;
    for (provider, token) in &verified {
        match end_sessions(gw, provider, token).await {
            Ok(Some(n)) => {
                tracing::info!(target: "audit", request_id, provider = %provider, sessions = n, by_sid = token.sid.is_some(), "back-channel logout");
                let mut event =
                    crate::audit::Event::new(crate::audit::Kind::SessionRevoked, request_id)
                        .provider(provider)
                        .reason(&format!("back-channel logout: {n} session(s)"));
                if let Some(sub) = &token.sub {
                    event = event.subject(sub);
                }
                gw.audit.write(event);
                carried_out += 1;
            }
            Ok(None) => {}
            Err(e) => {
                // Redis is down: the sessions are not ended yet, and the provider must know to retry.
                tracing::error!(request_id, error = %e, "back-channel logout: the session store failed");
                return error(503, "temporarily_unavailable", "session store unavailable")
                    .header("Retry-After", "5".into());
            }
        }
    }
    if carried_out == 0 {
        return error(
            400,
            "invalid_request",
            "logout_token replayed (jti already used)",
        );
    }
    Reply::json(200, &serde_json::json!({})).header("Cache-Control", "no-store".into())
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no configured provider has the token's issuer")]
    UnknownIssuer,
    #[error(transparent)]
    Token(#[from] LogoutTokenError),
    #[error("provider keys unavailable: {0}")]
    Keys(String),
}

/// Finds the providers with the token's claimed issuer, and verifies the token with each one's keys and
/// client id. Several provider blocks may share an issuer (one client per network, or the same client
/// under two names): the token counts for every one it passes for.
async fn verify(gw: &Gateway, token: &str) -> Result<Vec<(String, LogoutToken)>, Refusal> {
    let issuer = crate::oidc::logout_token::claimed_issuer(token)
        .ok_or(LogoutTokenError::Malformed("no readable iss".into()))?;
    let mut passed = Vec::new();
    let mut last = Refusal::UnknownIssuer;
    for provider in gw
        .providers
        .values()
        .filter(|p| p.issuer() == issuer.as_str())
    {
        match provider.verify_logout_token(token).await {
            Ok(Ok(t)) => passed.push((provider.name().to_string(), t)),
            Ok(Err(e)) => last = Refusal::Token(e),
            Err(e) => last = Refusal::Keys(e.to_string()),
        }
    }
    if passed.is_empty() {
        Err(last)
    } else {
        Ok(passed)
    }
}

/// Ends the sessions the token names; `None` when its `jti` was seen before.
async fn end_sessions(
    gw: &Gateway,
    provider: &str,
    token: &LogoutToken,
) -> Result<Option<usize>, StoreError> {
    let now = crate::session::now() as i64;
    let ttl = std::time::Duration::from_secs(token.replay_until.saturating_sub(now).max(1) as u64);
    match &gw.sessions.shared {
        Some(shared) => {
            if !shared.first_use(provider, &token.jti, ttl).await? {
                return Ok(None);
            }
            let ended = match (&token.sid, &token.sub) {
                (Some(sid), _) => shared.revoke_sid(provider, sid, Cause::BackChannel).await,
                (None, Some(sub)) => {
                    shared
                        .revoke_subject(&[provider.to_string()], sub, Cause::BackChannel)
                        .await
                }
                (None, None) => Ok(0),
            };
            match ended {
                Ok(n) => Ok(Some(n)),
                Err(e) => {
                    // Not carried out: the provider's retry of this very token must not be a replay.
                    shared.release(provider, &token.jti).await;
                    Err(e)
                }
            }
        }
        None => Ok(gw.sessions.local_logout(provider, token).then_some(0)),
    }
}
