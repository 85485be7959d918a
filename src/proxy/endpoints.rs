//! Passerelle's own endpoints under `server.prefix`: login, callback, logout, logged-out, userinfo, auth.

use super::{Ctx, Gateway, Reply, RequestInfo};
use crate::audit::Kind;
use crate::config::RouteConfig;
use crate::config::{ProviderKind, SiteData};
use crate::identity::normalise;
use crate::oidc::{AuthorizeOptions, Expectations, LoginError, Provider};
use crate::pages::{self, ButtonStyle, ProviderChoice};
use crate::redirect::validate_return_to;
use crate::session::cookies::{self, MAX_FLOWS, MAX_SET_COOKIE};
use crate::session::{
    now, now_us, Cause, CookieSpec, CreateError, IdTokenHint, LoginFlow, LogoutFlow, Purpose,
    Session, SessionState,
};
use pingora::http::RequestHeader;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub async fn handle(
    gw: &Gateway,
    info: &RequestInfo,
    req: &RequestHeader,
    rest: &str,
    ctx: &mut Ctx,
) -> Reply {
    match rest {
        "/login" => login(gw, info, ctx).await,
        "/callback" => callback(gw, info, ctx)
            .await
            .header("Referrer-Policy", "no-referrer".into()),
        "/logout" => logout(gw, info, ctx).await,
        "/logged-out" => logged_out(gw, info),
        "/userinfo" => userinfo(gw, info).await,
        "/auth" => super::forward_auth::forward_auth(gw, info, req).await,
        "/logo" if pages::logo().is_some() => match pages::logo() {
            Some(logo) => Reply::asset(logo.bytes, logo.content_type),
            None => Reply::text(404, "no logo"),
        },
        // Short-lived in caches: a rotation publishes the next key a reload before it signs.
        "/jwks.json" if gw.signer.is_some() => Reply::public_json(
            gw.signer.as_ref().map(|s| s.jwks()).unwrap_or_default(),
            300,
        ),
        _ => Reply::html(
            404,
            pages::error_page(
                "Page introuvable",
                "Cette adresse n'existe pas.",
                "Not found.",
                Some(("/", "Revenir à l'accueil")),
                &ctx.request_id,
            ),
        ),
    }
}

fn error_reply(
    status: u16,
    title: &str,
    message: &str,
    english: &str,
    action: Option<(&str, &str)>,
    ctx: &Ctx,
) -> Reply {
    Reply::html(
        status,
        pages::error_page(title, message, english, action, &ctx.request_id),
    )
}

/// One cookie per login in progress, named after the start of its state so the callback finds it.
fn flow_cookie_name(gw: &Gateway, spec: &CookieSpec, state: &str) -> String {
    format!(
        "{}{}",
        flow_cookie_prefix(gw, spec),
        &state[..12.min(state.len())]
    )
}

fn flow_cookie_prefix(gw: &Gateway, spec: &CookieSpec) -> String {
    spec.name(&format!("{}_flow_", gw.config.session.cookie_name))
}

fn logout_cookie_name(gw: &Gateway, spec: &CookieSpec) -> String {
    spec.name(&format!("{}_logout", gw.config.session.cookie_name))
}

/// Whether a flow started at `created_us` is still within the login timeout.
fn flow_alive(gw: &Gateway, created_us: u64) -> bool {
    now_us() < created_us.saturating_add(gw.config.session.login_timeout.as_micros() as u64)
}

fn callback_uri(gw: &Gateway, info: &RequestInfo) -> String {
    format!(
        "{}{}/callback",
        info.origin(&gw.config.server),
        gw.config.server.prefix
    )
}

/// `rd` if acceptable, `/` otherwise.
fn return_to(gw: &Gateway, info: &RequestInfo) -> String {
    info.param("rd")
        .and_then(|rd| validate_return_to(&rd, &gw.config.server.allowed_redirect_hosts))
        .unwrap_or_else(|| "/".to_string())
}

