//! The machinery the endpoint controllers share (client-go's shared informers and
//! `workqueue.TypedRateLimitingInterface`, as `pkg/controller/endpoint` and
//! `pkg/controller/endpointslice` use them): one watch per kind feeding an in-memory cache that
//! calls handlers with the old and new object, workers over the shared [`WorkQueue`] with
//! retries (conflicts sooner than other failures), and Warning Events.
//!
//! Caches are written through by the controllers after their own writes, so a reconcile right
//! after a write sees it even before the watch delivers it; a watch event older than the cached
//! object is then ignored.

use crate::pod_selection::SERVICE_NAME_LABEL;
pub use crate::workqueue::WorkQueue;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Namespace and name.
pub type Key = (String, String);

/// The namespace/name of an object.
pub fn key_of(meta: &ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

type Handler<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// Objects of one kind by namespace and name, kept by a watch.
pub struct Cache<K> {
    objects: RwLock<Objects<K>>,
    /// Objects this process deleted, with their last resourceVersion, until the watch says so:
    /// an older event still in flight must not bring them back.
    tombstones: Mutex<HashMap<Key, ObjectMeta>>,
    handlers: RwLock<Vec<Handler<K>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// A cache's objects, and its label index.
struct Objects<K> {
    by_namespace: HashMap<String, HashMap<String, Arc<K>>>,
    /// The label [`Cache::labelled`] finds objects by without a scan, if any.
    label: Option<&'static str>,
    /// Names by namespace and index label value.
    by_label: HashMap<(String, String), BTreeSet<String>>,
}

impl<K: kube::Resource> Objects<K> {
    fn label_key(&self, obj: &K) -> Option<(String, String)> {
        let value = obj.meta().labels.as_ref()?.get(self.label?)?;
        Some((obj.meta().namespace.clone().unwrap_or_default(), value.clone()))
    }

    /// Stores `obj` under its key; returns the object it replaced.
    fn insert(&mut self, obj: Arc<K>) -> Option<Arc<K>> {
        let (ns, name) = key_of(obj.meta());
        let new_key = self.label_key(&obj);
        if let Some(key) = new_key.clone() {
            self.by_label.entry(key).or_default().insert(name.clone());
        }
        let old = self.by_namespace.entry(ns).or_default().insert(name.clone(), obj);
        if let Some(old_key) = old.as_deref().and_then(|o| self.label_key(o))
            && new_key.as_ref() != Some(&old_key)
        {
            self.unindex(old_key, &name);
        }
        old
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let old = self.by_namespace.get_mut(namespace)?.remove(name)?;
        if let Some(key) = self.label_key(&old) {
            self.unindex(key, name);
        }
        Some(old)
    }

    fn unindex(&mut self, key: (String, String), name: &str) {
        if let Some(names) = self.by_label.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                self.by_label.remove(&key);
            }
        }
    }
}

/// Whether `new` is a later version than `old`. resourceVersions are opaque, but every API
/// server kplane talks to (itself, etcd-backed ones) uses increasing integers.
fn is_newer(new: &ObjectMeta, old: &ObjectMeta) -> bool {
    let (n, o) = (new.resource_version.as_deref(), old.resource_version.as_deref());
    match (n.and_then(|v| v.parse::<u64>().ok()), o.and_then(|v| v.parse::<u64>().ok())) {
        (Some(n), Some(o)) => n > o,
        _ => n != o,
    }
}

