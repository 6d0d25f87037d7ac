//! WATCH over the generic store (`Store.Watch` and the watch cache's fan-out): initial events,
//! selector filtering, bookmarks. Each stored event is decoded and encoded once, however many
//! watchers receive it; a watcher only filters and writes shared bytes.

use super::list::Filter;
use super::meta;
use super::options::{ListOptions, WatchOptions};
use super::{Registry, Resource, ResourceInfo};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::storage::{Event, EventKind, Revision, StorageError, WatchStream};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often a watch that allows bookmarks gets one (upstream: about once a minute).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// One watch event as sent on the wire (`metav1.WatchEvent`).
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(Arc<WatchedObject>),
    Modified(Arc<WatchedObject>),
    Deleted(Arc<WatchedObject>),
    Bookmark(Value),
    Error(Value),
}

impl WatchEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        }
    }

    /// The object of an ADDED, MODIFIED or DELETED event, shared with the other watchers.
    pub fn watched(&self) -> Option<&WatchedObject> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => None,
        }
    }

    pub fn object(&self) -> &Value {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.value(),
            WatchEvent::Bookmark(o) | WatchEvent::Error(o) => o,
        }
    }
}

/// An object as watches deliver it, with its JSON forms encoded on first use and then shared
/// by every watcher of the same event.
#[derive(Debug)]
pub struct WatchedObject {
    value: Value,
    json: OnceLock<Bytes>,
    metadata_json: OnceLock<Bytes>,
}

impl WatchedObject {
    pub fn new(value: Value) -> Arc<Self> {
        Arc::new(Self { value, json: OnceLock::new(), metadata_json: OnceLock::new() })
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object as JSON.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| serde_json::to_vec(&self.value).unwrap_or_default().into())
    }

    /// Its `PartialObjectMetadata` as JSON (metadata-only watches: the garbage collector's).
    pub fn partial_metadata_json(&self) -> &Bytes {
        self.metadata_json
            .get_or_init(|| serde_json::to_vec(&super::table::partial_metadata(&self.value)).unwrap_or_default().into())
    }
}

/// A stored event's objects as one kind serves them, each decoded at most once, by the first
/// watcher that needs it.
#[derive(Default)]
struct DecodedEvent {
    new: OnceLock<Decoded>,
    old: OnceLock<Decoded>,
}

/// An absent side (no value before a create, none after a delete), or the decoded object.
type Decoded = Result<Option<Arc<WatchedObject>>, String>;

impl DecodedEvent {
    /// The shared decoding of `event` for resource `r` (two kinds may view the same storage).
    fn of(r: &Resource, event: &Event) -> Arc<Self> {
        event.memo.get_or_insert_with(std::ptr::from_ref(r.info()) as usize, Self::default)
    }

    fn new_object(&self, r: &Resource, event: &Event) -> &Decoded {
        self.new.get_or_init(|| decode(r, event.value.as_deref(), event.revision))
    }

    fn old_object(&self, r: &Resource, event: &Event) -> &Decoded {
        self.old.get_or_init(|| decode(r, event.prev.as_deref(), event.revision))
    }
}

fn decode(r: &Resource, bytes: Option<&[u8]>, revision: Revision) -> Decoded {
    bytes.map(|b| r.decode_bytes(b, revision).map(WatchedObject::new).map_err(|e| e.message)).transpose()
}

