//! Assembles the pingora server from a validated configuration: the proxy, the development provider and
//! echo upstream when configured, the admin listener and the upstream health checks.

use crate::admin::{Admin, Metrics};
use crate::config::{Config, ProviderKind};
use crate::connections::LeanConnections;
use crate::dev::{DevKeyError, DevProvider, Echo};
use crate::identity::IdentityHeaderFilter;
use crate::oidc::{LoginError, Provider};
use crate::proxy::{Gateway, Passerelle};
use crate::routes::RouteTable;
use crate::session::SessionManager;
use crate::tls::certificates::{CertStore, CertWatcher};
use crate::tls::redirect_http::RedirectHttp;
use crate::upstream::{ResolveError, Resolver, Upstream};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    DevKey(#[from] DevKeyError),
    #[error("provider `{provider}`: {source}")]
    Provider {
        provider: String,
        source: LoginError,
    },
    #[error("server configuration: {0}")]
    Server(String),
}

/// Fetches each external provider's discovery document once before serving, with a throw-away client,
/// so a wrong issuer stops the start with a clear message. An unreachable provider only warns: public
/// routes and existing sessions keep working, and discovery is retried at the first login.
pub fn preflight(config: &Config) -> Result<(), StartError> {
    let external: Vec<_> = config
        .providers
        .iter()
        .filter(|p| !matches!(p.kind, ProviderKind::Dev(_)))
        .cloned()
        .collect();
    if external.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Server(e.to_string()))?;
    runtime.block_on(async {
        for p in external {
            let provider = Provider::new(p.clone());
            match provider.discover().await {
                Ok(()) => tracing::info!(provider = %p.name, issuer = %p.issuer, "provider discovered"),
                Err(e @ LoginError::IssuerMismatch { .. }) => return Err(StartError::Provider { provider: p.name.clone(), source: e }),
                Err(e) => match &p.egress_proxy {
                    Some(proxy) => tracing::warn!(provider = %p.name, egress_proxy = %crate::config::printable_url(proxy), error = %e, "provider not reachable through its egress proxy yet; will retry at the first login (`check --online` says which hop fails)"),
                    None => tracing::warn!(provider = %p.name, error = %e, "provider not reachable yet; will retry at the first login (`check --online` says which hop fails)"),
                },
            }
        }
        Ok(())
    })
}

/// Subscribes to the revocation channel for the life of the process.
struct RevocationListener(Arc<crate::session::Shared>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RevocationListener {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.listen(shutdown).await;
    }
}

/// How this process starts.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Receive the listening sockets of the running instance through `server.upgrade_socket`.
    pub upgrade: bool,
    /// Fork into the background and write `server.pid_file`.
    pub daemon: bool,
    /// From the command line, over the configuration's: a service unit names its own run directory.
    pub pid_file: Option<String>,
    pub upgrade_socket: Option<String>,
}

