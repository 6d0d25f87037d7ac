//! The garbage collector (`pkg/controller/garbagecollector`, `garbagecollector.go`): one
//! metadata watch per deletable resource feeds a graph of `ownerReferences` keyed by UID
//! ([`graph`]); workers delete dependents whose owners are all gone (background), delete the
//! dependents of owners deleting in the foreground and then release those owners, and orphan the
//! dependents of owners deleted with `orphan`. Owner references that cross namespaces are
//! reported as `OwnerRefInvalidNamespace` Warning events. Everything goes through the API, so it
//! runs against any cluster.

mod graph;

pub use graph::{FOREGROUND, ORPHAN, ObjectRef};

use crate::discovery::{Discovered, ServedResource, discover};
use crate::workqueue::WorkQueue;
use futures::StreamExt;
use graph::{Change, Effects, Graph, Node, Observed};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::{AbortHandle, JoinSet};

/// The component named in the events it records.
const COMPONENT: &str = "garbage-collector-controller";
/// Owners verified absent, remembered (`absentOwnerCache`, 500 entries upstream).
const ABSENT_CACHE: usize = 500;
/// Tries of a read-modify-patch that meets conflicts (`retry.DefaultBackoff` has 4 steps).
const PATCH_TRIES: usize = 5;
/// Least time between two discovery reads for kinds owner references name but nobody serves.
const REDISCOVER: Duration = Duration::from_secs(5);

/// How the collector runs.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Workers deleting dependents (`--concurrent-gc-syncs`, 20 upstream).
    pub delete_workers: usize,
    /// Workers orphaning dependents.
    pub orphan_workers: usize,
    /// How often discovery is read again for new kinds (30 s upstream).
    pub resync: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self { delete_workers: 8, orphan_workers: 2, resync: Duration::from_secs(30) }
    }
}

#[derive(Debug, thiserror::Error)]
enum GcError {
    #[error("enqueued virtual delete event")]
    VirtualDelete,
    #[error("cluster-scoped objects cannot refer to namespaced owners")]
    NamespacedOwnerOfClusterScoped,
    #[error("unable to get REST mapping for {0}")]
    Mapping(String),
    #[error("updateMaxRetries({PATCH_TRIES}) has reached. The garbage collector will retry later for {0}")]
    Conflicts(ObjectRef),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// A worker's verdict on an item (`workQueueItemAction`).
enum Action {
    Forget,
    Requeue,
}

/// The garbage collector. [`GarbageCollector::run`] runs it until the future is dropped.
pub struct GarbageCollector {
    inner: Arc<Inner>,
    changes: mpsc::UnboundedReceiver<Change>,
    config: GcConfig,
}

struct Inner {
    client: Client,
    graph: Mutex<Graph>,
    to_delete: Arc<WorkQueue<String>>,
    to_orphan: Arc<WorkQueue<String>>,
    absent: Mutex<AbsentCache>,
    resources: RwLock<Arc<Discovered>>,
    /// When discovery was last read for an unknown kind (read at most every [`REDISCOVER`]).
    rediscovered: Mutex<Option<tokio::time::Instant>>,
    changes: mpsc::UnboundedSender<Change>,
    deletions: broadcast::Sender<String>,
    reported: Mutex<HashSet<(String, String)>>,
}

impl GarbageCollector {
    pub fn new(client: Client, config: GcConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let backoff = |base| WorkQueue::new(Duration::from_millis(base), Duration::from_secs(60));
        let inner = Inner {
            client,
            graph: Mutex::new(Graph::default()),
            to_delete: backoff(5),
            to_orphan: backoff(5),
            absent: Mutex::new(AbsentCache::default()),
            resources: RwLock::new(Arc::new(Discovered::default())),
            rediscovered: Mutex::new(None),
            changes: tx,
            deletions: broadcast::channel(4096).0,
            reported: Mutex::new(HashSet::new()),
        };
        Self { inner: Arc::new(inner), changes: rx, config }
    }

