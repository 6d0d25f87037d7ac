//! List, watch and delete-collection over the generic store (`Store.List`, `Store.Watch`,
//! the watch cache's selector filtering, `limit`/`continue` tokens, bookmarks).

use super::generic::interpret;
use super::meta::{self, meta_str};
use super::options::{DeleteOptions, ListOptions, WatchOptions};
use super::{Registry, Resource};
use crate::error::{ApiError, ApiResult};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{EventKind, Revision, StorageError, WatchStream};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Objects read per storage scan while filtering a page.
const SCAN_BATCH: usize = 500;
/// How often a watch that allows bookmarks gets one (upstream: about once a minute).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// One watch event as sent on the wire (`metav1.WatchEvent`).
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
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

    pub fn object(&self) -> &Value {
        match self {
            WatchEvent::Added(o)
            | WatchEvent::Modified(o)
            | WatchEvent::Deleted(o)
            | WatchEvent::Bookmark(o)
            | WatchEvent::Error(o) => o,
        }
    }
}

/// Label and field selectors of a request, checked against the kind's field labels.
struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    fn new(r: &Resource, opts: &ListOptions) -> ApiResult<Self> {
        let labels =
            opts.label_selector.as_deref().filter(|s| !s.trim().is_empty()).map(LabelSelector::parse).transpose()?;
        let fields =
            opts.field_selector.as_deref().filter(|s| !s.trim().is_empty()).map(FieldSelector::parse).transpose()?;
        if let Some(f) = &fields {
            let mut supported = vec!["metadata.name"];
            if r.info().namespaced() {
                supported.push("metadata.namespace");
            }
            supported.extend_from_slice(r.strategy().field_labels());
            f.check_supported(&supported)?;
        }
        Ok(Self { labels, fields })
    }

    fn matches(&self, r: &Resource, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            let empty = serde_json::Map::new();
            if !l.matches(meta::labels(obj).unwrap_or(&empty)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            return f.matches(|field| match field {
                "metadata.name" => Some(meta::name(obj).to_string()),
                "metadata.namespace" => Some(meta_str(obj, "namespace").unwrap_or("").to_string()),
                other => r.strategy().field_value(obj, other),
            });
        }
        true
    }
}

/// The `continue` token: where the next page starts and the revision of the first page.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, last_key: &str) -> String {
    let token = Continue { v: "meta.k8s.io/v1".into(), rv, start: last_key.to_string() };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<Continue> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
    let c: Continue = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if c.v != "meta.k8s.io/v1" || !c.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(c)
}