/// The route a return path leads to, to know which providers and scopes it needs.
fn route_for<'a>(
    gw: &'a Gateway,
    info: &RequestInfo,
    rd: &str,
) -> Option<&'a crate::config::RouteConfig> {
    let path = rd.split(['?', '#']).next().unwrap_or("/");
    let normalised = crate::routes::normalise_path(path).ok()?;
    gw.routes.find(info.host(), &normalised.matching)
}

async fn login(gw: &Gateway, info: &RequestInfo, ctx: &mut Ctx) -> Reply {
    let rd = return_to(gw, info);
    let route = route_for(gw, info, &rd);
    let candidates: Vec<String> = match route {
        Some(r) if !r.providers.is_empty() => r.providers.clone(),
        _ => gw.config.providers.iter().map(|p| p.name.clone()).collect(),
    };
    let chosen = match info.param("provider") {
        Some(p) if candidates.contains(&p) => p,
        Some(_) => {
            return error_reply(
                400,
                "Moyen de connexion inconnu",
                "Ce moyen de connexion n'est pas proposé pour ce service.",
                "Unknown sign-in provider for this service.",
                Some(("/", "Revenir à l'accueil")),
                ctx,
            )
        }
        None if candidates.len() == 1 => candidates[0].clone(),
        None => {
            let choices: Vec<ProviderChoice> = gw
                .provider_configs(&candidates)
                .map(|p| ProviderChoice {
                    style: match p.kind {
                        ProviderKind::ProConnect { .. } => ButtonStyle::ProConnect,
                        ProviderKind::NcConnect { .. } => ButtonStyle::NcConnect,
                        _ => ButtonStyle::Generic,
                    },
                    label: p.display_name.clone(),
                    href: format!(
                        "{}/login?provider={}&rd={}",
                        gw.config.server.prefix,
                        urlencode(&p.name),
                        urlencode(&rd)
                    ),
                })
                .collect();
            return Reply::html(200, pages::sign_in_page(&choices));
        }
    };
    start_login(gw, info, &chosen, rd, route, None, ctx).await
}

/// Starts a login at `provider_name`: a fresh state, nonce and PKCE verifier in a flow cookie, and a
/// redirect to the provider asking for the provider's scopes plus those of the route being reached —
/// plus, for a step-up, everything the current session had asked for, so nothing granted is lost.
pub async fn start_login(
    gw: &Gateway,
    info: &RequestInfo,
    provider_name: &str,
    rd: String,
    route: Option<&RouteConfig>,
    step_up_from: Option<&Session>,
    ctx: &Ctx,
) -> Reply {
    let Some(provider) = gw.provider(provider_name) else {
        return error_reply(
            500,
            "Configuration incomplète",
            "Aucun moyen de connexion n'est configuré.",
            "No provider configured.",
            None,
            ctx,
        );
    };
    let mut scopes: BTreeSet<String> = provider.config.scopes.clone();
    if let Some(r) = route {
        scopes.extend(r.scopes.iter().cloned());
    }
    if let Some(previous) = step_up_from {
        scopes.extend(previous.requested.iter().cloned());
    }
    let options = AuthorizeOptions {
        scopes,
        acr: route
            .and_then(|r| r.acr.clone())
            .or_else(|| provider.config.acr.clone()),
        hints: match route {
            Some(r) => provider.config.hints.overridden_by(&r.hints),
            None => provider.config.hints.clone(),
        },
    };
    let redirect_uri = callback_uri(gw, info);
    let request = match provider.authorize(&redirect_uri, &options).await {
        Ok(r) => r,
        Err(e) => return login_failure(gw, e, Some(provider), &rd, ctx),
    };
    let mut flow = LoginFlow {
        state: request.state.clone(),
        nonce: request.nonce,
        pkce_verifier: request.pkce_verifier,
        provider: provider_name.to_string(),
        return_to: rd,
        scopes: options.scopes,
        acr: options.acr,
        created_us: now_us(),
    };
    let spec = gw.flow_cookie_spec(info.secure);
    let name = flow_cookie_name(gw, &spec, &request.state);
    let flow_cookie = |flow: &LoginFlow| {
        spec.set(
            &name,
            &gw.sessions.seal(Purpose::LoginFlow, flow),
            Some(gw.config.session.login_timeout),
        )
    };
    let mut cookie = flow_cookie(&flow);
    // A browser drops a cookie over 4 KiB, and the callback would then find no login: a very long
    // return URL loses its query, then itself, rather than the whole login.
    for shorter in [
        flow.return_to.split('?').next().unwrap_or("/").to_string(),
        "/".to_string(),
    ] {
        if cookie.len() <= MAX_SET_COOKIE {
            break;
        }
        tracing::info!(request_id = %ctx.request_id, "return URL too long for the login cookie: shortened");
        flow.return_to = shorter;
        cookie = flow_cookie(&flow);
    }
    let mut cookies = evict_old_flows(gw, info, &spec);
    cookies.push(cookie);
    tracing::info!(request_id = %ctx.request_id, provider = %flow.provider, "login started");
    Reply::redirect(&request.url).cookies(cookies)
}

