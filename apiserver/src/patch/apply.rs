//! Structured merge, the value side of server-side apply (`sigs.k8s.io/structured-merge-diff/typed`):
//! merging an applied configuration into a live object, the set of fields a configuration
//! names, the fields two objects differ in, and removing a set of fields from an object. Maps
//! merge by field, associative lists by their key fields, set lists by value; atomic maps and
//! lists are replaced whole (`schema.rs`). Ownership bookkeeping is in `registry/managed_fields.rs`.

pub mod fieldpath;
pub mod schema;

use crate::error::{ApiError, ApiResult};
use fieldpath::{PathDisplay, PathElement, Set, canonical};
use schema::{Key, Node, Shape};
use serde_json::{Map, Value};

/// Parses an `application/apply-patch+yaml` body (YAML, of which JSON is a subset) into the
/// applied configuration, which must be an object.
pub fn parse_config(body: &[u8]) -> ApiResult<Value> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text =
                std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
    };
    match value {
        Value::Object(_) => Ok(value),
        other => Err(ApiError::bad_request(format!(
            "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_type_name(&other)
        ))),
    }
}

fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null | Value::Object(_) => "object",
    }
}

/// A malformed configuration (a list item without its key, duplicate keys).
fn bad_config(path: &[PathElement], msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("failed to create typed patch object: {}: {msg}", PathDisplay(path)))
}

/// The path element of an associative list item: its key fields (defaults filling omitted ones).
fn item_key(item: &Value, keys: &[Key]) -> Result<PathElement, String> {
    let Some(m) = item.as_object() else {
        return Err("expected an object in an associative list".into());
    };
    let mut k = Map::new();
    for key in keys {
        match m.get(key.name).filter(|v| !v.is_null()) {
            Some(v) => {
                k.insert(key.name.into(), v.clone());
            }
            None => match key.default {
                Some(d) => {
                    k.insert(key.name.into(), Value::from(d));
                }
                None => {
                    return Err(format!(
                        "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                        key.name
                    ));
                }
            },
        }
    }
    Ok(PathElement::Key(canonical(&Value::Object(k))))
}

/// Keys of a configuration's list, refusing missing and duplicate keys.
fn config_keys<'a>(items: &'a [Value], keys: &[Key], path: &[PathElement]) -> ApiResult<Vec<(PathElement, &'a Value)>> {
    let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pe = item_key(item, keys).map_err(|e| bad_config(path, format!("element {i}: {e}")))?;
        if out.iter().any(|(k, _)| *k == pe) {
            return Err(bad_config(path, format!("duplicate entries for key {}", PathDisplay(&[pe]))));
        }
        out.push((pe, item));
    }
    Ok(out)
}

/// A live list's items by key; an item whose key cannot be made is known by its index.
fn live_keys<'a>(items: &'a [Value], keys: &[Key]) -> Vec<(PathElement, &'a Value)> {
    items.iter().enumerate().map(|(i, v)| (item_key(v, keys).unwrap_or(PathElement::Index(i)), v)).collect()
}

/// A configuration value with its `null`s dropped (a `null` asks for the field to be absent).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The live object with the configuration merged in (`TypedValue.Merge`).
pub fn merge(live: &Value, config: &Value, root: &'static Node) -> ApiResult<Value> {
    merge_value(Some(live), config, Shape::Struct(root), &mut Vec::new())
}

