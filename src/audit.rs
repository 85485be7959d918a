//! The audit trail: one JSON line per security event (login succeeded or failed, logout, step-up, access
//! refused, session revoked), apart from the operational log, for the data-protection officer and the
//! security team.
//!
//! It answers "who reached which application, with what identity, from where" months later, so every line
//! is self-contained and bounded: the session id (never the cookie), the subject (or a keyed pseudonym of
//! it), the federation's facts (`idp_id`, `acr`, `amr`, `siret`), the route and the claims its upstream
//! received. Writing happens on a thread of its own: a slow disk never holds a request; if the queue ever
//! fills, lines are counted as dropped rather than blocking the proxy.

use crate::config::{AuditConfig, AuditOutput, RouteConfig};
use crate::session::Session;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Lines waiting for the writer; beyond, lines are dropped and counted.
const QUEUE: usize = 16_384;
/// Longest text kept in one field, in characters.
const FIELD_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LoginSucceeded,
    LoginFailed,
    Logout,
    StepUp,
    AccessRefused,
    SessionRevoked,
}

/// One event, as written. Optional fields are left out when unknown.
#[derive(Debug, Default, Serialize)]
pub struct Event {
    time: String,
    log: &'static str,
    event: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// HMAC-SHA256 of `provider` and `sub` under `audit.pseudonym_key`, when `pseudonymise` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_pseudonym: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    siret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    /// `header=claim` for each claim the route's upstream receives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    released: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Text from a request or a provider: no control characters, at most [`FIELD_MAX`] characters. JSON
/// escaping is serde's.
fn bounded(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(FIELD_MAX)
        .collect()
}

fn claim_text(session: &Session, name: &str) -> Option<String> {
    match session.claims.get(name)? {
        serde_json::Value::String(s) => Some(bounded(s)),
        serde_json::Value::Null => None,
        other => Some(bounded(&other.to_string())),
    }
}

impl Event {
    pub fn new(kind: Kind, request_id: &str) -> Event {
        Event {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            log: "audit",
            event: Some(kind),
            request_id: Some(bounded(request_id)),
            ..Event::default()
        }
    }

    pub fn client(mut self, peer: Option<IpAddr>, user_agent: Option<&[u8]>) -> Self {
        self.client = peer.map(|p| p.to_string());
        self.user_agent = user_agent.map(|ua| bounded(&String::from_utf8_lossy(ua)));
        self
    }

    pub fn provider(mut self, name: &str) -> Self {
        self.provider = Some(bounded(name));
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(bounded(reason));
        self
    }

    pub fn session_id(mut self, id: &str) -> Self {
        self.session = Some(bounded(id));
        self
    }

    /// The session's identity facts; the subject itself is added by [`Audit::write`], pseudonymised or not.
    pub fn session(mut self, s: &Session) -> Self {
        self.session = Some(bounded(&s.id));
        self.provider = Some(bounded(&s.provider));
        self.sub = claim_text(s, "sub");
        self.idp_id = claim_text(s, "idp_id");
        self.acr = claim_text(s, "acr");
        self.siret = claim_text(s, "siret");
        self.amr = s.claims.get("amr").and_then(|v| v.as_array()).map(|a| {
            a.iter()
                .filter_map(|m| m.as_str())
                .take(16)
                .map(bounded)
                .collect()
        });
        self
    }

    pub fn subject(mut self, sub: &str) -> Self {
        self.sub = Some(bounded(sub));
        self
    }

    /// The route, its upstream, and the claims that upstream receives.
    pub fn route(mut self, route: &RouteConfig) -> Self {
        self.route = Some(route.index);
        self.upstream = route.upstreams.first().map(|u| {
            let scheme = if u.https { "https" } else { "http" };
            format!("{scheme}://{}", u.address())
        });
        self.released = route
            .headers
            .iter()
            .map(|(h, claim)| format!("{}={}", h.as_str(), bounded(claim)))
            .collect();
        self
    }
}

enum Line {
    Text(String),
    /// Open the file again (logrotate moved it away): sent on each configuration reload.
    Reopen,
}

/// Where audit events go; no output: auditing is off.
pub struct Audit {
    output: Option<AuditOutput>,
    /// The writer thread, started by the first event: after `run --daemon` has forked, since a thread
    /// started before the fork would not exist in the daemon.
    sink: std::sync::OnceLock<Option<SyncSender<Line>>>,
    pseudonym_key: Option<Vec<u8>>,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    /// Events a client caused beyond [`PER_CLIENT_PER_MINUTE`]: counted, not written.
    pub suppressed: AtomicU64,
    /// Per client address, the events it caused in the current minute.
    recent: moka::sync::Cache<IpAddr, Arc<AtomicU64>>,
}

/// Failed logins and refusals are events anyone can cause at will (a forged callback costs one
/// request): past this many a minute from one address, the rest are counted only, so a flood cannot push
/// everyone else's events out of the queue.
pub const PER_CLIENT_PER_MINUTE: u64 = 30;

impl Audit {
    pub fn off() -> Self {
        Audit {
            output: None,
            sink: std::sync::OnceLock::new(),
            pseudonym_key: None,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            recent: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        }
    }

    /// Checks the file can be opened: an audit trail that silently goes nowhere is worse than none.
    pub fn start(config: &AuditConfig) -> std::io::Result<Self> {
        if let AuditOutput::File(path) = &config.output {
            open(path)?;
        }
        Ok(Audit {
            output: Some(config.output.clone()),
            pseudonym_key: config
                .pseudonym_key
                .as_ref()
                .map(|k| k.expose().as_bytes().to_vec()),
            ..Audit::off()
        })
    }

