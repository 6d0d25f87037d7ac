//! ConfigMaps (`pkg/registry/core/configmap`): data only, no status.

use super::{ResourceInfo, Scope, Strategy};

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
}