impl Registry {
    /// WATCH: the changes after a revision (or the current state first), filtered by the selectors.
    pub fn watch(&self, r: &Arc<Resource>, ns: Option<&str>, opts: &WatchOptions) -> ApiResult<Watch> {
        let filter = Filter::new(r, &opts.list)?;
        let prefix = r.key_prefix(ns);
        let rv = opts.list.resource_version.as_deref().filter(|s| !s.is_empty());
        let send_initial = opts.send_initial_events.unwrap_or(matches!(rv, None | Some("0")));
        if opts.send_initial_events == Some(true) && !opts.allow_bookmarks {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![FieldError::forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks=true",
                )],
            ));
        }
        let mut initial = VecDeque::new();
        let from = if send_initial {
            let list = self.list(
                r,
                ns,
                &ListOptions {
                    label_selector: opts.list.label_selector.clone(),
                    field_selector: opts.list.field_selector.clone(),
                    ..Default::default()
                },
            )?;
            let rv = list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(items) = list["items"].as_array() {
                initial.extend(items.iter().cloned().map(|o| WatchEvent::Added(WatchedObject::new(o))));
            }
            if opts.send_initial_events == Some(true) {
                initial.push_back(WatchEvent::Bookmark(bookmark(r.info(), rv, true)));
            }
            rv
        } else {
            let from = meta::parse_resource_version(rv.unwrap_or("0"))?;
            let current = self.store.revision();
            if from > current {
                return Err(ApiError::timeout(format!("Too large resource version: {from}, current: {current}"), 1));
            }
            from
        };
        let stream = match self.store.watch(&prefix, from) {
            Ok(s) => Some(s),
            Err(StorageError::Compacted { oldest, .. }) => {
                initial.push_back(WatchEvent::Error(
                    ApiError::expired(format!("too old resource version: {from} ({oldest})")).to_status(),
                ));
                None
            }
            Err(e) => return Err(super::generic::interpret(r, "", e)),
        };
        Ok(Watch {
            resource: r.clone(),
            filter,
            initial,
            stream,
            last_revision: from,
            allow_bookmarks: opts.allow_bookmarks,
            timeout: opts.timeout_seconds.map(Duration::from_secs),
        })
    }
}

fn bookmark(info: &ResourceInfo, revision: Revision, initial_end: bool) -> Value {
    let mut m = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": m})
}

/// A running watch: initial events, then storage events turned into filtered watch events.
pub struct Watch {
    resource: Arc<Resource>,
    filter: Filter,
    initial: VecDeque<WatchEvent>,
    stream: Option<WatchStream>,
    last_revision: Revision,
    allow_bookmarks: bool,
    timeout: Option<Duration>,
}

