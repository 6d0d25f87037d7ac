//! Pure Deployment helpers (`pkg/controller/deployment/util/deployment_util.go`,
//! `pkg/controller/controller_utils.go` `ComputeHash` and the ReplicaSet orderings): revisions and
//! annotations, maxSurge/maxUnavailable, proportions, conditions, status arithmetic.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
/// Longest `revision-history` annotation kept (`maxRevHistoryLengthInChars`).
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations never copied between a Deployment and its ReplicaSets (`annotationsToSkip`).
const SKIPPED_ANNOTATIONS: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub type Rs = Arc<ReplicaSet>;

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

pub fn is_rolling(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

pub fn strategy_type(d: &Deployment) -> &str {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
}

/// `intstr.GetScaledValueFromIntOrPercent`: a percentage of `total`, rounded up or down.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else { return 0 };
            let scaled = p * i64::from(total);
            (if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) }) as i32
        }
    }
}

/// `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down); never both zero.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let desired = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

pub fn max_revision(sets: &[Rs]) -> i64 {
    sets.iter().map(|rs| revision_of(rs)).max().unwrap_or(0)
}

/// `ComputeHash`: FNV-1a (32 bit) of the template, then of the collision count, printed in
/// decimal and mapped onto `rand.SafeEncodeString`'s alphabet. kplane hashes the template's
/// normalized JSON (upstream hashes a Go-specific dump of it), so names differ from upstream's.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(&normalized(template)).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    hash.to_string().bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// The template as JSON without the hash label and without zero values (`false`, `0`, `""`,
/// empty lists and maps, `null`): Go's semantic equality cannot tell those from absent fields,
/// and clients differ in which of them they send (a protobuf body carries `stdin: false`, a
/// JSON patch from kubectl omits it).
fn normalized(t: &PodTemplateSpec) -> serde_json::Value {
    fn prune(v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::Null => true,
            Value::Bool(b) => !*b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(items) => {
                items.iter_mut().for_each(|i| {
                    prune(i);
                });
                items.is_empty()
            }
            Value::Object(map) => {
                map.retain(|_, v| !prune(v));
                map.is_empty()
            }
        }
    }
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(serde_json::Value::as_object_mut) {
        labels.remove(HASH_LABEL);
    }
    prune(&mut v);
    v
}

/// `EqualIgnoreHash` (on the normalized form, as Go's semantic equality would see it).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

fn template_of(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

pub fn deployment_template(d: &Deployment) -> PodTemplateSpec {
    d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// `ReplicaSetsByCreationTimestamp`.
pub fn by_creation(a: &Rs, b: &Rs) -> Ordering {
    created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// `ReplicaSetsBySizeOlder`: larger first, then older first.
pub fn by_size_older(a: &Rs, b: &Rs) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b))
}

/// `ReplicaSetsBySizeNewer`: larger first, then newer first.
pub fn by_size_newer(a: &Rs, b: &Rs) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a))
}

/// `ReplicaSetsByRevision`: lower revision first, then older first.
pub fn by_revision(a: &Rs, b: &Rs) -> Ordering {
    revision_of(a).cmp(&revision_of(b)).then_with(|| by_creation(a, b))
}

/// `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
pub fn find_new(d: &Deployment, sets: &[Rs]) -> Option<Rs> {
    let template = deployment_template(d);
    let mut sorted = sets.to_vec();
    sorted.sort_by(by_creation);
    sorted.into_iter().find(|rs| equal_ignore_hash(&template_of(rs), &template))
}

pub fn active(sets: &[Rs]) -> Vec<Rs> {
    sets.iter().filter(|rs| rs_replicas(rs) > 0).cloned().collect()
}

pub fn sum_spec(sets: &[Rs]) -> i32 {
    sets.iter().map(|rs| rs_replicas(rs)).sum()
}

pub fn sum_status(sets: &[Rs]) -> i32 {
    sets.iter().map(|rs| rs_status(rs).0).sum()
}

pub fn sum_available(sets: &[Rs]) -> i32 {
    sets.iter().map(|rs| rs_status(rs).2).sum()
}

fn sum_ready(sets: &[Rs]) -> i32 {
    sets.iter().map(|rs| rs_status(rs).1).sum()
}

/// `FindActiveOrLatest`: the only active ReplicaSet, or the newest when none is active.
pub fn find_active_or_latest(new: Option<&Rs>, old: &[Rs]) -> Option<Rs> {
    let mut all: Vec<Rs> = old.to_vec();
    all.sort_by(|a, b| by_creation(b, a));
    let newest_old = all.first().cloned();
    all.extend(new.cloned());
    let act = active(&all);
    match act.len() {
        0 => new.cloned().or(newest_old),
        1 => act.into_iter().next(),
        _ => None,
    }
}

/// `NewRSNewReplicas`: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[Rs], new_rs_replicas: i32) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let total = sum_spec(all);
    let max_total = replicas(d) + max_surge(d);
    if total >= max_total {
        return new_rs_replicas;
    }
    let up = (max_total - total).min(replicas(d) - new_rs_replicas);
    new_rs_replicas + up
}

/// `IsSaturated`.
pub fn is_saturated(d: &Deployment, rs: Option<&Rs>) -> bool {
    let Some(rs) = rs else { return false };
    let desired = annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
    rs_replicas(rs) == replicas(d) && desired == Some(replicas(d)) && rs_status(rs).2 == replicas(d)
}

/// `GetProportion`: what a ReplicaSet gains (or loses) of `to_add` when a rollout is rescaled.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

