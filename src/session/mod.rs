//! Sessions: in encrypted cookies, or in Redis behind an opaque ticket; timeouts, revocation shared
//! by every replica, and a decode cache so the steady state costs no decryption and no Redis round trip.

pub mod codec;
pub mod cookies;
mod model;
pub mod redis_link;
pub mod shared;
pub mod ticket;

pub use codec::{KeyRing, OpenError, Purpose};
pub use cookies::CookieSpec;
pub use model::{now, now_us, IdTokenHint, LoginFlow, LogoutFlow, Session};
pub use redis_link::StoreError;
pub use shared::{Cause, SessionMeta, Shared};

use crate::config::{SessionConfig, SessionStore};
use shared::Check;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ticket::Ticket;

/// The outcome of reading the session cookie of a request.
#[derive(Debug, Clone)]
pub enum SessionState {
    None,
    /// A valid session; `refresh` says the cookie should be re-issued to push the idle deadline.
    Valid {
        session: Arc<Session>,
        refresh: bool,
    },
    /// Idle or past its absolute lifetime.
    Expired,
    /// Ended by a logout, an administrator or the provider, on any replica.
    Revoked,
    /// Redis has been unreachable for longer than `session.redis_grace`: the session cannot be
    /// vouched for. A 503, not a login: the person's session may well be fine.
    Unavailable,
    /// Tampered, truncated, wrong key, duplicated: treated as no session, and logged.
    Invalid(&'static str),
}

pub struct SessionManager {
    ring: KeyRing,
    pub config: SessionConfig,
    /// Decoded sessions keyed by a digest of the cookie text: skips decryption and JSON parsing on hot
    /// paths. Bounded in count and lifetime; timeouts are still checked on every request.
    /// Keyed by the cookie text itself: a lookup compares the whole value, so no two cookies can share an entry.
    /// Keyed by the whole cookie text, hashed with aHash (seeded at random per process): SipHash spent
    /// more on these kilobyte keys than the rest of the lookup. Only decrypted cookies are inserted, so
    /// a client cannot choose the keys.
    cache: moka::sync::Cache<String, Arc<Session>, ahash::RandomState>,
    /// `__Host-<cookie_name>`, computed once: the name is looked up on every request.
    secure_name: String,
    /// Redis, when `[session.redis]` is set: the store, or the revocation set of cookie sessions.
    pub shared: Option<Arc<Shared>>,
    /// Server-side sessions decoded, by ticket id.
    stored: moka::sync::Cache<String, Arc<Stored>>,
    /// Back-channel logouts received without Redis: carried from one configuration generation to the
    /// next, or a reload would bring ended sessions back.
    local: Arc<LocalEnds>,
}

/// Without Redis, what this replica knows of back-channel logouts.
struct LocalEnds {
    /// Provider `sid`s and subjects ended, with when, so this replica refuses sessions begun before.
    /// Empty (and unchecked) unless a provider sent one.
    ends: moka::sync::Cache<String, u64>,
    /// Logout token `jti`s seen, to refuse replays.
    jti: moka::sync::Cache<String, ()>,
    /// Set by the first back-channel logout: until then no request pays for the lookup.
    any: std::sync::atomic::AtomicBool,
}

impl LocalEnds {
    fn new(max_lifetime: Duration) -> Self {
        // As long as a session may live: a token replayed later must not end sessions begun since.
        LocalEnds {
            ends: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(max_lifetime)
                .build(),
            jti: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(max_lifetime)
                .build(),
            any: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A server-side session as a replica caches it.
struct Stored {
    ticket: Ticket,
    session: Arc<Session>,
    /// `last_seen` as last written to Redis: one refresh write per interval, whatever the traffic.
    written: AtomicU64,
}

/// Why a server-side session could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    TooLarge(#[from] cookies::TooLarge),
}

/// The decoded-session cache is bounded in bytes, not entries: cookies range from 600 B to 24 KiB, so
/// a count bound would let memory vary forty-fold with what the provider puts in the claims.
const SESSION_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// An entry's approximate footprint: the key, and the decoded session, which holds about what the
/// cookie carries, plus the headers rendered from it.
fn cache_weight(cookie: &str) -> u32 {
    u32::try_from(cookie.len().saturating_mul(3).saturating_add(512)).unwrap_or(u32::MAX)
}

impl SessionManager {
    /// Fails only on a Redis configuration the `redis` crate refuses (validated earlier by `check`).
    pub fn new(config: SessionConfig) -> Result<Self, redis::RedisError> {
        let shared = match &config.redis {
            Some(r) => Some(Arc::new(Shared::new(r, config.clone())?)),
            None => None,
        };
        Ok(SessionManager::new_with(config, shared))
    }

    fn new_with(config: SessionConfig, shared: Option<Arc<Shared>>) -> Self {
        let ring = KeyRing::new(&config.keys);
        let cache = moka::sync::Cache::builder()
            .max_capacity(SESSION_CACHE_BYTES)
            .weigher(|cookie: &String, _session: &Arc<Session>| cache_weight(cookie))
            .time_to_live(Duration::from_secs(300))
            .build_with_hasher(ahash::RandomState::new());
        let secure_name = format!("__Host-{}", config.cookie_name);
        let stored = moka::sync::Cache::builder()
            .max_capacity(SESSION_CACHE_BYTES)
            .weigher(|_: &String, s: &Arc<Stored>| {
                let claims: usize = s
                    .session
                    .claims
                    .values()
                    .map(|v| v.to_string().len() + 32)
                    .sum();
                u32::try_from(claims.saturating_mul(2).saturating_add(1024)).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(300))
            .build();
        let local = Arc::new(LocalEnds::new(config.max_lifetime));
        SessionManager {
            ring,
            config,
            cache,
            secure_name,
            shared,
            stored,
            local,
        }
    }

    /// The manager of a reloaded configuration: new keys, names and lifetimes; the same Redis link
    /// (listening for revocations since the start) and the same record of back-channel logouts. The
    /// decoded-session caches start empty, so a key taken out of the ring stops opening sessions at once.
    pub fn reloaded(&self, mut config: SessionConfig) -> Self {
        config.store = self.config.store;
        config.redis = self.config.redis.clone();
        // How long Redis keeps records, revocation markers and back-channel logouts is fixed by the running
        // link and record: a longer lifetime than theirs would outlive them, and bring ended sessions back.
        config.max_lifetime = self.config.max_lifetime;
        config.recheck_interval = self.config.recheck_interval;
        config.redis_grace = self.config.redis_grace;
        let mut next = SessionManager::new_with(config, self.shared.clone());
        next.local = self.local.clone();
        next
    }

    /// Every how long a request re-issues the cookie to slide the idle deadline: often enough to keep
    /// the idle timeout honest, rarely enough not to re-encrypt on every request.
    fn refresh_interval(&self) -> u64 {
        (self.config.idle_timeout.as_secs() / 10).clamp(1, 300)
    }

    pub async fn load(&self, cookies: &[(String, String)], spec: &CookieSpec) -> SessionState {
        let name = if spec.secure && spec.path == "/" {
            &self.secure_name
        } else {
            &self.config.cookie_name
        };
        let Some(text) = cookies::join(cookies, name) else {
            return if cookies::any_chunk(cookies, name) {
                SessionState::Invalid("duplicated or too many chunks")
            } else {
                SessionState::None
            };
        };
        match (self.config.store, &self.shared) {
            (SessionStore::Redis, Some(shared)) => self.load_stored(shared, &text).await,
            (_, shared) => {
                let session = match self.decode_cookie(text) {
                    Ok(s) => s,
                    Err(state) => return state,
                };
                if let Some(shared) = shared {
                    if shared.known_revoked(&session.id) {
                        return SessionState::Revoked;
                    }
                    if !shared.fresh(&session.id) {
                        match shared.check_revoked(&session.id).await {
                            Check::Live(()) | Check::Grace => {}
                            Check::Revoked => return SessionState::Revoked,
                            Check::Unavailable => return SessionState::Unavailable,
                        }
                    }
                }
                if self.ended_locally(&session) {
                    return SessionState::Revoked;
                }
                if self.expired(&session) {
                    return SessionState::Expired;
                }
                let refresh = now().saturating_sub(session.last_seen) >= self.refresh_interval();
                SessionState::Valid { session, refresh }
            }
        }
    }

    fn end_key(kind: &str, provider: &str, value: &str) -> String {
        format!("{kind}\u{0}{provider}\u{0}{value}")
    }

    /// Without Redis, a back-channel logout ends this replica's sessions of that `sid` (or subject)
    /// begun before it. Returns false for a replayed `jti`.
    pub fn local_logout(&self, provider: &str, token: &crate::oidc::LogoutToken) -> bool {
        let jti = Self::end_key("jti", provider, &token.jti);
        if !self.local.jti.entry(jti).or_insert(()).is_fresh() {
            return false;
        }
        self.local.any.store(true, Ordering::Relaxed);
        let at = now();
        match (&token.sid, &token.sub) {
            (Some(sid), _) => self
                .local
                .ends
                .insert(Self::end_key("sid", provider, sid), at),
            (None, Some(sub)) => self
                .local
                .ends
                .insert(Self::end_key("sub", provider, sub), at),
            (None, None) => {}
        }
        true
    }

    fn ended_locally(&self, session: &Session) -> bool {
        if !self.local.any.load(Ordering::Relaxed) {
            return false;
        }
        let ended = |kind: &str, claim: &str| {
            session
                .claims
                .get(claim)
                .and_then(|v| v.as_str())
                .and_then(|v| {
                    self.local
                        .ends
                        .get(&Self::end_key(kind, &session.provider, v))
                })
                .is_some_and(|at| session.created <= at)
        };
        ended("sid", "sid") || ended("sub", "sub")
    }

    fn decode_cookie(&self, text: String) -> Result<Arc<Session>, SessionState> {
        if let Some(s) = self.cache.get(text.as_str()) {
            return Ok(s);
        }
        let plain = match self.ring.open(Purpose::Session, &text) {
            Ok(p) => p,
            Err(OpenError::UnknownKey) => return Err(SessionState::Invalid("unknown key")),
            Err(_) => return Err(SessionState::Invalid("undecryptable")),
        };
        let Ok(session) = serde_json::from_slice::<Session>(&plain) else {
            return Err(SessionState::Invalid("unreadable"));
        };
        let session = Arc::new(session);
        self.cache.insert(text, session.clone());
        Ok(session)
    }

    fn expired(&self, session: &Session) -> bool {
        let now = now();
        now >= session
            .created
            .saturating_add(self.config.max_lifetime.as_secs())
            || now
                >= session
                    .last_seen
                    .saturating_add(self.config.idle_timeout.as_secs())
            || session.created > now.saturating_add(300)
    }

    /// When a server-side session ends at the latest: its idle deadline, capped by its lifetime.
    fn deadline(&self, session: &Session) -> u64 {
        session
            .last_seen
            .saturating_add(self.config.idle_timeout.as_secs())
            .min(
                session
                    .created
                    .saturating_add(self.config.max_lifetime.as_secs()),
            )
    }

    /// A server-side session: from this replica's cache while Redis vouched for it less than
    /// `recheck_interval` ago, else from Redis.
    async fn load_stored(&self, shared: &Arc<Shared>, text: &str) -> SessionState {
        let Some(ticket) = Ticket::parse(text) else {
            return SessionState::Invalid("malformed ticket");
        };
        if shared.known_revoked(&ticket.id) {
            self.stored.invalidate(&ticket.id);
            return SessionState::Revoked;
        }
        let cached = self.stored.get(&ticket.id);
        if let Some(entry) = &cached {
            if !entry.ticket.same_secret(&ticket) {
                return SessionState::Invalid("ticket secret mismatch");
            }
        }
        let entry = match &cached {
            // Another replica may have slid the idle deadline: an idle verdict is confirmed with Redis.
            Some(e) if shared.fresh(&ticket.id) && !self.expired(&e.session) => e.clone(),
            _ => match shared.fetch(&ticket.id).await {
                Check::Live(bytes) => {
                    let plain = match self.ring.open_bound(
                        Purpose::StoredSession,
                        &ticket.binding(),
                        &bytes,
                    ) {
                        Ok(p) => p,
                        Err(OpenError::UnknownKey) => return SessionState::Invalid("unknown key"),
                        Err(_) => return SessionState::Invalid("undecryptable"),
                    };
                    let Ok(session) = serde_json::from_slice::<Session>(&plain) else {
                        return SessionState::Invalid("unreadable");
                    };
                    let written = AtomicU64::new(session.last_seen);
                    let entry = Arc::new(Stored {
                        ticket,
                        session: Arc::new(session),
                        written,
                    });
                    self.stored.insert(entry.ticket.id.clone(), entry.clone());
                    entry
                }
                Check::Revoked => {
                    if cached.is_some() {
                        shared.forget(&ticket.id);
                        self.stored.invalidate(&ticket.id);
                    }
                    return SessionState::Revoked;
                }
                Check::Grace => match cached {
                    Some(e) => e,
                    None => return SessionState::Unavailable,
                },
                Check::Unavailable => return SessionState::Unavailable,
            },
        };
        if self.expired(&entry.session) {
            return SessionState::Expired;
        }
        let now = now();
        let last = entry.written.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.refresh_interval()
            && entry
                .written
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut updated = (*entry.session).clone();
            updated.last_seen = now;
            let sealed = self.seal_stored(&entry.ticket, &updated);
            let ttl = Duration::from_secs(self.deadline(&updated).saturating_sub(now).max(1));
            let expires = self.deadline(&updated);
            let session = Arc::new(updated);
            self.stored.insert(
                entry.ticket.id.clone(),
                Arc::new(Stored {
                    ticket: entry.ticket.clone(),
                    session: session.clone(),
                    written: AtomicU64::new(now),
                }),
            );
            let shared = shared.clone();
            let id = entry.ticket.id.clone();
            let provider = session.provider.clone();
            // A refresh that finds the session gone (revoked, its message lost) forgets it here.
            tokio::spawn(async move {
                if let Ok(true) = shared.write(&id, sealed, ttl, false).await {
                    let _ = shared.touch_active(&provider, &id, expires).await;
                }
            });
            return SessionState::Valid {
                session,
                refresh: false,
            };
        }
        SessionState::Valid {
            session: entry.session.clone(),
            refresh: false,
        }
    }

    fn seal_stored(&self, ticket: &Ticket, session: &Session) -> Vec<u8> {
        let json = serde_json::to_vec(session).expect("a session always serialises");
        self.ring
            .seal_bound(Purpose::StoredSession, &ticket.binding(), &json)
    }

    /// Whether sessions live in Redis (the cookie is only a ticket).
    pub fn server_side(&self) -> bool {
        self.config.store == SessionStore::Redis && self.shared.is_some()
    }

    /// Starts a session. Server-side: stores it (id_token included) and returns the ticket cookie;
    /// cookie mode: returns the session's cookies. With Redis, the session is indexed by subject and
    /// provider `sid`, so it can be revoked by an administrator or by the provider; a login Redis
    /// cannot record is refused rather than left unrevocable.
    pub async fn create(
        &self,
        session: &mut Session,
        spec: &CookieSpec,
        cookies: &[(String, String)],
    ) -> Result<Vec<String>, CreateError> {
        let name = spec.name(&self.config.cookie_name);
        let remaining = Duration::from_secs(
            session
                .created
                .saturating_add(self.config.max_lifetime.as_secs())
                .saturating_sub(now()),
        );
        let set = match (&self.shared, self.config.store) {
            (Some(shared), SessionStore::Redis) => {
                let ticket = Ticket::new();
                session.id = ticket.id.clone();
                let sealed = self.seal_stored(&ticket, session);
                let ttl = Duration::from_secs(self.deadline(session).saturating_sub(now()).max(1));
                shared.write(&ticket.id, sealed, ttl, true).await?;
                cookies::write_chunked(
                    spec,
                    &name,
                    &ticket.cookie_value(),
                    remaining,
                    cookies::present_chunks(cookies, &name),
                )?
            }
            _ => {
                session.id_token = None;
                self.issue(session, spec, cookies)?
            }
        };
        if let Some(shared) = &self.shared {
            let meta = SessionMeta {
                id: session.id.clone(),
                provider: session.provider.clone(),
                created: session.created,
                expires: session
                    .created
                    .saturating_add(self.config.max_lifetime.as_secs()),
            };
            let sid = session.claims.get("sid").and_then(|v| v.as_str());
            if let Err(e) = shared
                .index(&meta, session.sub(), sid, self.deadline(session))
                .await
            {
                shared.discard(&session.id).await;
                return Err(e.into());
            }
        }
        Ok(set)
    }

    /// Ends `session` on every replica; without Redis there is nothing beyond the browser's copy.
    pub async fn revoke(&self, session: &Session, cause: Cause) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        self.stored.invalidate(&session.id);
        shared
            .revoke(
                &session.id,
                &session.provider,
                session
                    .created
                    .saturating_add(self.config.max_lifetime.as_secs()),
                cause,
            )
            .await
    }

    /// `Set-Cookie` values writing `session`, deleting chunks the new value no longer uses. Refused when
    /// the session would take more cookies than [`Self::load`] reads back: a cookie written but never
    /// read again would send the person through the provider forever.
    pub fn issue(
        &self,
        session: &Session,
        spec: &CookieSpec,
        cookies: &[(String, String)],
    ) -> Result<Vec<String>, cookies::TooLarge> {
        let name = spec.name(&self.config.cookie_name);
        let json = serde_json::to_vec(session).expect("a session always serialises");
        let sealed = self.ring.seal(Purpose::Session, &json);
        let remaining = session
            .created
            .saturating_add(self.config.max_lifetime.as_secs())
            .saturating_sub(now());
        cookies::write_chunked(
            spec,
            &name,
            &sealed,
            Duration::from_secs(remaining),
            cookies::present_chunks(cookies, &name),
        )
    }

    /// `Set-Cookie` values deleting the session, every chunk present and the first one in any case.
    pub fn clear(&self, spec: &CookieSpec, cookies: &[(String, String)]) -> Vec<String> {
        cookies::delete_chunked(spec, &spec.name(&self.config.cookie_name), cookies)
    }

    pub fn seal<T: serde::Serialize>(&self, purpose: Purpose, value: &T) -> String {
        self.ring.seal(
            purpose,
            &serde_json::to_vec(value).expect("flow state always serialises"),
        )
    }

    pub fn open<T: serde::de::DeserializeOwned>(&self, purpose: Purpose, text: &str) -> Option<T> {
        let plain = self.ring.open(purpose, text).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn manager(idle: u64, max: u64) -> SessionManager {
        SessionManager::new(SessionConfig {
            store: SessionStore::Cookie,
            redis: None,
            recheck_interval: Duration::from_secs(30),
            redis_grace: Duration::from_secs(60),
            keys: vec![[3; 32]],
            cookie_name: "passerelle".into(),
            idle_timeout: Duration::from_secs(idle),
            max_lifetime: Duration::from_secs(max),
            login_timeout: Duration::from_secs(600),
            secure: None,
            logout_clear_site_data: Vec::new(),
        })
        .unwrap()
    }

    fn session(created: u64, last_seen: u64, big: usize) -> Session {
        let mut claims = BTreeMap::new();
        claims.insert("sub".to_string(), serde_json::json!("abc"));
        claims.insert("blob".to_string(), serde_json::json!("x".repeat(big)));
        Session {
            id: "id".into(),
            provider: "p".into(),
            claims,
            scopes: BTreeSet::new(),
            requested: BTreeSet::new(),
            requested_acr: Vec::new(),
            created,
            last_seen,
            id_token: None,
            rendered: Default::default(),
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn jar(set_cookies: &[String]) -> Vec<(String, String)> {
        set_cookies
            .iter()
            .map(|c| {
                let first = c.split(';').next().unwrap();
                let (n, v) = first.split_once('=').unwrap();
                (n.to_string(), v.to_string())
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    #[test]
    fn issue_then_load_including_split_cookies() {
        let m = manager(1800, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        for big in [10, 9000] {
            let s = session(now(), now(), big);
            let set = m.issue(&s, &spec, &[]).unwrap();
            assert_eq!(set.len() > 1, big > 1000);
            match block(m.load(&jar(&set), &spec)) {
                SessionState::Valid { session, refresh } => {
                    assert_eq!(*session, s);
                    assert!(!refresh);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_reload_keeps_back_channel_logouts_and_applies_the_new_key_ring() {
        let m = manager(1800, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        let valid = |m: &SessionManager, set: &[String]| {
            matches!(block(m.load(&jar(set), &spec)), SessionState::Valid { .. })
        };
        let ended = session(now() - 5, now(), 10);
        let ended_set = m.issue(&ended, &spec, &[]).unwrap();
        assert!(valid(&m, &ended_set));
        let token = crate::oidc::LogoutToken {
            sub: Some("abc".into()),
            sid: None,
            jti: "jti-1".into(),
            replay_until: 0,
        };
        assert!(m.local_logout("p", &token));

        // Rotation: a new key first, the old one still decrypts.
        let mut rotated = m.config.clone();
        rotated.keys = vec![[4; 32], [3; 32]];
        let next = m.reloaded(rotated);
        assert!(
            matches!(
                block(next.load(&jar(&ended_set), &spec)),
                SessionState::Revoked
            ),
            "a session ended by back-channel logout stays ended after a reload"
        );
        assert!(!next.local_logout("p", &token), "and its jti stays spent");
        let mut other = session(now(), now(), 10);
        other
            .claims
            .insert("sub".into(), serde_json::json!("other"));
        let old_key = m.issue(&other, &spec, &[]).unwrap();
        assert!(valid(&next, &old_key), "the old key still opens sessions");
        let new_key = next.issue(&other, &spec, &[]).unwrap();
        assert!(!valid(&m, &new_key), "sealed with the new key");

        // The old key removed: its sessions no longer open, even those the previous generation had cached.
        let mut removed = next.config.clone();
        removed.keys = vec![[4; 32]];
        let last = next.reloaded(removed);
        assert!(!valid(&last, &old_key));
        assert!(valid(&last, &new_key));
    }

    #[test]
    fn a_session_is_written_only_if_it_can_be_read_back() {
        let m = manager(1800, 3600);
        for secure in [false, true] {
            let spec = CookieSpec {
                secure,
                path: "/".into(),
            };
            for big in [10, 9_000, 15_000, 40_000] {
                match m.issue(&session(now(), now(), big), &spec, &[]) {
                    Ok(set) => {
                        assert!(set.iter().all(|c| c.len() <= cookies::MAX_SET_COOKIE));
                        assert!(matches!(
                            block(m.load(&jar(&set), &spec)),
                            SessionState::Valid { .. }
                        ));
                    }
                    Err(_) => assert!(big > 15_000, "{big} bytes refused"),
                }
            }
            assert!(m.issue(&session(now(), now(), 40_000), &spec, &[]).is_err());
        }
    }

    #[test]
    fn app_cookies_named_like_the_session_are_not_a_broken_session() {
        let m = manager(1800, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        for name in [
            "passerelle_pref",
            "passerelle2",
            "passerelle.x",
            "passerelle_flow_AbCdEfGhIjKl",
        ] {
            assert!(
                matches!(
                    block(m.load(&[(name.into(), "1".into())], &spec)),
                    SessionState::None
                ),
                "{name}"
            );
        }
        assert!(matches!(
            block(m.load(&[("passerelle.7".into(), "1".into())], &spec)),
            SessionState::Invalid(_)
        ));
    }

    #[test]
    fn the_session_cache_stays_within_its_byte_bound() {
        let m = manager(1800, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        // 3,000 distinct 12 KB sessions weigh about 110 MB: more than the bound, which must hold.
        let n = 3_000;
        for i in 0..n {
            let mut s = session(now(), now(), 9000);
            s.id = format!("id-{i}");
            let set = m.issue(&s, &spec, &[]).unwrap();
            assert!(matches!(
                block(m.load(&jar(&set), &spec)),
                SessionState::Valid { .. }
            ));
        }
        m.cache.run_pending_tasks();
        assert!(
            m.cache.weighted_size() <= SESSION_CACHE_BYTES,
            "{} bytes cached",
            m.cache.weighted_size()
        );
        assert!(m.cache.entry_count() < n, "{}", m.cache.entry_count());
        assert!(m.cache.entry_count() > 0);
    }

    #[test]
    fn shrinking_session_deletes_stale_chunks() {
        let m = manager(1800, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        let big = m.issue(&session(now(), now(), 9000), &spec, &[]).unwrap();
        let small = m
            .issue(&session(now(), now(), 10), &spec, &jar(&big))
            .unwrap();
        assert!(small
            .iter()
            .any(|c| c.starts_with("passerelle.1=;") && c.contains("Max-Age=0")));
    }

    #[test]
    fn idle_and_absolute_timeouts_are_enforced() {
        let m = manager(60, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        let idle = m
            .issue(&session(now() - 100, now() - 61, 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            block(m.load(&jar(&idle), &spec)),
            SessionState::Expired
        ));
        let old = m
            .issue(&session(now() - 3601, now(), 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            block(m.load(&jar(&old), &spec)),
            SessionState::Expired
        ));
        let stale = m
            .issue(&session(now() - 100, now() - 30, 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            block(m.load(&jar(&stale), &spec)),
            SessionState::Valid { refresh: true, .. }
        ));
    }

    #[test]
    fn tampered_or_foreign_cookies_are_invalid() {
        let m = manager(60, 3600);
        let spec = CookieSpec {
            secure: false,
            path: "/".into(),
        };
        let set = m.issue(&session(now(), now(), 1), &spec, &[]).unwrap();
        let mut cookies = jar(&set);
        let v = &mut cookies[0].1;
        let mid = v.len() / 2;
        let flipped = if &v[mid..mid + 1] == "A" { "B" } else { "A" };
        v.replace_range(mid..mid + 1, flipped);
        assert!(matches!(
            block(m.load(&cookies, &spec)),
            SessionState::Invalid(_)
        ));
        let foreign = SessionManager::new(SessionConfig {
            keys: vec![[9; 32]],
            ..m.config.clone()
        })
        .unwrap();
        let theirs = foreign
            .issue(&session(now(), now(), 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            block(m.load(&jar(&theirs), &spec)),
            SessionState::Invalid("unknown key")
        ));
        assert!(matches!(
            block(m.load(&[("passerelle".into(), "garbage".into())], &spec)),
            SessionState::Invalid(_)
        ));
        assert!(matches!(block(m.load(&[], &spec)), SessionState::None));
    }
}
