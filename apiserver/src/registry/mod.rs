//! The registry: one table of resources, each a [`ResourceInfo`] and a [`Strategy`], over one
//! generic store pipeline (upstream's `genericregistry.Store` + per-kind strategies).
//! Everything particular to a kind lives in its own file here; nothing else names a kind.

mod binding;
mod configmaps;
mod deployments;
mod endpoints;
mod endpointslices;
mod events;
mod generic;
mod leases;
mod list;
mod managed_fields;
pub mod meta;
mod namespaces;
mod nodes;
mod options;
mod pods;
mod replicasets;
mod scale;
mod secrets;
mod serviceaccounts;
mod services;
pub mod table;
mod watch;

pub use managed_fields::manager_from_user_agent;
pub use options::{DeleteOptions, ListOptions, PatchType, WatchOptions, WriteOptions};
pub use watch::{Watch, WatchEvent, WatchedObject};

use crate::error::{ApiError, ApiResult, FieldError, GroupResource};
use crate::storage::Store;
use serde_json::Value;
use std::sync::Arc;

/// Whether a resource lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource a kind serves besides the object itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: the same object; an update changes only `.status`.
    Status,
    /// `/scale`: an `autoscaling/v1` `Scale` over `.spec.replicas`.
    Scale,
    /// `/binding` of pods: POST a `Binding` to assign the pod to a node.
    Binding,
    /// `/finalize` of namespaces: an update that changes only `spec.finalizers`.
    Finalize,
    /// `/log` of pods: a container's output as text (`http::logs`).
    Log,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Finalize => "finalize",
            Subresource::Log => "log",
        }
    }

    /// The verbs discovery lists for it.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Binding => &["create"],
            Subresource::Finalize => &["update"],
            Subresource::Log => &["get"],
        }
    }

    /// The (group, version, kind) it answers with; `None` for the kind that serves it.
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Subresource::Status | Subresource::Finalize | Subresource::Log => None,
            Subresource::Scale => Some(("autoscaling", "v1", "Scale")),
            Subresource::Binding => Some(("", "v1", "Binding")),
        }
    }
}

/// What discovery, routing and storage need to know about a kind.
#[derive(Debug)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub scope: Scope,
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn group_resource(&self) -> GroupResource<'static> {
        GroupResource { group: self.group, resource: self.plural }
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The storage key prefix of this kind, or of one namespace of it.
    fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        match namespace {
            Some(ns) if self.namespaced() => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}

/// A kind's name rule (`ValidateNameFunc`): messages for a bad name, `prefix` for generateName.
pub type NameRule = fn(&str, bool) -> Vec<String>;

