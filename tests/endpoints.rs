//! The Endpoints, EndpointSlice and EndpointSlice mirroring controllers, through kube-rs against an
//! in-process cluster: the conformance tests of spec §7 items 3, 4, 18, 19, 20 and 24, and the
//! rules of §3 (named ports, packing, readiness, terminating pods, dual stack, capacity, churn).
//!
//! Pods are bound at create time to a Node the test makes (`other-node`), so no node agent runs
//! them; their IPs and Ready condition are written through the `/status` subresource.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const NODE: &str = "other-node";
const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";

struct Fx {
    cluster: Cluster,
}

impl Fx {
    async fn new() -> Self {
        Self::with(Config::ephemeral()).await
    }

    async fn with(config: Config) -> Self {
        let fx = Self { cluster: Cluster::start_with(config).await.expect("cluster starts") };
        fx.node(NODE, Some("zone-a")).await;
        fx
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(&self) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), "default")
    }

    async fn node(&self, name: &str, zone: Option<&str>) {
        let labels = zone.map(|z| json!({"topology.kubernetes.io/zone": z})).unwrap_or(json!({}));
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Node>::all(self.cluster.client()).create(&PostParams::default(), &node).await.expect("create node");
    }

    async fn service(&self, name: &str, spec: Value) -> Service {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        self.api::<Service>().create(&PostParams::default(), &svc).await.expect("create service")
    }

    /// A pod bound to `other-node` with these labels and container ports.
    async fn pod(&self, name: &str, labels: Value, ports: Value) -> Pod {
        self.pod_spec(
            name,
            labels,
            json!({"nodeName": NODE, "containers": [{"name": "c", "image": "x", "ports": ports}]}),
        )
        .await
    }

    async fn pod_spec(&self, name: &str, labels: Value, spec: Value) -> Pod {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})).unwrap();
        self.api::<Pod>().create(&PostParams::default(), &pod).await.expect("create pod")
    }

    /// Running with these IPs, Ready or not, as a kubelet would report it.
    async fn status(&self, name: &str, ips: &[&str], ready: bool) {
        let ready = if ready { "True" } else { "False" };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": now}],
        }});
        self.api::<Pod>()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
    }

    async fn ready_pod(&self, name: &str, labels: Value, ports: Value, ip: &str) {
        self.pod(name, labels, ports).await;
        self.status(name, &[ip], true).await;
    }

    async fn delete_pod_now(&self, name: &str) {
        self.api::<Pod>().delete(name, &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    }

    /// This controller's slices of `service`, once `done` holds for them.
    async fn slices(&self, service: &str, done: impl Fn(&[EndpointSlice]) -> bool) -> Vec<EndpointSlice> {
        let labels =
            format!("kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={SLICE_CONTROLLER}");
        wait_list(self.api(), &labels, done).await
    }

    /// The Endpoints named `name`, once `done` holds for it.
    async fn endpoints(&self, name: &str, done: impl Fn(Option<&Endpoints>) -> bool) -> Option<Endpoints> {
        let items = wait_list(self.api::<Endpoints>(), "", |all: &[Endpoints]| {
            done(all.iter().find(|e| e.metadata.name.as_deref() == Some(name)))
        })
        .await;
        items.into_iter().find(|e| e.metadata.name.as_deref() == Some(name))
    }
}

/// Watches a list until `done` holds for it (the objects matching `labels`); panics at the deadline.
async fn wait_list<K>(api: Api<K>, labels: &str, done: impl Fn(&[K]) -> bool) -> Vec<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let config = if labels.is_empty() { watcher::Config::default() } else { watcher::Config::default().labels(labels) };
    let mut stream = reflector::reflector(writer, watcher(api, config).default_backoff()).boxed();
    let check = || {
        let items: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
        done(&items).then_some(items)
    };
    let found = tokio::time::timeout(DEADLINE, async {
        let mut listed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed = true,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
                Err(_) => continue,
            }
            if listed && let Some(items) = check() {
                return items;
            }
        }
        panic!("watch ended");
    })
    .await;
    match found {
        Ok(items) => items,
        Err(_) => panic!("not reached within {DEADLINE:?}; last seen: {:#?}", store.state()),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    json!(pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>())
}

