//! Forward-auth (`/auth`) for nginx `auth_request` and Traefik `forwardAuth`: the front proxy asks whether
//! the session opens the route of the original URI, and gets 2xx with identity headers, 401 or 403.
//!
//! The original URI comes in a header, so it is the most attacker-adjacent input Passerelle reads: it is
//! believed only from a trusted proxy, only from the one header the deployment names, only when given
//! once, and only when every byte of it can be read. Anything else is a 400 (which nginx turns into a
//! 500): never a decision for another, more permissive, route.

use super::request::escape_query;
use super::{Gateway, Reply, RequestInfo};
use crate::access::{self, Refusal};
use crate::config::{AuthMode, ForwardAuthUriHeader};
use crate::identity::render_headers;
use crate::routes::{normalise_path, NormalisedPath, PathError};
use crate::session::{now, SessionState};
use pingora::http::RequestHeader;
use std::sync::atomic::Ordering;

/// Why the original URI of a forward-auth request cannot be decided on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriRefused {
    #[error("the peer is not a trusted proxy: its original-URI header is not believed")]
    UntrustedPeer,
    #[error("no {0} header")]
    Missing(&'static str),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error("{0} present besides the configured {1}: a client may have added it")]
    OtherHeader(&'static str, &'static str),
    #[error("the original URI holds a control byte or a space")]
    ControlByte,
    #[error("the original URI is not a path: {0}")]
    Path(#[from] PathError),
}

/// The original request, as Passerelle decides on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalUri {
    pub path: NormalisedPath,
    pub query: Option<String>,
}

/// Reads the original URI from the one configured header of a trusted peer.
pub fn original_uri(
    req: &RequestHeader,
    header: ForwardAuthUriHeader,
    trusted: bool,
) -> Result<OriginalUri, UriRefused> {
    if !trusted {
        return Err(UriRefused::UntrustedPeer);
    }
    let wanted = header.name();
    if let Some(other) = ForwardAuthUriHeader::ALL_NAMES
        .iter()
        .find(|n| **n != wanted && req.headers.contains_key(**n))
    {
        return Err(UriRefused::OtherHeader(other, wanted));
    }
    let values = req.headers.get_all(wanted);
    let mut lines = values.iter();
    let value = match (lines.next(), lines.next()) {
        (None, _) => return Err(UriRefused::Missing(wanted)),
        (Some(_), Some(_)) => return Err(UriRefused::Repeated(wanted)),
        (Some(v), None) => v.as_bytes(),
    };
    parse_original_uri(value)
}

