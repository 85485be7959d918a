//! Validated configuration: the types the rest of Passerelle works with.
//!
//! Nothing here is a raw string waiting to be checked: a `Config` that exists is a config that passed
//! validation, so the request path never re-parses or second-guesses it.

use super::secret::Secret;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub routes: Vec<RouteConfig>,
    pub echo: Option<SocketAddr>,
    /// `None`: no audit trail.
    pub audit: Option<AuditConfig>,
    /// `[assertion] keys`: the first signs the routes' identity assertions, all are published.
    pub assertion_keys: Vec<AssertionKey>,
    /// `[pages]`: how Passerelle's own pages present the service.
    pub pages: crate::pages::Branding,
}

/// A P-256 private key (PKCS#8 DER), checked to load when the configuration was read.
#[derive(Clone, PartialEq, Eq)]
pub struct AssertionKey(pub Vec<u8>);

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssertionKey(***)")
    }
}

/// `route.assertion`: a signed JWT of what the route releases, for apps that verify rather than trust.
#[derive(Debug, Clone)]
pub struct RouteAssertion {
    pub header: http::HeaderName,
    pub audience: String,
    pub ttl: Duration,
}

/// A validated `[audit]` table.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub output: AuditOutput,
    /// With `pseudonymise = true`: the subject is written as an HMAC under this key.
    pub pseudonym_key: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// JSON lines on standard output (the operational log is on standard error).
    Stdout,
    /// Appended to this file, opened again at each reload (logrotate).
    File(String),
}

impl Config {
    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<ServerTls>,
    /// `Strict-Transport-Security` on every answer, as written (validated).
    pub hsts: Option<http::HeaderValue>,
    /// Plain-HTTP listeners that only redirect to https.
    pub redirect_http: Vec<SocketAddr>,
    pub public_url: Option<PublicUrl>,
    pub trusted_proxies: Vec<IpNet>,
    pub prefix: String,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub header_encoding: HeaderEncoding,
    pub identity_header_prefix: String,
    pub allowed_redirect_hosts: Vec<HostPattern>,
    pub log_format: LogFormat,
    pub upstream_timeout: Duration,
    /// How often upstream names are looked up again, so a changed DNS record is followed without a
    /// restart; zero means never (addresses fixed at start).
    pub resolve_interval: Duration,
    /// How long a client connection may stay silent between requests, and how long each read of a request's
    /// headers may wait: pingora alone reads the headers of a request after the first without any limit.
    pub keepalive_timeout: Duration,
    /// Request line plus headers, in bytes; larger requests get 431 before anything else reads them.
    pub max_header_bytes: usize,
    /// How the upstreams read paths: exactly, or the Windows way (IIS, ASP.NET).
    pub path_reading: crate::routes::PathReading,
    /// The one header forward-auth reads the original URI from.
    pub forward_auth_uri_header: ForwardAuthUriHeader,
    /// Bearer token of the admin listener's session API; `None` keeps that API off.
    pub admin_token: Option<Secret>,
    /// Where a new binary started with `run --upgrade` receives the listening sockets of the running one.
    pub upgrade_socket: String,
    /// Written by `run --daemon`, for a service manager following the process across upgrades.
    pub pid_file: String,
}

/// Where the front proxy puts the original request target for `/auth`. One per deployment: a client
/// can add the other header (Traefik copies the client's headers to the auth request), so reading
/// either would let the client choose the route decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthUriHeader {
    /// nginx `auth_request` with `proxy_set_header X-Original-URI $request_uri`.
    XOriginalUri,
    /// Traefik `forwardAuth`, which sets `X-Forwarded-Uri`.
    XForwardedUri,
}

impl ForwardAuthUriHeader {
    /// Every header some front proxy uses for the original target: all but the configured one are
    /// refused on `/auth`.
    pub const ALL_NAMES: [&'static str; 4] = [
        "x-original-uri",
        "x-forwarded-uri",
        "x-original-url",
        "x-rewrite-url",
    ];

    pub fn name(self) -> &'static str {
        match self {
            ForwardAuthUriHeader::XOriginalUri => "x-original-uri",
            ForwardAuthUriHeader::XForwardedUri => "x-forwarded-uri",
        }
    }
}

/// Who decides how a response to an identified request may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Passerelle: `public` becomes `private`, `Vary: Cookie`, no CDN-targeted caching headers.
    #[default]
    Private,
    /// The application's caching headers pass untouched (it knows what it shares).
    Upstream,
}

impl ServerConfig {
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// `server.tls`: the listener's certificates, checked at load (each key goes with its certificate).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// In the file's order; the first without `hosts` (else the first) answers names no other claims.
    pub certificates: Vec<ServerCertificate>,
    /// Asks clients for a certificate chaining to these roots (`client_ca`); optional for the client.
    pub client_ca: Option<ClientCa>,
}

/// The roots client certificates must chain to, and the file they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    pub file: String,
    /// DER certificates, each parsed at load.
    pub roots: Vec<Vec<u8>>,
}

/// One certificate and key by path (re-read on reload and when the files change) and the names it is
/// chosen for by SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    pub cert: String,
    pub key: String,
    pub hosts: Vec<HostPattern>,
}

