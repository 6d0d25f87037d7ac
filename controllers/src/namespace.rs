//! The namespace controller (`pkg/controller/namespace`, `deletion/namespaced_resources_deleter.go`,
//! `deletion/status_condition_utils.go`): when a namespace is being deleted it turns
//! `Terminating`, every namespaced kind the server serves is emptied in it (delete-collection,
//! else one by one, background propagation), what remains is reported in the namespace's
//! conditions as upstream words them, and once nothing remains the `kubernetes` finalizer is
//! removed through `/finalize`, which lets the API server remove the namespace. It waits for
//! graceful pod deletion and for finalizers; it never forces either.

use crate::discovery::{ServedResource, discover};
use crate::workqueue::WorkQueue;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

/// The finalizer this controller owns (`FinalizerKubernetes`).
pub const FINALIZER: &str = "kubernetes";
/// The wait assumed for objects held by finalizers (`finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE: i64 = 15;
/// Namespaces deleted at the same time (`--concurrent-namespace-syncs`, 10 upstream).
const WORKERS: usize = 4;
/// Longest wait before looking again at a namespace whose content is still going (upstream waits
/// half the estimate; here deletions seen by the garbage collector wake it earlier).
const MAX_RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Content(String),
}

/// What one sync decided.
enum Outcome {
    Done,
    /// Content remains; look again in about this many seconds (`ResourcesRemainingError`).
    Remaining(i64),
}

/// The namespace controller. `deletions` (from the garbage collector) names namespaces in which
/// objects went away, so a waiting namespace is looked at again at once.
pub async fn run(client: Client, deletions: Option<broadcast::Receiver<String>>) {
    let queue: Arc<WorkQueue<String>> = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(60));
    let terminating: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for _ in 0..WORKERS {
        tasks.spawn(worker(client.clone(), queue.clone()));
    }
    if let Some(mut rx) = deletions {
        let (queue, terminating) = (queue.clone(), terminating.clone());
        tasks.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ns) => {
                        if lock(&terminating).contains(&ns) {
                            queue.add(ns);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for ns in lock(&terminating).iter() {
                            queue.add(ns.clone());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    let stream = watcher::watcher(Api::<Namespace>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let ns = match event {
            Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => ns,
            Ok(watcher::Event::Delete(ns)) => {
                lock(&terminating).remove(&ns.name_any());
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "namespace controller: watch");
                continue;
            }
        };
        if ns.metadata.deletion_timestamp.is_some() {
            lock(&terminating).insert(ns.name_any());
            queue.add(ns.name_any());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn worker(client: Client, queue: Arc<WorkQueue<String>>) {
    loop {
        let name = queue.get().await;
        match sync(&client, &name).await {
            Ok(Outcome::Done) => queue.forget(&name),
            Ok(Outcome::Remaining(estimate)) => {
                queue.forget(&name);
                let wait = Duration::from_millis(u64::try_from(estimate).unwrap_or(1) * 500);
                queue.add_after(name.clone(), wait.clamp(Duration::from_millis(100), MAX_RECHECK));
            }
            Err(e) => {
                tracing::debug!(namespace = %name, error = %e, "namespace controller: retrying");
                queue.add_rate_limited(name.clone());
            }
        }
        queue.done(&name);
    }
}

/// `namespacedResourcesDeleter.Delete`.
async fn sync(client: &Client, name: &str) -> Result<Outcome, SyncError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let Some(mut ns) = api.get_opt(name).await? else { return Ok(Outcome::Done) };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Outcome::Done);
    }
    if phase(&ns) != "Terminating" {
        let status = ns.status.get_or_insert_with(NamespaceStatus::default);
        status.phase = Some("Terminating".into());
        ns = match api.replace_status(name, &PostParams::default(), &ns).await {
            Ok(ns) => ns,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Outcome::Done),
            Err(e) => return Err(e.into()),
        };
    }
    if finalizers(&ns).is_empty() {
        return Ok(Outcome::Done);
    }
    let estimate = delete_all_content(client, &ns).await?;
    if estimate > 0 {
        return Ok(Outcome::Remaining(estimate));
    }
    finalize(&api, ns).await?;
    Ok(Outcome::Done)
}