/// Every (address, ready) across slices.
fn addresses(slices: &[EndpointSlice]) -> BTreeSet<(String, bool)> {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready) == Some(true)))
        .collect()
}

fn sizes(slices: &[EndpointSlice]) -> Vec<usize> {
    slices.iter().map(|s| s.endpoints.len()).collect()
}

fn ready_ips(slices: &[EndpointSlice]) -> BTreeSet<String> {
    addresses(slices).into_iter().filter(|(_, r)| *r).map(|(a, _)| a).collect()
}

/// Endpoints as (ip, ready) → ports.
fn subsets(ep: &Endpoints) -> BTreeMap<(String, bool), BTreeSet<i32>> {
    let mut out: BTreeMap<(String, bool), BTreeSet<i32>> = BTreeMap::new();
    for s in ep.subsets.iter().flatten() {
        let ports: BTreeSet<i32> = s.ports.iter().flatten().map(|p| p.port).collect();
        for (list, ready) in [(&s.addresses, true), (&s.not_ready_addresses, false)] {
            for a in list.iter().flatten() {
                out.entry((a.ip.clone(), ready)).or_default().extend(ports.iter().copied());
            }
        }
    }
    out
}

fn endpoint_map(pairs: &[(&str, bool, &[i32])]) -> BTreeMap<(String, bool), BTreeSet<i32>> {
    pairs.iter().map(|(ip, r, ports)| ((ip.to_string(), *r), ports.iter().copied().collect())).collect()
}

const APP: &[(&str, &str)] = &[("app", "web")];

// §7.3: a selector Service with no pods has empty endpoints; pods appear with the right ports and
// go again when deleted.
#[tokio::test]
async fn serves_a_basic_endpoint_from_pods() {
    let fx = Fx::new().await;
    fx.service("basic", json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    let ep = fx.endpoints("basic", |e| e.is_some()).await.unwrap();
    assert!(ep.subsets.unwrap_or_default().is_empty());
    fx.slices("basic", |s| s.len() == 1).await;

    fx.ready_pod("pod1", labels(APP), json!([]), "127.244.0.11").await;
    fx.endpoints("basic", |e| e.is_some_and(|e| subsets(e) == endpoint_map(&[("127.244.0.11", true, &[8080])]))).await;
    fx.ready_pod("pod2", labels(APP), json!([]), "127.244.0.12").await;
    let want = endpoint_map(&[("127.244.0.11", true, &[8080]), ("127.244.0.12", true, &[8080])]);
    fx.endpoints("basic", |e| e.is_some_and(|e| subsets(e) == want)).await;
    let slices = fx.slices("basic", |s| ready_ips(s).len() == 2).await;
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].ports.as_ref().unwrap()[0].port, Some(8080));

    fx.delete_pod_now("pod1").await;
    fx.endpoints("basic", |e| e.is_some_and(|e| subsets(e) == endpoint_map(&[("127.244.0.12", true, &[8080])]))).await;
    fx.delete_pod_now("pod2").await;
    fx.endpoints("basic", |e| e.is_some_and(|e| subsets(e).is_empty())).await;
    let slices = fx.slices("basic", |s| s.len() == 1 && s[0].endpoints.is_empty()).await;
    assert_eq!(slices[0].ports.as_deref(), Some(&[][..]), "the placeholder has no ports");
}

