//! Strategic merge patch (`k8s.io/apimachinery/pkg/util/strategicpatch/patch.go`): a merge
//! patch whose lists merge element by element where the kind's patch metadata says so
//! ([`super::schema`]), with the directives kubectl sends: `$patch` (replace, delete, merge),
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.

use super::schema::{ListMerge, Type};
use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// What became of a map after its patch: kept (merged), or deleted by `$patch: delete`.
enum Outcome {
    Keep,
    Delete,
}

/// Applies `patch` (a JSON object) to `original` of type `ty`.
pub fn apply(original: &Value, patch: &Value, ty: &'static Type) -> ApiResult<Value> {
    let Some(patch) = patch.as_object() else {
        return Err(ApiError::bad_request("invalid strategic merge patch: the patch must be a JSON object"));
    };
    let mut doc = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match merge_map(&mut doc, patch, Some(ty))? {
        Outcome::Keep => Ok(Value::Object(doc)),
        Outcome::Delete => Err(ApiError::bad_request("invalid strategic merge patch: cannot delete the whole object")),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg.into())
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Option<&'static Type>,
) -> ApiResult<Outcome> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            *orig = Map::new();
            let rest: Map<String, Value> = patch.iter().filter(|(k, _)| *k != PATCH).map(clone_entry).collect();
            return merge_map(orig, &rest, ty);
        }
        Some(Value::String(d)) if d == "delete" => return Ok(Outcome::Delete),
        Some(Value::String(d)) if d == "merge" => {}
        Some(other) => return Err(bad(format!("invalid strategic merge patch: unknown patch type {other}"))),
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| bad("invalid strategic merge patch: $retainKeys must be a list of strings"))?
            .iter()
            .map(|k| {
                k.as_str().ok_or_else(|| bad("invalid strategic merge patch: $retainKeys must be a list of strings"))
            })
            .collect::<ApiResult<_>>()?;
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let gone = value.as_array().ok_or_else(|| bad(format!("{key}: expected a list")))?;
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let order = value.as_array().ok_or_else(|| bad(format!("{key}: expected a list")))?;
            orders.push((field.to_string(), order.clone()));
            continue;
        }
        if key.starts_with('$') {
            return Err(bad(format!("invalid strategic merge patch: unknown directive {key}")));
        }
        let field = ty.and_then(|t| t.field(key));
        let field_ty = field.and_then(|f| f.ty);
        if value.is_null() {
            orig.remove(key);
            continue;
        }
        let merged = match (orig.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => match merge_map(o, p, field_ty)? {
                Outcome::Keep => continue,
                Outcome::Delete => None,
            },
            (Some(Value::Array(o)), Value::Array(p)) => {
                merge_list(o, p, field.and_then(|f| f.list), field_ty)?;
                continue;
            }
            // New values, or a change of shape: merged into an empty value so directives inside apply.
            (_, Value::Object(p)) => {
                let mut fresh = Map::new();
                match merge_map(&mut fresh, p, field_ty)? {
                    Outcome::Keep => Some(Value::Object(fresh)),
                    Outcome::Delete => None,
                }
            }
            (_, Value::Array(p)) => {
                let mut fresh = Vec::new();
                merge_list(&mut fresh, p, field.and_then(|f| f.list), field_ty)?;
                Some(Value::Array(fresh))
            }
            (_, scalar) => Some(scalar.clone()),
        };
        match merged {
            Some(v) => orig.insert(key.clone(), v),
            None => orig.remove(key),
        };
    }
    for (field, order) in orders {
        let key = ty.and_then(|t| t.field(&field)).and_then(|f| f.list);
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            reorder(list, &order, key);
        }
    }
    Ok(Outcome::Keep)
}

fn clone_entry((k, v): (&String, &Value)) -> (String, Value) {
    (k.clone(), v.clone())
}

