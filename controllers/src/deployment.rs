//! The Deployment controller (`pkg/controller/deployment`: `deployment_controller.go`, `sync.go`,
//! `rolling.go`, `recreate.go`, `progress.go`): owns ReplicaSets named `<deployment>-<hash>` with
//! the `pod-template-hash` label, numbers them with `deployment.kubernetes.io/revision`, rolls
//! from old to new with maxSurge/maxUnavailable or Recreate, rescales proportionally during a
//! rollout, honours `paused`, keeps `revisionHistoryLimit` old ReplicaSets, and reports status and
//! the Available/Progressing/ReplicaFailure conditions as upstream does.

pub(crate) mod util;

use crate::replicaset::claim::{Claimant, claim};
use crate::replicaset::pods::{Selector, controller_of};
use crate::replicaset::{Error, record_event};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use util::*;

struct Ctx {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let (deployments, deployments_writer) = reflector::store();
    let (sets, sets_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let ctx = Arc::new(Ctx { client: client.clone(), deployments: deployments.clone(), sets, pods });
    let deployment_events = watcher::watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(deployments_writer)
        .applied_objects();
    let for_sets = ctx.clone();
    let set_triggers = watcher::watcher(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(sets_writer)
        .touched_objects()
        .flat_map(move |rs| stream::iter(rs.map(|rs| deployments_of_set(&for_sets, &rs)).unwrap_or_default()));
    let for_pods = ctx.clone();
    let pod_triggers = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(pods_writer)
        .touched_objects()
        .flat_map(move |pod| stream::iter(pod.ok().and_then(|p| recreate_deployment_of_pod(&for_pods, &p))));
    Controller::for_stream(deployment_events, deployments)
        .reconcile_on(set_triggers)
        .reconcile_on(pod_triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A ReplicaSet event concerns its controlling Deployment, or, for an orphan, every Deployment
/// whose selector matches it (`addReplicaSet`/`updateReplicaSet`/`deleteReplicaSet`).
fn deployments_of_set(ctx: &Ctx, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    if let Some(r) = controller_of(rs.metadata.owner_references.as_ref()) {
        return if r.kind == "Deployment" { vec![ObjectRef::new(&r.name).within(&ns)] } else { Vec::new() };
    }
    if rs.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    ctx.deployments
        .state()
        .into_iter()
        .filter(|d| {
            d.metadata.namespace.as_deref() == Some(ns.as_str())
                && d.spec
                    .as_ref()
                    .and_then(|s| Selector::parse(&s.selector))
                    .is_some_and(|s| !s.is_empty() && s.matches(rs.metadata.labels.as_ref()))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// A Recreate rollout waits for the old pods to go, so their events concern the Deployment.
fn recreate_deployment_of_pod(ctx: &Ctx, pod: &Pod) -> Option<ObjectRef<Deployment>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let owner = controller_of(pod.metadata.owner_references.as_ref()).filter(|r| r.kind == "ReplicaSet")?;
    let rs = ctx.sets.get(&ObjectRef::new(&owner.name).within(&ns))?;
    let d_ref = controller_of(rs.metadata.owner_references.as_ref()).filter(|r| r.kind == "Deployment")?;
    let key = ObjectRef::new(&d_ref.name).within(&ns);
    let d = ctx.deployments.get(&key)?;
    (strategy_type(&d) == "Recreate").then_some(key)
}

fn error_policy(_d: Arc<Deployment>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => Action::requeue(Duration::from_millis(20)),
        e => {
            tracing::debug!(error = %e, "deployment sync");
            Action::requeue(Duration::from_millis(500))
        }
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _ = ctx.sets.wait_until_ready().await;
    let _ = ctx.pods.wait_until_ready().await;
    let ns = d.namespace().unwrap_or_default();
    let mut sync = Sync {
        deployments: Api::namespaced(ctx.client.clone(), &ns),
        sets: Api::namespaced(ctx.client.clone(), &ns),
        ctx: &ctx,
        d: (*d).clone(),
        requeue: None,
    };
    sync.sync_deployment().await?;
    Ok(sync.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// One sync of one Deployment; `d` is kept current with every write made to it.
struct Sync<'a> {
    ctx: &'a Ctx,
    deployments: Api<Deployment>,
    sets: Api<ReplicaSet>,
    d: Deployment,
    requeue: Option<Duration>,
}

impl Sync<'_> {
    /// `syncDeployment`.
    async fn sync_deployment(&mut self) -> Result<(), Error> {
        let selector = self.d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let Some(selector) = Selector::parse(&selector) else { return Ok(()) };
        if selector.is_empty() {
            record_event(
                &self.ctx.client,
                &self.d,
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            let status = self.d.status.get_or_insert_with(Default::default);
            if status.observed_generation < self.d.metadata.generation {
                status.observed_generation = self.d.metadata.generation;
                self.update_status().await?;
            }
            return Ok(());
        }
        let sets = self.claim_sets(&selector).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&sets).await;
        }
        self.check_paused_conditions().await?;
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return self.sync(&sets).await;
        }
        if self.is_scaling_event(&sets).await? {
            return self.sync(&sets).await;
        }
        if strategy_type(&self.d) == "Recreate" {
            self.rollout_recreate(&sets).await
        } else {
            self.rollout_rolling(&sets).await
        }
    }

    /// `getReplicaSetsForDeployment`: adopts and releases ReplicaSets by selector.
    async fn claim_sets(&self, selector: &Selector) -> Result<Vec<Rs>, Error> {
        let ns = self.d.metadata.namespace.clone();
        let candidates: Vec<Rs> = self.ctx.sets.state().into_iter().filter(|rs| rs.metadata.namespace == ns).collect();
        let api = self.deployments.clone();
        let (name, uid) = (self.d.name_any(), self.d.metadata.uid.clone());
        let fresh_check = move || async move {
            let fresh = api.get(&name).await?;
            Ok(fresh.metadata.uid == uid && fresh.metadata.deletion_timestamp.is_none())
        };
        let sets = self.sets.clone();
        Ok(claim(|_| sets.clone(), &Claimant::of(&self.d), selector, candidates, fresh_check).await?)
    }

    async fn update_status(&mut self) -> Result<(), Error> {
        self.d = self.deployments.replace_status(&self.d.name_any(), &PostParams::default(), &self.d).await?;
        Ok(())
    }

    fn set_revision(&mut self, revision: &str) -> bool {
        let annotations = self.d.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION).map(String::as_str) == Some(revision) {
            return false;
        }
        annotations.insert(REVISION.into(), revision.into());
        true
    }

    /// `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when asked) and the old ones.
    async fn all_sets(&mut self, sets: &[Rs], create: bool) -> Result<(Option<Rs>, Vec<Rs>), Error> {
        let existing = find_new(&self.d, sets);
        let old: Vec<Rs> = sets
            .iter()
            .filter(|rs| existing.as_ref().is_none_or(|n| n.metadata.uid != rs.metadata.uid))
            .cloned()
            .collect();
        let new = self.new_set(existing, &old, create).await?;
        Ok((new, old))
    }

    /// `getNewReplicaSet`.
    async fn new_set(&mut self, existing: Option<Rs>, old: &[Rs], create: bool) -> Result<Option<Rs>, Error> {
        let new_revision = max_revision(old) + 1;
        let has_deadline = progress_deadline(&self.d).is_some();
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if let Some(rs) = existing {
            let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
            let changed = set_new_rs_annotations(&self.d, &mut annotations, new_revision, true);
            if changed || rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready {
                let patch = json!({
                    "metadata": {"annotations": annotations, "resourceVersion": rs.metadata.resource_version},
                    "spec": {"minReadySeconds": min_ready},
                });
                let updated = self.sets.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
                return Ok(Some(Arc::new(updated)));
            }
            let revision = annotation(&rs, REVISION).unwrap_or("").to_string();
            let mut needs_update = self.set_revision(&revision);
            let status = self.d.status.get_or_insert_with(Default::default);
            if has_deadline && condition(status, "Progressing").is_none() {
                let msg = format!("Found new replica set {:?}", rs.name_any());
                set_condition(status, new_condition("Progressing", "True", "FoundNewReplicaSet", msg));
                needs_update = true;
            }
            if needs_update {
                self.update_status().await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let spec = self.d.spec.clone().unwrap_or_default();
        let mut template = spec.template.clone();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collisions);
        let template_meta = template.metadata.get_or_insert_with(Default::default);
        template_meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector: LabelSelector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut all = old.to_vec();
        let replicas = new_rs_new_replicas(&self.d, &all, 0);
        let mut annotations = BTreeMap::new();
        set_new_rs_annotations(&self.d, &mut annotations, new_revision, false);
        let name = format!("{}-{hash}", self.d.name_any());
        let new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                owner_references: Some(vec![Claimant::of(&self.d).controller_ref()]),
                labels,
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let (created, already_existed) = match self.sets.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => (rs, false),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let found = self.sets.get(&name).await?;
                let ours = controller_of(found.metadata.owner_references.as_ref())
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if !(ours && same) {
                    // A hash collision: bump collisionCount so the next sync picks another name.
                    let status = self.d.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.update_status().await?;
                    return Err(kube::Error::Api(s).into());
                }
                (found, true)
            }
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 403 && s.message.contains("is being terminated")) =>
            {
                return Err(e.into());
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {e}");
                if has_deadline {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    set_condition(status, new_condition("Progressing", "False", "ReplicaSetCreateError", msg.clone()));
                    let _ = self.update_status().await;
                }
                record_event(&self.ctx.client, &self.d, "Warning", "ReplicaSetCreateError", &msg);
                return Err(e.into());
            }
        };
        if !already_existed && replicas > 0 {
            let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
            record_event(&self.ctx.client, &self.d, "Normal", "ScalingReplicaSet", &msg);
        }
        let mut needs_update = self.set_revision(&new_revision.to_string());
        if !already_existed && has_deadline {
            let status = self.d.status.get_or_insert_with(Default::default);
            let msg = format!("Created new replica set {name:?}");
            set_condition(status, new_condition("Progressing", "True", "NewReplicaSetCreated", msg));
            needs_update = true;
        }
        if needs_update {
            self.update_status().await?;
        }
        let created = Arc::new(created);
        all.push(created.clone());
        Ok(Some(created))
    }

    /// `checkPausedConditions`.
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let status = self.d.status.get_or_insert_with(Default::default);
        let reason = condition(status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let paused_exists = reason.as_deref() == Some("DeploymentPaused");
        let c = match (paused, paused_exists) {
            (true, false) => new_condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into()),
            (false, true) => {
                new_condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into())
            }
            _ => return Ok(()),
        };
        set_condition(status, c);
        self.update_status().await
    }

    /// `isScalingEvent`: an active ReplicaSet was sized for another replica count.
    async fn is_scaling_event(&mut self, sets: &[Rs]) -> Result<bool, Error> {
        let (new, old) = self.all_sets(sets, false).await?;
        let all: Vec<Rs> = old.into_iter().chain(new).collect();
        let want = replicas(&self.d);
        Ok(active(&all)
            .iter()
            .any(|rs| annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok()).is_some_and(|v| v != want)))
    }

    async fn sync_status_only(&mut self, sets: &[Rs]) -> Result<(), Error> {
        let (new, old) = self.all_sets(sets, false).await?;
        let all: Vec<Rs> = old.into_iter().chain(new.clone()).collect();
        self.sync_deployment_status(&all, new.as_ref()).await
    }

    /// `sync`: scaling events and paused deployments.
    async fn sync(&mut self, sets: &[Rs]) -> Result<(), Error> {
        let (new, old) = self.all_sets(sets, false).await?;
        self.scale(new.as_ref(), &old).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(&old).await?;
        }
        let all: Vec<Rs> = old.into_iter().chain(new.clone()).collect();
        self.sync_deployment_status(&all, new.as_ref()).await
    }

    /// `scale`: proportional scaling of the active ReplicaSets.
    async fn scale(&mut self, new: Option<&Rs>, old: &[Rs]) -> Result<(), Error> {
        let want = replicas(&self.d);
        if let Some(rs) = find_active_or_latest(new, old) {
            if rs_replicas(&rs) != want {
                self.scale_and_record(&rs, want).await?;
            }
            return Ok(());
        }
        if is_saturated(&self.d, new) {
            for rs in active(old) {
                self.scale_and_record(&rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let mut all = active(&old.iter().cloned().chain(new.cloned()).collect::<Vec<_>>());
        let allowed = if want > 0 { want + max_surge(&self.d) } else { 0 };
        let to_add = allowed - sum_spec(&all);
        match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => all.sort_by(by_size_newer),
            std::cmp::Ordering::Less => all.sort_by(by_size_older),
            std::cmp::Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes: HashMap<String, i32> = HashMap::new();
        for rs in &all {
            let p = if to_add != 0 { proportion(rs, &self.d, to_add, added) } else { 0 };
            sizes.insert(rs.name_any(), rs_replicas(rs) + p);
            added += p;
        }
        for (i, rs) in all.iter().enumerate() {
            let mut size = sizes.get(&rs.name_any()).copied().unwrap_or(0);
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_set(rs, size).await?;
        }
        Ok(())
    }

    async fn scale_and_record(&mut self, rs: &Rs, size: i32) -> Result<(bool, Rs), Error> {
        if rs_replicas(rs) == size {
            return Ok((false, rs.clone()));
        }
        self.scale_set(rs, size).await
    }

    /// `scaleReplicaSet`: sets the size and the replica annotations (resourceVersion-guarded).
    async fn scale_set(&mut self, rs: &Rs, size: i32) -> Result<(bool, Rs), Error> {
        let (want, max) = (replicas(&self.d), replicas(&self.d) + max_surge(&self.d));
        let old = rs_replicas(rs);
        if old == size && !replicas_annotations_need_update(rs, want, max) {
            return Ok((false, rs.clone()));
        }
        let patch = json!({
            "metadata": {
                "annotations": {DESIRED_REPLICAS: want.to_string(), MAX_REPLICAS: max.to_string()},
                "resourceVersion": rs.metadata.resource_version,
            },
            "spec": {"replicas": size},
        });
        let updated = Arc::new(self.sets.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?);
        if old != size {
            let op = if old < size { "up" } else { "down" };
            let msg = format!("Scaled {op} replica set {} from {old} to {size}", rs.name_any());
            record_event(&self.ctx.client, &self.d, "Normal", "ScalingReplicaSet", &msg);
        }
        Ok((old != size, updated))
    }

    /// `cleanupDeployment`: deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&mut self, old: &[Rs]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit).filter(|l| *l != i32::MAX) else {
            return Ok(());
        };
        let mut alive: Vec<Rs> = old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).cloned().collect();
        let diff = alive.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by(by_revision);
        for rs in alive.iter().take(diff as usize) {
            let st = rs.status.as_ref();
            if st.is_some_and(|s| s.replicas != 0)
                || rs_replicas(rs) != 0
                || rs.metadata.generation > st.and_then(|s| s.observed_generation)
            {
                continue;
            }
            match self.sets.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_deployment_status(&mut self, all: &[Rs], new: Option<&Rs>) -> Result<(), Error> {
        let status = calculate_status(all, new, &self.d);
        if self.d.status.clone().unwrap_or_default() == status {
            return Ok(());
        }
        self.d.status = Some(status);
        self.update_status().await
    }

    /// `rolloutRolling`.
    async fn rollout_rolling(&mut self, sets: &[Rs]) -> Result<(), Error> {
        let (new, old) = self.all_sets(sets, true).await?;
        let Some(new) = new else { return Ok(()) };
        let all: Vec<Rs> = old.iter().cloned().chain([new.clone()]).collect();
        if self.reconcile_new(&all, &new).await? {
            return self.sync_rollout_status(&all, Some(&new)).await;
        }
        if self.reconcile_old(&all, active(&old), &new).await? {
            return self.sync_rollout_status(&all, Some(&new)).await;
        }
        if complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&all, Some(&new)).await
    }

    /// `reconcileNewReplicaSet`.
    async fn reconcile_new(&mut self, all: &[Rs], new: &Rs) -> Result<bool, Error> {
        let want = replicas(&self.d);
        let have = rs_replicas(new);
        if have == want {
            return Ok(false);
        }
        let size = if have > want { want } else { new_rs_new_replicas(&self.d, all, have) };
        Ok(self.scale_and_record(new, size).await?.0)
    }

    /// `reconcileOldReplicaSets`: scales old ReplicaSets down as far as availability allows,
    /// unhealthy replicas first.
    async fn reconcile_old(&mut self, all: &[Rs], mut old: Vec<Rs>, new: &Rs) -> Result<bool, Error> {
        if sum_spec(&old) == 0 {
            return Ok(false);
        }
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new) - sum_available(std::slice::from_ref(new));
        let max_scaled_down = sum_spec(all) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy replicas first: removing them costs no availability.
        old.sort_by(by_creation);
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (size, available) = (rs_replicas(rs), sum_available(std::slice::from_ref(rs)));
            if size == 0 || size == available {
                continue;
            }
            if size < available {
                // Its status still counts pods it is shedding; upstream refuses this step too
                // ("invalid request to scale down") and waits for the status to catch up.
                return Ok(cleaned > 0);
            }
            let down = (max_scaled_down - cleaned).min(size - available);
            *rs = self.scale_set(rs, size - down).await?.1;
            cleaned += down;
        }
        let all: Vec<Rs> = old.iter().cloned().chain([new.clone()]).collect();
        let available = sum_available(&all);
        let mut scaled = 0;
        if available > min_available {
            let budget = available - min_available;
            for rs in &old {
                if scaled >= budget {
                    break;
                }
                let size = rs_replicas(rs);
                if size == 0 {
                    continue;
                }
                let down = size.min(budget - scaled);
                self.scale_set(rs, size - down).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// `rolloutRecreate`: all old pods go before any new one is made.
    async fn rollout_recreate(&mut self, sets: &[Rs]) -> Result<(), Error> {
        let (mut new, mut old) = self.all_sets(sets, false).await?;
        let all: Vec<Rs> = old.iter().cloned().chain(new.clone()).collect();
        let mut scaled_down = false;
        for rs in active(&old) {
            scaled_down |= self.scale_and_record(&rs, 0).await?.0;
        }
        if scaled_down || self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(&all, new.as_ref()).await;
        }
        if new.is_none() {
            (new, old) = self.all_sets(sets, true).await?;
        }
        let Some(new_rs) = new.clone() else { return Ok(()) };
        self.scale_and_record(&new_rs, replicas(&self.d)).await?;
        if complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&old).await?;
        }
        let all: Vec<Rs> = old.iter().cloned().chain(new.clone()).collect();
        self.sync_rollout_status(&all, new.as_ref()).await
    }

    /// `oldPodsRunning`: any old ReplicaSet still reports pods, or any pod of one is not finished.
    fn old_pods_running(&self, new: Option<&Rs>, old: &[Rs]) -> bool {
        if sum_status(old) > 0 {
            return true;
        }
        let old_uids: Vec<&String> = old.iter().filter_map(|rs| rs.metadata.uid.as_ref()).collect();
        let new_uid = new.and_then(|rs| rs.metadata.uid.clone());
        self.ctx.pods.state().iter().any(|p| {
            p.metadata.namespace == self.d.metadata.namespace
                && controller_of(p.metadata.owner_references.as_ref())
                    .is_some_and(|r| old_uids.contains(&&r.uid) && Some(&r.uid) != new_uid.as_ref())
                && !matches!(crate::replicaset::pods::phase(p), "Failed" | "Succeeded")
        })
    }

    /// `syncRolloutStatus`: status, the Progressing condition and its deadline, ReplicaFailure.
    async fn sync_rollout_status(&mut self, all: &[Rs], new: Option<&Rs>) -> Result<(), Error> {
        let mut status = calculate_status(all, new, &self.d);
        let has_deadline = progress_deadline(&self.d).is_some();
        if !has_deadline {
            remove_condition(&mut status, "Progressing");
        }
        let old_status = self.d.status.clone().unwrap_or_default();
        let current = condition(&old_status, "Progressing").cloned();
        let finished = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let subject = match new {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", self.d.name_any()),
        };
        if has_deadline && !finished {
            if complete(&self.d, &status) {
                let msg = format!("{subject} has successfully progressed.");
                set_condition(&mut status, new_condition("Progressing", "True", "NewReplicaSetAvailable", msg));
            } else if progressing(&self.d, &status) {
                let mut c =
                    new_condition("Progressing", "True", "ReplicaSetUpdated", format!("{subject} is progressing."));
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if timed_out(&self.d, &status, Timestamp::now()) {
                let msg = format!("{subject} has timed out progressing.");
                set_condition(&mut status, new_condition("Progressing", "False", "ProgressDeadlineExceeded", msg));
            }
        }
        match replica_failure(all, new) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if old_status == status {
            self.requeue = self.requeue_stuck(&status);
            return Ok(());
        }
        self.d.status = Some(status);
        self.update_status().await
    }

    /// `requeueStuckDeployment`: when to look again for the progress deadline.
    fn requeue_stuck(&self, status: &k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<Duration> {
        let old = self.d.status.clone().unwrap_or_default();
        let current = condition(&old, "Progressing")?;
        if complete(&self.d, status) || current.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return None;
        }
        let at = deadline_at(&self.d, &old)?;
        let left = at.as_millisecond() - Timestamp::now().as_millisecond();
        Some(Duration::from_millis(left.max(0) as u64 + 50))
    }
}

/// `getReplicaFailures`: the new ReplicaSet's ReplicaFailure condition, else any old one's.
fn replica_failure(all: &[Rs], new: Option<&Rs>) -> Option<k8s_openapi::api::apps::v1::DeploymentCondition> {
    let failure_of = |rs: &Rs| {
        rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ReplicaFailure").map(|c| {
            k8s_openapi::api::apps::v1::DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
                last_update_time: c.last_transition_time.clone(),
            }
        })
    };
    new.and_then(failure_of).or_else(|| all.iter().find_map(failure_of))
}
