//! List and delete-collection over the generic store (`Store.List`, selector filtering,
//! `limit`/`continue` tokens). Watch is in `watch.rs`.

use super::generic::interpret;
use super::meta::{self, meta_str};
use super::options::{DeleteOptions, ListOptions};
use super::{Registry, Resource};
use crate::error::{ApiError, ApiResult};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::Revision;
use base64::Engine;
use serde_json::{Value, json};

/// Objects read per storage scan while filtering a page.
const SCAN_BATCH: usize = 500;

/// Label and field selectors of a request, checked against the kind's field labels.
pub(super) struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub(super) fn new(r: &Resource, opts: &ListOptions) -> ApiResult<Self> {
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

    /// Whether every object matches (no selectors), so none need be looked at.
    pub(super) fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub(super) fn matches(&self, r: &Resource, obj: &Value) -> bool {
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
