//! A minimal pod garbage collector (`pkg/controller/podgc/gc_controller.go`): pods bound to a
//! Node that no longer exists are marked `Failed` with the `DisruptionTarget` condition
//! (`DeletionByPodGC`) and force-deleted (grace 0) once the node has stayed missing for a
//! quarantine and a live read confirms it (`gcOrphaned`); terminating pods that were never
//! scheduled are force-deleted (`gcUnscheduledTerminating`). Watch-driven, with a slow full pass.
//! Left out: deleting terminated pods beyond `--terminated-pod-gc-threshold` (`gcTerminated`,
//! 12,500 upstream) and terminating pods on out-of-service nodes (`gcTerminating`).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How the pod garbage collector runs.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// How long a node must stay missing before its pods are deleted (`quarantineTime`, 40 s
    /// upstream, where informer caches may lag; here it only covers a node being re-registered).
    pub quarantine: Duration,
    /// The full pass over every pod (`gcCheckPeriod`, 20 s upstream).
    pub period: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        Self { quarantine: Duration::from_secs(5), period: Duration::from_secs(20) }
    }
}

/// What the collector keeps of a pod.
struct PodInfo {
    node: String,
    uid: String,
}

/// Runs until dropped.
pub async fn run(client: Client, config: PodGcConfig) {
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    futures::pin_mut!(pods);
    futures::pin_mut!(nodes);
    let mut known_pods: HashMap<(String, String), PodInfo> = HashMap::new();
    let mut known_nodes: HashSet<String> = HashSet::new();
    let mut nodes_listed = false;
    // Missing nodes and when to look at them again.
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut full_pass = tokio::time::interval(config.period);
    loop {
        let next = due.values().min().copied().unwrap_or_else(|| Instant::now() + config.period);
        tokio::select! {
            Some(event) = pods.next() => match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let key = (p.namespace().unwrap_or_default(), p.name_any());
                    let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                    if node.is_empty() {
                        if p.metadata.deletion_timestamp.is_some() {
                            force_delete(&client, &p, None).await;
                        }
                        known_pods.remove(&key);
                        continue;
                    }
                    if nodes_listed && !known_nodes.contains(&node) {
                        due.entry(node.clone()).or_insert_with(|| Instant::now() + config.quarantine);
                    }
                    known_pods.insert(key, PodInfo { node, uid: p.uid().unwrap_or_default() });
                }
                Ok(watcher::Event::Delete(p)) => {
                    known_pods.remove(&(p.namespace().unwrap_or_default(), p.name_any()));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "pod gc: pod watch"),
            },
            Some(event) = nodes.next() => match event {
                Ok(watcher::Event::Init) => known_nodes.clear(),
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    due.remove(&n.name_any());
                    known_nodes.insert(n.name_any());
                }
                Ok(watcher::Event::InitDone) => {
                    nodes_listed = true;
                    schedule_missing(&known_pods, &known_nodes, &mut due, config.quarantine);
                }
                Ok(watcher::Event::Delete(n)) => {
                    known_nodes.remove(&n.name_any());
                    if known_pods.values().any(|p| p.node == n.name_any()) {
                        due.entry(n.name_any()).or_insert_with(|| Instant::now() + config.quarantine);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "pod gc: node watch"),
            },
            _ = full_pass.tick() => {
                if nodes_listed {
                    schedule_missing(&known_pods, &known_nodes, &mut due, config.quarantine);
                }
            }
            _ = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                let ready: Vec<String> = due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                for node in ready {
                    due.remove(&node);
                    if known_nodes.contains(&node) {
                        continue;
                    }
                    match Api::<Node>::all(client.clone()).get_opt(&node).await {
                        Ok(None) => {
                            let orphans: Vec<(String, String, String)> = known_pods
                                .iter()
                                .filter(|(_, p)| p.node == node)
                                .map(|((ns, name), p)| (ns.clone(), name.clone(), p.uid.clone()))
                                .collect();
                            for (ns, name, uid) in orphans {
                                delete_orphan(&client, &ns, &name, &uid).await;
                            }
                        }
                        Ok(Some(_)) => {}
                        Err(e) => {
                            tracing::debug!(%node, error = %e, "pod gc: reading node");
                            due.insert(node, now + Duration::from_secs(1));
                        }
                    }
                }
            }
        }
    }
}

/// Puts every node that pods are bound to but that is not known into quarantine.
fn schedule_missing(
    pods: &HashMap<(String, String), PodInfo>,
    nodes: &HashSet<String>,
    due: &mut HashMap<String, Instant>,
    quarantine: Duration,
) {
    for p in pods.values().filter(|p| !nodes.contains(&p.node)) {
        due.entry(p.node.clone()).or_insert_with(|| Instant::now() + quarantine);
    }
}

/// An orphaned pod: read it again (it must still be the same pod on the same node) and delete it.
async fn delete_orphan(client: &Client, ns: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = match api.get_opt(name).await {
        Ok(Some(p)) if p.uid().as_deref() == Some(uid) => p,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "pod gc: reading pod");
            return;
        }
    };
    let condition = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByPodGC".into()),
        message: Some("PodGC: node no longer exists".into()),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    };
    tracing::info!(pod = %format!("{ns}/{name}"), "pod gc: force deleting a pod whose node is gone");
    force_delete(client, &pod, Some(condition)).await;
}

/// `markFailedAndDeletePodWithCondition`: phase `Failed` (and the condition) through `/status`,
/// then a delete with grace 0.
async fn force_delete(client: &Client, pod: &Pod, condition: Option<PodCondition>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase != "Succeeded" && phase != "Failed" {
        let mut conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        if let Some(c) = condition {
            conditions.retain(|x| x.type_ != c.type_);
            conditions.push(c);
        }
        let patch = json!({
            "metadata": {"resourceVersion": pod.resource_version()},
            "status": {"phase": "Failed", "conditions": conditions},
        });
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            tracing::debug!(pod = %name, error = %e, "pod gc: marking failed");
            return;
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "pod gc: deleting"),
    }
}