impl<K> Cache<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    pub fn new() -> Arc<Self> {
        Self::build(None)
    }

    /// A cache that also finds its objects by the value of `label` ([`Cache::labelled`]).
    pub fn indexed_by(label: &'static str) -> Arc<Self> {
        Self::build(Some(label))
    }

    fn build(label: Option<&'static str>) -> Arc<Self> {
        Arc::new(Self {
            objects: RwLock::new(Objects { by_namespace: HashMap::new(), label, by_label: HashMap::new() }),
            tombstones: Mutex::new(HashMap::new()),
            handlers: RwLock::new(Vec::new()),
            ready: tokio::sync::watch::channel(false).0,
        })
    }

    /// Calls `handler(old, new)` after every change the watch brings (not for write-throughs).
    pub fn subscribe(&self, handler: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).push(Box::new(handler));
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().by_namespace.get(namespace)?.get(name).cloned()
    }

    /// Every object of a namespace.
    pub fn namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().by_namespace.get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// The objects of a namespace that `keep` accepts.
    pub fn filter(&self, namespace: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let objects = self.read();
        let in_namespace = objects.by_namespace.get(namespace);
        in_namespace.map(|m| m.values().filter(|o| keep(o)).cloned().collect()).unwrap_or_default()
    }

    /// The objects of a namespace whose index label has `value` (a Service's EndpointSlices),
    /// without looking at the others. Empty for a cache without an index.
    pub fn labelled(&self, namespace: &str, value: &str) -> Vec<Arc<K>> {
        let objects = self.read();
        let Some(names) = objects.by_label.get(&(namespace.to_string(), value.to_string())) else { return Vec::new() };
        let in_namespace = objects.by_namespace.get(namespace);
        names.iter().filter_map(|n| in_namespace?.get(n).cloned()).collect()
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.read().by_namespace.values().flat_map(|m| m.values().cloned()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an object this process just wrote, unless the cache already has a later version.
    pub fn write_through(&self, obj: K) {
        let (ns, name) = key_of(obj.meta());
        self.tombstones().remove(&(ns.clone(), name.clone()));
        let mut objects = self.write();
        let current = objects.by_namespace.get(&ns).and_then(|m| m.get(&name));
        if current.is_none_or(|old| is_newer(obj.meta(), old.meta())) {
            objects.insert(Arc::new(obj));
        }
    }

    /// Drops an object this process just deleted.
    pub fn forget(&self, namespace: &str, name: &str) {
        let gone = self.write().remove(namespace, name);
        if let Some(gone) = gone {
            self.tombstones().insert((namespace.to_string(), name.to_string()), gone.meta().clone());
        }
    }

    fn tombstones(&self) -> std::sync::MutexGuard<'_, HashMap<Key, ObjectMeta>> {
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the first complete list is in.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    fn notify(&self, old: Option<&K>, new: Option<&K>) {
        for h in self.handlers.read().unwrap_or_else(|e| e.into_inner()).iter() {
            h(old, new);
        }
    }

    /// Applies one object from the watch; calls the handlers when it is news.
    fn apply(&self, obj: K) {
        let (ns, name) = key_of(obj.meta());
        {
            let mut tombstones = self.tombstones();
            if let Some(dead) = tombstones.get(&(ns.clone(), name.clone())) {
                if !is_newer(obj.meta(), dead) {
                    return;
                }
                tombstones.remove(&(ns.clone(), name.clone()));
            }
        }
        let obj = Arc::new(obj);
        let old = {
            let mut objects = self.write();
            match objects.by_namespace.get(&ns).and_then(|m| m.get(&name)) {
                Some(old) if !is_newer(obj.meta(), old.meta()) => return,
                _ => objects.insert(obj.clone()),
            }
        };
        self.notify(old.as_deref(), Some(&obj));
    }

    fn delete(&self, obj: &K) {
        let (ns, name) = key_of(obj.meta());
        self.tombstones().remove(&(ns.clone(), name.clone()));
        let old = self.write().remove(&ns, &name);
        // Unknown: already forgotten after this process deleted it.
        if let Some(old) = old {
            self.notify(Some(&old), None);
        }
    }

    /// After a (re)list: the listed objects replace the cache; gone ones are deleted.
    fn replace(&self, listed: Vec<K>) {
        let mut seen: HashSet<Key> = HashSet::with_capacity(listed.len());
        for obj in listed {
            seen.insert(key_of(obj.meta()));
            self.apply(obj);
        }
        let gone: Vec<Arc<K>> = self
            .read()
            .by_namespace
            .iter()
            .flat_map(|(ns, m)| m.iter().filter(|(n, _)| !seen.contains(&(ns.clone(), (*n).clone()))))
            .map(|(_, o)| o.clone())
            .collect();
        for obj in gone {
            self.delete(&obj);
        }
        // The list is at least as new as any delete it no longer shows.
        self.tombstones().clear();
    }

    /// Keeps the cache current from a watch until the client goes away.
    pub async fn run(self: Arc<Self>, api: Api<K>, config: watcher::Config) {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: Vec<K> = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(obj)) => listing.push(obj),
                Ok(watcher::Event::InitDone) => {
                    self.replace(std::mem::take(&mut listing));
                    self.ready.send_replace(true);
                }
                Ok(watcher::Event::Apply(obj)) => self.apply(obj),
                Ok(watcher::Event::Delete(obj)) => self.delete(&obj),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying"),
            }
        }
    }
}