/// The server for `config`; with `config_path`, SIGHUP reloads that file (src/reload.rs).
pub fn build(
    config: Config,
    config_path: Option<PathBuf>,
    start: Start,
) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let server_conf = ServerConf {
        threads: config.server.threads,
        // One thread has nothing to steal from: pingora's single-threaded runtime then spares the
        // work-stealing scheduler's cross-thread bookkeeping (0.91x CPU per request in bench/compare.sh). With
        // more threads stealing stays on: without it pingora 0.9 parks a pooled upstream connection's idle
        // watcher on a random thread, and a request on another thread may find the connection still held by
        // it and open a new one ("failed to acquire reusable stream"); on one thread the watcher has always let
        // go before the request runs.
        work_stealing: config.server.threads > 1,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        upgrade_sock: start
            .upgrade_socket
            .clone()
            .unwrap_or_else(|| config.server.upgrade_socket.clone()),
        pid_file: start
            .pid_file
            .clone()
            .unwrap_or_else(|| config.server.pid_file.clone()),
        daemon: start.daemon,
        // Not `daemon_wait_for_ready`: in pingora 0.9.1 the daemon may signal its parent before the parent
        // listens for it, and SIGUSR1 then kills the parent (exit 138) although the daemon is fine.
        ..ServerConf::default()
    };
    let server_conf = server_conf
        .validate()
        .map_err(|e| StartError::Server(e.to_string()))?;
    let opt = pingora::server::configuration::Opt {
        upgrade: start.upgrade,
        daemon: start.daemon,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    // Listening sockets are received here from the running instance with --upgrade. In the foreground this
    // happens now, before any service starts, as pingora's own examples do; a daemon must do it after its
    // fork, so there it is a service the listening services wait for.
    let bootstrap = match start.daemon {
        true => Some(server.bootstrap_as_a_service()),
        false => {
            server.bootstrap();
            None
        }
    };
    let listening = |handle: pingora::services::ServiceHandle| {
        if let Some(b) = &bootstrap {
            handle.add_dependency(b);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let audit = Arc::new(match &config.audit {
        Some(a) => {
            crate::audit::Audit::start(a).map_err(|e| StartError::Server(format!("audit: {e}")))?
        }
        None => crate::audit::Audit::off(),
    });

    let resolver = background_service(
        "upstream names",
        Resolver::new(config.server.resolve_interval),
    );
    let resolver_task = resolver.task();
    server.add_service(resolver);
    let mut upstreams = Vec::new();
    let mut routes_sorted = config.routes.clone();
    routes_sorted.sort_by_key(|r| r.index);
    for route in &routes_sorted {
        match Upstream::build(route, &resolver_task)? {
            Ok(single) => upstreams.push(single),
            Err(pending) => {
                let tls = pending.tls();
                let checks =
                    background_service(&format!("health check route {}", route.index), pending.lb);
                upstreams.push(Upstream::pool(checks.task(), tls));
                server.add_service(checks);
            }
        }
    }

    for p in &config.providers {
        if let ProviderKind::Dev(dev) = &p.kind {
            tracing::warn!(provider = %p.name, listen = %dev.listen, "DEVELOPMENT identity provider enabled: anyone can sign in as a test identity. Never use it in production.");
            let app = DevProvider::new(
                &p.issuer,
                &p.client_id,
                p.client_secret.expose(),
                &config.server.prefix,
                dev.signed_userinfo,
            )?;
            let mut service =
                Service::new(format!("dev provider {}", p.name), HttpServer::new_app(app));
            service.add_tcp(&dev.listen.to_string());
            service.threads = Some(1);
            listening(server.add_service(service));
        }
    }
    if config.echo.is_some() {
        // The demo: one line to say where to go.
        let url = match &config.server.public_url {
            Some(u) => u.origin(),
            None => {
                let a = config.server.listen[0];
                let ip = match a.ip().is_unspecified() {
                    true => "127.0.0.1".to_string(),
                    false if a.is_ipv6() => format!("[{}]", a.ip()),
                    false => a.ip().to_string(),
                };
                let scheme = if config.server.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{ip}:{}", a.port())
            }
        };
        tracing::info!("open {url}/");
    }
    if let Some(echo) = config.echo {
        let mut service = Service::new(
            "echo upstream".into(),
            HttpServer::new_app(Echo {
                prefix: config.server.prefix.clone(),
                encoding: config.server.header_encoding,
                identity_headers: config
                    .routes
                    .iter()
                    .flat_map(|r| r.headers.iter().map(|(h, _)| h.as_str().to_string()))
                    .collect(),
            }),
        );
        service.add_tcp(&echo.to_string());
        service.threads = Some(1);
        listening(server.add_service(service));
    }
    let sessions = SessionManager::new(config.session.clone())
        .map_err(|e| StartError::Server(format!("session.redis: {e}")))?;
    if let Some(shared) = sessions.shared.clone() {
        server.add_service(background_service(
            "session revocations",
            RevocationListener(shared),
        ));
    }
    let current = Arc::new(arc_swap::ArcSwap::from_pointee(generation(
        config.clone(),
        sessions,
        upstreams,
        metrics.clone(),
        audit.clone(),
        resolver_task,
    )));
    if let Some(admin) = config.server.admin_listen {
        let mut service = Service::new(
            "admin".into(),
            HttpServer::new_app(Admin {
                listen: config.server.listen.clone(),
                metrics: metrics.clone(),
                audit: audit.clone(),
                shared: current.load().sessions.shared.clone(),
                token: config.server.admin_token.clone(),
                gateway: current.clone(),
            }),
        );
        service.add_tcp(&admin.to_string());
        service.threads = Some(1);
        listening(server.add_service(service));
    }

    let certificates = match &config.server.tls {
        Some(tls) => {
            let store = CertStore::new(&tls.certificates)
                .map_err(|e| StartError::Server(format!("server.tls: {e}")))?;
            server.add_service(background_service(
                "certificate renewal",
                CertWatcher {
                    store: store.clone(),
                    interval: CERTIFICATE_POLL,
                },
            ));
            Some(store)
        }
        None => None,
    };
    if let Some(path) = config_path {
        server.add_service(background_service(
            "configuration reload",
            crate::reload::Reloader::new(path, current.clone(), metrics, certificates.clone()),
        ));
    }
    if !config.server.redirect_http.is_empty() {
        let mut service = Service::new(
            "https redirect".into(),
            HttpServer::new_app(RedirectHttp {
                gateway: current.clone(),
            }),
        );
        for addr in &config.server.redirect_http {
            service.add_tcp(&addr.to_string());
        }
        listening(server.add_service(service));
    }
    let mut http = pingora::proxy::http_proxy(&server.configuration, Passerelle::new(current));
    http.h2_options = Some(h2_options(&config));
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.server.keepalive_timeout);
    http.server_options = Some(options);
    let mut proxy = Service::new(
        "passerelle".into(),
        LeanConnections::new(http, config.server.keepalive_timeout),
    );
    for addr in &config.server.listen {
        match &certificates {
            Some(store) => {
                let client_ca = config
                    .server
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_ca.as_ref());
                let settings = crate::tls::listener_settings(store.clone(), client_ca)
                    .map_err(|e| StartError::Server(format!("server.tls: {e}")))?;
                proxy.add_tls_with_settings(&addr.to_string(), None, settings);
            }
            // No L4 read buffer on plain TCP: the HTTP parser reads into its own, and an idle connection
            // would otherwise keep 64 KB (src/connections.rs).
            None => proxy.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .l4_buffer(L4BufferSettings::default().read(0)),
            ),
        }
    }
    listening(server.add_service(proxy));
    Ok(server)
}

