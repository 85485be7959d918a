//! Route selection: host (exact or `*.suffix`) then longest path prefix, on the normalised path.

mod path;

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
    case: PathCase,
}

/// How the upstreams compare paths. IIS and ASP.NET read `/ADMIN` as `/admin`: behind them, a
/// case-sensitive match would send `/ADMIN` to a public `/` route while the app serves its `/admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathCase {
    #[default]
    Sensitive,
    /// ASCII letters compared without case (percent-escapes are upper-cased by normalisation already).
    Insensitive,
}

impl RouteTable {
    pub fn new(mut routes: Vec<RouteConfig>, case: PathCase) -> Self {
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
            case,
        }
    }

    /// The route with this configuration index (`RouteConfig::index`).
    pub fn get(&self, index: usize) -> Option<&RouteConfig> {
        self.positions.get(index).and_then(|p| self.routes.get(*p))
    }

    /// `host` lower-case without port; `path` in its matching form.
    pub fn find(&self, host: &str, path: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| {
            r.host.as_ref().is_none_or(|h| h.matches(host))
                && prefix_matches(&r.path, path, self.case)
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
fn prefix_matches(prefix: &str, path: &str, case: PathCase) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = match case {
        PathCase::Sensitive => head == prefix,
        PathCase::Insensitive => head.eq_ignore_ascii_case(prefix),
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
            auth: AuthMode::Required,
            providers: vec![],
            scopes: Default::default(),
            headers: vec![],
            header_encoding: HeaderEncoding::Percent,
            health_check: None,
            acr: None,
            require: Default::default(),
            hints: Default::default(),
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
            PathCase::Sensitive,
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
    fn case_insensitive_upstreams_get_case_insensitive_matching() {
        let routes = || vec![route(0, None, "/"), route(1, None, "/Admin")];
        let sensitive = RouteTable::new(routes(), PathCase::Sensitive);
        assert_eq!(sensitive.find("x", "/ADMIN/users").unwrap().index, 0);
        let insensitive = RouteTable::new(routes(), PathCase::Insensitive);
        for path in ["/admin", "/ADMIN/users", "/aDmIn/", "/Admin"] {
            assert_eq!(insensitive.find("x", path).unwrap().index, 1, "{path}");
        }
        assert_eq!(insensitive.find("x", "/ADMINISTRATION").unwrap().index, 0);
        assert_eq!(insensitive.find("x", "/adm").unwrap().index, 0);
    }

    #[test]
    fn host_rules_take_precedence() {
        let t = RouteTable::new(
            vec![
                route(0, None, "/"),
                route(1, Some("*.example.gouv.fr"), "/"),
                route(2, Some("app.example.gouv.fr"), "/"),
            ],
            PathCase::Sensitive,
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
