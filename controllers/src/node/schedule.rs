//! Scheduling onto the one node: unscheduled pods of `default-scheduler` are bound to it through
//! the `pods/binding` subresource, unless the node does not fit them, in which case they stay
//! Pending with `PodScheduled=False` as the scheduler reports it (`pkg/scheduler/schedule_one.go`,
//! `framework/plugins/defaultbinder`, the `NodeUnschedulable`, `NodeAffinity` and `TaintToleration`
//! filters, `component-helpers/scheduling/corev1` for node selector terms and tolerations).
//!
//! Resources are not counted: a simulated pod uses none, so requests never keep a pod off the node.

use super::events::{NORMAL, Recorder, WARNING};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

const SCHEDULER: &str = "default-scheduler";

/// Why the node does not fit a pod, as the scheduler's filter plugins word it.
fn fit_error(pod: &Pod, node: &Node) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let node_spec = node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let taint =
            Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Some("node(s) were unschedulable".into());
        }
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, &labels, name)));
    if !selector_ok || !affinity_ok {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    for taint in node_spec.taints.iter().flatten() {
        let blocks = taint.effect == "NoSchedule" || taint.effect == "NoExecute";
        if blocks && !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

/// A node selector term: every expression over the labels, every field (`metadata.name`)
/// requirement over the name; a term with neither matches nothing.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (value.and_then(number), values.first().and_then(|v| number(v))) {
            (Some(have), Some(bound)) => {
                if r.operator == "Gt" {
                    have > bound
                } else {
                    have < bound
                }
            }
            _ => false,
        },
        _ => false,
    }
}

fn is_ours(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let scheduler = spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER);
    let unassigned = spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
    unassigned && scheduler == SCHEDULER && pod.metadata.deletion_timestamp.is_none()
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Binds this node's share of the unscheduled pods: all of them that fit.
pub(super) struct Scheduler {
    client: kube::Client,
    node: String,
    recorder: Recorder,
    /// Pods being bound now.
    binding: Arc<Mutex<HashSet<String>>>,
    /// The reason last reported for a pod left Pending, so it is reported once.
    reported: HashMap<String, String>,
}

impl Scheduler {
    pub(super) fn new(client: kube::Client, node: String) -> Self {
        let recorder = Recorder::new(client.clone(), SCHEDULER, None);
        Self { client, node, recorder, binding: Arc::default(), reported: HashMap::new() }
    }

    pub(super) async fn run(mut self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_events =
            watcher::watcher(nodes, watcher::Config::default().fields(&format!("metadata.name={}", self.node)))
                .default_backoff()
                .map(Either::Node);
        let pods: Api<Pod> = Api::all(self.client.clone());
        // As the scheduler's informer: unassigned, not finished.
        let config = watcher::Config::default().fields("spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed");
        let pod_events = watcher::watcher(pods, config).default_backoff().map(Either::Pod);
        let mut events = futures::stream::select(node_events, pod_events).boxed();
        let mut node: Option<Node> = None;
        let mut pending: HashMap<String, Pod> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Either::Node(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => {
                    node = Some(n);
                    // The node changed (labels, taints, cordon): try every waiting pod again.
                    for pod in pending.values() {
                        self.consider(pod, node.as_ref()).await;
                    }
                }
                Either::Node(Ok(watcher::Event::Delete(_))) => node = None,
                Either::Pod(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    if is_ours(&p) {
                        self.consider(&p, node.as_ref()).await;
                        pending.insert(uid_of(&p), p);
                    } else {
                        pending.remove(&uid_of(&p));
                    }
                }
                Either::Pod(Ok(watcher::Event::Delete(p))) => {
                    pending.remove(&uid_of(&p));
                    self.reported.remove(&uid_of(&p));
                }
                Either::Pod(Ok(watcher::Event::Init)) => pending.clear(),
                Either::Node(Err(e)) | Either::Pod(Err(e)) => tracing::debug!(error = %e, "scheduler watch"),
                _ => {}
            }
        }
    }

    /// Binds the pod, or says why it stays Pending.
    async fn consider(&mut self, pod: &Pod, node: Option<&Node>) {
        let Some(node) = node else { return };
        let uid = uid_of(pod);
        if pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty()) {
            self.unschedulable(
                pod,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates".into(),
            )
            .await;
            return;
        }
        if let Some(why) = fit_error(pod, node) {
            let message = format!(
                "0/1 nodes are available: 1 {why}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            );
            self.unschedulable(pod, "Unschedulable", message).await;
            return;
        }
        if !self.binding.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.clone()) {
            return;
        }
        let (client, node_name, binding, recorder, pod) =
            (self.client.clone(), self.node.clone(), self.binding.clone(), self.recorder.clone(), pod.clone());
        tokio::spawn(async move {
            match bind(&client, &pod, &node_name).await {
                Ok(()) => {
                    let m = &pod.metadata;
                    let (ns, name) =
                        (m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default());
                    let message = format!("Successfully assigned {ns}/{name} to {node_name}");
                    recorder.pod(&pod, None, NORMAL, "Scheduled", message);
                }
                // Someone else bound or deleted it.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => tracing::warn!(error = %e, "binding a pod"),
            }
            binding.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
        });
    }

    /// `PodScheduled=False` with the scheduler's reason, and a `FailedScheduling` event, once per reason.
    async fn unschedulable(&mut self, pod: &Pod, reason: &str, message: String) {
        let uid = uid_of(pod);
        if self.reported.get(&uid) == Some(&message) {
            return;
        }
        self.reported.insert(uid, message.clone());
        if reason == "Unschedulable" {
            self.recorder.pod(pod, None, WARNING, "FailedScheduling", message.clone());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let mut body = pod.clone();
        let status = body.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let condition = PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(super::status::now()),
            ..Default::default()
        };
        match conditions.iter_mut().find(|c| c.type_ == "PodScheduled") {
            Some(c) if c.status == "False" => {
                let since = c.last_transition_time.clone();
                *c = PodCondition { last_transition_time: since, ..condition };
            }
            Some(c) => *c = condition,
            None => conditions.push(condition),
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api.replace_status(&name, &PostParams::default(), &body).await {
            // A newer pod version arrives through the watch and is considered again.
            tracing::debug!(error = %e, "pod scheduled condition");
            self.reported.remove(&uid_of(pod));
        }
    }
}

