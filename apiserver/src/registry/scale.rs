//! The `/scale` subresource (`autoscaling/v1` `Scale`) over `.spec.replicas` of any kind that
//! serves it (`pkg/registry/apps/deployment/storage`'s `ScaleREST`).

use super::meta::{self, meta_str};
use super::options::{PatchType, WriteOptions};
use super::{Registry, Resource};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::patch;
use crate::selector::LabelSelector;
use serde_json::{Value, json};

impl Registry {
    /// GET `/scale`.
    pub fn get_scale(&self, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        Ok(scale_of(&self.get(r, ns, name)?))
    }

    /// PUT `/scale`: sets `.spec.replicas` from a `Scale`.
    pub async fn update_scale(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let rv = meta_str(&scale, "resourceVersion").map(meta::parse_resource_version).transpose()?;
        let replicas = replicas_of(&scale, name)?;
        let (obj, _) = self
            .update_with(r, ns, name, opts, None, rv, false, Some("scale"), |current| {
                let mut obj = current.clone();
                obj["spec"]["replicas"] = replicas.into();
                Ok(obj)
            })
            .await?;
        Ok(scale_of(&obj))
    }

    /// PATCH `/scale`: the patch applies to the `Scale`, whose replicas then update the object.
    pub async fn patch_scale(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let patch = patch::Patch::parse(patch_type, body, "Scale")?;
        let (obj, _) = self
            .update_with(r, ns, name, opts, None, None, false, Some("scale"), |current| {
                let scale = patch.apply(&scale_of(current))?;
                let replicas = replicas_of(&scale, name)?;
                let mut obj = current.clone();
                obj["spec"]["replicas"] = replicas.into();
                Ok(obj)
            })
            .await?;
        Ok(scale_of(&obj))
    }
}

fn replicas_of(scale: &Value, name: &str) -> ApiResult<i64> {
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
        ));
    }
    Ok(replicas)
}

/// The `Scale` view of an object.
fn scale_of(obj: &Value) -> Value {
    let m = meta::meta(obj);
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let metadata: serde_json::Map<String, Value> =
        m.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    })
}

/// A `metav1.LabelSelector` as selector text (`metav1.FormatLabelSelector`).
fn selector_string(sel: &Value) -> String {
    LabelSelector::from_label_selector_json(sel).map(|s| s.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_text_matches_format_label_selector() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["x", "y"]}]});
        assert_eq!(selector_string(&sel), "a=1,b=2,t in (x,y)");
    }
}
