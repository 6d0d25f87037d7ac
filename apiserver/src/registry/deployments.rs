//! Deployments (`apps/v1`, `pkg/registry/apps/deployment`): defaults (`pkg/apis/apps/v1/defaults.go`),
//! validation (`pkg/apis/apps/validation`), generation, status, scale.

use super::replicasets::{default_if_absent, non_negative, selector_immutable, template_defaults};
use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use crate::error::FieldError;
use crate::validation;
use serde_json::{Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    categories: &["all"],
    scope: Scope::Namespaced,
    subresources: &[Subresource::Status, Subresource::Scale],
};

pub struct Deployments;

impl Strategy for Deployments {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn set_defaults(&self, obj: &mut Value) {
        set_defaults(obj);
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({}));
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
    }

    /// `ValidateDeployment` (spec part).
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let spec = &obj["spec"];
        let mut errs = non_negative(spec, "replicas", "spec.replicas");
        errs.extend(super::replicasets::validate_selector_and_template(spec));
        errs.extend(validate_strategy(&spec["strategy"]));
        errs.extend(non_negative(spec, "minReadySeconds", "spec.minReadySeconds"));
        errs.extend(non_negative(spec, "revisionHistoryLimit", "spec.revisionHistoryLimit"));
        if let Some(deadline) = spec["progressDeadlineSeconds"].as_i64() {
            errs.extend(non_negative(spec, "progressDeadlineSeconds", "spec.progressDeadlineSeconds"));
            if deadline <= spec["minReadySeconds"].as_i64().unwrap_or(0) {
                errs.push(FieldError::invalid(
                    "spec.progressDeadlineSeconds",
                    deadline,
                    "must be greater than minReadySeconds",
                ));
            }
        }
        errs
    }

    /// `ValidateDeploymentUpdate`: as on create, and the selector may not change (apps/v1).
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        errs.extend(selector_immutable(new, old));
        errs
    }

    /// `ValidateDeploymentStatus`.
    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        let st = &new["status"];
        let mut errs = Vec::new();
        for f in [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "collisionCount",
        ] {
            errs.extend(non_negative(st, f, &format!("status.{f}")));
        }
        let n = |f: &str| st[f].as_i64().unwrap_or(0);
        for (f, than, what) in [
            ("updatedReplicas", "replicas", "status.replicas"),
            ("availableReplicas", "replicas", "status.replicas"),
            ("readyReplicas", "replicas", "status.replicas"),
            ("availableReplicas", "readyReplicas", "readyReplicas"),
        ] {
            if n(f) > n(than) {
                errs.push(FieldError::invalid(format!("status.{f}"), n(f), format!("cannot be greater than {what}")));
            }
        }
        errs
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 8] = [
            super::table::NAME,
            super::table::col("Ready", "Number of the pod with ready state", 0),
            super::table::col(
                "Up-to-date",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            super::table::col(
                "Available",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
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
            format!("{}/{}", n(&st["readyReplicas"]), n(&obj["spec"]["replicas"])).into(),
            n(&st["updatedReplicas"]).into(),
            n(&st["availableReplicas"]).into(),
            super::table::age(obj),
            containers.into(),
            images.into(),
            super::table::format_selector(&obj["spec"]["selector"]).into(),
        ]
    }
}

/// `SetDefaults_Deployment` (apps/v1), and the template's PodSpec defaults.
fn set_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    default_if_absent(spec, "replicas", 1.into());
    default_if_absent(spec, "strategy", json!({}));
    if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
        default_if_absent(strategy, "type", "RollingUpdate".into());
        if strategy["type"] == "RollingUpdate" {
            default_if_absent(strategy, "rollingUpdate", json!({}));
            if let Some(ru) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                default_if_absent(ru, "maxUnavailable", "25%".into());
                default_if_absent(ru, "maxSurge", "25%".into());
            }
        }
    }
    default_if_absent(spec, "revisionHistoryLimit", 10.into());
    default_if_absent(spec, "progressDeadlineSeconds", 600.into());
    template_defaults(spec);
}

/// `ValidateDeploymentStrategy` and `ValidateRollingUpdateDeployment`.
fn validate_strategy(strategy: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ru = &strategy["rollingUpdate"];
    match strategy["type"].as_str().unwrap_or("") {
        "Recreate" => {
            if !ru.is_null() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            if ru.is_null() {
                errs.push(FieldError::required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ));
                return errs;
            }
            let unavailable =
                int_or_percent(&ru["maxUnavailable"], "spec.strategy.rollingUpdate.maxUnavailable", &mut errs);
            let surge = int_or_percent(&ru["maxSurge"], "spec.strategy.rollingUpdate.maxSurge", &mut errs);
            if unavailable.map(|(v, _)| v) == Some(0) && surge.map(|(v, _)| v) == Some(0) {
                errs.push(FieldError::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    ru["maxUnavailable"].clone(),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if let Some((v, true)) = unavailable
                && v > 100
            {
                errs.push(FieldError::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    ru["maxUnavailable"].clone(),
                    "must not be greater than 100%",
                ));
            }
        }
        other => errs.push(FieldError::not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])),
    }
    errs
}

/// `ValidatePositiveIntOrPercent`: the value and whether it is a percentage, when valid.
fn int_or_percent(v: &Value, path: &str, errs: &mut Vec<FieldError>) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Some((i, false)),
            _ => {
                errs.push(FieldError::invalid(path, v.clone(), "must be greater than or equal to 0"));
                None
            }
        },
        Value::String(s) => {
            let digits = s.strip_suffix('%').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits.and_then(|d| d.parse().ok()) {
                Some(p) => Some((p, true)),
                None => {
                    errs.push(FieldError::invalid(
                        path,
                        s.as_str(),
                        validation::regex_error(
                            "a valid percent string must be a numeric string followed by an ending '%'",
                            "[0-9]+%",
                            &["1%", "93%"],
                        ),
                    ));
                    None
                }
            }
        }
        _ => {
            errs.push(FieldError::invalid(path, v.clone(), "must be an integer or percentage (e.g '5%')"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(strategy: Value) -> Value {
        json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    }

    #[test]
    fn defaults_as_upstream() {
        let mut d = deployment(Value::Null);
        Deployments.set_defaults(&mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert!(Deployments.validate(&d).is_empty(), "{:?}", Deployments.validate(&d));
        let mut r = deployment(json!({"type": "Recreate"}));
        Deployments.set_defaults(&mut r);
        assert!(r["spec"]["strategy"]["rollingUpdate"].is_null());
    }

    #[test]
    fn rolling_update_parameters_are_checked() {
        let bad = |ru: Value| {
            let mut d = deployment(json!({"type": "RollingUpdate", "rollingUpdate": ru}));
            Deployments.set_defaults(&mut d);
            Deployments.validate(&d).iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            bad(json!({"maxSurge": 0, "maxUnavailable": "0%"})),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"]
        );
        assert_eq!(
            bad(json!({"maxUnavailable": "120%"})),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%"]
        );
        assert_eq!(bad(json!({"maxSurge": -1})).len(), 1);
        assert_eq!(bad(json!({"maxSurge": "x%"})).len(), 1);
        assert!(bad(json!({"maxSurge": 2, "maxUnavailable": 0})).is_empty());
    }
}
