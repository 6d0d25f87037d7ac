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

/// A column shorthand for the per-kind tables (descriptions are upstream's short ones).
pub const fn col(name: &'static str, description: &'static str, priority: u8) -> Column {
    Column { name, kind: "string", format: "", description, priority }
}

/// The first column of every table: the object's name.
pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
/// The `Age` column.
pub const AGE: Column = Column {
    name: "Age",
    kind: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
};

/// `translateTimestampSince`: the object's age as kubectl prints it.
pub fn age(obj: &Value) -> Value {
    let Some(ts) = obj["metadata"]["creationTimestamp"].as_str() else { return "<unknown>".into() };
    let Ok(t) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) else {
        return "<unknown>".into();
    };
    human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds()).into()
}

/// `duration.HumanDuration` (apimachinery): `5m10s`, `3h`, `2d4h`, `2y333d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return if s % 60 == 0 { format!("{minutes}m") } else { format!("{minutes}m{}s", s % 60) };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return if minutes % 60 == 0 { format!("{hours}h") } else { format!("{hours}h{}m", minutes % 60) };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return if hours % 24 == 0 { format!("{}d", hours / 24) } else { format!("{}d{}h", hours / 24, hours % 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// `labels.FormatLabels`: `a=b,c=d` sorted by key, or `<none>`.
pub fn format_labels(map: &Value) -> String {
    let Some(m) = map.as_object().filter(|m| !m.is_empty()) else { return "<none>".into() };
    let mut pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    pairs.join(",")
}

/// The container names and images of a pod template, comma-separated.
pub fn containers(template: &Value) -> (String, String) {
    let cs: Vec<&Value> = template["spec"]["containers"].as_array().into_iter().flatten().collect();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

/// `metav1.FormatLabelSelector`, or `<none>`.
pub fn format_selector(sel: &Value) -> String {
    match crate::selector::LabelSelector::from_label_selector_json(sel) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (310, "5m10s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (52 * 3600, "2d4h"),
            (10 * 86400, "10d"),
            (2 * 365 * 86400 + 333 * 86400, "2y333d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
        assert_eq!(format_labels(&serde_json::json!({"b": "2", "a": "1"})), "a=1,b=2");
        assert_eq!(format_labels(&Value::Null), "<none>");
    }
}
