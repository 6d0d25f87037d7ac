//! Secrets (`pkg/registry/core/secret`): the `type` field selector and its default, and the
//! write-only `stringData` folded into `data` (`Convert_v1_Secret_To_core_Secret`).

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

    /// `stringData` overwrites `data` entries and is never stored, on every write.
    fn set_defaults(&self, obj: &mut Value) {
        use base64::Engine;
        let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
        if !obj["data"].is_object() {
            obj["data"] = Value::Object(Default::default());
        }
        for (k, v) in strings {
            let text = v.as_str().unwrap_or_default();
            obj["data"][k] = base64::engine::general_purpose::STANDARD.encode(text).into();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_data_is_folded_into_data() {
        let mut s = json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "new", "c": "z"}});
        Secrets.set_defaults(&mut s);
        assert_eq!(s, json!({"data": {"a": "eA==", "b": "bmV3", "c": "eg=="}}));
        let mut only = json!({"stringData": {"k": "v"}});
        Secrets.set_defaults(&mut only);
        assert_eq!(only, json!({"data": {"k": "dg=="}}));
    }
}