    /// Namespaces in which the collector saw an object deleted (the namespace controller waits
    /// on these instead of polling).
    pub fn deletions(&self) -> broadcast::Receiver<String> {
        self.inner.deletions.subscribe()
    }

    /// Watches every deletable kind and collects garbage until dropped.
    pub async fn run(self) {
        let Self { inner, mut changes, config } = self;
        let mut tasks = JoinSet::new();
        let builder = inner.clone();
        tasks.spawn(async move {
            while let Some(change) = changes.recv().await {
                let fx = lock(&builder.graph).process(change);
                builder.apply(fx);
            }
        });

        let (synced_tx, mut synced_rx) = mpsc::unbounded_channel::<String>();
        let mut monitors: HashMap<String, AbortHandle> = HashMap::new();
        let mut wait = Duration::from_millis(50);
        loop {
            if inner.resync_monitors(&mut tasks, &mut monitors, &synced_tx).await {
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        // Workers start once every monitor has listed (`WaitForNamedCacheSync`).
        let mut synced = HashSet::new();
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        while synced.len() < monitors.len() {
            tokio::select! {
                Some(key) = synced_rx.recv() => { synced.insert(key); }
                _ = &mut deadline => {
                    tracing::warn!("garbage collector: not every monitor synced; collecting anyway");
                    break;
                }
            }
        }
        for _ in 0..config.delete_workers.max(1) {
            tasks.spawn(inner.clone().delete_worker());
        }
        for _ in 0..config.orphan_workers.max(1) {
            tasks.spawn(inner.clone().orphan_worker());
        }
        loop {
            tokio::time::sleep(config.resync).await;
            inner.resync_monitors(&mut tasks, &mut monitors, &synced_tx).await;
            while tasks.try_join_next().is_some() {} // stopped monitors
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The graph's view of an object's metadata.
fn observed(ar: &ApiResource, m: &ObjectMeta) -> Observed {
    Observed {
        identity: ObjectRef {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        },
        owners: m.owner_references.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
    }
}

fn has_finalizer(m: &ObjectMeta, f: &str) -> bool {
    m.finalizers.iter().flatten().any(|x| x == f)
}

/// Kinds whose objects are collected: listable, watchable, deletable, and not events
/// (`GetDeletableResources`, `DefaultIgnoredResources`).
fn deletable(r: &ServedResource) -> bool {
    let ar = &r.api_resource;
    r.preferred
        && ["delete", "list", "watch"].iter().all(|v| r.supports(v))
        && !(ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io"))
}

impl Inner {
    /// Reads discovery and starts a monitor for each new deletable kind (stopping those gone).
    /// False when discovery could not be read at all.
    async fn resync_monitors(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        monitors: &mut HashMap<String, AbortHandle>,
        synced: &mpsc::UnboundedSender<String>,
    ) -> bool {
        let found = match discover(&self.client).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery");
                return false;
            }
        };
        if let Some(why) = found.failure() {
            tracing::warn!(%why, "garbage collector: partial discovery");
        }
        let wanted: HashMap<String, ApiResource> = found
            .resources
            .iter()
            .filter(|r| deletable(r))
            .map(|r| (format!("{}/{}", r.api_resource.api_version, r.api_resource.plural), r.api_resource.clone()))
            .collect();
        // Kinds of groups that failed this time keep their monitors.
        monitors.retain(|key, handle| {
            let keep = wanted.contains_key(key) || found.failed.keys().any(|gv| key.starts_with(&format!("{gv}/")));
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, ar) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = monitors.entry(key) {
                let key = slot.key().clone();
                slot.insert(tasks.spawn(self.clone().monitor(key, ar, synced.clone())));
            }
        }
        *self.resources.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(found);
        true
    }

    /// Watches one kind's metadata and feeds the graph. A relist that no longer shows an object
    /// reports it deleted (the informer's `DeletedFinalStateUnknown`).
    async fn monitor(self: Arc<Self>, key: String, ar: ApiResource, synced: mpsc::UnboundedSender<String>) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &ar);
        let mut known: HashMap<String, Observed> = HashMap::new();
        let mut relisted: Option<HashSet<String>> = None;
        let mut reported_sync = false;
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let upsert = |known: &mut HashMap<String, Observed>, m: &PartialObjectMeta<DynamicObject>| {
                let obj = observed(&ar, &m.metadata);
                if obj.identity.uid.is_empty() {
                    return;
                }
                let old = known.insert(obj.identity.uid.clone(), obj.clone());
                if old.as_ref() != Some(&obj) {
                    let _ = self.changes.send(Change { obj, old, deleted: false, virtual_: false });
                }
            };
            match event {
                Ok(watcher::Event::Init) => relisted = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(m)) => {
                    if let (Some(seen), Some(uid)) = (relisted.as_mut(), m.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    upsert(&mut known, &m);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = relisted.take() {
                        let gone: Vec<String> = known.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                        for uid in gone {
                            if let Some(obj) = known.remove(&uid) {
                                let _ = self.changes.send(Change { obj, old: None, deleted: true, virtual_: false });
                            }
                        }
                    }
                    if !reported_sync {
                        reported_sync = true;
                        let _ = synced.send(key.clone());
                    }
                }
                Ok(watcher::Event::Apply(m)) => upsert(&mut known, &m),
                Ok(watcher::Event::Delete(m)) => {
                    let obj = observed(&ar, &m.metadata);
                    known.remove(&obj.identity.uid);
                    let _ = self.changes.send(Change { obj, old: None, deleted: true, virtual_: false });
                }
                Err(e) => tracing::debug!(error = %e, kind = %ar.kind, "garbage collector: watch"),
            }
        }
    }

    /// Carries out what a graph change asks for.
    fn apply(self: &Arc<Self>, fx: Effects) {
        for uid in fx.attempt_to_delete {
            self.to_delete.add(uid);
        }
        for uid in fx.attempt_to_delete_later {
            self.to_delete.add_rate_limited(uid);
        }
        for uid in fx.attempt_to_orphan {
            self.to_orphan.add(uid);
        }
        if !fx.absent.is_empty() {
            let mut absent = lock(&self.absent);
            for r in fx.absent {
                absent.add(r);
            }
        }
        for (dependent, owner) in fx.invalid_owner_refs {
            let me = self.clone();
            tokio::spawn(async move { me.report_invalid_owner(&dependent, &owner).await });
        }
        if let Some(ns) = fx.deleted_in {
            let _ = self.deletions.send(ns);
        }
    }

    /// `enqueueVirtualDeleteEvent`: the API server says the object is gone.
    fn enqueue_virtual_delete(&self, identity: &ObjectRef) {
        let obj = Observed { identity: identity.clone(), owners: Vec::new(), deleting: false, finalizers: Vec::new() };
        let _ = self.changes.send(Change { obj, old: None, deleted: true, virtual_: true });
    }

    fn snapshot(&self, uid: &str) -> Option<(Node, Vec<Node>)> {
        let g = lock(&self.graph);
        g.node(uid).map(|n| (n.clone(), g.dependents(uid)))
    }

    async fn delete_worker(self: Arc<Self>) {
        loop {
            let uid = self.to_delete.get().await;
            match self.attempt_to_delete(&uid).await {
                Action::Forget => self.to_delete.forget(&uid),
                Action::Requeue => self.to_delete.add_rate_limited(uid.clone()),
            }
            self.to_delete.done(&uid);
        }
    }

    async fn orphan_worker(self: Arc<Self>) {
        loop {
            let uid = self.to_orphan.get().await;
            match self.attempt_to_orphan(&uid).await {
                Action::Forget => self.to_orphan.forget(&uid),
                Action::Requeue => self.to_orphan.add_rate_limited(uid.clone()),
            }
            self.to_orphan.done(&uid);
        }
    }

    /// `attemptToDeleteWorker`.
    async fn attempt_to_delete(&self, uid: &str) -> Action {
        let Some((item, dependents)) = self.snapshot(uid) else { return Action::Forget };
        match self.attempt_to_delete_item(&item, &dependents).await {
            Err(GcError::VirtualDelete | GcError::NamespacedOwnerOfClusterScoped) => Action::Forget,
            Err(e) => {
                tracing::debug!(item = %item.identity, error = %e, "garbage collector: retrying");
                Action::Requeue
            }
            // Not yet seen by a watch: check again later (issue 56121).
            Ok(()) if item.virtual_ => Action::Requeue,
            Ok(()) => Action::Forget,
        }
    }

    /// `attemptToDeleteItem`: deletes the object if every owner is gone, or the owners wait for it.
    async fn attempt_to_delete_item(&self, item: &Node, dependents: &[Node]) -> Result<(), GcError> {
        if item.being_deleted && !item.deleting_dependents {
            return Ok(()); // on its way; its dependents are handled when it is gone
        }
        let latest = match self.get_meta(&item.identity).await? {
            Some(m) if m.uid.as_deref() == Some(item.identity.uid.as_str()) => m,
            _ => {
                self.enqueue_virtual_delete(&item.identity);
                return Err(GcError::VirtualDelete);
            }
        };
        if item.deleting_dependents {
            return self.process_deleting_dependents(item).await;
        }
        let refs = latest.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(());
        }
        let (solid, dangling, waiting) = self.classify_references(item, &refs).await?;
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // References to owners that are gone or waiting on this object are removed, or the
            // waiting owners would never finish.
            let drop: HashSet<String> = dangling.iter().chain(&waiting).map(|r| r.uid.clone()).collect();
            return self.patch_meta(&item.identity, |m| without_owners(m, &drop)).await;
        }
        if !waiting.is_empty() && !dependents.is_empty() {
            if dependents.iter().any(|d| d.deleting_dependents) {
                // A cycle of foreground deletions: stop blocking our owners, then go foreground.
                self.patch_meta(&item.identity, unblocked_owners).await?;
            }
            return self.delete_object(&item.identity, PropagationPolicy::Foreground).await;
        }
        let policy = if has_finalizer(&latest, ORPHAN) {
            PropagationPolicy::Orphan
        } else if has_finalizer(&latest, FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        self.delete_object(&item.identity, policy).await
    }

