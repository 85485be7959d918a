//! `check --online`: every hop `run` will depend on, tried once, and each provider's discovery document
//! compared with what the configuration will ask of it.
//!
//! `run` starts even when a provider is down (it retries at the first login), so a deployment check
//! must be the stricter one: an unreachable hop is an error that says which hop, because "login fails"
//! on a RIE can be the egress proxy, the federation, or the app behind Passerelle, and each is a
//! different team to call.

use crate::config::{AuthMode, Config, ProviderConfig};
use crate::oidc::{build_http_client, error_chain};
use crate::registration::Sheet;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one hop may take to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A hop that could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("provider `{provider}`: egress proxy {proxy} unreachable: {reason}")]
    EgressProxy {
        provider: String,
        proxy: String,
        reason: String,
    },
    #[error("provider `{provider}`: {what} {url}{via} unreachable: {reason}")]
    Provider {
        provider: String,
        what: &'static str,
        url: String,
        /// ` through egress proxy …`, or nothing.
        via: String,
        reason: String,
    },
    #[error(transparent)]
    Unresolvable(#[from] crate::upstream::ResolveError),
    #[error("route[{route}].upstream: {url} unreachable: {reason}")]
    Upstream {
        route: usize,
        url: String,
        reason: String,
    },
}

/// What the check found about one provider.
#[derive(Debug, Default)]
pub struct Findings {
    /// Hops that failed: the provider cannot be used at all.
    pub unreachable: Vec<HopError>,
    /// Where discovery contradicts the configuration: logins will fail.
    pub mismatches: Vec<String>,
    /// Worth knowing, not fatal.
    pub notes: Vec<String>,
}

/// Tries the provider's egress proxy, discovery and keys, then compares discovery with the sheet.
pub async fn check_provider(config: &Config, sheet: &Sheet<'_>) -> Findings {
    let p = sheet.provider;
    let mut findings = Findings::default();
    let via = match &p.egress_proxy {
        Some(proxy) => {
            if let Err(reason) = reach_proxy(proxy).await {
                findings.unreachable.push(HopError::EgressProxy {
                    provider: p.name.clone(),
                    proxy: crate::config::printable_url(proxy),
                    reason,
                });
                return findings;
            }
            format!(
                " through egress proxy {}",
                crate::config::printable_url(proxy)
            )
        }
        None => String::new(),
    };
    let hop = |what: &'static str, url: &str, reason: String| HopError::Provider {
        provider: p.name.clone(),
        what,
        url: url.to_string(),
        via: via.clone(),
        reason,
    };
    let client = match build_http_client(p) {
        Ok(c) => c,
        Err(e) => {
            let url = discovery_url(&p.issuer);
            findings
                .unreachable
                .push(hop("back-channel client for", &url, error_chain(&e)));
            return findings;
        }
    };
    let url = discovery_url(&p.issuer);
    let doc = match fetch_json(&client, &url).await {
        Ok(doc) => doc,
        Err(reason) => {
            findings.unreachable.push(hop("discovery", &url, reason));
            return findings;
        }
    };
    match doc.get("jwks_uri").and_then(Value::as_str) {
        Some(jwks) => match fetch_json(&client, jwks).await {
            Ok(keys) if keys.get("keys").is_some_and(Value::is_array) => {}
            Ok(_) => findings.mismatches.push(format!(
                "provider `{}`: jwks_uri {jwks} is not a key set (no `keys` array)",
                p.name
            )),
            Err(reason) => findings
                .unreachable
                .push(hop("keys (jwks_uri)", jwks, reason)),
        },
        None => findings
            .mismatches
            .push(format!("provider `{}`: discovery has no jwks_uri", p.name)),
    }
    let (mismatches, notes) = compare(config, sheet, &doc);
    findings.mismatches.extend(mismatches);
    findings.notes.extend(notes);
    findings
}

fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// A TCP connection to the proxy itself: whether the first hop is there, before blaming the second.
async fn reach_proxy(proxy: &str) -> Result<(), String> {
    let url = url::Url::parse(proxy).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?.to_string();
    let port = url.port_or_known_default().ok_or("no port")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    connect((host.as_str(), port)).await
}

async fn connect(address: impl tokio::net::ToSocketAddrs) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

async fn fetch_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    response
        .json::<Value>()
        .await
        .map_err(|e| format!("not JSON: {}", error_chain(&e)))
}

