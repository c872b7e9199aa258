//! Request paths to routes. Pure: no IO, so every shape of path is unit-tested.

use http::{Method, Uri};
use muster_api::registry::{self, ResourceType};

/// A request for objects of one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Came in through the legacy `/watch/` prefix.
    pub legacy_watch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/healthz`, `/livez`, `/readyz`, optionally with a check name (`/readyz/ping`).
    Health {
        kind: &'static str,
        check: Option<String>,
    },
    Metrics,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV3Index,
    OpenApiV3 {
        group: String,
        version: String,
    },
    OpenApiV2,
    Resource(ResourcePath),
    NotFound,
}

impl Route {
    /// Kubernetes serves health and version to anonymous clients too.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Route::Version | Route::Health { .. })
    }
}

/// A path segment must be a plausible object name: never empty, never `.`/`..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".."
}

pub fn parse(path: &str) -> Route {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        [kind @ ("healthz" | "livez" | "readyz")] => Route::Health {
            kind: static_health(kind),
            check: None,
        },
        [kind @ ("healthz" | "livez" | "readyz"), check] => Route::Health {
            kind: static_health(kind),
            check: Some(check.to_string()),
        },
        ["metrics"] => Route::Metrics,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => {
            if registry::group_versions().iter().any(|(g, _)| g == group) {
                Route::Group(group.to_string())
            } else {
                Route::NotFound
            }
        }
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", "api", version] => Route::OpenApiV3 {
            group: String::new(),
            version: version.to_string(),
        },
        ["openapi", "v3", "apis", group, version] => Route::OpenApiV3 {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["openapi", "v2"] => Route::OpenApiV2,
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Route::NotFound,
    }
}

