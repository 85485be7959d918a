//! `systemctl reload` (SIGHUP): the configuration file read again, validated as `check` does, and swapped
//! in for new requests at once; requests in flight finish on the generation they started with.
//!
//! What lives outside a generation stays as started, and the log says so when the file changes it: the
//! listeners and thread count (a binary upgrade, `run --upgrade`, or a restart applies them), the Redis
//! link (it has listened for revocations since the start: replacing it could miss one), the admin
//! listener and token, the development provider, and whether the listeners speak TLS (with which client CA).
//! The TLS certificates themselves are re-read, as they are whenever their files change. Everything a
//! request is decided and forwarded with is in the generation: routes, providers, scopes, headers, rules,
//! session keys and lifetimes.

use crate::admin::Metrics;
use crate::config::{self, Config, ProviderKind};
use crate::proxy::Gateway;
use crate::tls::certificates::CertStore;
use crate::upstream::{ResolveError, Upstream};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("the upstreams could not be built: {0}")]
    Internal(String),
}

pub struct Reloader {
    path: PathBuf,
    current: Arc<ArcSwap<Gateway>>,
    metrics: Arc<Metrics>,
    /// The TLS listeners' certificates, which a reload re-reads (`None` without `server.tls`).
    certificates: Option<Arc<CertStore>>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        current: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        certificates: Option<Arc<CertStore>>,
    ) -> Self {
        Reloader {
            path,
            current,
            metrics,
            certificates,
        }
    }

    /// One reload: the new generation in place, or the running one kept and the reason logged.
    pub async fn reload(&self) {
        let started = Instant::now();
        let file = self.path.display().to_string();
        let running = self.current.load_full();
        // logrotate moved the file away and asked for a reload: the next line goes to a new file, whether
        // the configuration is then applied or refused.
        running.audit.reopen();
        let outcome = match config::load(&self.path) {
            Ok(config) => next_generation(&running, config).await,
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok((next, kept)) => {
                for setting in kept {
                    tracing::warn!(file = %file, setting, "changed in the file, but applied only by a binary upgrade (passerelle run --upgrade) or a restart; the running value stays");
                }
                if let (Some(store), Some(tls)) = (&self.certificates, &next.config.server.tls) {
                    // Checked by the configuration load a moment ago; a file replaced since keeps the
                    // running certificate, and the watcher tries again when it changes.
                    let certificates = tls.certificates.clone();
                    let store = store.clone();
                    let outcome =
                        tokio::task::spawn_blocking(move || store.replace(&certificates)).await;
                    if let Ok(Err(e)) = outcome {
                        tracing::error!(file = %file, error = %e, "the new server certificate cannot be used: the running one stays");
                    }
                }
                let (routes, providers) = (next.config.routes.len(), next.config.providers.len());
                self.current.store(Arc::new(next));
                self.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %file, routes, providers, elapsed_ms = started.elapsed().as_millis() as u64, "configuration reloaded: new requests use it, requests in flight finish on the previous one");
            }
            Err(e) => {
                self.metrics
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %file, error = %e, "configuration reload refused: the running configuration stays");
            }
        }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Reloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload by restarting");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reload().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The generation for `config`, sharing with `running` what outlives generations, and the settings
/// that changed but cannot be applied without new listeners or links.
pub async fn next_generation(
    running: &Gateway,
    config: Config,
) -> Result<(Gateway, Vec<&'static str>), ReloadError> {
    let kept = unappliable_changes(&running.config, &config);
    let mut routes = config.routes.clone();
    routes.sort_by_key(|r| r.index);
    // The names are looked up with the system's resolver, which blocks: off the runtime's workers.
    let resolver = running.resolver.clone();
    let built = tokio::task::spawn_blocking(move || {
        routes
            .iter()
            .map(|route| Upstream::build(route, &resolver))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ReloadError::Internal(e.to_string()))??;
    let mut upstreams = Vec::with_capacity(built.len());
    for b in built {
        upstreams.push(match b {
            Ok(single) => single,
            Err(pending) => Upstream::start_pool(pending).await,
        });
    }
    let sessions = running.sessions.reloaded(config.session.clone());
    let next = crate::server::generation(
        Arc::new(config),
        sessions,
        upstreams,
        running.metrics.clone(),
        running.audit.clone(),
        running.resolver.clone(),
    );
    Ok((next, kept))
}

/// Settings read once at the start, which the file now sets differently.
fn unappliable_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let dev = |c: &Config| -> Vec<String> {
        c.providers
            .iter()
            .filter_map(|p| match &p.kind {
                ProviderKind::Dev(d) => {
                    Some(format!("{} {} {} {:?}", p.name, p.issuer, p.client_id, d))
                }
                _ => None,
            })
            .collect()
    };
    // The certificates themselves are replaced by a reload; whether the listeners speak TLS is not.
    let tls = |c: &Config| c.server.tls.is_some();
    let redis = |c: &Config| (c.session.store, c.session.redis.clone());
    let audit = |c: &Config| {
        c.audit.as_ref().map(|a| {
            (
                a.output.clone(),
                a.pseudonym_key.as_ref().map(|k| k.expose().to_string()),
            )
        })
    };
    [
        ("server.listen", a.listen != b.listen),
        ("server.tls (on or off)", tls(old) != tls(new)),
        ("server.redirect_http", a.redirect_http != b.redirect_http),
        (
            "server.tls.client_ca",
            a.tls.as_ref().and_then(|t| t.client_ca.as_ref())
                != b.tls.as_ref().and_then(|t| t.client_ca.as_ref()),
        ),
        ("server.threads", a.threads != b.threads),
        (
            "server.resolve_interval",
            a.resolve_interval != b.resolve_interval,
        ),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        (
            "server.admin_token",
            a.admin_token.as_ref().map(|t| t.expose().to_string())
                != b.admin_token.as_ref().map(|t| t.expose().to_string()),
        ),
        (
            "server.keepalive_timeout",
            a.keepalive_timeout != b.keepalive_timeout,
        ),
        ("server.grace_period", a.grace_period != b.grace_period),
        (
            "server.shutdown_timeout",
            a.shutdown_timeout != b.shutdown_timeout,
        ),
        ("server.log_format", a.log_format != b.log_format),
        (
            "server.upgrade_socket",
            a.upgrade_socket != b.upgrade_socket,
        ),
        ("server.pid_file", a.pid_file != b.pid_file),
        ("echo", old.echo != new.echo),
        ("providers (kind = \"dev\")", dev(old) != dev(new)),
        ("session.store / session.redis", redis(old) != redis(new)),
        (
            "session.max_lifetime",
            old.session.max_lifetime != new.session.max_lifetime,
        ),
        (
            "session.recheck_interval",
            old.session.recheck_interval != new.session.recheck_interval,
        ),
        (
            "session.redis_grace",
            old.session.redis_grace != new.session.redis_grace,
        ),
        ("[audit]", audit(old) != audit(new)),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(redis_password: &str) -> Config {
        let toml = format!(
            "[session]\nkeys = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\nstore = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\npassword = \"{redis_password}\"\n[[route]]\nupstream = \"http://127.0.0.1:1\"\nauth = \"public\"\n"
        );
        crate::config::parse(&toml, "t.toml").unwrap()
    }

    #[test]
    fn a_changed_redis_password_is_reported_without_being_shown() {
        let changes = unappliable_changes(&config("first-password"), &config("second-password"));
        assert_eq!(changes, vec!["session.store / session.redis"]);
        assert!(unappliable_changes(&config("same"), &config("same")).is_empty());
    }
}
