//! Garbage collection, namespace deletion and pod GC through the API of an in-process cluster
//! (`controllers/src/{garbage_collector,namespace,podgc}.rs`, the namespace `/finalize`
//! subresource). Owners and dependents are made by hand (ConfigMaps owning ConfigMaps, Nodes,
//! pods bound to a node the node agent does not drive), so nothing depends on other controllers.
//! Waits are watches or polls with a deadline.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod};
use kplane::Cluster;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::Status;
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Long enough for anything a healthy in-process cluster does; short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(20);

struct Fx {
    _cluster: Cluster,
    client: kube::Client,
}

impl Fx {
    async fn start() -> Self {
        let cluster = Cluster::start().await.expect("cluster starts");
        let client = cluster.client();
        Self { _cluster: cluster, client }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, Box<Status>> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .header("Accept", "application/json")
            .body(body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default())
            .expect("request");
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(v),
            Err(kube::Error::Api(s)) => Err(s),
            Err(e) => panic!("{method} {path}: transport error {e:?}"),
        }
    }

    async fn must(&self, method: &str, path: &str, body: &Value) -> Value {
        self.send(method, path, Some(body), "application/json")
            .await
            .unwrap_or_else(|s| panic!("{method} {path}: {s:?}"))
    }

    async fn namespace(&self, name: &str) {
        self.must("POST", "/api/v1/namespaces", &json!({"metadata": {"name": name}})).await;
    }

    /// A ConfigMap with the given owner references; returns its UID.
    async fn config_map(&self, ns: &str, name: &str, owners: Value) -> String {
        let body = json!({"metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}});
        let cm = self.must("POST", &format!("/api/v1/namespaces/{ns}/configmaps"), &body).await;
        cm["metadata"]["uid"].as_str().expect("uid").to_string()
    }

    async fn node(&self, name: &str, owners: Value) -> String {
        let body = json!({"metadata": {"name": name, "ownerReferences": owners}});
        let node = self.must("POST", "/api/v1/nodes", &body).await;
        node["metadata"]["uid"].as_str().expect("uid").to_string()
    }

    /// A running pod bound to `node` (status set through `/status`, as a kubelet would).
    async fn pod(&self, ns: &str, name: &str, node: &str, grace: i64) {
        let body = json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "c", "image": "busybox"}]},
        });
        let pod = self.must("POST", &format!("/api/v1/namespaces/{ns}/pods"), &body).await;
        let mut running = pod.clone();
        running["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        self.must("PUT", &format!("/api/v1/namespaces/{ns}/pods/{name}/status"), &running).await;
    }

    fn cms(&self, ns: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn delete_cm(&self, ns: &str, name: &str, policy: Option<PropagationPolicy>) {
        let dp = DeleteParams { propagation_policy: policy, ..Default::default() };
        self.cms(ns).delete(name, &dp).await.expect("delete");
    }
}

fn owner(kind: &str, name: &str, uid: &str, block: bool) -> Value {
    let api_version = "v1";
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block})
}

/// Waits until `cond` holds for the object (or its absence); returns the object then.
async fn until<K>(api: &Api<K>, name: &str, what: &str, cond: impl Fn(Option<&K>) -> bool) -> Option<K>
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("{what}: watch failed: {e}"),
        Err(_) => panic!("{what}: not within {DEADLINE:?}; now {:?}", api.get_opt(name).await),
    }
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + Debug + Send + 'static,
{
    until(api, name, &format!("{name} gone"), |o: Option<&K>| o.is_none()).await;
}

/// Polls `check` until it returns `Some`, failing after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owner_uids(cm: &ConfigMap) -> Vec<String> {
    cm.metadata.owner_references.iter().flatten().map(|r| r.uid.clone()).collect()
}

/// A background cascade that must finish: proof the collector still works after a test's case.
async fn collector_still_works(fx: &Fx, ns: &str) {
    let uid = fx.config_map(ns, "sentinel-owner", json!([])).await;
    fx.config_map(ns, "sentinel-dep", json!([owner("ConfigMap", "sentinel-owner", &uid, false)])).await;
    fx.delete_cm(ns, "sentinel-owner", None).await;
    gone(&fx.cms(ns), "sentinel-dep").await;
}

