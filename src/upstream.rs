//! Upstream selection: one address, or a round-robin pool with health checks.
//!
//! Addresses are resolved once at start-up: a DNS lookup on the request path would block a worker.

use crate::config::{RouteConfig, UpstreamTarget};
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::upstreams::peer::HttpPeer;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("route[{route}].upstream: cannot resolve `{address}`: {reason}")]
pub struct ResolveError {
    pub route: usize,
    pub address: String,
    pub reason: String,
}

pub enum Upstream {
    Single {
        addr: SocketAddr,
        tls: bool,
        sni: String,
    },
    Pool {
        lb: Arc<LoadBalancer<RoundRobin>>,
        tls: bool,
        sni: String,
        /// Health checks started by a reload, ended with the last generation using the pool. `None`
        /// for the pools of the start, whose checks are pingora background services.
        checks: Option<Arc<HealthChecks>>,
    },
}

/// Ends a pool's health checks when dropped.
pub struct HealthChecks(tokio::sync::watch::Sender<bool>);

impl Drop for HealthChecks {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A pool's load balancer before its health checks are started by the server.
pub struct PendingPool {
    pub lb: LoadBalancer<RoundRobin>,
    pub tls: bool,
    pub sni: String,
}

impl Upstream {
    /// Resolves a route's upstream: a single address, or a pool whose health checks the caller must run
    /// as a background service before handing it back with [`Upstream::pool`].
    pub fn build(route: &RouteConfig) -> Result<Result<Self, PendingPool>, ResolveError> {
        let first = &route.upstreams[0];
        let tls = first.https;
        let sni = first.host.clone();
        if route.upstreams.len() == 1 {
            return Ok(Ok(Upstream::Single {
                addr: resolve(route.index, first)?,
                tls,
                sni,
            }));
        }
        let addrs = route
            .upstreams
            .iter()
            .map(|t| resolve(route.index, t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut lb =
            LoadBalancer::<RoundRobin>::try_from_iter(addrs).map_err(|e| ResolveError {
                route: route.index,
                address: first.address(),
                reason: e.to_string(),
            })?;
        match &route.health_check {
            Some(path) => {
                let mut check = HttpHealthCheck::new(&sni, tls);
                if let Ok(uri) = path.parse() {
                    check.req.set_uri(uri);
                }
                lb.set_health_check(Box::new(check));
            }
            None => {
                let check = if tls {
                    TcpHealthCheck::new_tls(&sni)
                } else {
                    TcpHealthCheck::new()
                };
                lb.set_health_check(check);
            }
        }
        lb.health_check_frequency = Some(Duration::from_secs(5));
        Ok(Err(PendingPool { lb, tls, sni }))
    }

    pub fn pool(lb: Arc<LoadBalancer<RoundRobin>>, tls: bool, sni: String) -> Self {
        Upstream::Pool {
            lb,
            tls,
            sni,
            checks: None,
        }
    }

    /// A pool for a reloaded configuration, on the running server: its members discovered and
    /// health-checked once before it serves, so a member that is down is not tried first, then checked
    /// in the background for as long as a generation uses it.
    pub async fn start_pool(pending: PendingPool) -> Self {
        use pingora::services::background::BackgroundService;
        let lb = Arc::new(pending.lb);
        if let Err(e) = lb.update().await {
            tracing::warn!(error = %e, "upstream pool discovery failed");
        }
        lb.backends().run_health_check(false).await;
        let (stop, watch) = tokio::sync::watch::channel(false);
        let task = lb.clone();
        tokio::spawn(async move { task.start(watch).await });
        Upstream::Pool {
            lb,
            tls: pending.tls,
            sni: pending.sni,
            checks: Some(Arc::new(HealthChecks(stop))),
        }
    }

    pub fn is_pool(&self) -> bool {
        matches!(self, Upstream::Pool { .. })
    }

    pub fn peer(&self, timeout: Duration) -> Option<HttpPeer> {
        let (addr, tls, sni) = match self {
            Upstream::Single { addr, tls, sni } => (*addr, *tls, sni),
            Upstream::Pool { lb, tls, sni, .. } => {
                (lb.select(b"", 256)?.addr.as_inet()?.to_owned(), *tls, sni)
            }
        };
        let mut peer = HttpPeer::new(addr, tls, sni.clone());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        Some(peer)
    }
}

/// Resolves every upstream of every route, as `run` will: what `check --online` verifies, so that a name
/// that does not resolve is found before the deployment rather than at its start.
pub fn resolve_all(routes: &[RouteConfig]) -> Result<(), ResolveError> {
    for route in routes {
        for target in &route.upstreams {
            resolve(route.index, target)?;
        }
    }
    Ok(())
}

pub fn resolve(route: usize, target: &UpstreamTarget) -> Result<SocketAddr, ResolveError> {
    let address = target.address();
    let err = |reason: String| ResolveError {
        route,
        address: address.clone(),
        reason,
    };
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    (host, target.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}
