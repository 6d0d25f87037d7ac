//! Deployments (`apps/v1`, `pkg/registry/apps/deployment`): generation, status, scale.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
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

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({}));
        set_defaults(obj);
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
        set_defaults(new);
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

/// `SetDefaults_Deployment` (apps/v1).
fn set_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("replicas").or_insert(1.into());
    spec.entry("revisionHistoryLimit").or_insert(10.into());
    spec.entry("progressDeadlineSeconds").or_insert(600.into());
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if strategy.get("type").is_none() {
        strategy["type"] = "RollingUpdate".into();
    }
    if strategy["type"] == "RollingUpdate" {
        let ru = strategy.as_object_mut().map(|s| s.entry("rollingUpdate").or_insert_with(|| json!({})));
        if let Some(Value::Object(ru)) = ru {
            ru.entry("maxUnavailable").or_insert("25%".into());
            ru.entry("maxSurge").or_insert("25%".into());
        }
    }
}