/// The externally visible base URL: scheme, host and optional port, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub https: bool,
    /// `host` or `host:port`, as the browser writes it.
    pub authority: String,
}

impl PublicUrl {
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// How a non-ASCII claim value travels in a header. HTTP field values are ASCII in practice; legacy stacks
/// (servlet containers, PHP-FPM) decode raw bytes as Latin-1, so the default must be ASCII-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEncoding {
    /// RFC 3986 percent-encoding of the UTF-8 bytes; ASCII printable characters except `%` stay as they are.
    Percent,
    /// Raw UTF-8 bytes (for upstreams known to read them as UTF-8).
    Utf8,
    /// Standard base64 of the UTF-8 value, always (even for ASCII values).
    Base64,
    /// RFC 2047 `=?UTF-8?B?...?=` for non-ASCII values, ASCII values unchanged.
    Rfc2047,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub keys: Vec<[u8; 32]>,
    pub cookie_name: String,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub login_timeout: Duration,
    /// `Some` when forced by the config; `None` follows the scheme of the public URL / request.
    pub secure: Option<bool>,
    /// What the browser is asked to forget when a logout ends (`Clear-Site-Data`); empty: nothing.
    pub logout_clear_site_data: Vec<SiteData>,
    /// Where sessions live. With `Redis`, `redis` is always `Some`.
    pub store: SessionStore,
    /// Shared state: the server-side store, and the revocation set in cookie mode. `None`: logout ends
    /// only the browser's copy.
    pub redis: Option<RedisConfig>,
    /// How long a replica trusts its cached verdict on a session before asking Redis again: the most a
    /// lost revocation message can cost.
    pub recheck_interval: Duration,
    /// How long sessions already cached keep working while Redis cannot be reached.
    pub redis_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStore {
    /// The whole session, encrypted, in the cookie.
    Cookie,
    /// An opaque ticket in the cookie, the session encrypted in Redis.
    Redis,
}

/// A validated `[session.redis]` table. Compared on reload, secrets included (their `Debug` hides them).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    /// PEM roots for `rediss://`; `None` uses the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Prepended to every key and to the revocation channel, so several deployments can share a Redis.
    pub key_prefix: String,
    /// Bound on any one Redis operation, connection included.
    pub timeout: Duration,
}

/// Where Redis is. URLs are checked by the `redis` crate when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Sentinel {
        master: String,
        nodes: Vec<String>,
        username: Option<Secret>,
        password: Option<Secret>,
    },
    Cluster(Vec<String>),
}

/// A `Clear-Site-Data` directive. `cookies` also logs the person out of the upstream application's own
/// session (its JSESSIONID, PHPSESSID…), which a legacy app behind Passerelle would otherwise keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteData {
    Cache,
    Cookies,
    Storage,
}

impl SiteData {
    pub const ALL: [SiteData; 3] = [SiteData::Cache, SiteData::Cookies, SiteData::Storage];

    pub fn name(self) -> &'static str {
        match self {
            SiteData::Cache => "cache",
            SiteData::Cookies => "cookies",
            SiteData::Storage => "storage",
        }
    }

    /// The header value for these directives, `None` when there are none.
    pub fn header_value(directives: &[SiteData]) -> Option<String> {
        if directives.is_empty() {
            return None;
        }
        let quoted: Vec<String> = directives
            .iter()
            .map(|d| format!("\"{}\"", d.name()))
            .collect();
        Some(quoted.join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    Oidc,
    Dev(DevProviderConfig),
    /// ProConnect (formerly AgentConnect): `claims`-based acr/amr, `client_secret_post`, signed userinfo.
    ProConnect {
        network: Network,
        environment: Environment,
    },
    /// NC Connect: v3 (Keycloak realm) or v2 (legacy, nested userinfo).
    NcConnect {
        version: u8,
        environment: Environment,
    },
}

impl ProviderKind {
    pub fn label(&self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
            ProviderKind::Dev(_) => "dev",
            ProviderKind::ProConnect { .. } => "proconnect",
            ProviderKind::NcConnect { .. } => "nc-connect",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Internet,
    Rie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Integration,
    Production,
}

/// An acr requirement, sent through the `claims` parameter and checked in the id_token when essential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AcrPolicy {
    pub essential: bool,
    pub values: Vec<String>,
}

/// Optional authorization-request parameters; a route's hints override its provider's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeHints {
    pub prompt: Option<String>,
    pub idp_hint: Option<String>,
    pub login_hint: Option<String>,
    pub siret_hint: Option<String>,
}

impl AuthorizeHints {
    pub fn overridden_by(&self, over: &AuthorizeHints) -> AuthorizeHints {
        AuthorizeHints {
            prompt: over.prompt.clone().or_else(|| self.prompt.clone()),
            idp_hint: over.idp_hint.clone().or_else(|| self.idp_hint.clone()),
            login_hint: over.login_hint.clone().or_else(|| self.login_hint.clone()),
            siret_hint: over.siret_hint.clone().or_else(|| self.siret_hint.clone()),
        }
    }
}