/// The behaviour particular to one kind. Every method has upstream's default.
pub trait Strategy: Send + Sync + 'static {
    fn info(&self) -> &'static ResourceInfo;

    /// The rule for `metadata.name` (default: DNS-1123 subdomain).
    fn name_rule(&self) -> NameRule {
        crate::validation::name_is_dns_subdomain
    }

    /// Whether `metadata.generation` is kept (set to 1, bumped on spec changes).
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Defaults applied to every object a client sends, as upstream's decode-time defaulting
    /// (`SetDefaults_<Kind>`): on create, update and the result of a patch.
    fn set_defaults(&self, _obj: &mut Value) {}

    /// The kind this one is stored as, for a kind that is another version of a stored resource
    /// (`events.k8s.io/v1` Events are stored as core/v1 Events, as upstream): both then share one
    /// set of keys, and [`Strategy::stored_form`] / [`Strategy::served_form`] convert.
    fn stored_as(&self) -> Option<&'static ResourceInfo> {
        None
    }

    /// The stored form of an object of this kind (see [`Strategy::stored_as`]).
    fn stored_form(&self, obj: Value) -> Value {
        obj
    }

    /// An object of this kind from its stored form (see [`Strategy::stored_as`]).
    fn served_form(&self, obj: Value) -> Value {
        obj
    }

    /// Work a create needs before validation (allocation), undone unless the write commits
    /// (`BeginCreate`). Runs after defaulting and system fields, before `prepare_for_create`.
    fn begin_create(&self, _obj: &mut Value, _dry_run: bool) -> ApiResult<Option<Box<dyn Transaction>>> {
        Ok(None)
    }

    /// As [`Strategy::begin_create`], for updates (`BeginUpdate`).
    fn begin_update(&self, _new: &mut Value, _old: &Value, _dry_run: bool) -> ApiResult<Option<Box<dyn Transaction>>> {
        Ok(None)
    }

    /// Work after an object is gone for good (`AfterDelete`): release what it held.
    fn after_delete(&self, _obj: &Value) {}

    /// Kinds (group, plural) whose same-named object in the namespace goes with this one
    /// (a Service takes its Endpoints, as upstream's service `afterDelete`).
    fn deletes_with(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Clears what a client may not set on create (e.g. `status`).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Restores what a client may not change on update (e.g. `status` from `old`).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        self.validate(new)
    }

    /// Validation of a write through `/status`.
    fn validate_status_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Rebuilds in-memory state (allocators) from the stored objects at start-up; returns the
    /// problems found, as (object, reason, message) for Warning events.
    fn restore(&self, _objects: &[Value]) -> Vec<(Value, String, String)> {
        Vec::new()
    }

    /// Whether [`Strategy::restore`] needs the stored objects (reading them costs start-up time).
    fn restores(&self) -> bool {
        false
    }

    /// Normalises the object before it is stored.
    fn canonicalize(&self, _obj: &mut Value) {}

    /// Whether PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Whether PUT may omit `metadata.resourceVersion`.
    fn allow_unconditional_update(&self) -> bool {
        true
    }

    /// Extra field-selector labels beyond `metadata.name` and `metadata.namespace`.
    fn field_labels(&self) -> &'static [&'static str] {
        &[]
    }

    /// The value of a field-selector label (`spec.nodeName`, `status.phase`, …).
    fn field_value(&self, _obj: &Value, _field: &str) -> Option<String> {
        None
    }

    /// Refuses a delete outright (namespaces that may never be deleted).
    fn before_delete(&self, _name: &str) -> ApiResult<()> {
        Ok(())
    }

    /// Marks an object whose deletion is pending (a namespace turns `Terminating`).
    fn prepare_for_delete(&self, _obj: &mut Value) {}

    /// Whether a deleting object must stay for a kind-specific finalizer (`spec.finalizers`
    /// of a namespace) even when `metadata.finalizers` is empty.
    fn pending_finalization(&self, _obj: &Value) -> bool {
        false
    }

    /// The grace period a delete should wait for (pods), or `None` to delete at once.
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Table columns for `kubectl get` (`as=Table`); default is upstream's default convertor.
    fn table(&self) -> &'static table::Columns {
        &table::DEFAULT_COLUMNS
    }

    /// The cells of one row, in the order of [`Strategy::table`].
    fn table_row(&self, obj: &Value) -> Vec<Value> {
        table::default_row(obj)
    }
}

/// Work done ahead of a write (an allocation): committed when the write is stored, undone when
/// the value is dropped without a commit (the Rust form of upstream's `FinishFunc`).
pub trait Transaction: Send {
    fn commit(self: Box<Self>);
}

/// A served kind: its strategy and the store.
pub struct Resource {
    strategy: Box<dyn Strategy>,
}

impl Resource {
    pub fn info(&self) -> &'static ResourceInfo {
        self.strategy.info()
    }

    pub fn strategy(&self) -> &dyn Strategy {
        &*self.strategy
    }

    /// Where this kind's objects are stored: its own keys, or those of the kind it is stored as.
    fn storage_info(&self) -> &'static ResourceInfo {
        self.strategy.stored_as().unwrap_or(self.info())
    }

    fn key_prefix(&self, namespace: Option<&str>) -> String {
        self.storage_info().key_prefix(namespace)
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> String {
        self.storage_info().key(namespace, name)
    }

    /// A stored value as an object of this kind.
    fn decode(&self, kv: &crate::storage::KeyValue) -> ApiResult<Value> {
        Ok(self.strategy.served_form(meta::decode(kv)?))
    }

    fn decode_bytes(&self, bytes: &[u8], revision: crate::storage::Revision) -> ApiResult<Value> {
        Ok(self.strategy.served_form(meta::decode_bytes(bytes, revision)?))
    }

    fn encode(&self, obj: &Value) -> ApiResult<crate::storage::Bytes> {
        match self.strategy.stored_as() {
            None => meta::encode(obj),
            Some(_) => meta::encode(&self.strategy.stored_form(obj.clone())),
        }
    }
}

/// What the registry needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Service IP ranges: one, or an IPv4 and an IPv6 one (primary first).
    pub service_cidrs: Vec<String>,
    /// The NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { service_cidrs: vec!["127.96.0.0/12".into()], node_ports: (30000, 32767) }
    }
}

