//! Configuration: read the TOML file, resolve secrets, validate, and produce a typed [`Config`].
//!
//! Two layers, as in river: [`raw`] mirrors the file, [`types`] is what the program uses. Every error
//! names the file, the line and the key, because the person reading it is an operator at 2 a.m.

mod assertion;
mod branding;
mod duration;
mod provider;
mod raw;
mod redis;
mod route;
mod secret;
mod server_tls;
mod tls_files;
mod types;

pub use duration::parse_duration;
pub use provider::{nc_connect_issuer, printable_url, proconnect_issuer, PROCONNECT_SCOPES};
pub use secret::{resolve_secret, Secret};
pub use types::*;

use base64::Engine;
use raw::{RawAudit, RawConfig, RawServer, RawSession, S};
use std::collections::HashSet;
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
    // The error may point at a table's own header line: that table, counted with itself.
    let through = &text[..line_end];
    let table = through
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| indexed(through, l.trim_matches(|c| c == '[' || c == ']')));
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

/// A table name with its array index, as the validator names keys: `[[route]]` (the third one) is
/// `route[2]`, and `[route.headers]` below it `route[2].headers`.
fn indexed(before: &str, table: &str) -> String {
    let array = table.split('.').next().unwrap_or(table);
    let header = format!("[[{array}]]");
    let count = before.lines().filter(|l| l.trim() == header).count();
    match count {
        0 => table.to_string(),
        n => format!("{array}[{}]{}", n - 1, &table[array.len()..]),
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
        let admin_token_span = raw
            .server
            .as_ref()
            .and_then(|s| s.get_ref().admin_token.as_ref())
            .map(|t| t.span());
        let server = match raw.server {
            Some(s) => {
                let span = s.span();
                self.server(s.into_inner(), span)?
            }
            None => self.server(RawServer::default(), 0..0)?,
        };
        let session_span = raw.session.span();
        let session = self.session(raw.session.into_inner(), session_span)?;
        if let (Some(span), None) = (admin_token_span, &session.redis) {
            return self.err(
                span,
                "server.admin_token",
                "the session API lists and revokes sessions kept in Redis: add a [session.redis] table, or remove the token",
            );
        }
        let mut providers = Vec::new();
        for (name, provider) in raw.providers {
            providers.push(Arc::new(self.provider(name, provider)?));
        }
        let echo = match raw.echo {
            Some(echo) => Some(self.socket_addr(&echo.get_ref().listen, "echo.listen")?),
            None => None,
        };
        let assertion_keys = match &raw.assertion {
            Some(a) => self.assertion_keys(a)?,
            None => Vec::new(),
        };
        let signing = assertion::Signing {
            keys: !assertion_keys.is_empty(),
            issuer: server.public_url.is_some(),
        };
        let mut routes = Vec::new();
        for (index, route) in raw.route.into_iter().enumerate() {
            let client_ca = server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            routes.push(self.route(
                index,
                route,
                &providers,
                server.header_encoding,
                signing,
                client_ca,
            )?);
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
            let path = match server.path_reading {
                crate::routes::PathReading::Windows => r.path.to_ascii_lowercase(),
                crate::routes::PathReading::Exact => r.path.clone(),
            };
            if !seen.insert((r.host.clone().map(|h| format!("{h:?}")), path)) {
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
        self.distinct_listeners(&server, &providers, echo)?;
        let audit = match &raw.audit {
            Some(a) => Some(self.audit(a)?),
            None => None,
        };
        Ok(Config {
            server,
            session,
            providers,
            routes,
            echo,
            audit,
            assertion_keys,
            pages: match &raw.pages {
                Some(p) => self.pages(p.get_ref())?,
                None => Default::default(),
            },
        })
    }

    /// Two services on one address would leave one of them unable to start, after `check` said OK.
    fn distinct_listeners(
        &self,
        server: &ServerConfig,
        providers: &[Arc<ProviderConfig>],
        echo: Option<SocketAddr>,
    ) -> Result<(), ConfigError> {
        let mut all: Vec<(SocketAddr, String)> = server
            .listen
            .iter()
            .map(|a| (*a, "server.listen".to_string()))
            .collect();
        all.extend(
            server
                .redirect_http
                .iter()
                .map(|a| (*a, "server.redirect_http".to_string())),
        );
        all.extend(
            server
                .admin_listen
                .map(|a| (a, "server.admin_listen".to_string())),
        );
        for p in providers {
            if let ProviderKind::Dev(d) = &p.kind {
                all.push((d.listen, format!("providers.{}.listen", p.name)));
            }
        }
        all.extend(echo.map(|a| (a, "echo.listen".to_string())));
        for (i, (addr, key)) in all.iter().enumerate() {
            let clash = all[..i].iter().find(|(other, _)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((_, first)) = clash {
                let quoted = format!("\"{addr}\"");
                let at = self.text.rfind(&quoted).unwrap_or(0);
                return self.err(
                    at..at,
                    key.clone(),
                    format!("{addr} is already `{first}`: each service needs its own address"),
                );
            }
        }
        Ok(())
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

    fn audit(&self, raw: &S<RawAudit>) -> Result<AuditConfig, ConfigError> {
        let a = raw.get_ref();
        let output = match &a.file {
            Some(f) => AuditOutput::File(self.absolute_path(f, "audit.file")?),
            None => AuditOutput::Stdout,
        };
        let pseudonymise = a.pseudonymise.as_ref().is_some_and(|p| *p.get_ref());
        let pseudonym_key = match (&a.pseudonym_key, pseudonymise) {
            (Some(k), true) => {
                let key = self.secret(k, "audit.pseudonym_key")?;
                if key.expose().len() < 32 {
                    return self.err(k.span(), "audit.pseudonym_key", "at least 32 characters (`passerelle keygen` makes one): a short key lets anyone recompute the pseudonyms");
                }
                Some(key)
            }
            (None, true) => {
                return self.err(
                    raw.span(),
                    "audit.pseudonymise",
                    "needs audit.pseudonym_key (a secret: \"env:NAME\" or \"file:/path\")",
                )
            }
            (Some(k), false) => {
                return self.err(
                    k.span(),
                    "audit.pseudonym_key",
                    "only used with pseudonymise = true: set it, or remove the key",
                )
            }
            (None, false) => None,
        };
        Ok(AuditConfig {
            output,
            pseudonym_key,
        })
    }

    /// A file path the process creates: absolute, so it does not depend on the working directory.
    fn absolute_path(&self, raw: &S<String>, key: &str) -> Result<String, ConfigError> {
        let text = raw.get_ref();
        if !text.starts_with('/') || text.contains('\0') {
            return self.err(raw.span(), key, format!("`{text}` is not an absolute path"));
        }
        Ok(text.clone())
    }

    fn positive_duration(
        &self,
        value: &Option<S<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(value, key, default)?;
        match value {
            Some(v) if d.is_zero() => self.err(v.span(), key, "must be more than zero"),
            _ => Ok(d),
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
            Some(t) => Some(self.server_tls(t)?),
            None => None,
        };
        let hsts = self.hsts(&raw)?;
        let redirect_http = self.redirect_http(&raw)?;
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
                let prefix = text.to_ascii_lowercase().replace('_', "-");
                if let Some(header) = reserved_header_with_prefix(&prefix) {
                    return self.err(
                        p.span(),
                        "server.identity_header_prefix",
                        format!(
                            "`{text}` would strip `{header}` from every request: choose a prefix like \"X-Auth-\""
                        ),
                    );
                }
                prefix
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
        let max_header_bytes = match &raw.max_header_bytes {
            Some(m) if !(8 * 1024..=1024 * 1024).contains(m.get_ref()) => {
                return self.err(
                    m.span(),
                    "server.max_header_bytes",
                    "between 8192 and 1048576 (a session cookie alone can take 24 KiB)",
                )
            }
            Some(m) => *m.get_ref(),
            None => 64 * 1024,
        };
        let forward_auth_uri_header = match &raw.forward_auth_uri_header {
            None => ForwardAuthUriHeader::XOriginalUri,
            Some(h) => match h.get_ref().to_ascii_lowercase().as_str() {
                "x-original-uri" => ForwardAuthUriHeader::XOriginalUri,
                "x-forwarded-uri" => ForwardAuthUriHeader::XForwardedUri,
                _ => {
                    return self.err(
                        h.span(),
                        "server.forward_auth_uri_header",
                        format!(
                            "`{}` is not one of \"X-Original-URI\" (nginx auth_request), \"X-Forwarded-Uri\" (Traefik forwardAuth)",
                            h.get_ref()
                        ),
                    )
                }
            },
        };
        let admin_token = match &raw.admin_token {
            None => None,
            Some(t) => {
                let token = self.secret(t, "server.admin_token")?;
                if token.expose().len() < 24 {
                    return self.err(
                        t.span(),
                        "server.admin_token",
                        "at least 24 characters: it guards revoking every session (generate one with `passerelle keygen`)",
                    );
                }
                if admin_listen.is_none() {
                    return self.err(
                        t.span(),
                        "server.admin_token",
                        "the session API is served on the admin listener: set server.admin_listen too",
                    );
                }
                Some(token)
            }
        };
        // One per instance by default: two instances on a host must not hand each other their sockets.
        let port = listen.first().map(|a| a.port()).unwrap_or(8080);
        let upgrade_socket = match &raw.upgrade_socket {
            Some(p) => self.absolute_path(p, "server.upgrade_socket")?,
            None => format!("/tmp/passerelle-upgrade-{port}.sock"),
        };
        let pid_file = match &raw.pid_file {
            Some(p) => self.absolute_path(p, "server.pid_file")?,
            None => format!("/tmp/passerelle-{port}.pid"),
        };
        let _ = span;
        Ok(ServerConfig {
            upgrade_socket,
            pid_file,
            admin_token,
            forward_auth_uri_header,
            max_header_bytes,
            path_reading: match raw.windows_paths.map(|b| b.into_inner()) {
                Some(true) => crate::routes::PathReading::Windows,
                _ => crate::routes::PathReading::Exact,
            },
            listen,
            tls,
            hsts,
            redirect_http,
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
            keepalive_timeout: self.positive_duration(
                &raw.keepalive_timeout,
                "server.keepalive_timeout",
                crate::connections::IDLE_TIMEOUT,
            )?,
            upstream_timeout: self.duration(
                &raw.upstream_timeout,
                "server.upstream_timeout",
                Duration::from_secs(60),
            )?,
            resolve_interval: self.duration(
                &raw.resolve_interval,
                "server.resolve_interval",
                Duration::from_secs(30),
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
        let redis = match &raw.redis {
            Some(r) => Some(self.redis(r)?),
            None => None,
        };
        let store = match &raw.store {
            None => SessionStore::Cookie,
            Some(s) => match s.get_ref().as_str() {
                "cookie" => SessionStore::Cookie,
                "redis" if redis.is_some() => SessionStore::Redis,
                "redis" => {
                    return self.err(
                        s.span(),
                        "session.store",
                        "\"redis\" needs a [session.redis] table (url, sentinel or cluster)",
                    )
                }
                other => {
                    return self.err(
                        s.span(),
                        "session.store",
                        format!("`{other}` is not one of \"cookie\", \"redis\""),
                    )
                }
            },
        };
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
            logout_clear_site_data: self.site_data(&raw.logout_clear_site_data)?,
            store,
            redis,
            recheck_interval: self.positive_duration(
                &raw.recheck_interval,
                "session.recheck_interval",
                Duration::from_secs(30),
            )?,
            redis_grace: self.duration(
                &raw.redis_grace,
                "session.redis_grace",
                Duration::from_secs(60),
            )?,
        })
    }

    fn site_data(&self, raw: &Option<S<Vec<S<String>>>>) -> Result<Vec<SiteData>, ConfigError> {
        let Some(list) = raw else {
            return Ok(SiteData::ALL.to_vec());
        };
        let mut directives = Vec::new();
        for item in list.get_ref() {
            let Some(d) = SiteData::ALL
                .into_iter()
                .find(|d| d.name() == item.get_ref())
            else {
                return self.err(
                    item.span(),
                    "session.logout_clear_site_data",
                    format!(
                        "`{}` is not one of \"cache\", \"cookies\", \"storage\"",
                        item.get_ref()
                    ),
                );
            };
            if !directives.contains(&d) {
                directives.push(d);
            }
        }
        Ok(directives)
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
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
        || host == "[::1]"
}

/// Headers that frame the HTTP exchange or carry credentials: never an identity header.
const RESERVED_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "proxy-connection",
    "expect",
    "content-type",
];

pub(crate) fn is_reserved_header(lower: &str) -> bool {
    RESERVED_HEADERS.contains(&lower)
}

/// The reserved header an identity prefix would strip from every request, if any: a prefix such
/// as `"ho"` would take `Host` away from the upstream.
fn reserved_header_with_prefix(lower_prefix: &str) -> Option<&'static str> {
    RESERVED_HEADERS
        .iter()
        .copied()
        .find(|h| h.starts_with(lower_prefix))
}

/// Parses `http://host:port` or `https://host[:port]`.
pub(crate) fn parse_upstream(text: &str) -> Result<UpstreamTarget, String> {
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
