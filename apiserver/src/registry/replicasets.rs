//! ReplicaSets (`apps/v1`, `pkg/registry/apps/replicaset`): defaults (`pkg/apis/apps/v1/defaults.go`),
//! validation (`pkg/apis/apps/validation`), generation, status, scale. Also the template and
//! selector rules Deployments share.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use crate::error::FieldError;
use crate::selector::LabelSelector;
use crate::validation;
use serde_json::{Map, Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    categories: &["all"],
    scope: Scope::Namespaced,
    subresources: &[Subresource::Status, Subresource::Scale],
};

pub struct ReplicaSets;

impl Strategy for ReplicaSets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    /// `SetDefaults_ReplicaSet` and the template's PodSpec defaults.
    fn set_defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
        default_if_absent(spec, "replicas", 1.into());
        template_defaults(spec);
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({"replicas": 0}));
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
    }

    /// `ValidateReplicaSet`.
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let spec = &obj["spec"];
        let mut errs = non_negative(spec, "replicas", "spec.replicas");
        errs.extend(non_negative(spec, "minReadySeconds", "spec.minReadySeconds"));
        errs.extend(validate_selector_and_template(spec));
        errs
    }

    /// `ValidateReplicaSetUpdate`: as on create, and the selector may not change (apps/v1).
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(selector_immutable(new, old));
        errs
    }

    /// `ValidateReplicaSetStatusUpdate`.
    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        let st = &new["status"];
        let mut errs = Vec::new();
        for f in ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"] {
            errs.extend(non_negative(st, f, &format!("status.{f}")));
        }
        let n = |f: &str| st[f].as_i64().unwrap_or(0);
        for (f, than, what) in [
            ("fullyLabeledReplicas", "replicas", "status.replicas"),
            ("readyReplicas", "replicas", "status.replicas"),
            ("availableReplicas", "replicas", "status.replicas"),
            ("availableReplicas", "readyReplicas", "readyReplicas"),
        ] {
            if n(f) > n(than) {
                errs.push(FieldError::invalid(format!("status.{f}"), n(f), format!("cannot be greater than {what}")));
            }
        }
        errs
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "status.replicas").then(|| obj["status"]["replicas"].as_i64().unwrap_or(0).to_string())
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 8] = [
            super::table::NAME,
            super::table::col("Desired", "Number of desired pods.", 0),
            super::table::col("Current", "Number of actually running pods.", 0),
            super::table::col("Ready", "Number of ready pods.", 0),
            super::table::AGE,
            super::table::col("Containers", "Names of each container in the template.", 1),
            super::table::col("Images", "Images referenced by each container in the template.", 1),
            super::table::col("Selector", "Label selector for pods.", 1),
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let st = &obj["status"];
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        let (containers, images) = super::table::containers(&obj["spec"]["template"]);
        vec![
            obj["metadata"]["name"].clone(),
            n(&obj["spec"]["replicas"]).into(),
            n(&st["replicas"]).into(),
            n(&st["readyReplicas"]).into(),
            super::table::age(obj),
            containers.into(),
            images.into(),
            super::table::format_selector(&obj["spec"]["selector"]).into(),
        ]
    }
}

/// Sets `key` unless it holds a value (absent and `null` both read as unset, as with Go pointers).
pub(super) fn default_if_absent(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// The PodSpec defaults inside `spec.template` (the defaulters reach every embedded PodSpec).
pub(super) fn template_defaults(spec: &mut Map<String, Value>) {
    if let Some(pod_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")).and_then(Value::as_object_mut) {
        super::pods::pod_spec_defaults(pod_spec);
    }
}

/// `ValidateNonnegativeField` for an optional integer.
pub(super) fn non_negative(obj: &Value, field: &str, path: &str) -> Vec<FieldError> {
    match obj.get(field).and_then(Value::as_i64) {
        Some(v) if v < 0 => vec![FieldError::invalid(path, v, "must be greater than or equal to 0")],
        _ => Vec::new(),
    }
}

/// The selector rules of `ValidateReplicaSetSpec`/`ValidateDeploymentSpec` and
/// `ValidatePodTemplateSpecForReplicaSet` (upstream's message says "deployment" for both kinds).
pub(super) fn validate_selector_and_template(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let selector = spec.get("selector").filter(|s| !s.is_null());
    let parsed = match selector {
        None => {
            errs.push(FieldError::required("spec.selector", ""));
            None
        }
        Some(sel) => {
            let sel_errs = validation::validate_label_selector(sel, "spec.selector", false);
            let empty = sel["matchLabels"].as_object().is_none_or(Map::is_empty)
                && sel["matchExpressions"].as_array().is_none_or(Vec::is_empty);
            if empty {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    "empty selector is invalid for deployment",
                ));
            }
            let ok = sel_errs.is_empty();
            errs.extend(sel_errs);
            if ok {
                match LabelSelector::from_label_selector_json(sel) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        errs.push(FieldError::invalid("spec.selector", sel.clone(), "invalid label selector"));
                        None
                    }
                }
            } else {
                None
            }
        }
    };
    let Some(template) = spec.get("template").filter(|t| t.is_object()) else {
        errs.push(FieldError::required("spec.template", ""));
        return errs;
    };
    let empty = Map::new();
    let labels = template["metadata"]["labels"].as_object().unwrap_or(&empty);
    if let Some(sel) = parsed.filter(|s| !s.is_empty())
        && !sel.matches(labels)
    {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            Value::Object(labels.clone()),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validation::validate_labels(labels, "spec.template.metadata.labels"));
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        errs.extend(validation::validate_annotations(annotations, "spec.template.metadata.annotations"));
    }
    let pod_spec = &template["spec"];
    if pod_spec["containers"].as_array().is_none_or(Vec::is_empty) {
        errs.push(FieldError::required("spec.template.spec.containers", ""));
    }
    let restart = pod_spec["restartPolicy"].as_str().unwrap_or("");
    if restart != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", restart, &["Always"]));
    }
    if !pod_spec["activeDeadlineSeconds"].is_null() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

/// apps/v1 refuses a changed selector.
pub(super) fn selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (&new["spec"]["selector"], &old["spec"]["selector"]);
    if n != o {
        return vec![FieldError::invalid("spec.selector", n.clone(), "field is immutable")];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(selector: Value, labels: Value) -> Value {
        json!({"spec": {"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Always"}}}})
    }

    #[test]
    fn selector_must_match_template_labels() {
        let errs = ReplicaSets.validate(&rs(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert!(errs[0].to_string().contains("`selector` does not match template `labels`"));
        assert!(
            ReplicaSets.validate(&rs(json!({"matchLabels": {"app": "a"}}), json!({"app": "a", "x": "y"}))).is_empty()
        );
    }

    #[test]
    fn empty_or_missing_selector_is_refused() {
        let errs = ReplicaSets.validate(&rs(json!({}), json!({"app": "a"})));
        assert_eq!(errs[0].field, "spec.selector");
        let mut missing = rs(json!(null), json!({"app": "a"}));
        missing["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert_eq!(ReplicaSets.validate(&missing)[0].to_string(), "spec.selector: Required value");
    }

    #[test]
    fn defaults_fill_replicas_and_the_template() {
        let mut obj = rs(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        obj["spec"]["replicas"] = Value::Null;
        ReplicaSets.set_defaults(&mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }
}
