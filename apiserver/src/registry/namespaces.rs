//! Namespaces (`pkg/registry/core/namespace`): the `kubernetes` finalizer, phase, the
//! `/finalize` subresource (`FinalizeREST`), and the namespaces that may never be deleted.

use super::{ResourceInfo, Scope, Strategy, Subresource};
use crate::error::{ApiError, ApiResult, FieldError};
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
    subresources: &[Subresource::Status, Subresource::Finalize],
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
        // `namespaceStrategy.PrepareForCreate`: the finalizers asked for, and always the one the
        // namespace controller removes.
        let mut finalizers: Vec<Value> = obj["spec"]["finalizers"].as_array().cloned().unwrap_or_default();
        if !finalizers.iter().any(|f| f == KUBERNETES) {
            finalizers.push(KUBERNETES.into());
        }
        obj["spec"] = json!({"finalizers": finalizers});
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

    /// `ValidateNamespace`: each of `spec.finalizers` is a qualified name or a standard one.
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_finalizers(obj, |_| "spec.finalizers".to_string())
    }

    /// `ValidateNamespaceFinalizeUpdate` (an ordinary update keeps the stored spec).
    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        validate_finalizers(new, |i| format!("spec.finalizers[{i}]"))
    }

    /// `ValidateNamespaceStatusUpdate`: the phase follows `deletionTimestamp`.
    fn validate_status_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        let phase = new["status"]["phase"].as_str().unwrap_or("");
        match super::meta::is_deleting(new) {
            false if phase != "Active" => {
                vec![FieldError::invalid("status.Phase", phase, "may only be 'Active' if `deletionTimestamp` is empty")]
            }
            true if phase != "Terminating" => vec![FieldError::invalid(
                "status.Phase",
                phase,
                "may only be 'Terminating' if `deletionTimestamp` is not empty",
            )],
            _ => Vec::new(),
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

/// The namespace controller's finalizer (`FinalizerKubernetes`).
const KUBERNETES: &str = "kubernetes";

/// `validateFinalizerName` over `spec.finalizers`: apimachinery's qualified-name rule, then the
/// built-in types' rule that a name without `/` is a standard finalizer.
fn validate_finalizers(obj: &Value, path: impl Fn(usize) -> String) -> Vec<FieldError> {
    const STANDARD: [&str; 3] = [KUBERNETES, "orphan", "foregroundDeletion"];
    let mut errs = Vec::new();
    for (i, f) in obj["spec"]["finalizers"].as_array().into_iter().flatten().enumerate() {
        let name = f.as_str().unwrap_or("");
        errs.extend(
            crate::validation::is_qualified_name(name).into_iter().map(|m| FieldError::invalid(path(i), name, m)),
        );
        if !name.contains('/') && !STANDARD.contains(&name) {
            errs.push(FieldError::invalid(
                path(i),
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn obj_name(obj: &Value) -> Option<String> {
    obj["metadata"]["name"].as_str().map(str::to_string)
}
