//! The ReplicaSet and Deployment controllers through kube-rs against an in-process cluster:
//! pods created and deleted to match replicas, adoption and release, surplus deletion order,
//! status; Deployments with hashed ReplicaSets and revisions, rolling updates within
//! maxSurge/maxUnavailable at every observed step, Recreate, pause/resume, rollback, proportional
//! scaling, the progress deadline, and bad input refused by the API server.
//!
//! Pod templates bind their pods to a Node the test makes (`other-node`), so a node agent leaves
//! them alone; a stand-in kubelet in the test marks them Running and Ready through `/status`
//! (except those whose image is `never-ready`).

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::serde::de::DeserializeOwned;
use kplane::Cluster;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const NODE: &str = "other-node";
const NEVER_READY: &str = "never-ready";

struct Fx {
    cluster: Cluster,
    kubelet: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(k) = &self.kubelet {
            k.abort();
        }
    }
}

impl Fx {
    /// A cluster with `other-node` and a stand-in kubelet making its pods ready.
    async fn new() -> Self {
        let mut fx = Self::without_kubelet().await;
        fx.kubelet = Some(tokio::spawn(kubelet(fx.api())));
        fx
    }

    async fn without_kubelet() -> Self {
        let cluster = Cluster::start().await.expect("cluster starts");
        let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).expect("node");
        Api::<Node>::all(cluster.client()).create(&PostParams::default(), &node).await.expect("create node");
        Self { cluster, kubelet: None }
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(&self) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), "default")
    }

    async fn create<K>(&self, obj: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(obj).expect("decodes");
        self.api::<K>().create(&PostParams::default(), &obj).await.expect("create")
    }

    async fn patch<K>(&self, name: &str, patch: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        self.api::<K>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch")
    }
}

/// Marks every pod bound to `other-node` Running and Ready (unless its image is `never-ready`).
async fn kubelet(pods: Api<Pod>) {
    let mut events =
        watcher::watcher(pods.clone(), watcher::Config::default()).default_backoff().touched_objects().boxed();
    let mut ip = 0u32;
    while let Some(ev) = events.next().await {
        let Ok(pod) = ev else { continue };
        let spec = pod.spec.clone().unwrap_or_default();
        let image = spec.containers.first().and_then(|c| c.image.clone()).unwrap_or_default();
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if spec.node_name.as_deref() != Some(NODE)
            || pod.metadata.deletion_timestamp.is_some()
            || ready
            || image == NEVER_READY
        {
            continue;
        }
        ip += 1;
        ready_pod(&pods, &pod.name_any(), &format!("10.1.{}.{}", ip / 250, ip % 250 + 1), 0).await;
    }
}

/// Writes Running + Ready (ready since `ago` seconds) through `/status`.
async fn ready_pod(pods: &Api<Pod>, name: &str, ip: &str, ago: i64) {
    let since = k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(ago as u64);
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}]}});
    let _ = pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await;
}

/// Watches `api` until `done` holds for everything in it; returns that state.
async fn until<K>(api: Api<K>, what: &str, done: impl Fn(&[Arc<K>]) -> bool) -> Vec<Arc<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let mut events = watcher::watcher(api, watcher::Config::default()).reflect(writer).boxed();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = events.next().await {
            if matches!(ev, Ok(watcher::Event::InitApply(_) | watcher::Event::Init)) {
                continue;
            }
            let state = reader.state();
            if reader.wait_until_ready().await.is_ok() && done(&state) {
                return Some(state);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(state)) => state,
        _ => panic!("timed out waiting for {what}; last seen: {:#?}", reader.state()),
    }
}

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": image}]}})
}

fn rs_json(name: &str, app: &str, replicas: i32) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
        "template": template(app, "x")}})
}

fn deployment_json(name: &str, replicas: i32, strategy: Value, image: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "strategy": strategy, "template": template(name, image)}})
}

fn owned_by<'a>(pods: &'a [Arc<Pod>], owner: &ReplicaSet) -> Vec<&'a Arc<Pod>> {
    pods.iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && Some(&r.uid) == owner.metadata.uid.as_ref())
        })
        .collect()
}

fn active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn rs_of<'a>(sets: &'a [Arc<ReplicaSet>], deployment: &str) -> Vec<&'a Arc<ReplicaSet>> {
    let mut v: Vec<_> = sets.iter().filter(|rs| rs.owner_references().iter().any(|r| r.name == deployment)).collect();
    v.sort_by_key(|rs| revision(rs.as_ref()));
    v
}

