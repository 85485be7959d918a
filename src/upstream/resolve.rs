//! Upstream names, looked up at start and again every `server.resolve_interval`, so that a changed DNS
//! record is followed without a restart. A lookup that fails keeps the last good address: a DNS outage
//! must not take a working upstream down.

use crate::config::{RouteConfig, UpstreamTarget};
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("route[{route}].upstream: cannot resolve `{address}`: {reason}")]
pub struct ResolveError {
    pub route: usize,
    pub address: String,
    pub reason: String,
}

/// Resolves every upstream of every route, as `run` will: what `check` verifies, so that a name that
/// does not resolve is found before the deployment rather than at its start.
pub fn resolve_all(routes: &[RouteConfig]) -> Result<(), ResolveError> {
    for route in routes {
        for target in &route.upstreams {
            resolve(route.index, target)?;
        }
    }
    Ok(())
}

/// The first address of a target, blocking: for the start and `check`, never on a worker.
pub fn resolve(route: usize, target: &UpstreamTarget) -> Result<SocketAddr, ResolveError> {
    let address = target.address();
    let err = |reason: String| ResolveError {
        route,
        address: address.clone(),
        reason,
    };
    (bare_host(target), target.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

fn bare_host(target: &UpstreamTarget) -> &str {
    target.host.trim_start_matches('[').trim_end_matches(']')
}

fn is_literal(target: &UpstreamTarget) -> bool {
    bare_host(target).parse::<IpAddr>().is_ok()
}

/// A lookup that takes longer is abandoned: the last address is kept until the next round.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The address to use after a lookup, without blocking a worker: `current` while the name still resolves
/// to it (round-robin DNS reorders its answers; following the order would churn connections for
/// nothing), else the first address.
async fn lookup(
    route: usize,
    target: &UpstreamTarget,
    current: SocketAddr,
) -> Result<SocketAddr, ResolveError> {
    let err = |reason: String| ResolveError {
        route,
        address: target.address(),
        reason,
    };
    let found: Vec<SocketAddr> = tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((bare_host(target), target.port)),
    )
    .await
    .map_err(|_| err(format!("no answer within {LOOKUP_TIMEOUT:?}")))?
    .map_err(|e| err(e.to_string()))?
    .collect();
    match found.contains(&current) {
        true => Ok(current),
        false => found
            .first()
            .copied()
            .ok_or_else(|| err("no address".into())),
    }
}

/// A single upstream's name and its current address.
pub struct ResolvedName {
    route: usize,
    target: UpstreamTarget,
    current: arc_swap::ArcSwap<SocketAddr>,
}

impl ResolvedName {
    pub fn new(route: usize, target: &UpstreamTarget) -> Result<Self, ResolveError> {
        Ok(Self {
            route,
            target: target.clone(),
            current: arc_swap::ArcSwap::from_pointee(resolve(route, target)?),
        })
    }

    pub fn current(&self) -> SocketAddr {
        **self.current.load()
    }

    async fn refresh(&self) {
        let old = self.current();
        match lookup(self.route, &self.target, old).await {
            Ok(addr) => {
                if addr != old {
                    tracing::info!(route = self.route, upstream = %self.target.address(), old = %old, new = %addr, "upstream address changed");
                    self.current.store(Arc::new(addr));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, kept = %self.current(), "upstream name did not resolve: the last address is kept")
            }
        }
    }
}

/// Follows the names of single upstreams, of this generation and of those still finishing requests: a
/// generation's names are dropped with it.
pub struct Resolver {
    interval: Duration,
    names: Mutex<Vec<Weak<ResolvedName>>>,
}

impl Resolver {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            names: Mutex::new(Vec::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Looks `name` up again every interval, unless it is an IP address.
    pub fn follow(&self, name: &Arc<ResolvedName>) {
        if self.interval.is_zero() || is_literal(&name.target) {
            return;
        }
        if let Ok(mut names) = self.names.lock() {
            names.push(Arc::downgrade(name));
        }
    }

    /// One round: every live name looked up, the dead ones forgotten.
    pub async fn refresh(&self) {
        let live: Vec<Arc<ResolvedName>> = match self.names.lock() {
            Ok(mut names) => {
                names.retain(|w| w.strong_count() > 0);
                names.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return,
        };
        futures_util::future::join_all(live.iter().map(|name| name.refresh())).await;
    }
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = self.refresh() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A pool's members, looked up by pingora's load balancer every interval (its `update_frequency`).
pub(super) struct PoolDiscovery {
    route: usize,
    targets: Vec<UpstreamTarget>,
    /// The last good address of each target, kept when a lookup fails. The first discovery answers
    /// with the addresses resolved at build, at once.
    last: Mutex<Vec<SocketAddr>>,
    started: std::sync::atomic::AtomicBool,
    /// `server.resolve_interval` is not zero. pingora runs one discovery at start whatever the frequency.
    follow: bool,
}

impl PoolDiscovery {
    pub(super) fn new(route: &RouteConfig, follow: bool) -> Result<Self, ResolveError> {
        let last = route
            .upstreams
            .iter()
            .map(|t| resolve(route.index, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            route: route.index,
            targets: route.upstreams.clone(),
            last: Mutex::new(last),
            started: Default::default(),
            follow,
        })
    }

    fn backends(addrs: &[SocketAddr]) -> BTreeSet<Backend> {
        addrs
            .iter()
            .map(|a| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(*a),
                weight: 1,
                ext: Default::default(),
            })
            .collect()
    }
}

#[async_trait]
impl ServiceDiscovery for PoolDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut addrs = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        let first = !self
            .started
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        if !first && self.follow && addrs.len() == self.targets.len() {
            let lookups = self
                .targets
                .iter()
                .zip(&addrs)
                .map(|(target, old)| async move {
                    match is_literal(target) {
                        true => Ok(*old),
                        false => lookup(self.route, target, *old).await,
                    }
                });
            let found = futures_util::future::join_all(lookups).await;
            for ((target, addr), result) in self.targets.iter().zip(addrs.iter_mut()).zip(found) {
                match result {
                    Ok(new) if new != *addr => {
                        tracing::info!(route = self.route, upstream = %target.address(), old = %addr, new = %new, "upstream address changed");
                        *addr = new;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, kept = %addr, "upstream name did not resolve: the last address is kept")
                    }
                }
            }
            if let Ok(mut last) = self.last.lock() {
                *last = addrs.clone();
            }
        }
        Ok((Self::backends(&addrs), HashMap::new()))
    }
}
