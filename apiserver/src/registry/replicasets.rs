//! ReplicaSets (`apps/v1`, `pkg/registry/apps/replicaset`): generation, status, scale.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use serde_json::{Value, json};

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

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({"replicas": 0}));
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("replicas").or_insert(1.into());
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
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
