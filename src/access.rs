//! The access decision for a route and a session: allowed, step-up, or refused.
//!
//! Data minimisation and access control meet here: a route needing a scope or an acr level the session
//! lacks sends the person through the provider again (step-up), unless that was already asked for and
//! refused, and `require` rules on claims answer 403. Rules are allow-lists compared exactly; an email
//! domain is the part after the one and only `@` (oauth2-proxy CVE-2026-40574: several `@` bypassed it).

use crate::config::{AccessRules, RouteConfig};
use crate::session::Session;
use serde_json::Value;

/// Why a session may not use a route (the absence of a refusal is the permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Log in again asking for more (scopes or acr) than the session has.
    StepUp,
    /// What the route needs was asked for and not granted: another login would loop.
    Insufficient,
    /// A `require` rule is not met; names the rule for the log.
    Forbidden(&'static str),
}

pub fn decide(route: &RouteConfig, session: &Session) -> Result<(), Refusal> {
    let mut missing = route
        .scopes
        .iter()
        .filter(|s| !session.scopes.contains(*s))
        .peekable();
    if missing.peek().is_some() {
        return Err(if missing.all(|s| session.requested.contains(s)) {
            Refusal::Insufficient
        } else {
            Refusal::StepUp
        });
    }
    if let Some(acr) = &route.acr {
        let current = session.claims.get("acr").and_then(Value::as_str);
        if !current.is_some_and(|c| acr.values.iter().any(|v| v == c)) {
            let asked = !session.requested_acr.is_empty()
                && acr.values.iter().all(|v| session.requested_acr.contains(v));
            return Err(if asked {
                Refusal::Insufficient
            } else {
                Refusal::StepUp
            });
        }
    }
    match failed_rule(&route.require, session) {
        Some(rule) => Err(Refusal::Forbidden(rule)),
        None => Ok(()),
    }
}

fn failed_rule(rules: &AccessRules, session: &Session) -> Option<&'static str> {
    let text = |claim: &str| session.claims.get(claim).and_then(Value::as_str);
    let one_of = |claim: &str, allowed: &[String]| {
        allowed.is_empty() || text(claim).is_some_and(|v| allowed.iter().any(|a| a == v))
    };
    if !one_of("siret", &rules.siret) {
        return Some("siret");
    }
    if !rules.email_domain.is_empty()
        && !text("email")
            .and_then(email_domain)
            .is_some_and(|d| rules.email_domain.contains(&d))
    {
        return Some("email_domain");
    }
    if !one_of("idp_id", &rules.idp_id) {
        return Some("idp_id");
    }
    if !one_of("belonging_population", &rules.belonging_population) {
        return Some("belonging_population");
    }
    if !rules.roles.is_empty() {
        let roles: Vec<&str> = match session.claims.get("roles") {
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        if !roles.iter().any(|r| rules.roles.iter().any(|a| a == r)) {
            return Some("roles");
        }
    }
    None
}

