//! The pingora `ProxyHttp` service: a thin orchestration of the phases.
//!
//! ```text
//! request ─▶ normalise path ─▶ own endpoint? ─▶ route ─▶ session ─▶ access decision ─▶ strip + inject ─▶ upstream
//! ```
//! Each decision lives in its module; this file only wires them in pingora's phases.

mod backchannel;
mod endpoints;
mod forward_auth;
mod request;
pub(crate) mod respond;
mod response;
mod service;

pub use request::{Refused, RequestInfo};
pub use respond::Reply;
pub use service::Passerelle;

use crate::access::{self, Refusal};
use crate::admin::Metrics;
use crate::config::{AuthMode, Config, ProviderConfig, RouteConfig};
use crate::identity::{render_headers, IdentityHeaderFilter};
use crate::oidc::Provider;
use crate::pages;
use crate::routes::RouteTable;
use crate::session::cookies::OwnCookieNames;
use crate::session::{now, CookieSpec, Session, SessionManager, SessionState};
use crate::upstream::Upstream;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, Session as HttpSession};
use pingora::upstreams::peer::HttpPeer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Everything the proxy needs, built from one configuration: one generation. A reload builds the next
/// and swaps it in; requests in flight finish on the one they started with.
pub struct Gateway {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub sessions: SessionManager,
    pub identity_filter: IdentityHeaderFilter,
    /// Indexed by `RouteConfig::index`.
    pub upstreams: Vec<Upstream>,
    pub metrics: Arc<Metrics>,
    /// Passerelle's cookie names: stripped from requests, refused in upstream responses.
    pub own_cookies: OwnCookieNames,
    /// Shared by every generation: one writer, one file.
    pub audit: Arc<crate::audit::Audit>,
    /// Shared by every generation: follows the upstream names of those alive.
    pub resolver: Arc<crate::upstream::Resolver>,
    /// Signs `route.assertion`; `None` without `[assertion] keys`.
    pub signer: Option<crate::identity::assertion::Signer>,
}

/// Per-request state carried between phases.
#[derive(Default)]
pub struct Ctx {
    pub request_id: String,
    /// The configuration generation this request started on: every phase of it, retries included,
    /// uses this one, whatever a reload swaps in meanwhile.
    gateway: Option<Arc<Gateway>>,
    route: Option<usize>,
    /// The request the access decision was taken on; every attempt upstream carries exactly this.
    forward: Option<Forward>,
    session: Option<Arc<Session>>,
    set_cookies: Vec<String>,
    /// Read only for what is audited (Passerelle's endpoints, refusals): not on the proxied path.
    user_agent: Option<http::HeaderValue>,
    secure: bool,
    trusted_peer: bool,
    peer: Option<std::net::IpAddr>,
    connect_retries: u8,
    /// Counts this request on its TLS connection until the request ends (`tls::MAX_IN_FLIGHT`).
    in_flight: Option<crate::tls::InFlight>,
}

/// The target and host the decision was taken on. pingora rebuilds the upstream request from the
/// client's for each attempt (a retry on a stale keep-alive connection, a failover in a pool), so this
/// is kept, not consumed, and applied to every one of them.
struct Forward {
    /// `None` when the target as received is already the normalised one: pingora's copy goes as it is.
    uri: Option<http::Uri>,
    /// The received `Host` when it is already spelled in normal form, else the normal form.
    host: http::HeaderValue,
}

impl Forward {
    /// What the upstream gets in place of the received target and `Host`. Most requests arrive in the
    /// normalised form already; for them nothing is parsed, formatted or inserted again. `None` if the
    /// normalised form cannot be written (it always can).
    fn new(info: &RequestInfo, req: &RequestHeader) -> Option<Forward> {
        let uri = match info.target_is_normalised(req) {
            true => None,
            false => Some(info.return_to().parse::<http::Uri>().ok()?),
        };
        let received = req
            .headers
            .get(http::header::HOST)
            .filter(|h| info.authority.is_spelled(h.as_bytes()));
        let host = match received {
            Some(host) => host.clone(),
            None => http::HeaderValue::from_str(&info.authority.to_string()).ok()?,
        };
        Some(Forward { uri, host })
    }
}

