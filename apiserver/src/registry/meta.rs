//! Object metadata as the generic store handles it (`rest.BeforeCreate`/`BeforeUpdate`,
//! `FillObjectMetaSystemFields`): system fields, generated names, timestamps, and the stored form.

use crate::error::{ApiError, ApiResult};
use crate::storage::{Bytes, KeyValue, Revision};
use rand::Rng;
use serde_json::{Map, Value};

/// `metadata` of an object (an empty map when absent or not an object).
pub fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata").and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata` of an object, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else { unreachable!("made an object above") };
    let m = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    meta(obj).get("labels").and_then(Value::as_object)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// The current time as Kubernetes writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt).unwrap_or_default()
}

/// `generateName` + five characters (`names.SimpleNameGenerator`).
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    const MAX_PREFIX: usize = 63 - 5;
    let prefix = if prefix.len() > MAX_PREFIX { &prefix[..MAX_PREFIX] } else { prefix };
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{suffix}")
}

/// System fields of a new object (`FillObjectMetaSystemFields` + `BeforeCreate`).
pub fn fill_create(obj: &mut Value, tracks_generation: bool) {
    let m = meta_mut(obj);
    m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("creationTimestamp".into(), now().into());
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("selfLink");
    m.remove("resourceVersion");
    if tracks_generation {
        m.insert("generation".into(), 1.into());
    } else {
        m.remove("generation");
    }
}

/// What an update may not change (`BeforeUpdate`): uid if omitted, creation and deletion
/// timestamps, generation (bumped here when the spec changed and the kind tracks it).
pub fn keep_on_update(new: &mut Value, old: &Value, tracks_generation: bool) {
    let old_meta = meta(old).clone();
    let spec_changed = new.get("spec") != old.get("spec");
    let m = meta_mut(new);
    if m.get("uid").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(uid) = old_meta.get("uid")
    {
        m.insert("uid".into(), uid.clone());
    }
    for field in ["creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old_meta.get(field) {
            Some(v) if !v.is_null() => {
                m.insert(field.into(), v.clone());
            }
            _ => {
                m.remove(field);
            }
        }
    }
    m.remove("selfLink");
    if tracks_generation {
        let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        m.insert("generation".into(), (if spec_changed { generation + 1 } else { generation }).into());
    } else if let Some(g) = old_meta.get("generation") {
        m.insert("generation".into(), g.clone());
    } else {
        m.remove("generation");
    }
}

/// An object as stored: JSON without `resourceVersion` (the revision is the key's, as in etcd).
pub fn encode(obj: &Value) -> ApiResult<Bytes> {
    let mut obj = obj.clone();
    meta_mut(&mut obj).remove("resourceVersion");
    serde_json::to_vec(&obj).map(Bytes::from).map_err(ApiError::internal)
}

/// A stored object with its `resourceVersion` set from the revision that wrote it.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    decode_bytes(&kv.value, kv.mod_revision)
}

pub fn decode_bytes(bytes: &[u8], revision: Revision) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(bytes).map_err(ApiError::internal)?;
    set_resource_version(&mut obj, revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    meta_mut(obj).insert("resourceVersion".into(), revision.to_string().into());
}

/// Parses a client's `resourceVersion` (`APIObjectVersioner.ParseResourceVersion`).
pub fn parse_resource_version(rv: &str) -> ApiResult<Revision> {
    rv.parse::<Revision>().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_names_have_five_safe_characters() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(n[4..].chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(generate_name(&"a".repeat(70)).len(), 63);
    }

    #[test]
    fn update_keeps_system_fields_and_bumps_generation_on_spec_change() {
        let old = json!({"metadata": {"uid": "u1", "creationTimestamp": "t", "generation": 3}, "spec": {"a": 1}});
        let mut same = json!({"metadata": {"creationTimestamp": "other"}, "spec": {"a": 1}});
        keep_on_update(&mut same, &old, true);
        assert_eq!(same["metadata"]["uid"], "u1");
        assert_eq!(same["metadata"]["creationTimestamp"], "t");
        assert_eq!(same["metadata"]["generation"], 3);
        let mut changed = json!({"metadata": {"generation": 99}, "spec": {"a": 2}});
        keep_on_update(&mut changed, &old, true);
        assert_eq!(changed["metadata"]["generation"], 4);
    }

    #[test]
    fn stored_form_has_no_resource_version() {
        let obj = json!({"metadata": {"name": "x", "resourceVersion": "7"}});
        let bytes = encode(&obj).expect("encodes");
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        assert_eq!(decode_bytes(&bytes, 9).expect("decodes")["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn resource_versions_must_be_numbers() {
        assert_eq!(parse_resource_version("42").ok(), Some(42));
        let e = parse_resource_version("abc").expect_err("not a number");
        assert_eq!(e.code, 400);
    }
}