fn revision<K: Resource>(obj: &K) -> i64 {
    obj.annotations().get("deployment.kubernetes.io/revision").and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    let c = d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

/// `kubectl rollout status` finishes: observed, all updated, no old pods, all available.
fn rolled_out(d: &Deployment) -> bool {
    let st = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

async fn wait_deployment(fx: &Fx, name: &str, what: &str, done: impl Fn(&Deployment) -> bool) -> Deployment {
    let found = until(fx.api::<Deployment>(), what, |ds| ds.iter().any(|d| d.name_any() == name && done(d))).await;
    found.into_iter().find(|d| d.name_any() == name).map(|d| (*d).clone()).expect("found")
}

// ---------------------------------------------------------------------------------------------
// ReplicaSets

#[tokio::test]
async fn replicaset_creates_and_deletes_pods_to_match_replicas() {
    let fx = Fx::new().await;
    let rs: ReplicaSet = fx.create(rs_json("web", "web", 3)).await;
    let pods = until(fx.api::<Pod>(), "3 pods", |ps| owned_by(ps, &rs).iter().filter(|p| active(p)).count() == 3).await;
    for p in owned_by(&pods, &rs) {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller, r.block_owner_deletion),
            ("ReplicaSet", "web", Some(true), Some(true))
        );
    }
    let done = |want: i32| {
        move |sets: &[Arc<ReplicaSet>]| {
            sets.iter().any(|s| {
                let st = s.status.clone().unwrap_or_default();
                s.name_any() == "web"
                    && st.observed_generation == s.metadata.generation
                    && st.replicas == want
                    && st.fully_labeled_replicas.unwrap_or(0) == want
                    && st.ready_replicas.unwrap_or(0) == want
                    && st.available_replicas.unwrap_or(0) == want
            })
        }
    };
    until(fx.api::<ReplicaSet>(), "status 3/3/3/3", done(3)).await;

    // `kubectl scale` goes through the scale subresource.
    let scale = json!({"spec": {"replicas": 1}});
    fx.api::<ReplicaSet>().patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale");
    until(fx.api::<Pod>(), "1 pod", |ps| owned_by(ps, &rs).iter().filter(|p| active(p)).count() == 1).await;
    let sets = until(fx.api::<ReplicaSet>(), "status 1", done(1)).await;
    assert_eq!(sets.iter().find(|s| s.name_any() == "web").and_then(|s| s.metadata.generation), Some(2));
    fx.patch::<ReplicaSet>("web", json!({"spec": {"replicas": 4}})).await;
    until(fx.api::<Pod>(), "4 pods", |ps| owned_by(ps, &rs).iter().filter(|p| active(p)).count() == 4).await;
    until(fx.api::<ReplicaSet>(), "status 4", done(4)).await;

    // A deleted pod is replaced.
    let pods = until(fx.api::<Pod>(), "4 pods", |ps| owned_by(ps, &rs).len() == 4).await;
    let victim = owned_by(&pods, &rs)[0].name_any();
    fx.api::<Pod>().delete(&victim, &DeleteParams::default()).await.expect("delete");
    until(fx.api::<Pod>(), "a replacement", |ps| {
        let owned = owned_by(ps, &rs);
        owned.len() == 4 && owned.iter().all(|p| p.name_any() != victim)
    })
    .await;
}

#[tokio::test]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() {
    let fx = Fx::new().await;
    for name in ["orphan-a", "orphan-b"] {
        let mut pod = template("adopt", "x");
        pod["metadata"]["name"] = name.into();
        fx.create::<Pod>(pod).await;
    }
    let rs: ReplicaSet = fx.create(rs_json("adopter", "adopt", 2)).await;
    let sets = until(fx.api::<ReplicaSet>(), "2 replicas observed", |s| {
        s.iter().any(|s| s.status.as_ref().is_some_and(|st| st.replicas == 2 && st.observed_generation == Some(1)))
    })
    .await;
    assert_eq!(sets.len(), 1);
    let pods = until(fx.api::<Pod>(), "both adopted", |ps| owned_by(ps, &rs).len() == 2).await;
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["orphan-a", "orphan-b"], "adopting must not create pods");

    // A pod whose labels stop matching is released (ownerReference removed) and replaced.
    fx.patch::<Pod>("orphan-a", json!({"metadata": {"labels": {"app": "elsewhere"}}})).await;
    let pods = until(fx.api::<Pod>(), "release and replacement", |ps| {
        let released = ps.iter().any(|p| p.name_any() == "orphan-a" && p.owner_references().is_empty());
        released && owned_by(ps, &rs).len() == 2
    })
    .await;
    assert_eq!(pods.len(), 3);
}

