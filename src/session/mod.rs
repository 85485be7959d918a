//! Sessions in encrypted cookies: codec, cookie attributes and chunking, timeouts, and a decode cache.

pub mod codec;
pub mod cookies;
mod model;

pub use codec::{KeyRing, OpenError, Purpose};
pub use cookies::CookieSpec;
pub use model::{now, now_us, IdTokenHint, LoginFlow, LogoutFlow, Session};

use crate::config::SessionConfig;
use std::sync::Arc;
use std::time::Duration;

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
    /// Tampered, truncated, wrong key, duplicated: treated as no session, and logged.
    Invalid(&'static str),
}

pub struct SessionManager {
    ring: KeyRing,
    pub config: SessionConfig,
    /// Decoded sessions keyed by a digest of the cookie text: skips decryption and JSON parsing on hot
    /// paths. Bounded in count and lifetime; timeouts are still checked on every request.
    /// Keyed by the cookie text itself: a lookup compares the whole value, so no two cookies can share an entry.
    cache: moka::sync::Cache<String, Arc<Session>>,
    /// `__Host-<cookie_name>`, computed once: the name is looked up on every request.
    secure_name: String,
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
    pub fn new(config: SessionConfig) -> Self {
        let ring = KeyRing::new(&config.keys);
        let cache = moka::sync::Cache::builder()
            .max_capacity(SESSION_CACHE_BYTES)
            .weigher(|cookie: &String, _session: &Arc<Session>| cache_weight(cookie))
            .time_to_live(Duration::from_secs(300))
            .build();
        let secure_name = format!("__Host-{}", config.cookie_name);
        SessionManager {
            ring,
            config,
            cache,
            secure_name,
        }
    }

    /// Every how long a request re-issues the cookie to slide the idle deadline: often enough to keep
    /// the idle timeout honest, rarely enough not to re-encrypt on every request.
    fn refresh_interval(&self) -> u64 {
        (self.config.idle_timeout.as_secs() / 10).clamp(1, 300)
    }

    pub fn load(&self, cookies: &[(String, String)], spec: &CookieSpec) -> SessionState {
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
        let session = match self.cache.get(text.as_str()) {
            Some(s) => s,
            None => {
                let plain = match self.ring.open(Purpose::Session, &text) {
                    Ok(p) => p,
                    Err(OpenError::UnknownKey) => return SessionState::Invalid("unknown key"),
                    Err(_) => return SessionState::Invalid("undecryptable"),
                };
                let Ok(session) = serde_json::from_slice::<Session>(&plain) else {
                    return SessionState::Invalid("unreadable");
                };
                let session = Arc::new(session);
                self.cache.insert(text, session.clone());
                session
            }
        };
        let now = now();
        if now
            >= session
                .created
                .saturating_add(self.config.max_lifetime.as_secs())
            || now
                >= session
                    .last_seen
                    .saturating_add(self.config.idle_timeout.as_secs())
            || session.created > now.saturating_add(300)
        {
            return SessionState::Expired;
        }
        let refresh = now.saturating_sub(session.last_seen) >= self.refresh_interval();
        SessionState::Valid { session, refresh }
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
            keys: vec![[3; 32]],
            cookie_name: "passerelle".into(),
            idle_timeout: Duration::from_secs(idle),
            max_lifetime: Duration::from_secs(max),
            login_timeout: Duration::from_secs(600),
            secure: None,
            logout_clear_site_data: Vec::new(),
        })
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
            rendered: Default::default(),
        }
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
            match m.load(&jar(&set), &spec) {
                SessionState::Valid { session, refresh } => {
                    assert_eq!(*session, s);
                    assert!(!refresh);
                }
                other => panic!("{other:?}"),
            }
        }
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
                            m.load(&jar(&set), &spec),
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
                    m.load(&[(name.into(), "1".into())], &spec),
                    SessionState::None
                ),
                "{name}"
            );
        }
        assert!(matches!(
            m.load(&[("passerelle.7".into(), "1".into())], &spec),
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
                m.load(&jar(&set), &spec),
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
        assert!(matches!(m.load(&jar(&idle), &spec), SessionState::Expired));
        let old = m
            .issue(&session(now() - 3601, now(), 1), &spec, &[])
            .unwrap();
        assert!(matches!(m.load(&jar(&old), &spec), SessionState::Expired));
        let stale = m
            .issue(&session(now() - 100, now() - 30, 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            m.load(&jar(&stale), &spec),
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
        assert!(matches!(m.load(&cookies, &spec), SessionState::Invalid(_)));
        let foreign = SessionManager::new(SessionConfig {
            keys: vec![[9; 32]],
            ..m.config.clone()
        });
        let theirs = foreign
            .issue(&session(now(), now(), 1), &spec, &[])
            .unwrap();
        assert!(matches!(
            m.load(&jar(&theirs), &spec),
            SessionState::Invalid("unknown key")
        ));
        assert!(matches!(
            m.load(&[("passerelle".into(), "garbage".into())], &spec),
            SessionState::Invalid(_)
        ));
        assert!(matches!(m.load(&[], &spec), SessionState::None));
    }
}