fn phase(ns: &Namespace) -> &str {
    ns.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default()
}

/// `finalizeNamespace`: PUT `/finalize` without our finalizer, retried on conflict.
async fn finalize(api: &Api<Namespace>, mut ns: Namespace) -> Result<(), kube::Error> {
    let name = ns.name_any();
    loop {
        let mut rest: Vec<String> = finalizers(&ns).into_iter().filter(|f| f != FINALIZER).collect();
        rest.sort();
        rest.dedup();
        ns.spec.get_or_insert_with(Default::default).finalizers = Some(rest);
        match api.replace_subresource("finalize", &name, &PostParams::default(), &ns).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await? {
                Some(latest) if latest.metadata.uid == ns.metadata.uid => ns = latest,
                _ => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
}

/// What remains of one kind after a pass (`gvrDeletionMetadata`).
#[derive(Default)]
struct Remaining {
    estimate: i64,
    count: usize,
    finalizers: BTreeMap<String, usize>,
}

/// `deleteAllContent`: empties every kind, records the conditions, returns the estimate.
async fn delete_all_content(client: &Client, ns: &Namespace) -> Result<i64, SyncError> {
    let name = ns.name_any();
    let deleted_at = ns.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    let mut failures = Failures::default();
    let mut errors: Vec<String> = Vec::new();
    let discovered = match discover(client).await {
        Ok(d) => d,
        Err(e) => {
            failures.discovery = Some(e.to_string());
            Default::default()
        }
    };
    if let Some(why) = discovered.failure() {
        failures.discovery =
            Some(format!("Discovery failed for some groups, {} failing: {why}", discovered.failed.len()));
    }
    if let Some(why) = &failures.discovery {
        errors.push(why.clone());
    }
    let mut estimate = 0;
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for r in discovered.preferred().filter(|r| r.namespaced && r.supports("delete")) {
        match delete_kind(client, r, &name, deleted_at).await {
            Ok(left) => {
                estimate = estimate.max(left.estimate);
                if left.count > 0 {
                    remaining.insert(dotted(r), left.count);
                    for (f, n) in left.finalizers {
                        *held.entry(f).or_default() += n;
                    }
                }
            }
            Err((left, e)) => {
                estimate = estimate.max(left.estimate);
                if left.count > 0 {
                    remaining.insert(dotted(r), left.count);
                }
                failures.content.push(e.clone());
                errors.push(e);
            }
        }
    }
    let conditions = failures.conditions(&remaining, &held);
    update_conditions(client, ns, conditions).await;
    if errors.is_empty() { Ok(estimate) } else { Err(SyncError::Content(errors.join(", "))) }
}

/// `pods.` or `deployments.apps`, as the `NamespaceContentRemaining` message names kinds.
fn dotted(r: &ServedResource) -> String {
    format!("{}.{}", r.api_resource.plural, r.api_resource.group)
}

/// `deleteAllContentForGroupVersionResource`.
async fn delete_kind(
    client: &Client,
    r: &ServedResource,
    ns: &str,
    deleted_at: Option<k8s_openapi::jiff::Timestamp>,
) -> Result<Remaining, (Remaining, String)> {
    let gvr = format!("{}/{}, Resource={}", r.api_resource.group, r.api_resource.version, r.api_resource.plural);
    let fail = |e: kube::Error| (Remaining::default(), format!("{e}"));
    let mut estimate = 0;
    if r.api_resource.group.is_empty() && r.api_resource.plural == "pods" {
        estimate = estimate_pods(client, ns).await.map_err(fail)?;
        let waited = deleted_at.map_or(0, |t| k8s_openapi::jiff::Timestamp::now().duration_since(t).as_secs());
        if waited >= estimate {
            estimate = 0;
        }
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.api_resource);
    let background = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    let mut collected = false;
    if r.supports("deletecollection") {
        match api.delete_collection(&background, &ListParams::default()).await {
            Ok(_) => collected = true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
            Err(e) => return Err((Remaining { estimate, ..Default::default() }, e.to_string())),
        }
    }
    if !r.supports("list") {
        return Ok(Remaining { estimate, ..Default::default() });
    }
    let list = |api: Api<DynamicObject>| async move { api.list_metadata(&ListParams::default()).await };
    if !collected {
        let items = match list(api.clone()).await {
            Ok(l) => l.items,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => return Ok(Remaining::default()),
            Err(e) => return Err((Remaining { estimate, ..Default::default() }, e.to_string())),
        };
        for item in items {
            match api.delete(&item.name_any(), &background).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
                Err(e) => return Err((Remaining { estimate, ..Default::default() }, e.to_string())),
            }
        }
    }
    let items = match list(api).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {
            return Ok(Remaining { estimate, ..Default::default() });
        }
        Err(e) => return Err((Remaining { estimate, ..Default::default() }, e.to_string())),
    };
    if items.is_empty() {
        return Ok(Remaining::default());
    }
    let mut finalizers = BTreeMap::new();
    for f in items.iter().flat_map(|i| i.metadata.finalizers.iter().flatten()) {
        *finalizers.entry(f.clone()).or_insert(0) += 1;
    }
    let count = items.len();
    if estimate != 0 {
        return Ok(Remaining { estimate, count, finalizers });
    }
    if !finalizers.is_empty() {
        return Ok(Remaining { estimate: FINALIZER_ESTIMATE, count, finalizers });
    }
    Err((
        Remaining { estimate, count, finalizers },
        format!("unexpected items still remain in namespace: {ns} for gvr: {gvr}"),
    ))
}

