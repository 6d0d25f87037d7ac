//! Services (`pkg/registry/core/service/strategy.go`, `storage/storage.go`, `storage/alloc.go`):
//! defaulting, IP families, ClusterIP/NodePort allocation, type transitions, validation and
//! the status subresource.

pub mod alloc;
pub mod defaults;
pub mod validation;

use super::{ResourceInfo, Scope, Strategy, Subresource, Transaction, keep_status, reset_status};
use crate::error::{ApiError, ApiResult, FieldError};
use alloc::ServiceAllocators;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};
use validation::ValidationContext;

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    categories: &["all"],
    scope: Scope::Namespaced,
    subresources: &[Subresource::Status],
};

pub struct Services {
    allocators: ServiceAllocators,
    ctx: ValidationContext,
}

impl Services {
    pub fn new(allocators: ServiceAllocators) -> Self {
        let ctx = ValidationContext { ip_families: allocators.families().to_vec(), ..Default::default() };
        Self { allocators, ctx }
    }
}

/// The typed Service of a JSON object; a body that does not decode is a 400, as upstream's decoder.
fn typed(obj: &Value) -> ApiResult<Service> {
    serde_json::from_value(obj.clone())
        .map_err(|e| ApiError::bad_request(format!("Service in version \"v1\" cannot be handled as a Service: {e}")))
}

/// Writes the typed spec (and status) back into the JSON object, leaving everything else as sent.
fn write_back(obj: &mut Value, svc: &Service) {
    if let Value::Object(o) = obj {
        match &svc.spec {
            Some(spec) => o.insert("spec".into(), serde_json::to_value(spec).unwrap_or(Value::Null)),
            None => o.remove("spec"),
        };
        if let Some(status) = &svc.status {
            o.insert("status".into(), serde_json::to_value(status).unwrap_or(Value::Null));
        }
    }
}

fn invalid(svc: &Service, errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid("", "Service", svc.metadata.name.as_deref().unwrap_or(""), errs)
}

/// `normalizeClusterIPs`: keep `clusterIP` and `clusterIPs` consistent the way old clients expect.
fn normalize_cluster_ips(new: &mut Service, old: Option<&Service>) {
    let Some(spec) = new.spec.as_mut() else { return };
    let old_spec = old.and_then(|o| o.spec.as_ref());
    let ip = spec.cluster_ip.clone().filter(|s| !s.is_empty());
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    match old_spec {
        None => {
            if let (Some(ip), true) = (ip, ips.is_empty()) {
                spec.cluster_ips = Some(vec![ip]);
            }
        }
        Some(old) => {
            let old_ips = old.cluster_ips.clone().unwrap_or_default();
            let old_ip = old.cluster_ip.clone().filter(|s| !s.is_empty());
            if ips.is_empty() && ip.is_some() && ip == old_ip {
                spec.cluster_ips = old.cluster_ips.clone();
            } else if ips == old_ips && ip != old_ip {
                spec.cluster_ips = ip.map(|ip| vec![ip]);
            }
        }
    }
}

/// `patchAllocatedValues`: an update that omits allocated values keeps them (apply idempotence).
fn patch_allocated_values(new: &mut Service, old: &Service) {
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else { return };
    let needs_ip = |t: Option<&str>| t != Some("ExternalName");
    if needs_ip(spec.type_.as_deref()) && needs_ip(old_spec.type_.as_deref()) {
        if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            spec.cluster_ip = old_spec.cluster_ip.clone();
        }
        if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
    }
    let needs_ports = |t: Option<&str>| matches!(t, Some("NodePort" | "LoadBalancer"));
    if needs_ports(spec.type_.as_deref()) && needs_ports(old_spec.type_.as_deref()) {
        let used: Vec<i32> = spec.ports.iter().flatten().filter_map(|p| p.node_port).filter(|n| *n != 0).collect();
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) != 0 {
                continue;
            }
            let old_np = old_spec.ports.iter().flatten().find(|o| o.name == p.name).and_then(|o| o.node_port);
            if let Some(np) = old_np.filter(|np| !used.contains(np)) {
                p.node_port = Some(np);
            }
        }
    }
    if validation::needs_health_check(spec)
        && validation::needs_health_check(old_spec)
        && spec.health_check_node_port.unwrap_or(0) == 0
    {
        spec.health_check_node_port = old_spec.health_check_node_port;
    }
}

