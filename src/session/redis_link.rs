//! One logical connection to Redis, whatever the deployment: a single server, a Sentinel-managed master,
//! or a Cluster. It reconnects by itself (asking the sentinels again after a failover), bounds every
//! operation by `session.redis.timeout`, and while Redis is unreachable fails fast instead of making
//! each request wait for a connect timeout.

use crate::config::{RedisConfig, RedisTarget};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, Value,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a failed connection attempt new attempts are skipped: Redis down must cost a
/// request nothing more than a check of this clock.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Redis unreachable: {0}")]
    Unavailable(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis refused the command: {0}")]
    Command(String),
}

enum Target {
    Single(Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// The client, and the nodes as configured: one of them carries the pub/sub connection.
    Cluster(redis::cluster::ClusterClient, Vec<redis::ConnectionInfo>),
}

/// Either kind of live connection; both are cheap to clone and multiplex commands.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Which connection a command travels on. `Durable` carries the writes followed by `WAIT` (Sentinel):
/// Redis blocks a connection during `WAIT`, and session lookups must not queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Lookups = 0,
    Durable = 1,
}

pub struct Link {
    target: Target,
    conns: [Mutex<Option<Conn>>; 2],
    connecting: tokio::sync::Mutex<()>,
    /// Milliseconds since `epoch` of the last failed connection attempt; 0: none.
    failed_at: AtomicU64,
    epoch: Instant,
    timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    /// The deployment kind, for `check --online` and logs.
    pub kind: &'static str,
}