fn merge_value(live: Option<&Value>, cfg: &Value, shape: Shape, path: &mut Vec<PathElement>) -> ApiResult<Value> {
    match (shape, live, cfg) {
        (Shape::Struct(node), Some(Value::Object(l)), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                let merged = merge_value(l.get(k), cv, node.field(k, cv), path)?;
                path.pop();
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Shape::Struct(node), _, Value::Object(c)) => {
            // Nothing live to merge with, but nested lists still need valid keys.
            for (k, cv) in c {
                path.push(PathElement::Field(k.clone()));
                merge_value(None, cv, node.field(k, cv), path)?;
                path.pop();
            }
            Ok(without_nulls(cfg))
        }
        (Shape::ListMap(keys, node), live, Value::Array(c)) => {
            let cfg_items = config_keys(c, keys, path)?;
            let live_items = match live {
                Some(Value::Array(l)) => live_keys(l, keys),
                _ => Vec::new(),
            };
            let mut out = Vec::with_capacity(live_items.len().max(cfg_items.len()));
            for (pe, li) in &live_items {
                match cfg_items.iter().find(|(k, _)| k == pe) {
                    Some((_, ci)) => {
                        path.push(pe.clone());
                        out.push(merge_value(Some(li), ci, Shape::Struct(node), path)?);
                        path.pop();
                    }
                    None => out.push((*li).clone()),
                }
            }
            for (pe, ci) in &cfg_items {
                if !live_items.iter().any(|(k, _)| k == pe) {
                    path.push(pe.clone());
                    out.push(merge_value(None, ci, Shape::Struct(node), path)?);
                    path.pop();
                }
            }
            Ok(Value::Array(out))
        }
        (Shape::ListSet, Some(Value::Array(l)), Value::Array(c)) => {
            let mut out = l.clone();
            for v in c {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(without_nulls(cfg)),
    }
}

/// The fields a configuration sets (`TypedValue.ToFieldSet`): leaves, atomic values, list
/// items, and fields set to `null` or `{}`.
pub fn field_set(config: &Value, root: &'static Node) -> ApiResult<Set> {
    let mut set = Set::new();
    fields_of(config, Shape::Struct(root), &mut Vec::new(), &mut set)?;
    set.member = false;
    Ok(set)
}

fn fields_of(v: &Value, shape: Shape, path: &mut Vec<PathElement>, set: &mut Set) -> ApiResult<()> {
    match (shape, v) {
        (Shape::Struct(node), Value::Object(m)) => {
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                fields_of(cv, node.field(k, cv), path, set)?;
                if cv.is_null() || cv.as_object().is_some_and(Map::is_empty) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        (Shape::ListMap(keys, node), Value::Array(items)) => {
            for (pe, item) in config_keys(items, keys, path)? {
                path.push(pe);
                fields_of(item, Shape::Struct(node), path, set)?;
                set.insert(path);
                path.pop();
            }
        }
        (Shape::ListSet, Value::Array(items)) => {
            for item in items {
                path.push(PathElement::Value(canonical(item)));
                set.insert(path);
                path.pop();
            }
        }
        (_, Value::Null) => {}
        _ => set.insert(path),
    }
    Ok(())
}

/// How two versions of an object differ, as sets of paths (`typed.Comparison`).
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

impl Comparison {
    /// Fields given a value: added or modified.
    pub fn changed(&self) -> Set {
        self.added.union(&self.modified)
    }

    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// The differences from `old` to `new` (`TypedValue.Compare`).
pub fn compare(old: &Value, new: &Value, root: &'static Node) -> Comparison {
    let mut c = Comparison::default();
    compare_value(Some(old), Some(new), Shape::Struct(root), &mut Vec::new(), &mut c);
    for s in [&mut c.added, &mut c.modified, &mut c.removed] {
        s.member = false;
    }
    c
}

fn empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn compare_value(
    old: Option<&Value>,
    new: Option<&Value>,
    shape: Shape,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    if old.is_none() && new.is_none() {
        return;
    }
    let kind_ok = |pred: fn(&Value) -> bool| old.is_none_or(pred) && new.is_none_or(pred);
    let container = match shape {
        Shape::Struct(_) => kind_ok(Value::is_object),
        Shape::ListMap(..) | Shape::ListSet => kind_ok(Value::is_array),
        Shape::AtomicMap | Shape::AtomicList => false,
    } && !(empty_container(old) && empty_container(new));
    if !container {
        match (old, new) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(o), Some(n)) if o != n => c.modified.insert(path),
            _ => {}
        }
        return;
    }
    match (old, new) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
    match shape {
        Shape::Struct(node) => compare_fields(old, new, node, path, c),
        Shape::ListMap(keys, node) => {
            let o = old.and_then(Value::as_array).map(|a| live_keys(a, keys)).unwrap_or_default();
            let n = new.and_then(Value::as_array).map(|a| live_keys(a, keys)).unwrap_or_default();
            for (pe, ov) in &o {
                let nv = n.iter().find(|(k, _)| k == pe).map(|(_, v)| *v);
                path.push(pe.clone());
                compare_item(Some(ov), nv, node, path, c);
                path.pop();
            }
            for (pe, nv) in &n {
                if !o.iter().any(|(k, _)| k == pe) {
                    path.push(pe.clone());
                    compare_item(None, Some(nv), node, path, c);
                    path.pop();
                }
            }
        }
        Shape::ListSet => {
            let o: &[Value] = old.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let n: &[Value] = new.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for v in o.iter().filter(|v| !n.contains(v)) {
                path.push(PathElement::Value(canonical(v)));
                c.removed.insert(path);
                path.pop();
            }
            for v in n.iter().filter(|v| !o.contains(v)) {
                path.push(PathElement::Value(canonical(v)));
                c.added.insert(path);
                path.pop();
            }
        }
        Shape::AtomicMap | Shape::AtomicList => {}
    }
}

/// A list item: the item itself is added or removed as a whole, then its fields compared.
fn compare_item(
    old: Option<&Value>,
    new: Option<&Value>,
    node: &'static Node,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    match (old, new) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
    compare_fields(old, new, node, path, c);
}

/// The fields of two versions of a struct (either may be absent), compared one by one.
fn compare_fields(
    old: Option<&Value>,
    new: Option<&Value>,
    node: &'static Node,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let empty = Map::new();
    let o = old.and_then(Value::as_object).unwrap_or(&empty);
    let n = new.and_then(Value::as_object).unwrap_or(&empty);
    for (k, ov) in o {
        path.push(PathElement::Field(k.clone()));
        compare_value(Some(ov), n.get(k), node.field(k, ov), path, c);
        path.pop();
    }
    for (k, nv) in n {
        if !o.contains_key(k) {
            path.push(PathElement::Field(k.clone()));
            compare_value(None, Some(nv), node.field(k, nv), path, c);
            path.pop();
        }
    }
}

/// Removes the members of `set` from `obj` (`TypedValue.RemoveItems`); a map or list left empty
/// by a removal goes too.
pub fn remove_items(obj: &mut Value, set: &Set, root: &'static Node) {
    remove_in(obj, set, Shape::Struct(root));
}

/// Returns whether `v` was emptied by the removal.
fn remove_in(v: &mut Value, set: &Set, shape: Shape) -> bool {
    match (shape, v) {
        (Shape::Struct(node), Value::Object(m)) => {
            for (pe, sub) in &set.children {
                let PathElement::Field(k) = pe else { continue };
                if sub.member {
                    m.remove(k);
                } else if let Some(child) = m.get_mut(k) {
                    let shape = node.field(k, child);
                    if remove_in(child, sub, shape) {
                        m.remove(k);
                    }
                }
            }
            m.is_empty()
        }
        (Shape::ListMap(keys, node), Value::Array(items)) => {
            let mut keep = Vec::with_capacity(items.len());
            for (i, mut item) in std::mem::take(items).into_iter().enumerate() {
                let pe = item_key(&item, keys).unwrap_or(PathElement::Index(i));
                match set.child(&pe) {
                    Some(sub) if sub.member => continue,
                    Some(sub) => {
                        remove_in(&mut item, sub, Shape::Struct(node));
                        keep.push(item);
                    }
                    None => keep.push(item),
                }
            }
            *items = keep;
            items.is_empty()
        }
        (Shape::ListSet, Value::Array(items)) => {
            items.retain(|v| !set.child(&PathElement::Value(canonical(v))).is_some_and(|s| s.member));
            items.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
