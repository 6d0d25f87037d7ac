//! kube-rs against a real `kplane serve` over HTTPS: typed lists with label selectors, the
//! runtime watcher, optimistic concurrency, generateName, paging, and authentication.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kplane_e2e::Server;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn names(list: &kube::core::ObjectList<ConfigMap>) -> BTreeSet<String> {
    list.items.iter().filter_map(|c| c.metadata.name.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

#[tokio::test]
async fn list_with_label_selectors() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let pp = PostParams::default();
    cms.create(&pp, &configmap("a1", &[("app", "a"), ("tier", "web")])).await.unwrap();
    cms.create(&pp, &configmap("a2", &[("app", "a")])).await.unwrap();
    cms.create(&pp, &configmap("b1", &[("app", "b"), ("tier", "db")])).await.unwrap();
    cms.create(&pp, &configmap("c1", &[])).await.unwrap();

    let cases: &[(&str, &[&str])] = &[
        ("app=a", &["a1", "a2"]),
        ("app==b", &["b1"]),
        ("app!=a", &["b1", "c1"]),
        ("app in (a,b)", &["a1", "a2", "b1"]),
        ("app notin (a)", &["b1", "c1"]),
        ("tier", &["a1", "b1"]),
        ("!tier", &["a2", "c1"]),
        ("app=a,tier=web", &["a1"]),
        ("app=a,!tier", &["a2"]),
        ("app=zzz", &[]),
    ];
    for (selector, want) in cases {
        let list = cms.list(&ListParams::default().labels(selector)).await.unwrap();
        assert_eq!(names(&list), set(want), "labelSelector {selector:?}");
    }
    // Across namespaces too.
    let all: Api<ConfigMap> = Api::all(server.client().await);
    let list = all.list(&ListParams::default().labels("app=a")).await.unwrap();
    assert_eq!(names(&list), set(&["a1", "a2"]));
    // And with a field selector.
    let list = cms.list(&ListParams::default().fields("metadata.name=b1")).await.unwrap();
    assert_eq!(names(&list), set(&["b1"]));
}

#[tokio::test]
async fn runtime_watcher_sees_add_modify_delete() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    cms.create(&PostParams::default(), &configmap("existing", &[("w", "1")])).await.unwrap();

    let stream = watcher(cms.clone(), watcher::Config::default().labels("w=1"));
    let mut stream = std::pin::pin!(stream);
    let mut next = async || {
        tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .expect("no watcher event within the deadline")
            .expect("watcher error")
            .expect("watcher stream ended")
    };

    // The initial list: Init, the existing object, InitDone.
    assert!(matches!(next().await, watcher::Event::Init));
    match next().await {
        watcher::Event::InitApply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("existing")),
        other => panic!("expected InitApply(existing), got {other:?}"),
    }
    assert!(matches!(next().await, watcher::Event::InitDone));

    let created = cms.create(&PostParams::default(), &configmap("watched", &[("w", "1")])).await.unwrap();
    match next().await {
        watcher::Event::Apply(cm) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("watched"));
            assert_eq!(cm.metadata.uid, created.metadata.uid);
            assert_eq!(cm.metadata.resource_version, created.metadata.resource_version);
        }
        other => panic!("expected Apply(watched) for the create, got {other:?}"),
    }

    let patch = serde_json::json!({"data": {"k": "changed"}});
    let modified = cms.patch("watched", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    match next().await {
        watcher::Event::Apply(cm) => {
            assert_eq!(cm.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("changed"));
            assert_eq!(cm.metadata.resource_version, modified.metadata.resource_version);
        }
        other => panic!("expected Apply(watched) for the modification, got {other:?}"),
    }

    // Not matching the selector: not seen.
    cms.create(&PostParams::default(), &configmap("other", &[("w", "2")])).await.unwrap();

    cms.delete("watched", &DeleteParams::default()).await.unwrap();
    match next().await {
        watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("watched")),
        other => panic!("expected Delete(watched), got {other:?}"),
    }
}

