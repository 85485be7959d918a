//! Why a login failed. The variants decide what the person is told (never internals); the details go to
//! the log, under the correlation id the page shows.

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("provider unreachable or discovery failed: {0}")]
    Discovery(String),
    #[error("discovery issuer mismatch: configured `{configured}`, provider says `{advertised}`")]
    IssuerMismatch {
        configured: String,
        advertised: String,
    },
    #[error("provider answered error `{error}`: {}", description.as_deref().unwrap_or("(no description)"))]
    ProviderError {
        error: String,
        description: Option<String>,
    },
    #[error("no login in progress for this state (expired, replayed or from another browser)")]
    UnknownState,
    #[error("authorization response iss `{got:?}` is not the provider's issuer `{expected}`")]
    IssuerParameter {
        expected: String,
        got: Option<String>,
    },
    #[error("callback without code")]
    MissingCode,
    #[error("token exchange failed: {0}")]
    TokenExchange(String),
    /// The provider refused the code (`invalid_grant`): expired, or already redeemed by a replay.
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("token response has no id_token")]
    MissingIdToken,
    #[error("id_token rejected: {0}")]
    IdToken(String),
    /// Userinfo could not be fetched (network, HTTP status): the provider's failure.
    #[error("userinfo unavailable: {0}")]
    UserInfoUnavailable(String),
    /// Userinfo was fetched and did not pass the checks: the answer cannot be trusted.
    #[error("userinfo rejected: {0}")]
    UserInfo(String),
    #[error("acr `{got:?}` is not one of the required {wanted:?}")]
    AcrNotSatisfied {
        wanted: Vec<String>,
        got: Option<String>,
    },
    /// Even without the claims no route uses, the identity does not fit in the cookies a browser keeps.
    #[error(
        "the session does not fit in cookies ({0} bytes) even without the claims no route uses"
    )]
    SessionTooLarge(usize),
    /// Redis could not record the session: refused rather than left unrevocable.
    #[error("the session store could not record the session: {0}")]
    SessionStore(String),
}

/// The `reason` label of `passerelle_login_failures_total`: few enough values to chart, apart enough to
/// tell an outage (`provider_unavailable`) from forged answers (`id_token`, `userinfo`, `issuer`) and from
/// stale or replayed browsers (`state`).
pub const FAILURE_REASONS: [&str; 9] = [
    "provider_unavailable",
    "provider_error",
    "state",
    "issuer",
    "id_token",
    "userinfo",
    "acr",
    "session_too_large",
    "session_store",
];

impl LoginError {
    /// What the person or their browser caused (a stale tab, a sign-in they cancelled, a level they did
    /// not reach): logged at INFO. The others need an operator (a provider down, a forged or broken answer,
    /// the session store): WARN.
    pub fn is_ordinary(&self) -> bool {
        match self {
            LoginError::UnknownState | LoginError::CodeRejected(_) | LoginError::MissingCode => {
                true
            }
            LoginError::AcrNotSatisfied { .. } => true,
            LoginError::ProviderError { error, .. } => {
                matches!(
                    error.as_str(),
                    "access_denied"
                        | "login_required"
                        | "consent_required"
                        | "interaction_required"
                )
            }
            _ => false,
        }
    }

    /// Index into [`FAILURE_REASONS`].
    pub fn reason_index(&self) -> usize {
        match self {
            LoginError::Discovery(_)
            | LoginError::IssuerMismatch { .. }
            | LoginError::TokenExchange(_)
            | LoginError::UserInfoUnavailable(_) => 0,
            LoginError::ProviderError { .. } => 1,
            LoginError::UnknownState | LoginError::CodeRejected(_) | LoginError::MissingCode => 2,
            LoginError::IssuerParameter { .. } => 3,
            LoginError::MissingIdToken | LoginError::IdToken(_) => 4,
            LoginError::UserInfo(_) => 5,
            LoginError::AcrNotSatisfied { .. } => 6,
            LoginError::SessionTooLarge(_) => 7,
            LoginError::SessionStore(_) => 8,
        }
    }

    /// True when the provider or network failed rather than the person's request: answered 502.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            LoginError::Discovery(_)
                | LoginError::TokenExchange(_)
                | LoginError::UserInfoUnavailable(_)
                | LoginError::IssuerMismatch { .. }
        )
    }
}