// §7.4: two Service ports, each matched by a different pod through named targetPorts.
#[tokio::test]
async fn serves_multiport_endpoints_from_pods() {
    let fx = Fx::new().await;
    fx.service(
        "multi",
        json!({"selector": {"app": "web"}, "ports": [
            {"name": "portname1", "port": 80, "targetPort": "svc1"},
            {"name": "portname2", "port": 81, "targetPort": "svc2"}]}),
    )
    .await;
    fx.ready_pod("pod1", labels(APP), json!([{"name": "svc1", "containerPort": 100}]), "127.244.1.1").await;
    fx.endpoints("multi", |e| e.is_some_and(|e| subsets(e) == endpoint_map(&[("127.244.1.1", true, &[100])]))).await;
    fx.ready_pod("pod2", labels(APP), json!([{"name": "svc2", "containerPort": 101}]), "127.244.1.2").await;
    let want = endpoint_map(&[("127.244.1.1", true, &[100]), ("127.244.1.2", true, &[101])]);
    let ep = fx.endpoints("multi", |e| e.is_some_and(|e| subsets(e) == want)).await.unwrap();
    let names: BTreeSet<_> =
        ep.subsets.iter().flatten().flat_map(|s| s.ports.iter().flatten()).filter_map(|p| p.name.clone()).collect();
    assert_eq!(names, BTreeSet::from(["portname1".to_string(), "portname2".to_string()]));
    // The pods resolve to different port sets: one slice each.
    let slices = fx.slices("multi", |s| s.len() == 2 && ready_ips(s).len() == 2).await;
    for slice in &slices {
        let port = &slice.ports.as_ref().unwrap()[0];
        let ip = &slice.endpoints[0].addresses[0];
        match port.name.as_deref() {
            Some("portname1") => assert_eq!((ip.as_str(), port.port), ("127.244.1.1", Some(100))),
            Some("portname2") => assert_eq!((ip.as_str(), port.port), ("127.244.1.2", Some(101))),
            other => panic!("unexpected port {other:?}"),
        }
    }
    fx.delete_pod_now("pod1").await;
    fx.delete_pod_now("pod2").await;
    fx.endpoints("multi", |e| e.is_some_and(|e| subsets(e).is_empty())).await;
    fx.slices("multi", |s| s.len() == 1 && s[0].endpoints.is_empty()).await;
}

// §7.18: `kubernetes` has Endpoints and an EndpointSlice pointing at the API server, untouched
// by the controllers.
#[tokio::test]
async fn kubernetes_endpoints_point_at_the_api_server() {
    let fx = Fx::new().await;
    let ep = fx.api::<Endpoints>().get("kubernetes").await.expect("kubernetes Endpoints");
    let addresses: Vec<_> = ep.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).collect();
    assert_eq!(addresses.len(), 1);
    let slice = fx.api::<EndpointSlice>().get("kubernetes").await.expect("kubernetes EndpointSlice");
    assert_eq!(slice.endpoints[0].addresses, [addresses[0].ip.clone()]);
    assert_eq!(slice.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    // Not mirrored, not managed: the only slice of the Service is the API server's own.
    let all =
        fx.api::<EndpointSlice>().list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes")).await;
    assert_eq!(all.expect("list").items.len(), 1);
}

// §7.19: Endpoints and EndpointSlices are created for a Service with a selector, and removed
// after the Service is deleted (Endpoints by the API server, slices by garbage collection).
#[tokio::test]
async fn creates_and_deletes_endpoints_and_slices_with_the_service() {
    let fx = Fx::new().await;
    let svc = fx.service("lifecycle", json!({"selector": {"app": "x"}, "ports": [{"port": 80}]})).await;
    fx.endpoints("lifecycle", |e| e.is_some()).await;
    let slices = fx.slices("lifecycle", |s| s.len() == 1).await;
    assert_eq!(slices[0].metadata.owner_references.as_ref().unwrap()[0].uid, svc.metadata.uid.unwrap());
    fx.api::<Service>().delete("lifecycle", &DeleteParams::default()).await.expect("delete service");
    fx.endpoints("lifecycle", |e| e.is_none()).await;
    fx.slices("lifecycle", |s| s.is_empty()).await;
}