#[tokio::test]
async fn surplus_pods_go_in_upstream_preference_order() {
    let fx = Fx::without_kubelet().await;
    let pods = fx.api::<Pod>();
    // One pod per rule: pending < running-not-ready < ready recently < ready long ago.
    for name in ["pending", "running", "ready-new", "ready-old"] {
        let mut pod = template("order", "x");
        pod["metadata"]["name"] = name.into();
        fx.create::<Pod>(pod).await;
    }
    let status = json!({"status": {"phase": "Running"}});
    pods.patch_status("running", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
    ready_pod(&pods, "ready-new", "10.2.0.1", 10).await;
    ready_pod(&pods, "ready-old", "10.2.0.2", 86_400).await;
    let rs: ReplicaSet = fx.create(rs_json("order", "order", 4)).await;
    until(fx.api::<Pod>(), "all adopted", |ps| owned_by(ps, &rs).len() == 4).await;
    let survivors = |n: usize| {
        let rs = rs.clone();
        move |ps: &[Arc<Pod>]| owned_by(ps, &rs).len() == n
    };
    for (n, expect) in
        [(3, vec!["ready-new", "ready-old", "running"]), (2, vec!["ready-new", "ready-old"]), (1, vec!["ready-old"])]
    {
        fx.patch::<ReplicaSet>("order", json!({"spec": {"replicas": n}})).await;
        let left = until(fx.api::<Pod>(), "scale down", survivors(n)).await;
        let mut names: Vec<String> = owned_by(&left, &rs).iter().map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, expect, "after scaling to {n}");
    }
}

