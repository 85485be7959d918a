//! The register of processing (`passerelle register`): for each route, what personal data its app
//! receives, from which federation, under which header names, and why.
//!
//! A data-protection officer keeps this register by hand in most administrations, and it drifts from what
//! the gateway really forwards. Here it is read from the validated configuration, the very structure the
//! proxy enforces: a claim appears in the register exactly when the route forwards it.

use crate::config::{AuthMode, Config, RouteConfig, SessionStore};
use crate::identity::scopes::claims_released_by;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
pub struct Register {
    /// The configuration file it was generated from.
    pub source: String,
    pub sessions: Sessions,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
}

/// Where the identity is kept between requests, and for how long.
#[derive(Debug, Serialize)]
pub struct Sessions {
    /// `cookie`: encrypted in the person's browser; `redis`: encrypted in the shared store.
    pub store: &'static str,
    pub idle_timeout_seconds: u64,
    pub max_lifetime_seconds: u64,
    /// The endpoint where the signed-in person's own browser reads what their session holds.
    pub userinfo_endpoint: String,
}

#[derive(Debug, Serialize)]
pub struct Provider {
    pub name: String,
    pub kind: &'static str,
    pub issuer: String,
    /// Asked for at every sign-in through this provider, whatever the route.
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Route {
    pub index: usize,
    /// `None`: every host.
    pub host: Option<String>,
    pub path: String,
    pub purpose: Option<String>,
    pub upstreams: Vec<String>,
    /// `required`, `optional` or `public`.
    pub auth: &'static str,
    pub providers: Vec<String>,
    /// The route's scopes; a sign-in for this route asks for them besides the provider's.
    pub scopes: Vec<String>,
    /// What the upstream receives: one header per claim.
    pub released: Vec<Released>,
    /// Access rules: claim → allowed values. Read by Passerelle, not forwarded.
    pub require: Vec<Rule>,
    /// Required authentication levels, if any.
    pub acr: Vec<String>,
    /// The signed assertion the upstream receives besides the headers, if the route makes one.
    pub assertion: Option<Assertion>,
}

#[derive(Debug, Serialize)]
pub struct Assertion {
    pub header: String,
    pub audience: String,
    pub ttl_seconds: u64,
    /// `sub`, then the claims the route maps to headers.
    pub claims: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Released {
    /// As sent on the wire (lower-case).
    pub header: String,
    pub claim: String,
    /// The route's scopes that release this claim.
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Rule {
    pub claim: &'static str,
    pub allowed: Vec<String>,
}

impl Register {
    pub fn new(config: &Config, source: &str) -> Register {
        Register {
            source: source.to_string(),
            sessions: Sessions {
                store: match config.session.store {
                    SessionStore::Cookie => "cookie",
                    SessionStore::Redis => "redis",
                },
                idle_timeout_seconds: config.session.idle_timeout.as_secs(),
                max_lifetime_seconds: config.session.max_lifetime.as_secs(),
                userinfo_endpoint: format!("{}/userinfo", config.server.prefix),
            },
            providers: config
                .providers
                .iter()
                .map(|p| Provider {
                    name: p.name.clone(),
                    kind: p.kind.label(),
                    issuer: p.issuer.clone(),
                    scopes: p.scopes.iter().cloned().collect(),
                })
                .collect(),
            routes: config.routes.iter().map(Route::new).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Markdown for the register itself: one section per route, a table of what its app receives.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Registre des traitements — Passerelle\n");
        let _ = writeln!(
            out,
            "Généré depuis `{}` : la configuration qui applique ces règles.\n",
            cell(&self.source)
        );
        let s = &self.sessions;
        let _ = writeln!(out, "## Conservation de la session\n");
        let _ = writeln!(
            out,
            "- Stockage : {}",
            match s.store {
                "redis" => "chiffrée (AES-256-GCM) dans Redis, partagée entre les instances",
                _ => "chiffrée (AES-256-GCM) dans un cookie du navigateur de la personne",
            }
        );
        let _ = writeln!(
            out,
            "- Durée : {} sans activité, {} au plus après la connexion",
            duration(s.idle_timeout_seconds),
            duration(s.max_lifetime_seconds)
        );
        let _ = writeln!(
            out,
            "- La personne connectée peut lire ce que contient sa session : `{}`\n",
            cell(&s.userinfo_endpoint)
        );
        let _ = writeln!(out, "## Fournisseurs d'identité\n");
        let _ = writeln!(out, "| nom | type | émetteur | scopes demandés |");
        let _ = writeln!(out, "|---|---|---|---|");
        for p in &self.providers {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(&p.name),
                p.kind,
                cell(&p.issuer),
                cell(&p.scopes.join(", "))
            );
        }
        for r in &self.routes {
            out.push('\n');
            r.write_markdown(&mut out);
        }
        out
    }
}

impl Route {
    fn new(route: &RouteConfig) -> Route {
        let released = route
            .headers
            .iter()
            .map(|(header, claim)| Released {
                header: header.as_str().to_string(),
                claim: claim.clone(),
                scopes: route
                    .scopes
                    .iter()
                    .filter(|s| claims_released_by(s).contains(&claim.as_str()))
                    .cloned()
                    .collect(),
            })
            .collect();
        let r = &route.require;
        let require = [
            ("siret", &r.siret),
            ("email_domain", &r.email_domain),
            ("idp_id", &r.idp_id),
            ("roles", &r.roles),
            ("belonging_population", &r.belonging_population),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(claim, values)| Rule {
            claim,
            allowed: values.clone(),
        })
        .collect();
        Route {
            index: route.index,
            host: route.host.as_ref().map(|h| match h {
                crate::config::HostPattern::Exact(name) => name.clone(),
                crate::config::HostPattern::Subdomains(suffix) => format!("*{suffix}"),
            }),
            path: route.path.clone(),
            purpose: route.purpose.clone(),
            upstreams: route
                .upstreams
                .iter()
                .map(|u| {
                    let scheme = if u.https { "https" } else { "http" };
                    match u.host.contains(':') {
                        true => format!("{scheme}://[{}]:{}", u.host, u.port),
                        false => format!("{scheme}://{}:{}", u.host, u.port),
                    }
                })
                .collect(),
            auth: match route.auth {
                AuthMode::Required => "required",
                AuthMode::Optional => "optional",
                AuthMode::Public => "public",
            },
            providers: match route.auth {
                AuthMode::Public => Vec::new(),
                _ => route.providers.clone(),
            },
            scopes: match route.auth {
                AuthMode::Public => Vec::new(),
                _ => route.scopes.iter().cloned().collect(),
            },
            released,
            require,
            acr: route
                .acr
                .as_ref()
                .map(|a| a.values.clone())
                .unwrap_or_default(),
            assertion: route.assertion.as_ref().map(|a| {
                let mut claims = vec!["sub".to_string()];
                for (_, claim) in &route.headers {
                    if !claims.contains(claim) {
                        claims.push(claim.clone());
                    }
                }
                Assertion {
                    header: a.header.as_str().to_string(),
                    audience: a.audience.clone(),
                    ttl_seconds: a.ttl.as_secs(),
                    claims,
                }
            }),
        }
    }

    fn write_markdown(&self, out: &mut String) {
        let where_ = format!(
            "{}{}",
            self.host.as_deref().unwrap_or("(tout hôte)"),
            self.path
        );
        let _ = writeln!(out, "## Route {} — `{}`\n", self.index, cell(&where_));
        let _ = writeln!(
            out,
            "- Finalité : {}",
            self.purpose
                .as_deref()
                .map(cell)
                .unwrap_or_else(|| "*non renseignée* (clé `purpose` de la route)".into())
        );
        let _ = writeln!(
            out,
            "- Application destinataire : {}",
            cell(&self.upstreams.join(", "))
        );
        let access = match self.auth {
            "public" => "publique : aucune identité transmise",
            "optional" => "connexion facultative : identité transmise si la personne est connectée",
            _ => "connexion obligatoire",
        };
        let _ = writeln!(out, "- Accès : {access}");
        if self.auth == "public" {
            return;
        }
        let _ = writeln!(out, "- Fournisseurs : {}", cell(&self.providers.join(", ")));
        let _ = writeln!(
            out,
            "- Scopes de la route : {}",
            cell(&self.scopes.join(", "))
        );
        if !self.acr.is_empty() {
            let _ = writeln!(
                out,
                "- Niveau d'authentification exigé (acr) : {}",
                cell(&self.acr.join(", "))
            );
        }
        for rule in &self.require {
            let _ = writeln!(
                out,
                "- Règle d'accès sur `{}` (lue, non transmise) : {}",
                rule.claim,
                cell(&rule.allowed.join(", "))
            );
        }
        if let Some(a) = &self.assertion {
            let _ = writeln!(
                out,
                "- Assertion d'identité signée (JWT ES256) : en-tête `{}`, destinataire (`aud`) {}, valable {} s, données signées : {}",
                cell(&a.header),
                cell(&a.audience),
                a.ttl_seconds,
                cell(&a.claims.join(", "))
            );
        }
        let released: BTreeSet<&str> = self.released.iter().map(|r| r.claim.as_str()).collect();
        let _ = writeln!(
            out,
            "\n{} donnée(s) transmise(s) à l'application :\n",
            released.len()
        );
        if self.released.is_empty() {
            let _ = writeln!(
                out,
                "*aucune* (l'application ne reçoit aucun en-tête d'identité)"
            );
            return;
        }
        let _ = writeln!(
            out,
            "| en-tête HTTP | donnée (claim) | scope qui la libère |"
        );
        let _ = writeln!(out, "|---|---|---|");
        for r in &self.released {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} |",
                cell(&r.header),
                cell(&r.claim),
                cell(&r.scopes.join(", "))
            );
        }
    }
}

/// Text made safe for a Markdown table cell or list item: no line break, no column separator, no
/// markup that would change what the register says.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '\\' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[session]
keys = ["ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24="]

[providers.pc]
kind = "proconnect"
issuer = "https://fca.integ01.dev-agentconnect.fr/api/v2"
client_id = "client"
client_secret = "secret"

[[route]]
host = "rh.example.gouv.fr"
path = "/conges"
upstream = "http://10.0.0.5:8080"
purpose = "Gestion des congés | agents *du* ministère"
scopes = ["email", "siret"]
require = { siret = ["21340126800130"] }
[route.headers]
"X-Auth-Email" = "email"
"X-Auth-Siret" = "siret"

[[route]]
path = "/static"
upstream = "http://10.0.0.5:8080"
auth = "public"
"#;

