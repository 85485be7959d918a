//! One configured identity provider at run time: discovery, JWKS, authorize, callback, userinfo, logout.

use super::error::LoginError;
use super::types::{Client, IdTokenClaims, ProviderMetadata, TokenResponse};
use crate::config::{AcrPolicy, AuthMethod, AuthorizeHints, ProviderConfig};
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, JsonWebKeySet,
    Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse as _,
};
use openidconnect::{HttpClientError, RequestTokenError, StandardErrorResponse};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// At most one JWKS refetch per provider in this interval: an attacker sending tokens with random `kid`s
/// must not turn Passerelle into a load generator against the provider.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

type TokenRequestError = RequestTokenError<
    HttpClientError<reqwest::Error>,
    StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
>;

struct Discovered {
    metadata: ProviderMetadata,
    fetched: Instant,
}

/// What a successful callback yields.
#[derive(Debug)]
pub struct VerifiedLogin {
    /// All claims: id_token's then userinfo's (userinfo wins, except `sub`, which must be equal).
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub scopes: BTreeSet<String>,
    pub id_token: String,
}

/// What a login asks the provider for.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeOptions {
    pub scopes: BTreeSet<String>,
    pub acr: Option<AcrPolicy>,
    pub hints: AuthorizeHints,
}

/// The OIDC `claims` parameter: acr as ProConnect documents it (`essential` + `values`, or `null` to
/// read it without enforcing it), and amr, which ProConnect leaves out of the id_token unless asked.
pub fn claims_parameter(acr: Option<&AcrPolicy>, request_amr: bool) -> Option<String> {
    if acr.is_none() && !request_amr {
        return None;
    }
    let mut id_token = serde_json::Map::new();
    id_token.insert(
        "acr".into(),
        match acr {
            Some(a) => serde_json::json!({"essential": a.essential, "values": a.values}),
            None => serde_json::Value::Null,
        },
    );
    if request_amr {
        id_token.insert("amr".into(), serde_json::Value::Null);
    }
    Some(serde_json::json!({ "id_token": id_token }).to_string())
}

/// What the callback must find, from the login flow that started it.
pub struct Expectations<'a> {
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub scopes: &'a BTreeSet<String>,
    pub acr: Option<&'a AcrPolicy>,
}

/// Parameters of a new authorization request.
pub struct AuthorizeRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct Provider {
    pub config: Arc<ProviderConfig>,
    discovered: RwLock<Option<Arc<Discovered>>>,
    fetch_lock: tokio::sync::Mutex<()>,
    last_jwks_refetch: Mutex<Option<Instant>>,
    http: OnceLock<reqwest::Client>,
}

/// 43 characters of base64url from 32 random bytes: above the 32 characters ProConnect requires.
fn random_token() -> String {
    CsrfToken::new_random_len(32).secret().clone()
}

impl Provider {
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        Provider {
            config,
            discovered: RwLock::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_jwks_refetch: Mutex::new(None),
            http: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Verifies a back-channel `logout_token` with this provider's keys (refetched once, rate-limited,
    /// on an unknown key id). The outer error is the provider's keys being unavailable.
    pub async fn verify_logout_token(
        &self,
        token: &str,
    ) -> Result<Result<super::LogoutToken, super::LogoutTokenError>, LoginError> {
        let mut discovered = self.metadata().await?;
        // HS* is keyed by the client secret, which operators and config files hold: a logout token so
        // signed could end anyone's sessions. Accepted only from a provider configured to sign with
        // HS* alone.
        let configured = super::userinfo::algorithms(&self.config.id_token_algs);
        let symmetric = |a: &jsonwebtoken::Algorithm| {
            matches!(
                a,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            )
        };
        let algs: Vec<_> = if configured.iter().all(symmetric) {
            configured
        } else {
            configured.into_iter().filter(|a| !symmetric(a)).collect()
        };
        let mut refetched = false;
        loop {
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::to_value(discovered.metadata.jwks())
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
            let result = super::logout_token::verify(
                token,
                &super::logout_token::Expected {
                    issuer: &self.config.issuer,
                    client_id: &self.config.client_id,
                    client_secret: self.config.client_secret.expose(),
                    jwks: &jwks,
                    allowed_algs: &algs,
                    now: chrono::Utc::now().timestamp(),
                },
            );
            match result {
                Err(super::LogoutTokenError::Signature(m))
                    if m.contains("no matching key") && !refetched && self.may_refetch_jwks() =>
                {
                    refetched = true;
                    discovered = self.refetch_jwks(&discovered).await?;
                }
                other => return Ok(other),
            }
        }
    }

    /// The back-channel client, made on first use so it belongs to the runtime that uses it
    /// (reqwest pools bound to a stopped runtime fail: reqwest#1148). Redirects are never followed
    /// (SSRF, openidconnect's UPGRADE notes).
    /// Fails closed: a client that cannot honour the egress proxy or CA settings is never replaced by a
    /// default one that would go around them.
    fn http(&self) -> Result<&reqwest::Client, LoginError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = build_http_client(&self.config).map_err(|e| {
            LoginError::Discovery(format!("back-channel client: {}", error_chain(&e)))
        })?;
        Ok(self.http.get_or_init(|| client))
    }