#[tokio::test]
async fn pod_create_errors_show_as_replica_failure() {
    let fx = Fx::new().await;
    let mut rs = rs_json("failing", "failing", 2);
    rs["spec"]["template"]["metadata"]["finalizers"] = json!(["not a valid finalizer!"]);
    fx.create::<ReplicaSet>(rs).await;
    let sets = until(fx.api::<ReplicaSet>(), "ReplicaFailure", |s| {
        s.iter().any(|s| s.status.as_ref().and_then(|st| st.conditions.as_ref()).is_some_and(|c| !c.is_empty()))
    })
    .await;
    let c = &sets[0].status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default()[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
        ("ReplicaFailure", "True", Some("FailedCreate"))
    );
    assert!(c.message.as_deref().unwrap_or("").contains("finalizer"), "{c:?}");
    // Fixing the template clears the condition once pods can be made.
    fx.patch::<ReplicaSet>("failing", json!({"spec": {"template": {"metadata": {"finalizers": null}}}})).await;
    until(fx.api::<ReplicaSet>(), "condition cleared", |s| {
        s.iter().any(|s| s.status.as_ref().is_some_and(|st| st.conditions.is_none() && st.ready_replicas == Some(2)))
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Deployments

#[tokio::test]
async fn deployment_creates_a_hashed_replicaset_with_revision_1() {
    let fx = Fx::new().await;
    fx.create::<Deployment>(deployment_json("web", 3, json!(null), "nginx:1")).await;
    let d = wait_deployment(&fx, "web", "rolled out", rolled_out).await;
    assert_eq!(revision(&d), 1);
    assert_eq!(condition(&d, "Available").map(|c| c.1), Some("MinimumReplicasAvailable".into()));
    let sets = until(fx.api::<ReplicaSet>(), "one rs", |s| s.len() == 1).await;
    let rs = &sets[0];
    let hash = rs.labels().get("pod-template-hash").cloned().expect("hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs.spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .and_then(|m| m.get("pod-template-hash").cloned()),
        Some(hash.clone())
    );
    let a = rs.annotations();
    assert_eq!(a.get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));
    assert_eq!(a.get("deployment.kubernetes.io/desired-replicas").map(String::as_str), Some("3"));
    assert_eq!(a.get("deployment.kubernetes.io/max-replicas").map(String::as_str), Some("4"));
    let (status, reason, message) = condition(&d, "Progressing").expect("Progressing");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NewReplicaSetAvailable"));
    assert_eq!(message, format!("ReplicaSet \"web-{hash}\" has successfully progressed."));
    let pods = until(fx.api::<Pod>(), "3 pods", |ps| ps.len() == 3).await;
    assert!(pods.iter().all(|p| p.labels().get("pod-template-hash") == Some(&hash)));
    let st = d.status.clone().unwrap_or_default();
    assert_eq!((st.ready_replicas, st.unavailable_replicas, st.observed_generation), (Some(3), None, Some(1)));
}

/// Records every moment that breaks maxSurge (ReplicaSet sizes) or maxUnavailable (ready pods).
fn watch_bounds(
    fx: &Fx,
    deployment: &str,
    max_total: i32,
    min_ready: usize,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let (v, name) = (violations.clone(), deployment.to_string());
    let sets = tokio::spawn(watch_all(fx.api::<ReplicaSet>(), move |sets: &[Arc<ReplicaSet>]| {
        let total: i32 = rs_of(sets, &name).iter().map(|rs| spec_replicas(rs)).sum();
        if total > max_total {
            let sizes: Vec<(i64, i32)> =
                rs_of(sets, &name).iter().map(|rs| (revision(rs.as_ref()), spec_replicas(rs))).collect();
            v.lock().map(|mut v| v.push(format!("{total} pods wanted > {max_total}: {sizes:?}"))).ok();
        }
    }));
    let v = violations.clone();
    let pods = tokio::spawn(watch_all(fx.api::<Pod>(), move |pods: &[Arc<Pod>]| {
        let ready = pods.iter().filter(|p| active(p) && is_ready(p)).count();
        if ready < min_ready {
            v.lock().map(|mut v| v.push(format!("{ready} ready < {min_ready}"))).ok();
        }
    }));
    (violations, vec![sets, pods])
}

async fn watch_all<K>(api: Api<K>, check: impl Fn(&[Arc<K>]) + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let mut events = watcher::watcher(api, watcher::Config::default()).reflect(writer).boxed();
    while let Some(ev) = events.next().await {
        if matches!(ev, Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) {
            check(&reader.state());
        }
    }
}

#[tokio::test]
async fn rolling_update_stays_within_surge_and_unavailability() {
    let fx = Fx::new().await;
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    let mut d = deployment_json("roll", 4, strategy, "app:v1");
    d["spec"]["revisionHistoryLimit"] = 1.into();
    fx.create::<Deployment>(d).await;
    wait_deployment(&fx, "roll", "v1 rolled out", rolled_out).await;
    let (violations, tasks) = watch_bounds(&fx, "roll", 5, 3);

    for (image, rev) in [("app:v2", 2), ("app:v3", 3)] {
        let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        fx.patch::<Deployment>("roll", image_patch).await;
        let d = wait_deployment(&fx, "roll", image, |d| rolled_out(d) && revision(d) == rev).await;
        assert_eq!(condition(&d, "Progressing").map(|c| c.1), Some("NewReplicaSetAvailable".into()));
    }
    for t in tasks {
        t.abort();
    }
    assert_eq!(*violations.lock().expect("lock"), Vec::<String>::new());
    // revisionHistoryLimit 1: revision 1 is gone, revision 2 stays scaled to 0.
    let sets = until(fx.api::<ReplicaSet>(), "history cleaned", |s| s.len() == 2).await;
    let sets = rs_of(&sets, "roll");
    assert_eq!(sets.iter().map(|rs| (revision(rs.as_ref()), spec_replicas(rs))).collect::<Vec<_>>(), [(2, 0), (3, 4)]);
}

#[tokio::test]
async fn recreate_removes_old_pods_before_new_ones() {
    let fx = Fx::new().await;
    fx.create::<Deployment>(deployment_json("re", 2, json!({"type": "Recreate"}), "app:v1")).await;
    wait_deployment(&fx, "re", "v1", rolled_out).await;
    let overlap = Arc::new(Mutex::new(false));
    let seen = overlap.clone();
    let watch = tokio::spawn(watch_all(fx.api::<Pod>(), move |pods: &[Arc<Pod>]| {
        let images: std::collections::BTreeSet<String> = pods
            .iter()
            .filter(|p| active(p))
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()))
            .collect();
        if images.len() > 1 {
            seen.lock().map(|mut s| *s = true).ok();
        }
    }));
    let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}}});
    fx.patch::<Deployment>("re", image_patch).await;
    wait_deployment(&fx, "re", "v2", |d| rolled_out(d) && revision(d) == 2).await;
    watch.abort();
    assert!(!*overlap.lock().expect("lock"), "old and new pods ran together");
}