/// Several tabs may log in at once, but not without bound: beyond [`MAX_FLOWS`] the oldest flows are
/// dropped (oauth2-proxy #2163, mod_auth_openidc #108: piled-up state cookies end in a 431).
fn evict_old_flows(gw: &Gateway, info: &RequestInfo, spec: &CookieSpec) -> Vec<String> {
    let prefix = flow_cookie_prefix(gw, spec);
    let mut flows: Vec<(u64, &str)> = info
        .cookies
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(n, v)| {
            (
                gw.sessions
                    .open::<LoginFlow>(Purpose::LoginFlow, v)
                    .map(|f| f.created_us)
                    .unwrap_or(0),
                n.as_str(),
            )
        })
        .collect();
    if flows.len() < MAX_FLOWS {
        return Vec::new();
    }
    flows.sort();
    let excess = flows.len() + 1 - MAX_FLOWS;
    flows
        .iter()
        .take(excess)
        .map(|(_, name)| spec.delete(name))
        .collect()
}

async fn callback(gw: &Gateway, info: &RequestInfo, ctx: &mut Ctx) -> Reply {
    let spec = gw.flow_cookie_spec(info.secure);
    let state = info.param("state").filter(|s| {
        s.len() >= 12
            && s.len() <= 512
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let Some(state) = state else {
        return login_failure(gw, LoginError::UnknownState, None, "/", ctx);
    };
    let cookie_name = flow_cookie_name(gw, &spec, &state);
    // Single use: whatever happens next, this flow cookie is deleted.
    let consume = spec.delete(&cookie_name);
    let flow = info
        .cookies
        .iter()
        .filter(|(n, _)| *n == cookie_name)
        .find_map(|(_, v)| gw.sessions.open::<LoginFlow>(Purpose::LoginFlow, v))
        .filter(|f| bool::from(f.state.as_bytes().ct_eq(state.as_bytes())))
        .filter(|f| flow_alive(gw, f.created_us));
    let Some(flow) = flow else {
        return login_failure(gw, LoginError::UnknownState, None, "/", ctx).cookies([consume]);
    };
    let Some(provider) = gw.provider(&flow.provider).cloned() else {
        return login_failure(gw, LoginError::UnknownState, None, "/", ctx).cookies([consume]);
    };
    let result = finish_login(gw, info, &provider, &flow).await;
    match result {
        Ok((mut session, id_token)) => {
            let session_spec = gw.cookie_spec(info.secure);
            if gw.sessions.server_side() {
                session.id_token = Some(id_token.clone());
            }
            let issued = match create_fitting(gw, &mut session, &session_spec, info, ctx).await {
                Ok(issued) => issued,
                Err(e) => {
                    return login_failure(gw, e, Some(&provider), &flow.return_to, ctx)
                        .cookies([consume])
                }
            };
            gw.metrics.logins_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(request_id = %ctx.request_id, provider = %flow.provider, session = %session.id, sub = %gw.audit.log_subject(&flow.provider, session.sub()), "login succeeded");
            let mut event = gw.audit_event(Kind::LoginSucceeded, ctx).session(&session);
            if let Some(route) = route_of(gw, info, &flow.return_to) {
                event = event.route(route);
            }
            gw.audit.write(event);
            // A step-up or a new login replaces the browser's session: the one it had ends everywhere,
            // so a copy of the old cookie is not a second, weaker way in.
            if gw.sessions.shared.is_some() {
                if let SessionState::Valid { session: old, .. } =
                    gw.sessions.load(&info.cookies, &session_spec).await
                {
                    if old.id != session.id {
                        if let Err(e) = gw.sessions.revoke(&old, Cause::Replaced).await {
                            tracing::warn!(request_id = %ctx.request_id, session = %old.id, error = %e, "the replaced session could not be revoked");
                        }
                    }
                }
            }
            let mut cookies = vec![consume];
            cookies.extend(issued);
            if !gw.sessions.server_side() {
                cookies.extend(hint_cookies(gw, info, &session, id_token, ctx));
            }
            Reply::redirect(&flow.return_to).cookies(cookies)
        }
        Err(e) => login_failure(gw, e, Some(&provider), &flow.return_to, ctx).cookies([consume]),
    }
}

async fn finish_login(
    gw: &Gateway,
    info: &RequestInfo,
    provider: &Provider,
    flow: &LoginFlow,
) -> Result<(Session, String), LoginError> {
    provider
        .check_response_issuer(info.param("iss").as_deref())
        .await?;
    if let Some(error) = info.param("error") {
        return Err(LoginError::ProviderError {
            error: truncate(&error, 64),
            description: info.param("error_description").map(|d| truncate(&d, 256)),
        });
    }
    let code = info
        .param("code")
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or(LoginError::MissingCode)?;
    let expect = Expectations {
        nonce: &flow.nonce,
        pkce_verifier: &flow.pkce_verifier,
        scopes: &flow.scopes,
        acr: flow.acr.as_ref(),
    };
    let verified = provider
        .finish(&code, &callback_uri(gw, info), &expect)
        .await?;
    let claims = normalise(&flow.provider, verified.claims);
    let now = now();
    let session = Session {
        id: super::correlation_id(),
        provider: flow.provider.clone(),
        claims,
        scopes: verified.scopes,
        requested: flow.scopes.clone(),
        requested_acr: flow
            .acr
            .as_ref()
            .map(|a| a.values.clone())
            .unwrap_or_default(),
        created: now,
        last_seen: now,
        id_token: None,
        rendered: Default::default(),
    };
    Ok((session, verified.id_token))
}

/// The id_token is needed only as the `id_token_hint` of logout, and it is most of a session's size.
/// It lives in its own cookie, sent only to Passerelle's endpoints, so proxied requests do not carry it.
fn hint_cookie_spec(gw: &Gateway, info: &RequestInfo) -> CookieSpec {
    CookieSpec {
        secure: gw.config.session.secure.unwrap_or(info.secure),
        path: gw.config.server.prefix.clone(),
    }
}

fn hint_cookie_name(gw: &Gateway) -> String {
    format!("{}_idt", gw.config.session.cookie_name)
}

/// The id_token of `session`: kept with it server-side, or in the hint cookie if that belongs to it.
fn id_token_hint(gw: &Gateway, info: &RequestInfo, session: &Session) -> Option<String> {
    if let Some(t) = &session.id_token {
        return Some(t.clone());
    }
    let joined = cookies::join(&info.cookies, &hint_cookie_name(gw))?;
    gw.sessions
        .open::<IdTokenHint>(Purpose::IdTokenHint, &joined)
        .filter(|h| h.session == session.id)
        .map(|h| h.id_token)
}

/// The id_token hint, chunked like the session. When it does not fit, logout goes without
/// `id_token_hint` (the provider then asks the person to confirm) rather than the login failing.
fn hint_cookies(
    gw: &Gateway,
    info: &RequestInfo,
    session: &Session,
    id_token: String,
    ctx: &Ctx,
) -> Vec<String> {
    let spec = hint_cookie_spec(gw, info);
    let name = hint_cookie_name(gw);
    let present = cookies::present_chunks(&info.cookies, &name);
    let hint = IdTokenHint {
        session: session.id.clone(),
        id_token,
    };
    let sealed = gw.sessions.seal(Purpose::IdTokenHint, &hint);
    match cookies::write_chunked(
        &spec,
        &name,
        &sealed,
        gw.config.session.max_lifetime,
        present,
    ) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, error = %e, "id_token too large to keep: logout will go without id_token_hint");
            (0..present)
                .map(|i| spec.delete(&cookies::chunk_name(&name, i)))
                .collect()
        }
    }
}

