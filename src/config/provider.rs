//! Validation of `[providers.NAME]`, with the federation presets.
//!
//! A preset turns five lines into a correct client: ProConnect's issuer per network and environment,
//! `client_secret_post`, its default scopes and the `claims` parameter for acr/amr; NC Connect's v3
//! Keycloak realm or legacy v2. Explicit keys still override.

use super::raw::{RawAcr, RawProvider, S};
use super::types::*;
use super::{ConfigError, Secret, Validator};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// ProConnect's host per network and environment (`federations.md` §1).
pub fn proconnect_issuer(network: Network, environment: Environment) -> String {
    let domain = match (network, environment) {
        (Network::Internet, Environment::Integration) => "fca.integ01.dev-agentconnect.fr",
        (Network::Rie, Environment::Integration) => "fca.integ02.agentconnect.rie.gouv.fr",
        (Network::Internet, Environment::Production) => "auth.agentconnect.gouv.fr",
        (Network::Rie, Environment::Production) => "auth.agentconnect.rie.gouv.fr",
    };
    format!("https://{domain}/api/v2")
}

/// NC Connect's issuer per version and environment.
pub fn nc_connect_issuer(version: u8, environment: Environment) -> String {
    let host = match environment {
        Environment::Production => "connect.gouv.nc",
        Environment::Integration => "connect-dev.gouv.nc",
    };
    match version {
        2 => format!("https://{host}"),
        _ => format!("https://{host}/v3/realms/nc-connect"),
    }
}

pub const PROCONNECT_SCOPES: &[&str] = &[
    "openid",
    "given_name",
    "usual_name",
    "email",
    "uid",
    "siret",
    "idp_id",
];
pub const NC_CONNECT_SCOPES: &[&str] = &["openid", "profile", "email"];
const OIDC_SCOPES: &[&str] = &["openid", "email", "profile"];

