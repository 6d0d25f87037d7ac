//! Parsing of resource paths: `/api/v1/...` and `/apis/{group}/{version}/...` into what is
//! addressed (`apiserver/pkg/endpoints/request/requestinfo.go`).

use crate::registry::{Registry, Resource};
use std::sync::Arc;

/// What a resource path names.
pub struct Target {
    pub resource: Arc<Resource>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Resolves a path; `None` when it names no served resource (404).
pub fn parse(registry: &Registry, path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let namespaced_collection =
        |plural: &str| registry.lookup(group, version, plural).filter(|r| r.info().namespaced()).cloned();
    let (resource, namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced_collection(plural).is_some() => {
            (namespaced_collection(plural)?, Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => (registry.lookup(group, version, plural)?.clone(), None, tail),
        [] => return None,
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    if name.as_deref().is_some_and(str::is_empty) {
        return None;
    }
    Some(Target { resource, namespace, name, subresource })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    fn show(registry: &Registry, path: &str) -> Option<String> {
        parse(registry, path).map(|t| {
            format!("{} ns={:?} name={:?} sub={:?}", t.resource.info().plural, t.namespace, t.name, t.subresource)
        })
    }

    #[test]
    fn paths_resolve_as_upstream() {
        let registry = Registry::new(Store::memory(), &Default::default()).expect("default ranges");
        let cases = [
            ("/api/v1/namespaces", Some("namespaces ns=None name=None sub=None")),
            ("/api/v1/namespaces/default", Some("namespaces ns=None name=Some(\"default\") sub=None")),
            (
                "/api/v1/namespaces/default/status",
                Some("namespaces ns=None name=Some(\"default\") sub=Some(\"status\")"),
            ),
            ("/api/v1/namespaces/default/services", Some("services ns=Some(\"default\") name=None sub=None")),
            (
                "/api/v1/namespaces/d/services/x/status",
                Some("services ns=Some(\"d\") name=Some(\"x\") sub=Some(\"status\")"),
            ),
            ("/api/v1/services", Some("services ns=None name=None sub=None")),
            ("/api/v1/nodes/n1", Some("nodes ns=None name=Some(\"n1\") sub=None")),
            (
                "/apis/apps/v1/namespaces/d/deployments/w/scale",
                Some("deployments ns=Some(\"d\") name=Some(\"w\") sub=Some(\"scale\")"),
            ),
            ("/api/v1/foos", None),
            ("/apis/apps/v2/deployments", None),
            ("/api/v1/namespaces/d/services/x/status/extra", None),
        ];
        for (path, want) in cases {
            assert_eq!(show(&registry, path).as_deref(), want, "{path}");
        }
    }
}
