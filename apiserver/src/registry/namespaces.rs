//! Namespaces (`pkg/registry/core/namespace`): the `kubernetes` finalizer, phase, and the
//! namespaces that may never be deleted.

use super::{ResourceInfo, Scope, Strategy, Subresource};
use crate::error::{ApiError, ApiResult};
use serde_json::{Value, json};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    categories: &[],
    scope: Scope::Cluster,
    subresources: &[Subresource::Status],
};

/// Namespaces the `NamespaceLifecycle` admission refuses to delete.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

pub struct Namespaces;

impl Strategy for Namespaces {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn name_rule(&self) -> super::NameRule {
        crate::validation::name_is_dns_label
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        // `namespaceStrategy.PrepareForCreate`: the finalizer the namespace controller removes.
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        let name = obj_name(obj);
        let labels = super::meta::meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
        if let (Value::Object(l), Some(name)) = (labels, name) {
            l.insert("kubernetes.io/metadata.name".into(), name.into());
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        new["spec"] = old["spec"].clone();
        new["status"] = old["status"].clone();
        if let Some(name) = obj_name(old) {
            let labels = super::meta::meta_mut(new).entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), name.into());
            }
        }
    }

    fn before_delete(&self, name: &str) -> ApiResult<()> {
        if IMMORTAL.contains(&name) {
            return Err(ApiError::forbidden(INFO.group_resource(), name, "this namespace may not be deleted"));
        }
        Ok(())
    }

    fn prepare_for_delete(&self, obj: &mut Value) {
        obj["status"]["phase"] = "Terminating".into();
    }

    fn pending_finalization(&self, obj: &Value) -> bool {
        obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "status.phase").then(|| obj["status"]["phase"].as_str().unwrap_or("").to_string())
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 3] =
            [super::table::NAME, super::table::col("Status", "The status of the namespace", 0), super::table::AGE];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        vec![obj["metadata"]["name"].clone(), obj["status"]["phase"].clone(), super::table::age(obj)]
    }
}

fn obj_name(obj: &Value) -> Option<String> {
    obj["metadata"]["name"].as_str().map(str::to_string)
}