// §7.20: slices are labelled and owned correctly, map named targetPorts per pod, point at the
// pods, mark not-ready pods not ready; an empty Service has one slice with no ports.
#[tokio::test]
async fn slices_for_pods_matching_a_service() {
    let fx = Fx::new().await;
    let svc = fx
        .service(
            "matching",
            json!({"selector": {"app": "web"}, "ports": [{"name": "example", "port": 80, "targetPort": "example-name"}]}),
        )
        .await;
    let empty = fx.slices("matching", |s| s.len() == 1).await;
    assert_eq!(empty[0].ports.as_deref(), Some(&[][..]));
    assert!(empty[0].endpoints.is_empty());

    let pod1 = fx.pod("pod1", labels(APP), json!([{"name": "example-name", "containerPort": 3000}])).await;
    fx.status("pod1", &["127.244.2.1"], true).await;
    let pod2 = fx.pod("pod2", labels(APP), json!([{"name": "example-name", "containerPort": 3000}])).await;
    fx.status("pod2", &["127.244.2.2"], false).await;
    let slices = fx.slices("matching", |s| addresses(s).len() == 2).await;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("kubernetes.io/service-name").map(String::as_str), Some("matching"));
    assert_eq!(labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str), Some(SLICE_CONTROLLER));
    assert!(!labels.contains_key("service.kubernetes.io/headless"));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.api_version.as_str()), ("Service", "matching", "v1"));
    assert_eq!(owner.uid, svc.metadata.uid.clone().unwrap());
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert!(slice.metadata.name.as_deref().unwrap().starts_with("matching-"));
    assert!(
        slice.metadata.annotations.as_ref().unwrap().contains_key("endpoints.kubernetes.io/last-change-trigger-time")
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("example"), Some(3000), Some("TCP")));
    assert_eq!(slice.address_type, "IPv4");
    for (pod, ready) in [(&pod1, true), (&pod2, false)] {
        let ep = slice
            .endpoints
            .iter()
            .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_ref()) == pod.metadata.name.as_ref())
            .expect("endpoint for pod");
        let r = ep.target_ref.as_ref().unwrap();
        assert_eq!((r.kind.as_deref(), r.namespace.as_deref()), (Some("Pod"), Some("default")));
        assert_eq!(r.uid, pod.metadata.uid);
        let c = ep.conditions.as_ref().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(ready), Some(ready), Some(false)));
        assert_eq!(ep.node_name.as_deref(), Some(NODE));
        assert_eq!(ep.zone.as_deref(), Some("zone-a"));
    }
    // Service labels follow onto the slices.
    let patch = json!({"metadata": {"labels": {"tier": "front"}}});
    fx.api::<Service>().patch("matching", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("label");
    fx.slices("matching", |s| s.iter().all(|s| s.metadata.labels.as_ref().unwrap().get("tier").is_some())).await;
}

// §7.24: a custom Endpoints of a selectorless Service is mirrored through create, update, delete.
#[tokio::test]
async fn mirrors_a_custom_endpoints_resource() {
    let fx = Fx::new().await;
    fx.service("example-custom-endpoints", json!({"ports": [{"name": "example", "port": 80}]})).await;
    let mirrored = |done: fn(&[EndpointSlice]) -> bool| {
        let api = fx.api::<EndpointSlice>();
        async move {
            let labels = format!(
                "kubernetes.io/service-name=example-custom-endpoints,endpointslice.kubernetes.io/managed-by={MIRROR_CONTROLLER}"
            );
            wait_list(api, &labels, done).await
        }
    };
    let ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "example-custom-endpoints", "labels": {"team": "net"}},
        "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"name": "example", "port": 80, "protocol": "TCP"}]}]
    }))
    .unwrap();
    let created = fx.api::<Endpoints>().create(&PostParams::default(), &ep).await.expect("create Endpoints");
    let slices = mirrored(|s| s.len() == 1 && s[0].endpoints.len() == 1).await;
    let slice = &slices[0];
    assert_eq!(slice.endpoints[0].addresses, ["10.1.2.3"]);
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(80));
    assert_eq!(slice.metadata.labels.as_ref().unwrap().get("team").map(String::as_str), Some("net"));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), Some(owner.uid.clone())), ("Endpoints", created.metadata.uid.clone()));

    let update = json!({"subsets": [{"addresses": [{"ip": "10.2.3.4"}], "ports": [{"name": "example2", "port": 8080, "protocol": "TCP"}]}]});
    fx.api::<Endpoints>()
        .patch("example-custom-endpoints", &PatchParams::default(), &Patch::Merge(&update))
        .await
        .expect("update Endpoints");
    let slices = mirrored(|s| {
        s.len() == 1
            && s[0].endpoints[0].addresses == ["10.2.3.4"]
            && s[0].ports.as_ref().unwrap()[0].port == Some(8080)
    })
    .await;
    assert_eq!(slices[0].metadata.name, slice.metadata.name, "the slice is rewritten in place");

    fx.api::<Endpoints>().delete("example-custom-endpoints", &DeleteParams::default()).await.expect("delete");
    mirrored(|s| s.is_empty()).await;

    // Not mirrored with skip-mirror, nor once the Service has a selector.
    let mut skip = ep.clone();
    skip.metadata.labels = Some(BTreeMap::from([("endpointslice.kubernetes.io/skip-mirror".into(), "true".into())]));
    fx.api::<Endpoints>().create(&PostParams::default(), &skip).await.expect("create skip-mirror Endpoints");
    let plain = json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": null}}});
    fx.api::<Endpoints>()
        .patch("example-custom-endpoints", &PatchParams::default(), &Patch::Merge(&plain))
        .await
        .unwrap();
    mirrored(|s| s.len() == 1).await;
    let selector = json!({"spec": {"selector": {"app": "nothing"}}});
    fx.api::<Service>()
        .patch("example-custom-endpoints", &PatchParams::default(), &Patch::Merge(&selector))
        .await
        .unwrap();
    mirrored(|s| s.is_empty()).await;
}