/// Every kind kplane serves, with the store they share.
pub struct Registry {
    resources: Vec<Arc<Resource>>,
    store: Arc<Store>,
    service_allocators: services::alloc::ServiceAllocators,
}

impl Registry {
    /// The registry of built-in kinds over `store`.
    pub fn new(store: Arc<Store>, config: &RegistryConfig) -> Result<Arc<Self>, crate::alloc::AllocError> {
        let allocators = services::alloc::ServiceAllocators::new(&config.service_cidrs, config.node_ports)?;
        let strategies: Vec<Box<dyn Strategy>> = vec![
            Box::new(namespaces::Namespaces),
            Box::new(services::Services::new(allocators.clone())),
            Box::new(endpoints::Endpoints),
            Box::new(pods::Pods),
            Box::new(nodes::Nodes),
            Box::new(configmaps::ConfigMaps),
            Box::new(secrets::Secrets),
            Box::new(serviceaccounts::ServiceAccounts),
            Box::new(events::CoreEvents),
            Box::new(events::Events),
            Box::new(endpointslices::EndpointSlices),
            Box::new(deployments::Deployments),
            Box::new(replicasets::ReplicaSets),
            Box::new(leases::Leases),
        ];
        let resources = strategies.into_iter().map(|strategy| Arc::new(Resource { strategy })).collect();
        Ok(Arc::new(Self { resources, store, service_allocators: allocators }))
    }

    pub fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Service IPs (all families) and NodePorts in use, as the allocators see them.
    pub fn service_allocations(&self) -> (usize, usize) {
        self.service_allocators.used()
    }

    /// The resource served at `group`/`version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| {
            let i = r.info();
            i.group == group && i.version == version && i.plural == plural
        })
    }

    /// The resource of a kind in a group.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| r.info().group == group && r.info().kind == kind)
    }

    fn namespaces(&self) -> ApiResult<&Arc<Resource>> {
        self.lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces are not registered"))
    }

    /// Rebuilds in-memory state from storage (the repair pass) and creates the namespaces that
    /// exist from the start (`default`, `kube-system`, …).
    pub async fn bootstrap(&self) -> ApiResult<()> {
        self.restore().await?;
        let namespaces = self.namespaces()?.clone();
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if self.get(&namespaces, None, name).is_ok() {
                continue;
            }
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match self.create(&namespaces, None, obj, &WriteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.reason == crate::error::Reason::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Replaces whatever status a client sent on create (`PrepareForCreate` of kinds with status).
fn reset_status(obj: &mut Value, status: Value) {
    if let Value::Object(o) = obj {
        o.insert("status".into(), status);
    }
}

/// Keeps the stored status on a main-resource update (`PrepareForUpdate`).
fn keep_status(new: &mut Value, old: &Value) {
    if let Value::Object(o) = new {
        match old.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
}

impl Registry {
    /// Hands every kind its stored objects to rebuild from, and reports what it found wrong as
    /// Warning events on the objects (as upstream's repair controllers do).
    async fn restore(&self) -> ApiResult<()> {
        let mut problems = Vec::new();
        for r in self.resources.iter().filter(|r| r.strategy().restores()) {
            let list = self.list(r, None, &ListOptions::default())?;
            let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            problems.extend(r.strategy().restore(items));
        }
        for (obj, reason, message) in problems {
            tracing::warn!(%reason, %message, "repair");
            self.record_event(&obj, "Warning", &reason, &message).await;
        }
        Ok(())
    }

    /// Records a core/v1 Event about `obj` (best effort: a failure is only logged).
    pub async fn record_event(&self, obj: &Value, type_: &str, reason: &str, message: &str) {
        let Some(events) = self.lookup("", "v1", "events").cloned() else { return };
        let m = &obj["metadata"];
        let ns = m["namespace"].as_str().unwrap_or("default").to_string();
        let name = m["name"].as_str().unwrap_or("");
        let now = meta::now();
        let event = serde_json::json!({
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {
                "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": name, "namespace": m["namespace"],
                "uid": m["uid"], "resourceVersion": m["resourceVersion"],
            },
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "kplane-apiserver"},
            "reportingComponent": "kplane-apiserver",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        if let Err(e) = self.create(&events, Some(&ns), event, &WriteOptions::default()).await {
            tracing::warn!(error = %e, "recording an event");
        }
    }
}