/// `estimateGracefulTerminationForPods`: the longest grace period of the pods not yet finished.
async fn estimate_pods(client: &Client, ns: &str) -> Result<i64, kube::Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
            phase != "Succeeded" && phase != "Failed"
        })
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .max()
        .unwrap_or(0)
        .max(0))
}

/// The condition types this controller keeps, in upstream's order, with the reason and message
/// of their "all is well" form.
const CONDITIONS: [(&str, &str, &str); 5] = [
    ("NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered", "All resources successfully discovered"),
    ("NamespaceDeletionGroupVersionParsingFailure", "ParsedGroupVersions", "All legacy kube types successfully parsed"),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    ("NamespaceContentRemaining", "ContentRemoved", "All content successfully removed"),
    ("NamespaceFinalizersRemaining", "ContentHasNoFinalizers", "All content-preserving finalizers finished"),
];

/// Failures of one pass (`namespaceConditionUpdater`).
#[derive(Default)]
struct Failures {
    discovery: Option<String>,
    content: Vec<String>,
}

impl Failures {
    /// The failing conditions as (type, reason, message); the others are reported as fine.
    fn conditions(
        &self,
        remaining: &BTreeMap<String, usize>,
        held: &BTreeMap<String, usize>,
    ) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if let Some(why) = &self.discovery {
            out.push(("NamespaceDeletionDiscoveryFailure", "DiscoveryFailed".into(), why.clone()));
        }
        if !self.content.is_empty() {
            let mut msgs = self.content.clone();
            msgs.sort();
            out.push((
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed".into(),
                format!("Failed to delete all resource types, {} remaining: {}", msgs.len(), msgs.join(", ")),
            ));
        }
        if !remaining.is_empty() {
            let mut parts: Vec<String> =
                remaining.iter().map(|(gr, n)| format!("{gr} has {n} resource instances")).collect();
            parts.sort();
            out.push((
                "NamespaceContentRemaining",
                "SomeResourcesRemain".into(),
                format!("Some resources are remaining: {}", parts.join(", ")),
            ));
        }
        if !held.is_empty() {
            let mut parts: Vec<String> = held.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
            parts.sort();
            out.push((
                "NamespaceFinalizersRemaining",
                "SomeFinalizersRemain".into(),
                format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
            ));
        }
        out
    }
}