// A named targetPort no container exposes: the port is left out for that pod.
#[tokio::test]
async fn named_port_matching_nothing_is_left_out() {
    let fx = Fx::new().await;
    fx.service(
        "nomatch",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "nope"}]}),
    )
    .await;
    fx.ready_pod("pod1", labels(APP), json!([{"name": "http", "containerPort": 8080}]), "127.244.3.1").await;
    let slices = fx.slices("nomatch", |s| ready_ips(s).len() == 1).await;
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].ports.as_deref(), Some(&[][..]));
    // No port, so nothing for the Endpoints (a Service with ports is not headless).
    let ep = fx.endpoints("nomatch", |e| e.is_some()).await.unwrap();
    assert!(ep.subsets.unwrap_or_default().is_empty());
}

// Pods resolving a named port to different numbers land in different slices.
#[tokio::test]
async fn different_port_numbers_different_slices() {
    let fx = Fx::new().await;
    fx.service(
        "split",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    fx.ready_pod("a1", labels(APP), json!([{"name": "http", "containerPort": 8080}]), "127.244.4.1").await;
    fx.ready_pod("a2", labels(APP), json!([{"name": "http", "containerPort": 8080}]), "127.244.4.2").await;
    fx.ready_pod("b1", labels(APP), json!([{"name": "http", "containerPort": 9090}]), "127.244.4.3").await;
    let slices = fx.slices("split", |s| ready_ips(s).len() == 3).await;
    let mut by_port: Vec<(Option<i32>, usize)> =
        slices.iter().map(|s| (s.ports.as_ref().unwrap()[0].port, s.endpoints.len())).collect();
    by_port.sort();
    assert_eq!(by_port, [(Some(8080), 2), (Some(9090), 1)]);
    let want =
        endpoint_map(&[("127.244.4.1", true, &[8080]), ("127.244.4.2", true, &[8080]), ("127.244.4.3", true, &[9090])]);
    fx.endpoints("split", |e| e.is_some_and(|e| subsets(e) == want)).await;
}

async fn many_pods(fx: &Fx, n: usize, prefix: &str, app: &str) {
    let pods: Vec<usize> = (0..n).collect();
    futures::stream::iter(pods)
        .for_each_concurrent(32, |i| async move {
            let name = format!("{prefix}{i}");
            fx.pod(&name, labels(&[("app", app)]), json!([])).await;
            fx.status(&name, &[&format!("127.245.{}.{}", i / 250, i % 250 + 1)], true).await;
        })
        .await;
}

// 250 pods with at most 100 endpoints per slice: 3 slices, fullest first; changing one pod
// rewrites exactly one slice.
#[tokio::test]
async fn packs_slices_and_one_change_rewrites_one_slice() {
    let fx = Fx::new().await;
    fx.service("many", json!({"selector": {"app": "many"}, "ports": [{"port": 80}]})).await;
    many_pods(&fx, 250, "m", "many").await;
    let slices = fx.slices("many", |s| ready_ips(s).len() == 250).await;
    // As pods arrive in batches the packing differs (as upstream's), but never past the maximum.
    assert!(slices.len() >= 3 && slices.iter().all(|s| s.endpoints.len() <= 100), "{:?}", sizes(&slices));
    assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 250);
    let before: BTreeMap<String, String> = slices
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.metadata.resource_version.clone().unwrap()))
        .collect();

    // A change no endpoint shows (an annotation): no write.
    let patch = json!({"metadata": {"annotations": {"x": "y"}}});
    fx.api::<Pod>().patch("m7", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    // One pod not ready: one slice rewritten.
    fx.status("m7", &["127.245.0.8"], false).await;
    let slices = fx.slices("many", |s| ready_ips(s).len() == 249).await;
    let changed: Vec<_> = slices
        .iter()
        .filter(|s| before.get(s.metadata.name.as_deref().unwrap()) != s.metadata.resource_version.as_ref())
        .collect();
    assert_eq!(changed.len(), 1, "one slice rewritten");
    assert_eq!(slices.len(), before.len());
    let m7 = changed[0].endpoints.iter().find(|e| e.addresses == ["127.245.0.8"]).expect("m7 stays in its slice");
    assert_eq!(m7.conditions.as_ref().unwrap().serving, Some(false));
}

