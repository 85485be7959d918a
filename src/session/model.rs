//! What a session and a login flow hold.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch: orders login flows started within the same millisecond, which a
/// page opening several tabs at once can do.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Header name and value pairs, ready to insert.
pub type HeaderList = std::sync::Arc<[(http::HeaderName, http::HeaderValue)]>;

/// Identity headers already rendered for a route, kept beside the decoded (and cached) session so a
/// request reuses them instead of re-encoding every claim; and the route's signed assertion while more than
/// half its lifetime remains, so a page's many requests cost one signature. Never serialised.
#[derive(Default)]
pub struct RenderedHeaders {
    headers: std::sync::Mutex<Vec<(usize, HeaderList)>>,
    /// Route, assertion, its `exp`.
    assertions: std::sync::Mutex<Vec<(usize, http::HeaderValue, u64)>>,
}

impl RenderedHeaders {
    pub fn get_or_render(
        &self,
        route: usize,
        render: impl FnOnce() -> Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> HeaderList {
        let mut cached = match self.headers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((_, headers)) = cached.iter().find(|(r, _)| *r == route) {
            return headers.clone();
        }
        let headers: HeaderList = render().into();
        cached.push((route, headers.clone()));
        headers
    }

    /// The route's assertion, signed again once less than half of `ttl` (seconds) remains.
    pub fn get_or_sign(
        &self,
        route: usize,
        now: u64,
        ttl: u64,
        sign: impl FnOnce() -> Option<(http::HeaderValue, u64)>,
    ) -> Option<http::HeaderValue> {
        let mut cached = match self.assertions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let fresh = |exp: u64| exp > now + ttl / 2;
        if let Some((_, value, _)) = cached.iter().find(|(r, _, exp)| *r == route && fresh(*exp)) {
            return Some(value.clone());
        }
        let (value, exp) = sign()?;
        cached.retain(|(r, _, _)| *r != route);
        cached.push((route, value.clone(), exp));
        Some(value)
    }
}

impl Clone for RenderedHeaders {
    fn clone(&self) -> Self {
        RenderedHeaders::default()
    }
}

impl PartialEq for RenderedHeaders {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for RenderedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderedHeaders")
    }
}

/// An authenticated session. Field names are short: the whole struct travels in a cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Random identifier, new on every login (no fixation), used in logs instead of the subject.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "p")]
    pub provider: String,
    /// Normalised claims (see `identity::normalise`); `sub` is always present.
    #[serde(rename = "c")]
    pub claims: BTreeMap<String, serde_json::Value>,
    /// Scopes the provider granted.
    #[serde(rename = "s")]
    pub scopes: BTreeSet<String>,
    /// Scopes Passerelle asked for: a route needing one that was asked for but not granted gets a 403,
    /// not an endless step-up loop.
    #[serde(rename = "q", default)]
    pub requested: BTreeSet<String>,
    /// The acr values asked for at login, for the same reason.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub requested_acr: Vec<String>,
    /// When the login happened: the absolute lifetime counts from here.
    #[serde(rename = "a")]
    pub created: u64,
    /// Last time a request refreshed the session: the idle timeout counts from here.
    #[serde(rename = "l")]
    pub last_seen: u64,
    /// The raw id_token, for RP-initiated logout. Server-side sessions only: a cookie session keeps it
    /// in its own cookie, sent only to Passerelle's endpoints.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip)]
    pub rendered: RenderedHeaders,
}

impl Session {
    pub fn sub(&self) -> &str {
        self.claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

/// The raw id_token of a session, kept only as the `id_token_hint` of RP-initiated logout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdTokenHint {
    /// The session it belongs to: a hint cookie left from another session is ignored.
    pub session: String,
    pub id_token: String,
}

/// A login in progress, kept in its own short-lived cookie so any replica can finish it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginFlow {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub provider: String,
    /// Local path (or allow-listed URL) to return to after login.
    pub return_to: String,
    pub scopes: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<crate::config::AcrPolicy>,
    /// Microseconds since the epoch.
    pub created_us: u64,
}

/// A logout in progress: the state sent to the provider and where to land afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogoutFlow {
    pub state: String,
    pub return_to: String,
    /// Microseconds since the epoch.
    pub created_us: u64,
}
