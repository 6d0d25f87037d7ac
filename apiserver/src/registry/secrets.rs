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

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 4] = [
            super::table::NAME,
            super::table::col("Type", "The type of the secret", 0),
            super::table::col("Data", "Number of data entries.", 0),
            super::table::AGE,
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let n = obj["data"].as_object().map_or(0, |m| m.len());
        vec![obj["metadata"]["name"].clone(), obj["type"].clone(), n.into(), super::table::age(obj)]
    }
}
