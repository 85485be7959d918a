//! Upstream selection: one address, or a round-robin pool with health checks; each reached over TLS
//! when its URL is https, with the route's trust and client certificate (`tls`).
//!
//! Addresses are resolved at start-up, then again every `server.resolve_interval` in the background
//! (`resolve`): a DNS lookup on the request path would block a worker.

mod resolve;
mod tls;

pub use resolve::{resolve, resolve_all, ResolveError, ResolvedName, Resolver};
pub use tls::PeerTls;

use crate::config::RouteConfig;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

pub struct Upstream {
    targets: Targets,
    /// `None` for http.
    tls: Option<Arc<PeerTls>>,
}

enum Targets {
    Single(Arc<ResolvedName>),
    Pool {
        lb: Arc<LoadBalancer<RoundRobin>>,
        /// Health checks started by a reload, ended with the last generation using the pool. `None`
        /// for the pools of the start, whose checks are pingora background services.
        _checks: Option<Arc<HealthChecks>>,
    },
}

/// Ends a pool's health checks when dropped.
pub struct HealthChecks(tokio::sync::watch::Sender<bool>);

impl Drop for HealthChecks {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A pool's load balancer before its health checks and re-resolution are started by the server.
pub struct PendingPool {
    pub lb: LoadBalancer<RoundRobin>,
    tls: Option<Arc<PeerTls>>,
}

impl Upstream {
    /// Resolves a route's upstream: a single address (whose name `resolver` then follows), or a pool
    /// whose health checks the caller must run as a background service before handing it back with
    /// [`Upstream::pool`].
    pub fn build(
        route: &RouteConfig,
        resolver: &Resolver,
    ) -> Result<Result<Self, PendingPool>, ResolveError> {
        let first = &route.upstreams[0];
        let tls = first.https.then(|| Arc::new(PeerTls::new(route)));
        if route.upstreams.len() == 1 {
            let name = Arc::new(ResolvedName::new(route.index, first)?);
            resolver.follow(&name);
            return Ok(Ok(Upstream {
                targets: Targets::Single(name),
                tls,
            }));
        }
        let discovery = resolve::PoolDiscovery::new(route, !resolver.interval().is_zero())?;
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
        // The first discovery answers with the addresses just resolved, without waiting.
        use futures_util::FutureExt;
        if let Some(Err(e)) = lb.update().now_or_never() {
            return Err(ResolveError {
                route: route.index,
                address: first.address(),
                reason: e.to_string(),
            });
        }
        let sni = tls
            .as_ref()
            .map(|t| t.sni().to_string())
            .unwrap_or_default();
        match &route.health_check {
            Some(path) => {
                // `Host` is the upstream's name; over TLS the SNI is the verified one.
                let mut check = HttpHealthCheck::new(&first.host, tls.is_some());
                if let Ok(uri) = path.parse() {
                    check.req.set_uri(uri);
                }
                if let Some(t) = &tls {
                    check.peer_template.sni = sni.clone();
                    t.apply(&mut check.peer_template);
                }
                lb.set_health_check(Box::new(check));
            }
            None => {
                // A TCP check cannot present the client certificate: there it stops at the TCP
                // connection, rather than mark every member down on a refused handshake.
                let mut check = match &tls {
                    Some(t) if !t.has_client_certificate() => TcpHealthCheck::new_tls(&sni),
                    _ => TcpHealthCheck::new(),
                };
                if let Some(t) = &tls {
                    t.apply_options(&mut check.peer_template.options);
                }
                lb.set_health_check(check);
            }
        }
        lb.health_check_frequency = Some(Duration::from_secs(5));
        if !resolver.interval().is_zero() {
            lb.update_frequency = Some(resolver.interval());
        }
        Ok(Err(PendingPool { lb, tls }))
    }

    pub fn pool(lb: Arc<LoadBalancer<RoundRobin>>, pending_tls: Option<Arc<PeerTls>>) -> Self {
        Upstream {
            targets: Targets::Pool { lb, _checks: None },
            tls: pending_tls,
        }
    }

    /// A pool for a reloaded configuration, on the running server: its members discovered and
    /// health-checked once before it serves, so a member that is down is not tried first, then checked
    /// in the background for as long as a generation uses it.
    pub async fn start_pool(pending: PendingPool) -> Self {
        use pingora::services::background::BackgroundService;
        let lb = Arc::new(pending.lb);
        lb.backends().run_health_check(false).await;
        let (stop, watch) = tokio::sync::watch::channel(false);
        let task = lb.clone();
        tokio::spawn(async move { task.start(watch).await });
        Upstream {
            targets: Targets::Pool {
                lb,
                _checks: Some(Arc::new(HealthChecks(stop))),
            },
            tls: pending.tls,
        }
    }

    pub fn is_pool(&self) -> bool {
        matches!(self.targets, Targets::Pool { .. })
    }

    /// The trust settings this upstream is reached with, for the log line of a refused certificate.
    pub fn tls(&self) -> Option<&PeerTls> {
        self.tls.as_deref()
    }

    pub fn peer(&self, timeout: Duration) -> Option<HttpPeer> {
        let addr = match &self.targets {
            Targets::Single(name) => name.current(),
            Targets::Pool { lb, .. } => lb.select(b"", 256)?.addr.as_inet()?.to_owned(),
        };
        let mut peer = match &self.tls {
            Some(tls) => {
                let mut peer = HttpPeer::new(addr, true, tls.sni().to_string());
                tls.apply_options(&mut peer.options);
                tls.apply_client(&mut peer);
                peer
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        Some(peer)
    }
}

impl PendingPool {
    pub fn tls(&self) -> Option<Arc<PeerTls>> {
        self.tls.clone()
    }
}
