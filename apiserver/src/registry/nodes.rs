//! Nodes (`pkg/registry/core/node`): cluster-scoped, status kept apart from spec.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use serde_json::{Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    categories: &[],
    scope: Scope::Cluster,
    subresources: &[Subresource::Status],
};

pub struct Nodes;

impl Strategy for Nodes {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        // `nodeStrategy.PrepareForCreate` keeps the status a kubelet registers with; so do we.
        if obj.get("status").is_none() {
            reset_status(obj, json!({}));
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "spec.unschedulable").then(|| obj["spec"]["unschedulable"].as_bool().unwrap_or(false).to_string())
    }
}