/// `Set-Cookie` values deleting the id_token hint, every chunk present and the first in any case.
fn clear_hint_cookies(gw: &Gateway, info: &RequestInfo) -> Vec<String> {
    cookies::delete_chunked(
        &hint_cookie_spec(gw, info),
        &hint_cookie_name(gw),
        &info.cookies,
    )
}

/// Claims the configuration reads: the ones routes turn into headers or rules on, and those the
/// session itself needs (`sub`, `acr` for step-up, `sid` and `amr` for logout and audit).
fn claims_in_use(gw: &Gateway) -> BTreeSet<String> {
    let mut used: BTreeSet<String> = ["sub", "acr", "amr", "sid", "iss"]
        .into_iter()
        .map(String::from)
        .collect();
    for route in gw.routes.all() {
        used.extend(route.headers.iter().map(|(_, claim)| claim.clone()));
        used.extend(route.require.claims().map(String::from));
    }
    used
}

/// Creates the session; when its cookies would not fit in what a browser keeps and `load` reads back,
/// drops the claims no route uses (named in the log) and tries again. Still too large: the login fails
/// with a page, rather than looping through the provider forever. A server-side session always fits.
async fn create_fitting(
    gw: &Gateway,
    session: &mut Session,
    spec: &CookieSpec,
    info: &RequestInfo,
    ctx: &Ctx,
) -> Result<Vec<String>, LoginError> {
    match gw.sessions.create(session, spec, &info.cookies).await {
        Ok(set) => return Ok(set),
        Err(CreateError::Store(e)) => return Err(LoginError::SessionStore(e.to_string())),
        Err(CreateError::TooLarge(_)) => {}
    }
    let used = claims_in_use(gw);
    let dropped: Vec<String> = session
        .claims
        .keys()
        .filter(|c| !used.contains(*c))
        .cloned()
        .collect();
    session.claims.retain(|c, _| used.contains(c));
    tracing::warn!(request_id = %ctx.request_id, dropped = ?dropped, "session too large for cookies: claims no route uses were dropped");
    match gw.sessions.create(session, spec, &info.cookies).await {
        Ok(set) => Ok(set),
        Err(CreateError::Store(e)) => Err(LoginError::SessionStore(e.to_string())),
        Err(CreateError::TooLarge(e)) => Err(LoginError::SessionTooLarge(e.0)),
    }
}