/// `updateConditions`: each kept type set to its failing or fine form; the transition time
/// moves only when the status flips. Written through `/status` only when something changed.
fn merge_conditions(ns: &mut Namespace, failing: &[(&'static str, String, String)]) -> bool {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for (type_, ok_reason, ok_message) in CONDITIONS {
        let (status_, reason, message) = match failing.iter().find(|(t, _, _)| *t == type_) {
            Some((_, reason, message)) => ("True", reason.clone(), message.clone()),
            None => ("False", ok_reason.to_string(), ok_message.to_string()),
        };
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: type_.into(),
                    status: status_.into(),
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status_ || c.reason.as_deref() != Some(&reason) || c.message.as_deref() != Some(&message)
                {
                    if c.status != status_ {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status_.into();
                    c.reason = Some(reason);
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Writes the conditions (best effort, as upstream: a failure is only logged).
async fn update_conditions(client: &Client, ns: &Namespace, failing: Vec<(&'static str, String, String)>) {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = ns.clone();
    for _ in 0..3 {
        if !merge_conditions(&mut ns, &failing) {
            return;
        }
        match api.replace_status(&ns.name_any(), &PostParams::default(), &ns).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&ns.name_any()).await {
                Ok(Some(latest)) => ns = latest,
                _ => return,
            },
            Err(e) => {
                tracing::debug!(namespace = %ns.name_any(), error = %e, "namespace controller: conditions");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_upstream_and_clear_again() {
        let failures = Failures {
            discovery: Some("Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: example.com/v1: boom".into()),
            content: vec!["b failed".into(), "a failed".into()],
        };
        let mut ns = Namespace::default();
        merge_conditions(&mut ns, &failures.conditions(&BTreeMap::new(), &BTreeMap::new()));
        let conds = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        assert_eq!((conds[0].status.as_str(), conds[0].reason.as_deref()), ("True", Some("DiscoveryFailed")));
        assert_eq!(conds[2].reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            conds[2].message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: a failed, b failed")
        );
        let before = conds[2].last_transition_time.clone();
        // Fixed: every condition turns False with its "all is well" reason.
        assert!(merge_conditions(&mut ns, &Failures::default().conditions(&BTreeMap::new(), &BTreeMap::new())));
        let conds = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        assert!(conds.iter().all(|c| c.status == "False"));
        assert_eq!(conds[2].reason.as_deref(), Some("ContentDeleted"));
        assert!(conds[2].last_transition_time >= before);
    }

    #[test]
    fn conditions_read_as_upstream() {
        let failures = Failures::default();
        let remaining = BTreeMap::from([("pods.".to_string(), 2), ("configmaps.".to_string(), 1)]);
        let held = BTreeMap::from([("example.com/hold".to_string(), 1)]);
        let mut ns = Namespace::default();
        assert!(merge_conditions(&mut ns, &failures.conditions(&remaining, &held)));
        let conds = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let types: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, CONDITIONS.map(|c| c.0));
        let remaining = &conds[3];
        assert_eq!((remaining.status.as_str(), remaining.reason.as_deref()), ("True", Some("SomeResourcesRemain")));
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances")
        );
        assert_eq!(
            conds[4].message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
        assert_eq!(conds[0].reason.as_deref(), Some("ResourcesDiscovered"));
        // The same state again changes nothing.
        assert!(!merge_conditions(
            &mut ns,
            &failures.conditions(&BTreeMap::from([("pods.".into(), 2), ("configmaps.".into(), 1)]), &held)
        ));
    }
}
