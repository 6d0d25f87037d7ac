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
}
