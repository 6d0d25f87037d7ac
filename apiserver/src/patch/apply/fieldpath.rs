//! Sets of field paths, the unit of field ownership in server-side apply
//! (`sigs.k8s.io/structured-merge-diff/fieldpath`), and their `FieldsV1` encoding in
//! `metadata.managedFields[].fieldsV1`: `f:<field>`, `k:<key JSON>`, `v:<value JSON>`, `i:<index>`,
//! with `.` marking a path that is itself in the set and also has children.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// One step of a path: a field of a map, a list item by its key fields, a set item by its
/// value, or a list item by index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    /// The key fields of an associative list item, as compact JSON with sorted names.
    Key(String),
    /// A scalar item of a set list, as compact JSON.
    Value(String),
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key of this element.
    fn encode(&self) -> String {
        match self {
            Self::Field(f) => format!("f:{f}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Self, String> {
        let (tag, rest) = s.split_once(':').ok_or_else(|| format!("unexpected key {s:?}"))?;
        match tag {
            "f" => Ok(Self::Field(rest.to_string())),
            "k" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| format!("key {s:?}: {e}"))?;
                if !v.is_object() {
                    return Err(format!("key {s:?}: not an object"));
                }
                Ok(Self::Key(canonical(&v)))
            }
            "v" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| format!("value {s:?}: {e}"))?;
                Ok(Self::Value(canonical(&v)))
            }
            "i" => rest.parse().map(Self::Index).map_err(|_| format!("index {s:?}: not a number")),
            _ => Err(format!("unexpected key {s:?}")),
        }
    }
}

/// Compact JSON with object members sorted by name, so equal keys encode equally.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

/// A path as upstream prints it in conflicts: `.spec.ports[port=80,protocol="TCP"].targetPort`.
pub struct PathDisplay<'a>(pub &'a [PathElement]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in self.0 {
            match pe {
                PathElement::Field(name) => write!(f, ".{name}")?,
                PathElement::Key(k) => {
                    let fields: Vec<String> = match serde_json::from_str::<Value>(k) {
                        Ok(Value::Object(m)) => m.iter().map(|(n, v)| format!("{n}={v}")).collect(),
                        _ => vec![k.clone()],
                    };
                    write!(f, "[{}]", fields.join(","))?
                }
                PathElement::Value(v) => write!(f, "[={v}]")?,
                PathElement::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A set of paths as a tree: each node is a path, `member` when the path itself is in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    pub member: bool,
    pub children: BTreeMap<PathElement, Set>,
}

impl Set {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(Set::is_empty)
    }

    /// The node at `path`, created if missing.
    pub fn node_mut(&mut self, path: &[PathElement]) -> &mut Set {
        let mut node = self;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        node
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        self.node_mut(path).member = true;
    }

    pub fn child(&self, pe: &PathElement) -> Option<&Set> {
        self.children.get(pe)
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for pe in path {
            match node.children.get(pe) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.member
    }

    fn prune(&mut self) {
        self.children.retain(|_, c| {
            c.prune();
            !c.is_empty()
        });
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.union_in(other);
        out
    }

    pub fn union_in(&mut self, other: &Set) {
        self.member |= other.member;
        for (pe, c) in &other.children {
            self.children.entry(pe.clone()).or_default().union_in(c);
        }
    }

    /// Paths of `self` not in `other` (a member of `other` does not remove `self`'s children).
    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set { member: self.member && !other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Paths of `self` not in `other`, where a member of `other` also removes everything below it.
    pub fn recursive_difference(&self, other: &Set) -> Set {
        let mut out = Set { member: self.member && !other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) if o.member => continue,
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set { member: self.member && other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, parents before children, in element order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        fn walk(s: &Set, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
            if s.member {
                out.push(prefix.clone());
            }
            for (pe, c) in &s.children {
                prefix.push(pe.clone());
                walk(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Named fields with children count as members (`EnsureNamedFieldsAreMembers`), so that
    /// whoever owns something below a field also keeps the field.
    pub fn with_fields_as_members(&self) -> Set {
        let mut out = self.clone();
        fn walk(s: &mut Set) {
            for (pe, c) in s.children.iter_mut() {
                if matches!(pe, PathElement::Field(_)) && !c.children.is_empty() {
                    c.member = true;
                }
                walk(c);
            }
        }
        walk(&mut out);
        out
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            if !c.is_empty() {
                m.insert(pe.encode(), c.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<Set, String> {
        fn node(v: &Value) -> Result<Set, String> {
            let m = v.as_object().ok_or_else(|| "expected an object".to_string())?;
            let mut s = Set { member: m.is_empty(), children: BTreeMap::new() };
            for (k, c) in m {
                if k == "." {
                    s.member = true;
                    continue;
                }
                s.children.insert(PathElement::decode(k)?, node(c)?);
            }
            Ok(s)
        }
        let mut s = node(v)?;
        s.member = false; // the root is the object itself, never owned as a whole
        s.prune();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                       "f:finalizers": {"v:\"a\"": {}}}});
        let s = Set::from_fields_v1(&v).expect("parses");
        assert!(s.has(&[f("metadata"), f("labels")]));
        assert!(!s.has(&[f("metadata")]));
        assert!(s.has(&[f("spec"), f("ports"), PathElement::Key(r#"{"port":80,"protocol":"TCP"}"#.into()), f("port")]));
        let back = s.to_fields_v1();
        assert_eq!(Set::from_fields_v1(&back).expect("parses again"), s);
        assert_eq!(back["f:metadata"]["f:labels"]["."], json!({}));
    }

    #[test]
    fn set_algebra_and_display() {
        let mut a = Set::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = Set::new();
        b.insert(&[f("spec"), f("replicas")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("spec"), f("replicas")]]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("spec"), f("paused")]]);
        let mut spec = Set::new();
        spec.insert(&[f("spec")]);
        assert!(a.recursive_difference(&spec).is_empty());
        assert!(!a.difference(&spec).is_empty());
        let key = PathElement::Key(canonical(&json!({"protocol": "TCP", "port": 80})));
        let p = [f("spec"), f("ports"), key, f("targetPort")];
        assert_eq!(PathDisplay(&p).to_string(), r#".spec.ports[port=80,protocol="TCP"].targetPort"#);
    }
}
