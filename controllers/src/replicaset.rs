//! The ReplicaSet controller (`pkg/controller/replicaset/replica_set.go`, `replica_set_utils.go`):
//! keeps `spec.replicas` active pods per ReplicaSet, adopting matching orphans and releasing pods
//! whose labels stop matching, creating pods from the template in slow-start batches, deleting the
//! surplus in upstream's preference order, and reporting status (replicas, fullyLabeled, ready,
//! available after `minReadySeconds`, `observedGeneration`, the `ReplicaFailure` condition).
//! Expectations keep it from acting twice while its pod cache catches up with its own writes.

pub(crate) mod claim;
mod expectations;
pub(crate) mod pods;

use claim::{Claimant, claim};
use expectations::Expectations;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use kube::{Client, Resource, ResourceExt};
use pods::{Selector, controller_of, is_active, is_available, is_ready};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Most pods created or deleted in one sync (`BurstReplicas`).
const BURST_REPLICAS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    expectations: Expectations,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let (sets, sets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let ctx = Arc::new(Ctx { client: client.clone(), pods, sets: sets.clone(), expectations: Expectations::default() });
    let forget = ctx.clone();
    let set_events = watcher(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(sets_writer)
        .inspect_ok(move |ev| {
            if let Event::Delete(rs) = ev {
                forget.expectations.forget(&key_of(rs));
            }
        })
        .applied_objects();
    let mut tracker = PodTracker { ctx: ctx.clone(), seen: HashMap::new(), relist: None };
    let pod_triggers = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(pods_writer)
        .flat_map(move |ev| {
            let refs = match ev {
                Ok(ev) => tracker.on_event(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "replicaset controller: pod watch");
                    Vec::new()
                }
            };
            stream::iter(refs)
        });
    Controller::for_stream(set_events, sets)
        .reconcile_on(pod_triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or(""))
}

/// The name of the ReplicaSet controlling a pod.
fn owning_set(pod: &Pod) -> Option<String> {
    controller_of(pod.metadata.owner_references.as_ref())
        .filter(|r| r.kind == "ReplicaSet" && r.api_version.starts_with("apps/"))
        .map(|r| r.name.clone())
}

struct Seen {
    uid: String,
    owner: Option<String>,
    deleting: bool,
}

/// Turns pod watch events into expectation observations and the ReplicaSets to sync
/// (`addPod`/`updatePod`/`deletePod`): the controller, the previous controller, or for an
/// orphan every ReplicaSet whose selector matches it.
struct PodTracker {
    ctx: Arc<Ctx>,
    seen: HashMap<String, Seen>,
    /// Pods listed since a (re)list began; observed only once the store holds them all.
    relist: Option<Vec<Pod>>,
}