/// The caches the endpoint controllers read, one watch per kind.
pub struct Informers {
    client: kube::Client,
    pub pods: Arc<Cache<Pod>>,
    pub services: Arc<Cache<Service>>,
    pub nodes: Arc<Cache<Node>>,
    pub slices: Arc<Cache<EndpointSlice>>,
    pub endpoints: Arc<Cache<Endpoints>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            pods: Cache::new(),
            services: Cache::new(),
            nodes: Cache::new(),
            slices: Cache::indexed_by(SERVICE_NAME_LABEL),
            endpoints: Cache::new(),
        }
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Queues on `queue` every Service a pod event concerns (see `pod_selection::services_to_update`).
    pub fn on_pod_services(&self, queue: Arc<WorkQueue<Key>>) {
        let services = self.services.clone();
        self.pods.subscribe(move |old, new| {
            let Some(ns) = new.or(old).and_then(|p| p.metadata.namespace.clone()) else { return };
            let candidates = services.namespace(&ns);
            for name in crate::pod_selection::services_to_update(candidates.iter().map(|s| &**s), old, new) {
                queue.add((ns.clone(), name));
            }
        });
    }

    /// Resolves when every cache has its first list.
    pub async fn wait_ready(&self) {
        self.pods.wait_ready().await;
        self.services.wait_ready().await;
        self.nodes.wait_ready().await;
        self.slices.wait_ready().await;
        self.endpoints.wait_ready().await;
    }

    /// Runs the watches until the client's server goes away (or the task is aborted).
    pub async fn run(self: Arc<Self>) {
        let c = &self.client;
        let all = watcher::Config::default;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.pods.clone().run(Api::all(c.clone()), all()));
        tasks.spawn(self.services.clone().run(Api::all(c.clone()), all()));
        tasks.spawn(self.nodes.clone().run(Api::all(c.clone()), all()));
        tasks.spawn(self.slices.clone().run(Api::all(c.clone()), all()));
        tasks.spawn(self.endpoints.clone().run(Api::all(c.clone()), all()));
        while tasks.join_next().await.is_some() {}
    }
}

/// How a controller retries a failed sync.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// First delay after a failure other than a conflict.
    pub base: Duration,
    pub max: Duration,
    /// Syncs of one key tried before it is dropped (until its next change).
    pub max_retries: u32,
}

/// 409 Conflict: our cache was behind; the watch brings the news, so retry soon.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs `workers` workers over `queue` until aborted: each sync that fails is retried with
/// back-off (conflicts after 5 ms, doubling) and dropped after `retry.max_retries`.
pub async fn run_workers<F, Fut, E>(
    queue: Arc<WorkQueue<Key>>,
    workers: usize,
    retry: Retry,
    name: &'static str,
    sync: F,
) where
    F: Fn(Key) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + SyncError + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (queue, sync) = (queue.clone(), sync.clone());
        tasks.spawn(async move {
            loop {
                let key = queue.get().await;
                match sync(key.clone()).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        let base = if e.is_conflict() { Duration::from_millis(5) } else { retry.base };
                        let n = queue.retry(key.clone(), base);
                        if n > retry.max_retries {
                            queue.forget(&key);
                            tracing::warn!(controller = name, service = %format!("{}/{}", key.0, key.1), error = %e, "dropping out of the queue");
                        } else {
                            tracing::debug!(controller = name, service = %format!("{}/{}", key.0, key.1), error = %e, "sync failed; retrying");
                        }
                    }
                }
                queue.done(&key);
                // A sync that finds everything in its caches never awaits; without this, a
                // burst of such keys would hold a worker thread of the shared runtime.
                tokio::task::yield_now().await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// What the worker loop needs to know of a sync error.
pub trait SyncError {
    fn is_conflict(&self) -> bool;
}

/// Why a sync failed (and will be retried).
#[derive(Debug, thiserror::Error)]
pub enum SyncFailure {
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Part of the sync was done; what was skipped is retried (e.g. a pod's Node not yet known).
    #[error("{0}")]
    Incomplete(String),
}

impl SyncError for SyncFailure {
    fn is_conflict(&self) -> bool {
        matches!(self, SyncFailure::Api(e) if is_conflict(e))
    }
}

/// A create refused because the namespace is being deleted: retrying cannot help.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Writes core/v1 Warning Events (as client-go's recorder, without its aggregation: a repeat of
/// the same reason and message on the same object within a minute is dropped).
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    recent: Mutex<HashMap<(String, String, String), Instant>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Self { client, component, recent: Mutex::new(HashMap::new()) }
    }

    /// Best effort: a failure to record is logged, never returned.
    pub async fn warn(&self, object: ObjectReference, reason: &str, message: String) {
        let uid = object.uid.clone().unwrap_or_else(|| object.name.clone().unwrap_or_default());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
            if recent.insert((uid, reason.to_string(), message.clone()), now).is_some() {
                return;
            }
        }
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", object.name.as_deref().unwrap_or("object"), now.as_nanosecond() as u64)),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some("Warning".into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, reason, "could not record event");
        }
    }
}