/// The route a login returns to: the one whose upstream the new session's claims will reach first.
fn route_of<'a>(
    gw: &'a Gateway,
    info: &RequestInfo,
    return_to: &str,
) -> Option<&'a crate::config::RouteConfig> {
    let path = return_to.split(['?', '#']).next()?;
    if !path.starts_with('/') {
        return None;
    }
    let normalised = crate::routes::normalise_path(path).ok()?;
    gw.routes.find(info.host(), &normalised.matching)
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The page for a failed login; the details go to the log under the correlation id, never to the page.
fn login_failure(
    gw: &Gateway,
    e: LoginError,
    provider: Option<&Arc<Provider>>,
    rd: &str,
    ctx: &Ctx,
) -> Reply {
    gw.metrics.logins_failed[e.reason_index()].fetch_add(1, Ordering::Relaxed);
    match e.is_ordinary() {
        true => {
            tracing::info!(request_id = %ctx.request_id, provider = provider.map(|p| p.name()), error = %e, "login failed")
        }
        false => {
            tracing::warn!(request_id = %ctx.request_id, provider = provider.map(|p| p.name()), error = %e, "login failed")
        }
    }
    let mut event = gw.audit_event(Kind::LoginFailed, ctx).reason(&format!(
        "{}: {e}",
        crate::oidc::FAILURE_REASONS[e.reason_index()]
    ));
    if let Some(p) = provider {
        event = event.provider(p.name());
    }
    gw.audit.write_limited(event, ctx.peer);
    let retry = match provider {
        Some(p) => format!(
            "{}/login?provider={}&rd={}",
            gw.config.server.prefix,
            urlencode(p.name()),
            urlencode(rd)
        ),
        None => format!("{}/login?rd={}", gw.config.server.prefix, urlencode(rd)),
    };
    let action = Some((retry.as_str(), "Se reconnecter"));
    match &e {
        LoginError::UnknownState | LoginError::CodeRejected(_) => error_reply(400, "Connexion expirée", "Cette tentative de connexion a expiré ou a déjà été utilisée. Recommencez depuis le service.", "This sign-in attempt expired or was already used.", action, ctx),
        LoginError::AcrNotSatisfied { .. } => error_reply(403, "Niveau d'authentification insuffisant", "Ce service demande une authentification plus forte que celle obtenue (par exemple une double authentification). Reconnectez-vous avec un moyen d'authentification adapté.", "This service needs a stronger authentication level.", action, ctx),
        LoginError::ProviderError { error, .. } if error == "access_denied" => error_reply(403, "Connexion refusée", "Le fournisseur d'identité a refusé la connexion.", "The identity provider denied the sign-in.", action, ctx),
        LoginError::ProviderError { error, .. } if error == "login_required" => error_reply(401, "Connexion nécessaire", "Vous devez vous connecter auprès du fournisseur d'identité.", "You need to sign in at the identity provider.", action, ctx),
        LoginError::ProviderError { .. } => error_reply(502, "Erreur du fournisseur d'identité", "Le fournisseur d'identité a signalé une erreur.", "The identity provider reported an error.", action, ctx),
        LoginError::SessionStore(_) => error_reply(503, "Service momentanément indisponible", "La connexion n'a pas pu être enregistrée : le stockage des sessions ne répond pas. Réessayez dans quelques instants.", "The session store is not answering; try again in a moment.", action, ctx),
        LoginError::SessionTooLarge(_) => error_reply(400, "Identité trop volumineuse", "Votre fournisseur d'identité transmet plus d'informations que ce service ne peut en conserver. Contactez l'assistance du service en indiquant la référence ci-dessous.", "Your identity provider sends more data than this service can keep.", Some(("/", "Revenir à l'accueil")), ctx),
        e if e.is_upstream_failure() => error_reply(502, "Fournisseur d'identité indisponible", "Le fournisseur d'identité ne répond pas correctement. Réessayez dans quelques instants.", "The identity provider is not answering correctly.", action, ctx),
        _ => error_reply(400, "Connexion impossible", "La réponse du fournisseur d'identité n'a pas pu être vérifiée.", "The identity provider's response could not be verified.", action, ctx),
    }
}