/// Access rules on claims; every rule set must pass, each is an allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub siret: Vec<String>,
    /// Lower-case domains, matched exactly against the part after the single `@`.
    pub email_domain: Vec<String>,
    pub idp_id: Vec<String>,
    pub roles: Vec<String>,
    pub belonging_population: Vec<String>,
}

impl AccessRules {
    pub fn is_empty(&self) -> bool {
        self.siret.is_empty()
            && self.email_domain.is_empty()
            && self.idp_id.is_empty()
            && self.roles.is_empty()
            && self.belonging_population.is_empty()
    }

    /// The claims these rules read.
    pub fn claims(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("siret", &self.siret),
            ("email", &self.email_domain),
            ("idp_id", &self.idp_id),
            ("roles", &self.roles),
            ("belonging_population", &self.belonging_population),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(claim, _)| claim)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevProviderConfig {
    pub listen: SocketAddr,
    pub signed_userinfo: bool,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Exactly as written in the configuration: it is compared byte for byte with the provider's.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: AuthMethod,
    pub scopes: BTreeSet<String>,
    pub display_name: String,
    pub timeout: Duration,
    pub id_token_algs: Vec<String>,
    pub fetch_userinfo: bool,
    pub acr: Option<AcrPolicy>,
    /// Ask for `amr` in the id_token through `claims` (ProConnect leaves it out otherwise).
    pub request_amr: bool,
    pub hints: AuthorizeHints,
    /// HTTP CONNECT proxy for back-channel calls (discovery, JWKS, token, userinfo): RIE networks.
    pub egress_proxy: Option<String>,
    /// Extra trust anchors (PEM) for back-channel TLS, e.g. a private RIE authority.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No session: navigations go to the provider, other requests get 401.
    Required,
    /// Forwarded with identity headers when a session exists, without them otherwise.
    Optional,
    /// Never authenticated; identity headers are still stripped.
    Public,
}

/// A host rule: exact (`app.example.gouv.fr`) or every subdomain (`*.example.gouv.fr`, dot boundary,
/// apex excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored with its leading dot: `.example.gouv.fr`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        // The same normalisation as requests' hosts (case, trailing dot, IDNA), so `bücher.example`
        // in the file matches `xn--bcher-kva.example` on the wire.
        let name = crate::routes::normalise_host_name(name)
            .ok()
            .filter(|n| !n.starts_with('[') && n.split('.').all(|l| !l.starts_with('-') && !l.ends_with('-')))
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a host name (expected e.g. \"app.example.gouv.fr\" or \"*.example.gouv.fr\")"
                )
            })?;
        Ok(if wild {
            HostPattern::Subdomains(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    /// `host` must already be lower-case and without port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl UpstreamTarget {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How a route's https upstream is verified and what it is shown: checked at load, so that nothing in
/// pingora's TLS code (which panics on a certificate it cannot parse) ever sees a bad file.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// DER certificates trusted for this upstream instead of the system's roots, and the file they came from.
    pub ca: Option<(String, Vec<Vec<u8>>)>,
    /// Client certificate chain (leaf first) and private key, for upstreams that require mTLS.
    pub client: Option<ClientCertificate>,
    /// The name sent in SNI and verified in the certificate; the upstream URL's host by default.
    pub sni: Option<String>,
    /// Off only for an upstream whose certificate names none of the names it is reached by.
    pub verify_hostname: bool,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            ca: None,
            client: None,
            sni: None,
            verify_hostname: true,
        }
    }
}

#[derive(Clone)]
pub struct ClientCertificate {
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8, SEC1 or PKCS#1 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("chain", &self.chain.len())
            .field("key", &"***")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub index: usize,
    pub host: Option<HostPattern>,
    /// Normalised path prefix, starting with `/`.
    pub path: String,
    pub upstreams: Vec<UpstreamTarget>,
    /// For https upstreams: trust, client certificate, SNI and hostname verification.
    pub upstream_tls: UpstreamTls,
    /// HTTP/2 to the upstream (ALPN h2 over TLS, prior knowledge over plain TCP) instead of HTTP/1.1.
    pub upstream_h2: bool,
    /// Requests without a verified client certificate are refused (403) rather than forwarded without one.
    pub client_certificate_required: bool,
    pub assertion: Option<RouteAssertion>,
    pub auth: AuthMode,
    pub providers: Vec<String>,
    pub scopes: BTreeSet<String>,
    /// Header name (lower-case, validated) → claim name.
    pub headers: Vec<(http::HeaderName, String)>,
    pub header_encoding: HeaderEncoding,
    /// Path probed by the health check of a load-balanced upstream; `None` means a TCP check.
    pub health_check: Option<String>,
    pub acr: Option<AcrPolicy>,
    pub require: AccessRules,
    pub hints: AuthorizeHints,
    /// Forward CORS preflights without a session: browsers never send cookies on them, so a protected
    /// API called from another origin could not be reached otherwise. They carry no identity.
    pub cors_allow_preflight: bool,
    pub cache: CachePolicy,
    /// Why this route receives what it receives, in the words of the register of processing
    /// (`passerelle register`): kept next to the rule that enforces it, so the two cannot drift.
    pub purpose: Option<String>,
}
