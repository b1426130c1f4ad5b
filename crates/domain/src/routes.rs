//! The scopes each route of the Velocity API needs, for checks made in
//! front of services (Envoy ext_authz, forward-auth) when the proxy does
//! not say: a table of (method, path prefix) → scopes, read from the
//! operator's JSON file at start.
//!
//! The most specific entry wins: the longest path prefix, matched by whole
//! segments (`/api/issues` covers `/api/issues` and `/api/issues/42`, not
//! `/api/issuesx`), and at equal length an entry for the method over one
//! for any method. A path no entry covers needs no scope, only a valid
//! credential.

use serde::Deserialize;

use crate::error::Error;
use crate::scope::ScopeSet;

/// Entries a table may hold; a route table is a page, not a database.
pub const MAX_ROUTES: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct RouteScopes {
    routes: Vec<Route>,
}

#[derive(Clone, Debug)]
struct Route {
    /// Upper case; `None` for any method.
    method: Option<String>,
    /// Without a trailing slash (the root is "").
    prefix: String,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    #[serde(default)]
    method: Option<String>,
    path: String,
    scopes: Vec<String>,
}

impl RouteScopes {
    /// Parses and checks a table: every scope a known name, no two entries
    /// for the same method and path.
    pub fn from_json(text: &str) -> Result<RouteScopes, Error> {
        let entries: Vec<RouteEntry> = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "the route table is not a JSON list of {{method?, path, scopes}}: {e}"
            ))
        })?;
        if entries.len() > MAX_ROUTES {
            return Err(Error::invalid(format!(
                "the route table has more than {MAX_ROUTES} entries"
            )));
        }
        let mut routes: Vec<Route> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            if !entry.path.starts_with('/') {
                return Err(Error::invalid(format!(
                    "route {i}: the path must start with '/'"
                )));
            }
            ScopeSet::parse(entry.scopes.iter().map(String::as_str))
                .map_err(|e| Error::invalid(format!("route {i}: {e}")))?;
            let route = Route {
                method: entry
                    .method
                    .map(|m| m.trim().to_ascii_uppercase())
                    .filter(|m| !m.is_empty() && m != "*"),
                prefix: entry.path.trim_end_matches('/').to_owned(),
                scopes: entry.scopes,
            };
            if let Some(j) = routes
                .iter()
                .position(|r| r.method == route.method && r.prefix == route.prefix)
            {
                return Err(Error::invalid(format!(
                    "route {i}: the same method and path as route {j}"
                )));
            }
            routes.push(route);
        }
        Ok(RouteScopes { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The scopes `method path` needs (the query string, if any, ignored).
    pub fn scopes_for(&self, method: &str, path: &str) -> &[String] {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        self.routes
            .iter()
            .filter(|r| {
                r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
            })
            .filter(|r| covers(&r.prefix, path))
            .max_by_key(|r| (r.prefix.len(), r.method.is_some()))
            .map_or(&[], |r| r.scopes.as_slice())
    }
}

/// Whether `prefix` covers `path` by whole segments.
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"[
        {"path": "/api/issues", "scopes": ["issues:read"]},
        {"method": "POST", "path": "/api/issues", "scopes": ["issues:write"]},
        {"method": "delete", "path": "/api/issues/", "scopes": ["issues:write"]},
        {"path": "/api/issues/export", "scopes": ["issues:read", "workspace:read"]},
        {"method": "*", "path": "/api/projects", "scopes": ["projects:read"]}
    ]"#;

    #[test]
    fn the_most_specific_entry_wins() {
        let table = RouteScopes::from_json(TABLE).unwrap();
        let scopes = |m, p| table.scopes_for(m, p).join(" ");
        assert_eq!(scopes("GET", "/api/issues"), "issues:read");
        assert_eq!(scopes("GET", "/api/issues/42?x=1"), "issues:read");
        assert_eq!(scopes("POST", "/api/issues"), "issues:write");
        assert_eq!(scopes("post", "/api/issues/42"), "issues:write");
        assert_eq!(scopes("DELETE", "/api/issues/42"), "issues:write");
        assert_eq!(
            scopes("POST", "/api/issues/export/all"),
            "issues:read workspace:read",
            "a longer prefix wins over a method match"
        );
        assert_eq!(scopes("GET", "/api/projects/7"), "projects:read");
        assert_eq!(scopes("GET", "/api/issuesx"), "", "whole segments only");
        assert_eq!(scopes("GET", "/"), "");
        assert!(RouteScopes::default().scopes_for("GET", "/api").is_empty());
    }

    #[test]
    fn bad_tables_are_refused() {
        for (bad, why) in [
            ("{}", "not a list"),
            (r#"[{"path": "api", "scopes": []}]"#, "relative path"),
            (
                r#"[{"path": "/a", "scopes": ["issues:fly"]}]"#,
                "unknown scope",
            ),
            (
                r#"[{"path": "/a", "scopes": [], "verb": "GET"}]"#,
                "unknown field",
            ),
            (
                r#"[{"path": "/a", "scopes": []}, {"path": "/a/", "scopes": []}]"#,
                "duplicate",
            ),
        ] {
            assert!(RouteScopes::from_json(bad).is_err(), "{why}");
        }
        let huge = format!(
            "[{}]",
            (0..=MAX_ROUTES)
                .map(|i| format!(r#"{{"path": "/r{i}", "scopes": []}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(RouteScopes::from_json(&huge).is_err());
    }
}