impl Validator<'_> {
    pub(super) fn provider(
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
        let kind_text = raw.kind.get_ref().clone();
        // First: every other key's message depends on the kind.
        const KINDS: [&str; 4] = ["proconnect", "nc-connect", "oidc", "dev"];
        if !KINDS.contains(&kind_text.as_str()) {
            let near = KINDS
                .iter()
                .find(|k| strsim::damerau_levenshtein(&kind_text, k) <= 2)
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            return self.err(
                raw.kind.span(),
                key("kind"),
                format!(
                    "`{kind_text}` is not a kind of provider{near}: one of \"proconnect\", \"nc-connect\", \"oidc\", \"dev\""
                ),
            );
        }
        let only_for = |k: &str,
                        s: Option<std::ops::Range<usize>>,
                        allowed: &[&str]|
         -> Result<(), ConfigError> {
            match s {
                Some(s) if !allowed.contains(&kind_text.as_str()) => self.err(
                    s,
                    key(k),
                    format!(
                        "only a provider of kind {} takes this key",
                        allowed
                            .iter()
                            .map(|a| format!("\"{a}\""))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ),
                _ => Ok(()),
            }
        };
        only_for("listen", raw.listen.as_ref().map(|s| s.span()), &["dev"])?;
        only_for(
            "allow_non_loopback",
            raw.allow_non_loopback.as_ref().map(|s| s.span()),
            &["dev"],
        )?;
        only_for(
            "signed_userinfo",
            raw.signed_userinfo.as_ref().map(|s| s.span()),
            &["dev"],
        )?;
        only_for(
            "environment",
            raw.environment.as_ref().map(|s| s.span()),
            &["proconnect", "nc-connect"],
        )?;
        only_for(
            "network",
            raw.network.as_ref().map(|s| s.span()),
            &["proconnect"],
        )?;
        only_for(
            "version",
            raw.version.as_ref().map(|s| s.span()),
            &["nc-connect"],
        )?;

        let environment = |default: Environment| -> Result<Environment, ConfigError> {
            match &raw.environment {
                None => Ok(default),
                Some(e) => match e.get_ref().as_str() {
                    "integration" | "test" => Ok(Environment::Integration),
                    "production" => Ok(Environment::Production),
                    other => self.err(
                        e.span(),
                        key("environment"),
                        format!(
                            "`{other}` is not one of \"integration\" (or \"test\"), \"production\""
                        ),
                    ),
                },
            }
        };
        let (kind, default_issuer) = match kind_text.as_str() {
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
                let signed_userinfo = raw
                    .signed_userinfo
                    .as_ref()
                    .map(|b| *b.get_ref())
                    .unwrap_or(true);
                (
                    ProviderKind::Dev(DevProviderConfig {
                        listen,
                        signed_userinfo,
                    }),
                    Some(format!("http://{listen}")),
                )
            }
            "oidc" => (ProviderKind::Oidc, None),
            "proconnect" => {
                let network = match &raw.network {
                    None => Network::Internet,
                    Some(n) => match n.get_ref().as_str() {
                        "internet" => Network::Internet,
                        "rie" => Network::Rie,
                        other => {
                            return self.err(
                                n.span(),
                                key("network"),
                                format!("`{other}` is not one of \"internet\", \"rie\""),
                            )
                        }
                    },
                };
                let environment = environment(Environment::Integration)?;
                (
                    ProviderKind::ProConnect {
                        network,
                        environment,
                    },
                    Some(proconnect_issuer(network, environment)),
                )
            }
            "nc-connect" => {
                let version = match &raw.version {
                    None => 3,
                    Some(v) if matches!(v.get_ref(), 2 | 3) => *v.get_ref(),
                    Some(v) => {
                        return self.err(
                            v.span(),
                            key("version"),
                            "NC Connect versions are 3 (Keycloak, default) and 2 (legacy)",
                        )
                    }
                };
                let environment = environment(Environment::Production)?;
                (
                    ProviderKind::NcConnect {
                        version,
                        environment,
                    },
                    Some(nc_connect_issuer(version, environment)),
                )
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
        let issuer = match (&raw.issuer, default_issuer) {
            (Some(i), _) => self.issuer(i, &key("issuer"))?,
            (None, Some(d)) => d,
            (None, None) => {
                return self.err(
                    span,
                    key("issuer"),
                    "missing: the provider's issuer URL, as its discovery document states it",
                )
            }
        };
        let is_dev = matches!(kind, ProviderKind::Dev(_));
        let client_id = match &raw.client_id {
            Some(c) if c.get_ref().is_empty() => {
                return self.err(c.span(), key("client_id"), "must not be empty")
            }
            Some(c) => c.get_ref().clone(),
            None if is_dev => "passerelle-dev".into(),
            None => {
                return self.err(
                    span,
                    key("client_id"),
                    "missing: the client_id the provider gave you",
                )
            }
        };
        let client_secret = match &raw.client_secret {
            Some(s) => self.secret(s, &key("client_secret"))?,
            None if is_dev => Secret::new("passerelle-dev-secret"),
            None => {
                return self.err(
                    span,
                    key("client_secret"),
                    "missing: write it as \"env:NAME\" or \"file:/path\"",
                )
            }
        };
        let default_auth = match kind {
            ProviderKind::ProConnect { .. } => AuthMethod::ClientSecretPost,
            _ => AuthMethod::ClientSecretBasic,
        };
        let auth_method = match &raw.auth_method {
            None => default_auth,
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
        let default_scopes = match kind {
            ProviderKind::ProConnect { .. } => PROCONNECT_SCOPES,
            ProviderKind::NcConnect { .. } => NC_CONNECT_SCOPES,
            _ => OIDC_SCOPES,
        };
        let mut scopes: BTreeSet<String> = match &raw.scopes {
            Some(list) => list
                .get_ref()
                .iter()
                .map(|s| self.scope(s, &key("scopes")))
                .collect::<Result<_, _>>()?,
            None => default_scopes.iter().map(|s| s.to_string()).collect(),
        };
        scopes.insert("openid".into());
        let id_token_algs = self.algorithms(&raw, &key("id_token_algs"))?;
        let display_name = raw
            .display_name
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_else(|| match &kind {
                ProviderKind::Dev(_) => "Fournisseur de développement".to_string(),
                ProviderKind::ProConnect { .. } => "ProConnect".to_string(),
                ProviderKind::NcConnect { .. } => "NC Connect".to_string(),
                ProviderKind::Oidc => name_text.clone(),
            });
        let acr = match &raw.acr {
            Some(a) => Some(self.acr(a, &key("acr"))?),
            None => None,
        };
        let hints = self.hints(
            &raw.prompt,
            &raw.idp_hint,
            &raw.login_hint,
            &raw.siret_hint,
            &key(""),
        )?;
        let egress_proxy = match &raw.egress_proxy {
            Some(p) => {
                let url = url::Url::parse(p.get_ref()).or_else(|e| {
                    self.err(p.span(), key("egress_proxy"), format!("not a URL: {e}"))
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return self.err(
                        p.span(),
                        key("egress_proxy"),
                        "an HTTP proxy URL like \"http://proxy.rie.example:3128\"",
                    );
                }
                Some(p.get_ref().clone())
            }
            None => None,
        };
        let ca_pem = match &raw.ca_file {
            Some(f) => {
                let path = f.get_ref().strip_prefix("file:").unwrap_or(f.get_ref());
                let pem = std::fs::read(path).or_else(|e| {
                    self.err(
                        f.span(),
                        key("ca_file"),
                        format!("cannot read `{path}`: {e}"),
                    )
                })?;
                if reqwest::Certificate::from_pem_bundle(&pem)
                    .map(|c| c.is_empty())
                    .unwrap_or(true)
                {
                    return self.err(
                        f.span(),
                        key("ca_file"),
                        format!("`{path}` holds no PEM certificate"),
                    );
                }
                Some(pem)
            }
            None => None,
        };
        let request_amr = matches!(kind, ProviderKind::ProConnect { .. });
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
            acr,
            request_amr,
            hints,
            egress_proxy,
            ca_pem,
        })
    }

    fn issuer(&self, issuer: &S<String>, key: &str) -> Result<String, ConfigError> {
        let url = url::Url::parse(issuer.get_ref())
            .or_else(|e| self.err(issuer.span(), key, format!("not a URL: {e}")))?;
        let loopback = url.host_str().is_some_and(super::is_loopback_host);
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return self.err(
                issuer.span(),
                key,
                "an issuer must be https (http is only accepted on loopback, for tests)",
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return self.err(issuer.span(), key, "an issuer has no query or fragment");
        }
        Ok(issuer.get_ref().clone())
    }

    fn algorithms(&self, raw: &RawProvider, key: &str) -> Result<Vec<String>, ConfigError> {
        let Some(list) = &raw.id_token_algs else {
            return Ok(vec!["RS256".into(), "ES256".into(), "HS256".into()]);
        };
        let mut algs = Vec::new();
        for a in list.get_ref() {
            match a.get_ref().as_str() {
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384"
                | "HS256" | "HS384" | "HS512" | "EdDSA" => algs.push(a.get_ref().clone()),
                "none" => {
                    return self.err(
                        a.span(),
                        key,
                        "`none` means an unsigned token: never accepted",
                    )
                }
                other => {
                    return self.err(
                        a.span(),
                        key,
                        format!("`{other}` is not a supported signature algorithm"),
                    )
                }
            }
        }
        if algs.is_empty() {
            return self.err(list.span(), key, "at least one algorithm is needed");
        }
        Ok(algs)
    }

    pub(super) fn acr(&self, raw: &S<RawAcr>, key: &str) -> Result<AcrPolicy, ConfigError> {
        let acr = raw.get_ref();
        if acr.values.get_ref().is_empty() {
            return self.err(
                acr.values.span(),
                format!("{key}.values"),
                "at least one acr value",
            );
        }
        let mut values = Vec::new();
        for v in acr.values.get_ref() {
            let text = v.get_ref();
            if text.is_empty()
                || text.len() > 200
                || !text.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
            {
                return self.err(
                    v.span(),
                    format!("{key}.values"),
                    format!("`{text}` is not an acr value"),
                );
            }
            values.push(text.clone());
        }
        Ok(AcrPolicy {
            essential: acr.essential,
            values,
        })
    }

    /// `key_prefix` ends with a dot (`providers.pc.`) or is a route prefix (`route[0].`).
    pub(super) fn hints(
        &self,
        prompt: &Option<S<String>>,
        idp_hint: &Option<S<String>>,
        login_hint: &Option<S<String>>,
        siret_hint: &Option<S<String>>,
        key_prefix: &str,
    ) -> Result<AuthorizeHints, ConfigError> {
        if let Some(p) = prompt {
            for word in p.get_ref().split(' ') {
                if !matches!(word, "login" | "consent" | "none" | "select_account") {
                    return self.err(p.span(), format!("{key_prefix}prompt"), format!("`{word}` is not one of \"login\", \"consent\", \"none\", \"select_account\""));
                }
            }
        }
        if let Some(s) = siret_hint {
            if s.get_ref().len() != 14 || !s.get_ref().bytes().all(|b| b.is_ascii_digit()) {
                return self.err(
                    s.span(),
                    format!("{key_prefix}siret_hint"),
                    "a SIRET is 14 digits",
                );
            }
        }
        for (name, value) in [("idp_hint", idp_hint), ("login_hint", login_hint)] {
            if let Some(v) = value {
                if v.get_ref().is_empty()
                    || v.get_ref().len() > 256
                    || v.get_ref().chars().any(char::is_control)
                {
                    return self.err(
                        v.span(),
                        format!("{key_prefix}{name}"),
                        "at most 256 printable characters",
                    );
                }
            }
        }
        let text = |v: &Option<S<String>>| v.as_ref().map(|s| s.get_ref().clone());
        Ok(AuthorizeHints {
            prompt: text(prompt),
            idp_hint: text(idp_hint),
            login_hint: text(login_hint),
            siret_hint: text(siret_hint),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proconnect_issuers_per_platform() {
        assert_eq!(
            proconnect_issuer(Network::Internet, Environment::Integration),
            "https://fca.integ01.dev-agentconnect.fr/api/v2"
        );
        assert_eq!(
            proconnect_issuer(Network::Rie, Environment::Production),
            "https://auth.agentconnect.rie.gouv.fr/api/v2"
        );
        assert_eq!(
            nc_connect_issuer(3, Environment::Production),
            "https://connect.gouv.nc/v3/realms/nc-connect"
        );
        assert_eq!(
            nc_connect_issuer(2, Environment::Integration),
            "https://connect-dev.gouv.nc"
        );
    }
}

/// A proxy URL as it may be printed: its credentials, if any, replaced by `***`.
pub fn printable_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("***");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn credentials_never_printed() {
        assert_eq!(
            super::printable_url("http://agent:s3cret@proxy.rie.example:3128"),
            "http://***@proxy.rie.example:3128/"
        );
        assert_eq!(
            super::printable_url("http://proxy.rie.example:3128"),
            "http://proxy.rie.example:3128"
        );
    }
}
