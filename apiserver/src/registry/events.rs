//! Events: core/v1 and `events.k8s.io/v1` (`pkg/registry/core/event`, `pkg/registry/events`).
//! As upstream, there is one store of Events, kept as core/v1; `events.k8s.io/v1` is a view of
//! it (`pkg/apis/events/v1/conversion.go`), so an Event written through either API is read,
//! listed and watched through both (`kubectl describe` shows what a kube-rs `Recorder` wrote).

use super::{ResourceInfo, Scope, Strategy};
use serde_json::{Map, Value};

/// Fields whose names differ: (core/v1, events.k8s.io/v1). The rest are the same in both.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Renames the fields of `obj` from one column of [`RENAMED`] to the other, and sets its type.
fn convert(obj: Value, api_version: &str, to_core: bool) -> Value {
    let Value::Object(fields) = obj else { return obj };
    let mut out = Map::with_capacity(fields.len());
    for (k, v) in fields {
        let renamed = RENAMED.iter().find_map(|(core, events)| match to_core {
            true if k == *events => Some(*core),
            false if k == *core => Some(*events),
            _ => None,
        });
        out.insert(renamed.map(str::to_string).unwrap_or(k), v);
    }
    out.insert("apiVersion".into(), api_version.into());
    out.insert("kind".into(), "Event".into());
    Value::Object(out)
}

pub static CORE_INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

/// core/v1 Events.
pub struct CoreEvents;

impl Strategy for CoreEvents {
    fn info(&self) -> &'static ResourceInfo {
        &CORE_INFO
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        Some(match field {
            "source" => text(&obj["source"]["component"]),
            "reason" | "type" | "reportingComponent" => text(&obj[field]),
            _ => text(&obj["involvedObject"][field.strip_prefix("involvedObject.")?]),
        })
    }
}

/// `events.k8s.io/v1` Events.
pub struct Events;

impl Strategy for Events {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn stored_as(&self) -> Option<&'static ResourceInfo> {
        Some(&CORE_INFO)
    }

    fn stored_form(&self, obj: Value) -> Value {
        convert(obj, "v1", true)
    }

    fn served_form(&self, obj: Value) -> Value {
        convert(obj, "events.k8s.io/v1", false)
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
            "reportingController",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        Some(match field {
            "reason" | "type" | "reportingController" => text(&obj[field]),
            _ => text(&obj["regarding"][field.strip_prefix("regarding.")?]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_convert_both_ways_without_loss() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Started", "message": "Started container web", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-a"}, "count": 3,
            "firstTimestamp": "2026-11-30T01:00:00Z", "lastTimestamp": "2026-11-30T01:05:00Z",
            "reportingComponent": "kubelet", "reportingInstance": "node-a",
        });
        let view = Events.served_form(core.clone());
        assert_eq!(view["apiVersion"], "events.k8s.io/v1");
        assert_eq!(view["regarding"]["name"], "web");
        assert_eq!(view["note"], "Started container web");
        assert_eq!(view["deprecatedCount"], 3);
        assert_eq!(view["reportingController"], "kubelet");
        assert_eq!(view["deprecatedSource"]["host"], "node-a");
        assert!(view.get("involvedObject").is_none() && view.get("message").is_none());
        assert_eq!(Events.stored_form(view), core);
    }
}