async fn logout(gw: &Gateway, info: &RequestInfo, ctx: &mut Ctx) -> Reply {
    let rd = return_to(gw, info);
    let spec = gw.cookie_spec(info.secure);
    let mut cookies = gw.sessions.clear(&spec, &info.cookies);
    cookies.extend(clear_hint_cookies(gw, info));
    let session = match gw.sessions.load(&info.cookies, &spec).await {
        SessionState::Valid { session, .. } => Some(session),
        _ => None,
    };
    let Some(session) = session else {
        return ended_locally(gw, Reply::redirect(&logged_out_target(gw, &rd))).cookies(cookies);
    };
    tracing::info!(request_id = %ctx.request_id, session = %session.id, "logout");
    gw.audit
        .write(gw.audit_event(Kind::Logout, ctx).session(&session));
    // Before the provider round trip: a copy of the cookie is dead on every replica from here on.
    if let Err(e) = gw.sessions.revoke(&session, Cause::Logout).await {
        tracing::error!(request_id = %ctx.request_id, session = %session.id, error = %e, "logout: the session could not be revoked server-side; only this browser's copy is deleted");
    }
    let Some(provider) = gw.provider(&session.provider) else {
        return ended_locally(gw, Reply::redirect(&logged_out_target(gw, &rd))).cookies(cookies);
    };
    let state = openidconnect::CsrfToken::new_random_len(32)
        .secret()
        .clone();
    let post_logout = format!(
        "{}{}/logged-out",
        info.origin(&gw.config.server),
        gw.config.server.prefix
    );
    match provider
        .end_session_url(
            id_token_hint(gw, info, &session).as_deref(),
            &state,
            &post_logout,
        )
        .await
    {
        Some(url) => {
            let flow = LogoutFlow {
                state,
                return_to: rd,
                created_us: now_us(),
            };
            let flow_spec = gw.flow_cookie_spec(info.secure);
            cookies.push(flow_spec.set(
                &logout_cookie_name(gw, &flow_spec),
                &gw.sessions.seal(Purpose::LogoutFlow, &flow),
                Some(gw.config.session.login_timeout),
            ));
            Reply::redirect(&url).cookies(cookies)
        }
        None => ended_locally(gw, Reply::redirect(&logged_out_target(gw, &rd))).cookies(cookies),
    }
}