/// Twelve characters in three groups (`K7QD-3XPM-W9TA`): read aloud to support, never starting or ending with a
/// separator that would look cut; 60 random bits, unique enough for a log search.
pub fn correlation_id() -> String {
    use rand::RngCore;
    /// Crockford's base32: no I, L, O or U, nothing to mishear on the phone or misread on a screenshot.
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut n = rand::thread_rng().next_u64();
    let mut out = String::with_capacity(14);
    for i in 0..12 {
        if i == 4 || i == 8 {
            out.push('-');
        }
        out.push(ALPHABET[(n & 31) as usize] as char);
        n >>= 5;
    }
    out
}

impl Gateway {
    pub fn cookie_spec(&self, secure: bool) -> CookieSpec {
        CookieSpec {
            secure: self.config.session.secure.unwrap_or(secure),
            path: "/".into(),
        }
    }

    /// Flow cookies live at `/` like the session: a login may start on any protected path, and the
    /// cookies must be visible there to be counted and capped. They are never forwarded upstream.
    pub fn flow_cookie_spec(&self, secure: bool) -> CookieSpec {
        self.cookie_spec(secure)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// An audit event for this request: its correlation id, client address and user agent.
    pub fn audit_event(&self, kind: crate::audit::Kind, ctx: &Ctx) -> crate::audit::Event {
        crate::audit::Event::new(kind, &ctx.request_id)
            .client(ctx.peer, ctx.user_agent.as_ref().map(|v| v.as_bytes()))
    }

    fn user_agent(&self, session: &HttpSession) -> Option<http::HeaderValue> {
        match self.audit.enabled() {
            true => session
                .req_header()
                .headers
                .get(http::header::USER_AGENT)
                .cloned(),
            false => None,
        }
    }

    fn provider_configs<'a>(
        &'a self,
        names: &'a [String],
    ) -> impl Iterator<Item = &'a Arc<ProviderConfig>> + 'a {
        names.iter().filter_map(|n| self.config.provider(n))
    }