fn merge_list(
    orig: &mut Vec<Value>,
    patch: &[Value],
    strategy: Option<ListMerge>,
    elem_ty: Option<&'static Type>,
) -> ApiResult<()> {
    match strategy {
        None => {
            // An atomic list is replaced whole; its map elements lose any directives.
            *orig = patch.iter().map(|v| clean(v, elem_ty)).collect::<ApiResult<_>>()?;
        }
        Some(ListMerge::Primitive) => {
            for v in patch {
                if v.is_object() || v.is_array() {
                    return Err(bad("invalid strategic merge patch: expected a list of scalars"));
                }
                if !orig.contains(v) {
                    orig.push(v.clone());
                }
            }
        }
        Some(ListMerge::Key(key)) => {
            let replace = patch.iter().any(|v| v.get(PATCH).and_then(Value::as_str) == Some("replace"));
            if replace {
                orig.clear();
            }
            for item in patch {
                let Some(p) = item.as_object() else {
                    return Err(bad(format!(
                        "invalid strategic merge patch: list elements must be objects with a {key:?}"
                    )));
                };
                if replace && p.get(PATCH).and_then(Value::as_str) == Some("replace") {
                    continue;
                }
                let Some(id) = p.get(key) else {
                    return Err(bad(format!("map: {item} does not contain declared merge key: {key}")));
                };
                let at = orig.iter().position(|o| o.get(key) == Some(id));
                let delete = p.get(PATCH).and_then(Value::as_str) == Some("delete");
                match (at, delete) {
                    (Some(_), true) => orig.retain(|o| o.get(key) != Some(id)),
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Value::Object(o) = &mut orig[i]
                            && let Outcome::Delete = merge_map(o, p, elem_ty)?
                        {
                            orig.remove(i);
                        }
                    }
                    (None, false) => {
                        let mut fresh = Map::new();
                        if let Outcome::Keep = merge_map(&mut fresh, p, elem_ty)? {
                            orig.push(Value::Object(fresh));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A patch value placed where nothing merges with it, without its directives.
fn clean(v: &Value, ty: Option<&'static Type>) -> ApiResult<Value> {
    match v {
        Value::Object(p) => {
            let mut fresh = Map::new();
            merge_map(&mut fresh, p, ty)?;
            Ok(Value::Object(fresh))
        }
        other => Ok(other.clone()),
    }
}

/// `$setElementOrder`: the listed elements in the given order, the server's others after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: Option<ListMerge>) {
    let rank = |v: &Value| {
        order.iter().position(|o| match strategy {
            Some(ListMerge::Key(key)) => o.get(key).is_some() && o.get(key) == v.get(key),
            _ => o == v,
        })
    };
    let mut ranked: Vec<(usize, Value)> =
        list.drain(..).enumerate().map(|(i, v)| (rank(&v).unwrap_or(order.len() + i), v)).collect();
    ranked.sort_by_key(|(r, _)| *r);
    list.extend(ranked.into_iter().map(|(_, v)| v));
}

#[cfg(test)]
mod tests {
    use super::super::schema;
    use super::*;
    use serde_json::json;

    fn sm(kind: &str, orig: Value, patch: Value) -> Value {
        apply(&orig, &patch, schema::of_kind(kind)).expect("patch applies")
    }

    fn deployment(containers: Value) -> Value {
        json!({"kind": "Deployment", "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        let out = sm(
            "Deployment",
            deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn kubectl_rollout_restart_adds_an_annotation() {
        let patch = json!({"spec": {"template": {"metadata": {"annotations":
            {"kubectl.kubernetes.io/restartedAt": "2026-11-30T02:00:00Z"}}}}});
        let out = sm("Deployment", deployment(json!([{"name": "a", "image": "a:1"}])), patch);
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-11-30T02:00:00Z"
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "a:1");
    }

    #[test]
    fn delete_and_replace_directives() {
        let orig = deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let out = sm(
            "Deployment",
            orig.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "b", "image": "b:1"}]));
        let out = sm(
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "c", "image": "c"}]));
        let out = sm(
            "Service",
            json!({"spec": {"selector": {"a": "1", "b": "2"}}}),
            json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
    }

    #[test]
    fn nested_lists_merge_and_null_deletes() {
        let orig = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}});
        let out = sm(
            "Pod",
            orig,
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}]},
                   "metadata": {"labels": {"gone": null}}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}])
        );
    }

    #[test]
    fn untagged_lists_are_replaced_and_primitive_lists_merge() {
        let out = sm(
            "Pod",
            json!({"spec": {"tolerations": [{"key": "a"}]}}),
            json!({"spec": {"tolerations": [{"key": "b"}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
        let out = sm(
            "ConfigMap",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn service_ports_merge_by_port_and_status_conditions_by_type() {
        let out = sm(
            "Service",
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
        );
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]));
        let out = sm(
            "Pod",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(out["status"]["conditions"][0], json!({"type": "Ready", "status": "True"}));
        assert_eq!(out["status"]["conditions"][1]["type"], "PodScheduled");
    }

    #[test]
    fn retain_keys_and_element_order() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = sm("Deployment", orig, json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = sm(
            "Pod",
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}, {"name": "a", "image": "x"}]));
    }

    #[test]
    fn bad_patches_are_refused() {
        let ty = schema::of_kind("Pod");
        let missing_key = json!({"spec": {"containers": [{"image": "x"}]}});
        let e = apply(&json!({"spec": {"containers": [{"name": "a"}]}}), &missing_key, ty).expect_err("no merge key");
        assert!(e.message.contains("does not contain declared merge key: name"), "{}", e.message);
        assert!(apply(&json!({}), &json!({"$patch": "bogus"}), ty).is_err());
        assert!(apply(&json!({}), &json!({"$unknown": 1}), ty).is_err());
        assert!(apply(&json!({}), &json!([1]), ty).is_err());
    }
}