/// Discovery against configuration: mismatches (logins will fail) and notes.
pub fn compare(config: &Config, sheet: &Sheet<'_>, doc: &Value) -> (Vec<String>, Vec<String>) {
    let p = sheet.provider;
    let name = &p.name;
    let mut mismatches = Vec::new();
    let mut notes = Vec::new();
    let list = |key: &str| -> Option<Vec<String>> {
        doc.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    let advertised = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if advertised != p.issuer {
        mismatches.push(format!(
            "provider `{name}`: issuer: discovery says `{advertised}`, providers.{name}.issuer says `{}` (compared byte for byte)",
            p.issuer
        ));
    }
    // RFC 8414 §2: without the list, only client_secret_basic is supported.
    let methods = list("token_endpoint_auth_methods_supported")
        .unwrap_or_else(|| vec!["client_secret_basic".into()]);
    if !methods.iter().any(|m| m == sheet.auth_method()) {
        mismatches.push(format!(
            "provider `{name}`: providers.{name}.auth_method is `{}`, token_endpoint_auth_methods_supported is [{}]",
            sheet.auth_method(),
            methods.join(", ")
        ));
    }
    if let Some(algs) = list("id_token_signing_alg_values_supported") {
        if !p.id_token_algs.iter().any(|a| algs.contains(a)) {
            mismatches.push(format!(
                "provider `{name}`: providers.{name}.id_token_algs [{}] has none of id_token_signing_alg_values_supported [{}]",
                p.id_token_algs.join(", "),
                algs.join(", ")
            ));
        }
    }
    if let Some(algs) = list("userinfo_signing_alg_values_supported") {
        let usable: Vec<&String> = p
            .id_token_algs
            .iter()
            .filter(|a| algs.contains(a))
            .collect();
        if p.fetch_userinfo && usable.is_empty() {
            notes.push(format!(
                "provider `{name}`: userinfo can only be read as JSON (userinfo_signing_alg_values_supported [{}] has none of id_token_algs)",
                algs.join(", ")
            ));
        }
    }
    if let Some(types) = list("response_types_supported") {
        if !types.iter().any(|t| t == "code") {
            mismatches.push(format!(
                "provider `{name}`: response_types_supported [{}] lacks `code`: the authorization code flow is what Passerelle runs",
                types.join(", ")
            ));
        }
    }
    if let Some(pkce) = list("code_challenge_methods_supported") {
        if !pkce.iter().any(|m| m == "S256") {
            mismatches.push(format!(
                "provider `{name}`: code_challenge_methods_supported [{}] lacks S256 (PKCE)",
                pkce.join(", ")
            ));
        }
    }
    if let Some(supported) = list("scopes_supported") {
        for scope in sheet.scopes.iter().filter(|s| !supported.contains(s)) {
            mismatches.push(format!(
                "provider `{name}`: scope `{scope}` ({}) is not in scopes_supported",
                scope_origin(config, p, scope)
            ));
        }
    }
    let routes = || {
        config
            .routes
            .iter()
            .filter(|r| r.auth != AuthMode::Public && r.providers.iter().any(|n| n == name))
    };
    let acr_policies: Vec<(String, &crate::config::AcrPolicy)> = p
        .acr
        .iter()
        .map(|a| (format!("providers.{name}.acr"), a))
        .chain(routes().filter_map(|r| {
            r.acr
                .as_ref()
                .map(|a| (format!("route[{}].acr", r.index), a))
        }))
        .collect();
    let sends_claims = p.request_amr || !acr_policies.is_empty();
    let claims_supported = doc
        .get("claims_parameter_supported")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if sends_claims && !claims_supported {
        let why = match acr_policies.first() {
            Some((key, _)) => key.clone(),
            None => format!("the {} preset asks for amr", p.kind.label()),
        };
        mismatches.push(format!(
            "provider `{name}`: claims_parameter_supported is not true, but {why} is sent through the `claims` parameter"
        ));
    }
    if let Some(supported) = list("acr_values_supported") {
        for (key, policy) in &acr_policies {
            for value in policy.values.iter().filter(|v| !supported.contains(v)) {
                mismatches.push(format!(
                    "provider `{name}`: {key} asks for `{value}`, not in acr_values_supported [{}]",
                    supported.join(", ")
                ));
            }
        }
    }
    if doc
        .get("end_session_endpoint")
        .and_then(Value::as_str)
        .is_none()
    {
        notes.push(format!(
            "provider `{name}`: no end_session_endpoint: logout ends the session at Passerelle only"
        ));
    }
    if sheet.backchannel_logout_uri.is_some()
        && doc
            .get("backchannel_logout_supported")
            .and_then(Value::as_bool)
            != Some(true)
    {
        notes.push(format!(
            "provider `{name}`: backchannel_logout_supported is not true: the back-channel logout URI will not be called"
        ));
    }
    (mismatches, notes)
}

/// Which keys ask for `scope`, to name in a mismatch.
fn scope_origin(config: &Config, p: &ProviderConfig, scope: &str) -> String {
    let mut keys = Vec::new();
    if p.scopes.contains(scope) {
        keys.push(format!("providers.{}.scopes", p.name));
    }
    for r in &config.routes {
        if r.auth != AuthMode::Public && r.providers.contains(&p.name) && r.scopes.contains(scope) {
            keys.push(format!("route[{}].scopes", r.index));
        }
    }
    match keys.is_empty() {
        true => "always asked".into(),
        false => keys.join(", "),
    }
}

/// Opens a TCP connection to every upstream (each address once), except the built-in echo, which
/// only `run` starts.
pub async fn check_upstreams(config: &Config) -> Vec<HopError> {
    let mut seen: Vec<SocketAddr> = Vec::new();
    let mut failures = Vec::new();
    for route in &config.routes {
        for target in &route.upstreams {
            let url = format!(
                "{}://{}",
                if target.https { "https" } else { "http" },
                target.address()
            );
            let address = match crate::upstream::resolve(route.index, target) {
                Ok(a) => a,
                Err(e) => {
                    failures.push(e.into());
                    continue;
                }
            };
            if Some(address) == config.echo || seen.contains(&address) {
                continue;
            }
            seen.push(address);
            if let Err(reason) = connect(address).await {
                failures.push(HopError::Upstream {
                    route: route.index,
                    url,
                    reason,
                });
            }
        }
    }
    failures
}
