//! HTTP behaviour through the router as a tower service: discovery negotiation, CRUD, errors,
//! tables, subresources and watch streams.

use super::{AppState, router};
use crate::registry::Registry;
use crate::storage::Store;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

async fn app() -> Router {
    let registry = Registry::new(Store::memory(), &Default::default()).expect("default ranges");
    registry.bootstrap().await.expect("bootstrap");
    router(Arc::new(AppState { registry, advertise: "127.0.0.1:6443".into(), pod_logs: None }))
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(b) => Body::from(serde_json::to_vec(&b).expect("json")),
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).expect("request")).await.expect("infallible");
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, content_type, body }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn aggregated_discovery_is_negotiated_per_kubectl_version() {
    let app = app().await;
    let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = call(&app, "GET", "/apis", None, &[("accept", v2beta1)]).await;
    assert_eq!(r.content_type, "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList");
    assert_eq!(r.body["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let both = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = call(&app, "GET", "/api", None, &[("accept", both)]).await;
    assert_eq!(r.content_type, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
    let svc = r.body["items"][0]["versions"][0]["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["resource"] == "services"))
        .cloned()
        .expect("services listed");
    assert_eq!(svc["shortNames"], json!(["svc"]));
    assert_eq!(svc["categories"], json!(["all"]));
    assert_eq!(svc["subresources"][0]["subresource"], "status");
    // Plain JSON still gets legacy discovery.
    let r = call(&app, "GET", "/api", None, &[("accept", "application/json, */*")]).await;
    assert_eq!(r.body["kind"], "APIVersions");
    let r = call(&app, "GET", "/apis/apps/v1", None, &[]).await;
    let names: Vec<&str> =
        r.body["resources"].as_array().expect("list").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"deployments/scale"), "{names:?}");
}

#[tokio::test]
async fn version_is_a_1_33_server() {
    let r = call(&app().await, "GET", "/version", None, &[]).await;
    assert!(r.body["gitVersion"].as_str().expect("gitVersion").starts_with("v1.33."));
    assert_eq!(r.body["minor"], "33");
}

#[tokio::test]
async fn create_get_list_with_selectors_and_metadata() {
    let app = app().await;
    let r = call(&app, "POST", CMS, Some(cm("a", json!({"app": "x"}))), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let m = &r.body["metadata"];
    assert_eq!(r.body["kind"], "ConfigMap");
    assert_eq!(m["namespace"], "default");
    assert!(m["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(m["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let rv: u64 = m["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("numeric rv");
    call(&app, "POST", CMS, Some(cm("b", json!({"app": "y"}))), &[]).await;

    let r = call(&app, "GET", &format!("{CMS}/a"), None, &[]).await;
    assert_eq!(r.body["metadata"]["resourceVersion"], rv.to_string());

    let r = call(&app, "GET", &format!("{CMS}?labelSelector=app%20in%20(x,z)"), None, &[]).await;
    assert_eq!(r.body["kind"], "ConfigMapList");
    let names: Vec<&str> =
        r.body["items"].as_array().expect("items").iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["a"]);
    let r = call(&app, "GET", "/api/v1/configmaps?fieldSelector=metadata.name!=a", None, &[]).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    let r = call(&app, "GET", &format!("{CMS}?fieldSelector=spec.nodeName=x"), None, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["message"], "field label not supported: spec.nodeName");
}

#[tokio::test]
async fn generate_name_and_paging() {
    let app = app().await;
    for _ in 0..5 {
        let obj = json!({"metadata": {"generateName": "gen-"}, "data": {}});
        let r = call(&app, "POST", CMS, Some(obj), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(r.body["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() == 9));
    }
    let mut names = Vec::new();
    let mut uri = format!("{CMS}?limit=2");
    loop {
        let r = call(&app, "GET", &uri, None, &[]).await;
        let items = r.body["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        names.extend(items.iter().filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string)));
        match r.body["metadata"]["continue"].as_str() {
            Some(c) => uri = format!("{CMS}?limit=2&continue={c}"),
            None => break,
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 5);
}

#[tokio::test]
async fn updates_are_optimistic_and_patches_apply() {
    let app = app().await;
    let created = call_ok(&app, "POST", CMS, Some(cm("a", json!({})))).await_default().await;
    let rv = created["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let mut changed = created.clone();
    changed["data"]["k"] = "v2".into();
    let r = call(&app, "PUT", &format!("{CMS}/a"), Some(changed.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.body["metadata"]["resourceVersion"], rv.as_str());
    // The same body again carries the old revision: a conflict.
    let r = call(&app, "PUT", &format!("{CMS}/a"), Some(changed), &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["reason"], "Conflict");
    assert_eq!(
        r.body["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let merge = [("content-type", "application/merge-patch+json")];
    let r = call(&app, "PATCH", &format!("{CMS}/a"), Some(json!({"metadata": {"labels": {"l": "1"}}})), &merge).await;
    assert_eq!(r.body["metadata"]["labels"]["l"], "1");
    let jp = [("content-type", "application/json-patch+json")];
    let r = call(
        &app,
        "PATCH",
        &format!("{CMS}/a"),
        Some(json!([{"op": "replace", "path": "/data/k", "value": "v3"}])),
        &jp,
    )
    .await;
    assert_eq!(r.body["data"]["k"], "v3");
    let r =
        call(&app, "PATCH", &format!("{CMS}/a"), Some(json!([{"op": "test", "path": "/data/k", "value": "no"}])), &jp)
            .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(&app, "PATCH", &format!("{CMS}/a"), Some(json!({})), &[("content-type", "text/plain")]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = call(&app, "PATCH", &format!("{CMS}/missing"), Some(json!({})), &merge).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Patches that name no resourceVersion apply to whatever is current: racing writers make the
/// server start over (`GuaranteedUpdate`), never fail the patch; one naming a stale revision is a
/// Conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_all_apply() {
    let app = app().await;
    call_ok(&app, "POST", CMS, Some(cm("race", json!({})))).await_default().await;
    let merge = [("content-type", "application/merge-patch+json")];
    let patches: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"metadata": {"labels": {format!("l{i}"): "x"}}});
                call(&app, "PATCH", &format!("{CMS}/race"), Some(body), &merge).await
            })
        })
        .collect();
    for (i, p) in patches.into_iter().enumerate() {
        let r = p.await.expect("task");
        assert_eq!(r.status, StatusCode::OK, "patch {i}: {}", r.body);
    }
    let r = call(&app, "GET", &format!("{CMS}/race"), None, &[]).await;
    let labels = r.body["metadata"]["labels"].as_object().map(|l| l.len());
    assert_eq!(labels, Some(32), "every patch applied: {}", r.body);

    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"late": "x"}}});
    let r = call(&app, "PATCH", &format!("{CMS}/race"), Some(stale), &merge).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

/// Shorthand for a call that must succeed.
trait AwaitDefault {
    fn await_default(self) -> impl std::future::Future<Output = Value>;
}

impl<F: std::future::Future<Output = Reply>> AwaitDefault for F {
    async fn await_default(self) -> Value {
        let r = self.await;
        assert!(r.status.is_success(), "{:?}", r.body);
        r.body
    }
}

fn call_ok<'a>(
    app: &'a Router,
    method: &'a str,
    uri: &'a str,
    body: Option<Value>,
) -> impl std::future::Future<Output = Reply> + 'a {
    call(app, method, uri, body, &[])
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let app = app().await;
    let mut obj = cm("f", json!({}));
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    call_ok(&app, "POST", CMS, Some(obj)).await_default().await;
    let r = call_ok(&app, "DELETE", &format!("{CMS}/f"), None).await_default().await;
    assert!(r["metadata"]["deletionTimestamp"].is_string());
    let r = call_ok(&app, "GET", &format!("{CMS}/f"), None).await_default().await;
    assert!(r["metadata"]["deletionTimestamp"].is_string());
    let merge = [("content-type", "application/merge-patch+json")];
    let r = call(&app, "PATCH", &format!("{CMS}/f"), Some(json!({"metadata": {"finalizers": null}})), &merge).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = call_ok(&app, "GET", &format!("{CMS}/f"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_preconditions_and_propagation() {
    let app = app().await;
    call_ok(&app, "POST", CMS, Some(cm("p", json!({})))).await_default().await;
    let r = call(&app, "DELETE", &format!("{CMS}/p"), Some(json!({"preconditions": {"uid": "nope"}})), &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body["message"].as_str().is_some_and(|m| m.contains("Precondition failed: UID in precondition: nope")));
    let r = call(&app, "DELETE", &format!("{CMS}/p"), Some(json!({"propagationPolicy": "Sideways"})), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(&app, "DELETE", &format!("{CMS}/p"), Some(json!({"propagationPolicy": "Foreground"})), &[]).await;
    assert_eq!(r.body["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let r = call(&app, "DELETE", &format!("{CMS}/nope"), None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["message"], "configmaps \"nope\" not found");
}

#[tokio::test]
async fn namespaces_gate_creation() {
    let app = app().await;
    let r = call_ok(&app, "POST", "/api/v1/namespaces/nowhere/configmaps", Some(cm("a", json!({})))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["message"], "namespaces \"nowhere\" not found");
    call_ok(&app, "POST", "/api/v1/namespaces", Some(json!({"metadata": {"name": "t"}}))).await_default().await;
    let r = call_ok(&app, "DELETE", "/api/v1/namespaces/t", None).await_default().await;
    assert_eq!(r["status"]["phase"], "Terminating");
    let r = call_ok(&app, "POST", "/api/v1/namespaces/t/configmaps", Some(cm("a", json!({})))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body["message"],
        "configmaps \"a\" is forbidden: unable to create new content in namespace t because it is being terminated"
    );
    let r = call_ok(&app, "DELETE", "/api/v1/namespaces/default", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["message"], "namespaces \"default\" is forbidden: this namespace may not be deleted");
}

#[tokio::test]
async fn bad_requests_get_upstream_statuses() {
    let app = app().await;
    let r = call_ok(&app, "GET", "/api/v1/foos", None).await;
    assert_eq!((r.status, r.body["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    let r = call_ok(&app, "PUT", CMS, Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let mut wrong = cm("a", json!({}));
    wrong["kind"] = "Secret".into();
    let r = call_ok(&app, "POST", CMS, Some(wrong)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let mut other_ns = cm("a", json!({}));
    other_ns["metadata"]["namespace"] = "kube-system".into();
    let r = call_ok(&app, "POST", CMS, Some(other_ns)).await;
    assert_eq!(
        r.body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let r = call_ok(&app, "POST", CMS, Some(cm("Bad_Name", json!({})))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");
    let r = call_ok(&app, "GET", &format!("{CMS}?labelSelector=a%20in%20b"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call_ok(&app, "GET", &format!("{CMS}?resourceVersion=abc&resourceVersionMatch=NotOlderThan"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(3 * 1024 * 1024 + 1)}});
    let r = call_ok(&app, "POST", CMS, Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let raw = app
        .clone()
        .oneshot(
            Request::post(CMS).header("content-type", "application/json").body(Body::from("{not json")).expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    // Nothing of the above was stored.
    let r = call_ok(&app, "GET", CMS, None).await;
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn tables_for_kubectl_get() {
    let app = app().await;
    call_ok(&app, "POST", CMS, Some(cm("a", json!({"app": "x"})))).await_default().await;
    let accept = [(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    )];
    let r = call(&app, "GET", CMS, None, &accept).await;
    assert_eq!(r.body["kind"], "Table");
    assert_eq!(r.body["columnDefinitions"][0]["name"], "Name");
    assert_eq!(r.body["rows"][0]["cells"][0], "a");
    assert_eq!(r.body["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(r.body["rows"][0]["object"]["metadata"]["labels"]["app"], "x");
    assert!(r.body["metadata"]["resourceVersion"].is_string());
    let r = call(&app, "GET", &format!("{CMS}?includeObject=Object"), None, &accept).await;
    assert_eq!(r.body["rows"][0]["object"]["data"]["k"], "v");
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let app = app().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        "status": {"replicas": 99}});
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let created = call_ok(&app, "POST", base, Some(deploy)).await_default().await;
    assert_eq!(created["status"], json!({}), "status is cleared on create");
    assert_eq!(created["metadata"]["generation"], 1);
    let scale = call_ok(&app, "GET", &format!("{base}/web/scale"), None).await_default().await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let merge = [("content-type", "application/merge-patch+json")];
    let r = call(&app, "PATCH", &format!("{base}/web/scale"), Some(json!({"spec": {"replicas": 5}})), &merge).await;
    assert_eq!(r.body["spec"]["replicas"], 5, "{:?}", r.body);
    let d = call_ok(&app, "GET", &format!("{base}/web"), None).await_default().await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    // A status write changes only the status.
    let mut s = d.clone();
    s["status"] = json!({"replicas": 5});
    s["spec"]["replicas"] = 1.into();
    let r = call_ok(&app, "PUT", &format!("{base}/web/status"), Some(s)).await_default().await;
    assert_eq!((r["status"]["replicas"].as_i64(), r["spec"]["replicas"].as_i64()), (Some(5), Some(5)));
    assert_eq!(r["metadata"]["generation"], 2);
    let r = call_ok(&app, "GET", "/api/v1/namespaces/default/configmaps/x/scale", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Reads watch events from a streaming response until `n` have arrived.
async fn watch_events(app: &Router, uri: &str, n: usize) -> Vec<Value> {
    let resp = app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("req")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while events.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("events arrive in time");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.expect("frame").into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).expect("event json"));
        }
    }
    events
}

#[tokio::test]
async fn watches_resume_after_a_revision_and_filter() {
    let app = app().await;
    let a = call_ok(&app, "POST", CMS, Some(cm("a", json!({"app": "x"})))).await_default().await;
    let rv = a["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let watcher = {
        let app = app.clone();
        let uri = format!("{CMS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx");
        tokio::spawn(async move { watch_events(&app, &uri, 3).await })
    };
    tokio::task::yield_now().await;
    call_ok(&app, "POST", CMS, Some(cm("b", json!({"app": "x"})))).await_default().await;
    call_ok(&app, "POST", CMS, Some(cm("c", json!({"app": "other"})))).await_default().await;
    let merge = [("content-type", "application/merge-patch+json")];
    // `a` stops matching: the watcher sees it deleted.
    call(&app, "PATCH", &format!("{CMS}/a"), Some(json!({"metadata": {"labels": {"app": "y"}}})), &merge).await;
    call_ok(&app, "DELETE", &format!("{CMS}/b"), None).await_default().await;
    let events = watcher.await.expect("watcher");
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (e["type"].as_str().unwrap_or("").into(), e["object"]["metadata"]["name"].as_str().unwrap_or("").into())
        })
        .collect();
    assert_eq!(seen, [("ADDED".into(), "b".into()), ("DELETED".into(), "a".into()), ("DELETED".into(), "b".into())]);
}

#[tokio::test]
async fn watch_from_zero_sends_state_then_initial_events_end() {
    let app = app().await;
    call_ok(&app, "POST", CMS, Some(cm("a", json!({})))).await_default().await;
    let events = watch_events(&app, &format!("{CMS}?watch=1&resourceVersion=0"), 1).await;
    assert_eq!(events[0]["type"], "ADDED");
    let uri =
        format!("{CMS}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan");
    let events = watch_events(&app, &uri, 2).await;
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    // timeoutSeconds ends the stream.
    let events = watch_events(&app, &format!("{CMS}?watch=1&resourceVersion=0&timeoutSeconds=1"), 2).await;
    assert_eq!(events.len(), 1, "the stream closed after the timeout with one event");
}

#[tokio::test]
async fn watch_tables_carry_columns_once() {
    let app = app().await;
    call_ok(&app, "POST", CMS, Some(cm("a", json!({})))).await_default().await;
    call_ok(&app, "POST", CMS, Some(cm("b", json!({})))).await_default().await;
    let resp = app
        .clone()
        .oneshot(
            Request::get(format!("{CMS}?watch=true&resourceVersion=0"))
                .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while text.iter().filter(|b| **b == b'\n').count() < 2 {
        let frame = body.frame().await.expect("open").expect("frame");
        text.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    let lines: Vec<Value> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["object"]["kind"], "Table");
    assert!(lines[0]["object"]["columnDefinitions"].is_array());
    assert!(lines[1]["object"].get("columnDefinitions").is_none());
    assert_eq!(lines[1]["object"]["rows"][0]["cells"][0], "b");
}
