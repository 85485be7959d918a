//! The admin listener: `/health` (the process answers), `/ready` (listeners are up and, with Redis,
//! Redis answers), `/metrics` (Prometheus text format), and with `server.admin_token` the session API:
//! `GET /sessions?sub=…` lists a subject's sessions, `POST /sessions/revoke?sub=…` or `?id=…` ends them
//! on every replica. Kept off the public listener so it is never exposed by accident.

use crate::config::Secret;
use crate::session::shared::LATENCY_BUCKETS_MS;
use crate::session::{Cause, Shared};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub logins_ok: AtomicU64,
    /// By [`crate::oidc::FAILURE_REASONS`].
    pub logins_failed: [AtomicU64; 9],
    pub sessions_invalid: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub sessions_revoked: AtomicU64,
    pub responses_5xx: AtomicU64,
    /// Requests answered before routing, by reason: what probing and smuggling attempts look like.
    pub refused_path: AtomicU64,
    pub refused_too_large: AtomicU64,
    pub refused_host: AtomicU64,
    /// Requests over `tls::MAX_IN_FLIGHT` on one connection (an HTTP/2 reset flood), answered 429.
    pub refused_busy: AtomicU64,
    /// `Set-Cookie` headers of upstreams naming one of Passerelle's cookies, removed.
    pub upstream_cookies_removed: AtomicU64,
    /// Forward-auth requests refused because the original URI could not be read with certainty.
    pub forward_auth_refused: AtomicU64,
    /// SIGHUP reloads applied, and refused (the running configuration kept).
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let line = |name: &str, help: &str, value: &AtomicU64| {
            format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            )
        };
        [
            line(
                "passerelle_requests_total",
                "Requests received on the public listeners.",
                &self.requests,
            ),
            line(
                "passerelle_logins_total",
                "Logins completed.",
                &self.logins_ok,
            ),
            line(
                "passerelle_sessions_invalid_total",
                "Session cookies refused (tampered, unknown key, malformed).",
                &self.sessions_invalid,
            ),
            line(
                "passerelle_sessions_expired_total",
                "Sessions past their idle or absolute lifetime.",
                &self.sessions_expired,
            ),
            line(
                "passerelle_sessions_revoked_presented_total",
                "Requests presenting a session revoked by logout, an administrator or the provider.",
                &self.sessions_revoked,
            ),
            line(
                "passerelle_responses_5xx_total",
                "Responses with a 5xx status.",
                &self.responses_5xx,
            ),
            labelled(
                "passerelle_login_failures_total",
                "Logins refused or failed, by reason.",
                crate::oidc::FAILURE_REASONS
                    .iter()
                    .zip(&self.logins_failed)
                    .map(|(r, v)| (*r, v)),
            ),
            line(
                "passerelle_upstream_cookies_removed_total",
                "Set-Cookie headers of upstream responses naming one of Passerelle's cookies, removed before the browser.",
                &self.upstream_cookies_removed,
            ),
            line(
                "passerelle_forward_auth_refused_total",
                "Forward-auth requests answered 400: untrusted peer, original URI missing, repeated, unreadable or given in another header too.",
                &self.forward_auth_refused,
            ),
            line(
                "passerelle_config_reloads_total",
                "Configuration reloads (SIGHUP) applied.",
                &self.config_reloads,
            ),
            line(
                "passerelle_config_reload_failures_total",
                "Configuration reloads (SIGHUP) refused: the file did not validate; the running configuration was kept.",
                &self.config_reload_failures,
            ),
            labelled(
                "passerelle_requests_refused_total",
                "Requests answered before routing: ambiguous path (400), headers over server.max_header_bytes (431), Host missing, repeated or not a valid host (400), too many requests in flight on one connection (429).",
                [
                    ("path", &self.refused_path),
                    ("headers_too_large", &self.refused_too_large),
                    ("host", &self.refused_host),
                    ("connection_busy", &self.refused_busy),
                ]
                .into_iter(),
            ),
        ]
        .concat()
    }
}

