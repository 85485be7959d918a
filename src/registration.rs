//! The registration sheet (`passerelle check`): per provider, exactly what to type into the federation's
//! registration form, derived from the configuration that will answer those URLs.
//!
//! A redirect URI registered with one character of difference (a trailing slash, the wrong network) is the
//! most common reason a first ProConnect login fails (`Y030031`); printing the sheet from the config removes
//! the copying by hand.

use crate::config::{
    AuthMethod, AuthMode, Config, Environment, Network, ProviderConfig, ProviderKind,
    PROCONNECT_SCOPES,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Debug)]
pub struct Sheet<'a> {
    pub provider: &'a ProviderConfig,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
    /// `None` when the federation does not send back-channel logout (ProConnect).
    pub backchannel_logout_uri: Option<String>,
    /// Everything a sign-in through this provider may ask for: its own scopes and its routes'.
    pub scopes: BTreeSet<String>,
    /// True when the origin is a placeholder: `server.public_url` is not set.
    pub origin_unknown: bool,
}

impl<'a> Sheet<'a> {
    /// One sheet per external provider; the development provider registers nothing.
    pub fn all(config: &'a Config) -> Vec<Sheet<'a>> {
        let (origin, origin_unknown) = match &config.server.public_url {
            Some(u) => (u.origin(), false),
            None => ("https://<public host>".to_string(), true),
        };
        let prefix = &config.server.prefix;
        config
            .providers
            .iter()
            .filter(|p| !matches!(p.kind, ProviderKind::Dev(_)))
            .map(|p| {
                let mut scopes = p.scopes.clone();
                scopes.insert("openid".into());
                for route in config.routes.iter().filter(|r| {
                    r.auth != AuthMode::Public && r.providers.iter().any(|n| n == &p.name)
                }) {
                    scopes.extend(route.scopes.iter().cloned());
                }
                Sheet {
                    provider: p,
                    redirect_uri: format!("{origin}{prefix}/callback"),
                    post_logout_redirect_uri: format!("{origin}{prefix}/logged-out"),
                    backchannel_logout_uri: match p.kind {
                        ProviderKind::ProConnect { .. } => None,
                        _ => Some(format!("{origin}{prefix}/backchannel-logout")),
                    },
                    scopes,
                    origin_unknown,
                }
            })
            .collect()
    }

    pub fn auth_method(&self) -> &'static str {
        match self.provider.auth_method {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    /// The id_token and userinfo algorithm to ask for: the first asymmetric one Passerelle accepts,
    /// ES256 first (ProConnect's default); HS* would make the client secret a signing key.
    fn signing_algorithm(&self) -> &str {
        let algs = &self.provider.id_token_algs;
        ["ES256", "RS256"]
            .into_iter()
            .find(|a| algs.iter().any(|b| b == a))
            .or_else(|| {
                algs.iter()
                    .map(String::as_str)
                    .find(|a| !a.starts_with("HS"))
            })
            .or_else(|| algs.first().map(String::as_str))
            .unwrap_or("ES256")
    }

    pub fn render(&self) -> String {
        let p = self.provider;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "provider `{}` ({}): register at the federation",
            p.name,
            p.kind.label()
        );
        let row = |out: &mut String, name: &str, value: &str| {
            let _ = writeln!(out, "  {name:<27} {value}");
        };
        row(&mut out, "issuer", &p.issuer);
        row(&mut out, "client_id", &p.client_id);
        row(&mut out, "redirect URI", &self.redirect_uri);
        row(
            &mut out,
            "post-logout redirect URI",
            &self.post_logout_redirect_uri,
        );
        match &self.backchannel_logout_uri {
            Some(uri) => row(&mut out, "back-channel logout URI", uri),
            None => row(
                &mut out,
                "back-channel logout URI",
                "(not offered by ProConnect)",
            ),
        }
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        row(&mut out, "scopes", &scopes.join(" "));
        row(&mut out, "token endpoint auth method", self.auth_method());
        match &p.kind {
            ProviderKind::ProConnect {
                network,
                environment,
            } => {
                let _ = writeln!(out, "  ProConnect form:");
                row(
                    &mut out,
                    "  network",
                    match network {
                        Network::Internet => "Internet",
                        Network::Rie => "RIE (register through Démarches Simplifiées)",
                    },
                );
                row(
                    &mut out,
                    "  environment",
                    match environment {
                        Environment::Integration => "intégration",
                        Environment::Production => "production",
                    },
                );
                let alg = self.signing_algorithm();
                row(&mut out, "  id_token signature", alg);
                row(&mut out, "  userinfo signature", alg);
                let extra: Vec<&str> = scopes
                    .iter()
                    .copied()
                    // ProConnect's default scopes need no mention on the form (federations.md §4).
                    .filter(|s| !PROCONNECT_SCOPES.contains(s))
                    .collect();
                row(
                    &mut out,
                    "  extra scopes",
                    &match extra.is_empty() {
                        true => "none (the default scopes suffice)".to_string(),
                        false => extra.join(" "),
                    },
                );
            }
            ProviderKind::NcConnect { .. } => {
                let _ = writeln!(
                    out,
                    "  NC Connect form: login redirect URL = redirect URI, logout redirect URL = post-logout redirect URI"
                );
            }
            ProviderKind::Oidc | ProviderKind::Dev(_) => {}
        }
        if self.origin_unknown {
            let _ = writeln!(
                out,
                "  note: server.public_url is not set: replace <public host> with the host browsers use"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[server]
public_url = "https://demarche.example.gouv.fr"

[session]
keys = ["ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24="]

[providers.pc]
kind = "proconnect"
network = "rie"
environment = "integration"
client_id = "client"
client_secret = "secret"
scopes = ["email"]

[providers.nc]
kind = "nc-connect"
client_id = "nc-client"
client_secret = "secret"

[[route]]
path = "/"
upstream = "http://127.0.0.1:9000"
providers = ["pc"]
scopes = ["email", "siret", "phone"]

[[route]]
path = "/nc"
upstream = "http://127.0.0.1:9000"
providers = ["nc"]
scopes = ["birth"]
"#;

    #[test]
    fn the_sheet_has_every_uri_and_the_union_of_scopes() {
        let config = crate::config::parse(CONFIG, "t.toml").unwrap();
        let sheets = Sheet::all(&config);
        let pc = sheets.iter().find(|s| s.provider.name == "pc").unwrap();
        assert_eq!(
            pc.redirect_uri,
            "https://demarche.example.gouv.fr/.passerelle/callback"
        );
        assert_eq!(
            pc.post_logout_redirect_uri,
            "https://demarche.example.gouv.fr/.passerelle/logged-out"
        );
        assert_eq!(pc.backchannel_logout_uri, None);
        assert!(pc.scopes.contains("phone") && !pc.scopes.contains("birth"));
        let text = pc.render();
        assert!(
            text.contains("token endpoint auth method  client_secret_post"),
            "{text}"
        );
        assert!(text.contains("network"), "{text}");
        assert!(text.contains("RIE"), "{text}");
        assert!(text.contains("extra scopes"), "{text}");
        assert!(text.contains(" phone"), "{text}");
        assert!(!text.contains("<public host>"), "{text}");
        let nc = sheets.iter().find(|s| s.provider.name == "nc").unwrap();
        assert_eq!(
            nc.backchannel_logout_uri.as_deref(),
            Some("https://demarche.example.gouv.fr/.passerelle/backchannel-logout")
        );
        assert!(nc.scopes.contains("birth") && !nc.scopes.contains("phone"));
    }
}
