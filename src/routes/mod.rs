//! Route selection: host (exact or `*.suffix`) then longest path prefix, on the normalised path.

mod host;
mod path;

pub use host::{normalise_host_name, Authority, HostError};
pub use path::{normalise_path, NormalisedPath, PathError};

use crate::config::RouteConfig;

/// Validates and normalises a route's `path` prefix from the configuration.
pub fn normalise_route_prefix(text: &str) -> Result<String, String> {
    let normalised = normalise_path(text).map_err(|e| format!("`{text}`: {e}"))?;
    if normalised.forward != normalised.matching || text.contains('%') {
        return Err(format!(
            "`{text}`: a route prefix is a plain path (no `;` or `%`)"
        ));
    }
    let trimmed = normalised.forward.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// Routes in matching order: host-specific routes before host-less ones, then longest prefix first.
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    /// `positions[route.index]` is where that route sits in `routes`, for lookups by config index.
    positions: Vec<usize>,
    reading: PathReading,
}

/// How the upstreams read a path. IIS and ASP.NET read `/ADMIN`, `/admin.` and `/admin%20` as
/// `/admin`: behind them, an exact match would send those to a public `/` route while the app serves
/// its `/admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathReading {
    /// Byte for byte (servlet containers, PHP, most Linux servers).
    #[default]
    Exact,
    /// The Windows way: route prefixes compared without case, and segments Windows would read as another
    /// name (trailing dot or space, `::$DATA` streams, `~1` short names) match no route at all.
    Windows,
}

/// Spellings Windows resolves to another name: `admin.`, `admin%20`, `admin::$DATA`, `ADMINI~1`.
fn windows_ambiguous(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment.ends_with('.')
            || segment.ends_with("%20")
            || segment.contains(':')
            || segment.contains("%3A")
            || segment
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'~' && w[1].is_ascii_digit())
    })
}

impl RouteTable {
    pub fn new(mut routes: Vec<RouteConfig>, reading: PathReading) -> Self {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(host_specificity(b).cmp(&host_specificity(a)))
                .then(b.path.len().cmp(&a.path.len()))
        });
        let mut positions = vec![0; routes.iter().map(|r| r.index + 1).max().unwrap_or(0)];
        for (position, route) in routes.iter().enumerate() {
            positions[route.index] = position;
        }
        RouteTable {
            routes,
            positions,
            reading,
        }
    }

    /// The route with this configuration index (`RouteConfig::index`).
    pub fn get(&self, index: usize) -> Option<&RouteConfig> {
        self.positions.get(index).and_then(|p| self.routes.get(*p))
    }

    /// `host` lower-case without port; `path` in its matching form. `None` also for a path the
    /// upstreams would read as another one.
    pub fn find(&self, host: &str, path: &str) -> Option<&RouteConfig> {
        if self.reading == PathReading::Windows && windows_ambiguous(path) {
            return None;
        }
        self.routes.iter().find(|r| {
            r.host.as_ref().is_none_or(|h| h.matches(host))
                && prefix_matches(&r.path, path, self.reading)
        })
    }

    pub fn all(&self) -> &[RouteConfig] {
        &self.routes
    }
}

fn host_specificity(route: &RouteConfig) -> usize {
    use crate::config::HostPattern;
    match &route.host {
        Some(HostPattern::Exact(h)) => 1000 + h.len(),
        Some(HostPattern::Subdomains(s)) => s.len(),
        None => 0,
    }
}

/// `/app` matches `/app`, `/app/` and `/app/x`, never `/application`.
fn prefix_matches(prefix: &str, path: &str, reading: PathReading) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = match reading {
        PathReading::Exact => head == prefix,
        PathReading::Windows => head.eq_ignore_ascii_case(prefix),
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, HeaderEncoding, HostPattern};

    fn route(index: usize, host: Option<&str>, path: &str) -> RouteConfig {
        RouteConfig {
            index,
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            path: normalise_route_prefix(path).unwrap(),
            upstreams: vec![],
            upstream_tls: Default::default(),
            upstream_h2: false,
            client_certificate_required: false,
            assertion: None,
            auth: AuthMode::Required,
            providers: vec![],
            scopes: Default::default(),
            headers: vec![],
            header_encoding: HeaderEncoding::Percent,
            health_check: None,
            acr: None,
            require: Default::default(),
            hints: Default::default(),
            cors_allow_preflight: false,
            purpose: None,
            cache: Default::default(),
        }
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = RouteTable::new(
            vec![
                route(0, None, "/"),
                route(1, None, "/app"),
                route(2, None, "/app/admin/"),
            ],
            PathReading::Exact,
        );
        assert_eq!(t.find("x", "/").unwrap().index, 0);
        assert_eq!(t.find("x", "/app").unwrap().index, 1);
        assert_eq!(t.find("x", "/app/").unwrap().index, 1);
        assert_eq!(t.find("x", "/application").unwrap().index, 0);
        assert_eq!(t.find("x", "/app/admin").unwrap().index, 2);
        assert_eq!(t.find("x", "/app/admin/users").unwrap().index, 2);
        assert_eq!(t.find("x", "/app/administration").unwrap().index, 1);
        assert_eq!(t.get(2).unwrap().path, "/app/admin");
        assert!(t.get(3).is_none());
    }

    #[test]
    fn windows_upstreams_get_windows_matching() {
        let routes = || vec![route(0, None, "/"), route(1, None, "/Admin")];
        let exact = RouteTable::new(routes(), PathReading::Exact);
        assert_eq!(exact.find("x", "/ADMIN/users").unwrap().index, 0);
        assert_eq!(exact.find("x", "/admin./users").unwrap().index, 0);
        let windows = RouteTable::new(routes(), PathReading::Windows);
        for path in ["/admin", "/ADMIN/users", "/aDmIn/", "/Admin"] {
            assert_eq!(windows.find("x", path).unwrap().index, 1, "{path}");
        }
        assert_eq!(windows.find("x", "/ADMINISTRATION").unwrap().index, 0);
        assert_eq!(windows.find("x", "/adm").unwrap().index, 0);
        assert_eq!(windows.find("x", "/file.txt").unwrap().index, 0);
        for ambiguous in [
            "/admin./users",
            "/admin%20/users",
            "/admin::$DATA",
            "/ADMINI~1/users",
            "/x/y.",
        ] {
            assert!(windows.find("x", ambiguous).is_none(), "{ambiguous}");
        }
    }

    #[test]
    fn host_rules_take_precedence() {
        let t = RouteTable::new(
            vec![
                route(0, None, "/"),
                route(1, Some("*.example.gouv.fr"), "/"),
                route(2, Some("app.example.gouv.fr"), "/"),
            ],
            PathReading::Exact,
        );
        assert_eq!(t.find("app.example.gouv.fr", "/x").unwrap().index, 2);
        assert_eq!(t.find("autre.example.gouv.fr", "/x").unwrap().index, 1);
        assert_eq!(t.find("example.gouv.fr", "/x").unwrap().index, 0);
        assert_eq!(t.find("evilexample.gouv.fr", "/x").unwrap().index, 0);
    }

    #[test]
    fn route_prefixes_are_normalised_or_refused() {
        assert_eq!(normalise_route_prefix("/app/").unwrap(), "/app");
        assert_eq!(normalise_route_prefix("/").unwrap(), "/");
        assert!(normalise_route_prefix("/a;b").is_err());
        assert!(normalise_route_prefix("app").is_err());
        assert!(normalise_route_prefix("/a%2e").is_err());
    }
}