impl PodTracker {
    fn on_event(&mut self, ev: Event<Pod>) -> Vec<ObjectRef<ReplicaSet>> {
        match ev {
            Event::Init => {
                self.relist = Some(Vec::new());
                Vec::new()
            }
            Event::InitApply(pod) => match &mut self.relist {
                Some(buf) => {
                    buf.push(pod);
                    Vec::new()
                }
                None => self.applied(&pod),
            },
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let keys: HashSet<String> = listed.iter().map(key_of).collect();
                let mut out: Vec<_> = listed.iter().flat_map(|p| self.applied(p)).collect();
                let gone: Vec<String> = self.seen.keys().filter(|k| !keys.contains(*k)).cloned().collect();
                for key in gone {
                    out.extend(self.deleted(&key));
                }
                out
            }
            Event::Apply(pod) => self.applied(&pod),
            Event::Delete(pod) => self.deleted(&key_of(&pod)),
        }
    }

    fn set_ref(ns: &str, name: &str) -> ObjectRef<ReplicaSet> {
        ObjectRef::new(name).within(ns)
    }

    fn applied(&mut self, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
        let key = key_of(pod);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let owner = owning_set(pod);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let exp = &self.ctx.expectations;
        let mut out = Vec::new();
        let prev = self.seen.insert(key.clone(), Seen { uid: uid.clone(), owner: owner.clone(), deleting });
        match prev {
            Some(prev) if prev.uid == uid => {
                if deleting
                    && !prev.deleting
                    && let Some(o) = &owner
                {
                    exp.deletion_observed(&format!("{ns}/{o}"), &key);
                }
                if prev.owner != owner
                    && let Some(o) = prev.owner
                {
                    out.push(Self::set_ref(&ns, &o));
                }
            }
            other => {
                if let Some(prev) = other {
                    // A new pod took the name of one whose deletion we never saw.
                    if let Some(o) = prev.owner {
                        if !prev.deleting {
                            exp.deletion_observed(&format!("{ns}/{o}"), &key);
                        }
                        out.push(Self::set_ref(&ns, &o));
                    }
                }
                match &owner {
                    Some(o) if deleting => exp.deletion_observed(&format!("{ns}/{o}"), &key),
                    Some(o) => exp.creation_observed(&format!("{ns}/{o}")),
                    None => {}
                }
            }
        }
        match owner {
            Some(o) => out.push(Self::set_ref(&ns, &o)),
            None if !deleting => {
                let labels = pod.metadata.labels.as_ref();
                let matching = self.ctx.sets.state().into_iter().filter(|rs| {
                    rs.metadata.namespace.as_deref() == Some(ns.as_str())
                        && rs
                            .spec
                            .as_ref()
                            .and_then(|s| Selector::parse(&s.selector))
                            .is_some_and(|s| !s.is_empty() && s.matches(labels))
                });
                out.extend(matching.map(|rs| ObjectRef::from_obj(rs.as_ref())));
            }
            None => {}
        }
        out
    }

    fn deleted(&mut self, key: &str) -> Vec<ObjectRef<ReplicaSet>> {
        let Some(prev) = self.seen.remove(key) else { return Vec::new() };
        let Some(owner) = prev.owner else { return Vec::new() };
        let ns = key.split_once('/').map(|(ns, _)| ns).unwrap_or("");
        if !prev.deleting {
            self.ctx.expectations.deletion_observed(&format!("{ns}/{owner}"), key);
        }
        vec![Self::set_ref(ns, &owner)]
    }
}

fn error_policy(_rs: Arc<ReplicaSet>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        // Our cached copy was stale; the watch brings the new one at once.
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => Action::requeue(Duration::from_millis(20)),
        e => {
            tracing::debug!(error = %e, "replicaset sync");
            Action::requeue(Duration::from_millis(500))
        }
    }
}

/// `syncReplicaSet`.
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _ = ctx.pods.wait_until_ready().await;
    let key = key_of(rs.as_ref());
    let ns = rs.namespace().unwrap_or_default();
    let needs_sync = ctx.expectations.satisfied(&key);
    let Some(spec) = rs.spec.as_ref() else { return Ok(Action::await_change()) };
    let Some(selector) = Selector::parse(&spec.selector) else {
        tracing::warn!(replicaset = %key, "invalid selector");
        return Ok(Action::await_change());
    };
    let candidates: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && is_active(p))
        .collect();
    let claimant = Claimant::of(rs.as_ref());
    let client = ctx.client.clone();
    let fresh_check = {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let (name, uid) = (rs.name_any(), rs.metadata.uid.clone());
        move || async move {
            let fresh = api.get(&name).await?;
            Ok(fresh.metadata.uid == uid && fresh.metadata.deletion_timestamp.is_none())
        }
    };
    let pods =
        claim(|ns| Api::<Pod>::namespaced(client.clone(), ns), &claimant, &selector, candidates, fresh_check).await?;

    let mut manage_error = None;
    if needs_sync && rs.metadata.deletion_timestamp.is_none() {
        manage_error = manage_replicas(&ctx, &rs, &key, &pods).await.err();
    }
    let now = Timestamp::now();
    let status = calculate_status(&rs, &pods, manage_error.as_ref(), now);
    let updated = update_status(&ctx, &rs, status).await?;
    if let Some(e) = manage_error {
        return Err(e);
    }
    let min_ready = updated.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let st = updated.status.as_ref();
    let want = desired(&updated);
    if min_ready > 0
        && st.and_then(|s| s.ready_replicas).unwrap_or(0) == want
        && st.and_then(|s| s.available_replicas).unwrap_or(0) != want
    {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn desired(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A pod to create from the ReplicaSet's template (`GetPodFromTemplate`).
fn pod_from_template(rs: &ReplicaSet, claimant: &Claimant) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = rs.name_any();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![claimant.controller_ref()]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("is being terminated"))
}