/// How often the certificate files are looked at for a renewal: a stat of each, nothing more.
const CERTIFICATE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// HTTP/2's limits on a downstream connection: the header list no larger than `server.max_header_bytes`
/// (as HTTP/1.1's), 100 concurrent streams, and the h2 crate's defences against reset floods kept bounded
/// (CVE-2023-44487: streams reset before being accepted; CVE-2024-27316-like error floods).
fn h2_options(config: &Config) -> pingora::protocols::http::v2::server::H2Options {
    let mut options = pingora::protocols::http::v2::server::default_h2_options();
    options
        .max_header_list_size(config.server.max_header_bytes as u32)
        .max_concurrent_streams(crate::tls::MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256));
    options
}

/// One configuration generation: what the proxy decides and forwards with, from `config`, the sessions
/// and the upstreams built for it. The start builds the first; each reload the next.
pub(crate) fn generation(
    config: Arc<Config>,
    sessions: SessionManager,
    upstreams: Vec<Upstream>,
    metrics: Arc<Metrics>,
    audit: Arc<crate::audit::Audit>,
    resolver: Arc<Resolver>,
) -> Gateway {
    crate::pages::set_branding(config.pages.clone(), &config.server.prefix);
    crate::proxy::respond::set_hsts(config.server.hsts.clone());
    let providers: BTreeMap<String, Arc<Provider>> = config
        .providers
        .iter()
        .map(|p| (p.name.clone(), Arc::new(Provider::new(p.clone()))))
        .collect();
    let header_names = config.routes.iter().flat_map(|r| {
        r.headers
            .iter()
            .map(|(h, _)| h)
            .chain(r.assertion.as_ref().map(|a| &a.header))
            .map(|h| h.as_str().to_string())
    });
    // The keys were loaded by the configuration check: this cannot fail short of a bug, and a route
    // with an assertion then answers 500 rather than forward without it.
    let issuer = config
        .server
        .public_url
        .as_ref()
        .map(|u| u.origin().to_string())
        .unwrap_or_default();
    let signer = crate::identity::assertion::Signer::new(&config.assertion_keys, &issuer)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "identity assertions disabled");
            None
        });
    Gateway {
        signer,
        routes: RouteTable::new(config.routes.clone(), config.server.path_reading),
        providers,
        sessions,
        identity_filter: IdentityHeaderFilter::new(
            &config.server.identity_header_prefix,
            header_names,
        ),
        upstreams,
        metrics,
        own_cookies: crate::session::cookies::OwnCookieNames::new(&config.session.cookie_name),
        audit,
        resolver,
        config,
    }
}
