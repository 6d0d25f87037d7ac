//! Adoption and release of dependents by controllerRef (`pkg/controller/controller_ref_manager.go`,
//! `ClaimObject`): a controller owns the objects its selector matches that have no controller, and
//! lets go of those it owns that its selector no longer matches.
//!
//! Upstream patches ownerReferences with a strategic merge patch keyed by UID; kplane sends a JSON
//! merge patch of the whole list with `metadata.resourceVersion` as its precondition, so a
//! concurrent change to the list is never overwritten (a conflict retries the sync instead).

use super::pods::{Selector, controller_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

/// The controller claiming objects.
#[derive(Debug, Clone)]
pub struct Claimant {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub deleting: bool,
}

impl Claimant {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: obj.meta().name.clone().unwrap_or_default(),
            uid: obj.meta().uid.clone().unwrap_or_default(),
            deleting: obj.meta().deletion_timestamp.is_some(),
        }
    }

    /// `metav1.NewControllerRef`.
    pub fn controller_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The objects out of `candidates` that `claimant` controls once adoption and release are done.
/// `can_adopt` is asked once, before the first adoption (upstream re-reads the controller uncached
/// to be sure it is not being deleted). The first error is returned after every object was tried.
pub async fn claim<K, F, Fut>(
    api_for: impl Fn(&str) -> Api<K>,
    claimant: &Claimant,
    selector: &Selector,
    candidates: Vec<Arc<K>>,
    can_adopt: F,
) -> Result<Vec<Arc<K>>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<bool, kube::Error>>,
{
    let mut claimed = Vec::new();
    let mut first_error = None;
    let mut can_adopt = Some(can_adopt);
    let mut adoptable: Option<bool> = None;
    for obj in candidates {
        let matches = selector.matches(obj.meta().labels.as_ref());
        match controller_of(obj.meta().owner_references.as_ref()) {
            Some(r) if r.uid != claimant.uid => {}
            Some(_) if matches => claimed.push(obj),
            Some(_) => {
                if claimant.deleting {
                    continue;
                }
                if let Err(e) = release(&api_for(&obj.namespace().unwrap_or_default()), &obj, &claimant.uid).await {
                    first_error.get_or_insert(e);
                }
            }
            None => {
                if !matches || claimant.deleting || obj.meta().deletion_timestamp.is_some() {
                    continue;
                }
                if adoptable.is_none()
                    && let Some(check) = can_adopt.take()
                {
                    adoptable = Some(check().await?);
                }
                if adoptable != Some(true) {
                    continue;
                }
                match adopt(&api_for(&obj.namespace().unwrap_or_default()), &obj, claimant).await {
                    Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                    Ok(None) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Adds the controllerRef; `None` when the object is gone.
async fn adopt<K>(api: &Api<K>, obj: &K, claimant: &Claimant) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != claimant.uid);
    refs.push(claimant.controller_ref());
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": obj.meta().uid,
        "resourceVersion": obj.meta().resource_version,
    }});
    match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the owner reference with `owner_uid`.
async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let refs: Vec<&OwnerReference> =
        obj.meta().owner_references.iter().flatten().filter(|r| r.uid != owner_uid).collect();
    let refs = if refs.is_empty() { serde_json::Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": obj.meta().uid,
        "resourceVersion": obj.meta().resource_version,
    }});
    match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Gone, or no longer the object we saw (upstream ignores NotFound and Invalid here).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}