fn static_health(kind: &str) -> &'static str {
    match kind {
        "healthz" => "healthz",
        "livez" => "livez",
        _ => "readyz",
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    if !registry::group_versions()
        .iter()
        .any(|(g, v)| *g == group && *v == version)
    {
        return Route::NotFound;
    }
    if rest.is_empty() {
        return Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        };
    }
    let (legacy_watch, rest) = match rest {
        ["watch", tail @ ..] if !tail.is_empty() => (true, tail),
        _ => (false, rest),
    };
    if !rest.iter().all(|s| valid_segment(s)) {
        return Route::NotFound;
    }
    let find = |plural: &str| registry::find(group, version, plural);
    let make = |rt, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(ResourcePath {
            rt,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
            legacy_watch,
        })
    };
    // `/namespaces/<ns>/<plural>...` is a namespaced resource when <plural> names one;
    // otherwise it is the namespace object itself (`/namespaces/<ns>/status`, `/finalize`).
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(rt) = find(plural).filter(|rt| rt.namespaced)
    {
        return match tail {
            [] => make(rt, Some(ns), None, None),
            [name] => make(rt, Some(ns), Some(name), None),
            [name, sub] if rt.subresource(sub).is_some() && !legacy_watch => {
                make(rt, Some(ns), Some(name), Some(sub))
            }
            _ => Route::NotFound,
        };
    }
    match rest {
        [plural] => match find(plural) {
            // All namespaces (namespaced kinds) or the whole collection (cluster-scoped).
            Some(rt) => make(rt, None, None, None),
            None => Route::NotFound,
        },
        [plural, name] => match find(plural).filter(|rt| !rt.namespaced) {
            Some(rt) => make(rt, None, Some(name), None),
            None => Route::NotFound,
        },
        [plural, name, sub] => match find(plural).filter(|rt| !rt.namespaced) {
            Some(rt) if rt.subresource(sub).is_some() && !legacy_watch => {
                make(rt, None, Some(name), Some(sub))
            }
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// `(resource, verb)` labels for request metrics, bounded in cardinality (no names).
pub fn metric_labels(route: &Route, method: &Method, uri: &Uri) -> (String, String) {
    match route {
        Route::Resource(rp) => {
            let resource = match &rp.subresource {
                Some(sub) => format!("{}/{sub}", rp.rt.qualified_plural()),
                None => rp.rt.qualified_plural(),
            };
            let watch = rp.legacy_watch
                || uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            let verb = match (method.as_str(), rp.name.is_some()) {
                ("GET", _) if watch => "watch",
                ("GET", true) => "get",
                ("GET", false) => "list",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", true) => "delete",
                ("DELETE", false) => "deletecollection",
                _ => "other",
            };
            (resource, verb.to_string())
        }
        Route::NotFound => (String::new(), "other".into()),
        other => {
            let name = match other {
                Route::Version => "version",
                Route::Health { kind, .. } => kind,
                Route::Metrics => "metrics",
                Route::OpenApiV3Index | Route::OpenApiV3 { .. } | Route::OpenApiV2 => "openapi",
                _ => "discovery",
            };
            (name.to_string(), method.as_str().to_ascii_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (group, plural, namespace, name, subresource, legacy watch)
    type Parsed = (
        &'static str,
        &'static str,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
    );

    fn resource(path: &str) -> Option<Parsed> {
        match parse(path) {
            Route::Resource(rp) => Some((
                rp.rt.group,
                rp.rt.plural,
                rp.namespace,
                rp.name,
                rp.subresource,
                rp.legacy_watch,
            )),
            _ => None,
        }
    }

    #[test]
    fn resource_paths() {
        let s = |v: &str| Some(v.to_string());
        let cases = [
            ("/api/v1/pods", Some(("", "pods", None, None, None, false))),
            (
                "/api/v1/namespaces/default/pods",
                Some(("", "pods", s("default"), None, None, false)),
            ),
            (
                "/api/v1/namespaces/default/pods/x/status",
                Some(("", "pods", s("default"), s("x"), s("status"), false)),
            ),
            (
                "/api/v1/namespaces/default/pods/x/log",
                Some(("", "pods", s("default"), s("x"), s("log"), false)),
            ),
            (
                "/api/v1/namespaces",
                Some(("", "namespaces", None, None, None, false)),
            ),
            (
                "/api/v1/namespaces/kube-system",
                Some(("", "namespaces", None, s("kube-system"), None, false)),
            ),
            (
                "/api/v1/namespaces/foo/finalize",
                Some(("", "namespaces", None, s("foo"), s("finalize"), false)),
            ),
            (
                "/api/v1/namespaces/foo/status",
                Some(("", "namespaces", None, s("foo"), s("status"), false)),
            ),
            (
                "/api/v1/nodes/n1",
                Some(("", "nodes", None, s("n1"), None, false)),
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments/nginx/scale",
                Some((
                    "apps",
                    "deployments",
                    s("default"),
                    s("nginx"),
                    s("scale"),
                    false,
                )),
            ),
            (
                "/api/v1/watch/namespaces/default/pods",
                Some(("", "pods", s("default"), None, None, true)),
            ),
            (
                "/apis/events.k8s.io/v1/namespaces/default/events",
                Some(("events.k8s.io", "events", s("default"), None, None, false)),
            ),
            ("/api/v1/namespaces/default/pods/x/nosuch", None),
            ("/api/v1/namespaces/default/configmaps/x/status", None),
            ("/api/v1/foos", None),
            ("/apis/apps/v2/deployments", None),
            ("/api/v1/namespaces/default/nodes/x", None),
            ("/api/v1/pods/x", None),
            ("/api/v1/namespaces/default/pods/..", None),
        ];
        for (path, want) in cases {
            assert_eq!(resource(path), want, "{path}");
        }
    }

    #[test]
    fn other_paths() {
        let cases = [
            ("/version", Route::Version),
            ("/version/", Route::Version),
            ("/api", Route::CoreVersions),
            ("/apis", Route::Groups),
            ("/apis/apps", Route::Group("apps".into())),
            ("/apis/nosuch.io", Route::NotFound),
            (
                "/apis/apps/v1",
                Route::ResourceList {
                    group: "apps".into(),
                    version: "v1".into(),
                },
            ),
            (
                "/api/v1",
                Route::ResourceList {
                    group: String::new(),
                    version: "v1".into(),
                },
            ),
            ("/openapi/v3", Route::OpenApiV3Index),
            (
                "/openapi/v3/apis/apps/v1",
                Route::OpenApiV3 {
                    group: "apps".into(),
                    version: "v1".into(),
                },
            ),
            (
                "/readyz",
                Route::Health {
                    kind: "readyz",
                    check: None,
                },
            ),
            ("/", Route::NotFound),
            ("/nosuch", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path), want, "{path}");
        }
        assert!(parse("/livez").is_anonymous());
        assert!(!parse("/api").is_anonymous());
    }
}