#[tokio::test]
async fn background_deletion_collects_dependents_of_every_owner_gone() {
    let fx = Fx::start().await;
    fx.namespace("bg").await;
    let a = fx.config_map("bg", "owner-a", json!([])).await;
    let b = fx.config_map("bg", "owner-b", json!([])).await;
    for i in 0..3 {
        fx.config_map("bg", &format!("dep-{i}"), json!([owner("ConfigMap", "owner-a", &a, false)])).await;
    }
    // Two owners: it stays while one of them is there, and loses the reference to the other.
    fx.config_map(
        "bg",
        "shared",
        json!([owner("ConfigMap", "owner-a", &a, false), owner("ConfigMap", "owner-b", &b, false)]),
    )
    .await;
    let started = Instant::now();
    fx.delete_cm("bg", "owner-a", None).await;
    for i in 0..3 {
        gone(&fx.cms("bg"), &format!("dep-{i}")).await;
    }
    println!("background: three dependents collected {:?} after their owner's delete", started.elapsed());
    let shared = until(&fx.cms("bg"), "shared", "dangling reference removed", |c: Option<&ConfigMap>| {
        c.is_some_and(|c| owner_uids(c) == vec![b.clone()])
    })
    .await;
    assert!(shared.is_some());
    fx.delete_cm("bg", "owner-b", Some(PropagationPolicy::Background)).await;
    gone(&fx.cms("bg"), "shared").await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let fx = Fx::start().await;
    fx.namespace("fg").await;
    let uid = fx.config_map("fg", "owner", json!([])).await;
    // The blocking dependent has a finalizer of its own: the owner must wait until it goes.
    let body = json!({"metadata": {"name": "blocking", "finalizers": ["example.com/hold"],
                                   "ownerReferences": [owner("ConfigMap", "owner", &uid, true)]}});
    fx.must("POST", "/api/v1/namespaces/fg/configmaps", &body).await;
    fx.config_map("fg", "free", json!([owner("ConfigMap", "owner", &uid, false)])).await;

    fx.delete_cm("fg", "owner", Some(PropagationPolicy::Foreground)).await;
    let owner_now = fx.cms("fg").get("owner").await.expect("owner still there");
    assert!(owner_now.metadata.deletion_timestamp.is_some());
    assert!(owner_now.finalizers().iter().any(|f| f == "foregroundDeletion"), "{:?}", owner_now.finalizers());
    gone(&fx.cms("fg"), "free").await;
    until(&fx.cms("fg"), "blocking", "blocking dependent being deleted", |c: Option<&ConfigMap>| {
        c.is_some_and(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    // Still blocked: the owner is visible, deleting, with its finalizer.
    let owner_now = fx.cms("fg").get("owner").await.expect("owner waits for its blocking dependent");
    assert!(owner_now.finalizers().iter().any(|f| f == "foregroundDeletion"));

    let release = json!({"metadata": {"finalizers": null}});
    fx.cms("fg").patch("blocking", &PatchParams::default(), &Patch::Merge(release)).await.expect("release");
    gone(&fx.cms("fg"), "blocking").await;
    gone(&fx.cms("fg"), "owner").await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let fx = Fx::start().await;
    fx.namespace("orphan").await;
    let uid = fx.config_map("orphan", "owner", json!([])).await;
    let other = fx.config_map("orphan", "other-owner", json!([])).await;
    fx.config_map("orphan", "dep-1", json!([owner("ConfigMap", "owner", &uid, true)])).await;
    fx.config_map(
        "orphan",
        "dep-2",
        json!([owner("ConfigMap", "owner", &uid, false), owner("ConfigMap", "other-owner", &other, false)]),
    )
    .await;
    fx.delete_cm("orphan", "owner", Some(PropagationPolicy::Orphan)).await;
    gone(&fx.cms("orphan"), "owner").await;
    let dep1 = fx.cms("orphan").get("dep-1").await.expect("dep-1 survives");
    assert!(dep1.metadata.owner_references.is_none(), "{:?}", dep1.metadata.owner_references);
    let dep2 = fx.cms("orphan").get("dep-2").await.expect("dep-2 survives");
    assert_eq!(owner_uids(&dep2), vec![other]);
    collector_still_works(&fx, "orphan").await;
    assert!(fx.cms("orphan").get_opt("dep-1").await.expect("get").is_some());
}

#[tokio::test]
async fn dangling_dependents_are_collected() {
    let fx = Fx::start().await;
    fx.namespace("dangle").await;
    // An owner that never existed.
    fx.config_map(
        "dangle",
        "of-ghost",
        json!([owner("ConfigMap", "ghost", "00000000-0000-0000-0000-000000000001", false)]),
    )
    .await;
    // An owner whose name exists under another UID (deleted and created again).
    fx.config_map("dangle", "real", json!([])).await;
    fx.config_map(
        "dangle",
        "of-stale",
        json!([owner("ConfigMap", "real", "00000000-0000-0000-0000-000000000002", true)]),
    )
    .await;
    // An owner of a kind nobody serves: kept, as upstream keeps retrying the REST mapping.
    let widget = json!([{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "00000000-0000-0000-0000-000000000003"}]);
    fx.config_map("dangle", "of-widget", widget).await;
    gone(&fx.cms("dangle"), "of-ghost").await;
    gone(&fx.cms("dangle"), "of-stale").await;
    assert!(fx.cms("dangle").get_opt("real").await.expect("get").is_some(), "the unrelated object stays");
    collector_still_works(&fx, "dangle").await;
    assert!(fx.cms("dangle").get_opt("of-widget").await.expect("get").is_some(), "an unknown kind is not absent");
}

/// A → B → A, each reference blocking: no policy hangs the collector, and each ends as upstream.
#[tokio::test]
async fn owner_reference_cycles_resolve() {
    let fx = Fx::start().await;
    fx.namespace("cycle").await;
    let fx = &fx;
    let cycle = |p: &'static str| async move {
        let (a, b) = (format!("{p}-a"), format!("{p}-b"));
        let ua = fx.config_map("cycle", &a, json!([])).await;
        let ub = fx.config_map("cycle", &b, json!([owner("ConfigMap", &a, &ua, true)])).await;
        let refs = json!({"metadata": {"ownerReferences": [owner("ConfigMap", &b, &ub, true)]}});
        fx.cms("cycle").patch(&a, &PatchParams::default(), &Patch::Merge(refs)).await.expect("close the cycle");
        (a, b)
    };

    // Background: A goes at once, then B (its only owner is gone).
    let (a, b) = cycle("bg").await;
    fx.delete_cm("cycle", &a, Some(PropagationPolicy::Background)).await;
    gone(&fx.cms("cycle"), &a).await;
    gone(&fx.cms("cycle"), &b).await;

    // Foreground: B is unblocked and deleted in the foreground, then both go.
    let (a, b) = cycle("fg").await;
    fx.delete_cm("cycle", &a, Some(PropagationPolicy::Foreground)).await;
    gone(&fx.cms("cycle"), &a).await;
    gone(&fx.cms("cycle"), &b).await;

    // Orphan: A goes, B stays without its reference to A.
    let (a, b) = cycle("or").await;
    fx.delete_cm("cycle", &a, Some(PropagationPolicy::Orphan)).await;
    gone(&fx.cms("cycle"), &a).await;
    let b_now = fx.cms("cycle").get(&b).await.expect("B survives");
    assert!(b_now.metadata.owner_references.is_none());

    collector_still_works(fx, "cycle").await;
}

#[tokio::test]
async fn a_cluster_scoped_owner_collects_namespaced_dependents() {
    let fx = Fx::start().await;
    fx.namespace("scoped").await;
    let uid = fx.node("gc-owner-node", json!([])).await;
    fx.config_map("scoped", "of-node", json!([owner("Node", "gc-owner-node", &uid, false)])).await;
    Api::<Node>::all(fx.client.clone()).delete("gc-owner-node", &DeleteParams::default()).await.expect("delete node");
    gone(&fx.cms("scoped"), "of-node").await;
}

#[tokio::test]
async fn owner_references_across_namespaces_are_reported() {
    let fx = Fx::start().await;
    fx.namespace("here").await;
    fx.namespace("there").await;
    let uid = fx.config_map("here", "owner", json!([])).await;

    // A cluster-scoped dependent of a namespaced owner: reported, and never collected.
    fx.node("gc-dependent-node", json!([owner("ConfigMap", "owner", &uid, true)])).await;
    let events: Api<Event> = Api::namespaced(fx.client.clone(), "default");
    let lp = ListParams::default().fields("reason=OwnerRefInvalidNamespace");
    let event = eventually("OwnerRefInvalidNamespace on the node", || async {
        events
            .list(&lp)
            .await
            .expect("list events")
            .items
            .into_iter()
            .find(|e| e.involved_object.name.as_deref() == Some("gc-dependent-node"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(event.source.as_ref().and_then(|s| s.component.as_deref()), Some("garbage-collector-controller"));
    assert_eq!(
        event.message.as_deref(),
        Some(
            format!("ownerRef [v1/ConfigMap, namespace: , name: owner, uid: {uid}] does not exist in namespace \"\"")
                .as_str()
        )
    );

    // A namespaced dependent naming an owner of another namespace: reported there, and
    // collected, since no such owner exists in its own namespace.
    fx.config_map("there", "stray", json!([owner("ConfigMap", "owner", &uid, false)])).await;
    gone(&fx.cms("there"), "stray").await;
    let events: Api<Event> = Api::namespaced(fx.client.clone(), "there");
    let event = eventually("OwnerRefInvalidNamespace on the stray dependent", || async {
        events
            .list(&lp)
            .await
            .expect("list events")
            .items
            .into_iter()
            .find(|e| e.involved_object.name.as_deref() == Some("stray"))
    })
    .await;
    assert_eq!(
        event.message.as_deref(),
        Some(format!("ownerRef [v1/ConfigMap, namespace: there, name: owner, uid: {uid}] does not exist in namespace \"there\"").as_str())
    );

    // Deleting the namespaced owner leaves the invalid cluster-scoped dependent alone.
    fx.delete_cm("here", "owner", None).await;
    collector_still_works(&fx, "here").await;
    assert!(Api::<Node>::all(fx.client.clone()).get_opt("gc-dependent-node").await.expect("get").is_some());
}

#[tokio::test]
async fn namespace_deletion_empties_every_kind_and_reports_what_remains() {
    let fx = Fx::start().await;
    fx.namespace("doomed").await;
    fx.node("other-node", json!([])).await;
    for i in 0..3 {
        fx.config_map("doomed", &format!("cm-{i}"), json!([])).await;
    }
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    fx.must("POST", "/api/v1/namespaces/doomed/configmaps", &held).await;
    for i in 0..2 {
        fx.must("POST", "/api/v1/namespaces/doomed/secrets", &json!({"metadata": {"name": format!("s-{i}")}})).await;
    }
    let svc = json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}});
    fx.must("POST", "/api/v1/namespaces/doomed/services", &svc).await;
    let ep = json!({"metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
    fx.must("POST", "/api/v1/namespaces/doomed/endpoints", &ep).await;
    fx.pod("doomed", "p-0", "other-node", 30).await;
    fx.pod("doomed", "p-1", "other-node", 30).await;

    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    namespaces.delete("doomed", &DeleteParams::default()).await.expect("delete namespace");
    let ns = namespaces.get("doomed").await.expect("still there");
    assert_eq!(ns.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Terminating"));

    // Creating inside is refused as NamespaceLifecycle refuses it.
    let late = fx
        .send(
            "POST",
            "/api/v1/namespaces/doomed/configmaps",
            Some(&json!({"metadata": {"name": "late"}})),
            "application/json",
        )
        .await
        .expect_err("refused");
    assert_eq!((late.code, late.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        late.message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    let cause = late.details.as_ref().and_then(|d| d.causes.first()).expect("a cause");
    assert_eq!(
        (cause.reason.as_str(), cause.message.as_str(), cause.field.as_str()),
        ("NamespaceTerminating", "namespace doomed is being terminated", "metadata.namespace")
    );

    // Pods wait out their grace period and the held ConfigMap its finalizer; the conditions say so.
    let condition = |ns: &Namespace, t: &str| {
        ns.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == t).cloned())
    };
    let remaining =
        "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances";
    let ns = until(&namespaces, "doomed", "content remaining reported", |n: Option<&Namespace>| {
        n.and_then(|n| condition(n, "NamespaceContentRemaining"))
            .is_some_and(|c| c.message.as_deref() == Some(remaining))
    })
    .await
    .expect("namespace");
    let c = condition(&ns, "NamespaceContentRemaining").expect("condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("SomeResourcesRemain")));
    let c = condition(&ns, "NamespaceFinalizersRemaining").expect("condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("SomeFinalizersRemain")));
    assert_eq!(
        c.message.as_deref(),
        Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
    );
    let c = condition(&ns, "NamespaceDeletionDiscoveryFailure").expect("condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("ResourcesDiscovered")));
    assert_eq!(ns.spec.as_ref().and_then(|s| s.finalizers.clone()), Some(vec!["kubernetes".to_string()]));
    for kind in ["secrets", "services", "endpoints"] {
        let list =
            fx.send("GET", &format!("/api/v1/namespaces/doomed/{kind}"), None, "application/json").await.expect("list");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{kind} left: {list}");
    }
    let pods: Api<Pod> = Api::namespaced(fx.client.clone(), "doomed");
    for p in pods.list(&ListParams::default()).await.expect("pods").items {
        assert!(p.metadata.deletion_timestamp.is_some(), "{} is terminating, not gone", p.name_any());
    }

    // The kubelet's part: pods go once their containers stopped (a delete with grace 0).
    for p in ["p-0", "p-1"] {
        pods.delete(p, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.expect("force");
    }
    until(&namespaces, "doomed", "only the held ConfigMap remains", |n: Option<&Namespace>| {
        n.and_then(|n| condition(n, "NamespaceContentRemaining")).is_some_and(|c| {
            c.message.as_deref() == Some("Some resources are remaining: configmaps. has 1 resource instances")
        })
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    fx.cms("doomed").patch("held", &PatchParams::default(), &Patch::Merge(release)).await.expect("release");
    gone(&namespaces, "doomed").await;
}

#[tokio::test]
async fn finalize_changes_only_spec_finalizers() {
    let fx = Fx::start().await;
    fx.namespace("fin").await;
    let path = "/api/v1/namespaces/fin/finalize";
    let mut ns = fx.send("GET", "/api/v1/namespaces/fin", None, "application/json").await.expect("get");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));

    // Bad input: a name that is neither standard nor qualified, other verbs, other kinds.
    ns["spec"]["finalizers"] = json!(["kubernetes", "not-standard"]);
    let bad = fx.send("PUT", path, Some(&ns), "application/json").await.expect_err("invalid");
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    let cause = bad.details.as_ref().and_then(|d| d.causes.first()).expect("cause");
    assert_eq!(cause.field, "spec.finalizers[1]");
    assert_eq!(
        cause.message,
        "Invalid value: \"not-standard\": name is neither a standard finalizer name nor is it fully qualified"
    );
    let get = fx.send("GET", path, None, "application/json").await.expect_err("no GET");
    assert_eq!(get.code, 405);
    let cm = fx.send("PUT", "/api/v1/namespaces/fin/configmaps/x/finalize", Some(&json!({})), "application/json").await;
    assert_eq!(cm.expect_err("not served").code, 404);

    // Only spec.finalizers changes: the status sent is ignored.
    ns["spec"]["finalizers"] = json!(["example.com/mine", "kubernetes"]);
    ns["status"]["phase"] = json!("Terminating");
    let out = fx.must("PUT", path, &ns).await;
    assert_eq!(out["spec"]["finalizers"], json!(["example.com/mine", "kubernetes"]));
    assert_eq!(out["status"]["phase"], "Active");

    // Deleting waits for both finalizers: the controller removes its own, the other stays.
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    namespaces.delete("fin", &DeleteParams::default()).await.expect("delete");
    let ns = until(&namespaces, "fin", "kubernetes finalizer removed", |n: Option<&Namespace>| {
        n.is_some_and(|n| n.spec.as_ref().and_then(|s| s.finalizers.clone()) == Some(vec!["example.com/mine".into()]))
    })
    .await
    .expect("still there");
    let mut body = serde_json::to_value(&ns).expect("json");
    body["spec"]["finalizers"] = json!([]);
    fx.must("PUT", path, &body).await;
    gone(&namespaces, "fin").await;
}

#[tokio::test]
async fn pods_on_a_missing_node_are_force_deleted_after_quarantine() {
    let fx = Fx::start().await;
    fx.namespace("stranded").await;
    fx.node("doomed-node", json!([])).await;
    fx.pod("stranded", "on-doomed", "doomed-node", 30).await;
    fx.pod("stranded", "on-ghost", "ghost-node", 30).await;
    let pods: Api<Pod> = Api::namespaced(fx.client.clone(), "stranded");
    let mut events =
        watcher::watcher(pods.clone(), watcher::Config::default().fields("metadata.name=on-doomed")).boxed();
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => continue,
            other => panic!("watch: {other:?}"),
        }
    }
    // Before it goes, the pod is marked Failed with the DisruptionTarget condition.
    let marked = tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(p) = event {
                let status = p.status.unwrap_or_default();
                if status.phase.as_deref() == Some("Failed") {
                    return status.conditions.into_iter().flatten().find(|c| c.type_ == "DisruptionTarget");
                }
            }
        }
        None
    });

    Api::<Node>::all(fx.client.clone()).delete("doomed-node", &DeleteParams::default()).await.expect("delete node");
    gone(&pods, "on-ghost").await;
    let marked = tokio::time::timeout(DEADLINE, marked)
        .await
        .expect("marked in time")
        .expect("watch task")
        .expect("a DisruptionTarget condition");
    assert_eq!(
        (marked.status.as_str(), marked.reason.as_deref(), marked.message.as_deref()),
        ("True", Some("DeletionByPodGC"), Some("PodGC: node no longer exists"))
    );
    gone(&pods, "on-doomed").await;

    // And a namespace with such pods does not hang.
    fx.pod("stranded", "late", "ghost-node", 30).await;
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    namespaces.delete("stranded", &DeleteParams::default()).await.expect("delete namespace");
    gone(&namespaces, "stranded").await;
}