    /// Fetches the discovery document and JWKS; checks the issuer is exactly the configured one.
    pub async fn discover(&self) -> Result<(), LoginError> {
        let _guard = self.fetch_lock.lock().await;
        if let Some(d) = self.discovered.read().ok().and_then(|d| d.clone()) {
            if d.fetched.elapsed() < DISCOVERY_TTL {
                return Ok(());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let metadata = ProviderMetadata::discover_async(issuer.clone(), self.http()?)
            .await
            .map_err(|e| {
                let text = error_chain(&e);
                match e {
                    openidconnect::DiscoveryError::Validation(_) => LoginError::IssuerMismatch {
                        configured: issuer.to_string(),
                        advertised: text,
                    },
                    _ => LoginError::Discovery(text),
                }
            })?;
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(Arc::new(Discovered {
                metadata,
                fetched: Instant::now(),
            }));
        }
        Ok(())
    }

    async fn metadata(&self) -> Result<Arc<Discovered>, LoginError> {
        if let Some(d) = self.discovered.read().ok().and_then(|d| d.clone()) {
            if d.fetched.elapsed() < DISCOVERY_TTL {
                return Ok(d);
            }
        }
        self.discover().await?;
        self.discovered
            .read()
            .ok()
            .and_then(|d| d.clone())
            .ok_or_else(|| LoginError::Discovery("discovery produced nothing".into()))
    }

    fn client(
        &self,
        metadata: &ProviderMetadata,
        redirect_uri: &str,
    ) -> Result<Client, LoginError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let client = Client::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match self.config.auth_method {
            AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            AuthMethod::ClientSecretPost => AuthType::RequestBody,
        });
        Ok(client)
    }

    /// Builds the authorization URL with fresh state, nonce and PKCE S256 challenge.
    pub async fn authorize(
        &self,
        redirect_uri: &str,
        options: &AuthorizeOptions,
    ) -> Result<AuthorizeRequest, LoginError> {
        let scopes = &options.scopes;
        let discovered = self.metadata().await?;
        let client = self.client(&discovered.metadata, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = random_token();
        let nonce = random_token();
        let (state_c, nonce_c) = (state.clone(), nonce.clone());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state_c),
                move || Nonce::new(nonce_c),
            )
            .set_pkce_challenge(challenge);
        for scope in scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(claims) = claims_parameter(options.acr.as_ref(), self.config.request_amr) {
            request = request.add_extra_param("claims", claims);
        }
        let hints = &options.hints;
        if let Some(prompt) = &hints.prompt {
            for word in prompt.split(' ') {
                request = request.add_prompt(match word {
                    "none" => CoreAuthPrompt::None,
                    "consent" => CoreAuthPrompt::Consent,
                    "select_account" => CoreAuthPrompt::SelectAccount,
                    _ => CoreAuthPrompt::Login,
                });
            }
        }
        for (name, value) in [
            ("idp_hint", &hints.idp_hint),
            ("login_hint", &hints.login_hint),
            ("siret_hint", &hints.siret_hint),
        ] {
            if let Some(v) = value {
                request = request.add_extra_param(name, v.clone());
            }
        }
        let (url, _, _) = request.url();
        Ok(AuthorizeRequest {
            url: url.to_string(),
            state,
            nonce,
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// RFC 9207: the `iss` of the authorization response must be the issuer, and must be present when
    /// the provider says it sends it. This is the mix-up defence.
    pub async fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), LoginError> {
        let discovered = self.metadata().await?;
        let expected = discovered.metadata.issuer().as_str();
        let advertised = discovered
            .metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true);
        match iss {
            Some(got) if got == expected => Ok(()),
            None if !advertised => Ok(()),
            got => Err(LoginError::IssuerParameter {
                expected: expected.to_string(),
                got: got.map(str::to_string),
            }),
        }
    }

    /// Exchanges the code, validates the id_token, fetches userinfo. Nothing is trusted before it is
    /// checked; userinfo is never called for a rejected id_token.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        expect: &Expectations<'_>,
    ) -> Result<VerifiedLogin, LoginError> {
        let mut discovered = self.metadata().await?;
        let client = self.client(&discovered.metadata, redirect_uri)?;
        let token: TokenResponse = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::TokenExchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(expect.pkce_verifier.to_string()))
            .request_async(self.http()?)
            .await
            .map_err(token_error)?;
        let id_token = token.id_token().ok_or(LoginError::MissingIdToken)?;
        let nonce = Nonce::new(expect.nonce.to_string());
        let claims = match self.verify_id_token(&client, id_token, &nonce) {
            Err(LoginError::IdToken(msg))
                if msg.contains("No matching key") && self.may_refetch_jwks() =>
            {
                discovered = self.refetch_jwks(&discovered).await?;
                let client = self.client(&discovered.metadata, redirect_uri)?;
                self.verify_id_token(&client, id_token, &nonce)?
            }
            other => other?,
        };
        if let Some(acr) = expect.acr.filter(|a| a.essential) {
            let got = claims.auth_context_ref().map(|a| a.as_str().to_string());
            if !got.as_ref().is_some_and(|g| acr.values.contains(g)) {
                return Err(LoginError::AcrNotSatisfied {
                    wanted: acr.values.clone(),
                    got,
                });
            }
        }
        // OIDC Core 3.1.3.7 (5): an azp names the party the token was issued to; openidconnect leaves
        // this check to the client.
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != self.config.client_id {
                return Err(LoginError::IdToken(format!(
                    "azp `{}` is not this client",
                    truncate_for_log(azp.as_str())
                )));
            }
        }
        let sub = claims.subject().to_string();
        let mut all = match serde_json::to_value(&claims) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(LoginError::IdToken("claims are not a JSON object".into())),
        };
        for protocol_claim in [
            "aud", "exp", "iat", "nonce", "at_hash", "c_hash", "azp", "iss",
        ] {
            all.remove(protocol_claim);
        }
        if self.config.fetch_userinfo {
            if let Some(endpoint) = discovered.metadata.userinfo_endpoint() {
                let jwks: jsonwebtoken::jwk::JwkSet =
                    serde_json::to_value(discovered.metadata.jwks())
                        .ok()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
                let algs = super::userinfo::algorithms(&self.config.id_token_algs);
                let check = super::userinfo::UserInfoCheck {
                    issuer: discovered.metadata.issuer().as_str(),
                    client_id: &self.config.client_id,
                    client_secret: self.config.client_secret.expose(),
                    jwks: &jwks,
                    expected_sub: &sub,
                    allowed_algs: &algs,
                };
                let info = super::userinfo::fetch(
                    self.http()?,
                    endpoint.as_str(),
                    token.access_token().secret(),
                    &check,
                )
                .await?;
                for (k, v) in info {
                    if !matches!(
                        k.as_str(),
                        "sub" | "iss" | "aud" | "exp" | "iat" | "nbf" | "jti"
                    ) {
                        all.insert(k, v);
                    }
                }
            }
        }
        let scopes = token
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| expect.scopes.clone());
        Ok(VerifiedLogin {
            claims: all,
            scopes,
            id_token: id_token.to_string(),
        })
    }

    fn verify_id_token(
        &self,
        client: &Client,
        id_token: &super::types::IdToken,
        nonce: &Nonce,
    ) -> Result<IdTokenClaims, LoginError> {
        let algs: Vec<CoreJwsSigningAlgorithm> = self
            .config
            .id_token_algs
            .iter()
            .filter_map(|a| serde_json::from_value(serde_json::Value::String(a.clone())).ok())
            .collect();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(algs)
            // Tolerate a provider clock up to one minute ahead or behind.
            .set_time_fn(|| chrono::Utc::now() - chrono::Duration::seconds(60))
            .set_issue_time_verifier_fn(|iat| {
                if iat > chrono::Utc::now() + chrono::Duration::seconds(120) {
                    Err("issued in the future".into())
                } else {
                    Ok(())
                }
            });
        id_token
            .claims(&verifier, nonce)
            .cloned()
            .map_err(|e| LoginError::IdToken(error_chain(&e)))
    }

    fn may_refetch_jwks(&self) -> bool {
        let Ok(mut last) = self.last_jwks_refetch.lock() else {
            return false;
        };
        match *last {
            Some(t) if t.elapsed() < JWKS_REFETCH_INTERVAL => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// OIDC Core §10.1.1: keys rotate; a token signed with a `kid` we do not know triggers one refetch.
    async fn refetch_jwks(&self, current: &Discovered) -> Result<Arc<Discovered>, LoginError> {
        let jwks = JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), self.http()?)
            .await
            .map_err(|e| LoginError::Discovery(error_chain(&e)))?;
        let mut metadata = current.metadata.clone();
        metadata = metadata.set_jwks(jwks);
        let refreshed = Arc::new(Discovered {
            metadata,
            fetched: current.fetched,
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(refreshed.clone());
        }
        tracing::info!(provider = %self.config.name, "signing keys refetched after an unknown key id");
        Ok(refreshed)
    }

    /// The end_session_endpoint URL for RP-initiated logout, when the provider has one.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        state: &str,
        post_logout_redirect_uri: &str,
    ) -> Option<String> {
        let discovered = self.metadata().await.ok()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()?;
        let mut url = url::Url::parse(endpoint).ok()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("client_id", &self.config.client_id);
            q.append_pair("state", state);
            q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        }
        Some(url.to_string())
    }
}