fn connection_info(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> RedisResult<redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = username {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    Ok(info.set_redis_settings(settings))
}

/// A client for one server, trusting `ca_pem` alone when given (`rediss://` signed by a private CA).
fn client(info: redis::ConnectionInfo, ca_pem: Option<&Vec<u8>>) -> RedisResult<Client> {
    match ca_pem {
        Some(pem) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(info),
    }
}

impl Link {
    pub fn new(config: &RedisConfig) -> RedisResult<Link> {
        let username = config.username.as_ref().map(|s| s.expose());
        let password = config.password.as_ref().map(|s| s.expose());
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: config.ca_pem.clone(),
        };
        let (target, kind) = match &config.target {
            RedisTarget::Single(url) => {
                let info = connection_info(url, username, password)?;
                (
                    Target::Single(client(info, config.ca_pem.as_ref())?),
                    "standalone",
                )
            }
            RedisTarget::Sentinel {
                master,
                nodes,
                username: sentinel_user,
                password: sentinel_password,
            } => {
                let sentinels = nodes
                    .iter()
                    .map(|n| {
                        connection_info(
                            n,
                            sentinel_user.as_ref().map(|s| s.expose()),
                            sentinel_password.as_ref().map(|s| s.expose()),
                        )
                    })
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut settings = redis::RedisConnectionInfo::default();
                if let Some(u) = username {
                    settings = settings.set_username(u);
                }
                if let Some(p) = password {
                    settings = settings.set_password(p);
                }
                let mut node_info =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
                if nodes.iter().any(|n| n.starts_with("rediss://")) {
                    node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
                }
                let client = SentinelClient::build(
                    sentinels,
                    master.as_str(),
                    Some(node_info),
                    SentinelServerType::Master,
                )?;
                (
                    Target::Sentinel(tokio::sync::Mutex::new(client)),
                    "sentinel",
                )
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .retries(1);
                if let Some(u) = username {
                    builder = builder.username(u);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                if config.ca_pem.is_some() {
                    builder = builder.certs(certs());
                }
                let infos = nodes
                    .iter()
                    .map(|n| connection_info(n, username, password))
                    .collect::<RedisResult<Vec<_>>>()?;
                (Target::Cluster(builder.build()?, infos), "cluster")
            }
        };
        Ok(Link {
            target,
            conns: [Mutex::new(None), Mutex::new(None)],
            connecting: tokio::sync::Mutex::new(()),
            failed_at: AtomicU64::new(0),
            epoch: Instant::now(),
            timeout: config.timeout,
            ca_pem: config.ca_pem.clone(),
            kind,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn conn_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    fn cached(&self, slot: Slot) -> Option<Conn> {
        match self.conns[slot as usize].lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_cached(&self, slot: Slot, conn: Option<Conn>) {
        match self.conns[slot as usize].lock() {
            Ok(mut g) => *g = conn,
            Err(p) => *p.into_inner() = conn,
        }
    }

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// True while a recent connection attempt failed: callers answer from what they have.
    pub fn backing_off(&self) -> bool {
        let failed = self.failed_at.load(Ordering::Relaxed);
        failed != 0
            && self.since_epoch_ms().saturating_sub(failed) < RECONNECT_BACKOFF.as_millis() as u64
    }

    async fn connect(&self, slot: Slot) -> Result<Conn, StoreError> {
        if let Some(c) = self.cached(slot) {
            return Ok(c);
        }
        if self.backing_off() {
            return Err(StoreError::Unavailable("reconnecting".into()));
        }
        // One connection attempt at a time; the others wait at most one timeout, never a connect's.
        let Ok(_guard) = tokio::time::timeout(self.timeout, self.connecting.lock()).await else {
            return Err(StoreError::Unavailable("connecting".into()));
        };
        if let Some(c) = self.cached(slot) {
            return Ok(c);
        }
        if self.backing_off() {
            return Err(StoreError::Unavailable("reconnecting".into()));
        }
        let attempt = async {
            match &self.target {
                Target::Single(client) => client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await
                    .map(Conn::Single),
                Target::Sentinel(client) => client
                    .lock()
                    .await
                    .get_async_connection_with_config(&self.conn_config())
                    .await
                    .map(Conn::Single),
                Target::Cluster(client, _) => {
                    client.get_async_connection().await.map(Conn::Cluster)
                }
            }
        };
        // Sentinel asks each sentinel in turn, then the master: allow for a few round trips.
        match tokio::time::timeout(self.timeout * 4, attempt).await {
            Ok(Ok(conn)) => {
                self.failed_at.store(0, Ordering::Relaxed);
                self.set_cached(slot, Some(conn.clone()));
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.failed_at
                    .store(self.since_epoch_ms(), Ordering::Relaxed);
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.failed_at
                    .store(self.since_epoch_ms(), Ordering::Relaxed);
                Err(StoreError::Timeout(self.timeout * 4))
            }
        }
    }

    /// Runs one command or pipeline. A connection-level failure drops the connection, so the next
    /// call reconnects (to the new master after a failover); when the failed connection was an old one,
    /// the command is tried once more on a fresh connection, so the first request after a failover or a
    /// Redis restart does not fail for a socket that was already dead. Every command Passerelle sends is
    /// idempotent or harmless twice.
    pub async fn query<T: FromRedisValue>(
        &self,
        slot: Slot,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let reused = self.cached(slot).is_some();
        match self.attempt(slot, pipe, timeout).await {
            Err(StoreError::Unavailable(_)) | Err(StoreError::Timeout(_))
                if reused && self.cached(slot).is_none() && !self.backing_off() =>
            {
                self.attempt(slot, pipe, timeout).await
            }
            other => other,
        }
    }

    async fn attempt<T: FromRedisValue>(
        &self,
        slot: Slot,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let mut conn = self.connect(slot).await?;
        match tokio::time::timeout(timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let lost = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    );
                if lost {
                    self.set_cached(slot, None);
                    Err(StoreError::Unavailable(e.to_string()))
                } else {
                    Err(StoreError::Command(e.to_string()))
                }
            }
            Err(_) => {
                self.set_cached(slot, None);
                Err(StoreError::Timeout(timeout))
            }
        }
    }

    /// A client for a dedicated pub/sub connection: the master (asked of the sentinels each time),
    /// the server, or a cluster node (a cluster forwards PUBLISH to every node).
    pub async fn pubsub_client(&self, node: usize) -> Result<Client, StoreError> {
        match &self.target {
            Target::Single(c) => Ok(c.clone()),
            Target::Sentinel(s) => {
                match tokio::time::timeout(self.timeout * 4, async {
                    s.lock().await.async_get_client().await
                })
                .await
                {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                    Err(_) => Err(StoreError::Timeout(self.timeout * 4)),
                }
            }
            Target::Cluster(_, nodes) => {
                client(nodes[node % nodes.len()].clone(), self.ca_pem.as_ref())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            }
        }
    }
}
