//! Durability across a crash: every acknowledged write survives `kill -9`, unchanged, and
//! resourceVersions keep increasing after the restart.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kplane_e2e::Server;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use std::collections::BTreeMap;
use std::time::Duration;

const COUNT: usize = 200;
const CONCURRENCY: usize = 32;

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("batch".to_string(), "crash".to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("payload".to_string(), name.repeat(8))])),
        ..Default::default()
    }
}

/// name → (uid, resourceVersion)
type Seen = BTreeMap<String, (String, u64)>;

fn record(cm: &ConfigMap) -> (String, (String, u64)) {
    let m = &cm.metadata;
    let rv = m.resource_version.as_deref().expect("resourceVersion").parse().expect("numeric resourceVersion");
    (m.name.clone().unwrap(), (m.uid.clone().expect("uid"), rv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_data_dir(data.path());
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let rv_before_writes = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();

    let created: Vec<ConfigMap> = futures::stream::iter(0..COUNT)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let name = format!("crash-{i:03}");
                cms.create(&PostParams::default(), &configmap(&name))
                    .await
                    .unwrap_or_else(|e| panic!("creating {name}: {e}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let seen: Seen = created.iter().map(record).collect();
    assert_eq!(seen.len(), COUNT);
    let distinct_rvs: std::collections::BTreeSet<u64> = seen.values().map(|(_, rv)| *rv).collect();
    assert_eq!(distinct_rvs.len(), COUNT, "every write gets its own resourceVersion");
    let max_seen = *distinct_rvs.last().unwrap();

    server.kill_9();
    assert!(!server.is_running());
    drop(server);

    let server = Server::start_with_data_dir(data.path());
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let list = cms.list(&ListParams::default().labels("batch=crash")).await.unwrap();
    let after: Seen = list.items.iter().map(record).collect();
    let missing: Vec<&String> = seen.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} acknowledged objects lost: {missing:?}", missing.len());
    for (name, before) in &seen {
        assert_eq!(&after[name], before, "{name}: (uid, resourceVersion) changed across the restart");
    }
    for cm in &list.items {
        let name = cm.metadata.name.as_deref().unwrap();
        assert_eq!(cm.data.as_ref().unwrap()["payload"], name.repeat(8), "{name}: data changed");
    }
    let list_rv: u64 = list.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(list_rv >= max_seen, "list resourceVersion {list_rv} is behind the last acknowledged write {max_seen}");

    // A watch from before the crash either replays every write since, or is told to re-list
    // (410 Expired): it never silently skips what it missed.
    let from_before = cms.watch(&WatchParams::default().timeout(5), &rv_before_writes).await.unwrap();
    let replayed: Vec<WatchEvent<ConfigMap>> = tokio::time::timeout(Duration::from_secs(30), from_before.try_collect())
        .await
        .expect("the watch from before the crash did not end by its timeoutSeconds")
        .expect("watch error");
    match replayed.first() {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410, "{status:?}"),
        _ => {
            let added: Seen = replayed
                .iter()
                .filter_map(|e| if let WatchEvent::Added(cm) = e { Some(record(cm)) } else { None })
                .collect();
            assert_eq!(added, seen, "a watch from before the crash must replay every write (or answer 410)");
        }
    }

    // A watch from the list's resourceVersion sees the next write, and nothing from before.
    let events = cms.watch(&WatchParams::default().timeout(60), &list_rv.to_string()).await.unwrap();
    let mut events = std::pin::pin!(events);

    let next = cms.create(&PostParams::default(), &configmap("after-restart")).await.unwrap();
    let (_, (_, rv)) = record(&next);
    assert!(rv > max_seen, "the first write after the restart got resourceVersion {rv}, not above {max_seen}");

    let event = tokio::time::timeout(Duration::from_secs(30), events.try_next())
        .await
        .expect("no watch event within 30s")
        .expect("watch error")
        .expect("watch ended");
    match event {
        WatchEvent::Added(cm) => assert_eq!(record(&cm), record(&next)),
        other => panic!("expected ADDED after-restart, got {other:?}"),
    }
    let one = cms.get("crash-000").await.unwrap();
    assert_eq!(record(&one).1, seen["crash-000"]);
}
