//! Pod and selector predicates the workload controllers share (`pkg/api/v1/pod/util.go`,
//! `pkg/controller/controller_utils.go`: `IsPodActive`, `IsPodReady`, `IsPodAvailable`,
//! `ActivePodsWithRanks`), and label-selector matching (`metav1.LabelSelectorAsSelector`).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A `metav1.LabelSelector` turned into requirements; `None` when an operator is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    reqs: Vec<(String, Op, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Selector {
    pub fn parse(sel: &LabelSelector) -> Option<Self> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push((k.clone(), Op::In, vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return None,
            };
            reqs.push((e.key.clone(), op, e.values.clone().unwrap_or_default()));
        }
        Some(Self { reqs })
    }

    /// A selector with no requirements selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.reqs.iter().all(|(k, op, values)| match (op, labels.get(k)) {
            (Op::In, Some(v)) => values.contains(v),
            (Op::In, None) => false,
            (Op::NotIn, Some(v)) => !values.contains(v),
            (Op::NotIn, None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
        })
    }
}

/// The owner reference with `controller: true`, if any (`metav1.GetControllerOf`).
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs.into_iter().flatten().find(|r| r.controller == Some(true))
}

/// `IsPodActive`: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = phase(pod);
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The time the pod's `Ready` condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// `IsPodReady`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// `IsPodAvailable`: ready for at least `min_ready_seconds` by `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + Duration::from_secs(min_ready_seconds as u64) < now,
    }
}

fn node(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    let annotations = pod.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().map(|c| c.restart_count).max().unwrap_or(0)
}

/// `logarithmicRankDiff`: compares how long ago two instants were, in powers of two of nanoseconds.
fn log_rank(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 { (d as f64).log2() as i64 } else { -1 }
}

/// Compares two optional instants the way `afterOrZero` and the logarithmic scale-down do:
/// missing < later < earlier; equal log ranks fall back to the UID.
fn time_order(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp, uids: (&str, &str)) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (Some(a), Some(b)) => match log_rank(a, now).cmp(&log_rank(b, now)) {
            Ordering::Equal => uids.0.cmp(uids.1),
            other => other,
        },
    }
}

/// `ActivePodsWithRanks.Less` as an ordering: the pods to delete first come first. `rank` is the
/// number of related active pods on the same node (`getPodsRankedByRelatedPodsOnSameNode`).
pub fn deletion_order(a: (&Pod, usize), b: (&Pod, usize), now: Timestamp) -> Ordering {
    let ((pa, ra), (pb, rb)) = (a, b);
    let (na, nb) = (node(pa), node(pb));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let by = phase_ordinal(pa).cmp(&phase_ordinal(pb));
    if by != Ordering::Equal {
        return by;
    }
    let (ready_a, ready_b) = (is_ready(pa), is_ready(pb));
    if ready_a != ready_b {
        return if ready_a { Ordering::Greater } else { Ordering::Less };
    }
    let by = deletion_cost(pa).cmp(&deletion_cost(pb));
    if by != Ordering::Equal {
        return by;
    }
    if ra != rb {
        return rb.cmp(&ra); // more doubled-up first
    }
    let uids = (pa.metadata.uid.as_deref().unwrap_or(""), pb.metadata.uid.as_deref().unwrap_or(""));
    if ready_a && ready_b {
        let by = time_order(ready_since(pa).flatten(), ready_since(pb).flatten(), now, uids);
        if by != Ordering::Equal {
            return by;
        }
    }
    let by = max_restarts(pb).cmp(&max_restarts(pa));
    if by != Ordering::Equal {
        return by;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    time_order(created(pa), created(pb), now, uids)
}

/// The `diff` pods to delete out of `pods`, ranked against `related` (pods of every ReplicaSet
/// with the same controller), as `getPodsToDelete`.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], diff: usize, now: Timestamp) -> Vec<&'a Pod> {
    if diff >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> =
        pods.iter().map(|p| (*p, on_node.get(node(p)).copied().unwrap_or(0))).collect();
    ranked.sort_by(|a, b| deletion_order(*a, *b, now));
    ranked.into_iter().take(diff).map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta, Time};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: (!node.is_empty()).then(|| node.into()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn order(pods: &[Pod], now: i64) -> Vec<String> {
        let refs: Vec<&Pod> = pods.iter().collect();
        pods_to_delete(&refs, &refs, pods.len() - 1, ts(now))
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn deletion_preference_follows_upstream_rules() {
        let now = 1_000_000;
        // unscheduled < scheduled; pending < running; not ready < ready
        let pods = vec![
            pod("ready", "n1", "Running", Some(now - 5000), now - 9000),
            pod("running", "n2", "Running", None, now - 9000),
            pod("pending", "n3", "Pending", None, now - 9000),
            pod("unscheduled", "", "Pending", None, now - 9000),
        ];
        assert_eq!(order(&pods, now), ["unscheduled", "pending", "running"]);
        // doubled-up pods first; then the most recently ready
        let pods = vec![
            pod("alone-old", "n1", "Running", Some(now - 100_000), now - 200_000),
            pod("pair-a", "n2", "Running", Some(now - 100_000), now - 200_000),
            pod("pair-b", "n2", "Running", Some(now - 100_000), now - 200_000),
            pod("alone-new", "n3", "Running", Some(now - 10), now - 200_000),
        ];
        assert_eq!(order(&pods, now), ["pair-a", "pair-b", "alone-new"]);
    }

    #[test]
    fn restarts_and_age_break_ties() {
        let now = 1_000_000;
        let mut crashy = pod("crashy", "n1", "Running", None, now - 9000);
        if let Some(s) = crashy.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus { restart_count: 3, ..Default::default() }]);
        }
        let pods = vec![
            pod("old", "n2", "Running", None, now - 100_000),
            pod("young", "n3", "Running", None, now - 10),
            crashy,
        ];
        assert_eq!(order(&pods, now), ["crashy", "young"]);
    }

    #[test]
    fn selectors_match_as_upstream() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = Selector::parse(&sel).expect("valid");
        let labels = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
        };
        assert!(s.matches(Some(&labels(&[("app", "a")]))));
        assert!(!s.matches(Some(&labels(&[("app", "a"), ("tier", "db")]))));
        assert!(!s.matches(None));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(Selector::parse(&bad).is_none());
    }

    #[test]
    fn availability_needs_min_ready_seconds() {
        let p = pod("p", "n", "Running", Some(100), 0);
        assert!(is_available(&p, 0, ts(100)));
        assert!(!is_available(&p, 10, ts(105)));
        assert!(is_available(&p, 10, ts(111)));
        assert!(!is_available(&pod("q", "n", "Running", None, 0), 0, ts(1)));
    }
}