/// The domain of an address with exactly one `@`, lower-cased; `None` for anything else.
pub fn email_domain(email: &str) -> Option<String> {
    let mut parts = email.split('@');
    let (local, domain) = (parts.next()?, parts.next()?);
    if parts.next().is_some()
        || local.is_empty()
        || domain.is_empty()
        || domain.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AcrPolicy, AuthMode, HeaderEncoding};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    fn route(scopes: &[&str], acr: Option<&[&str]>, rules: AccessRules) -> RouteConfig {
        RouteConfig {
            index: 0,
            host: None,
            path: "/".into(),
            upstreams: vec![],
            upstream_tls: Default::default(),
            upstream_h2: false,
            client_certificate_required: false,
            assertion: None,
            auth: AuthMode::Required,
            providers: vec!["p".into()],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            headers: vec![],
            header_encoding: HeaderEncoding::Percent,
            health_check: None,
            acr: acr.map(|v| AcrPolicy {
                essential: true,
                values: v.iter().map(|s| s.to_string()).collect(),
            }),
            require: rules,
            hints: Default::default(),
            cors_allow_preflight: false,
            purpose: None,
            cache: Default::default(),
        }
    }

    fn session(granted: &[&str], requested: &[&str], claims: Value) -> Session {
        let claims: BTreeMap<String, Value> =
            claims.as_object().unwrap().clone().into_iter().collect();
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        Session {
            id: "i".into(),
            provider: "p".into(),
            claims,
            scopes: set(granted),
            requested: set(requested),
            requested_acr: vec![],
            created: 0,
            last_seen: 0,
            id_token: None,
            rendered: Default::default(),
        }
    }

    #[test]
    fn missing_scopes_step_up_once_then_refuse() {
        let r = route(&["openid", "email", "siret"], None, AccessRules::default());
        assert_eq!(
            decide(
                &r,
                &session(&["openid", "email"], &["openid", "email"], json!({}))
            ),
            Err(Refusal::StepUp)
        );
        assert_eq!(
            decide(
                &r,
                &session(
                    &["openid", "email"],
                    &["openid", "email", "siret"],
                    json!({})
                )
            ),
            Err(Refusal::Insufficient)
        );
        assert_eq!(
            decide(&r, &session(&["openid", "email", "siret"], &[], json!({}))),
            Ok(())
        );
    }

    #[test]
    fn acr_level_steps_up() {
        let r = route(
            &["openid"],
            Some(&["eidas2", "eidas3"]),
            AccessRules::default(),
        );
        assert_eq!(
            decide(&r, &session(&["openid"], &[], json!({"acr": "eidas1"}))),
            Err(Refusal::StepUp)
        );
        assert_eq!(
            decide(&r, &session(&["openid"], &[], json!({"acr": "eidas2"}))),
            Ok(())
        );
        let mut asked = session(&["openid"], &[], json!({"acr": "eidas1"}));
        asked.requested_acr = vec!["eidas2".into(), "eidas3".into()];
        assert_eq!(decide(&r, &asked), Err(Refusal::Insufficient));
    }

    #[test]
    fn rules_are_exact_allow_lists() {
        let rules = AccessRules {
            siret: vec!["21340126800130".into()],
            email_domain: vec!["example.gouv.fr".into()],
            roles: vec!["agent_public".into()],
            ..Default::default()
        };
        let r = route(&["openid"], None, rules);
        let ok = json!({"siret": "21340126800130", "email": "a.b@example.gouv.fr", "roles": ["agent_public_etat", "agent_public"]});
        assert_eq!(decide(&r, &session(&["openid"], &[], ok)), Ok(()));
        for (claims, rule) in [
            (
                json!({"siret": "21340126800131", "email": "a@example.gouv.fr", "roles": ["agent_public"]}),
                "siret",
            ),
            (
                json!({"siret": "21340126800130", "email": "a@sub.example.gouv.fr", "roles": ["agent_public"]}),
                "email_domain",
            ),
            (
                json!({"siret": "21340126800130", "email": "a@evil.fr@example.gouv.fr", "roles": ["agent_public"]}),
                "email_domain",
            ),
            (
                json!({"siret": "21340126800130", "email": "a@example.gouv.fr.evil.fr", "roles": ["agent_public"]}),
                "email_domain",
            ),
            (
                json!({"siret": "21340126800130", "email": "a@example.gouv.fr", "roles": []}),
                "roles",
            ),
            (
                json!({"email": "a@example.gouv.fr", "roles": ["agent_public"]}),
                "siret",
            ),
        ] {
            assert_eq!(
                decide(&r, &session(&["openid"], &[], claims)),
                Err(Refusal::Forbidden(rule))
            );
        }
    }

    #[test]
    fn email_domain_needs_exactly_one_at() {
        assert_eq!(
            email_domain("a@Example.GOUV.fr").as_deref(),
            Some("example.gouv.fr")
        );
        assert_eq!(email_domain("a@b@c"), None);
        assert_eq!(email_domain("@c"), None);
        assert_eq!(email_domain("abc"), None);
    }
}