impl Watch {
    /// How long the client asked the watch to last.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The next event; `None` ends the watch.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if let Some(e) = self.initial.pop_front() {
            return Some(e);
        }
        loop {
            let stream = self.stream.as_mut()?;
            let next = if self.allow_bookmarks {
                match tokio::time::timeout(BOOKMARK_INTERVAL, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        return Some(WatchEvent::Bookmark(bookmark(self.resource.info(), self.last_revision, false)));
                    }
                }
            } else {
                stream.next().await
            };
            let event = match next? {
                Ok(e) => e,
                Err(_) => {
                    self.stream = None;
                    return Some(WatchEvent::Error(
                        ApiError::expired("the watch fell too far behind; please re-list").to_status(),
                    ));
                }
            };
            self.last_revision = event.revision;
            match self.filter_event(&event) {
                Ok(Some(out)) => return Some(out),
                Ok(None) => {}
                Err(message) => {
                    self.stream = None;
                    return Some(WatchEvent::Error(ApiError::internal(message).to_status()));
                }
            }
        }
    }

    /// What this watcher sees of a stored event: the selectors decide between ADDED, MODIFIED,
    /// DELETED (an object that stopped matching is gone to it) and nothing. The previous value
    /// is decoded only when a selector or a delete needs it.
    fn filter_event(&self, event: &Event) -> Result<Option<WatchEvent>, String> {
        let r = &*self.resource;
        let decoded = DecodedEvent::of(r, event);
        let everything = self.filter.is_everything();
        let new = match event.kind {
            EventKind::Deleted => None,
            _ => decoded.new_object(r, event).clone()?,
        };
        let matches_new = new.as_ref().is_some_and(|o| everything || self.filter.matches(r, o.value()));
        let matches_old = match &event.prev {
            None => false,
            Some(_) if everything => true,
            Some(_) => decoded.old_object(r, event).clone()?.is_some_and(|o| self.filter.matches(r, o.value())),
        };
        Ok(match (event.kind, matches_old, matches_new) {
            (EventKind::Deleted, true, _) => decoded.old_object(r, event).clone()?.map(WatchEvent::Deleted),
            (EventKind::Deleted, false, _) => None,
            (_, false, true) => new.map(WatchEvent::Added),
            (_, true, true) => new.map(WatchEvent::Modified),
            (_, true, false) => new.map(WatchEvent::Deleted),
            (_, false, false) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DeleteOptions, WriteOptions};
    use crate::storage::Store;

    fn configmap(name: &str, team: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"team": team}}})
    }

    fn watch_opts(selector: Option<&str>, rv: Revision) -> WatchOptions {
        WatchOptions {
            list: ListOptions {
                label_selector: selector.map(str::to_string),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A registry with namespace `default`, its ConfigMaps, and the revision after the setup.
    async fn setup() -> (Arc<Registry>, Arc<Resource>, Revision) {
        let registry = Registry::new(Store::memory(), &Default::default()).expect("registry");
        let namespaces = registry.lookup("", "v1", "namespaces").expect("namespaces").clone();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        registry.create(&namespaces, None, ns, &WriteOptions::default()).await.expect("namespace");
        let r = registry.lookup("", "v1", "configmaps").expect("configmaps").clone();
        let from = registry.store().revision();
        (registry, r, from)
    }

    async fn next(w: &mut Watch) -> (&'static str, Arc<WatchedObject>) {
        let e = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("an event").expect("open");
        let shared = match &e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o.clone(),
            other => panic!("unexpected {other:?}"),
        };
        (e.type_name(), shared)
    }

    #[tokio::test]
    async fn watchers_share_one_decoded_object_and_one_encoding() {
        let (registry, r, from) = setup().await;
        let mut a = registry.watch(&r, Some("default"), &watch_opts(None, from)).expect("watch a");
        let mut b = registry.watch(&r, Some("default"), &watch_opts(None, from)).expect("watch b");
        let mut blue = registry.watch(&r, Some("default"), &watch_opts(Some("team=blue"), from)).expect("watch blue");
        registry.create(&r, Some("default"), configmap("one", "blue"), &WriteOptions::default()).await.expect("create");

        let (ta, oa) = next(&mut a).await;
        let (tb, ob) = next(&mut b).await;
        let (tc, oc) = next(&mut blue).await;
        assert_eq!((ta, tb, tc), ("ADDED", "ADDED", "ADDED"));
        assert!(Arc::ptr_eq(&oa, &ob) && Arc::ptr_eq(&oa, &oc), "each watcher decoded its own copy");
        assert!(std::ptr::eq(oa.json(), ob.json()), "each watcher encoded its own line");
        let sent: Value = serde_json::from_slice(oa.json()).expect("json");
        assert_eq!(sent["metadata"]["name"], "one");
        assert_eq!(sent["metadata"]["resourceVersion"], (from + 1).to_string());
    }

    #[tokio::test]
    async fn a_selector_watch_sees_an_object_leave_and_a_delete_carries_the_last_state() {
        let (registry, r, from) = setup().await;
        let mut all = registry.watch(&r, Some("default"), &watch_opts(None, from)).expect("watch");
        let mut blue = registry.watch(&r, Some("default"), &watch_opts(Some("team=blue"), from)).expect("watch blue");
        let ns = Some("default");
        let w = WriteOptions::default();
        registry.create(&r, ns, configmap("one", "red"), &w).await.expect("create");
        let mut blue_obj = configmap("one", "blue");
        blue_obj["metadata"]["resourceVersion"] = Value::Null;
        registry.update(&r, ns, "one", blue_obj, &w, None).await.expect("to blue");
        registry.update(&r, ns, "one", configmap("one", "red"), &w, None).await.expect("back to red");
        registry.delete(&r, ns, "one", &DeleteOptions::default()).await.expect("delete");

        let mut seen_all = Vec::new();
        for _ in 0..4 {
            let (t, o) = next(&mut all).await;
            seen_all.push((t, o.value()["metadata"]["labels"]["team"].as_str().unwrap_or("").to_string()));
        }
        let want: Vec<(&str, String)> = vec![
            ("ADDED", "red".into()),
            ("MODIFIED", "blue".into()),
            ("MODIFIED", "red".into()),
            ("DELETED", "red".into()),
        ];
        assert_eq!(seen_all, want);
        // To the blue watcher the object arrives when it turns blue and leaves when it turns red.
        let (t1, o1) = next(&mut blue).await;
        let (t2, o2) = next(&mut blue).await;
        assert_eq!((t1, o1.value()["metadata"]["labels"]["team"].as_str()), ("ADDED", Some("blue")));
        assert_eq!((t2, o2.value()["metadata"]["labels"]["team"].as_str()), ("DELETED", Some("red")));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), blue.next()).await.is_err(),
            "the delete of a red object"
        );
    }
}