fn labelled<'a>(
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, &'a AtomicU64)>,
) -> String {
    let mut out = format!("# HELP {name} {help}\n# TYPE {name} counter\n");
    for (reason, value) in values {
        out.push_str(&format!(
            "{name}{{reason=\"{reason}\"}} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    out
}

pub struct Admin {
    /// The public listeners, probed by `/ready`.
    pub listen: Vec<std::net::SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<crate::audit::Audit>,
    pub shared: Option<Arc<Shared>>,
    pub token: Option<Secret>,
    /// The running configuration: a subject is looked up under each of its providers, those a reload
    /// added included.
    pub gateway: Arc<arc_swap::ArcSwap<crate::proxy::Gateway>>,
}

impl Admin {
    fn providers(&self) -> Vec<String> {
        self.gateway.load().providers.keys().cloned().collect()
    }

    /// Ready while Redis answers, and while it has failed for less than `session.redis_grace`: every
    /// replica sees the same Redis, and an orchestrator that unreadied them all at the first failed
    /// PING would turn the grace the sessions get into an outage.
    async fn ready(&self) -> (u16, Vec<u8>) {
        // Ready means the public listeners accept: pingora starts each service on its own runtime, and
        // this one may answer before the proxy has bound its sockets.
        for addr in &self.listen {
            let target = match addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => {
                    std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
                }
                ip if ip.is_unspecified() => {
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
                }
                _ => *addr,
            };
            let connect = tokio::net::TcpStream::connect(target);
            if !matches!(
                tokio::time::timeout(std::time::Duration::from_secs(1), connect).await,
                Ok(Ok(_))
            ) {
                return (
                    503,
                    format!(
                        "not ready
listener {addr}: not accepting yet
"
                    )
                    .into_bytes(),
                );
            }
        }
        let Some(shared) = &self.shared else {
            return (200, b"ok\n".to_vec());
        };
        match shared.cmd::<String>(redis::cmd("PING")).await {
            Ok(_) => (
                200,
                format!("ok\nredis: up ({})\n", shared.link.kind).into_bytes(),
            ),
            Err(e) => {
                let down = shared.down_for().unwrap_or_default();
                let grace = shared.config.redis_grace;
                if down < grace {
                    (
                        200,
                        format!(
                            "ok\nredis: unreachable for {}s, cached sessions served for {}s more: {e}\n",
                            down.as_secs(),
                            (grace - down).as_secs()
                        )
                        .into_bytes(),
                    )
                } else {
                    (503, format!("not ready\nredis: {e}\n").into_bytes())
                }
            }
        }
    }

    async fn store_metrics(&self) -> String {
        let Some(shared) = &self.shared else {
            return String::new();
        };
        let stats = &shared.stats;
        let mut out = String::new();
        out.push_str("# HELP passerelle_store_errors_total Redis operations that failed or timed out.\n# TYPE passerelle_store_errors_total counter\n");
        out.push_str(&format!(
            "passerelle_store_errors_total {}\n",
            stats.errors.load(Ordering::Relaxed)
        ));
        out.push_str(&labelled(
            "passerelle_revocations_total",
            "Sessions revoked, by cause.",
            Cause::ALL
                .iter()
                .zip(&stats.revocations)
                .map(|(c, v)| (c.label(), v)),
        ));
        out.push_str("# HELP passerelle_store_latency_seconds Latency of Redis operations.\n# TYPE passerelle_store_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += stats.latency[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "passerelle_store_latency_seconds_bucket{{le=\"{}\"}} {cumulative}\n",
                *bound as f64 / 1000.0
            ));
        }
        cumulative += stats.latency[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        out.push_str(&format!(
            "passerelle_store_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}\npasserelle_store_latency_seconds_sum {}\npasserelle_store_latency_seconds_count {cumulative}\n",
            stats.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
        if shared.config.store == crate::config::SessionStore::Redis {
            out.push_str("# HELP passerelle_sessions_active Live server-side sessions, by provider.\n# TYPE passerelle_sessions_active gauge\n");
            for p in &self.providers() {
                if let Ok(n) = shared.active(p).await {
                    out.push_str(&format!(
                        "passerelle_sessions_active{{provider=\"{p}\"}} {n}\n"
                    ));
                }
            }
        }
        out
    }

    fn authorised(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let expected = format!("Bearer {}", token.expose());
        let mut given = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter();
        match (given.next(), given.next()) {
            (Some(v), None) => v.as_bytes().ct_eq(expected.as_bytes()).into(),
            _ => false,
        }
    }

    /// The session API. Every answer is JSON; every revocation is logged by the store, with its cause.
    async fn sessions_api(&self, session: &ServerSession, path: &str) -> (u16, Vec<u8>) {
        let json = |status: u16, value: serde_json::Value| (status, value.to_string().into_bytes());
        let (Some(shared), Some(_)) = (&self.shared, &self.token) else {
            return json(
                404,
                serde_json::json!({"error": "the session API needs server.admin_token and [session.redis]"}),
            );
        };
        if !self.authorised(session) {
            tracing::warn!(target: "audit", "session API: missing or wrong bearer token");
            return json(401, serde_json::json!({"error": "unauthorized"}));
        }
        let query = session.req_header().uri.query().unwrap_or("");
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| -> Option<String> {
            let mut values = params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone());
            match (values.next(), values.next()) {
                (Some(v), None) if !v.is_empty() && v.len() <= 1024 => Some(v),
                _ => None,
            }
        };
        let known = self.providers();
        let providers: Vec<String> = match param("provider") {
            Some(p) if known.contains(&p) => vec![p],
            Some(_) => return json(400, serde_json::json!({"error": "unknown provider"})),
            None => known,
        };
        let method = session.req_header().method.clone();
        let result = match (path, method.as_str(), param("sub"), param("id")) {
            ("/sessions", "GET", Some(sub), None) => shared
                .sessions_of(&providers, &sub)
                .await
                .map(|list| json(200, serde_json::json!({ "sessions": list }))),
            ("/sessions/revoke", "POST", Some(sub), None) => {
                tracing::info!(target: "audit", providers = ?providers, "session API: revoke every session of a subject");
                // One provider at a time, each audited with its outcome: the subject's pseudonym is keyed by
                // provider, so it then matches that of the logins it ends.
                let mut revoked = 0;
                let mut failed = None;
                for p in &providers {
                    let outcome = shared
                        .revoke_subject(std::slice::from_ref(p), &sub, Cause::Admin)
                        .await;
                    let reason = match &outcome {
                        Ok(n) => format!("session API: {n} session(s) ended"),
                        Err(_) => "session API: the store did not answer".to_string(),
                    };
                    self.audit.write(
                        crate::audit::Event::new(crate::audit::Kind::SessionRevoked, "admin")
                            .provider(p)
                            .subject(&sub)
                            .reason(&reason),
                    );
                    match outcome {
                        Ok(n) => revoked += n,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(json(200, serde_json::json!({ "revoked": revoked }))),
                }
            }
            ("/sessions/revoke", "POST", None, Some(id)) if id.len() <= 64 => {
                tracing::info!(target: "audit", session = %id, "session API: revoke one session");
                let event = crate::audit::Event::new(crate::audit::Kind::SessionRevoked, "admin")
                    .session_id(&id);
                match shared.meta(&id).await {
                    // Unknown, expired or already revoked: nothing to end.
                    Ok(None) => {
                        self.audit
                            .write(event.reason("session API: no such live session"));
                        Ok(json(200, serde_json::json!({ "revoked": 0 })))
                    }
                    Ok(Some(meta)) => {
                        let outcome = shared
                            .revoke(&id, &meta.provider, meta.expires, Cause::Admin)
                            .await;
                        self.audit
                            .write(event.provider(&meta.provider).reason(match &outcome {
                                Ok(()) => "session API: 1 session ended",
                                Err(_) => "session API: the store did not answer",
                            }));
                        outcome.map(|()| json(200, serde_json::json!({ "revoked": 1 })))
                    }
                    Err(e) => Err(e),
                }
            }
            ("/sessions", _, _, _) | ("/sessions/revoke", _, _, _) => {
                return json(
                    400,
                    serde_json::json!({"error": "GET /sessions?sub=SUB, or POST /sessions/revoke?sub=SUB or ?id=ID ([&provider=NAME])"}),
                )
            }
            _ => return json(404, serde_json::json!({"error": "not found"})),
        };
        result.unwrap_or_else(|e| json(503, serde_json::json!({"error": e.to_string()})))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = match path.as_str() {
            "/health" => (200, "text/plain", b"ok\n".to_vec()),
            "/ready" => {
                let (status, body) = self.ready().await;
                (status, "text/plain", body)
            }
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                [
                    self.metrics.render(),
                    labelled(
                        "passerelle_audit_events_total",
                        "Audit events queued for the trail, and dropped (queue full or writer down).",
                        [
                            ("written", &self.audit.written),
                            ("dropped", &self.audit.dropped),
                            ("suppressed", &self.audit.suppressed),
                        ]
                            .into_iter(),
                    ),
                    self.store_metrics().await,
                ]
                    .concat()
                    .into_bytes(),
            ),
            p if p == "/sessions" || p.starts_with("/sessions/") => {
                let (status, body) = self.sessions_api(session, p).await;
                (status, "application/json", body)
            }
            _ => (404, "text/plain", b"not found\n".to_vec()),
        };
        crate::small_app::response(status, content_type, body)
    }
}