    /// Sends a person without a usable session to sign in (straight to the provider when the route has
    /// only one, to the sign-in page otherwise), or answers 401 to a non-navigation request.
    async fn login_required(
        &self,
        info: &RequestInfo,
        route: &crate::config::RouteConfig,
        clear: Vec<String>,
        ctx: &Ctx,
    ) -> Reply {
        if !info.navigation {
            return Reply::json(401, &serde_json::json!({"error": "authentication_required", "login": format!("{}/login", self.config.server.prefix)}))
                .header("WWW-Authenticate", "Passerelle".to_string())
                .cookies(clear);
        }
        let rd = info.return_to();
        if let [only] = route.providers.as_slice() {
            return endpoints::start_login(self, info, only, rd, Some(route), None, ctx)
                .await
                .cookies(clear);
        }
        let location = format!(
            "{}/login?rd={}",
            self.config.server.prefix,
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        Reply::redirect(&location).cookies(clear)
    }

    /// The answer to a session that does not satisfy the route: step-up, or a 403 page.
    async fn refuse(
        &self,
        info: &RequestInfo,
        route: &crate::config::RouteConfig,
        s: &Session,
        refusal: Refusal,
        ctx: &Ctx,
    ) -> Reply {
        let logout = format!("{}/logout", self.config.server.prefix);
        match refusal {
            Refusal::StepUp if info.navigation => {
                tracing::info!(request_id = %ctx.request_id, session = %s.id, route = route.index, "step-up: the route needs more than the session has");
                self.audit.write(self.audit_event(crate::audit::Kind::StepUp, ctx).session(s).route(route));
                endpoints::start_login(self, info, &s.provider, info.return_to(), Some(route), Some(s), ctx).await
            }
            Refusal::StepUp => Reply::json(401, &serde_json::json!({"error": "insufficient_scope", "login": format!("{}/login", self.config.server.prefix)}))
                .header("WWW-Authenticate", "Passerelle error=\"insufficient_scope\"".to_string()),
            Refusal::Insufficient => {
                tracing::warn!(request_id = %ctx.request_id, session = %s.id, route = route.index, "access refused: the provider did not grant what the route needs");
                self.audit.write_limited(self.audit_event(crate::audit::Kind::AccessRefused, ctx).session(s).route(route).reason("insufficient: the provider did not grant what the route needs"), ctx.peer);
                Reply::html(403, pages::error_page(
                    "Accès impossible",
                    "Ce service a besoin d'informations ou d'un niveau d'authentification que votre fournisseur d'identité n'a pas transmis. Reconnectez-vous avec un autre compte ou contactez l'assistance.",
                    "This service needs data or an authentication level your identity provider did not grant.",
                    Some((&logout, "Se connecter avec un autre compte")),
                    &ctx.request_id,
                ))
            }
            Refusal::Forbidden(rule) => {
                tracing::warn!(request_id = %ctx.request_id, session = %s.id, route = route.index, rule, "access refused by a require rule");
                self.audit.write_limited(self.audit_event(crate::audit::Kind::AccessRefused, ctx).session(s).route(route).reason(&format!("require.{rule}")), ctx.peer);
                Reply::html(403, pages::error_page(
                    "Accès refusé",
                    "Votre compte n'est pas autorisé à accéder à ce service (organisation, domaine de messagerie ou profil non admis). Si vous pensez que c'est une erreur, contactez l'assistance du service.",
                    "Your account is not allowed to use this service.",
                    Some((&logout, "Se connecter avec un autre compte")),
                    &ctx.request_id,
                ))
            }
        }
    }
}

/// The phases of pingora's `ProxyHttp`, run by [`Passerelle`] on the generation a request started with.
impl Gateway {
    /// Takes every access decision before anything reaches the upstream. `Ok(true)` means Passerelle
    /// answered itself.
    pub(crate) async fn request_filter(
        &self,
        session: &mut HttpSession,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(connection) = crate::tls::connection(session.digest()) {
            match connection.enter() {
                Some(counted) => ctx.in_flight = Some(counted),
                None => {
                    // Nothing is decided or proxied for it: the answer costs less than the request.
                    self.metrics.refused_busy.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(request_id = %ctx.request_id, "too many requests in flight on one connection");
                    Reply::text(429, "Too many requests on this connection")
                        .send(session)
                        .await?;
                    return Ok(true);
                }
            }
        }
        let info = match RequestInfo::read(session, &self.config.server) {
            Ok(info) => info,
            Err(e) => {
                tracing::info!(request_id = %ctx.request_id, reason = %e, "request refused");
                match e {
                    Refused::Path(_) => &self.metrics.refused_path,
                    Refused::HeadersTooLarge(_) => &self.metrics.refused_too_large,
                    _ => &self.metrics.refused_host,
                }
                .fetch_add(1, Ordering::Relaxed);
                let page = match e {
                    Refused::Path(_) => pages::error_page(
                        "Adresse invalide",
                        "L'adresse demandée n'est pas valide.",
                        "The requested address is not valid.",
                        Some(("/", "Revenir à l'accueil")),
                        &ctx.request_id,
                    ),
                    Refused::HeadersTooLarge(_) => pages::error_page(
                        "Requête trop volumineuse",
                        "Votre navigateur envoie trop de données (souvent des cookies accumulés). Effacez les cookies de ce site puis réessayez.",
                        "Your browser sends too much data (often accumulated cookies). Clear this site's cookies and try again.",
                        Some(("/", "Revenir à l'accueil")),
                        &ctx.request_id,
                    ),
                    _ => pages::error_page(
                        "Requête invalide",
                        "La requête n'a pas pu être traitée.",
                        "The request could not be processed.",
                        None,
                        &ctx.request_id,
                    ),
                };
                Reply::html(e.status(), page).send(session).await?;
                return Ok(true);
            }
        };
        ctx.secure = info.secure;
        ctx.trusted_peer = info.trusted;
        ctx.peer = info.peer;
        let prefix = &self.config.server.prefix;
        if let Some(rest) = info.path.matching.strip_prefix(prefix.as_str()) {
            ctx.user_agent = self.user_agent(session);
            if rest == "/backchannel-logout" {
                let reply = backchannel::handle(self, session, &ctx.request_id).await;
                reply.send(session).await?;
                return Ok(true);
            }
            if rest.is_empty() || rest.starts_with('/') {
                let reply = endpoints::handle(self, &info, session.req_header(), rest, ctx).await;
                reply.send(session).await?;
                return Ok(true);
            }
        }
        let Some(route) = self.routes.find(info.host(), &info.path.matching) else {
            let page = pages::error_page(
                "Page introuvable",
                "Aucun service n'est publié à cette adresse.",
                "No service is published at this address.",
                None,
                &ctx.request_id,
            );
            Reply::html(404, page).send(session).await?;
            return Ok(true);
        };
        ctx.route = Some(route.index);
        let Some(forward) = Forward::new(&info, session.req_header()) else {
            // Normalised paths and hosts always parse; if one ever did not, nothing goes upstream.
            tracing::warn!(request_id = %ctx.request_id, "normalised request cannot be written upstream");
            let page = pages::error_page(
                "Adresse invalide",
                "L'adresse demandée n'est pas valide.",
                "The requested address is not valid.",
                Some(("/", "Revenir à l'accueil")),
                &ctx.request_id,
            );
            Reply::html(400, page).send(session).await?;
            return Ok(true);
        };
        ctx.forward = Some(forward);
        if route.client_certificate_required && client_identity(session).is_none() {
            tracing::info!(request_id = %ctx.request_id, route = route.index, "no client certificate on a route that requires one");
            let page = pages::error_page(
                "Certificat requis",
                "Ce service est réservé aux agents munis d'un certificat (carte agent ou certificat RGS). Insérez votre carte ou installez votre certificat, fermez le navigateur puis réessayez.",
                "This service requires a client certificate (agent card or RGS certificate). Insert your card or install your certificate, close the browser and try again.",
                Some(("/", "Revenir à l'accueil")),
                &ctx.request_id,
            );
            Reply::html(403, page).send(session).await?;
            return Ok(true);
        }
        if route.auth == AuthMode::Public
            || (route.cors_allow_preflight && is_cors_preflight(session.req_header()))
        {
            return Ok(false);
        }
        let spec = self.cookie_spec(info.secure);
        let state = self.sessions.load(&info.cookies, &spec).await;
        let mut clear = Vec::new();
        match state {
            SessionState::Valid {
                session: s,
                refresh,
            } if route.providers.iter().any(|p| *p == s.provider) => {
                if refresh {
                    let mut updated = (*s).clone();
                    updated.last_seen = now();
                    // It fitted when it was issued, and only its timestamp changed.
                    if let Ok(cookies) = self.sessions.issue(&updated, &spec, &info.cookies) {
                        ctx.set_cookies = cookies;
                    }
                }
                let Err(refusal) = access::decide(route, &s) else {
                    ctx.session = Some(s);
                    return Ok(false);
                };
                if route.auth == AuthMode::Optional {
                    // Forwarded without identity: an optional route never gets claims it may not have.
                    return Ok(false);
                }
                ctx.user_agent = self.user_agent(session);
                let reply = self
                    .refuse(&info, route, &s, refusal, ctx)
                    .await
                    .cookies(std::mem::take(&mut ctx.set_cookies));
                reply.send(session).await?;
                return Ok(true);
            }
            SessionState::Valid { .. } => {}
            SessionState::Expired => {
                self.metrics
                    .sessions_expired
                    .fetch_add(1, Ordering::Relaxed);
                clear = self.sessions.clear(&spec, &info.cookies);
            }
            SessionState::Revoked => {
                self.metrics
                    .sessions_revoked
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(request_id = %ctx.request_id, "revoked session presented");
                clear = self.sessions.clear(&spec, &info.cookies);
            }
            SessionState::Unavailable => {
                let page = pages::error_page(
                    "Service momentanément indisponible",
                    "Votre session ne peut pas être vérifiée pour le moment : le stockage des sessions ne répond pas. Réessayez dans quelques instants ; vous n'aurez pas à vous reconnecter.",
                    "Your session cannot be checked right now: the session store is not answering. Try again in a moment.",
                    None,
                    &ctx.request_id,
                );
                Reply::html(503, page)
                    .header("Retry-After", "5".to_string())
                    .send(session)
                    .await?;
                return Ok(true);
            }
            SessionState::Invalid(reason) => {
                self.metrics
                    .sessions_invalid
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(request_id = %ctx.request_id, reason, "session cookie refused");
                clear = self.sessions.clear(&spec, &info.cookies);
            }
            SessionState::None => {}
        }
        if route.auth == AuthMode::Optional {
            ctx.set_cookies = clear;
            return Ok(false);
        }
        let reply = self.login_required(&info, route, clear, ctx).await;
        reply.send(session).await?;
        Ok(true)
    }

