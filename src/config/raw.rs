//! The configuration file as written: serde types that mirror the TOML, nothing more.
//!
//! Every struct denies unknown keys: for a security product a misspelt key that is silently ignored is a
//! setting the operator believes enforced and is not. Values that are checked after parsing are `Spanned`
//! so an error can name their line.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<S<RawServer>>,
    pub session: S<RawSession>,
    #[serde(default)]
    pub providers: BTreeMap<S<String>, S<RawProvider>>,
    #[serde(default)]
    pub route: Vec<S<RawRoute>>,
    pub echo: Option<S<RawEcho>>,
    pub audit: Option<S<RawAudit>>,
    pub assertion: Option<S<RawAssertionKeys>>,
    pub pages: Option<S<RawPages>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPages {
    pub service_name: Option<S<String>>,
    pub logo: Option<S<String>>,
    pub support: Option<S<String>>,
    pub accent_colour: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertionKeys {
    pub keys: S<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAssertion {
    pub header: Option<S<String>>,
    pub audience: Option<S<String>>,
    pub ttl: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub file: Option<S<String>>,
    pub pseudonymise: Option<S<bool>>,
    pub pseudonym_key: Option<S<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<Vec<S<String>>>>,
    pub tls: Option<S<OneOrMany<RawTls>>>,
    pub hsts: Option<S<String>>,
    pub redirect_http: Option<S<Vec<S<String>>>>,
    pub public_url: Option<S<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<S<String>>,
    pub prefix: Option<S<String>>,
    pub admin_listen: Option<S<String>>,
    pub threads: Option<S<usize>>,
    pub grace_period: Option<S<String>>,
    pub shutdown_timeout: Option<S<String>>,
    pub header_encoding: Option<S<String>>,
    pub identity_header_prefix: Option<S<String>>,
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<S<String>>,
    pub log_format: Option<S<String>>,
    pub upstream_timeout: Option<S<String>>,
    pub resolve_interval: Option<S<String>>,
    pub keepalive_timeout: Option<S<String>>,
    pub max_header_bytes: Option<S<usize>>,
    pub windows_paths: Option<S<bool>>,
    pub forward_auth_uri_header: Option<S<String>>,
    pub admin_token: Option<S<String>>,
    pub upgrade_socket: Option<S<String>>,
    pub pid_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
    pub hosts: Option<S<Vec<S<String>>>>,
    pub client_ca: Option<S<String>>,
}

/// A table, or an array of them (`server.tls = { … }` or `[[server.tls]]`).
#[derive(Debug)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<S<T>>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(OneOrMany::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub keys: S<Vec<S<String>>>,
    pub cookie_name: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub max_lifetime: Option<S<String>>,
    pub login_timeout: Option<S<String>>,
    pub store: Option<S<String>>,
    pub secure: Option<S<bool>>,
    pub logout_clear_site_data: Option<S<Vec<S<String>>>>,
    pub redis: Option<S<RawRedis>>,
    pub recheck_interval: Option<S<String>>,
    pub redis_grace: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub sentinel: Option<S<RawSentinel>>,
    pub cluster: Option<S<Vec<S<String>>>>,
    pub key_prefix: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: Option<S<String>>,
    #[serde(default)]
    pub nodes: Vec<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: S<String>,
    pub issuer: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<String>>,
    pub auth_method: Option<S<String>>,
    pub scopes: Option<S<Vec<S<String>>>>,
    pub display_name: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub id_token_algs: Option<S<Vec<S<String>>>>,
    pub userinfo: Option<S<bool>>,
    /// `kind = "dev"` only: where the development provider listens.
    pub listen: Option<S<String>>,
    /// `kind = "dev"` only: explicit consent to a development provider reachable from other machines.
    pub allow_non_loopback: Option<S<bool>>,
    /// `kind = "dev"` only: answer userinfo as a signed JWT, as ProConnect does.
    pub signed_userinfo: Option<S<bool>>,
    /// Presets: `integration` | `production` (ProConnect), `test` | `production` (NC Connect).
    pub environment: Option<S<String>>,
    /// ProConnect: `internet` | `rie`.
    pub network: Option<S<String>>,
    /// NC Connect: 3 (Keycloak, default) or 2 (legacy).
    pub version: Option<S<u8>>,
    pub acr: Option<S<RawAcr>>,
    pub prompt: Option<S<String>>,
    pub idp_hint: Option<S<String>>,
    pub login_hint: Option<S<String>>,
    pub siret_hint: Option<S<String>>,
    pub egress_proxy: Option<S<String>>,
    pub ca_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcr {
    #[serde(default)]
    pub essential: bool,
    pub values: S<Vec<S<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    #[serde(default)]
    pub siret: Vec<S<String>>,
    #[serde(default)]
    pub email_domain: Vec<S<String>>,
    #[serde(default)]
    pub idp_id: Vec<S<String>>,
    #[serde(default)]
    pub roles: Vec<S<String>>,
    #[serde(default)]
    pub belonging_population: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<S<String>>,
    pub path: Option<S<String>>,
    pub upstream: S<RawUpstream>,
    pub auth: Option<S<String>>,
    pub providers: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub scopes: Vec<S<String>>,
    #[serde(default)]
    pub headers: BTreeMap<S<String>, S<String>>,
    pub header_encoding: Option<S<String>>,
    pub health_check: Option<S<String>>,
    pub acr: Option<S<RawAcr>>,
    pub require: Option<S<RawRequire>>,
    pub prompt: Option<S<String>>,
    pub idp_hint: Option<S<String>>,
    pub login_hint: Option<S<String>>,
    pub siret_hint: Option<S<String>>,
    pub cors_allow_preflight: Option<S<bool>>,
    pub cache: Option<S<String>>,
    pub purpose: Option<S<String>>,
    pub upstream_tls: Option<S<RawUpstreamTls>>,
    pub upstream_h2: Option<S<bool>>,
    pub client_certificate: Option<S<String>>,
    pub assertion: Option<S<RawRouteAssertion>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: Option<S<String>>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    pub sni: Option<S<String>>,
    pub verify_hostname: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEcho {
    pub listen: S<String>,
}
