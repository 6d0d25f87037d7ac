//! The EndpointSlice controller (`endpointslice-controller.k8s.io`): for every Service with a
//! selector, EndpointSlices listing the matching pods, per address type, grouped by resolved
//! ports, at most `--max-endpoints-per-slice` each, with as few writes as possible. Follows
//! `pkg/controller/endpointslice/endpointslice_controller.go` and `k8s.io/endpointslice`
//! `reconciler.go` / `utils.go`. Slices of a deleted Service go by garbage collection (their
//! controller ownerReference), as upstream.

use crate::endpoint_informers::{
    Informers, Key, Recorder, Retry, SyncError, SyncFailure, WorkQueue, is_namespace_terminating, is_not_found, key_of,
    object_ref, run_workers,
};
use crate::pod_selection::{
    HEADLESS_LABEL, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION, TriggerTimeTracker, ZONE_LABEL,
    find_port, format_trigger_time, is_pod_ready, is_service_ip_set, parse_ip_sloppy, pod_ips, selector_matches,
    service_selector, services_to_update, should_pod_be_in_endpoints, should_set_hostname,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `managed-by` value of this controller's slices.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `--max-endpoints-per-slice` default.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// `ConcurrentServiceEndpointSyncs` default.
const WORKERS: usize = 5;
/// `defaultSyncBackOff`, `maxSyncBackOff`, `maxRetries`.
const RETRY: Retry = Retry { base: Duration::from_secs(1), max: Duration::from_secs(1000), max_retries: 15 };

/// The controller: a work queue of Service keys fed by the shared caches.
pub struct EndpointSliceController {
    informers: Arc<Informers>,
    queue: Arc<WorkQueue<Key>>,
    max_per_slice: usize,
    tracker: Mutex<TriggerTimeTracker>,
    recorder: Recorder,
}

impl EndpointSliceController {
    /// Subscribes to the caches; `max_endpoints_per_slice` is 1–1000.
    pub fn new(informers: &Arc<Informers>, max_endpoints_per_slice: usize) -> Arc<Self> {
        let queue = WorkQueue::new(RETRY.base, RETRY.max);
        informers.on_pod_services(queue.clone());
        let q = queue.clone();
        informers.services.subscribe(move |old, new| {
            if let Some(s) = new.or(old) {
                q.add(key_of(&s.metadata));
            }
        });
        // Someone else changed or deleted one of our slices: put it right.
        let q = queue.clone();
        informers.slices.subscribe(move |old, new| {
            for slice in [old, new].into_iter().flatten() {
                let labels = slice.metadata.labels.as_ref();
                if labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) != Some(CONTROLLER_NAME) {
                    continue;
                }
                if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                    q.add((slice.metadata.namespace.clone().unwrap_or_default(), service.clone()));
                }
            }
        });
        // A Node appearing, going or changing zone changes the endpoints of the pods on it.
        let (q, pods, services) = (queue.clone(), informers.pods.clone(), informers.services.clone());
        informers.nodes.subscribe(move |old, new| {
            let zone = |n: Option<&k8s_openapi::api::core::v1::Node>| {
                n.and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
            };
            if old.is_some() && new.is_some() && zone(old) == zone(new) {
                return;
            }
            let Some(node) = new.or(old).and_then(|n| n.metadata.name.clone()) else { return };
            for pod in pods.all() {
                if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node.as_str()) {
                    continue;
                }
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let candidates = services.namespace(&ns);
                for name in services_to_update(candidates.iter().map(|s| &**s), None, Some(&pod)) {
                    q.add((ns.clone(), name));
                }
            }
        });
        Arc::new(Self {
            recorder: Recorder::new(informers.client(), "endpoint-slice-controller"),
            informers: informers.clone(),
            queue,
            max_per_slice: max_endpoints_per_slice.clamp(1, 1000),
            tracker: Mutex::new(TriggerTimeTracker::default()),
        })
    }

    /// Waits for the caches, queues every Service and runs the workers until aborted.
    pub async fn run(self: Arc<Self>) {
        self.informers.wait_ready().await;
        for service in self.informers.services.all() {
            self.queue.add(key_of(&service.metadata));
        }
        let this = self.clone();
        run_workers(self.queue.clone(), WORKERS, RETRY, CONTROLLER_NAME, move |key| {
            let this = this.clone();
            async move { this.sync(key).await }
        })
        .await;
    }

    async fn sync(&self, (ns, name): Key) -> Result<(), SyncFailure> {
        let Some(service) = self.informers.services.get(&ns, &name) else {
            self.tracker.lock().unwrap_or_else(|e| e.into_inner()).delete(&ns, &name);
            return Ok(());
        };
        let Some(selector) = service_selector(&service) else { return Ok(()) };
        let pods = self.informers.pods.filter(&ns, |p| selector_matches(selector, p.metadata.labels.as_ref()));
        let trigger =
            self.tracker.lock().unwrap_or_else(|e| e.into_inner()).compute(&service, pods.iter().map(|p| &**p));
        let mut existing = self.informers.slices.labelled(&ns, &name);
        existing.retain(|s| {
            let managed_by = s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL));
            managed_by.map(String::as_str) == Some(CONTROLLER_NAME) && s.metadata.deletion_timestamp.is_none()
        });
        let nodes = &self.informers.nodes;
        let zone_of = |node: &str| {
            nodes.get("", node).map(|n| n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL).cloned()))
        };
        let plan = reconcile(&service, &pods, &existing, &zone_of, self.max_per_slice);
        if let Err(e) = self.apply(&ns, &name, plan.create, plan.update, plan.delete, trigger).await {
            if !e.is_conflict() {
                self.event(&service, format!("Error updating Endpoint Slices for Service {ns}/{name}: {e}")).await;
            }
            return Err(e);
        }
        if !plan.skipped.is_empty() {
            let msg = plan.skipped.join("; ");
            self.event(&service, format!("Error updating Endpoint Slices for Service {ns}/{name}: {msg}")).await;
            return Err(SyncFailure::Incomplete(msg));
        }
        Ok(())
    }

    async fn event(&self, service: &Service, message: String) {
        let reference = object_ref("Service", "v1", &service.metadata);
        self.recorder.warn(reference, "FailedToUpdateEndpointSlices", message).await;
    }

    /// `finalize`: creates, then updates, then deletes; the cache learns each write at once.
    async fn apply(
        &self,
        ns: &str,
        service: &str,
        create: Vec<EndpointSlice>,
        update: Vec<EndpointSlice>,
        delete: Vec<EndpointSlice>,
        trigger: Option<Timestamp>,
    ) -> Result<(), SyncFailure> {
        let api: Api<EndpointSlice> = Api::namespaced(self.informers.client(), ns);
        let pp = PostParams::default();
        let cache = &self.informers.slices;
        for mut slice in create {
            set_trigger_time(&mut slice, trigger);
            match api.create(&pp, &slice).await {
                Ok(created) => cache.write_through(created),
                Err(e) if is_namespace_terminating(&e) => return Ok(()),
                Err(e) => {
                    return Err(with_context(e, format!("failed to create EndpointSlice for Service {ns}/{service}")));
                }
            }
        }
        for mut slice in update {
            set_trigger_time(&mut slice, trigger);
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &pp, &slice).await {
                Ok(updated) => cache.write_through(updated),
                Err(e) => {
                    return Err(with_context(
                        e,
                        format!("failed to update {name} EndpointSlice for Service {ns}/{service}"),
                    ));
                }
            }
        }
        for slice in delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => cache.forget(ns, &name),
                Err(e) if is_not_found(&e) => cache.forget(ns, &name),
                Err(e) => {
                    return Err(with_context(
                        e,
                        format!("failed to delete {name} EndpointSlice for Service {ns}/{service}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Keeps the API error (its code decides the retry) but says what was being done.
fn with_context(e: kube::Error, what: String) -> SyncFailure {
    match e {
        kube::Error::Api(mut s) => {
            s.message = format!("{what}: {}", s.message);
            SyncFailure::Api(kube::Error::Api(s))
        }
        other => SyncFailure::Incomplete(format!("{what}: {other}")),
    }
}

fn set_trigger_time(slice: &mut EndpointSlice, trigger: Option<Timestamp>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(t) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), format_trigger_time(t));
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
}

/// What a sync writes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    /// Pods left out because their Node is unknown (the sync is retried).
    pub skipped: Vec<String>,
}

/// The identity of an endpoint in a slice (`hashEndpoint`): addresses, hostname, pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let r = ep.target_ref.as_ref();
    EndpointKey {
        addresses,
        hostname: ep.hostname.clone().unwrap_or_default(),
        namespace: r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        name: r.and_then(|r| r.name.clone()).unwrap_or_default(),
    }
}