    pub(crate) async fn upstream_peer(
        &self,
        _session: &mut HttpSession,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let index = ctx.route.ok_or_else(|| {
            pingora::Error::explain(pingora::ErrorType::InternalError, "no route selected")
        })?;
        let mut peer = self
            .upstreams
            .get(index)
            .and_then(|u| u.peer(self.config.server.upstream_timeout))
            .ok_or_else(|| {
                pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, "no healthy upstream")
            })?;
        if self.routes.get(index).is_some_and(|r| r.upstream_h2) {
            // Over TLS, h2 offered by ALPN with http/1.1 kept; over plain TCP there is no negotiation,
            // so h2 with prior knowledge (h2c), which the operator asked for.
            let min = if peer.is_tls() { 1 } else { 2 };
            peer.options.set_http_version(2, min);
        }
        Ok(Box::new(peer))
    }

    /// Strips every header that could pass for identity, then sets the route's headers from the session.
    /// This runs for every proxied request, public routes included.
    pub(crate) async fn upstream_request_filter(
        &self,
        downstream: &mut HttpSession,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let spoofable = |name: &&http::HeaderName| {
            self.identity_filter.is_identity(name.as_str())
                || (!ctx.trusted_peer && is_forwarding_header(name.as_str()))
        };
        // Most requests carry none: then nothing is collected.
        if upstream.headers.keys().any(|name| spoofable(&name)) {
            let names: Vec<http::HeaderName> =
                upstream.headers.keys().filter(spoofable).cloned().collect();
            for name in names {
                upstream.remove_header(&name);
            }
        }
        self.strip_own_cookies(upstream);
        let Some(forward) = ctx.forward.as_ref() else {
            return Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "no access decision for this request",
            ));
        };
        if let Some(uri) = &forward.uri {
            upstream.set_uri(uri.clone());
        }
        // Compared, not assumed: the received `Host` may differ in spelling, or have been stripped above.
        if upstream.headers.get(http::header::HOST) != Some(&forward.host) {
            upstream.insert_header(http::header::HOST, forward.host.clone())?;
        }
        self.set_forwarding_headers(upstream, ctx, &forward.host)?;
        if let (Some(client), Some(route)) = (
            client_identity(downstream),
            ctx.route.and_then(|i| self.routes.get(i)),
        ) {
            // From the handshake of this very connection: never cached with the session, which another
            // connection (another card) may present.
            for (name, claim) in &route.headers {
                if let Some(text) = client.claim(claim) {
                    let encoded =
                        crate::identity::headers::encode_value(text, route.header_encoding);
                    if let Ok(value) = http::HeaderValue::from_bytes(&encoded) {
                        upstream.insert_header(name.clone(), value)?;
                    }
                }
            }
        }
        let (Some(index), Some(session)) = (ctx.route, ctx.session.as_ref()) else {
            return Ok(());
        };
        let Some(route) = self.routes.get(index) else {
            return Ok(());
        };
        let rendered = session
            .rendered
            .get_or_render(route.index, || render_headers(route, &session.claims));
        for (name, value) in rendered.iter() {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        if let Some(assertion) = &route.assertion {
            let value = self.assertion(route, assertion, session).ok_or_else(|| {
                pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "the route's identity assertion cannot be signed",
                )
            })?;
            upstream.insert_header(assertion.header.clone(), value)?;
        }
        Ok(())
    }

    /// The session's assertion for `route`, signed at most once per half lifetime.
    pub(crate) fn assertion(
        &self,
        route: &RouteConfig,
        assertion: &crate::config::RouteAssertion,
        session: &Session,
    ) -> Option<http::HeaderValue> {
        let signer = self.signer.as_ref()?;
        let now = crate::session::now();
        session
            .rendered
            .get_or_sign(route.index, now, assertion.ttl.as_secs(), || {
                match signer.sign(route, assertion, &session.claims, now) {
                    Ok((token, exp)) => Some((http::HeaderValue::try_from(token).ok()?, exp)),
                    Err(e) => {
                        tracing::error!(error = %e, route = route.index, "identity assertion not signed");
                        None
                    }
                }
            })
    }

    /// A refused connection to one member of a pool is retried on another before the health check has
    /// noticed: the person never sees the transition.
    pub(crate) fn fail_to_connect(
        &self,
        _session: &mut HttpSession,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        let pooled = ctx
            .route
            .and_then(|i| self.upstreams.get(i))
            .is_some_and(|u| u.is_pool());
        if pooled && ctx.connect_retries < 2 {
            ctx.connect_retries += 1;
            e.set_retry(true);
        }
        e
    }

    pub(crate) async fn response_filter(
        &self,
        _session: &mut HttpSession,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Hop-by-hop (RFC 9110 §7.6.1): the upstream's keep-alive terms are for its connection to us, not the
        // client's; HTTP/2 has no such field at all.
        if upstream_response.headers.contains_key(&KEEP_ALIVE) {
            upstream_response.remove_header(&KEEP_ALIVE);
        }
        if let Some(hsts) = &self.config.server.hsts {
            upstream_response
                .insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        let removed = response::remove_own_set_cookies(upstream_response, &self.own_cookies);
        if removed > 0 {
            self.metrics
                .upstream_cookies_removed
                .fetch_add(removed as u64, Ordering::Relaxed);
            tracing::warn!(request_id = %ctx.request_id, route = ?ctx.route, removed, "the upstream tried to set Passerelle's cookies: removed");
        }
        if ctx.session.is_some() {
            let policy = ctx
                .route
                .and_then(|i| self.routes.get(i))
                .map(|r| r.cache)
                .unwrap_or_default();
            response::keep_private(upstream_response, policy);
        }
        if !ctx.set_cookies.is_empty() {
            response::forbid_storage(upstream_response);
            for cookie in ctx.set_cookies.drain(..) {
                upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
            }
        }
        Ok(())
    }

    pub(crate) async fn fail_to_proxy(
        &self,
        session: &mut HttpSession,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let code = match e.etype() {
            pingora::ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => match e.etype() {
                    pingora::ErrorType::WriteError
                    | pingora::ErrorType::ReadError
                    | pingora::ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        // Once the upstream's response header has gone out, a page of ours would be appended to the
        // app's partial body and framed as if it were the rest of it: close the connection instead, so
        // the client sees a truncated response rather than a complete-looking wrong one.
        let header_sent = session.response_written().is_some();
        match (code, header_sent) {
            (0, _) => {}
            (_, true) => {
                tracing::warn!(request_id = %ctx.request_id, status = code, error = %e, "request failed after the response started; connection closed");
            }
            (_, false) if is_upstream_tls_failure(e) => {
                let tls = ctx
                    .route
                    .and_then(|i| self.upstreams.get(i))
                    .and_then(|u| u.tls());
                tracing::error!(
                    request_id = %ctx.request_id,
                    route = ?ctx.route,
                    sni = tls.map(|t| t.sni()),
                    ca_file = tls.and_then(|t| t.ca_file()).unwrap_or("system roots"),
                    verify_hostname = tls.map(|t| t.verifies_hostname()),
                    error = %e,
                    "upstream TLS refused: the upstream's certificate is not trusted by this route (upstream_tls.ca_file, sni), or it refused the client certificate"
                );
                let page = pages::error_page(
                    "Connexion au service refusée",
                    "La connexion sécurisée au service n'a pas pu être établie : un certificat n'a pas été reconnu. L'équipe d'exploitation doit intervenir ; communiquez-lui l'identifiant ci-dessous.",
                    "The secure connection to the service could not be established: a certificate was not accepted. The operations team must act; give them the identifier below.",
                    Some(("/", "Revenir à l'accueil")),
                    &ctx.request_id,
                );
                let _ = Reply::html(502, page).send(session).await;
            }
            (_, false) => {
                // A request the client got wrong is the client's business; a failure to serve, ours.
                match code {
                    400..=499 => {
                        tracing::info!(request_id = %ctx.request_id, status = code, error = %e, "request failed")
                    }
                    _ => {
                        tracing::warn!(request_id = %ctx.request_id, status = code, error = %e, "request failed")
                    }
                }
                let (title, message, english) = match code {
                    400..=499 => ("Requête invalide", "La requête n'a pas pu être traitée.", "The request could not be processed."),
                    _ => ("Service indisponible", "Le service demandé ne répond pas pour le moment. Réessayez dans quelques instants.", "The service is not answering at the moment."),
                };
                let page = pages::error_page(
                    title,
                    message,
                    english,
                    Some(("/", "Revenir à l'accueil")),
                    &ctx.request_id,
                );
                // The connection is not reused either way: a failed write needs no other handling.
                let _ = Reply::html(code, page).send(session).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    pub(crate) async fn logging(
        &self,
        session: &mut HttpSession,
        e: Option<&pingora::Error>,
        ctx: &mut Ctx,
    ) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        if status >= 500 {
            self.metrics.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(request_id = %ctx.request_id, status, error = e.map(|e| e.to_string()), "request done");
    }
}

/// A handshake with the upstream that failed on trust (its certificate, or ours), rather than on a
/// network error: the operator has something to fix, and the person is told so.
/// With TLS 1.3 the upstream refuses a client certificate after the handshake: that arrives as a read
/// error carrying the upstream's TLS alert.
fn is_upstream_tls_failure(e: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    if e.esource() != &pingora::ErrorSource::Upstream {
        return false;
    }
    if matches!(
        e.etype(),
        TLSHandshakeFailure | InvalidCert | HandshakeError
    ) {
        return true;
    }
    let root = e.root_cause();
    let alert = root
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .or_else(|| root.downcast_ref::<rustls::Error>());
    matches!(
        alert,
        Some(rustls::Error::AlertReceived(_) | rustls::Error::InvalidCertificate(_))
    )
}

/// Forwarding headers are believed only from trusted proxies; from anyone else they are removed, so
/// the upstream cannot be told a false client address or scheme (oauth2-proxy CVE-2026-40575).
fn is_forwarding_header(name: &str) -> bool {
    use crate::identity::headers::folded_eq;
    let n = name.as_bytes();
    (n.len() > 12 && folded_eq(&n[..12], b"x-forwarded-"))
        || [
            b"forwarded".as_slice(),
            b"x-real-ip",
            b"x-original-url",
            b"x-original-uri",
            b"x-rewrite-url",
            b"x-forwarded-uri",
        ]
        .iter()
        .any(|f| folded_eq(n, f))
}

impl Gateway {
    /// Tells the upstream who the client is and how it reached us. From an untrusted peer every inbound
    /// forwarding header was removed above, so these are Passerelle's own; behind a trusted proxy its
    /// values are kept and the peer is appended to the chain.
    fn set_forwarding_headers(
        &self,
        upstream: &mut RequestHeader,
        ctx: &Ctx,
        host: &http::HeaderValue,
    ) -> pingora::Result<()> {
        // The host routed on, whoever named it: the app never sees another spelling of it.
        upstream.insert_header("X-Forwarded-Host", host.clone())?;
        if ctx.trusted_peer {
            if let Some(peer) = ctx.peer {
                let chain = match upstream
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(existing) => format!("{existing}, {peer}"),
                    None => peer.to_string(),
                };
                upstream.insert_header("X-Forwarded-For", chain)?;
            }
            return Ok(());
        }
        if let Some(peer) = ctx.peer {
            upstream.insert_header("X-Forwarded-For", ip_header_value(peer))?;
        }
        upstream.insert_header(
            "X-Forwarded-Proto",
            if ctx.secure { "https" } else { "http" },
        )?;
        Ok(())
    }

    /// Passerelle's cookies are its own: the upstream never sees the session, its chunks, the flows or
    /// the id_token hint (oauth2-proxy #388; mod_auth_openidc `OIDCStripCookies`). On bytes, so a cookie
    /// of the app's that is not ASCII neither hides ours nor gets lost.
    ///
    /// HTTP/2 lets a browser send each cookie in a field of its own (RFC 9113 §8.2.3); they reach the
    /// upstream as one `Cookie` line, joined with "; " as that section requires of an intermediary, whatever
    /// protocol the upstream speaks.
    fn strip_own_cookies(&self, upstream: &mut RequestHeader) {
        let Some(kept) = self.own_cookies.strip_request(&upstream.headers) else {
            return;
        };
        upstream.remove_header(&http::header::COOKIE);
        if kept.is_empty() {
            return;
        }
        match http::HeaderValue::from_bytes(&kept) {
            Ok(value) => {
                let _ = upstream.insert_header(http::header::COOKIE, value);
            }
            // Every byte came from the request's own header lines; this cannot happen, and if it did
            // the app would lose its cookies rather than get ours.
            Err(_) => {
                tracing::warn!("the application's cookies could not be re-encoded and were dropped")
            }
        }
    }
}

/// The verified client certificate of the request's TLS connection, if it showed one.
fn client_identity(
    session: &HttpSession,
) -> Option<&crate::tls::client_certificate::ClientIdentity> {
    crate::tls::connection(session.digest())?.client.as_ref()
}

const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");

/// An address as `X-Forwarded-For` carries it. IPv4, on every proxied request, is written by hand: the
/// `Display` of `Ipv4Addr` goes through the formatting machinery, ten times the work.
fn ip_header_value(ip: std::net::IpAddr) -> http::HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return http::HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    http::HeaderValue::from_bytes(&text[..len])
        .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"))
}

/// A CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`. A bare OPTIONS is not
/// one, so `cors_allow_preflight` cannot be used to reach an application's OPTIONS handler anonymously.
fn is_cors_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 101, 109, 110, 199, 200, 255];
        for a in octets {
            for b in octets {
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, b / 2));
                assert_eq!(ip_header_value(ip).as_bytes(), ip.to_string().as_bytes());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(ip_header_value(v6).as_bytes(), b"2001:db8::1");
    }
}
