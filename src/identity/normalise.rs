//! One claim vocabulary across providers.
//!
//! Upstreams map headers to these names whatever the federation: `family_name` even when ProConnect calls
//! it `usual_name`, `email` lower-cased, nested or prefixed claims flattened.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Normalises the claims of a verified login. `sub` is kept exactly as the provider gave it.
pub fn normalise(provider: &str, raw: Map<String, Value>) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (key, value) in raw {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            // NC Connect v2 nests the email: {"info":{"openid":{"Email":…}}}.
            "info" => {
                if let Some(email) = value.pointer("/openid/Email").and_then(Value::as_str) {
                    out.entry("email".into())
                        .or_insert_with(|| Value::String(email.to_string()));
                }
            }
            // ProConnect's `chorusdt:matricule` becomes `chorusdt_matricule`: a colon is awkward everywhere.
            k if k.contains(':') => {
                out.insert(k.replace(':', "_"), value);
            }
            _ => {
                out.insert(key, value);
            }
        }
    }
    if let Some(Value::String(email)) = out.get_mut("email") {
        *email = email.trim().to_lowercase();
    }
    if !out.contains_key("family_name") {
        if let Some(usual) = out.get("usual_name").cloned() {
            out.insert("family_name".into(), usual);
        }
    }
    // What a client certificate says comes from the TLS handshake of each request's connection, never from a
    // provider: a claim of that name in a token (a Keycloak mapper, say) would otherwise stand in for the card.
    out.retain(|k, _| !crate::tls::client_certificate::is_claim(k));
    out.insert("provider".into(), Value::String(provider.to_string()));
    out
}

/// The text form of a claim for a header: strings as they are, numbers and booleans printed, arrays and
/// objects as compact JSON.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => serde_json::to_string(other).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_provider_cannot_assert_what_a_client_certificate_says() {
        let out = normalise(
            "kc",
            map(
                json!({"sub":"abc","tls_client_subject":"CN=Boss","tls_client:serial":"01","tls_client_fingerprint":"ff","tls_client_issuer":"CN=CA"}),
            ),
        );
        assert_eq!(out.keys().collect::<Vec<_>>(), ["provider", "sub"]);
    }

    #[test]
    fn normalises_federation_shapes() {
        let out = normalise(
            "pc",
            map(
                json!({"sub":"abc","email":" Angela.Dubois@Example.GOUV.fr ","usual_name":"Dubois","chorusdt:matricule":"123","roles":["agent_public"],"absent":null}),
            ),
        );
        assert_eq!(out["email"], json!("angela.dubois@example.gouv.fr"));
        assert_eq!(out["family_name"], json!("Dubois"));
        assert_eq!(out["chorusdt_matricule"], json!("123"));
        assert_eq!(out["provider"], json!("pc"));
        assert!(!out.contains_key("absent"));
        assert_eq!(claim_text(&out["roles"]).unwrap(), "[\"agent_public\"]");
    }

    #[test]
    fn reads_nc_connect_v2_nested_email() {
        let out = normalise(
            "nc",
            map(json!({"sub":"x","login":"jdoe","info":{"openid":{"Email":"JDoe@Gouv.NC"}}})),
        );
        assert_eq!(out["email"], json!("jdoe@gouv.nc"));
        assert_eq!(out["login"], json!("jdoe"));
    }
}