/// A set of ports in canonical form (`NewPortMapKey`): name, port, protocol, appProtocol.
type PortKey = Vec<(String, i32, String, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0), protocol, p.app_protocol.clone())
        })
        .collect();
    key.sort();
    key
}

fn conditions(ep: &Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
    ep.conditions.as_ref().map(|c| (c.ready, c.serving, c.terminating)).unwrap_or_default()
}

/// `EndpointsEqualBeyondHash`: what may change in place.
fn equal_beyond_hash(a: &Endpoint, b: &Endpoint) -> bool {
    let target = |e: &Endpoint| e.target_ref.clone().map(|r| ObjectReference { resource_version: None, ..r });
    a.node_name == b.node_name && a.zone == b.zone && conditions(a) == conditions(b) && target(a) == target(b)
}

/// `getAddressTypesForService`: per `spec.ipFamilies`; else the ClusterIP's family; else both.
pub(crate) fn address_types(service: &Service) -> Vec<&'static str> {
    let spec = service.spec.as_ref();
    let mut types: Vec<&'static str> = Vec::new();
    for family in spec.and_then(|s| s.ip_families.as_ref()).into_iter().flatten() {
        let t = match family.as_str() {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if !types.is_empty() {
        return types;
    }
    if is_service_ip_set(service) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).and_then(parse_ip_sloppy);
        return vec![if matches!(ip, Some(IpAddr::V6(_))) { "IPv6" } else { "IPv4" }];
    }
    vec!["IPv4", "IPv6"]
}