    /// `processDeletingDependentsItem`: the owner goes once no dependent blocks it.
    async fn process_deleting_dependents(&self, item: &Node) -> Result<(), GcError> {
        let blocking = lock(&self.graph).blocking_dependents(&item.identity.uid);
        if blocking.is_empty() {
            return self.patch_meta(&item.identity, |m| without_finalizer(m, FOREGROUND)).await;
        }
        for dep in blocking.iter().filter(|d| !d.deleting_dependents) {
            self.to_delete.add(dep.identity.uid.clone());
        }
        Ok(())
    }

    /// `classifyReferences`: (solid, dangling, waiting for dependents' deletion).
    async fn classify_references(
        &self,
        item: &Node,
        refs: &[OwnerReference],
    ) -> Result<(Vec<OwnerReference>, Vec<OwnerReference>, Vec<OwnerReference>), GcError> {
        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for r in refs {
            match self.owner_of(r, item).await? {
                None => dangling.push(r.clone()),
                Some(owner) if owner.deletion_timestamp.is_some() && has_finalizer(&owner, FOREGROUND) => {
                    waiting.push(r.clone())
                }
                Some(_) => solid.push(r.clone()),
            }
        }
        Ok((solid, dangling, waiting))
    }

    /// `isDangling`: the owner's live metadata, or `None` when it does not exist (absent, or
    /// another object under that name). A namespaced dependent's owner is looked for in the
    /// dependent's namespace.
    async fn owner_of(&self, r: &OwnerReference, item: &Node) -> Result<Option<ObjectMeta>, GcError> {
        let mut key = ObjectRef::owner(r, "");
        if lock(&self.absent).has(&key) {
            return Ok(None);
        }
        key.namespace = item.identity.namespace.clone();
        if lock(&self.absent).has(&key) {
            return Ok(None);
        }
        let resource = self.resolve(&r.api_version, &r.kind).await?;
        if !resource.namespaced {
            key.namespace.clear();
        }
        if item.identity.namespace.is_empty() && resource.namespaced {
            return Err(GcError::NamespacedOwnerOfClusterScoped);
        }
        let api = self.api(&resource, &item.identity.namespace);
        match api.get_metadata_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => Ok(Some(o.metadata)),
            _ => {
                lock(&self.absent).add(key);
                Ok(None)
            }
        }
    }