// publishNotReadyAddresses: not-ready pods are ready in slices and addresses in Endpoints.
#[tokio::test]
async fn publish_not_ready_addresses() {
    let fx = Fx::new().await;
    fx.service(
        "publish",
        json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80}], "clusterIP": "None"}),
    )
    .await;
    fx.pod("p", labels(APP), json!([])).await;
    fx.status("p", &["127.244.5.1"], false).await;
    let slices = fx.slices("publish", |s| addresses(s).len() == 1).await;
    let c = slices[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!((c.ready, c.serving, c.terminating), (Some(true), Some(false), Some(false)));
    assert!(slices[0].metadata.labels.as_ref().unwrap().contains_key("service.kubernetes.io/headless"));
    let ep = fx.endpoints("publish", |e| e.is_some_and(|e| !subsets(e).is_empty())).await.unwrap();
    assert_eq!(subsets(&ep), endpoint_map(&[("127.244.5.1", true, &[80])]));
    assert!(ep.metadata.labels.as_ref().unwrap().contains_key("service.kubernetes.io/headless"));
}

// Terminating pods: serving+terminating (not ready) in slices; left out of Endpoints unless
// publishNotReadyAddresses.
#[tokio::test]
async fn terminating_pods() {
    let fx = Fx::new().await;
    fx.service("term", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    fx.service(
        "term-publish",
        json!({"selector": {"app": "web"}, "ports": [{"port": 80}], "publishNotReadyAddresses": true}),
    )
    .await;
    fx.ready_pod("p", labels(APP), json!([]), "127.244.6.1").await;
    fx.endpoints("term", |e| e.is_some_and(|e| subsets(e).len() == 1)).await;
    // Bound to a node: deletion is graceful, the pod stays terminating.
    fx.api::<Pod>().delete("p", &DeleteParams::default().grace_period(300)).await.expect("delete");
    let slices = fx
        .slices("term", |s| {
            s.iter().flat_map(|s| &s.endpoints).any(|e| e.conditions.as_ref().and_then(|c| c.terminating) == Some(true))
        })
        .await;
    let c = slices[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
    fx.endpoints("term", |e| e.is_some_and(|e| subsets(e).is_empty())).await;
    fx.endpoints("term-publish", |e| e.is_some_and(|e| subsets(e) == endpoint_map(&[("127.244.6.1", true, &[80])])))
        .await;
}

// Dual stack: one slice per family; Endpoints carry the primary family only.
#[tokio::test]
async fn dual_stack_slices_per_family() {
    let fx = Fx::with(Config { service_cidr: "127.96.0.0/12,fd00:10:96::/112".into(), ..Config::ephemeral() }).await;
    fx.service(
        "dual",
        json!({"selector": {"app": "web"}, "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"], "ports": [{"port": 80}]}),
    )
    .await;
    fx.pod("p", labels(APP), json!([])).await;
    fx.status("p", &["127.244.7.1", "fd00:244::7"], true).await;
    let slices = fx.slices("dual", |s| s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)).await;
    for s in &slices {
        let want = if s.address_type == "IPv6" { "fd00:244::7" } else { "127.244.7.1" };
        assert_eq!(s.endpoints[0].addresses, [want]);
    }
    fx.endpoints("dual", |e| e.is_some_and(|e| subsets(e) == endpoint_map(&[("fd00:244::7", true, &[80])]))).await;
}

