//! What replicas share through Redis: server-side sessions, the revocation set, the per-subject and
//! per-`sid` indexes, and the revocation channel.
//!
//! Nothing here holds identity in clear: session values are encrypted under a key only the ticket's
//! holder can rebuild, index keys are hashes of (provider, subject), and metadata is provider name and
//! times. The revocation channel carries session ids; each replica evicts what it cached and remembers
//! the id, so a revocation anywhere takes effect everywhere without a Redis round trip per request.

use super::redis_link::{Link, Slot, StoreError};
use crate::config::{RedisConfig, SessionConfig};
use futures_util::StreamExt;
use redis::Pipeline;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a session was revoked, for the metric and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Logout = 0,
    Admin = 1,
    BackChannel = 2,
    /// A new login (a step-up, say) replaced the session in the same browser.
    Replaced = 3,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::Logout,
        Cause::Admin,
        Cause::BackChannel,
        Cause::Replaced,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Logout => "logout",
            Cause::Admin => "admin",
            Cause::BackChannel => "backchannel",
            Cause::Replaced => "replaced",
        }
    }
}

/// Store latency histogram bounds, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000];

#[derive(Default)]
pub struct StoreStats {
    pub errors: AtomicU64,
    pub revocations: [AtomicU64; 4],
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`], then `+Inf`.
    pub latency: [AtomicU64; 11],
    pub latency_sum_us: AtomicU64,
}

/// What a replica keeps of a session's metadata in Redis, for listing: no identity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SessionMeta {
    pub id: String,
    pub provider: String,
    pub created: u64,
    pub expires: u64,
}

pub struct Shared {
    pub link: Link,
    prefix: String,
    pub config: SessionConfig,
    pub stats: StoreStats,
    /// Session ids revoked, learnt from the channel or from a check: refused from memory.
    revoked: moka::sync::Cache<String, ()>,
    /// Milliseconds (since `epoch`) of the last time Redis confirmed a session was not revoked.
    verdicts: moka::sync::Cache<String, u64>,
    /// When Redis started failing (ms since `epoch`); 0 while it answers.
    down_since: AtomicU64,
    epoch: Instant,
}

/// The outcome of asking Redis about a session.
pub enum Check<T> {
    Live(T),
    Revoked,
    /// Redis failed, but within `session.redis_grace`: serve what is cached.
    Grace,
    /// Redis failed for longer than the grace: 503.
    Unavailable,
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &h.finalize()[..18],
    )
}

impl Shared {
    pub fn new(redis: &RedisConfig, config: SessionConfig) -> Result<Shared, redis::RedisError> {
        let lifetime = config.max_lifetime;
        Ok(Shared {
            link: Link::new(redis)?,
            prefix: redis.key_prefix.clone(),
            stats: StoreStats::default(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(lifetime)
                .build(),
            verdicts: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(config.recheck_interval)
                .build(),
            config,
            down_since: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub fn session_key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }
    fn revoked_key(&self, id: &str) -> String {
        format!("{}r:{id}", self.prefix)
    }
    fn meta_key(&self, id: &str) -> String {
        format!("{}m:{id}", self.prefix)
    }
    fn subject_key(&self, provider: &str, sub: &str) -> String {
        format!("{}sub:{}", self.prefix, hash(&["sub", provider, sub]))
    }
    fn sid_key(&self, provider: &str, sid: &str) -> String {
        format!("{}sid:{}", self.prefix, hash(&["sid", provider, sid]))
    }
    fn active_key(&self, provider: &str) -> String {
        format!("{}active:{provider}", self.prefix)
    }
    fn jti_key(&self, issuer: &str, jti: &str) -> String {
        format!("{}jti:{}", self.prefix, hash(&["jti", issuer, jti]))
    }
    pub fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// Runs a command or pipeline on the lookups connection, timing it and tracking whether Redis
    /// answers (what `redis_grace` counts from; the admin listener's probes count too).
    pub async fn run<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        self.exec(Slot::Lookups, pipe, self.link.timeout()).await
    }

    /// A write that must survive a Sentinel failover: followed by `WAIT 1` on a connection of its own,
    /// since Redis blocks the connection that waits.
    async fn durable<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        if self.link.kind != "sentinel" {
            return self.cmd(cmd).await;
        }
        let wait = Duration::from_millis(200);
        let mut p = redis::pipe();
        p.add_command(cmd)
            .cmd("WAIT")
            .arg(1)
            .arg(wait.as_millis() as u64)
            .ignore();
        self.exec(Slot::Durable, &p, self.link.timeout() + wait)
            .await
            .map(|(v,)| v)
    }

    async fn exec<T: redis::FromRedisValue>(
        &self,
        slot: Slot,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = self.link.query::<T>(slot, pipe, timeout).await;
        let elapsed = started.elapsed();
        let ms = elapsed.as_millis() as u64;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.stats.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.stats
            .latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        match &result {
            Ok(_) => {
                let since = self.down_since.swap(0, Ordering::Relaxed);
                if since != 0 {
                    tracing::info!(
                        after_ms = self.now_ms().saturating_sub(since),
                        "session store reachable again"
                    );
                }
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // One warning when Redis starts failing, not one per request while it is down: the
                // count is in passerelle_store_errors_total.
                let first = self
                    .down_since
                    .compare_exchange(0, self.now_ms(), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
                if first {
                    tracing::warn!(error = %e, "session store unreachable");
                } else {
                    tracing::debug!(error = %e, "session store");
                }
            }
        }
        result
    }

    /// One command; its reply read as `T`.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut p = redis::pipe();
        p.add_command(cmd);
        self.run::<(T,)>(&p).await.map(|(v,)| v)
    }

    /// How long Redis has been failing, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match self.down_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }

    fn within_grace(&self) -> bool {
        self.down_for().is_none_or(|d| d < self.config.redis_grace)
    }

    fn failed<T>(&self) -> Check<T> {
        if self.within_grace() {
            Check::Grace
        } else {
            Check::Unavailable
        }
    }

    /// Whether `id` is known revoked, from memory only.
    pub fn known_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// Whether Redis confirmed `id` recently enough to skip asking.
    pub fn fresh(&self, id: &str) -> bool {
        self.verdicts.get(id).is_some_and(|at| {
            self.now_ms().saturating_sub(at) < self.config.recheck_interval.as_millis() as u64
        })
    }

    fn confirm(&self, id: &str) {
        self.verdicts.insert(id.to_string(), self.now_ms());
    }

    /// Called for every id received on the channel or found revoked.
    pub fn forget(&self, id: &str) {
        self.verdicts.invalidate(id);
        self.revoked.insert(id.to_string(), ());
    }

    /// After the channel reconnects, messages may have been lost: every session is checked again.
    fn recheck_all(&self) {
        self.verdicts.invalidate_all();
    }

    /// Cookie mode: is `id` in the revocation set?
    pub async fn check_revoked(&self, id: &str) -> Check<()> {
        match self
            .cmd::<bool>(redis::cmd("EXISTS").arg(self.revoked_key(id)).clone())
            .await
        {
            Ok(true) => {
                self.forget(id);
                Check::Revoked
            }
            Ok(false) => {
                self.confirm(id);
                Check::Live(())
            }
            Err(_) => self.failed(),
        }
    }

    /// Redis mode: the stored value of `id`; none means revoked or expired.
    pub async fn fetch(&self, id: &str) -> Check<Vec<u8>> {
        match self
            .cmd::<Option<Vec<u8>>>(redis::cmd("GET").arg(self.session_key(id)).clone())
            .await
        {
            Ok(Some(v)) => {
                self.confirm(id);
                Check::Live(v)
            }
            Ok(None) => {
                // Not remembered as revoked here: the id may be one nobody ever held (a guess), and the
                // caller, which knows whether it had the session, decides.
                self.verdicts.invalidate(id);
                Check::Revoked
            }
            Err(_) => self.failed(),
        }
    }

    /// Redis mode: writes a session value, new (`create`) or refreshed. The entry lives as long as
    /// the session may: until the idle deadline, never past the absolute one.
    /// Returns false when a refresh finds the session gone (revoked or expired meanwhile): it is then
    /// forgotten here too, never confirmed. A creation that finds the id taken is an error, unless the
    /// value there is this very one (a retry after a lost reply).
    pub async fn write(
        &self,
        id: &str,
        value: Vec<u8>,
        ttl: Duration,
        create: bool,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.session_key(id))
            .arg(&value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .arg(if create { "NX" } else { "XX" });
        let written: Option<String> = if create {
            self.durable(cmd).await?
        } else {
            self.cmd(cmd).await?
        };
        match (written.is_some(), create) {
            (true, _) => {}
            (false, true) => {
                let there: Option<Vec<u8>> = self
                    .cmd(redis::cmd("GET").arg(self.session_key(id)).clone())
                    .await?;
                if there.as_deref() != Some(value.as_slice()) {
                    return Err(StoreError::Command("session id already in use".into()));
                }
            }
            (false, false) => {
                self.forget(id);
                return Ok(false);
            }
        }
        self.confirm(id);
        Ok(true)
    }

    /// Removes what a login stored when it cannot complete (its indexing failed).
    pub async fn discard(&self, id: &str) {
        let _ = self
            .cmd::<()>(redis::cmd("DEL").arg(self.session_key(id)).clone())
            .await;
        let _ = self
            .cmd::<()>(redis::cmd("DEL").arg(self.meta_key(id)).clone())
            .await;
    }

    /// Records a new session in the indexes that logout-everywhere, the admin API and back-channel
    /// logout read. Each key is its own command: in a cluster they live in different slots.
    /// `meta.expires` is the absolute end (`created + max_lifetime`): indexes and revocations must cover
    /// a session as long as it may live, however its idle deadline slides. `active_until` is the idle
    /// deadline, for the gauge of active sessions only.
    pub async fn index(
        &self,
        meta: &SessionMeta,
        sub: &str,
        sid: Option<&str>,
        active_until: u64,
    ) -> Result<(), StoreError> {
        let ttl = self.config.max_lifetime.as_secs().max(1);
        let meta_json = serde_json::to_string(meta).unwrap_or_default();
        self.cmd::<()>(
            redis::cmd("SET")
                .arg(self.meta_key(&meta.id))
                .arg(meta_json)
                .arg("EX")
                .arg(ttl)
                .clone(),
        )
        .await?;
        let mut keys = vec![(self.subject_key(&meta.provider, sub), meta.expires)];
        if let Some(sid) = sid {
            keys.push((self.sid_key(&meta.provider, sid), meta.expires));
        }
        keys.push((self.active_key(&meta.provider), active_until));
        for (key, score) in keys {
            let mut p = redis::pipe();
            p.cmd("ZADD")
                .arg(&key)
                .arg(score)
                .arg(&meta.id)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(super::now())
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore();
            self.run::<()>(&p).await?;
        }
        Ok(())
    }

    /// Moves a session's "active" deadline when its idle timeout slides.
    pub async fn touch_active(
        &self,
        provider: &str,
        id: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        self.cmd::<()>(
            redis::cmd("ZADD")
                .arg(self.active_key(provider))
                .arg("XX")
                .arg(expires)
                .arg(id)
                .clone(),
        )
        .await
    }

    /// Revokes one session on every replica: the revocation set (cookie sessions), the stored value
    /// (server-side sessions), then the channel. `expires`: when the session would have ended anyway.
    pub async fn revoke(
        &self,
        id: &str,
        provider: &str,
        expires: u64,
        cause: Cause,
    ) -> Result<(), StoreError> {
        self.forget(id);
        let ttl = expires.saturating_sub(super::now()).max(1);
        self.durable::<()>(
            redis::cmd("SET")
                .arg(self.revoked_key(id))
                .arg(1)
                .arg("EX")
                .arg(ttl)
                .clone(),
        )
        .await?;
        self.durable::<()>(redis::cmd("DEL").arg(self.session_key(id)).clone())
            .await?;
        // Without its metadata, the id left in the subject and sid indexes is skipped by listings
        // and by later revocations; the indexes themselves expire with the longest session.
        self.cmd::<()>(redis::cmd("DEL").arg(self.meta_key(id)).clone())
            .await?;
        self.cmd::<()>(
            redis::cmd("ZREM")
                .arg(self.active_key(provider))
                .arg(id)
                .clone(),
        )
        .await?;
        self.cmd::<()>(redis::cmd("PUBLISH").arg(self.channel()).arg(id).clone())
            .await?;
        self.stats.revocations[cause as usize].fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "audit", session = %id, cause = cause.label(), "session revoked");
        Ok(())
    }

    pub async fn meta(&self, id: &str) -> Result<Option<SessionMeta>, StoreError> {
        let text: Option<String> = self
            .cmd(redis::cmd("GET").arg(self.meta_key(id)).clone())
            .await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.cmd(
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(super::now())
                .arg("+inf")
                .clone(),
        )
        .await
    }

    /// The live sessions of a subject, with a provider or of every provider in `providers`.
    pub async fn sessions_of(
        &self,
        providers: &[String],
        sub: &str,
    ) -> Result<Vec<SessionMeta>, StoreError> {
        let mut out = Vec::new();
        for p in providers {
            for id in self.members(&self.subject_key(p, sub)).await? {
                if let Some(meta) = self.meta(&id).await? {
                    out.push(meta);
                }
            }
        }
        Ok(out)
    }

    /// Revokes every session of a subject; returns how many.
    pub async fn revoke_subject(
        &self,
        providers: &[String],
        sub: &str,
        cause: Cause,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for p in providers {
            let key = self.subject_key(p, sub);
            for id in self.members(&key).await? {
                let Some(meta) = self.meta(&id).await? else {
                    continue;
                };
                self.revoke(&id, p, meta.expires, cause).await?;
                // Member by member, not the whole key: a login landing meanwhile stays indexed.
                self.cmd::<()>(redis::cmd("ZREM").arg(&key).arg(&id).clone())
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Revokes every session a provider's `sid` covers; returns how many.
    pub async fn revoke_sid(
        &self,
        provider: &str,
        sid: &str,
        cause: Cause,
    ) -> Result<usize, StoreError> {
        let key = self.sid_key(provider, sid);
        let mut n = 0;
        for id in self.members(&key).await? {
            let Some(meta) = self.meta(&id).await? else {
                continue;
            };
            self.revoke(&id, provider, meta.expires, cause).await?;
            n += 1;
        }
        self.cmd::<()>(redis::cmd("DEL").arg(&key).clone()).await?;
        Ok(n)
    }

    /// Records a logout token's `jti`; false if it was seen before (a replay).
    pub async fn first_use(
        &self,
        issuer: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // A value of our own: if the reply to the SET is lost and the command retried, finding it is
        // not a replay.
        let mine = super::ticket::Ticket::new().id;
        let key = self.jti_key(issuer, jti);
        let set: Option<String> = self
            .cmd(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&mine)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .arg("NX")
                    .clone(),
            )
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        let there: Option<String> = self.cmd(redis::cmd("GET").arg(&key).clone()).await?;
        Ok(there.as_deref() == Some(mine.as_str()))
    }

    /// Forgets a `jti` whose logout could not be carried out, so the provider's retry is not a replay.
    pub async fn release(&self, issuer: &str, jti: &str) {
        let _ = self
            .cmd::<()>(redis::cmd("DEL").arg(self.jti_key(issuer, jti)).clone())
            .await;
    }

    /// Live sessions per provider (server-side store), for `/metrics`.
    pub async fn active(&self, provider: &str) -> Result<u64, StoreError> {
        self.cmd(
            redis::cmd("ZCOUNT")
                .arg(self.active_key(provider))
                .arg(super::now())
                .arg("+inf")
                .clone(),
        )
        .await
    }

    /// What `check --online` reports: the server's role and version, and a cluster's state.
    pub async fn describe(&self) -> Result<String, StoreError> {
        let field = |info: &str, name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        if self.link.kind == "cluster" {
            let info: String = self.cmd(redis::cmd("CLUSTER").arg("INFO").clone()).await?;
            return Ok(format!(
                "cluster, state {}, {} of 16384 slots served, {} known nodes",
                field(&info, "cluster_state"),
                field(&info, "cluster_slots_ok"),
                field(&info, "cluster_known_nodes")
            ));
        }
        let info: String = self.cmd(redis::cmd("INFO").arg("server").clone()).await?;
        let replication: String = self
            .cmd(redis::cmd("INFO").arg("replication").clone())
            .await?;
        let product = if info.contains("valkey_version") {
            "valkey"
        } else {
            "redis"
        };
        let version = field(
            &info,
            if product == "valkey" {
                "valkey_version"
            } else {
                "redis_version"
            },
        );
        Ok(format!(
            "{} ({product} {version}), role {}, {} connected replica(s)",
            self.link.kind,
            field(&replication, "role"),
            field(&replication, "connected_slaves")
        ))
    }

    /// Listens on the revocation channel until `shutdown`, reconnecting (and re-resolving the master
    /// through the sentinels) whenever the connection drops.
    pub async fn listen(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut node = 0usize;
        let mut logged_down = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let subscribed = async {
                let client = self.link.pubsub_client(node).await?;
                let mut pubsub =
                    tokio::time::timeout(self.config_timeout(), client.get_async_pubsub())
                        .await
                        .map_err(|_| StoreError::Timeout(self.config_timeout()))?
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                pubsub
                    .subscribe(self.channel())
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok::<_, StoreError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(mut pubsub) => {
                    self.recheck_all();
                    tracing::info!(kind = self.link.kind, "listening for session revocations");
                    logged_down = false;
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                Some(m) => {
                                    if let Ok(id) = std::str::from_utf8(m.get_payload_bytes()) {
                                        if id.len() <= 64 {
                                            self.forget(id);
                                        }
                                    }
                                }
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                    tracing::warn!("revocation channel lost; reconnecting");
                    self.recheck_all();
                }
                Err(e) => {
                    if !logged_down {
                        tracing::warn!(error = %e, "revocation channel unavailable; retrying");
                        logged_down = true;
                    }
                    node = node.wrapping_add(1);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn config_timeout(&self) -> Duration {
        self.link.timeout() * 4
    }
}