impl Registry {
    /// LIST: a `<Kind>List` of the objects matching the selectors, paged by `limit`/`continue`.
    pub fn list(&self, r: &Resource, ns: Option<&str>, opts: &ListOptions) -> ApiResult<Value> {
        let info = r.info();
        let filter = Filter::new(r, opts)?;
        let prefix = r.key_prefix(ns);
        let current = self.store.revision();
        let mut start = None;
        let mut token_revision = None;
        if let Some(token) = opts.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let token = decode_continue(token, &prefix)?;
            start = Some(token.start);
            token_revision = Some(token.rv);
        } else {
            check_list_revision(opts, current)?;
        }
        let limit = opts.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut revision = token_revision;
        let mut next = None;
        'scan: loop {
            let (batch, rev) = self
                .store
                .list(&prefix, start.as_deref(), SCAN_BATCH.max(limit.unwrap_or(0) + 1))
                .map_err(|e| interpret(r, "", e))?;
            let revision = *revision.get_or_insert(rev);
            let done = batch.len() < SCAN_BATCH.max(limit.unwrap_or(0) + 1);
            for kv in &batch {
                if limit.is_some_and(|l| items.len() == l) {
                    next = Some(encode_continue(revision, start.as_deref().unwrap_or(&prefix)));
                    break 'scan;
                }
                start = Some(kv.key.clone());
                let obj = r.decode(kv)?;
                if filter.matches(r, &obj) {
                    items.push(obj);
                }
            }
            if done {
                break;
            }
        }
        let revision = revision.unwrap_or(current);
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(token) = next {
            list_meta["continue"] = token.into();
        }
        Ok(json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": list_meta,
            "items": items,
        }))
    }

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
                vec![crate::error::FieldError::forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks=true",
                )],
            ));
        }
        let mut initial = Vec::new();
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
                initial.extend(items.iter().cloned().map(WatchEvent::Added));
            }
            if opts.send_initial_events == Some(true) {
                initial.push(WatchEvent::Bookmark(bookmark(r, rv, true)));
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
                initial.push(WatchEvent::Error(
                    ApiError::expired(format!("too old resource version: {from} ({oldest})")).to_status(),
                ));
                None
            }
            Err(e) => return Err(interpret(r, "", e)),
        };
        Ok(Watch {
            resource: r.clone(),
            strategy_filter: filter,
            initial: initial.into(),
            stream,
            last_revision: from,
            allow_bookmarks: opts.allow_bookmarks,
            timeout: opts.timeout_seconds.map(Duration::from_secs),
        })
    }

    /// DELETE of a collection: each matching object deleted in turn; the deleted objects returned.
    pub async fn delete_collection(
        &self,
        r: &Resource,
        ns: Option<&str>,
        list_opts: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let mut list = self.list(r, ns, list_opts)?;
        let mut deleted = Vec::new();
        if let Some(items) = list.get("items").and_then(Value::as_array) {
            for item in items {
                let item_ns = meta_str(item, "namespace");
                match self.delete(r, item_ns, meta::name(item), opts).await {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        list["items"] = Value::Array(deleted);
        Ok(list)
    }
}

/// `resourceVersion`/`resourceVersionMatch` of a list: kplane serves the latest state only.
fn check_list_revision(opts: &ListOptions, current: Revision) -> ApiResult<()> {
    let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
    let rv_match = opts.resource_version_match.as_deref().filter(|s| !s.is_empty());
    match (rv_match, rv) {
        (None, None | Some("0")) => Ok(()),
        (Some(m), None) => Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::error::FieldError::forbidden(
                "resourceVersionMatch",
                format!("resourceVersionMatch is forbidden unless resourceVersion is provided (got {m:?})"),
            )],
        )),
        (Some("Exact"), Some(rv)) => {
            let rv = meta::parse_resource_version(rv)?;
            if rv == current {
                Ok(())
            } else if rv > current {
                Err(ApiError::timeout(format!("Too large resource version: {rv}, current: {current}"), 1))
            } else {
                Err(ApiError::expired(format!(
                    "The resourceVersion for the provided list is too old: {rv} (current {current})"
                )))
            }
        }
        (None | Some("NotOlderThan"), Some(rv)) => {
            let rv = meta::parse_resource_version(rv)?;
            if rv > current {
                return Err(ApiError::timeout(format!("Too large resource version: {rv}, current: {current}"), 1));
            }
            Ok(())
        }
        (Some(other), Some(_)) => Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::error::FieldError::not_supported("resourceVersionMatch", other, &["Exact", "NotOlderThan"])],
        )),
    }
}

fn bookmark(r: &Resource, revision: Revision, initial_end: bool) -> Value {
    let info = r.info();
    bookmark_of(info, revision, initial_end)
}

fn bookmark_of(info: &super::ResourceInfo, revision: Revision, initial_end: bool) -> Value {
    let mut m = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": m})
}

/// A running watch: initial events, then storage events turned into filtered watch events.
pub struct Watch {
    resource: Arc<Resource>,
    strategy_filter: Filter,
    initial: std::collections::VecDeque<WatchEvent>,
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
        let r = &self.resource;
        loop {
            let stream = self.stream.as_mut()?;
            let next = if self.allow_bookmarks {
                match tokio::time::timeout(BOOKMARK_INTERVAL, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => return Some(WatchEvent::Bookmark(bookmark_of(r.info(), self.last_revision, false))),
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
            let new = event.value.as_deref().map(|b| r.decode_bytes(b, event.revision)).transpose().ok()?;
            let old = event.prev.as_deref().map(|b| r.decode_bytes(b, event.revision)).transpose().ok()?;
            let matches_new = new.as_ref().is_some_and(|o| self.strategy_filter.matches(r, o));
            let matches_old = old.as_ref().is_some_and(|o| self.strategy_filter.matches(r, o));
            let out = match (event.kind, matches_old, matches_new) {
                (EventKind::Deleted, true, _) => old.map(WatchEvent::Deleted),
                (EventKind::Deleted, false, _) => None,
                (_, false, true) => new.map(WatchEvent::Added),
                (_, true, true) => new.map(WatchEvent::Modified),
                // The object stopped matching: to this watcher it is gone.
                (_, true, false) => new.map(WatchEvent::Deleted),
                (_, false, false) => None,
            };
            if let Some(out) = out {
                return Some(out);
            }
        }
    }
}