// A selector matching 1,500 pods: Endpoints truncated to 1,000 with the over-capacity
// annotation; every pod in the slices.
#[tokio::test]
async fn selector_matching_1500_pods() {
    let fx = Fx::new().await;
    fx.service("huge", json!({"selector": {"app": "huge"}, "ports": [{"port": 80}]})).await;
    many_pods(&fx, 1500, "h", "huge").await;
    let slices = fx.slices("huge", |s| ready_ips(s).len() == 1500).await;
    assert!(slices.len() >= 15 && slices.iter().all(|s| s.endpoints.len() <= 100), "{:?}", sizes(&slices));
    let ep = fx
        .endpoints("huge", |e| {
            e.is_some_and(|e| {
                e.metadata.annotations.as_ref().and_then(|a| a.get("endpoints.kubernetes.io/over-capacity")).is_some()
            })
        })
        .await
        .unwrap();
    assert_eq!(ep.metadata.annotations.as_ref().unwrap()["endpoints.kubernetes.io/over-capacity"], "truncated");
    assert_eq!(subsets(&ep).len(), 1000);
}

// A pod on a Node nobody knows is left out (with a Warning Event) until the Node appears.
#[tokio::test]
async fn pod_on_unknown_node_waits_for_the_node() {
    let fx = Fx::new().await;
    fx.service("ghostly", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    fx.ready_pod("known", labels(APP), json!([]), "127.244.8.1").await;
    let spec = json!({"nodeName": "ghost-node", "containers": [{"name": "c", "image": "x"}]});
    fx.pod_spec("ghost", labels(APP), spec).await;
    fx.status("ghost", &["127.244.8.2"], true).await;
    fx.slices("ghostly", |s| ready_ips(s).len() == 1).await;
    let events = wait_list(fx.api::<Event>(), "", |e: &[Event]| {
        e.iter().any(|e| e.reason.as_deref() == Some("FailedToUpdateEndpointSlices"))
    })
    .await;
    let event = events.iter().find(|e| e.reason.as_deref() == Some("FailedToUpdateEndpointSlices")).unwrap();
    assert_eq!(event.involved_object.name.as_deref(), Some("ghostly"));
    assert!(event.message.as_deref().unwrap().contains("Node ghost-node Not Found"), "{event:?}");
    fx.node("ghost-node", None).await;
    let slices = fx.slices("ghostly", |s| ready_ips(s).len() == 2).await;
    let ghost = slices.iter().flat_map(|s| &s.endpoints).find(|e| e.addresses == ["127.244.8.2"]).unwrap();
    assert_eq!(ghost.zone, None);
}

// A label change moves a pod from one Service to another; hostname follows the subdomain rule.
#[tokio::test]
async fn relabelled_pod_moves_between_services() {
    let fx = Fx::new().await;
    fx.service("blue", json!({"selector": {"color": "blue"}, "clusterIP": "None", "ports": [{"port": 80}]})).await;
    fx.service("green", json!({"selector": {"color": "green"}, "ports": [{"port": 80}]})).await;
    let spec =
        json!({"nodeName": NODE, "hostname": "h1", "subdomain": "blue", "containers": [{"name": "c", "image": "x"}]});
    fx.pod_spec("p", labels(&[("color", "blue")]), spec).await;
    fx.status("p", &["127.244.9.1"], true).await;
    let slices = fx.slices("blue", |s| ready_ips(s).len() == 1).await;
    assert_eq!(slices[0].endpoints[0].hostname.as_deref(), Some("h1"));
    let ep = fx.endpoints("blue", |e| e.is_some_and(|e| !subsets(e).is_empty())).await.unwrap();
    assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].hostname.as_deref(), Some("h1"));
    let patch = json!({"metadata": {"labels": {"color": "green"}}});
    fx.api::<Pod>().patch("p", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    fx.slices("blue", |s| addresses(s).is_empty()).await;
    let slices = fx.slices("green", |s| ready_ips(s).len() == 1).await;
    assert_eq!(slices[0].endpoints[0].hostname, None, "the subdomain names another Service");
}

