//! The development provider: a small but real OpenID provider inside the binary, so the demo works on a
//! machine with nothing else installed. It speaks the same protocol as ProConnect — discovery, JWKS, code
//! flow with PKCE, RS256 id_token, userinfo as JSON or signed JWT, RFC 9207 `iss`, RP-initiated logout —
//! and signs with the openidconnect crate. It is for development only: config refuses it on a
//! non-loopback address unless told otherwise.

use super::identities::{self, TestIdentity, IDENTITIES};
use crate::identity::scopes::claims_released_by;
use crate::pages::{content_security_policy, escape, layout};
use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::Response;
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AccessToken, Audience, AuthorizationCode, EndUserEmail, IssuerUrl, JsonWebKeyId,
    PrivateSigningKey, StandardClaims, SubjectIdentifier, UserInfoJsonWebToken,
};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use subtle::ConstantTimeEq;

use crate::oidc::types::{IdToken, IdTokenClaims, OtherClaims};

const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
struct PendingAuthorization {
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    scopes: BTreeSet<String>,
}

#[derive(Clone)]
struct Grant {
    request: PendingAuthorization,
    identity: &'static str,
}

pub struct DevProvider {
    issuer: String,
    client_id: String,
    client_secret: String,
    /// Accepted redirect URIs end with this path (`<prefix>/callback`).
    callback_path: String,
    logout_path: String,
    signed_userinfo: bool,
    key: CoreRsaPrivateSigningKey,
    jwks: CoreJsonWebKeySet,
    pending: moka::sync::Cache<String, PendingAuthorization>,
    codes: moka::sync::Cache<String, Grant>,
    tokens: moka::sync::Cache<String, Grant>,
}

#[derive(Debug, thiserror::Error)]
#[error("development provider: cannot create its signing key: {0}")]
pub struct DevKeyError(String);

fn random() -> String {
    openidconnect::CsrfToken::new_random_len(32)
        .secret()
        .clone()
}

