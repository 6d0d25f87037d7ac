//! Pods (`pkg/registry/core/pod/strategy.go`, `pkg/apis/core/v1/defaults.go`): defaults,
//! initial status and QoS class, graceful deletion, field selectors.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use serde_json::{Map, Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    categories: &["all"],
    scope: Scope::Namespaced,
    subresources: &[Subresource::Status, Subresource::Binding, Subresource::Log],
};

/// `DefaultTerminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

pub struct Pods;

impl Strategy for Pods {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        set_defaults(obj);
        let qos = qos_class(obj);
        reset_status(obj, json!({"phase": "Pending", "qosClass": qos}));
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        set_defaults(new);
        keep_status(new, old);
    }

    /// `podStrategy.CheckGracefulDelete`: unscheduled or finished pods go at once.
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let phase = obj["status"]["phase"].as_str().unwrap_or("");
        let unscheduled = obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
        if unscheduled || phase == "Failed" || phase == "Succeeded" {
            return None;
        }
        Some(requested.or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(DEFAULT_GRACE))
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        Some(match field {
            "spec.hostNetwork" => obj["spec"]["hostNetwork"].as_bool().unwrap_or(false).to_string(),
            "status.podIPs" => obj["status"]["podIPs"]
                .as_array()
                .map(|ips| ips.iter().filter_map(|ip| ip["ip"].as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            _ => {
                let (top, rest) = field.split_once('.')?;
                text(&obj[top][rest])
            }
        })
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 9] = [
            super::table::NAME,
            super::table::col("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
            super::table::col("Status", "The aggregate status of the containers in this pod.", 0),
            super::table::col("Restarts", "The number of times the containers in this pod have been restarted.", 0),
            super::table::AGE,
            super::table::col("IP", "IP address assigned to the pod", 1),
            super::table::col("Node", "Name of the node assigned to the pod", 1),
            super::table::col("Nominated Node", "Name of the node nominated for the pod", 1),
            super::table::col("Readiness Gates", "Readiness gates of the pod", 1),
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let statuses: Vec<&Value> = obj["status"]["containerStatuses"].as_array().into_iter().flatten().collect();
        let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
        let restarts: i64 = statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
        let mut status =
            obj["status"]["reason"].as_str().or(obj["status"]["phase"].as_str()).unwrap_or("Unknown").to_string();
        for c in &statuses {
            if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                status = r.to_string();
            }
        }
        if obj["metadata"]["deletionTimestamp"].is_string() {
            status = "Terminating".into();
        }
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
        vec![
            obj["metadata"]["name"].clone(),
            format!("{ready}/{total}").into(),
            status.into(),
            restarts.into(),
            super::table::age(obj),
            text(&obj["status"]["podIP"]).into(),
            text(&obj["spec"]["nodeName"]).into(),
            text(&obj["status"]["nominatedNodeName"]).into(),
            "<none>".into(),
        ]
    }
}

/// `SetDefaults_Pod`, `SetDefaults_PodSpec` and the container defaults, plus what admission adds to
/// every pod (service account, priority).
fn set_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    pod_spec_defaults(spec);
    spec.entry("serviceAccountName").or_insert("default".into());
    spec.entry("priority").or_insert(0.into());
}

/// `SetDefaults_PodSpec` and the container defaults: what every PodSpec gets, a pod's or a
/// template's (Deployments, ReplicaSets).
pub(super) fn pod_spec_defaults(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert("Always".into());
    spec.entry("dnsPolicy").or_insert("ClusterFirst".into());
    spec.entry("terminationGracePeriodSeconds").or_insert(DEFAULT_GRACE.into());
    spec.entry("schedulerName").or_insert("default-scheduler".into());
    spec.entry("securityContext").or_insert_with(|| json!({}));
    spec.entry("enableServiceLinks").or_insert(true.into());
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                container_defaults(c);
            }
        }
    }
}

fn container_defaults(c: &mut Map<String, Value>) {
    c.entry("terminationMessagePath").or_insert("/dev/termination-log".into());
    c.entry("terminationMessagePolicy").or_insert("File".into());
    c.entry("resources").or_insert_with(|| json!({}));
    if !c.contains_key("imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let tag = image.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, t)| t);
        let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") { "IfNotPresent" } else { "Always" };
        c.insert("imagePullPolicy".into(), policy.into());
    }
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert("TCP".into());
        }
    }
}

/// `qos.GetPodQOS`, simplified to cpu and memory: Guaranteed when every container limits both
/// with requests equal to limits, BestEffort when none asks for anything, else Burstable.
fn qos_class(obj: &Value) -> &'static str {
    let containers = obj["spec"]["containers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = &c["resources"]["requests"];
        let limits = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (req, lim) = (&requests[r], &limits[r]);
            any |= !req.is_null() || !lim.is_null();
            if lim.is_null() || (!req.is_null() && req != lim) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(json!({"requests": {"cpu": "1"}}))), "Burstable");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let mut c = Map::new();
        c.insert("image".into(), "nginx".into());
        container_defaults(&mut c);
        assert_eq!(c["imagePullPolicy"], "Always");
        let mut c = Map::new();
        c.insert("image".into(), "registry:5000/nginx:1.25".into());
        container_defaults(&mut c);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn unscheduled_pods_are_deleted_at_once() {
        let pod = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(Pods.grace_period(&pod, None), None);
        let bound =
            json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        assert_eq!(Pods.grace_period(&bound, None), Some(5));
        assert_eq!(Pods.grace_period(&bound, Some(0)), Some(0));
    }
}