/// `manageReplicas`: creates or deletes pods so that `pods` (active, owned) becomes `spec.replicas`.
async fn manage_replicas(ctx: &Ctx, rs: &ReplicaSet, key: &str, pods: &[Arc<Pod>]) -> Result<(), Error> {
    let diff = pods.len() as i64 - i64::from(desired(rs));
    let ns = rs.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if diff < 0 {
        let n = (diff.unsigned_abs() as usize).min(BURST_REPLICAS);
        ctx.expectations.expect_creations(key, n);
        let template = pod_from_template(rs, &Claimant::of(rs));
        let (created, error) = slow_start_batch(n, |_| {
            let (api, template) = (api.clone(), template.clone());
            async move { api.create(&PostParams::default(), &template).await }
        })
        .await;
        for pod in &created {
            record_event(&ctx.client, rs, "Normal", "SuccessfulCreate", &format!("Created pod: {}", pod.name_any()));
        }
        for _ in created.len()..n {
            ctx.expectations.creation_observed(key);
        }
        if let Some(e) = error {
            if namespace_terminating(&e) {
                return Ok(());
            }
            record_event(&ctx.client, rs, "Warning", "FailedCreate", &format!("Error creating: {e}"));
            return Err(e.into());
        }
    } else if diff > 0 {
        let n = (diff as usize).min(BURST_REPLICAS);
        let related = related_pods(ctx, rs);
        let related: Vec<&Pod> = related.iter().map(AsRef::as_ref).collect();
        let owned: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        let victims = pods::pods_to_delete(&owned, &related, n, Timestamp::now());
        ctx.expectations.expect_deletions(key, victims.iter().map(|p| key_of(*p)));
        let results = futures::future::join_all(victims.iter().map(|p| {
            let (api, name) = (api.clone(), p.name_any());
            async move { (name.clone(), api.delete(&name, &DeleteParams::default()).await) }
        }))
        .await;
        let mut first_error = None;
        for (name, result) in results {
            match result {
                Ok(_) => record_event(&ctx.client, rs, "Normal", "SuccessfulDelete", &format!("Deleted pod: {name}")),
                Err(e) => {
                    ctx.expectations.deletion_observed(key, &format!("{ns}/{name}"));
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        record_event(&ctx.client, rs, "Warning", "FailedDelete", &format!("Error deleting: {e}"));
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Active pods controlled by any ReplicaSet that has the same controller as `rs`
/// (`getIndirectlyRelatedPods`), or by `rs` alone when it has none.
fn related_pods(ctx: &Ctx, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
    let ns = rs.metadata.namespace.as_deref();
    let controller = controller_of(rs.metadata.owner_references.as_ref()).map(|r| r.uid.clone());
    let mut uids: HashSet<String> = rs.metadata.uid.iter().cloned().collect();
    if let Some(c) = controller {
        for other in ctx.sets.state() {
            if other.metadata.namespace.as_deref() == ns
                && controller_of(other.metadata.owner_references.as_ref()).is_some_and(|r| r.uid == c)
            {
                uids.extend(other.metadata.uid.clone());
            }
        }
    }
    ctx.pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == ns
                && is_active(p)
                && controller_of(p.metadata.owner_references.as_ref()).is_some_and(|r| uids.contains(&r.uid))
        })
        .collect()
}

/// `slowStartBatch`: calls `f` in batches of 1, 2, 4, … (all of a batch at once) until `n` calls
/// succeeded or a batch had an error. Returns what succeeded and the first error.
pub(crate) async fn slow_start_batch<T, F, Fut>(n: usize, f: F) -> (Vec<T>, Option<kube::Error>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut done = Vec::with_capacity(n);
    let mut batch = n.min(1);
    while batch > 0 {
        let start = done.len();
        let results = futures::future::join_all((start..start + batch).map(&f)).await;
        let mut error = None;
        for r in results {
            match r {
                Ok(v) => done.push(v),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_some() {
            return (done, error);
        }
        batch = (2 * batch).min(n - done.len());
    }
    (done, None)
}

/// `calculateStatus`.
fn calculate_status(
    rs: &ReplicaSet,
    pods: &[Arc<Pod>],
    manage_error: Option<&Error>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels =
        spec.and_then(|s| s.template.as_ref()).and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            template_labels.iter().flatten().all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let available = pods.iter().filter(|p| is_available(p, min_ready, now)).count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some(e) if !has_failure => {
            let reason = if (pods.len() as i64) < i64::from(desired(rs)) { "FailedCreate" } else { "FailedDelete" };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: old.observed_generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

/// Go's `omitempty` for counts: zero is absent.
pub(crate) fn nonzero(n: usize) -> Option<i32> {
    (n > 0).then_some(n as i32)
}

/// `updateReplicaSetStatus`: writes the status when it or the observed generation changed; on a
/// conflict re-reads once and retries.
async fn update_status(ctx: &Ctx, rs: &ReplicaSet, mut status: ReplicaSetStatus) -> Result<ReplicaSet, Error> {
    let generation = rs.metadata.generation;
    let current = rs.status.clone().unwrap_or_default();
    status.observed_generation = current.observed_generation;
    if status == current && current.observed_generation == generation {
        return Ok(rs.clone());
    }
    status.observed_generation = generation;
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let mut next = rs.clone();
    next.status = Some(status.clone());
    match api.replace_status(&rs.name_any(), &PostParams::default(), &next).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let mut fresh = api.get(&rs.name_any()).await?;
            status.observed_generation = fresh.metadata.generation;
            fresh.status = Some(status);
            Ok(api.replace_status(&rs.name_any(), &PostParams::default(), &fresh).await?)
        }
        other => Ok(other?),
    }
}

/// Records a core/v1 Event about `obj` in the background (best effort, as the event recorder).
pub(crate) fn record_event<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let component = match K::kind(&()).as_ref() {
        "Deployment" => "deployment-controller",
        _ => "replicaset-controller",
    };
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let now = Time(Timestamp::now());
    let event = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", meta.name.as_deref().unwrap_or(""))),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "recording an event");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_batch() {
        let calls = std::sync::Mutex::new(Vec::new());
        let (done, err) = slow_start_batch(10, |i| {
            calls.lock().map(|mut c| c.push(i)).ok();
            async move { if i == 4 { Err(kube::Error::LinesCodecMaxLineLengthExceeded) } else { Ok(i) } }
        })
        .await;
        // batches: [0], [1,2], [3..7) fails at 4 -> 1+2+3 succeed
        assert_eq!(done.len(), 6);
        assert!(err.is_some());
        assert_eq!(calls.lock().map(|c| c.len()).unwrap_or(0), 7);
        let (done, err) = slow_start_batch(5, |i| async move { Ok::<_, kube::Error>(i) }).await;
        assert_eq!((done.len(), err.is_none()), (5, true));
    }
}