impl Strategy for Services {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }

    fn name_rule(&self) -> super::NameRule {
        crate::validation::name_is_dns1035_label
    }

    fn set_defaults(&self, obj: &mut Value) {
        if let Ok(mut svc) = serde_json::from_value::<Service>(obj.clone()) {
            defaults::set_defaults(&mut svc);
            write_back(obj, &svc);
        }
    }

    fn begin_create(&self, obj: &mut Value, _dry_run: bool) -> ApiResult<Option<Box<dyn Transaction>>> {
        let mut svc = typed(obj)?;
        normalize_cluster_ips(&mut svc, None);
        defaults::init_ip_families(&mut svc, None, self.allocators.families()).map_err(|e| invalid(&svc, e))?;
        let txn = self.allocators.allocate_create(&mut svc)?;
        write_back(obj, &svc);
        Ok(Some(Box::new(txn)))
    }

    fn begin_update(&self, new: &mut Value, old: &Value, _dry_run: bool) -> ApiResult<Option<Box<dyn Transaction>>> {
        let mut svc = typed(new)?;
        let old_svc = typed(old)?;
        patch_allocated_values(&mut svc, &old_svc);
        normalize_cluster_ips(&mut svc, Some(&old_svc));
        defaults::init_ip_families(&mut svc, Some(&old_svc), self.allocators.families())
            .map_err(|e| invalid(&svc, e))?;
        let txn = self.allocators.allocate_update(&mut svc, &old_svc)?;
        write_back(new, &svc);
        Ok(Some(Box::new(txn)))
    }

    fn after_delete(&self, obj: &Value) {
        if let Ok(svc) = serde_json::from_value::<Service>(obj.clone()) {
            self.allocators.release(&svc);
        }
    }

    fn deletes_with(&self) -> &'static [(&'static str, &'static str)] {
        &[("", "endpoints")]
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj, json!({"loadBalancer": {}}));
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        keep_status(new, old);
        if let (Ok(mut svc), Ok(old_svc)) = (typed(new), typed(old)) {
            defaults::drop_type_dependent_fields(&mut svc, &old_svc);
            write_back(new, &svc);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        match typed(obj) {
            Ok(svc) => validation::validate_service(&svc, &self.ctx),
            Err(e) => vec![FieldError::invalid("spec", Value::Null, e.message)],
        }
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        match (typed(new), typed(old)) {
            (Ok(n), Ok(o)) => validation::validate_service_update(&n, &o, &self.ctx),
            (Err(e), _) | (_, Err(e)) => vec![FieldError::invalid("spec", Value::Null, e.message)],
        }
    }

    fn validate_status_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        match (typed(new), typed(old)) {
            (Ok(n), Ok(o)) => validation::validate_service_status_update(&n, &o),
            (Err(e), _) | (_, Err(e)) => vec![FieldError::invalid("status", Value::Null, e.message)],
        }
    }

    /// `defaultOnRead` hides `internalTrafficPolicy` of ExternalName services on every read; nothing reads
    /// the stored value back, so it is dropped (after validation) before it is stored.
    fn canonicalize(&self, obj: &mut Value) {
        if obj["spec"]["type"] == validation::TYPE_EXTERNAL_NAME
            && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove("internalTrafficPolicy");
        }
    }

    fn restore(&self, objects: &[Value]) -> Vec<(Value, String, String)> {
        self.allocators.restore(objects)
    }

    fn restores(&self) -> bool {
        true
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }

    fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let (_, f) = field.split_once('.')?;
        Some(obj["spec"][f].as_str().unwrap_or("").to_string())
    }

    fn table(&self) -> &'static super::table::Columns {
        static COLUMNS: [super::table::Column; 7] = [
            super::table::NAME,
            super::table::col("Type", "The type of the service.", 0),
            super::table::col("Cluster-IP", "The cluster IP of the service.", 0),
            super::table::col("External-IP", "The external IP of the service.", 0),
            super::table::col("Port(s)", "The ports of the service.", 0),
            super::table::AGE,
            super::table::col("Selector", "The selector of the service.", 1),
        ];
        &COLUMNS
    }

    fn table_row(&self, obj: &Value) -> Vec<Value> {
        let spec = &obj["spec"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
        vec![
            obj["metadata"]["name"].clone(),
            text(&spec["type"]).into(),
            text(&spec["clusterIP"]).into(),
            external_ip(obj).into(),
            ports_text(spec).into(),
            super::table::age(obj),
            super::table::format_labels(&spec["selector"]).into(),
        ]
    }
}

/// `getServiceExternalIP` of kubectl's printers.
fn external_ip(obj: &Value) -> String {
    let spec = &obj["spec"];
    let external: Vec<&str> = spec["externalIPs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = obj["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect();
            ips.extend(external);
            if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
        }
        _ if external.is_empty() => "<none>".into(),
        _ => external.join(","),
    }
}

/// `makePortString`: `80/TCP`, `80:30080/TCP`, joined by commas.
fn ports_text(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() { "<none>".into() } else { ports.join(",") }
}