    fn register() -> Register {
        let config = crate::config::parse(CONFIG, "test.toml").unwrap();
        Register::new(&config, "test.toml")
    }

    #[test]
    fn every_forwarded_claim_is_listed_with_its_header_and_scope() {
        let r = register();
        let route = &r.routes[0];
        assert_eq!(route.host.as_deref(), Some("rh.example.gouv.fr"));
        assert_eq!(route.path, "/conges");
        let released: Vec<(&str, &str, Vec<String>)> = route
            .released
            .iter()
            .map(|r| (r.header.as_str(), r.claim.as_str(), r.scopes.clone()))
            .collect();
        assert_eq!(
            released,
            vec![
                ("x-auth-email", "email", vec!["email".to_string()]),
                ("x-auth-siret", "siret", vec!["siret".to_string()]),
            ]
        );
        assert_eq!(route.require[0].claim, "siret");
        assert_eq!(route.require[0].allowed, vec!["21340126800130"]);
        assert!(r.routes[1].released.is_empty());
        assert_eq!(r.routes[1].auth, "public");
    }

    #[test]
    fn markdown_cannot_be_broken_by_the_text_it_quotes() {
        let md = register().to_markdown();
        assert!(
            md.contains("Gestion des congés \\| agents \\*du\\* ministère"),
            "{md}"
        );
        assert!(md.contains("| `x-auth-siret` | `siret` | siret |"), "{md}");
        assert!(md.contains("*aucune*") || md.contains("publique"), "{md}");
    }

    #[test]
    fn json_has_the_same_facts() {
        let json: serde_json::Value = serde_json::from_str(&register().to_json()).unwrap();
        assert_eq!(json["routes"][0]["released"][1]["header"], "x-auth-siret");
        assert_eq!(
            json["routes"][0]["purpose"],
            "Gestion des congés | agents *du* ministère"
        );
        assert_eq!(json["sessions"]["store"], "cookie");
    }
}
