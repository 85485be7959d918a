//! Configuration: read the TOML file, resolve secrets, validate, and produce a typed [`Config`].
//!
//! Two layers, as in river: [`raw`] mirrors the file, [`types`] is what the program uses. Every error
//! names the file, the line and the key, because the person reading it is an operator at 2 a.m.

mod duration;
mod raw;
mod secret;
mod types;

pub use duration::parse_duration;
pub use secret::{resolve_secret, Secret};
pub use types::*;

use crate::identity::scopes::is_released;
use crate::routes::normalise_route_prefix;
use base64::Engine;
use raw::{RawConfig, RawProvider, RawRoute, RawServer, RawSession, RawUpstream, S};
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Validates configuration text; `file` is only used in messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let v = Validator { text, file };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| v.line(s.start)).unwrap_or(1);
        let message = e.message().to_string();
        let key = key_at(text, e.span().map(|s| s.start).unwrap_or(0));
        ConfigError::Invalid {
            file: file.to_string(),
            line,
            key,
            message,
        }
    })?;
    v.config(raw)
}

/// Best effort: the dotted key or table header nearest before `offset`, to name it in a parse error.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match (table, key.is_empty() || line.starts_with('[')) {
        (Some(t), true) => t,
        (Some(t), false) => format!("{t}.{key}"),
        (None, _) => key.to_string(),
    }
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            file: self.file.to_string(),
            line: self.line(span.start),
            key: key.into(),
            message: message.into(),
        })
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = match raw.server {
            Some(s) => {
                let span = s.span();
                self.server(s.into_inner(), span)?
            }
            None => self.server(RawServer::default(), 0..0)?,
        };
        let session_span = raw.session.span();
        let session = self.session(raw.session.into_inner(), session_span)?;
        let mut providers = Vec::new();
        for (name, provider) in raw.providers {
            providers.push(Arc::new(self.provider(name, provider)?));
        }
        let echo = match raw.echo {
            Some(echo) => Some(self.socket_addr(&echo.get_ref().listen, "echo.listen")?),
            None => None,
        };
        let mut routes = Vec::new();
        for (index, route) in raw.route.into_iter().enumerate() {
            routes.push(self.route(index, route, &providers, server.header_encoding)?);
        }
        if routes.is_empty() {
            return self.err(
                0..0,
                "route",
                "no [[route]] is defined: Passerelle would have nothing to protect",
            );
        }
        let mut seen = HashSet::new();
        for r in &routes {
            if !seen.insert((r.host.clone().map(|h| format!("{h:?}")), r.path.clone())) {
                return self.err(
                    0..0,
                    format!("route[{}].path", r.index),
                    format!(
                        "another route already has host {:?} and path `{}`",
                        r.host, r.path
                    ),
                );
            }
        }
        Ok(Config {
            server,
            session,
            providers,
            routes,
            echo,
        })
    }

    fn socket_addr(&self, value: &S<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        value.get_ref().parse().or_else(|_| {
            self.err(
                value.span(),
                key,
                format!(
                    "`{}` is not an address like \"127.0.0.1:8080\" or \"[::]:8443\"",
                    value.get_ref()
                ),
            )
        })
    }

    fn duration(
        &self,
        value: &Option<S<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).or_else(|m| self.err(v.span(), key, m)),
        }
    }

    fn secret(&self, value: &S<String>, key: &str) -> Result<Secret, ConfigError> {
        resolve_secret(value.get_ref()).or_else(|m| self.err(value.span(), key, m))
    }

    fn header_encoding(&self, value: &S<String>, key: &str) -> Result<HeaderEncoding, ConfigError> {
        match value.get_ref().as_str() {
            "percent" => Ok(HeaderEncoding::Percent),
            "utf8" => Ok(HeaderEncoding::Utf8),
            "base64" => Ok(HeaderEncoding::Base64),
            "rfc2047" => Ok(HeaderEncoding::Rfc2047),
            other => self.err(
                value.span(),
                key,
                format!("`{other}` is not one of \"percent\", \"utf8\", \"base64\", \"rfc2047\""),
            ),
        }
    }

    fn server(
        &self,
        raw: RawServer,
        span: std::ops::Range<usize>,
    ) -> Result<ServerConfig, ConfigError> {
        let listen = match &raw.listen {
            Some(list) => {
                if list.get_ref().is_empty() {
                    return self.err(
                        list.span(),
                        "server.listen",
                        "at least one address is needed",
                    );
                }
                list.get_ref()
                    .iter()
                    .map(|a| self.socket_addr(a, "server.listen"))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        };
        let tls = match &raw.tls {
            Some(t) => {
                let t = t.get_ref();
                let cert = self.pem_file(&t.cert, "server.tls.cert", "CERTIFICATE")?;
                let key = self.pem_file(&t.key, "server.tls.key", "PRIVATE KEY")?;
                Some(TlsFiles { cert, key })
            }
            None => None,
        };
        let public_url = match &raw.public_url {
            Some(u) => Some(self.public_url(u)?),
            None => None,
        };
        let mut trusted_proxies = Vec::new();
        for p in &raw.trusted_proxies {
            let text = p.get_ref();
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => {
                    return self.err(
                        p.span(),
                        "server.trusted_proxies",
                        format!("`{text}` is not an IP address or CIDR range"),
                    )
                }
            }
        }
        let prefix = match &raw.prefix {
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                let ok = text.starts_with('/')
                    && text.len() > 1
                    && text[1..].split('/').all(|seg| {
                        !seg.is_empty()
                            && seg != "."
                            && seg != ".."
                            && seg
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                    });
                if !ok {
                    return self.err(
                        p.span(),
                        "server.prefix",
                        format!(
                            "`{}` must be a plain path like \"/.passerelle\"",
                            p.get_ref()
                        ),
                    );
                }
                text.to_string()
            }
            None => "/.passerelle".to_string(),
        };
        let admin_listen = match &raw.admin_listen {
            Some(a) => Some(self.socket_addr(a, "server.admin_listen")?),
            None => None,
        };
        let threads = match &raw.threads {
            Some(t) if *t.get_ref() > 1024 => {
                return self.err(t.span(), "server.threads", "at most 1024")
            }
            Some(t) if *t.get_ref() > 0 => *t.get_ref(),
            _ => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let header_encoding = match &raw.header_encoding {
            Some(e) => self.header_encoding(e, "server.header_encoding")?,
            None => HeaderEncoding::Percent,
        };
        let identity_header_prefix = match &raw.identity_header_prefix {
            Some(p) => {
                let text = p.get_ref();
                if text.len() < 3 || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
                    return self.err(
                        p.span(),
                        "server.identity_header_prefix",
                        format!("`{text}` is not a header-name prefix like \"X-Auth-\""),
                    );
                }
                text.to_ascii_lowercase().replace('_', "-")
            }
            None => "x-auth-".to_string(),
        };
        let mut allowed_redirect_hosts = Vec::new();
        for h in &raw.allowed_redirect_hosts {
            allowed_redirect_hosts.push(
                HostPattern::parse(h.get_ref())
                    .or_else(|m| self.err(h.span(), "server.allowed_redirect_hosts", m))?,
            );
        }
        let log_format = match &raw.log_format {
            None => LogFormat::Auto,
            Some(f) => match f.get_ref().as_str() {
                "auto" => LogFormat::Auto,
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return self.err(
                        f.span(),
                        "server.log_format",
                        format!("`{other}` is not one of \"auto\", \"text\", \"json\""),
                    )
                }
            },
        };
        let _ = span;
        Ok(ServerConfig {
            listen,
            tls,
            public_url,
            trusted_proxies,
            prefix,
            admin_listen,
            threads,
            grace_period: self.duration(
                &raw.grace_period,
                "server.grace_period",
                Duration::from_secs(5),
            )?,
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                "server.shutdown_timeout",
                Duration::from_secs(5),
            )?,
            header_encoding,
            identity_header_prefix,
            allowed_redirect_hosts,
            log_format,
            upstream_timeout: self.duration(
                &raw.upstream_timeout,
                "server.upstream_timeout",
                Duration::from_secs(60),
            )?,
        })
    }

    /// Checks a PEM file now: pingora's rustls listener panics on a bad file at start-up.
    fn pem_file(&self, value: &S<String>, key: &str, label: &str) -> Result<String, ConfigError> {
        let path = value
            .get_ref()
            .strip_prefix("file:")
            .unwrap_or(value.get_ref());
        match std::fs::read_to_string(path) {
            Ok(text) if text.contains("-----BEGIN") && text.contains(label) => Ok(path.to_string()),
            Ok(_) => self.err(
                value.span(),
                key,
                format!("`{path}` is not a PEM file with a {label}"),
            ),
            Err(e) => self.err(value.span(), key, format!("cannot read `{path}`: {e}")),
        }
    }

    fn public_url(&self, value: &S<String>) -> Result<PublicUrl, ConfigError> {
        let key = "server.public_url";
        let url = url::Url::parse(value.get_ref())
            .or_else(|e| self.err(value.span(), key, format!("not a URL: {e}")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return self.err(
                    value.span(),
                    key,
                    format!("scheme `{other}` must be http or https"),
                )
            }
        };
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return self.err(value.span(), key, "must be an origin only, like \"https://demarche.example.gouv.fr\" (no path, query or user)");
        }
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(PublicUrl { https, authority })
    }

    fn session(
        &self,
        raw: RawSession,
        span: std::ops::Range<usize>,
    ) -> Result<SessionConfig, ConfigError> {
        let mut keys = Vec::new();
        if raw.keys.get_ref().is_empty() {
            return self.err(
                raw.keys.span(),
                "session.keys",
                "at least one key is needed (generate one with `passerelle keygen`)",
            );
        }
        for k in raw.keys.get_ref() {
            let secret = self.secret(k, "session.keys")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret.expose().trim())
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret.expose().trim())
                });
            match bytes {
                Ok(b) if b.len() == 32 => {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(&b);
                    keys.push(key);
                }
                _ => return self.err(k.span(), "session.keys", "a key must be 32 random bytes in base64 (generate one with `passerelle keygen`)"),
            }
        }
        let cookie_name = match &raw.cookie_name {
            Some(n) => {
                let text = n.get_ref();
                if text.is_empty()
                    || text.len() > 64
                    || !text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return self.err(
                        n.span(),
                        "session.cookie_name",
                        "letters, digits, `_` and `-` only (at most 64)",
                    );
                }
                text.clone()
            }
            None => "passerelle".to_string(),
        };
        if let Some(store) = &raw.store {
            if store.get_ref() != "cookie" {
                return self.err(
                    store.span(),
                    "session.store",
                    format!(
                        "`{}` is not available in this version: use \"cookie\"",
                        store.get_ref()
                    ),
                );
            }
        }
        let idle_timeout = self.duration(
            &raw.idle_timeout,
            "session.idle_timeout",
            Duration::from_secs(30 * 60),
        )?;
        let max_lifetime = self.duration(
            &raw.max_lifetime,
            "session.max_lifetime",
            Duration::from_secs(12 * 3600),
        )?;
        if max_lifetime.is_zero() || idle_timeout.is_zero() {
            return self.err(
                span,
                "session",
                "idle_timeout and max_lifetime must be positive",
            );
        }
        Ok(SessionConfig {
            keys,
            cookie_name,
            idle_timeout,
            max_lifetime,
            login_timeout: self.duration(
                &raw.login_timeout,
                "session.login_timeout",
                Duration::from_secs(600),
            )?,
            secure: raw.secure.map(|s| s.into_inner()),
        })
    }

    fn provider(
        &self,
        name: S<String>,
        raw: S<RawProvider>,
    ) -> Result<ProviderConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let name_text = name.get_ref().clone();
        let key = |k: &str| format!("providers.{name_text}.{k}");
        if name_text.is_empty()
            || !name_text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return self.err(
                name.span(),
                format!("providers.{name_text}"),
                "a provider name uses letters, digits, `_` and `-` only",
            );
        }
        let dev_only = [
            ("listen", raw.listen.as_ref().map(|s| s.span())),
            (
                "allow_non_loopback",
                raw.allow_non_loopback.as_ref().map(|s| s.span()),
            ),
            (
                "signed_userinfo",
                raw.signed_userinfo.as_ref().map(|s| s.span()),
            ),
        ];
        let kind_text = raw.kind.get_ref().as_str();
        let (kind, issuer, client_id, client_secret) = match kind_text {
            "dev" => {
                let listen = match &raw.listen {
                    Some(l) => self.socket_addr(l, &key("listen"))?,
                    None => SocketAddr::from(([127, 0, 0, 1], 8081)),
                };
                let allow = raw
                    .allow_non_loopback
                    .as_ref()
                    .map(|b| *b.get_ref())
                    .unwrap_or(false);
                if !listen.ip().is_loopback() && !allow {
                    let s = raw
                        .listen
                        .as_ref()
                        .map(|l| l.span())
                        .unwrap_or(span.clone());
                    return self.err(s, key("listen"), format!("the development provider must listen on a loopback address, not {listen}: anyone reaching it can sign in as anyone. Set allow_non_loopback = true only for a throw-away test platform"));
                }
                if let Some(i) = &raw.issuer {
                    return self.err(i.span(), key("issuer"), "the development provider's issuer is derived from `listen`; remove `issuer`");
                }
                let issuer = format!("http://{listen}");
                let client_id = raw
                    .client_id
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_else(|| "passerelle-dev".into());
                let secret = match &raw.client_secret {
                    Some(s) => self.secret(s, &key("client_secret"))?,
                    None => Secret::new("passerelle-dev-secret"),
                };
                let dev = DevProviderConfig {
                    listen,
                    signed_userinfo: raw
                        .signed_userinfo
                        .as_ref()
                        .map(|b| *b.get_ref())
                        .unwrap_or(true),
                };
                (ProviderKind::Dev(dev), issuer, client_id, secret)
            }
            "oidc" => {
                for (k, s) in dev_only {
                    if let Some(s) = s {
                        return self.err(
                            s,
                            key(k),
                            "only a `kind = \"dev\"` provider takes this key",
                        );
                    }
                }
                let Some(issuer) = &raw.issuer else {
                    return self.err(
                        span,
                        key("issuer"),
                        "missing: the provider's issuer URL, as its discovery document states it",
                    );
                };
                let url = url::Url::parse(issuer.get_ref()).or_else(|e| {
                    self.err(issuer.span(), key("issuer"), format!("not a URL: {e}"))
                })?;
                if url.scheme() != "https"
                    && !(url.scheme() == "http"
                        && url.host_str().map(is_loopback_host).unwrap_or(false))
                {
                    return self.err(
                        issuer.span(),
                        key("issuer"),
                        "an issuer must be https (http is only accepted on loopback, for tests)",
                    );
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return self.err(
                        issuer.span(),
                        key("issuer"),
                        "an issuer has no query or fragment",
                    );
                }
                let Some(client_id) = &raw.client_id else {
                    return self.err(
                        span,
                        key("client_id"),
                        "missing: the client_id the provider gave you",
                    );
                };
                let Some(secret) = &raw.client_secret else {
                    return self.err(
                        span,
                        key("client_secret"),
                        "missing: write it as \"env:NAME\" or \"file:/path\"",
                    );
                };
                (
                    ProviderKind::Oidc,
                    issuer.get_ref().clone(),
                    client_id.get_ref().clone(),
                    self.secret(secret, &key("client_secret"))?,
                )
            }
            "proconnect" | "nc-connect" => {
                return self.err(raw.kind.span(), key("kind"), format!("the `{kind_text}` preset is not available in this version yet: use kind = \"oidc\" with the federation's issuer"));
            }
            other => {
                return self.err(
                    raw.kind.span(),
                    key("kind"),
                    format!(
                        "`{other}` is not one of \"oidc\", \"dev\", \"proconnect\", \"nc-connect\""
                    ),
                )
            }
        };
        if client_id.is_empty() {
            return self.err(span, key("client_id"), "must not be empty");
        }
        let auth_method = match &raw.auth_method {
            None => AuthMethod::ClientSecretBasic,
            Some(m) => match m.get_ref().as_str() {
                "client_secret_basic" => AuthMethod::ClientSecretBasic,
                "client_secret_post" => AuthMethod::ClientSecretPost,
                other => {
                    return self.err(
                        m.span(),
                        key("auth_method"),
                        format!(
                        "`{other}` is not one of \"client_secret_basic\", \"client_secret_post\""
                    ),
                    )
                }
            },
        };
        let mut scopes: BTreeSet<String> = match &raw.scopes {
            Some(list) => list
                .get_ref()
                .iter()
                .map(|s| self.scope(s, &key("scopes")))
                .collect::<Result<_, _>>()?,
            None => ["openid", "email", "profile"]
                .into_iter()
                .map(String::from)
                .collect(),
        };
        scopes.insert("openid".into());
        let id_token_algs = match &raw.id_token_algs {
            None => vec!["RS256".into(), "ES256".into(), "HS256".into()],
            Some(list) => {
                let mut algs = Vec::new();
                for a in list.get_ref() {
                    match a.get_ref().as_str() {
                        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256"
                        | "ES384" | "HS256" | "HS384" | "HS512" | "EdDSA" => {
                            algs.push(a.get_ref().clone())
                        }
                        "none" => {
                            return self.err(
                                a.span(),
                                key("id_token_algs"),
                                "`none` means an unsigned token: never accepted",
                            )
                        }
                        other => {
                            return self.err(
                                a.span(),
                                key("id_token_algs"),
                                format!("`{other}` is not a supported signature algorithm"),
                            )
                        }
                    }
                }
                if algs.is_empty() {
                    return self.err(
                        list.span(),
                        key("id_token_algs"),
                        "at least one algorithm is needed",
                    );
                }
                algs
            }
        };
        let display_name = raw
            .display_name
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_else(|| match &kind {
                ProviderKind::Dev(_) => "Fournisseur de développement".to_string(),
                ProviderKind::Oidc => name_text.clone(),
            });
        Ok(ProviderConfig {
            name: name_text.clone(),
            kind,
            issuer,
            client_id,
            client_secret,
            auth_method,
            scopes,
            display_name,
            timeout: self.duration(&raw.timeout, &key("timeout"), Duration::from_secs(10))?,
            id_token_algs,
            fetch_userinfo: raw.userinfo.as_ref().map(|b| *b.get_ref()).unwrap_or(true),
        })
    }

    fn scope(&self, s: &S<String>, key: &str) -> Result<String, ConfigError> {
        let text = s.get_ref();
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return self.err(s.span(), key, format!("`{text}` is not a scope name"));
        }
        Ok(text.clone())
    }

    fn route(
        &self,
        index: usize,
        raw: S<RawRoute>,
        providers: &[Arc<ProviderConfig>],
        default_encoding: HeaderEncoding,
    ) -> Result<RouteConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let key = |k: &str| format!("route[{index}].{k}");
        let host = match &raw.host {
            Some(h) => Some(
                HostPattern::parse(h.get_ref()).or_else(|m| self.err(h.span(), key("host"), m))?,
            ),
            None => None,
        };
        let path = match &raw.path {
            Some(p) => normalise_route_prefix(p.get_ref())
                .or_else(|m| self.err(p.span(), key("path"), m))?,
            None => "/".to_string(),
        };
        let upstream_span = raw.upstream.span();
        let urls = match raw.upstream.into_inner() {
            RawUpstream::One(u) => vec![u],
            RawUpstream::Many(list) => list,
        };
        if urls.is_empty() {
            return self.err(
                upstream_span,
                key("upstream"),
                "at least one upstream URL is needed",
            );
        }
        let upstreams = urls
            .iter()
            .map(|u| {
                parse_upstream(u).or_else(|m| self.err(upstream_span.clone(), key("upstream"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match &raw.auth {
            None => AuthMode::Required,
            Some(a) => match a.get_ref().as_str() {
                "required" => AuthMode::Required,
                "optional" => AuthMode::Optional,
                "public" => AuthMode::Public,
                other => {
                    return self.err(
                        a.span(),
                        key("auth"),
                        format!("`{other}` is not one of \"required\", \"optional\", \"public\""),
                    )
                }
            },
        };
        let route_providers: Vec<String> = match &raw.providers {
            Some(list) => {
                let mut names = Vec::new();
                for p in list.get_ref() {
                    if !providers.iter().any(|q| &q.name == p.get_ref()) {
                        return self.err(
                            p.span(),
                            key("providers"),
                            format!(
                                "no provider named `{}` (defined: {})",
                                p.get_ref(),
                                providers
                                    .iter()
                                    .map(|q| q.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    names.push(p.get_ref().clone());
                }
                names
            }
            None => providers.iter().map(|p| p.name.clone()).collect(),
        };
        if auth != AuthMode::Public && route_providers.is_empty() {
            return self.err(
                span,
                key("providers"),
                "this route needs authentication but no provider is defined",
            );
        }
        let mut scopes = BTreeSet::new();
        for s in &raw.scopes {
            scopes.insert(self.scope(s, &key("scopes"))?);
        }
        scopes.insert("openid".to_string());
        let mut headers = Vec::new();
        for (name, claim) in &raw.headers {
            let hkey = format!("{}.\"{}\"", key("headers"), name.get_ref());
            let header = http::HeaderName::from_bytes(name.get_ref().as_bytes())
                .or_else(|_| self.err(name.span(), hkey.clone(), "not a valid header name"))?;
            if is_reserved_header(header.as_str()) {
                return self.err(
                    name.span(),
                    hkey,
                    format!(
                        "`{}` is a protocol header and cannot carry identity",
                        name.get_ref()
                    ),
                );
            }
            if auth == AuthMode::Public {
                return self.err(
                    name.span(),
                    hkey,
                    "a public route has no session: it cannot forward identity headers",
                );
            }
            if !is_released(claim.get_ref(), scopes.iter().map(String::as_str)) {
                return self.err(claim.span(), hkey, format!("claim `{}` is not released by this route's scopes ({}): add the scope that releases it to `scopes`", claim.get_ref(), scopes.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
            if headers
                .iter()
                .any(|(h, _): &(http::HeaderName, String)| h == header)
            {
                return self.err(
                    name.span(),
                    hkey,
                    "this header is already mapped (names are case-insensitive)",
                );
            }
            headers.push((header, claim.get_ref().clone()));
        }
        let header_encoding = match &raw.header_encoding {
            Some(e) => self.header_encoding(e, &key("header_encoding"))?,
            None => default_encoding,
        };
        let health_check = match &raw.health_check {
            Some(h) if h.get_ref().starts_with('/') => Some(h.get_ref().clone()),
            Some(h) => return self.err(h.span(), key("health_check"), "a path starting with `/`"),
            None => None,
        };
        Ok(RouteConfig {
            index,
            host,
            path,
            upstreams,
            auth,
            providers: route_providers,
            scopes,
            headers,
            header_encoding,
            health_check,
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
        || host == "[::1]"
}

/// Headers that frame the HTTP exchange or carry credentials: never an identity header.
fn is_reserved_header(lower: &str) -> bool {
    matches!(
        lower,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "cookie"
            | "set-cookie"
            | "proxy-authorization"
            | "proxy-connection"
            | "expect"
            | "content-type"
    )
}

/// Parses `http://host:port` or `https://host[:port]`.
fn parse_upstream(text: &str) -> Result<UpstreamTarget, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("`{text}`: scheme `{other}` must be http or https")),
    };
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(format!(
            "`{text}`: an upstream is an origin (scheme, host, port) without path or user"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err(format!("`{text}` has no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    Ok(UpstreamTarget { https, host, port })
}

#[cfg(test)]
mod tests;
