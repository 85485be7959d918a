//! Facts about the incoming request, read once and believed only as far as they can be.

use crate::config::ServerConfig;
use crate::routes::{normalise_path, NormalisedPath, PathError};
use crate::session::cookies::parse_cookie_header;
use pingora::proxy::Session;
use std::net::IpAddr;

/// Why a request is answered before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("request line and headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    /// RFC 9112 §3.2: an HTTP/1.1 request without Host, or with several, is answered 400.
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("several Host headers")]
    SeveralHosts,
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::HeadersTooLarge(_) => 431,
            _ => 400,
        }
    }
}

pub struct RequestInfo {
    pub peer: Option<IpAddr>,
    /// The peer is a configured trusted proxy: its X-Forwarded-* headers are believed.
    pub trusted: bool,
    /// The browser reached us over https (directly or through a trusted TLS-terminating proxy).
    pub secure: bool,
    /// Lower-case host without port, for routing.
    pub host: String,
    /// `host[:port]` as the browser wrote it, for absolute URLs when no public_url is set.
    pub authority: String,
    pub path: NormalisedPath,
    pub query: Option<String>,
    pub navigation: bool,
    pub cookies: Vec<(String, String)>,
    /// For forward-auth: the original request target (`X-Original-URI`, nginx; `X-Forwarded-Uri`,
    /// Traefik), from trusted proxies only.
    pub original_uri: Option<String>,
}

impl RequestInfo {
    pub fn read(session: &Session, server: &ServerConfig) -> Result<Self, Refused> {
        let req = session.req_header();
        let size = req.raw_path().len()
            + req
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if size > server.max_header_bytes {
            return Err(Refused::HeadersTooLarge(server.max_header_bytes));
        }
        match req.headers.get_all("host").iter().count() {
            0 if req.version == http::Version::HTTP_11 => return Err(Refused::MissingHost),
            0 | 1 => {}
            _ => return Err(Refused::SeveralHosts),
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = peer.is_some_and(|ip| server.is_trusted_proxy(ip));
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let forwarded_proto = if trusted {
            header("x-forwarded-proto").map(|p| p.eq_ignore_ascii_case("https"))
        } else {
            None
        };
        let secure = match &server.public_url {
            Some(url) => url.https,
            None => forwarded_proto.unwrap_or(tls),
        };
        let forwarded_host = if trusted {
            header("x-forwarded-host")
                .and_then(|h| h.split(',').next())
                .map(str::trim)
        } else {
            None
        };
        let authority = forwarded_host
            .or_else(|| header("host"))
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .filter(|a| is_valid_authority(a))
            .unwrap_or("localhost")
            .to_ascii_lowercase();
        let host = strip_port(&authority).to_string();
        let path = normalise_path(req.uri.path())?;
        let query = req.uri.query().map(str::to_string);
        let method = &req.method;
        let fetch_mode = header("sec-fetch-mode");
        let accepts_html = header("accept").is_some_and(|a| a.contains("text/html"));
        let xhr =
            header("x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
        let navigation = (method == http::Method::GET || method == http::Method::HEAD)
            && !xhr
            && match fetch_mode {
                Some(mode) => mode == "navigate",
                None => accepts_html,
            };
        let cookies =
            parse_cookie_header(req.headers.get_all("cookie").iter().map(|v| v.as_bytes()));
        let original_uri = if trusted {
            header("x-original-uri")
                .or_else(|| header("x-forwarded-uri"))
                .map(str::to_string)
        } else {
            None
        };
        Ok(RequestInfo {
            peer,
            trusted,
            secure,
            host,
            authority,
            path,
            query,
            navigation,
            cookies,
            original_uri,
        })
    }

    /// The path and query as the browser asked for them, normalised: where to come back after login.
    pub fn return_to(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path.forward, q),
            None => self.path.forward.clone(),
        }
    }

    /// `scheme://authority` of this request, used when no public_url is configured.
    pub fn origin(&self, server: &ServerConfig) -> String {
        match &server.public_url {
            Some(url) => url.origin(),
            None => format!(
                "{}://{}",
                if self.secure { "https" } else { "http" },
                self.authority
            ),
        }
    }

    /// A query parameter, decoded. The first occurrence wins; duplicates are not merged.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split(']')
            .next()
            .unwrap_or(authority)
            .trim_start_matches('[');
    }
    authority.split(':').next().unwrap_or(authority)
}

/// A Host header is `name[:port]`: anything else (spaces, `@`, `/`) is ignored rather than reflected
/// into a redirect_uri.
fn is_valid_authority(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 260
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_validation_and_port_stripping() {
        assert!(is_valid_authority("app.example.gouv.fr:8443"));
        assert!(!is_valid_authority("evil.fr/x"));
        assert!(!is_valid_authority("a@b"));
        assert_eq!(strip_port("app.example.fr:8080"), "app.example.fr");
        assert_eq!(strip_port("[::1]:8080"), "::1");
    }
}