impl DevProvider {
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
        prefix: &str,
        signed_userinfo: bool,
    ) -> Result<Self, DevKeyError> {
        // A fresh key each start: sessions signed by a previous run simply re-login.
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| DevKeyError(e.to_string()))?;
        let pem = private
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .map_err(|e| DevKeyError(e.to_string()))?;
        let key = CoreRsaPrivateSigningKey::from_pem(
            &pem,
            Some(JsonWebKeyId::new("passerelle-dev-1".into())),
        )
        .map_err(DevKeyError)?;
        let jwks = CoreJsonWebKeySet::new(vec![key.as_verification_key()]);
        fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> moka::sync::Cache<String, V> {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build()
        }
        Ok(DevProvider {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            callback_path: format!("{prefix}/callback"),
            logout_path: format!("{prefix}/logged-out"),
            signed_userinfo,
            key,
            jwks,
            pending: cache(Duration::from_secs(600)),
            codes: cache(Duration::from_secs(60)),
            tokens: cache(Duration::from_secs(3600)),
        })
    }

    fn discovery(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "jwks_uri": format!("{i}/jwks"),
            "end_session_endpoint": format!("{i}/session/end"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "userinfo_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "given_name", "usual_name", "uid", "siret", "siren", "idp_id", "organization_label", "belonging_population", "roles", "chorusdt", "phone", "custom", "birth", "identite_pivot"],
            "claims_supported": ["sub", "given_name", "usual_name", "family_name", "email", "siret", "idp_id", "birthdate", "birthplace", "verified"],
            "authorization_response_iss_parameter_supported": true,
            "acr_values_supported": ["eidas1"],
        })
    }

    fn redirect_uri_ok(&self, uri: &str) -> bool {
        url::Url::parse(uri).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.path() == self.callback_path
                && u.query().is_none()
        })
    }

    fn authorize(&self, query: &HashMap<String, String>) -> Response<Vec<u8>> {
        let get = |k: &str| query.get(k).cloned();
        if get("client_id").as_deref() != Some(self.client_id.as_str()) {
            return page(
                400,
                "Client inconnu",
                "<p>Le paramètre <code>client_id</code> ne correspond pas au client configuré.</p>",
            );
        }
        let Some(redirect_uri) = get("redirect_uri").filter(|r| self.redirect_uri_ok(r)) else {
            return page(400, "redirect_uri refusée", "<p>L'adresse de retour doit se terminer par le chemin de callback de Passerelle.</p>");
        };
        if get("response_type").as_deref() != Some("code") {
            return page(
                400,
                "response_type non pris en charge",
                "<p>Seul le flux « code » est proposé.</p>",
            );
        }
        let challenge = get("code_challenge");
        if challenge.is_some() && get("code_challenge_method").as_deref() != Some("S256") {
            return page(400, "PKCE", "<p>Seule la méthode S256 est acceptée.</p>");
        }
        let scopes: BTreeSet<String> = get("scope")
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !scopes.contains("openid") {
            return page(
                400,
                "Portée openid manquante",
                "<p>La portée <code>openid</code> est obligatoire.</p>",
            );
        }
        let pending = PendingAuthorization {
            redirect_uri,
            state: get("state"),
            nonce: get("nonce"),
            code_challenge: challenge,
            scopes,
        };
        let id = random();
        self.pending.insert(id.clone(), pending.clone());
        let buttons: String = IDENTITIES
            .iter()
            .map(|i| {
                format!(
                    "<li><form method=\"post\" action=\"{}/authorize/approve\"><input type=\"hidden\" name=\"request\" value=\"{}\">\
<input type=\"hidden\" name=\"identity\" value=\"{}\"><button class=\"btn\" type=\"submit\" id=\"identity-{}\">{}</button>\
<div class=\"en\">{}</div></form></li>",
                    escape(&self.issuer),
                    escape(&id),
                    escape(i.key),
                    escape(i.key),
                    escape(i.label),
                    escape(i.description)
                )
            })
            .collect();
        let scopes_text = escape(&pending.scopes.iter().cloned().collect::<Vec<_>>().join(" "));
        page(
            200,
            "Fournisseur d'identité de développement",
            &format!(
                "<h1>Fournisseur d'identité de développement</h1>\
<p><strong>Ne pas utiliser en production.</strong> Choisissez une identité de test. Données demandées : <code>{scopes_text}</code>.</p>\
<ul class=\"providers\">{buttons}</ul>"
            ),
        )
    }

    fn approve(&self, form: &HashMap<String, String>) -> Response<Vec<u8>> {
        let request = form.get("request").and_then(|id| {
            let p = self.pending.get(id);
            self.pending.invalidate(id);
            p
        });
        let (Some(request), Some(identity)) = (
            request,
            form.get("identity").and_then(|k| identities::find(k)),
        ) else {
            return page(
                400,
                "Demande expirée",
                "<p>Cette demande de connexion a expiré. Recommencez depuis l'application.</p>",
            );
        };
        let code = random();
        let mut location = match url::Url::parse(&request.redirect_uri) {
            Ok(u) => u,
            Err(_) => return page(400, "redirect_uri refusée", ""),
        };
        {
            let mut q = location.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(state) = &request.state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.issuer);
        }
        self.codes.insert(
            code,
            Grant {
                request,
                identity: identity.key,
            },
        );
        redirect(location.as_str())
    }

    fn token(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Response<Vec<u8>> {
        let (id, secret) = match authorization
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
        {
            Some(decoded) => {
                let text = String::from_utf8_lossy(&decoded).into_owned();
                let (id, secret) = text.split_once(':').unwrap_or((&text, ""));
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (decode(id), decode(secret))
            }
            None => (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            ),
        };
        let secret_ok: bool = secret
            .as_bytes()
            .ct_eq(self.client_secret.as_bytes())
            .into();
        if id != self.client_id || !secret_ok {
            return json_response(
                401,
                &json!({"error": "invalid_client", "error_description": "client authentication failed"}),
            );
        }
        if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
            return json_response(400, &json!({"error": "unsupported_grant_type"}));
        }
        let grant = form.get("code").and_then(|c| {
            let g = self.codes.get(c);
            self.codes.invalidate(c);
            g
        });
        let Some(grant) = grant else {
            return json_response(
                400,
                &json!({"error": "invalid_grant", "error_description": "grant request is invalid"}),
            );
        };
        if form.get("redirect_uri") != Some(&grant.request.redirect_uri) {
            return json_response(
                400,
                &json!({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}),
            );
        }
        if let Some(challenge) = &grant.request.code_challenge {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                return json_response(
                    400,
                    &json!({"error": "invalid_grant", "error_description": "PKCE verification failed"}),
                );
            }
        }
        let Some(identity) = identities::find(grant.identity) else {
            return json_response(400, &json!({"error": "invalid_grant"}));
        };
        let access_token = random();
        let code = form.get("code").cloned().unwrap_or_default();
        let id_token = match self.id_token(identity, &grant, &access_token, &code) {
            Ok(t) => t,
            Err(e) => {
                return json_response(
                    500,
                    &json!({"error": "server_error", "error_description": e}),
                )
            }
        };
        let scope = grant
            .request
            .scopes
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        self.tokens.insert(access_token.clone(), grant);
        json_response(
            200,
            &json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600, "id_token": id_token, "scope": scope}),
        )
    }

    fn id_token(
        &self,
        identity: &TestIdentity,
        grant: &Grant,
        access_token: &str,
        code: &str,
    ) -> Result<String, String> {
        let claims = (identity.claims)();
        let sub = claims["sub"].as_str().unwrap_or_default().to_string();
        let now = chrono::Utc::now();
        let claims = IdTokenClaims::new(
            IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?,
            vec![Audience::new(self.client_id.clone())],
            now + chrono::Duration::seconds(300),
            now,
            StandardClaims::new(SubjectIdentifier::new(sub)),
            OtherClaims::default(),
        )
        .set_nonce(grant.request.nonce.clone().map(openidconnect::Nonce::new))
        .set_auth_time(Some(now));
        let claims = claims.set_auth_context_ref(Some(
            openidconnect::AuthenticationContextClass::new("eidas1".into()),
        ));
        let token = IdToken::new(
            claims,
            &self.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            Some(&AccessToken::new(access_token.to_string())),
            Some(&AuthorizationCode::new(code.to_string())),
        )
        .map_err(|e| e.to_string())?;
        Ok(token.to_string())
    }

    /// The claims the grant's scopes release, under the federations' own names.
    fn released_claims(&self, grant: &Grant) -> serde_json::Map<String, Value> {
        let all = (identities::find(grant.identity).map(|i| (i.claims)())).unwrap_or(Value::Null);
        let mut released: BTreeSet<&str> = grant
            .request
            .scopes
            .iter()
            .flat_map(|s| claims_released_by(s))
            .collect();
        if released.contains("family_name") {
            released.insert("usual_name");
        }
        if released.contains("chorusdt_matricule") {
            released.extend(["chorusdt:matricule", "chorusdt:societe"]);
        }
        if released.contains("phone_number") {
            released.insert("phone_number");
        }
        all.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() == "sub" || released.contains(k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn userinfo(&self, authorization: Option<&str>) -> Response<Vec<u8>> {
        let grant = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.get(t.trim()));
        let Some(grant) = grant else {
            return json_response(401, &json!({"error": "invalid_token"}));
        };
        let claims = self.released_claims(&grant);
        if !self.signed_userinfo {
            return json_response(200, &Value::Object(claims));
        }
        let mut standard = StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(
            claims["sub"].as_str().unwrap_or_default().to_string(),
        ));
        if let Some(email) = claims.get("email").and_then(Value::as_str) {
            standard = standard.set_email(Some(EndUserEmail::new(email.to_string())));
        }
        let mut rest = claims.clone();
        for k in ["sub", "email"] {
            rest.remove(k);
        }
        let info = openidconnect::UserInfoClaims::new(standard, OtherClaims { rest })
            .set_issuer(IssuerUrl::new(self.issuer.clone()).ok())
            .set_audiences(Some(vec![Audience::new(self.client_id.clone())]));
        match UserInfoJsonWebToken::<
            OtherClaims,
            CoreGenderClaim,
            openidconnect::core::CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >::new(
            info,
            &self.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        ) {
            Ok(jwt) => {
                let body = serde_json::to_value(&jwt)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
                    .into_bytes();
                respond(200, "application/jwt", body)
            }
            Err(e) => json_response(
                500,
                &json!({"error": "server_error", "error_description": e.to_string()}),
            ),
        }
    }

    fn end_session(&self, query: &HashMap<String, String>) -> Response<Vec<u8>> {
        let target = query
            .get("post_logout_redirect_uri")
            .and_then(|u| url::Url::parse(u).ok())
            .filter(|u| u.path() == self.logout_path);
        match target {
            Some(mut url) => {
                if let Some(state) = query.get("state") {
                    url.query_pairs_mut().append_pair("state", state);
                }
                redirect(url.as_str())
            }
            None => page(
                200,
                "Déconnexion",
                "<h1>Vous êtes déconnecté du fournisseur de développement</h1>",
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for DevProvider {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        let authorization = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let query: HashMap<String, String> = req.uri.query().map(parse_form).unwrap_or_default();
        let form = if method == http::Method::POST {
            read_form(session).await
        } else {
            Ok(HashMap::new())
        };
        let Ok(form) = form else {
            return json_response(
                413,
                &json!({"error": "invalid_request", "error_description": "body too large"}),
            );
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => json_response(200, &self.discovery()),
            ("GET", "/jwks") => {
                json_response(200, &serde_json::to_value(&self.jwks).unwrap_or_default())
            }
            ("GET", "/authorize") => self.authorize(&query),
            ("POST", "/authorize/approve") => self.approve(&form),
            ("POST", "/token") => self.token(authorization.as_deref(), &form),
            ("GET", "/userinfo") => self.userinfo(authorization.as_deref()),
            ("GET", "/session/end") => self.end_session(&query),
            _ => json_response(404, &json!({"error": "not_found"})),
        }
    }
}

fn parse_form(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

async fn read_form(session: &mut ServerSession) -> Result<HashMap<String, String>, ()> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(());
        }
    }
    Ok(parse_form(&String::from_utf8_lossy(&body)))
}

use crate::small_app::response as respond;

fn json_response(status: u16, value: &Value) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn page(status: u16, title: &str, body: &str) -> Response<Vec<u8>> {
    let html = layout(title, body).into_bytes();
    let mut r = respond(status, "text/html; charset=utf-8", html);
    if let Ok(v) = http::HeaderValue::from_str(&content_security_policy()) {
        r.headers_mut().insert("Content-Security-Policy", v);
    }
    r
}

fn redirect(location: &str) -> Response<Vec<u8>> {
    let mut r = respond(302, "text/plain", Vec::new());
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert("Location", v);
    }
    r
}
