//! Endpoints, the legacy v1 API (`pkg/registry/core/endpoint`).

use super::{ResourceInfo, Scope, Strategy};
use serde_json::Value;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct Endpoints;

impl Strategy for Endpoints {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 3] =
            [super::table::NAME, super::table::col("Endpoints", "Endpoints of the service.", 0), super::table::AGE];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let mut eps: Vec<String> = Vec::new();
        for subset in obj["subsets"].as_array().into_iter().flatten() {
            for a in subset["addresses"].as_array().into_iter().flatten() {
                for p in subset["ports"].as_array().into_iter().flatten() {
                    eps.push(format!("{}:{}", a["ip"].as_str().unwrap_or(""), p["port"]));
                }
            }
        }
        let text = match eps.len() {
            0 => "<none>".to_string(),
            n if n > 3 => format!("{} + {} more...", eps[..3].join(","), n - 3),
            _ => eps.join(","),
        };
        vec![obj["metadata"]["name"].clone(), text.into(), super::table::age(obj)]
    }
}