#[tokio::test]
async fn paused_deployments_scale_but_do_not_roll_out_until_resumed() {
    let fx = Fx::new().await;
    fx.create::<Deployment>(deployment_json("p", 2, json!(null), "app:v1")).await;
    wait_deployment(&fx, "p", "v1", rolled_out).await;
    fx.patch::<Deployment>("p", json!({"spec": {"paused": true}})).await;
    wait_deployment(&fx, "p", "paused condition", |d| {
        condition(d, "Progressing").is_some_and(|c| c.0 == "Unknown" && c.1 == "DeploymentPaused")
    })
    .await;
    let image_patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}, "replicas": 3}});
    fx.patch::<Deployment>("p", image_patch).await;
    wait_deployment(&fx, "p", "scaled while paused", |d| {
        let st = d.status.clone().unwrap_or_default();
        st.observed_generation >= d.metadata.generation && st.available_replicas == Some(3)
    })
    .await;
    let sets = until(fx.api::<ReplicaSet>(), "one rs", |s| !s.is_empty()).await;
    assert_eq!(sets.len(), 1, "no rollout while paused");
    assert_eq!(spec_replicas(&sets[0]), 3);

    fx.patch::<Deployment>("p", json!({"spec": {"paused": false}})).await;
    let d = wait_deployment(&fx, "p", "rolled out after resume", |d| rolled_out(d) && revision(d) == 2).await;
    assert_eq!(condition(&d, "Progressing").map(|c| c.1), Some("NewReplicaSetAvailable".into()));
}

#[tokio::test]
async fn rollback_reuses_the_old_replicaset_with_a_new_revision() {
    let fx = Fx::new().await;
    fx.create::<Deployment>(deployment_json("undo", 2, json!(null), "app:v1")).await;
    wait_deployment(&fx, "undo", "v1", rolled_out).await;
    let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}}});
    fx.patch::<Deployment>("undo", image_patch).await;
    wait_deployment(&fx, "undo", "v2", |d| rolled_out(d) && revision(d) == 2).await;
    let sets = until(fx.api::<ReplicaSet>(), "2 rs", |s| s.len() == 2).await;
    let first = rs_of(&sets, "undo")[0].clone();
    assert_eq!(revision(first.as_ref()), 1);

    // What `kubectl rollout undo` sends: a JSON patch with revision 1's template (minus the hash).
    let mut template = serde_json::to_value(first.spec.as_ref().and_then(|s| s.template.clone())).expect("template");
    template["metadata"]["labels"].as_object_mut().map(|l| l.remove("pod-template-hash"));
    let undo = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    let req = http::Request::patch("/apis/apps/v1/namespaces/default/deployments/undo")
        .header("Content-Type", "application/json-patch+json")
        .body(serde_json::to_vec(&undo).expect("encodes"))
        .expect("request");
    fx.cluster.client().request::<Deployment>(req).await.expect("undo");
    let d = wait_deployment(&fx, "undo", "rolled back", |d| rolled_out(d) && revision(d) == 3).await;
    assert_eq!(revision(&d), 3);
    let sets =
        until(fx.api::<ReplicaSet>(), "rs revisions", |s| rs_of(s, "undo").iter().any(|rs| revision(rs.as_ref()) == 3))
            .await;
    assert_eq!(sets.len(), 2, "the old ReplicaSet is reused");
    let reused = sets.iter().find(|rs| rs.name_any() == first.name_any()).expect("first rs");
    assert_eq!(revision(reused.as_ref()), 3);
    assert_eq!(reused.annotations().get("deployment.kubernetes.io/revision-history").map(String::as_str), Some("1"));
    assert_eq!(spec_replicas(reused), 2);
}

