//! Services (`pkg/registry/core/service/strategy.go`): name rule, status handling, create on update.

use super::{ResourceInfo, Scope, Strategy, Subresource, keep_status, reset_status};
use serde_json::{Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    categories: &["all"],
    scope: Scope::Namespaced,
    subresources: &[Subresource::Status],
};

pub struct Services;

impl Strategy for Services {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn name_rule(&self) -> super::NameRule {
        crate::validation::name_is_dns1035_label
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({"loadBalancer": {}}));
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let (_, f) = field.split_once('.')?;
        Some(obj["spec"][f].as_str().unwrap_or("").to_string())
    }
}
