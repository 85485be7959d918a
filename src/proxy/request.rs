//! Facts about the incoming request, read once and believed only as far as they can be.

use crate::config::ServerConfig;
use crate::routes::{normalise_path, Authority, HostError, NormalisedPath, PathError};
use crate::session::cookies::parse_cookie_header;
use pingora::http::RequestHeader;
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
    #[error("request without a Host header")]
    MissingHost,
    #[error("several Host headers")]
    SeveralHosts,
    #[error("{0}")]
    Host(#[from] HostError),
    /// `X-Forwarded-Host` from a trusted proxy on several lines or as a list: which one to route on would
    /// be a guess.
    #[error("several X-Forwarded-Host values")]
    SeveralForwardedHosts,
    /// The absolute-form target names another host than `Host`.
    #[error("the request target and the Host header name different hosts")]
    HostMismatch,
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::HeadersTooLarge(_) => 431,
            _ => 400,
        }
    }

    /// Whether the host, rather than the path or the size, was what could not be read.
    pub fn is_host(&self) -> bool {
        matches!(
            self,
            Refused::MissingHost
                | Refused::SeveralHosts
                | Refused::Host(_)
                | Refused::SeveralForwardedHosts
                | Refused::HostMismatch
        )
    }
}

// Looked up by name already parsed: a `&str` name is parsed again on every lookup.
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");
const X_REQUESTED_WITH: http::HeaderName = http::HeaderName::from_static("x-requested-with");

