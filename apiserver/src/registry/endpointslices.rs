//! EndpointSlices (`discovery.k8s.io/v1`, `pkg/registry/discovery/endpointslice`).

use super::{ResourceInfo, Scope, Strategy};
use serde_json::Value;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    short_names: &[],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct EndpointSlices;

impl Strategy for EndpointSlices {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["addressType"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "addressType").then(|| obj["addressType"].as_str().unwrap_or("").to_string())
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 5] = [
            super::table::NAME,
            super::table::col("AddressType", "The address type of the endpoints.", 0),
            super::table::col("Ports", "The ports of the endpoints.", 0),
            super::table::col("Endpoints", "The addresses of the endpoints.", 0),
            super::table::AGE,
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let ports: Vec<String> = obj["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
            .collect();
        let addrs: Vec<&str> = obj["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        let list = |v: Vec<String>| if v.is_empty() { "<unset>".to_string() } else { v.join(",") };
        let endpoints = match addrs.len() {
            0 => "<none>".to_string(),
            n if n > 3 => format!("{} + {} more...", addrs[..3].join(","), n - 3),
            _ => addrs.join(","),
        };
        vec![
            obj["metadata"]["name"].clone(),
            obj["addressType"].clone(),
            list(ports).into(),
            endpoints.into(),
            super::table::age(obj),
        ]
    }
}