    /// The served resource of a kind; discovery is read again once when it is unknown.
    async fn resolve(&self, api_version: &str, kind: &str) -> Result<ServedResource, GcError> {
        let known = self.resources.read().unwrap_or_else(|p| p.into_inner()).resolve(api_version, kind).cloned();
        if let Some(r) = known {
            return Ok(r);
        }
        let unknown = || GcError::Mapping(format!("{api_version}, Kind={kind}"));
        {
            let mut last = lock(&self.rediscovered);
            if last.is_some_and(|t| t.elapsed() < REDISCOVER) {
                return Err(unknown());
            }
            *last = Some(tokio::time::Instant::now());
        }
        let found = Arc::new(discover(&self.client).await?);
        let r = found.resolve(api_version, kind).cloned();
        *self.resources.write().unwrap_or_else(|p| p.into_inner()) = found;
        r.ok_or_else(unknown)
    }

    fn api(&self, r: &ServedResource, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api_resource)
        } else {
            Api::all_with(self.client.clone(), &r.api_resource)
        }
    }

    /// The API of the object `o` names. A namespaced kind without a namespace can only come from
    /// a cluster-scoped dependent naming a namespaced owner, which cannot be looked up.
    async fn api_for(&self, o: &ObjectRef) -> Result<Api<DynamicObject>, GcError> {
        let r = self.resolve(&o.api_version, &o.kind).await?;
        if r.namespaced && o.namespace.is_empty() {
            return Err(GcError::NamespacedOwnerOfClusterScoped);
        }
        Ok(self.api(&r, &o.namespace))
    }

    async fn get_meta(&self, o: &ObjectRef) -> Result<Option<ObjectMeta>, GcError> {
        Ok(self.api_for(o).await?.get_metadata_opt(&o.name).await?.map(|m| m.metadata))
    }

    /// `deleteObject`: with the UID as precondition and the given propagation.
    async fn delete_object(&self, o: &ObjectRef, policy: PropagationPolicy) -> Result<(), GcError> {
        let api = self.api_for(o).await?;
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(o.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&o.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A JSON merge patch of the object's metadata computed from its latest state, guarded by
    /// its resourceVersion and retried on conflict; `change` returns `None` when nothing is to do.
    async fn patch_meta(&self, o: &ObjectRef, change: impl Fn(&ObjectMeta) -> Option<Value>) -> Result<(), GcError> {
        let api = self.api_for(o).await?;
        for _ in 0..PATCH_TRIES {
            let Some(latest) = api.get_metadata_opt(&o.name).await? else { return Ok(()) };
            if latest.metadata.uid.as_deref() != Some(o.uid.as_str()) {
                return Ok(());
            }
            let Some(mut patch) = change(&latest.metadata) else { return Ok(()) };
            patch["resourceVersion"] = latest.metadata.resource_version.clone().into();
            match api.patch(&o.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": patch}))).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(GcError::Conflicts(o.clone()))
    }

    /// `attemptToOrphanWorker`: drop the owner from every dependent, then its `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Action {
        let Some((owner, dependents)) = self.snapshot(uid) else { return Action::Forget };
        let drop = HashSet::from([owner.identity.uid.clone()]);
        let results = futures::future::join_all(
            dependents.iter().map(|d| self.patch_meta(&d.identity, |m| without_owners(m, &drop))),
        )
        .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            tracing::debug!(owner = %owner.identity, error = %e, "garbage collector: orphaning dependents");
            return Action::Requeue;
        }
        match self.patch_meta(&owner.identity, |m| without_finalizer(m, ORPHAN)).await {
            Ok(()) => Action::Forget,
            Err(e) => {
                tracing::debug!(owner = %owner.identity, error = %e, "garbage collector: removing orphan finalizer");
                Action::Requeue
            }
        }
    }

    /// The Warning event `reportInvalidNamespaceOwnerRef` records on the dependent.
    async fn report_invalid_owner(&self, dependent: &ObjectRef, owner: &OwnerReference) {
        let invalid = ObjectRef::owner(owner, &dependent.namespace);
        let message = format!("ownerRef {invalid} does not exist in namespace {:?}", dependent.namespace);
        if !lock(&self.reported).insert((dependent.uid.clone(), message.clone())) {
            return;
        }
        if let Err(e) = record_event(&self.client, dependent, "Warning", "OwnerRefInvalidNamespace", &message).await {
            tracing::warn!(error = %e, "garbage collector: recording an event");
        }
    }
}

/// The metadata patch that removes the owner references to `uids`.
fn without_owners(m: &ObjectMeta, uids: &HashSet<String>) -> Option<Value> {
    let refs = m.owner_references.clone().unwrap_or_default();
    let kept: Vec<&OwnerReference> = refs.iter().filter(|r| !uids.contains(&r.uid)).collect();
    if kept.len() == refs.len() {
        return None;
    }
    Some(json!({ "ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) } }))
}

/// The metadata patch that turns every blocking owner reference non-blocking
/// (`unblockOwnerReferencesStrategicMergePatch`).
fn unblocked_owners(m: &ObjectMeta) -> Option<Value> {
    let mut refs = m.owner_references.clone().unwrap_or_default();
    let mut changed = false;
    for r in refs.iter_mut().filter(|r| r.block_owner_deletion == Some(true)) {
        r.block_owner_deletion = Some(false);
        changed = true;
    }
    changed.then(|| json!({ "ownerReferences": refs }))
}

/// The metadata patch that removes finalizer `f` (`removeFinalizer`).
fn without_finalizer(m: &ObjectMeta, f: &str) -> Option<Value> {
    let all = m.finalizers.clone().unwrap_or_default();
    let kept: Vec<&String> = all.iter().filter(|x| *x != f).collect();
    if kept.len() == all.len() {
        return None;
    }
    Some(json!({ "finalizers": if kept.is_empty() { Value::Null } else { json!(kept) } }))
}

/// Records a core/v1 Event about `obj` as client-go's legacy recorder does (named
/// `<name>.<hex nanos>`, in the object's namespace or `default`).
pub(crate) async fn record_event(
    client: &Client,
    obj: &ObjectRef,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let namespace = if obj.namespace.is_empty() { "default".to_string() } else { obj.namespace.clone() };
    let event = CoreEvent {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", obj.name, now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(obj.api_version.clone()),
            kind: Some(obj.kind.clone()),
            name: Some(obj.name.clone()),
            namespace: (!obj.namespace.is_empty()).then(|| obj.namespace.clone()),
            uid: Some(obj.uid.clone()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(String::new()),
        ..Default::default()
    };
    Api::<CoreEvent>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &event).await.map(|_| ())
}

/// Owners known to be absent (a bounded set; the oldest entries go first).
#[derive(Default)]
struct AbsentCache {
    set: HashSet<ObjectRef>,
    order: VecDeque<ObjectRef>,
}

impl AbsentCache {
    fn add(&mut self, r: ObjectRef) {
        if self.set.insert(r.clone()) {
            self.order.push_back(r);
            while self.order.len() > ABSENT_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn has(&self, r: &ObjectRef) -> bool {
        self.set.contains(r)
    }
}