/// `Clear-Site-Data` goes on the answer that ends a logout here, not on the redirect to the provider:
/// browsers apply it after storing that response's cookies, so it would erase the logout flow cookie
/// and lose the state check and `rd` on the way back.
fn ended_locally(gw: &Gateway, reply: Reply) -> Reply {
    match SiteData::header_value(&gw.config.session.logout_clear_site_data) {
        Some(value) => reply.header("Clear-Site-Data", value),
        None => reply,
    }
}

fn logged_out_target(gw: &Gateway, rd: &str) -> String {
    if rd == "/" {
        format!("{}/logged-out", gw.config.server.prefix)
    } else {
        rd.to_string()
    }
}

/// Where the provider sends the browser back after logout. The state must be ours before `rd` is
/// followed; otherwise the person still gets the logged-out page (the local session is gone anyway).
fn logged_out(gw: &Gateway, info: &RequestInfo) -> Reply {
    let flow_spec = gw.flow_cookie_spec(info.secure);
    let name = logout_cookie_name(gw, &flow_spec);
    let flow = info
        .cookies
        .iter()
        .filter(|(n, _)| *n == name)
        .find_map(|(_, v)| gw.sessions.open::<LogoutFlow>(Purpose::LogoutFlow, v));
    let state = info.param("state");
    let matched = match (&flow, &state) {
        (Some(f), Some(s)) => {
            bool::from(f.state.as_bytes().ct_eq(s.as_bytes())) && flow_alive(gw, f.created_us)
        }
        _ => false,
    };
    let mut reply = ended_locally(
        gw,
        match flow {
            Some(f) if matched && f.return_to != "/" => Reply::redirect(&f.return_to),
            _ => Reply::html(200, pages::logged_out_page()),
        },
    );
    if info.cookies.iter().any(|(n, _)| *n == name) {
        reply = reply.cookies([flow_spec.delete(&name)]);
    }
    reply
}

async fn userinfo(gw: &Gateway, info: &RequestInfo) -> Reply {
    let spec = gw.cookie_spec(info.secure);
    match gw.sessions.load(&info.cookies, &spec).await {
        SessionState::Valid { session, .. } => {
            let remaining = session
                .created
                .saturating_add(gw.config.session.max_lifetime.as_secs())
                .saturating_sub(now());
            Reply::json(
                200,
                &serde_json::json!({
                    "provider": session.provider,
                    "claims": session.claims,
                    "scopes": session.scopes,
                    "expires_in": remaining,
                }),
            )
        }
        SessionState::Unavailable => Reply::json(
            503,
            &serde_json::json!({"error": "session_store_unavailable"}),
        )
        .header("Retry-After", "5".into()),
        _ => Reply::json(
            401,
            &serde_json::json!({"error": "authentication_required"}),
        ),
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