// Services without selectors and ExternalName Services get nothing from the controllers.
#[tokio::test]
async fn selectorless_and_external_name_services_are_left_alone() {
    let fx = Fx::new().await;
    fx.service("manual", json!({"ports": [{"port": 80}]})).await;
    fx.service("ext", json!({"type": "ExternalName", "externalName": "example.com", "selector": {"app": "web"}})).await;
    fx.ready_pod("p", labels(APP), json!([]), "127.244.10.1").await;
    // A barrier: a Service created after them has its slice, so they have been synced.
    fx.service("barrier", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    fx.slices("barrier", |s| ready_ips(s).len() == 1).await;
    fx.endpoints("barrier", |e| e.is_some()).await;
    for name in ["manual", "ext"] {
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        assert!(fx.api::<EndpointSlice>().list(&params).await.unwrap().items.is_empty(), "{name} has no slices");
        assert!(fx.api::<Endpoints>().get_opt(name).await.unwrap().is_none(), "{name} has no Endpoints");
    }
}

// Once synced, nothing is rewritten: no write loops between the controllers and the API server.
#[tokio::test]
async fn steady_state_writes_nothing() {
    let fx = Fx::with(Config { service_cidr: "127.96.0.0/12,fd00:10:96::/112".into(), ..Config::ephemeral() }).await;
    fx.service(
        "steady",
        json!({"selector": {"app": "web"}, "ipFamilyPolicy": "PreferDualStack",
               "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
    )
    .await;
    fx.service("steady-headless", json!({"selector": {"app": "web"}, "clusterIP": "None"})).await;
    fx.pod("a", labels(APP), json!([{"name": "http", "containerPort": 8080}])).await;
    fx.status("a", &["127.244.11.1", "fd00:244::b1"], true).await;
    fx.pod("b", labels(APP), json!([])).await;
    fx.status("b", &["127.244.11.2", "fd00:244::b2"], false).await;
    fx.slices("steady", |s| addresses(s).len() == 4).await;
    fx.slices("steady-headless", |s| addresses(s).len() == 2).await;
    fx.endpoints("steady", |e| e.is_some_and(|e| subsets(e).len() == 2)).await;
    fx.endpoints("steady-headless", |e| e.is_some_and(|e| subsets(e).len() == 2)).await;
    let versions = || async {
        let slices = fx.api::<EndpointSlice>().list(&ListParams::default()).await.unwrap().items;
        let eps = fx.api::<Endpoints>().list(&ListParams::default()).await.unwrap().items;
        let rv = |m: &kube::api::ObjectMeta| (m.name.clone().unwrap(), m.resource_version.clone().unwrap());
        (
            slices.iter().map(|s| rv(&s.metadata)).collect::<BTreeSet<_>>(),
            eps.iter().map(|e| rv(&e.metadata)).collect::<BTreeSet<_>>(),
        )
    };
    let before = versions().await;
    // A barrier: a later Service fully synced means the earlier changes were handled.
    fx.service("barrier", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    fx.slices("barrier", |s| addresses(s).len() == 2).await;
    fx.endpoints("barrier", |e| e.is_some_and(|e| !subsets(e).is_empty())).await;
    let (slices, eps) = versions().await;
    assert!(before.0.is_subset(&slices), "slices were rewritten: {:?} vs {:?}", before.0, slices);
    assert!(before.1.is_subset(&eps), "Endpoints were rewritten: {:?} vs {:?}", before.1, eps);
}

// `--max-endpoints-per-slice`: 1–1000, and slices hold no more than it says.
#[tokio::test]
async fn max_endpoints_per_slice_is_validated_and_honoured() {
    for bad in [0, 1001] {
        let config = Config { max_endpoints_per_slice: bad, ..Config::ephemeral() };
        let err = Cluster::start_with(config).await.err().expect("refused").to_string();
        assert!(err.contains("--max-endpoints-per-slice") && err.contains("1-1000"), "{err}");
    }
    let fx = Fx::with(Config { max_endpoints_per_slice: 7, ..Config::ephemeral() }).await;
    fx.service("small", json!({"selector": {"app": "small"}, "ports": [{"port": 80}]})).await;
    many_pods(&fx, 30, "s", "small").await;
    let slices = fx.slices("small", |s| ready_ips(s).len() == 30).await;
    assert!(slices.len() >= 5 && slices.iter().all(|s| s.endpoints.len() <= 7), "{:?}", sizes(&slices));
}
