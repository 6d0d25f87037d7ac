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

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 10] = [
            super::table::NAME,
            super::table::col("Status", "The status of the node", 0),
            super::table::col("Roles", "The roles of the node", 0),
            super::table::AGE,
            super::table::col("Version", "Kubelet Version reported by the node.", 0),
            super::table::col("Internal-IP", "List of internal IPs in the node.", 1),
            super::table::col("External-IP", "List of external IPs in the node.", 1),
            super::table::col("OS-Image", "OS image reported by the node.", 1),
            super::table::col("Kernel-Version", "Kernel version reported by the node.", 1),
            super::table::col("Container-Runtime", "Container runtime reported by the node.", 1),
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let ready = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
            .unwrap_or("Unknown");
        let mut roles: Vec<&str> = obj["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        roles.sort();
        let addr = |t: &str| {
            obj["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == t)
                .and_then(|a| a["address"].as_str())
                .unwrap_or("<none>")
                .to_string()
        };
        let info = &obj["status"]["nodeInfo"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("<unknown>").to_string();
        vec![
            obj["metadata"]["name"].clone(),
            ready.into(),
            if roles.is_empty() { "<none>".into() } else { roles.join(",").into() },
            super::table::age(obj),
            text(&info["kubeletVersion"]).into(),
            addr("InternalIP").into(),
            addr("ExternalIP").into(),
            text(&info["osImage"]).into(),
            text(&info["kernelVersion"]).into(),
            text(&info["containerRuntimeVersion"]).into(),
        ]
    }
}
