//! Endpoints, the legacy v1 API (`pkg/registry/core/endpoint`).

use super::{ResourceInfo, Scope, Strategy};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct Endpoints;

impl Strategy for Endpoints {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
}
