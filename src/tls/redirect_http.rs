//! `server.redirect_http`: plain-HTTP listeners whose only answer is "go to https" (308, method and body
//! kept), for the browser that types the name without a scheme, before HSTS has taught it.
//!
//! The target's host is one Passerelle serves — the public URL's, or one a route is for — never a name no
//! route would answer on https. A host-less route answers any name, so there any `Host` is kept: a browser
//! only sends a name that resolved to this listener, where https would serve it as well; the answer is
//! `no-store`, so no shared cache keeps it for others.

use crate::proxy::Gateway;
use crate::routes::Authority;
use crate::small_app::response;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct RedirectHttp {
    /// The running configuration: routes and the public URL, as reloaded.
    pub gateway: Arc<ArcSwap<Gateway>>,
}

#[async_trait]
impl ServeHttp for RedirectHttp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let gateway = self.gateway.load();
        let req = session.req_header();
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => Authority::parse(h.as_bytes()).ok(),
            _ => None,
        };
        let target = host.and_then(|h| https_origin(&gateway, &h));
        let Some(origin) = target else {
            return response(
                400,
                "text/plain; charset=utf-8",
                "Adresse inconnue : utilisez https:// et l'adresse du service.\nUnknown address: use https:// and the service's address.\n"
                    .into(),
            );
        };
        // Origin-form as received; an absolute-form target (RFC 9112 §3.2.2) by its path and query.
        let raw = req.raw_path();
        let path = match raw.first() {
            Some(b'/') => raw,
            _ => req
                .uri
                .path_and_query()
                .map(|p| p.as_str().as_bytes())
                .filter(|p| p.first() == Some(&b'/'))
                .unwrap_or(b"/"),
        };
        let mut location = origin.into_bytes();
        location.extend_from_slice(path);
        let mut answer = response(308, "text/plain; charset=utf-8", Vec::new());
        match http::HeaderValue::from_bytes(&location) {
            Ok(value) => {
                answer.headers_mut().insert(http::header::LOCATION, value);
                answer
            }
            Err(_) => response(400, "text/plain; charset=utf-8", b"Bad request\n".to_vec()),
        }
    }
}

/// `https://host[:port]` for a host this configuration serves, `None` for any other.
fn https_origin(gateway: &Gateway, host: &Authority) -> Option<String> {
    let server = &gateway.config.server;
    if let Some(public) = server.public_url.as_ref().filter(|u| u.https) {
        let public_host = Authority::parse(public.authority.as_bytes()).ok()?;
        if public_host.host() == host.host() {
            return Some(public.origin());
        }
    }
    let routed = gateway
        .routes
        .all()
        .iter()
        .any(|r| r.host.as_ref().is_none_or(|p| p.matches(host.host())));
    if !routed {
        return None;
    }
    // The TLS listener's port, unless it is https' own; behind a TLS-terminating proxy, 443.
    let port = match &server.tls {
        Some(_) => server
            .listen
            .first()
            .map(|a| a.port())
            .filter(|p| *p != 443),
        None => None,
    };
    let name = host.host();
    Some(match port {
        Some(p) => format!("https://{name}:{p}"),
        None => format!("https://{name}"),
    })
}