#[tokio::test]
async fn raw_watch_event_types() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let rv = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let events = cms.watch(&WatchParams::default().timeout(60), &rv).await.unwrap();
    let mut events = std::pin::pin!(events);

    let created = cms.create(&PostParams::default(), &configmap("raw", &[])).await.unwrap();
    let patch = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
    let modified = cms.patch("raw", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    cms.delete("raw", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .expect("no watch event within the deadline")
            .expect("watch error")
            .expect("watch ended");
        match event {
            WatchEvent::Added(cm) => seen.push(("ADDED", cm.metadata.resource_version)),
            WatchEvent::Modified(cm) => seen.push(("MODIFIED", cm.metadata.resource_version)),
            WatchEvent::Deleted(cm) => seen.push(("DELETED", cm.metadata.resource_version)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
        }
    }
    assert_eq!(seen[0], ("ADDED", created.metadata.resource_version.clone()));
    assert_eq!(seen[1], ("MODIFIED", modified.metadata.resource_version.clone()));
    assert_eq!(seen[2].0, "DELETED");
    let rvs: Vec<u64> = seen.iter().map(|(_, rv)| rv.as_deref().unwrap().parse().unwrap()).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "resourceVersions must increase: {rvs:?}");
}

#[tokio::test]
async fn stale_update_conflicts() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let original = cms.create(&PostParams::default(), &configmap("occ", &[])).await.unwrap();

    let mut first = original.clone();
    first.data = Some(BTreeMap::from([("k".to_string(), "first".to_string())]));
    let updated = cms.replace("occ", &PostParams::default(), &first).await.unwrap();
    assert_ne!(updated.metadata.resource_version, original.metadata.resource_version);

    // Still carrying the original resourceVersion: 409 Conflict, nothing written.
    let mut stale = original.clone();
    stale.data = Some(BTreeMap::from([("k".to_string(), "stale".to_string())]));
    let status = api_status(cms.replace("occ", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "Conflict", "{status:?}");
    assert!(status.message.contains("the object has been modified"), "{status:?}");

    let current = cms.get("occ").await.unwrap();
    assert_eq!(current.data.unwrap()["k"], "first");
    assert_eq!(current.metadata.resource_version, updated.metadata.resource_version);

    // A merge patch naming a stale resourceVersion conflicts as well.
    let patch =
        serde_json::json!({"metadata": {"resourceVersion": original.metadata.resource_version}, "data": {"k": "p"}});
    let status = api_status(cms.patch("occ", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err());
    assert_eq!(status.code, 409, "{status:?}");
}

#[tokio::test]
async fn create_with_generate_name() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let template = ConfigMap {
        metadata: ObjectMeta { generate_name: Some("gen-".to_string()), ..Default::default() },
        ..Default::default()
    };
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let created = cms.create(&PostParams::default(), &template).await.unwrap();
        let name = created.metadata.name.clone().unwrap();
        assert!(name.starts_with("gen-") && name.len() > "gen-".len(), "generated name {name:?}");
        assert_eq!(created.metadata.generate_name.as_deref(), Some("gen-"));
        assert!(created.metadata.uid.is_some());
        assert_eq!(cms.get(&name).await.unwrap().metadata.uid, created.metadata.uid);
        assert!(seen.insert(name), "generated names must differ");
    }
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list), seen);
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let server = Server::start_ephemeral();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut want = BTreeSet::new();
    for i in 0..23 {
        let name = format!("page-{i:02}");
        cms.create(&PostParams::default(), &configmap(&name, &[("paged", "yes")])).await.unwrap();
        want.insert(name);
    }
    cms.create(&PostParams::default(), &configmap("unpaged", &[])).await.unwrap();

    let mut got = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().labels("paged=yes").limit(5);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 5, "a page holds at most `limit` items");
        pages.push(page.items.len());
        got.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        let rv = page.metadata.resource_version.clone();
        assert!(rv.is_some());
        if first_rv.is_none() {
            first_rv = rv;
            // Writes between pages do not disturb the listing.
            cms.create(&PostParams::default(), &configmap("late", &[])).await.unwrap();
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages.len() < 20, "paging does not terminate");
    }
    assert_eq!(pages, vec![5, 5, 5, 5, 3], "page sizes");
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "an object appeared on two pages: {got:?}");
    assert_eq!(unique, want);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "items come in key order");

    // A bad continue token is a 400.
    let status = api_status(cms.list(&ListParams::default().limit(5).continue_token("garbage")).await.unwrap_err());
    assert_eq!(status.code, 400, "{status:?}");
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let server = Server::start_ephemeral();
    let bad = server.client_with_token("not-the-token").await;
    let cms: Api<ConfigMap> = Api::namespaced(bad, "default");
    let status = api_status(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(status.code, 401, "{status:?}");
    assert_eq!(status.reason, "Unauthorized", "{status:?}");
    let status = api_status(cms.create(&PostParams::default(), &configmap("nope", &[])).await.unwrap_err());
    assert_eq!(status.code, 401, "{status:?}");

    // The right token still works, and nothing was created.
    let good: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    assert!(good.get_opt("nope").await.unwrap().is_none());
}