/// A reference to an object for an Event's `involvedObject`.
pub fn object_ref(kind: &str, api_version: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        kind: Some(kind.into()),
        api_version: Some(api_version.into()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_compares_revisions_as_numbers() {
        let m = |rv: &str| ObjectMeta { resource_version: Some(rv.into()), ..Default::default() };
        assert!(is_newer(&m("10"), &m("9")));
        assert!(!is_newer(&m("9"), &m("10")));
        assert!(!is_newer(&m("9"), &m("9")));
        assert!(is_newer(&m("b"), &m("a")));
    }

    fn slice(ns: &str, name: &str, service: Option<&str>, rv: u64) -> EndpointSlice {
        let mut s = EndpointSlice { address_type: "IPv4".into(), ..Default::default() };
        s.metadata = ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(rv.to_string()),
            labels: service.map(|v| [(SERVICE_NAME_LABEL.to_string(), v.to_string())].into()),
            ..Default::default()
        };
        s
    }

    fn names(found: Vec<Arc<EndpointSlice>>) -> Vec<String> {
        let mut n: Vec<String> = found.iter().filter_map(|s| s.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn the_label_index_follows_adds_relabels_deletes_and_relists() {
        let cache = Cache::<EndpointSlice>::indexed_by(SERVICE_NAME_LABEL);
        cache.apply(slice("a", "web-1", Some("web"), 1));
        cache.apply(slice("a", "web-2", Some("web"), 2));
        cache.apply(slice("b", "web-3", Some("web"), 3));
        cache.write_through(slice("a", "db-1", Some("db"), 4));
        cache.apply(slice("a", "plain", None, 5));
        assert_eq!(names(cache.labelled("a", "web")), ["web-1", "web-2"]);
        assert_eq!(names(cache.labelled("b", "web")), ["web-3"]);
        assert_eq!(names(cache.labelled("a", "db")), ["db-1"]);

        // Relabelled: found under the new value only; an older event changes nothing.
        cache.apply(slice("a", "web-2", Some("db"), 6));
        cache.apply(slice("a", "web-2", Some("web"), 2));
        assert_eq!(names(cache.labelled("a", "web")), ["web-1"]);
        assert_eq!(names(cache.labelled("a", "db")), ["db-1", "web-2"]);

        cache.delete(&slice("a", "web-1", Some("web"), 7));
        cache.forget("a", "db-1");
        assert!(cache.labelled("a", "web").is_empty());
        assert_eq!(names(cache.labelled("a", "db")), ["web-2"]);

        // A relist that no longer shows web-2 drops it from the index too.
        cache.replace(vec![slice("b", "web-3", Some("web"), 3), slice("a", "plain", None, 5)]);
        assert!(cache.labelled("a", "db").is_empty());
        assert_eq!(names(cache.labelled("b", "web")), ["web-3"]);
        assert!(Cache::<EndpointSlice>::new().labelled("b", "web").is_empty(), "no index, nothing found");
    }
}
