//! Events: core/v1 and `events.k8s.io/v1` (`pkg/registry/core/event`, `pkg/registry/events`).
//! Upstream stores both in one place; kplane keeps them apart (no conversion between them).

use super::{ResourceInfo, Scope, Strategy};
use serde_json::Value;

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