/// `getEndpointPorts`: each Service port the pod resolves, in canonical order.
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            find_port(pod, sp).map(|n| EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort_by_key(|p| port_key(std::slice::from_ref(p)));
    ports
}

/// `podToEndpoint`: the pod's endpoint for one address type.
fn pod_to_endpoint(pod: &Pod, zone: Option<&str>, service: &Service, address_type: &str) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let ready = publish || (serving && !terminating);
    let want_v6 = address_type == "IPv6";
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    Endpoint {
        addresses: pod_ips(pod).into_iter().filter(|ip| ip.is_ipv6() == want_v6).map(|ip| ip.to_string()).collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        node_name: node,
        zone: zone.filter(|z| !z.is_empty()).map(str::to_string),
        hostname: should_set_hostname(pod, service)
            .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
            .flatten(),
        ..Default::default()
    }
}

/// `setEndpointSliceLabels`: the Service's labels (minus reserved keys) and ours; whether the
/// Service-derived part differs from the slice's.
fn slice_labels(current: Option<&BTreeMap<String, String>>, service: &Service) -> (BTreeMap<String, String>, bool) {
    let reserved = |k: &str| k == SERVICE_NAME_LABEL || k == MANAGED_BY_LABEL || k == HEADLESS_LABEL;
    let mine = |m: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        m.into_iter().flatten().filter(|(k, _)| !reserved(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut labels = mine(service.metadata.labels.as_ref());
    let changed = mine(current) != labels;
    if !is_service_ip_set(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

fn owner_ref(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// `newEndpointSlice`: a slice to create (named by the API server from `<service>-`).
fn new_slice(service: &Service, ports: &[EndpointPort], address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", service.metadata.name.as_deref().unwrap_or_default())),
            namespace: service.metadata.namespace.clone(),
            owner_references: Some(vec![owner_ref(service)]),
            labels: Some(slice_labels(None, service).0),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// `placeholderSliceCompare`: same namespace, labels, owners, type, (no) ports and endpoints.
fn same_placeholder(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    a.metadata.namespace == b.metadata.namespace
        && a.metadata.labels.clone().unwrap_or_default() == b.metadata.labels.clone().unwrap_or_default()
        && a.metadata.owner_references.clone().unwrap_or_default()
            == b.metadata.owner_references.clone().unwrap_or_default()
        && a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && ports(a) == ports(b)
}

/// The creates, updates and deletes that make `existing` (this Service's slices) list `pods`.
/// `zone_of(node)` is `None` for an unknown Node, else its zone label.
pub(crate) fn reconcile(
    service: &Service,
    pods: &[Arc<Pod>],
    existing: &[Arc<EndpointSlice>],
    zone_of: &dyn Fn(&str) -> Option<Option<String>>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let types = address_types(service);
    let mut by_type: HashMap<String, Vec<EndpointSlice>> = HashMap::new();
    let mut unsupported = Vec::new();
    for slice in existing {
        if types.contains(&slice.address_type.as_str()) {
            by_type.entry(slice.address_type.clone()).or_default().push((**slice).clone());
        } else {
            unsupported.push((**slice).clone());
        }
    }
    for t in types {
        let slices = by_type.remove(t).unwrap_or_default();
        reconcile_address_type(service, pods, slices, zone_of, t, max, &mut plan);
    }
    plan.delete.extend(unsupported);
    plan
}

fn reconcile_address_type(
    service: &Service,
    pods: &[Arc<Pod>],
    existing: Vec<EndpointSlice>,
    zone_of: &dyn Fn(&str) -> Option<Option<String>>,
    address_type: &str,
    max: usize,
    plan: &mut Plan,
) {
    let total_existing = existing.len();
    let (mut create, mut update, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    let mut existing_by_ports: HashMap<PortKey, Vec<EndpointSlice>> = HashMap::new();
    for slice in existing {
        if owned_by(&slice, service) {
            let key = port_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            delete.push(slice);
        }
    }

    let publish = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = desired.entry(port_key(&ports)).or_insert_with(|| (ports, BTreeMap::new()));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
        let zone = match zone_of(node) {
            Some(zone) => zone,
            None if publish => None,
            None => {
                plan.skipped.push(format!(
                    "skipping Pod {} for Service {}/{}: Node {node} Not Found",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    service.metadata.namespace.as_deref().unwrap_or_default(),
                    service.metadata.name.as_deref().unwrap_or_default(),
                ));
                continue;
            }
        };
        let ep = pod_to_endpoint(pod, zone.as_deref(), service, address_type);
        if !ep.addresses.is_empty() {
            group.1.insert(endpoint_key(&ep), ep);
        }
    }

    for (key, (ports, endpoints)) in desired {
        let slices = existing_by_ports.remove(&key).unwrap_or_default();
        let (c, u, d) = reconcile_port_group(service, slices, endpoints, &ports, address_type, max);
        create.extend(c);
        update.extend(u);
        delete.extend(d);
    }
    // Port sets no pod resolves to any more.
    delete.extend(existing_by_ports.into_values().flatten());

    // A Service with no endpoints of this type has exactly one empty slice.
    if total_existing == delete.len() && create.is_empty() {
        let placeholder = new_slice(service, &[], address_type);
        if delete.len() == 1 && same_placeholder(&delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }

    // Rewrite slices about to be deleted rather than create new ones.
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if delete[i].address_type == address_type && owned_by(&delete[i], service) {
            let old = delete.remove(i);
            if let Some(mut slice) = create.pop() {
                slice.metadata.name = old.metadata.name;
                slice.metadata.generate_name = None;
                slice.metadata.resource_version = old.metadata.resource_version;
                update.push(slice);
            }
        } else {
            i += 1;
        }
    }
    // No new slices for a Service being deleted: the garbage collector would race them.
    if service.metadata.deletion_timestamp.is_some() {
        create.clear();
    }
    plan.create.extend(create);
    plan.update.extend(update);
    plan.delete.extend(delete);
}

/// `reconcileByPortMapping`: keep desired endpoints where they are (updating changed ones in
/// place), fill updated slices fullest first, then the unchanged slice closest to full that
/// fits the rest, then new slices.
fn reconcile_port_group(
    service: &Service,
    existing: Vec<EndpointSlice>,
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let (mut unchanged, mut update, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for mut slice in existing {
        let mut kept = Vec::with_capacity(slice.endpoints.len());
        let mut changed = false;
        for ep in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(ep)) {
                changed |= !equal_beyond_hash(&want, ep);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(slice.metadata.labels.as_ref(), service);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                delete.push(slice);
            } else {
                slice.endpoints = kept;
                slice.metadata.labels = Some(labels);
                update.push(slice);
            }
        } else if labels_changed {
            slice.metadata.labels = Some(labels);
            update.push(slice);
        } else {
            unchanged.push(slice);
        }
    }

    if !desired.is_empty() && !update.is_empty() {
        update.sort_by_key(|s| Reverse(s.endpoints.len()));
        for slice in &mut update {
            fill(slice, &mut desired, max);
        }
    }

    let mut create = Vec::new();
    while !desired.is_empty() {
        let reuse = if desired.len() < max { slice_to_fill(&unchanged, desired.len(), max) } else { None };
        let mut slice = match reuse {
            Some(i) => unchanged.remove(i),
            None => new_slice(service, ports, address_type),
        };
        fill(&mut slice, &mut desired, max);
        if slice.metadata.name.is_some() { update.push(slice) } else { create.push(slice) }
    }
    (create, update, delete)
}

fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, ep)) = desired.pop_first() else { break };
        slice.endpoints.push(ep);
    }
}

/// `getSliceToFill`: the slice `n` more endpoints fill closest to `max` without overflowing.
fn slice_to_fill(slices: &[EndpointSlice], n: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in slices.iter().enumerate() {
        let Some(room) = max.checked_sub(n + s.endpoints.len()) else { continue };
        if room < max && best.is_none_or(|(_, r)| room < r) {
            best = Some((i, room));
            if room == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web", "kubernetes.io/service-name": "x"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.10", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(i: usize, ready: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("uid{i}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": http_port}]}]},
                "status": {"phase": "Running", "podIPs": [{"ip": format!("10.1.{}.{}", i / 250, i % 250 + 1)}, {"ip": format!("fd00::{:x}", i + 1)}],
                           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    fn zone(node: &str) -> Option<Option<String>> {
        (node == "n1").then(|| Some("z1".to_string()))
    }

    /// Applies a plan the way the API server would: names for creates.
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, plan: Plan) {
        let gone: Vec<_> = plan.delete.iter().chain(&plan.update).map(|s| s.metadata.name.clone()).collect();
        existing.retain(|s| !gone.contains(&s.metadata.name));
        existing.extend(plan.update.into_iter().map(Arc::new));
        for (i, mut s) in plan.create.into_iter().enumerate() {
            s.metadata.name = Some(format!("web-{}-{i}", existing.len()));
            existing.push(Arc::new(s));
        }
    }

    #[test]
    fn placeholder_when_no_pods_and_stable() {
        let svc = service(json!({}));
        let plan = reconcile(&svc, &[], &[], &zone, 100);
        assert_eq!(plan.create.len(), 1);
        let slice = &plan.create[0];
        assert!(slice.endpoints.is_empty());
        assert_eq!(slice.ports.as_deref(), Some(&[][..]));
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("web"));
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        let mut existing = Vec::new();
        apply(&mut existing, plan);
        let again = reconcile(&svc, &[], &existing, &zone, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    }

    #[test]
    fn packs_at_most_max_and_one_change_touches_one_slice() {
        let svc = service(json!({}));
        let pods: Vec<_> = (0..250).map(|i| pod(i, true, 8080)).collect();
        let plan = reconcile(&svc, &pods, &[], &zone, 100);
        let mut sizes: Vec<_> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [50, 100, 100]);
        let mut existing = Vec::new();
        apply(&mut existing, plan);
        assert!(reconcile(&svc, &pods, &existing, &zone, 100).update.is_empty());

        let mut changed = pods.clone();
        changed[7] = pod(7, false, 8080);
        let plan = reconcile(&svc, &changed, &existing, &zone, 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        let ep = plan.update[0].endpoints.iter().find(|e| e.addresses == ["10.1.0.8"]).unwrap();
        assert_eq!(conditions(ep), (Some(false), Some(false), Some(false)));
        assert_eq!(ep.zone.as_deref(), Some("z1"));
        assert_eq!(ep.node_name.as_deref(), Some("n1"));

        // Removing pods shrinks slices in place; a new pod goes to the slice closest to full.
        let fewer: Vec<_> = pods.iter().filter(|p| p.metadata.name.as_deref() != Some("p0")).cloned().collect();
        let plan = reconcile(&svc, &fewer, &existing, &zone, 100);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 1, 0));
    }

    #[test]
    fn pods_resolving_to_different_ports_get_different_slices() {
        let svc = service(json!({}));
        let pods = vec![pod(1, true, 8080), pod(2, true, 9090), pod(3, true, 8080)];
        let plan = reconcile(&svc, &pods, &[], &zone, 100);
        assert_eq!(plan.create.len(), 2);
        for slice in &plan.create {
            let port = slice.ports.as_ref().unwrap()[0].port;
            let want = if port == Some(8080) { 2 } else { 1 };
            assert_eq!(slice.endpoints.len(), want);
            assert_eq!(slice.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
        }
    }

    #[test]
    fn named_port_matching_nothing_leaves_the_port_out() {
        let svc = service(json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "nope"}]}));
        let plan = reconcile(&svc, &[pod(1, true, 8080)], &[], &zone, 100);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].ports.as_deref(), Some(&[][..]));
        assert_eq!(plan.create[0].endpoints.len(), 1);
    }

    #[test]
    fn dual_stack_slices_per_family_and_dropped_families_deleted() {
        let svc = service(json!({"ipFamilies": ["IPv6", "IPv4"]}));
        let plan = reconcile(&svc, &[pod(1, true, 80)], &[], &zone, 100);
        let types: Vec<_> = plan.create.iter().map(|s| s.address_type.as_str()).collect();
        assert_eq!(types, ["IPv6", "IPv4"]);
        assert_eq!(plan.create[0].endpoints[0].addresses, ["fd00::2"]);
        let mut existing = Vec::new();
        apply(&mut existing, plan);
        let single = service(json!({"ipFamilies": ["IPv4"]}));
        let plan = reconcile(&single, &[pod(1, true, 80)], &existing, &zone, 100);
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].address_type, "IPv6");
        assert!(plan.create.is_empty() && plan.update.is_empty());
        // Headless without families: both.
        let headless = service(json!({"clusterIP": "None", "ipFamilies": null}));
        assert_eq!(address_types(&headless), ["IPv4", "IPv6"]);
    }

    #[test]
    fn terminating_and_publish_not_ready() {
        let svc = service(json!({}));
        let mut p = (*pod(1, true, 80)).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        let plan = reconcile(&svc, &[Arc::new(p.clone())], &[], &zone, 100);
        assert_eq!(conditions(&plan.create[0].endpoints[0]), (Some(false), Some(true), Some(true)));
        let publish = service(json!({"publishNotReadyAddresses": true}));
        let plan = reconcile(&publish, &[Arc::new(p), pod(2, false, 80)], &[], &zone, 100);
        assert!(plan.create[0].endpoints.iter().all(|e| conditions(e).0 == Some(true)));
    }

    #[test]
    fn unknown_node_skips_the_pod_unless_publishing() {
        let svc = service(json!({}));
        let mut p = (*pod(1, true, 80)).clone();
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some("ghost".into());
        }
        let p = Arc::new(p);
        let plan = reconcile(&svc, &[p.clone(), pod(2, true, 80)], &[], &zone, 100);
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.create[0].endpoints.len(), 1);
        let publish = service(json!({"publishNotReadyAddresses": true}));
        let plan = reconcile(&publish, &[p], &[], &zone, 100);
        assert!(plan.skipped.is_empty());
        assert_eq!(plan.create[0].endpoints[0].zone, None);
    }

    #[test]
    fn foreign_slices_are_recycled_and_labels_follow_the_service() {
        let svc = service(json!({}));
        let mut existing = Vec::new();
        apply(&mut existing, reconcile(&svc, &[pod(1, true, 80)], &[], &zone, 100));
        // Same name, new Service (another uid): the old slice is rewritten for it.
        let mut other = svc.clone();
        other.metadata.uid = Some("other-uid".into());
        let plan = reconcile(&other, &[pod(1, true, 80)], &existing, &zone, 100);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (1, 0, 1));
        // Labels changed on the Service: an update of labels only.
        let mut relabelled = svc.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("tier".to_string(), "front".to_string())]));
        let plan = reconcile(&relabelled, &[pod(1, true, 80)], &existing, &zone, 100);
        assert_eq!(plan.update.len(), 1);
        let labels = plan.update[0].metadata.labels.clone().unwrap();
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert!(!labels.contains_key("app"));
    }

    #[test]
    fn hostname_and_headless_label() {
        let svc = service(json!({"clusterIP": "None", "ports": []}));
        let mut p = (*pod(1, true, 80)).clone();
        if let Some(spec) = p.spec.as_mut() {
            spec.hostname = Some("h1".into());
            spec.subdomain = Some("web".into());
        }
        let plan = reconcile(&svc, &[Arc::new(p)], &[], &zone, 100);
        assert_eq!(plan.create[0].endpoints[0].hostname.as_deref(), Some("h1"));
        assert!(plan.create[0].metadata.labels.as_ref().unwrap().contains_key(HEADLESS_LABEL));
    }
}
