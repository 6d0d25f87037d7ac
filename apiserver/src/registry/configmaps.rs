//! ConfigMaps (`pkg/registry/core/configmap`): data only, no status.

use super::{ResourceInfo, Scope, Strategy};
use serde_json::Value;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct ConfigMaps;

impl Strategy for ConfigMaps {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 3] =
            [super::table::NAME, super::table::col("Data", "Number of data entries.", 0), super::table::AGE];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let n = obj["data"].as_object().map_or(0, |m| m.len()) + obj["binaryData"].as_object().map_or(0, |m| m.len());
        vec![obj["metadata"]["name"].clone(), n.into(), super::table::age(obj)]
    }
}
