//! Validation of `[[route]]`: matching, upstream, authentication, scopes, headers and access rules.

use super::raw::{RawRoute, RawUpstream, S};
use super::types::*;
use super::{is_reserved_header, parse_upstream, ConfigError, Validator};
use crate::identity::scopes::is_released;
use crate::routes::normalise_route_prefix;
use std::collections::BTreeSet;
use std::sync::Arc;

impl Validator<'_> {
    pub(super) fn route(
        &self,
        index: usize,
        raw: S<RawRoute>,
        providers: &[Arc<ProviderConfig>],
        default_encoding: HeaderEncoding,
        signing: super::assertion::Signing,
        client_ca: bool,
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
        if upstreams.iter().any(|u| u.https != upstreams[0].https) {
            return self.err(
                upstream_span,
                key("upstream"),
                "mixes http:// and https://: the members of a pool share one scheme",
            );
        }
        let upstream_tls = match &raw.upstream_tls {
            Some(t) if !upstreams[0].https => {
                return self.err(
                    t.span(),
                    key("upstream_tls"),
                    "the upstream is http://: write https:// to connect with TLS",
                )
            }
            Some(t) => self.upstream_tls(t.get_ref(), &key("upstream_tls"))?,
            None => UpstreamTls::default(),
        };
        if upstreams[0].https
            && upstream_tls.sni.is_none()
            && upstreams.iter().any(|u| u.host != upstreams[0].host)
        {
            return self.err(
                upstream_span,
                key("upstream"),
                "the members of this https pool have different hosts: name the one their certificates hold with `upstream_tls.sni`",
            );
        }
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
            let from_certificate = crate::tls::client_certificate::is_claim(claim.get_ref());
            if from_certificate && !client_ca {
                return self.err(
                    claim.span(),
                    hkey,
                    "a client certificate claim needs `server.tls.client_ca`: without it no certificate is asked for",
                );
            }
            if auth == AuthMode::Public && !from_certificate {
                return self.err(
                    name.span(),
                    hkey,
                    "a public route has no session: it cannot forward identity headers",
                );
            }
            if !from_certificate && !is_released(claim.get_ref(), scopes.iter().map(String::as_str))
            {
                let name = claim.get_ref();
                if !crate::identity::scopes::is_known_claim(name) {
                    let hint = match crate::identity::scopes::nearest_claim(name) {
                        Some(near) => format!("did you mean `{near}`? "),
                        None => String::new(),
                    };
                    return self.err(claim.span(), hkey, format!("claim `{name}` is unknown: {hint}(a custom claim of your provider needs the scope of the same name in `scopes`)"));
                }
                return self.err(claim.span(), hkey, format!("claim `{}` is not released by this route's scopes ({}): add the scope that releases it to `scopes`", name, scopes.iter().cloned().collect::<Vec<_>>().join(", ")));
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
        let acr = match &raw.acr {
            Some(a) => Some(self.acr(a, &key("acr"))?),
            None => None,
        };
        let require = match &raw.require {
            Some(r) => self.require(r, &scopes, &key("require"))?,
            None => AccessRules::default(),
        };
        if auth == AuthMode::Public && (acr.is_some() || !require.is_empty()) {
            return self.err(
                span,
                key("auth"),
                "a public route cannot have `acr` or `require` rules",
            );
        }
        let hints = self.hints(
            &raw.prompt,
            &raw.idp_hint,
            &raw.login_hint,
            &raw.siret_hint,
            &key(""),
        )?;
        let cache = match raw.cache.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None | Some((_, "private")) => CachePolicy::Private,
            Some((_, "upstream")) => CachePolicy::Upstream,
            Some((c, other)) => {
                return self.err(
                    c.span(),
                    key("cache"),
                    format!("`{other}` is not one of \"private\", \"upstream\""),
                )
            }
        };
        let purpose = match &raw.purpose {
            Some(p) => {
                Some(purpose(p.get_ref()).or_else(|m| self.err(p.span(), key("purpose"), m))?)
            }
            None => None,
        };
        let assertion = match &raw.assertion {
            Some(a) => {
                let assertion = self.route_assertion(a, &key("assertion"), auth, signing)?;
                if headers.iter().any(|(h, _)| h == assertion.header) {
                    return self.err(
                        a.span(),
                        key("assertion.header"),
                        format!(
                            "`{}` already carries a claim in route.headers",
                            assertion.header
                        ),
                    );
                }
                Some(assertion)
            }
            None => None,
        };
        Ok(RouteConfig {
            assertion,
            purpose,
            cache,
            index,
            host,
            path,
            upstreams,
            upstream_tls,
            upstream_h2: raw.upstream_h2.as_ref().is_some_and(|b| *b.get_ref()),
            client_certificate_required: match &raw.client_certificate {
                None => false,
                Some(v) => match v.get_ref().as_str() {
                    "optional" => false,
                    "required" if client_ca => true,
                    "required" => return self.err(v.span(), key("client_certificate"), "`required` needs `server.tls.client_ca`: without it no certificate is asked for"),
                    other => return self.err(v.span(), key("client_certificate"), format!("`{other}` is not one of \"optional\", \"required\"")),
                },
            },
            auth,
            providers: route_providers,
            scopes,
            headers,
            header_encoding,
            health_check,
            acr,
            require,
            hints,
            cors_allow_preflight: raw
                .cors_allow_preflight
                .as_ref()
                .is_some_and(|b| *b.get_ref()),
        })
    }

    /// Access rules, each on a claim the route's scopes must release (a rule on a claim the route never
    /// receives would deny everyone, silently).
    fn require(
        &self,
        raw: &S<super::raw::RawRequire>,
        scopes: &BTreeSet<String>,
        key: &str,
    ) -> Result<AccessRules, ConfigError> {
        let r = raw.get_ref();
        let check = |list: &Vec<S<String>>,
                     rule: &str,
                     claim: &str|
         -> Result<Vec<String>, ConfigError> {
            if let Some(first) = list.first() {
                if !is_released(claim, scopes.iter().map(String::as_str)) {
                    return self.err(first.span(), format!("{key}.{rule}"), format!("this rule reads the claim `{claim}`, which the route's scopes do not release: add \"{}\" to `scopes`", if claim == "email" { "email" } else { claim }));
                }
            }
            let mut out = Vec::new();
            for v in list {
                if v.get_ref().trim().is_empty() {
                    return self.err(v.span(), format!("{key}.{rule}"), "empty value");
                }
                out.push(v.get_ref().trim().to_string());
            }
            Ok(out)
        };
        let siret = check(&r.siret, "siret", "siret")?;
        for (s, v) in siret.iter().zip(&r.siret) {
            if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return self.err(
                    v.span(),
                    format!("{key}.siret"),
                    format!("`{s}` is not a SIRET (14 digits)"),
                );
            }
        }
        let email_domain: Vec<String> = check(&r.email_domain, "email_domain", "email")?
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect();
        for (d, v) in email_domain.iter().zip(&r.email_domain) {
            if HostPattern::parse(d)
                .map(|p| matches!(p, HostPattern::Subdomains(_)))
                .unwrap_or(true)
            {
                return self.err(
                    v.span(),
                    format!("{key}.email_domain"),
                    format!("`{d}` is not a domain name (exact match: list each domain)"),
                );
            }
        }
        Ok(AccessRules {
            siret,
            email_domain,
            idp_id: check(&r.idp_id, "idp_id", "idp_id")?,
            roles: check(&r.roles, "roles", "roles")?,
            belonging_population: check(
                &r.belonging_population,
                "belonging_population",
                "belonging_population",
            )?,
        })
    }
}

/// A route's purpose: one line of plain text, as it will appear in the register.
fn purpose(text: &str) -> Result<String, String> {
    const MAX: usize = 500;
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "empty: say in one sentence why this app receives these claims, or remove the key"
                .into(),
        );
    }
    if text.chars().any(char::is_control) {
        return Err("one line of text, without control characters or line breaks".into());
    }
    if text.chars().count() > MAX {
        return Err(format!(
            "longer than {MAX} characters: keep the details in the register itself"
        ));
    }
    Ok(text.to_string())
}