    fn sink(&self) -> Option<&SyncSender<Line>> {
        let output = self.output.as_ref()?;
        self.sink
            .get_or_init(|| match writer(output.clone()) {
                Ok(sink) => Some(sink),
                Err(e) => {
                    tracing::error!(error = %e, "audit: the writer could not start; events are dropped");
                    None
                }
            })
            .as_ref()
    }

    pub fn enabled(&self) -> bool {
        self.output.is_some()
    }

    /// Queues the event. With pseudonymisation, the subject is replaced by its keyed hash.
    pub fn write(&self, mut event: Event) {
        let Some(sink) = self.sink() else {
            if self.output.is_some() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        if let Some(key) = &self.pseudonym_key {
            if let Some(sub) = event.sub.take() {
                let provider = event.provider.as_deref().unwrap_or("");
                event.sub_pseudonym = Some(pseudonym(key, provider, &sub));
            }
        }
        let Ok(mut text) = serde_json::to_string(&event) else {
            return;
        };
        text.push('\n');
        match sink.try_send(Line::Text(text)) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An event a client can cause at will: written while its address stays under
    /// [`PER_CLIENT_PER_MINUTE`], counted as suppressed past it.
    pub fn write_limited(&self, event: Event, client: Option<IpAddr>) {
        if !self.enabled() {
            return;
        }
        if let Some(ip) = client {
            let count = self
                .recent
                .get_with(ip, || Arc::new(AtomicU64::new(0)))
                .fetch_add(1, Ordering::Relaxed);
            if count >= PER_CLIENT_PER_MINUTE {
                if count == PER_CLIENT_PER_MINUTE {
                    tracing::warn!(client = %ip, "audit: more than {PER_CLIENT_PER_MINUTE} failures a minute from one client; the rest of this minute's are counted, not written");
                }
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.write(event);
    }

    /// The subject as the operational log may show it: its pseudonym when the audit trail pseudonymises,
    /// or the pseudonymisation would stop at the audit file.
    pub fn log_subject(&self, provider: &str, sub: &str) -> String {
        match &self.pseudonym_key {
            Some(key) => pseudonym(key, provider, sub),
            None => sub.to_string(),
        }
    }

    pub fn reopen(&self) {
        if let Some(sink) = self.sink.get().and_then(|s| s.as_ref()) {
            let _ = sink.try_send(Line::Reopen);
        }
    }
}

/// The writer thread and its queue.
fn writer(output: AuditOutput) -> std::io::Result<SyncSender<Line>> {
    let mut out: Box<dyn Write + Send> = match &output {
        AuditOutput::Stdout => Box::new(std::io::stdout()),
        AuditOutput::File(path) => Box::new(open(path)?),
    };
    let (sink, lines) = sync_channel::<Line>(QUEUE);
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            for line in lines {
                match line {
                    Line::Text(text) => {
                        // One write per line: lines from other writers never interleave inside it.
                        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                            tracing::error!(error = %e, "audit: a line could not be written");
                        }
                    }
                    Line::Reopen => {
                        if let AuditOutput::File(path) = &output {
                            match open(path) {
                                Ok(f) => out = Box::new(f),
                                Err(e) => {
                                    tracing::error!(error = %e, file = %path, "audit: the file could not be opened again; writing to the previous one")
                                }
                            }
                        }
                    }
                }
            }
        })?;
    Ok(sink)
}

fn open(path: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Stable for one subject of one provider under one key; not reversible without the key.
fn pseudonym(key: &[u8], provider: &str, sub: &str) -> String {
    use base64::Engine;
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(provider.as_bytes());
    mac.update(&[0]);
    mac.update(sub.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operational_log_gets_the_pseudonym_when_the_trail_has_one() {
        assert_eq!(Audit::off().log_subject("pc", "sub-1"), "sub-1");
        let keyed = Audit {
            pseudonym_key: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            ..Audit::off()
        };
        assert_eq!(
            keyed.log_subject("pc", "sub-1"),
            pseudonym(b"0123456789abcdef0123456789abcdef", "pc", "sub-1")
        );
    }

    #[test]
    fn fields_are_bounded_and_escaped() {
        let ua = format!("Mozilla\n\"{}", "x".repeat(1000));
        let event = Event::new(Kind::LoginFailed, "abc")
            .client(Some("10.0.0.1".parse().unwrap()), Some(ua.as_bytes()))
            .reason("state\r\nforged");
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back["user_agent"].as_str().unwrap().chars().count(),
            FIELD_MAX
        );
        assert!(back["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("Mozilla \""));
        assert_eq!(back["event"], "login_failed");
        assert_eq!(back["log"], "audit");
        assert_eq!(back["reason"], "state  forged");
    }

    #[test]
    fn the_pseudonym_is_stable_per_key_provider_and_subject() {
        let a = pseudonym(b"key-one", "pc", "sub-1");
        assert_eq!(a, pseudonym(b"key-one", "pc", "sub-1"));
        assert_ne!(a, pseudonym(b"key-two", "pc", "sub-1"));
        assert_ne!(a, pseudonym(b"key-one", "nc", "sub-1"));
        assert_ne!(a, pseudonym(b"key-one", "pc", "sub-2"));
        assert_eq!(a.len(), 43);
    }
}
