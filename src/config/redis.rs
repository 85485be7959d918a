//! `[session.redis]`: where the shared session store is, and how to reach it.
//!
//! Every URL is read here by the `redis` crate itself, so a typo stops `check` instead of surfacing as a
//! connection error at the first login.

use super::raw::{RawRedis, S};
use super::types::*;
use super::{ConfigError, Validator};
use redis::IntoConnectionInfo;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn redis(&self, raw: &S<RawRedis>) -> Result<RedisConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.get_ref();
        let target = match (&raw.url, &raw.sentinel, &raw.cluster) {
            (Some(url), None, None) => {
                RedisTarget::Single(self.redis_url(url, "session.redis.url")?)
            }
            (_, Some(s), Some(_)) => {
                return self.err(
                    s.span(),
                    "session.redis",
                    "`sentinel` and `cluster` together: a deployment is one or the other",
                )
            }
            (Some(url), Some(_), None) | (Some(url), None, Some(_)) => {
                return self.err(
                    url.span(),
                    "session.redis.url",
                    "give `url` (one server), or `sentinel`, or `cluster`, not two of them",
                )
            }
            (None, Some(s), None) => {
                let sentinel = s.get_ref();
                let Some(master) = &sentinel.master else {
                    return self.err(
                        s.span(),
                        "session.redis.sentinel.master",
                        "missing: the name the sentinels know the master by (`sentinel monitor NAME …`)",
                    );
                };
                if master.get_ref().is_empty() {
                    return self.err(master.span(), "session.redis.sentinel.master", "empty");
                }
                if sentinel.nodes.is_empty() {
                    return self.err(
                        s.span(),
                        "session.redis.sentinel.nodes",
                        "missing: the sentinels' addresses, e.g. [\"redis://10.0.0.1:26379\"]",
                    );
                }
                let nodes = sentinel
                    .nodes
                    .iter()
                    .map(|n| self.redis_url(n, "session.redis.sentinel.nodes"))
                    .collect::<Result<Vec<_>, _>>()?;
                RedisTarget::Sentinel {
                    master: master.get_ref().clone(),
                    nodes,
                    username: self
                        .optional_secret(&sentinel.username, "session.redis.sentinel.username")?,
                    password: self
                        .optional_secret(&sentinel.password, "session.redis.sentinel.password")?,
                }
            }
            (None, None, Some(c)) => {
                if c.get_ref().is_empty() {
                    return self.err(
                        c.span(),
                        "session.redis.cluster",
                        "empty: list at least one node, e.g. [\"redis://10.0.0.1:6379\"]",
                    );
                }
                let nodes = c
                    .get_ref()
                    .iter()
                    .map(|n| self.redis_url(n, "session.redis.cluster"))
                    .collect::<Result<Vec<_>, _>>()?;
                RedisTarget::Cluster(nodes)
            }
            (None, None, None) => return self.err(
                span,
                "session.redis",
                "say where Redis is: `url`, `sentinel = { master, nodes }` or `cluster = [...]`",
            ),
        };
        let ca_pem = match &raw.ca_file {
            None => None,
            Some(f) => {
                let path = f.get_ref().strip_prefix("file:").unwrap_or(f.get_ref());
                let pem = std::fs::read(path).or_else(|e| {
                    self.err(
                        f.span(),
                        "session.redis.ca_file",
                        format!("cannot read `{path}`: {e}"),
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return self.err(
                        f.span(),
                        "session.redis.ca_file",
                        format!("`{path}` holds no PEM certificate"),
                    );
                }
                Some(pem)
            }
        };
        let key_prefix = match &raw.key_prefix {
            None => "passerelle:".to_string(),
            Some(p) => {
                let text = p.get_ref();
                if text.len() > 64 || text.bytes().any(|b| !b.is_ascii_graphic()) {
                    return self.err(
                        p.span(),
                        "session.redis.key_prefix",
                        "at most 64 printable ASCII characters, no spaces",
                    );
                }
                text.clone()
            }
        };
        let timeout = self.duration(
            &raw.timeout,
            "session.redis.timeout",
            Duration::from_millis(500),
        )?;
        if timeout.is_zero() || timeout > Duration::from_secs(30) {
            if let Some(t) = &raw.timeout {
                return self.err(
                    t.span(),
                    "session.redis.timeout",
                    "between 1ms and 30s: a request waits on it",
                );
            }
        }
        Ok(RedisConfig {
            target,
            username: self.optional_secret(&raw.username, "session.redis.username")?,
            password: self.optional_secret(&raw.password, "session.redis.password")?,
            ca_pem,
            key_prefix,
            timeout,
        })
    }

    fn optional_secret(
        &self,
        value: &Option<S<String>>,
        key: &str,
    ) -> Result<Option<super::Secret>, ConfigError> {
        value.as_ref().map(|v| self.secret(v, key)).transpose()
    }

    fn redis_url(&self, value: &S<String>, key: &str) -> Result<String, ConfigError> {
        let text = value.get_ref();
        let scheme_ok = ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|s| text.starts_with(s));
        // A URL may carry a password (`redis://:secret@host`): never echo that part back.
        let shown = match text.rsplit_once('@') {
            Some((scheme_and_user, host)) => {
                let scheme = scheme_and_user.split("://").next().unwrap_or("redis");
                format!("{scheme}://***@{host}")
            }
            None => text.clone(),
        };
        if !scheme_ok {
            return self.err(
                value.span(),
                key,
                format!("`{shown}` is not a Redis URL: redis://HOST:PORT, rediss://HOST:PORT (TLS) or unix:///path"),
            );
        }
        match text.as_str().into_connection_info() {
            Ok(_) => Ok(text.clone()),
            Err(e) => self.err(
                value.span(),
                key,
                format!("`{shown}` is not a valid Redis URL: {e}"),
            ),
        }
    }
}
