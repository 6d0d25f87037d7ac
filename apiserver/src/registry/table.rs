//! Server-side printing (`as=Table`): column definitions and the default row
//! (`apiserver/pkg/registry/rest/table.go`, `defaultTableConvertor`).

use serde_json::{Value, json};

/// One column of a kind's table: name, type, format, priority (0 shown, 1 only with `-o wide`).
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

pub type Columns = [Column];

/// Upstream's default: the name and the creation time.
pub static DEFAULT_COLUMNS: [Column; 2] = [
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        priority: 0,
    },
    Column {
        name: "Created At",
        kind: "date",
        format: "",
        description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        priority: 0,
    },
];

pub fn default_row(obj: &Value) -> Vec<Value> {
    let m = &obj["metadata"];
    vec![m["name"].clone(), m["creationTimestamp"].clone()]
}

/// The `columnDefinitions` of a table.
pub fn definitions(columns: &Columns) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
            })
            .collect(),
    )
}

/// The `PartialObjectMetadata` a row carries, so kubectl can show namespaces and labels.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
}
