//! The embedding API: `kplane::Cluster` in-process, driven through its `kube::Client`.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(BTreeMap::from([("app".to_string(), "demo".to_string())]));
    cm.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    cm
}

#[tokio::test]
async fn in_process_cluster_serves_kube_rs() {
    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == ns), "{ns} missing from {names:?}");
    }

    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let created = cms.create(&PostParams::default(), &config_map("one")).await.expect("create");
    assert!(created.metadata.uid.is_some());
    let err = cms.create(&PostParams::default(), &config_map("one")).await.expect_err("duplicate");
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("unexpected {other:?}"),
    }
    let listed = cms.list(&ListParams::default().labels("app=demo")).await.expect("list");
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test]
async fn watcher_sees_changes() {
    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    // The initial list completes before anything exists.
    loop {
        match events.try_next().await.expect("watch ok").expect("stream open") {
            Event::InitDone => break,
            _ => continue,
        }
    }
    cms.create(&PostParams::default(), &config_map("watched")).await.expect("create");
    let deadline = tokio::time::Duration::from_secs(5);
    let seen = tokio::time::timeout(deadline, async {
        loop {
            if let Some(Event::Apply(cm)) = events.try_next().await.expect("watch ok") {
                return cm.metadata.name;
            }
        }
    })
    .await
    .expect("event within the deadline");
    assert_eq!(seen.as_deref(), Some("watched"));
}

/// One store of Events, two APIs: what a kube-rs `Recorder` writes (`events.k8s.io/v1`) is what
/// `kubectl describe` reads (core/v1, by `involvedObject` field selectors), and the reverse.
#[tokio::test]
async fn events_are_one_resource_in_both_apis() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    use kube::Resource;
    use kube::runtime::events::{Event as Published, EventType, Recorder, Reporter};

    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let client = cluster.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms.create(&PostParams::default(), &config_map("noted")).await.expect("create");
    let reporter = Reporter { controller: "demo-controller".into(), instance: Some("demo-1".into()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let published = Published {
        type_: EventType::Warning,
        reason: "Misconfigured".into(),
        note: Some("key k is deprecated".into()),
        action: "Check".into(),
        secondary: None,
    };
    recorder.publish(&published, &cm.object_ref(&())).await.expect("publish");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=noted,involvedObject.kind=ConfigMap"))
        .await
        .expect("list core events");
    assert_eq!(found.items.len(), 1, "{found:?}");
    let e = &found.items[0];
    assert_eq!(e.message.as_deref(), Some("key k is deprecated"));
    assert_eq!((e.reason.as_deref(), e.type_.as_deref()), (Some("Misconfigured"), Some("Warning")));
    assert_eq!(e.reporting_component.as_deref(), Some("demo-controller"));
    assert_eq!(e.involved_object.uid, cm.metadata.uid);

    // The reverse: a core/v1 Event is read, listed and watched as events.k8s.io/v1.
    let mut legacy = e.clone();
    legacy.metadata = kube::api::ObjectMeta { name: Some("noted.legacy".into()), ..Default::default() };
    legacy.message = Some("written as core/v1".into());
    core.create(&PostParams::default(), &legacy).await.expect("create core event");
    let events: Api<Event> = Api::namespaced(client, "default");
    let got = events.get("noted.legacy").await.expect("get as events.k8s.io");
    assert_eq!(got.note.as_deref(), Some("written as core/v1"));
    assert_eq!(got.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("noted"));
    let by_regarding = events.list(&ListParams::default().fields("regarding.name=noted")).await.expect("list");
    assert_eq!(by_regarding.items.len(), 2);
}

/// The built-in components write as their upstream names, so managedFields says who owns what.
#[tokio::test]
async fn components_write_as_their_upstream_field_managers() {
    use k8s_openapi::api::core::v1::{Node, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let managers = |fields: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>>| {
        fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect::<Vec<_>>()
    };
    let kubernetes =
        Api::<Service>::namespaced(cluster.client(), "default").get("kubernetes").await.expect("kubernetes");
    assert_eq!(managers(kubernetes.metadata.managed_fields), ["kube-apiserver"]);
    let node = Api::<Node>::all(cluster.client()).list(&ListParams::default()).await.expect("nodes").items.pop();
    let node = node.expect("the node agent registered its Node");
    let node_managers = managers(node.metadata.managed_fields);
    assert!(!node_managers.is_empty() && node_managers.iter().all(|m| m == "kubelet"), "{node_managers:?}");

    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let svc = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .expect("service");
    services.create(&PostParams::default(), &svc).await.expect("create");
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
    let params = ListParams::default().labels("kubernetes.io/service-name=web");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let slice = loop {
        if let Some(s) = slices.list(&params).await.expect("list").items.pop() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no EndpointSlice for web");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(managers(slice.metadata.managed_fields), ["kube-controller-manager"]);
}
