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