/// `getReplicaSetFraction`.
fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = annotation(rs, MAX_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

/// Sets `desired-replicas` and `max-replicas`; whether anything changed.
pub fn set_replicas_annotations(annotations: &mut BTreeMap<String, String>, desired: i32, max: i32) -> bool {
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotations.get(k) != Some(&v.to_string()) {
            annotations.insert(k.into(), v.to_string());
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, moves the revision up to
/// `new_revision` (recording the old one in `revision-history`), and on creation the replica
/// annotations. Whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    annotations: &mut BTreeMap<String, String>,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_n: i64 = match old.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return changed,
    };
    if old_n < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let mut revisions: Vec<&str> = history.split(',').filter(|s| !s.is_empty()).collect();
            revisions.push(&old);
            while revisions.join(",").len() > MAX_REVISION_HISTORY_CHARS && revisions.len() > 1 {
                revisions.remove(0);
            }
            annotations.insert(REVISION_HISTORY.into(), revisions.join(","));
        }
    }
    if !exists && set_replicas_annotations(annotations, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

/// `SetDeploymentCondition`: same status and reason keeps the old one; same status keeps its
/// transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(status, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            status.conditions = None;
        }
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
}

fn nz(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// `calculateStatus`, including the Available condition.
pub fn calculate_status(all: &[Rs], new: Option<&Rs>, d: &Deployment) -> DeploymentStatus {
    let available = sum_available(all);
    let total = sum_spec(all);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(sum_status(all)),
        updated_replicas: nz(new.map(|rs| rs_status(rs).0).unwrap_or(0)),
        ready_replicas: nz(sum_ready(all)),
        available_replicas: nz(available),
        unavailable_replicas: nz((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        let c = new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        );
        set_condition(&mut status, c);
    } else {
        let c = new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        );
        set_condition(&mut status, c);
    }
    status
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    n(s.updated_replicas) == want
        && n(s.replicas) == want
        && n(s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, ready or available pods, or fewer old ones.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// When the progress deadline of the current Progressing condition passes (`DeploymentTimedOut`).
pub fn deadline_at(d: &Deployment, s: &DeploymentStatus) -> Option<Timestamp> {
    let secs = progress_deadline(d)?;
    let c = condition(s, "Progressing")?;
    let from = c.last_update_time.as_ref()?.0;
    Some(from + std::time::Duration::from_secs(secs.max(0) as u64))
}

pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(c) = condition(s, "Progressing") else { return false };
    if progress_deadline(d).is_none() {
        return false;
    }
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => deadline_at(d, s).is_some_and(|at| at < now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        assert_eq!(fenceposts(&deployment(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(3, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(fenceposts(&deployment(1, pct("0%"), pct("1%"))), (0, 1));
        assert_eq!(fenceposts(&deployment(4, IntOrString::Int(2), IntOrString::Int(0))), (2, 0));
        assert_eq!(max_unavailable(&deployment(2, IntOrString::Int(0), IntOrString::Int(5))), 2);
    }

    #[test]
    fn hash_is_stable_safe_and_moved_by_collisions() {
        let t = PodTemplateSpec::default();
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t, None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)) && !h.is_empty() && h.len() <= 10);
        assert_ne!(h, compute_hash(&t, Some(1)));
    }

    #[test]
    fn zero_values_and_the_hash_label_do_not_count() {
        let a: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "a", HASH_LABEL: "x"}, "generation": 0},
            "spec": {"containers": [{"name": "c", "image": "i", "stdin": false, "resources": {}}], "hostIPC": false}}))
        .expect("template");
        let b: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .expect("template");
        assert!(equal_ignore_hash(&a, &b));
        assert_eq!(compute_hash(&a, None), compute_hash(&b, None));
        let c: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "j"}]}}))
        .expect("template");
        assert!(!equal_ignore_hash(&a, &c));
    }

    fn rs(name: &str, replicas: i32, annotations: &[(&str, &str)]) -> Rs {
        Arc::new(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec { replicas: Some(replicas), ..Default::default() }),
            status: None,
        })
    }

    #[test]
    fn new_replicas_respect_surge() {
        let d = deployment(10, pct("25%"), pct("25%"));
        assert_eq!(new_rs_new_replicas(&d, &[rs("old", 10, &[]), rs("new", 0, &[])], 0), 3);
        assert_eq!(new_rs_new_replicas(&d, &[rs("old", 8, &[]), rs("new", 3, &[])], 3), 5);
        assert_eq!(new_rs_new_replicas(&d, &[rs("old", 10, &[]), rs("new", 3, &[])], 3), 3);
    }

    #[test]
    fn proportions_follow_max_replicas() {
        // scaling 10 -> 20 (surge 3 -> 5): an RS of 8 made when the deployment could have 13
        let d = deployment(20, pct("25%"), pct("25%"));
        let old = rs("old", 8, &[(MAX_REPLICAS, "13")]);
        assert_eq!(proportion(&old, &d, 12, 0), 7); // round(8*25/13)=15 -> +7
        assert_eq!(proportion(&old, &d, 12, 10), 2);
    }

    #[test]
    fn revisions_move_up_with_history() {
        let d = deployment(1, pct("25%"), pct("25%"));
        let mut a: BTreeMap<String, String> = [(REVISION.to_string(), "1".to_string())].into();
        assert!(set_new_rs_annotations(&d, &mut a, 3, true));
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert!(!set_new_rs_annotations(&d, &mut a, 2, true));
    }
}