// One event at a time, matched at once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Either {
    Node(Result<watcher::Event<Node>, watcher::Error>),
    Pod(Result<watcher::Event<Pod>, watcher::Error>),
}

/// POST `pods/{name}/binding`, as the default binder does (UID precondition, no resourceVersion).
async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let m = &pod.metadata;
    let api: Api<Pod> = Api::namespaced(client.clone(), m.namespace.as_deref().unwrap_or_default());
    let binding = Binding {
        metadata: ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference { kind: Some("Node".into()), name: Some(node.into()), ..Default::default() },
    };
    let name = m.name.as_deref().unwrap_or_default();
    let _: Status = api.create_subresource("binding", name, &PostParams::default(), &binding).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSpec, PodSpec};

    fn node(labels: &[(&str, &str)], taints: Vec<Taint>, unschedulable: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("box".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec { taints: Some(taints), unschedulable: Some(unschedulable), ..Default::default() }),
            status: None,
        }
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod { spec: Some(spec), ..Default::default() }
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node(&[("disk", "ssd"), ("gen", "5")], vec![], false);
        let sel = |k: &str, v: &str| {
            pod(PodSpec { node_selector: Some([(k.into(), v.into())].into()), ..Default::default() })
        };
        assert_eq!(fit_error(&sel("disk", "ssd"), &n), None);
        assert_eq!(
            fit_error(&sel("disk", "hdd"), &n).as_deref(),
            Some("node(s) didn't match Pod's node affinity/selector")
        );
        let affinity = |exprs: Vec<NodeSelectorRequirement>| {
            pod(PodSpec {
                affinity: Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![NodeSelectorTerm {
                                match_expressions: Some(exprs),
                                match_fields: None,
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let req = |k: &str, op: &str, v: &[&str]| NodeSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(fit_error(&affinity(vec![req("gen", "Gt", &["4"]), req("disk", "In", &["ssd", "nvme"])]), &n), None);
        assert!(fit_error(&affinity(vec![req("gen", "Lt", &["4"])]), &n).is_some());
        assert!(fit_error(&affinity(vec![req("zone", "Exists", &[])]), &n).is_some());
        assert_eq!(fit_error(&affinity(vec![req("zone", "DoesNotExist", &[])]), &n), None);
        assert!(fit_error(&affinity(vec![]), &n).is_some(), "an empty term matches nothing");
    }

    #[test]
    fn taints_cordons_and_tolerations() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let n = node(&[], vec![taint], false);
        assert_eq!(
            fit_error(&pod(PodSpec::default()), &n).as_deref(),
            Some("node(s) had untolerated taint {dedicated: gpu}")
        );
        let tol = |op: &str, value: Option<&str>| {
            pod(PodSpec {
                tolerations: Some(vec![Toleration {
                    key: Some("dedicated".into()),
                    operator: Some(op.into()),
                    value: value.map(str::to_string),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            })
        };
        assert_eq!(fit_error(&tol("Equal", Some("gpu")), &n), None);
        assert_eq!(fit_error(&tol("Exists", None), &n), None);
        assert!(fit_error(&tol("Equal", Some("cpu")), &n).is_some());
        let cordoned = node(&[], vec![], true);
        assert_eq!(fit_error(&pod(PodSpec::default()), &cordoned).as_deref(), Some("node(s) were unschedulable"));
    }
}