/// The back-channel client: timeouts, no redirects, the RIE egress proxy and private CA when configured.
/// Proxy settings from the environment (`HTTPS_PROXY`) are ignored: the config is the one source.
/// Sorts a failed token request: a refused code is the person's (expired or replayed: 400), an
/// answer carrying an id_token that does not parse is an id_token failure (400), the rest is the
/// provider's or the network's (502).
fn token_error(e: TokenRequestError) -> LoginError {
    match &e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == openidconnect::core::CoreErrorResponseType::InvalidGrant =>
        {
            LoginError::CodeRejected(error_chain(&e))
        }
        RequestTokenError::Parse(parse, body) => {
            let carries_id_token = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .is_some_and(|v| v.get("id_token").is_some_and(serde_json::Value::is_string));
            if carries_id_token {
                LoginError::IdToken(format!("malformed id_token: {}", parse.inner()))
            } else {
                LoginError::TokenExchange(error_chain(&e))
            }
        }
        _ => LoginError::TokenExchange(error_chain(&e)),
    }
}

/// Provider-chosen text in a log line: bounded and without control characters.
fn truncate_for_log(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(128).collect()
}

pub fn build_http_client(config: &ProviderConfig) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if let Some(proxy) = &config.egress_proxy {
        builder = builder.proxy(reqwest::Proxy::all(proxy)?);
    }
    if let Some(pem) = &config.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}

/// An error and its sources on one line, for the log.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parameter_follows_proconnect_documentation() {
        assert_eq!(claims_parameter(None, false), None);
        let read_only: serde_json::Value =
            serde_json::from_str(&claims_parameter(None, true).unwrap()).unwrap();
        assert_eq!(
            read_only,
            serde_json::json!({"id_token": {"acr": null, "amr": null}})
        );
        let acr = AcrPolicy {
            essential: true,
            values: vec!["eidas2".into(), "eidas3".into()],
        };
        let required: serde_json::Value =
            serde_json::from_str(&claims_parameter(Some(&acr), false).unwrap()).unwrap();
        assert_eq!(
            required,
            serde_json::json!({"id_token": {"acr": {"essential": true, "values": ["eidas2", "eidas3"]}}})
        );
    }
}
