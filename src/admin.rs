//! The admin listener: `/health` (the process answers), `/ready` (listeners are up), `/metrics`
//! (Prometheus text format). Kept off the public listener so it is never exposed by accident.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub logins_ok: AtomicU64,
    /// By [`crate::oidc::FAILURE_REASONS`].
    pub logins_failed: [AtomicU64; 8],
    pub sessions_invalid: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub responses_5xx: AtomicU64,
    /// Requests answered before routing, by reason: what probing and smuggling attempts look like.
    pub refused_path: AtomicU64,
    pub refused_too_large: AtomicU64,
    pub refused_host: AtomicU64,
    /// `Set-Cookie` headers of upstreams naming one of Passerelle's cookies, removed.
    pub upstream_cookies_removed: AtomicU64,
    /// Forward-auth requests refused because the original URI could not be read with certainty.
    pub forward_auth_refused: AtomicU64,
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
            labelled(
                "passerelle_requests_refused_total",
                "Requests answered before routing: ambiguous path (400), headers over server.max_header_bytes (431), Host missing, repeated or not a valid host (400).",
                [
                    ("path", &self.refused_path),
                    ("headers_too_large", &self.refused_too_large),
                    ("host", &self.refused_host),
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
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/health" | "/ready" => (200, "text/plain", b"ok\n".to_vec()),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                self.metrics.render().into_bytes(),
            ),
            _ => (404, "text/plain", b"not found\n".to_vec()),
        };
        crate::small_app::response(status, content_type, body)
    }
}