/// `path[?query]` as raw bytes: bytes outside ASCII are read as their `%XX` escape (so `/admin/\xff` is
/// `/admin/%FF`, under `/admin`), control bytes and spaces refused, the path normalised like any request
/// path on the main listener.
pub fn parse_original_uri(value: &[u8]) -> Result<OriginalUri, UriRefused> {
    if value.iter().any(|b| *b <= 0x20 || *b == 0x7f) {
        return Err(UriRefused::ControlByte);
    }
    let (path, query) = match value.iter().position(|b| *b == b'?') {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let path = escape_query(path).map_err(|_| UriRefused::ControlByte)?;
    let path = normalise_path(&path)?;
    let query = query
        .map(escape_query)
        .transpose()
        .map_err(|_| UriRefused::ControlByte)?;
    Ok(OriginalUri { path, query })
}

/// The header carrying the request's `Cookie` line without Passerelle's cookies, on every 2xx answer, for
/// the front proxy to forward instead of the browser's (nginx: `auth_request_set` then
/// `proxy_set_header Cookie`): the app behind a forward-auth deployment never sees the session either.
pub const APP_COOKIE_HEADER: &str = "x-passerelle-app-cookie";

/// A 2xx answer, with the app's cookies for the front proxy to forward.
fn allowed(gw: &Gateway, req: &RequestHeader, body: &str) -> Reply {
    let app_cookies = match gw.own_cookies.strip_request(&req.headers) {
        Some(kept) => kept,
        // One line, none of it ours.
        None => req
            .headers
            .get(http::header::COOKIE)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
    };
    let reply = Reply::text(200, body);
    match http::HeaderValue::from_bytes(&app_cookies) {
        Ok(value) if !app_cookies.is_empty() => {
            reply.header_value(http::HeaderName::from_static(APP_COOKIE_HEADER), value)
        }
        _ => reply,
    }
}

pub async fn forward_auth(gw: &Gateway, info: &RequestInfo, req: &RequestHeader) -> Reply {
    let original = match original_uri(req, gw.config.server.forward_auth_uri_header, info.trusted) {
        Ok(o) => o,
        Err(e) => {
            gw.metrics
                .forward_auth_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = ?info.peer, reason = %e, "forward-auth refused");
            return Reply::text(400, "original URI missing or unreadable");
        }
    };
    let Some(route) = gw.routes.find(info.host(), &original.path.matching) else {
        return Reply::text(404, "no route");
    };
    if route.auth == AuthMode::Public {
        return allowed(gw, req, "public");
    }
    let spec = gw.cookie_spec(info.secure);
    let (session, refresh) = match gw.sessions.load(&info.cookies, &spec).await {
        SessionState::Valid { session, refresh } if route.providers.contains(&session.provider) => {
            (session, refresh)
        }
        SessionState::Unavailable => {
            return Reply::text(503, "session store unavailable").header("Retry-After", "5".into())
        }
        _ if route.auth == AuthMode::Optional => return allowed(gw, req, "anonymous"),
        _ => return Reply::text(401, "authentication required"),
    };
    match access::decide(route, &session) {
        Ok(()) => {}
        Err(Refusal::StepUp) => return Reply::text(401, "insufficient scope"),
        Err(_) => return Reply::text(403, "forbidden"),
    }
    let mut reply = allowed(gw, req, "ok");
    for (name, value) in session
        .rendered
        .get_or_render(route.index, || render_headers(route, &session.claims))
        .iter()
    {
        reply = reply.header_value(name.clone(), value.clone());
    }
    if let Some(assertion) = &route.assertion {
        match gw.assertion(route, assertion, &session) {
            Some(value) => reply = reply.header_value(assertion.header.clone(), value),
            None => return Reply::text(500, "identity assertion unavailable"),
        }
    }
    if refresh {
        let mut updated = (*session).clone();
        updated.last_seen = now();
        if let Ok(cookies) = gw.sessions.issue(&updated, &spec, &info.cookies) {
            reply = reply.cookies(cookies);
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pairs: &[(&str, &[u8])]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/.passerelle/auth", None).unwrap();
        for (name, value) in pairs {
            req.append_header(
                name.to_string(),
                http::HeaderValue::from_bytes(value).unwrap(),
            )
            .unwrap();
        }
        req
    }

    #[test]
    fn only_the_configured_header_of_a_trusted_peer_is_read_once() {
        use ForwardAuthUriHeader::*;
        let read = |pairs: &[(&str, &[u8])], which, trusted| {
            original_uri(&header(pairs), which, trusted).map(|o| o.path.matching)
        };
        assert_eq!(
            read(&[("X-Original-URI", b"/admin/x")], XOriginalUri, true).unwrap(),
            "/admin/x"
        );
        assert_eq!(
            read(&[("X-Forwarded-Uri", b"/api/x")], XForwardedUri, true).unwrap(),
            "/api/x"
        );
        assert_eq!(
            read(&[("X-Original-URI", b"/admin/x")], XOriginalUri, false),
            Err(UriRefused::UntrustedPeer)
        );
        assert!(matches!(
            read(&[("X-Forwarded-Uri", b"/api/x")], XOriginalUri, true),
            Err(UriRefused::OtherHeader(..))
        ));
        assert!(matches!(
            read(
                &[
                    ("X-Forwarded-Uri", b"/api/x"),
                    ("X-Original-URI", b"/public/")
                ],
                XForwardedUri,
                true
            ),
            Err(UriRefused::OtherHeader(..))
        ));
        assert!(matches!(
            read(
                &[("X-Original-URI", b"/a"), ("X-Original-URL", b"/")],
                XOriginalUri,
                true
            ),
            Err(UriRefused::OtherHeader(..))
        ));
        assert!(matches!(
            read(
                &[
                    ("X-Original-URI", b"/public/"),
                    ("X-Original-URI", b"/admin")
                ],
                XOriginalUri,
                true
            ),
            Err(UriRefused::Repeated(_))
        ));
        assert!(matches!(
            read(&[], XOriginalUri, true),
            Err(UriRefused::Missing(_))
        ));
    }

    #[test]
    fn every_byte_is_read_or_refused_never_dropped() {
        for b in 0u8..=255 {
            let segment = [b"/admin/a".as_slice(), &[b], b"b"].concat();
            match parse_original_uri(&segment) {
                Ok(o) => assert!(
                    o.path.matching.starts_with("/admin/"),
                    "byte {b:#04x}: decided as {}",
                    o.path.matching
                ),
                Err(_) => assert!(
                    b <= 0x20 || b == 0x7f || b"#%\\".contains(&b),
                    "byte {b:#04x} refused"
                ),
            }
            let query = [b"/admin/users?x=".as_slice(), &[b]].concat();
            match parse_original_uri(&query) {
                Ok(o) => assert_eq!(o.path.matching, "/admin/users", "byte {b:#04x}"),
                Err(_) => assert!(b <= 0x20 || b == 0x7f, "byte {b:#04x} refused in a query"),
            }
        }
        let o = parse_original_uri(b"/admin/\xff?\x80").unwrap();
        assert_eq!(o.path.forward, "/admin/%FF");
        assert_eq!(o.query.as_deref(), Some("%80"));
        assert!(parse_original_uri(b"http://b.example/admin").is_err());
        assert!(parse_original_uri(b"").is_err());
    }
}
