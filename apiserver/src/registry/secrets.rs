//! Secrets (`pkg/registry/core/secret`): the `type` field selector and its default.

use super::{ResourceInfo, Scope, Strategy};
use serde_json::Value;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct Secrets;

impl Strategy for Secrets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            obj["type"] = "Opaque".into();
        }
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["type"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "type").then(|| obj["type"].as_str().unwrap_or("").to_string())
    }
}
