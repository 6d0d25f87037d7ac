//! The `pods/binding` subresource: POST a `Binding` to assign a pod to a node
//! (`pkg/registry/core/pod/storage/storage.go`'s `BindingREST`, `ValidatePodBinding`).

use super::meta::{self, meta_str};
use super::options::WriteOptions;
use super::{Registry, Resource, Subresource};
use crate::error::{ApiError, ApiResult, FieldError, GroupResource};
use serde_json::{Map, Value, json};

const BINDING: GroupResource<'static> = GroupResource { group: "", resource: "pods/binding" };

impl Registry {
    /// POST `/binding`: sets `spec.nodeName` of an unassigned pod and its `PodScheduled`
    /// condition in one write; answers `201` with a `Status` of `Success`.
    pub async fn bind(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        binding: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        check_binding(&binding, name)?;
        let node = binding["target"]["name"].as_str().unwrap_or_default().to_string();
        let uid = meta_str(&binding, "uid").map(str::to_string);
        let rv = meta_str(&binding, "resourceVersion").map(str::to_string);
        let annotations = meta::meta(&binding).get("annotations").and_then(Value::as_object).cloned();
        let pods = r.info().group_resource();
        self.update_with(r, ns, name, opts, Some(Subresource::Binding), None, false, None, |current| {
            let actual_uid = meta_str(current, "uid").unwrap_or("");
            if let Some(uid) = uid.as_deref().filter(|u| *u != actual_uid) {
                let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual_uid}");
                return Err(ApiError::conflict(pods, name, &why));
            }
            let actual_rv = meta_str(current, "resourceVersion").unwrap_or("");
            if let Some(rv) = rv.as_deref().filter(|v| *v != actual_rv) {
                let why = format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual_rv}"
                );
                return Err(ApiError::conflict(pods, name, &why));
            }
            if meta::is_deleting(current) {
                let why = format!("pod {name} is being deleted, cannot be assigned to a host");
                return Err(ApiError::conflict(BINDING, name, &why));
            }
            if let Some(assigned) = current["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                let why = format!("pod {name} is already assigned to node {assigned:?}");
                return Err(ApiError::conflict(BINDING, name, &why));
            }
            if current["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty()) {
                let why = format!("pod {name} has non-empty .spec.schedulingGates");
                return Err(ApiError::conflict(BINDING, name, &why));
            }
            let mut pod = current.clone();
            // Unconditional from here on: a concurrent write retries the change, as `GuaranteedUpdate`.
            meta::meta_mut(&mut pod).remove("resourceVersion");
            pod["spec"]["nodeName"] = node.clone().into();
            if let Some(extra) = &annotations {
                let m = meta::meta_mut(&mut pod);
                let target = m.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(target) = target {
                    target.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            set_scheduled(&mut pod);
            Ok(pod)
        })
        .await?;
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))
    }
}

/// The body must be a `Binding` for this pod with a valid target (`ValidatePodBinding`).
/// Upstream answers a bad target with a 500 carrying the field errors; this answers 422 Invalid
/// with the same field paths.
fn check_binding(binding: &Value, name: &str) -> ApiResult<()> {
    if !binding.is_object() {
        return Err(ApiError::bad_request("the body of the request is not a Binding object"));
    }
    if let Some(kind) = binding.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty() && *k != "Binding") {
        return Err(ApiError::bad_request(format!("not a Binding object: kind {kind}")));
    }
    if meta_str(binding, "name") != Some(name) {
        return Err(ApiError::bad_request("name in URL does not match name in Binding object"));
    }
    let target = &binding["target"];
    let mut errs = Vec::new();
    if let Some(kind) = target["kind"].as_str().filter(|k| !k.is_empty() && *k != "Node") {
        errs.push(FieldError::not_supported("target.kind", kind, &["Node", "<empty>"]));
    }
    if target["name"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldError::required("target.name", ""));
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid("", "Binding", name, errs)) }
}

/// `UpdatePodCondition(PodScheduled=True)`: the condition is replaced, keeping its transition
/// time when its status does not change.
fn set_scheduled(pod: &mut Value) {
    let Value::Object(obj) = pod else { return };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    let conditions = &mut status["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Value::Array(list) = conditions else { return };
    let old = list.iter().position(|c| c["type"] == "PodScheduled");
    let transition = match old {
        Some(i) if list[i]["status"] == "True" => list[i]["lastTransitionTime"].clone(),
        _ => meta::now().into(),
    };
    let cond =
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": transition});
    match old {
        Some(i) => list[i] = cond,
        None => list.push(cond),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bindings_are_refused() {
        let ok = json!({"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n"}});
        assert!(check_binding(&ok, "p").is_ok());
        let other = json!({"metadata": {"name": "q"}, "target": {"name": "n"}});
        assert_eq!(check_binding(&other, "p").map_err(|e| e.code), Err(400));
        let e = check_binding(&json!({"metadata": {"name": "p"}, "target": {"kind": "Pod"}}), "p").err();
        let e = e.expect("invalid");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Binding \"p\" is invalid: [target.kind: Unsupported value: \"Pod\": supported values: \"Node\", \"<empty>\", target.name: Required value]"
        );
    }

    #[test]
    fn scheduled_condition_keeps_its_transition_time() {
        let mut pod = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z", "reason": "x"}
        ]}});
        set_scheduled(&mut pod);
        let c = &pod["status"]["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert!(c.get("reason").is_none());
        let mut pod = json!({"status": {"phase": "Pending"}});
        set_scheduled(&mut pod);
        assert_eq!(pod["status"]["conditions"][0]["status"], "True");
    }
}