pub struct RequestInfo {
    pub peer: Option<IpAddr>,
    /// The peer is a configured trusted proxy: its X-Forwarded-* headers are believed.
    pub trusted: bool,
    /// The browser reached us over https (directly or through a trusted TLS-terminating proxy).
    pub secure: bool,
    /// The normalised authority the request is routed on, and sent upstream as `Host`.
    pub authority: Authority,
    pub path: NormalisedPath,
    /// The query as received, bytes outside ASCII percent-encoded.
    pub query: Option<String>,
    pub navigation: bool,
    pub cookies: Vec<(String, String)>,
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
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = peer.is_some_and(|ip| server.is_trusted_proxy(ip));
        let header = |name: &http::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let authority = read_authority(req, server, trusted)?;
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let forwarded_proto = if trusted {
            header(&X_FORWARDED_PROTO).map(|p| p.eq_ignore_ascii_case("https"))
        } else {
            None
        };
        let secure = match &server.public_url {
            Some(url) => url.https,
            None => forwarded_proto.unwrap_or(tls),
        };
        if !req.raw_path_is_utf8() {
            return Err(Refused::Path(PathError::ForbiddenByte));
        }
        let path = normalise_path(req.uri.path())?;
        let query = match query_bytes(req.raw_path()) {
            Some(q) => Some(escape_query(q)?),
            None => None,
        };
        let method = &req.method;
        let fetch_mode = header(&SEC_FETCH_MODE);
        let accepts_html = header(&http::header::ACCEPT).is_some_and(|a| a.contains("text/html"));
        let xhr =
            header(&X_REQUESTED_WITH).is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
        let navigation = (method == http::Method::GET || method == http::Method::HEAD)
            && !xhr
            && match fetch_mode {
                Some(mode) => mode == "navigate",
                None => accepts_html,
            };
        let cookies =
            parse_cookie_header(req.headers.get_all("cookie").iter().map(|v| v.as_bytes()));
        Ok(RequestInfo {
            peer,
            trusted,
            secure,
            authority,
            path,
            query,
            navigation,
            cookies,
        })
    }

    /// The host routes are matched on.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The path and query as the browser asked for them, normalised: where to come back after login.
    pub fn return_to(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path.forward, q),
            None => self.path.forward.clone(),
        }
    }

    /// Whether the target as received is already `path?query` in normalised form, in the text pingora
    /// writes upstream and in its parsed URI alike: then it is sent as it is, byte for byte what
    /// rewriting it would send. An absolute-form target never is (it carries an authority).
    pub fn target_is_normalised(&self, req: &RequestHeader) -> bool {
        let raw = req.raw_path();
        let Some(rest) = raw.strip_prefix(self.path.forward.as_bytes()) else {
            return false;
        };
        let same_query = match &self.query {
            None => rest.is_empty(),
            Some(q) => rest.first() == Some(&b'?') && &rest[1..] == q.as_bytes(),
        };
        same_query
            && req.uri.authority().is_none()
            && req
                .uri
                .path_and_query()
                .is_some_and(|pq| pq.as_str().as_bytes() == raw)
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

/// The one authority of this request: a trusted proxy's `X-Forwarded-Host`, else HTTP/2's `:authority`
/// or the absolute-form target's, else `Host`. Two sources that disagree, or one given twice, are refused, never chosen from.
fn read_authority(
    req: &RequestHeader,
    server: &ServerConfig,
    trusted: bool,
) -> Result<Authority, Refused> {
    let hosts = req.headers.get_all(http::header::HOST);
    let mut host_lines = hosts.iter();
    let host = match (host_lines.next(), host_lines.next()) {
        (_, Some(_)) => return Err(Refused::SeveralHosts),
        (None, _) if req.version == http::Version::HTTP_11 => return Err(Refused::MissingHost),
        (one, None) => one,
    };
    if trusted {
        let forwarded = req.headers.get_all("x-forwarded-host");
        let mut lines = forwarded.iter();
        match (lines.next(), lines.next()) {
            (Some(_), Some(_)) => return Err(Refused::SeveralForwardedHosts),
            (Some(value), None) if value.as_bytes().contains(&b',') => {
                return Err(Refused::SeveralForwardedHosts)
            }
            (Some(value), None) => return Ok(Authority::parse(value.as_bytes())?),
            (None, _) => {}
        }
    }
    let host = host.map(|h| Authority::parse(h.as_bytes())).transpose()?;
    // HTTP/2 names the host in `:authority` (RFC 9113 §8.3.1), which `Host` may repeat but not contradict;
    // HTTP/1.1 in an absolute-form target.
    let h2 = req.version == http::Version::HTTP_2;
    let target = match h2 {
        true => req.uri.authority().map(|a| a.as_str().as_bytes()),
        false => absolute_form_authority(req.raw_path()),
    };
    if let Some(target) = target {
        let target = Authority::parse(target)?;
        return match host {
            Some(host) if host != target => Err(Refused::HostMismatch),
            _ => Ok(target),
        };
    }
    match host {
        Some(host) => Ok(host),
        None if h2 => Err(Refused::MissingHost),
        // RFC 9112 §3.2 makes Host mandatory from HTTP/1.1 on; an HTTP/1.0 client without it is at the
        // public URL's site when there is one, and refused otherwise rather than routed on a guess.
        None if req.version != http::Version::HTTP_11 => match &server.public_url {
            Some(url) => Ok(Authority::parse(url.authority.as_bytes())?),
            None => Err(Refused::MissingHost),
        },
        None => Err(Refused::MissingHost),
    }
}

/// The authority of an absolute-form target (`http://host:port/path`), if the target is one.
fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if scheme.is_empty() || !scheme.iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The query part of a request target, if any (after the first `?`; a fragment is never sent).
fn query_bytes(target: &[u8]) -> Option<&[u8]> {
    let start = target.iter().position(|b| *b == b'?')?;
    Some(&target[start + 1..])
}

/// A query as a string the upstream and the redirect after login can carry unchanged: bytes outside
/// ASCII and spaces become their `%XX` escape (what a browser would have sent, and what pingora does
/// with a space in the path); control bytes are refused.
pub fn escape_query(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        match b {
            0x00..=0x1f | 0x7f => return Err(PathError::ForbiddenByte),
            b' ' | 0x80..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_and_query_are_found_in_the_raw_target() {
        assert_eq!(
            absolute_form_authority(b"http://b.example:8080/x?y"),
            Some(b"b.example:8080".as_slice())
        );
        assert_eq!(
            absolute_form_authority(b"HTTPS://b.example"),
            Some(b"b.example".as_slice())
        );
        assert_eq!(absolute_form_authority(b"/a://b"), None);
        assert_eq!(query_bytes(b"/a?b=1?c"), Some(b"b=1?c".as_slice()));
        assert_eq!(query_bytes(b"/a"), None);
        assert_eq!(escape_query(b"x=\xe9&y=%41").unwrap(), "x=%E9&y=%41");
        assert!(escape_query(b"x=\x01").is_err());
        assert_eq!(escape_query(b"x= ").unwrap(), "x=%20");
    }

    fn h2_request(uri: &str, hosts: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        req.set_version(http::Version::HTTP_2);
        req.set_uri(uri.parse().unwrap());
        for h in hosts {
            req.append_header("host", *h).unwrap();
        }
        req
    }

    #[test]
    fn http2_is_routed_on_its_authority_and_a_contradicting_host_is_refused() {
        let config = crate::config::parse(
            "[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n[server]\npublic_url = \"https://public.example\"\n[[route]]\nupstream = \"http://127.0.0.1:9\"\nauth = \"public\"\n",
            "t.toml",
        )
        .unwrap();
        let read = |req: &RequestHeader| read_authority(req, &config.server, false);
        let host = |a: Authority| a.host().to_string();
        assert_eq!(
            host(read(&h2_request("https://App.Example/x", &[])).unwrap()),
            "app.example"
        );
        assert_eq!(
            host(read(&h2_request("https://app.example/x", &["app.example"])).unwrap()),
            "app.example"
        );
        assert_eq!(
            read(&h2_request("https://app.example/x", &["other.example"])).unwrap_err(),
            Refused::HostMismatch
        );
        // Neither `:authority` nor Host: refused, never routed on the public URL's host by guess.
        assert_eq!(
            read(&h2_request("/x", &[])).unwrap_err(),
            Refused::MissingHost
        );
    }
}
