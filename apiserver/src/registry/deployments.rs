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
