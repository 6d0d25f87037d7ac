//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`, legacy and aggregated `v2`/`v2beta1`),
//! `/version`, and the OpenAPI documents kubectl fetches before validating writes.

use super::AppState;
use super::codec::json_response;
use super::resource::not_found;
use crate::registry::{ResourceInfo, Subresource};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// The Kubernetes release kplane's API matches (the kubectl dispatcher picks its kubectl by it).
pub const KUBE_MINOR: &str = "33";
pub const KUBE_VERSION: &str = "v1.33.1";

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBE_MINOR,
            "gitVersion": format!("{KUBE_VERSION}+kplane.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, goarch()),
        }),
    )
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which aggregated discovery version the client accepts, first offered first.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    accept.split(',').find_map(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        if !params.contains(&"g=apidiscovery.k8s.io") || !params.contains(&"as=APIGroupDiscoveryList") {
            return None;
        }
        if params.contains(&"v=v2") {
            Some("v2")
        } else if params.contains(&"v=v2beta1") {
            Some("v2beta1")
        } else {
            None
        }
    })
}

fn aggregated(version: &str, items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let mut resp = json_response(StatusCode::OK, &body);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// The groups served, in registration order, each with its kinds.
fn groups(state: &AppState) -> Vec<(&'static str, &'static str, Vec<&'static ResourceInfo>)> {
    let mut out: Vec<(&'static str, &'static str, Vec<&'static ResourceInfo>)> = Vec::new();
    for r in state.registry.resources() {
        let i = r.info();
        match out.iter_mut().find(|(g, v, _)| *g == i.group && *v == i.version) {
            Some((_, _, kinds)) => kinds.push(i),
            None => out.push((i.group, i.version, vec![i])),
        }
    }
    out
}

fn aggregated_group(name: &str, version: &str, kinds: &[&ResourceInfo]) -> Value {
    let resources: Vec<Value> = kinds
        .iter()
        .map(|i| {
            let gvk = json!({"group": i.group, "version": i.version, "kind": i.kind});
            let mut r = json!({
                "resource": i.plural,
                "responseKind": gvk,
                "scope": if i.namespaced() { "Namespaced" } else { "Cluster" },
                "singularResource": i.singular,
                "verbs": VERBS,
            });
            if !i.short_names.is_empty() {
                r["shortNames"] = json!(i.short_names);
            }
            if !i.categories.is_empty() {
                r["categories"] = json!(i.categories);
            }
            if !i.subresources.is_empty() {
                r["subresources"] = i.subresources.iter().map(|s| aggregated_subresource(i, *s)).collect();
            }
            r
        })
        .collect();
    json!({"metadata": {"name": name}, "versions": [{"version": version, "resources": resources, "freshness": "Current"}]})
}

fn aggregated_subresource(i: &ResourceInfo, s: Subresource) -> Value {
    let (group, version, kind) = s.response_kind().unwrap_or((i.group, i.version, i.kind));
    let kind = json!({"group": group, "version": version, "kind": kind});
    json!({"subresource": s.name(), "responseKind": kind, "verbs": s.verbs()})
}

pub async fn api(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated_version(&headers) {
        let items = groups(&state)
            .into_iter()
            .filter(|(g, _, _)| g.is_empty())
            .map(|(_, v, k)| aggregated_group("", v, &k))
            .collect();
        return aggregated(v, items);
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise.clone()}
        ]}),
    )
}

pub async fn apis(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let named: Vec<_> = groups(&state).into_iter().filter(|(g, _, _)| !g.is_empty()).collect();
    if let Some(v) = aggregated_version(&headers) {
        return aggregated(v, named.iter().map(|(g, v, k)| aggregated_group(g, v, k)).collect());
    }
    let groups: Vec<Value> = named
        .iter()
        .map(|(g, v, _)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv], "preferredVersion": gv})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn resource_list(group_version: &str, kinds: &[&ResourceInfo]) -> Value {
    let mut resources = Vec::new();
    for i in kinds {
        let mut r = json!({
            "name": i.plural,
            "singularName": i.singular,
            "namespaced": i.namespaced(),
            "kind": i.kind,
            "verbs": VERBS,
        });
        if !i.short_names.is_empty() {
            r["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            r["categories"] = json!(i.categories);
        }
        resources.push(r);
        for s in i.subresources {
            let response = s.response_kind();
            let mut r = json!({
                "name": format!("{}/{}", i.plural, s.name()),
                "singularName": "",
                "namespaced": i.namespaced(),
                "kind": response.map_or(i.kind, |(_, _, k)| k),
                "verbs": s.verbs(),
            });
            // Only a kind of another group names it (`APIResource.group`/`version`).
            if let Some((g, v, _)) = response.filter(|(g, _, _)| *g != i.group) {
                r["group"] = g.into();
                r["version"] = v.into();
            }
            resources.push(r);
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

pub async fn core_v1(State(state): State<Arc<AppState>>) -> Response {
    match groups(&state).into_iter().find(|(g, v, _)| g.is_empty() && *v == "v1") {
        Some((_, _, kinds)) => json_response(StatusCode::OK, &resource_list("v1", &kinds)),
        None => not_found().into_response(),
    }
}

pub async fn group(State(state): State<Arc<AppState>>, Path(group): Path<String>) -> Response {
    match groups(&state).into_iter().find(|(g, _, _)| *g == group) {
        Some((g, v, _)) => {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv], "preferredVersion": gv}),
            )
        }
        None => not_found().into_response(),
    }
}

pub async fn group_version(
    State(state): State<Arc<AppState>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    match groups(&state).into_iter().find(|(g, v, _)| *g == group && *v == version) {
        Some((g, v, kinds)) => json_response(StatusCode::OK, &resource_list(&format!("{g}/{v}"), &kinds)),
        None => not_found().into_response(),
    }
}

/// `/openapi/v2`: the smallest document kubectl accepts (gnostic `Document{swagger:"2.0"}` in
/// protobuf), so validating commands (`create -f`, `apply`) proceed; full schemas come later.
pub async fn openapi_v2() -> Response {
    let mut resp = (StatusCode::OK, vec![0x0a, 0x03, b'2', b'.', b'0']).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
    );
    resp
}