#[tokio::test]
async fn scaling_during_a_stuck_rollout_is_proportional() {
    let fx = Fx::new().await;
    fx.create::<Deployment>(deployment_json("prop", 10, json!(null), "app:v1")).await;
    wait_deployment(&fx, "prop", "v1", rolled_out).await;
    let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": NEVER_READY}]}}}});
    fx.patch::<Deployment>("prop", image_patch).await;
    // 25%/25% of 10: surge 3, unavailable 2 -> old 8, new 5, then stuck.
    let sizes = |want: (i32, i32)| {
        move |sets: &[Arc<ReplicaSet>]| {
            let s = rs_of(sets, "prop");
            s.len() == 2 && (spec_replicas(s[0]), spec_replicas(s[1])) == want
        }
    };
    until(fx.api::<ReplicaSet>(), "old 8, new 5", sizes((8, 5))).await;
    fx.patch::<Deployment>("prop", json!({"spec": {"replicas": 20}})).await;
    // 25 allowed (20 + surge 5), 12 more spread by max-replicas 13: old 8*25/13 -> 15, new -> 10.
    until(fx.api::<ReplicaSet>(), "old 15, new 10", sizes((15, 10))).await;
    let d = wait_deployment(&fx, "prop", "observed", |d| {
        d.status.as_ref().is_some_and(|s| s.observed_generation == d.metadata.generation && s.replicas == Some(25))
    })
    .await;
    assert_eq!(d.status.as_ref().and_then(|s| s.updated_replicas), Some(10));
}

#[tokio::test]
async fn progress_deadline_exceeded_when_pods_never_become_ready() {
    let fx = Fx::new().await;
    let mut d = deployment_json("stuck", 2, json!(null), NEVER_READY);
    d["spec"]["progressDeadlineSeconds"] = 1.into();
    fx.create::<Deployment>(d).await;
    let d = wait_deployment(&fx, "stuck", "deadline exceeded", |d| {
        condition(d, "Progressing").is_some_and(|c| c.1 == "ProgressDeadlineExceeded")
    })
    .await;
    let sets = until(fx.api::<ReplicaSet>(), "rs", |s| s.len() == 1).await;
    let (status, _, message) = condition(&d, "Progressing").expect("Progressing");
    assert_eq!(status, "False");
    assert_eq!(message, format!("ReplicaSet \"{}\" has timed out progressing.", sets[0].name_any()));
    assert_eq!(
        condition(&d, "Available").map(|c| (c.0, c.1)),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
}

#[tokio::test]
async fn invalid_workloads_are_refused_with_upstream_field_paths() {
    let fx = Fx::new().await;
    let mut d = deployment_json("bad", 1, json!(null), "x");
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let obj: Deployment = serde_json::from_value(d).expect("decodes");
    let err = fx.api::<Deployment>().create(&PostParams::default(), &obj).await.expect_err("refused");
    let kube::Error::Api(status) = err else { panic!("{err:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("spec.template.metadata.labels"), "{}", status.message);
    assert!(status.message.contains("`selector` does not match template `labels`"), "{}", status.message);
    let details = status.details.expect("details");
    assert!(
        details.causes.iter().any(|c| c.field == "spec.template.metadata.labels" && c.reason == "FieldValueInvalid")
    );

    let mut rs = rs_json("bad-rs", "a", 1);
    rs["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
    let obj: ReplicaSet = serde_json::from_value(rs).expect("decodes");
    let err = fx.api::<ReplicaSet>().create(&PostParams::default(), &obj).await.expect_err("refused");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("spec.template.metadata.labels")),
        "{err:?}"
    );

    let both_zero = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    let obj: Deployment = serde_json::from_value(deployment_json("zero", 1, both_zero, "x")).expect("decodes");
    let err = fx.api::<Deployment>().create(&PostParams::default(), &obj).await.expect_err("refused");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("may not be 0 when `maxSurge` is 0")),
        "{err:?}"
    );
    // The selector is immutable.
    fx.create::<Deployment>(deployment_json("fixed", 1, json!(null), "x")).await;
    let change = json!({"spec": {"selector": {"matchLabels": {"app": "fixed", "tier": "x"}},
        "template": {"metadata": {"labels": {"app": "fixed", "tier": "x"}}}}});
    let err = fx
        .api::<Deployment>()
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("field is immutable")),
        "{err:?}"
    );
    // Nothing was stored for the refused ones.
    let names: Vec<String> =
        until(fx.api::<Deployment>(), "list", |_| true).await.iter().map(|d| d.name_any()).collect();
    assert_eq!(names, ["fixed"]);
}
