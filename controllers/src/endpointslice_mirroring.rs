//! The EndpointSlice mirroring controller (`endpointslicemirroring-controller.k8s.io`): copies
//! user-written Endpoints of Services without a selector into EndpointSlices, one slice per
//! subset and address family, and deletes them once the Endpoints, its Service, or the
//! conditions go. Follows `pkg/controller/endpointslicemirroring/` (`endpointslicemirroring_controller.go`,
//! `reconciler.go`, `reconciler_helpers.go`, `utils.go`).

use crate::endpoint_informers::{
    Informers, Key, Recorder, Retry, SyncFailure, WorkQueue, is_namespace_terminating, is_not_found, key_of,
    object_ref, run_workers,
};
use crate::pod_selection::{
    LEADER_ANNOTATION, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION, parse_ip_sloppy,
};
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The `managed-by` value of mirrored slices.
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// `endpointslice.kubernetes.io/skip-mirror`: `true` keeps an Endpoints from being mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// `--mirroring-max-endpoints-per-subset` default.
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const WORKERS: usize = 5;
/// `defaultSyncBackOff`, `maxSyncBackOff`, `maxRetries`.
const RETRY: Retry = Retry { base: Duration::from_secs(1), max: Duration::from_secs(100), max_retries: 15 };

/// The controller: a work queue of Endpoints keys.
pub struct MirroringController {
    informers: Arc<Informers>,
    queue: Arc<WorkQueue<Key>>,
    recorder: Recorder,
}

impl MirroringController {
    pub fn new(informers: &Arc<Informers>) -> Arc<Self> {
        let queue = WorkQueue::new(RETRY.base, RETRY.max);
        let q = queue.clone();
        informers.endpoints.subscribe(move |old, new| {
            if let Some(e) = new.or(old) {
                q.add(key_of(&e.metadata));
            }
        });
        let q = queue.clone();
        informers.services.subscribe(move |old, new| {
            if let Some(s) = new.or(old) {
                q.add(key_of(&s.metadata));
            }
        });
        let q = queue.clone();
        informers.slices.subscribe(move |old, new| {
            for slice in [old, new].into_iter().flatten() {
                if let Some(name) = mirrored_service(slice) {
                    q.add((slice.metadata.namespace.clone().unwrap_or_default(), name.to_string()));
                }
            }
        });
        Arc::new(Self {
            recorder: Recorder::new(informers.client(), "endpoint-slice-mirroring-controller"),
            informers: informers.clone(),
            queue,
        })
    }

    /// Waits for the caches, queues every Endpoints and every mirrored slice's owner, then runs
    /// the workers until aborted.
    pub async fn run(self: Arc<Self>) {
        self.informers.wait_ready().await;
        for ep in self.informers.endpoints.all() {
            self.queue.add(key_of(&ep.metadata));
        }
        for slice in self.informers.slices.all() {
            if let Some(name) = mirrored_service(&slice) {
                self.queue.add((slice.metadata.namespace.clone().unwrap_or_default(), name.to_string()));
            }
        }
        let this = self.clone();
        run_workers(self.queue.clone(), WORKERS, RETRY, CONTROLLER_NAME, move |key| {
            let this = this.clone();
            async move { this.sync(key).await }
        })
        .await;
    }

    /// Whether this Endpoints should be mirrored (`shouldMirror` plus the Service checks).
    fn wants_mirror(&self, ns: &str, name: &str, endpoints: &Endpoints) -> bool {
        let labels = endpoints.metadata.labels.as_ref();
        let skip = labels.and_then(|l| l.get(SKIP_MIRROR_LABEL)).map(String::as_str) == Some("true");
        let leader = endpoints.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        // The API server keeps `default/kubernetes` and its slice itself.
        let apiserver = ns == "default" && name == "kubernetes";
        let selectorless = self
            .informers
            .services
            .get(ns, name)
            .is_some_and(|s| s.spec.as_ref().is_none_or(|spec| spec.selector.is_none()));
        !skip && !leader && !apiserver && selectorless
    }

    async fn sync(&self, (ns, name): Key) -> Result<(), SyncFailure> {
        let mut existing = self.informers.slices.labelled(&ns, &name);
        existing.retain(|s| mirrored_service(s) == Some(name.as_str()) && s.metadata.deletion_timestamp.is_none());
        let endpoints = self.informers.endpoints.get(&ns, &name).filter(|e| self.wants_mirror(&ns, &name, e));
        let Some(endpoints) = endpoints else {
            let plan = Plan { delete: existing.iter().map(|s| (**s).clone()).collect(), ..Default::default() };
            return self.apply(&ns, plan).await;
        };
        let (desired, skipped) = desired_groups(&endpoints);
        if skipped.invalid > 0 {
            let message = format!("Skipped {} invalid IP addresses when mirroring to EndpointSlices", skipped.invalid);
            self.recorder.warn(object_ref("Endpoints", "v1", &endpoints.metadata), "InvalidIPAddress", message).await;
        }
        if skipped.over_max > 0 {
            let message = format!(
                "A max of {MAX_ENDPOINTS_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                skipped.over_max + skipped.invalid
            );
            let reference = object_ref("Endpoints", "v1", &endpoints.metadata);
            self.recorder.warn(reference, "TooManyAddressesToMirror", message).await;
        }
        let mut plan = reconcile(&endpoints, desired, &existing);
        if endpoints.metadata.deletion_timestamp.is_some() {
            plan.create.clear();
        }
        self.apply(&ns, plan).await
    }

    async fn apply(&self, ns: &str, plan: Plan) -> Result<(), SyncFailure> {
        let api: Api<EndpointSlice> = Api::namespaced(self.informers.client(), ns);
        let cache = &self.informers.slices;
        let pp = PostParams::default();
        for slice in plan.create {
            match api.create(&pp, &slice).await {
                Ok(created) => cache.write_through(created),
                Err(e) if is_namespace_terminating(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        for slice in plan.update {
            let name = slice.metadata.name.clone().unwrap_or_default();
            cache.write_through(api.replace(&name, &pp, &slice).await?);
        }
        for slice in plan.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            cache.forget(ns, &name);
        }
        Ok(())
    }
}

/// The Endpoints name a slice mirrors, if this controller manages it.
fn mirrored_service(slice: &EndpointSlice) -> Option<&str> {
    let labels = slice.metadata.labels.as_ref()?;
    (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME))
        .then(|| labels.get(SERVICE_NAME_LABEL).map(String::as_str))
        .flatten()
}

/// Address type and ports: one slice each.
type GroupKey = (String, Vec<(String, i32, String, Option<String>)>);

fn group_key(address_type: &str, ports: &[EndpointPort]) -> GroupKey {
    let mut p: Vec<_> = ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0), protocol, p.app_protocol.clone())
        })
        .collect();
    p.sort();
    (address_type.to_string(), p)
}

/// The identity of an endpoint (`hashEndpoint`).
fn endpoint_id(ep: &Endpoint) -> (Vec<String>, String, String, String) {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let r = ep.target_ref.as_ref();
    (
        addresses,
        ep.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// What a slice group holds: its ports and endpoints in Endpoints order, without duplicates.
#[derive(Debug, Default)]
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default)]
struct Skipped {
    invalid: usize,
    over_max: usize,
}

/// `addressToEndpoint`: a re-stringified IP, readiness, the address's pod, node and hostname.
fn address_to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip = parse_ip_sloppy(&address.ip)?;
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready: Some(ready), serving: None, terminating: None }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Default::default()
    };
    Some((endpoint, if ip.is_ipv6() { "IPv6" } else { "IPv4" }))
}

/// The slice groups an Endpoints asks for (at most [`MAX_ENDPOINTS_PER_SUBSET`] addresses per subset).
fn desired_groups(endpoints: &Endpoints) -> (BTreeMap<GroupKey, Group>, Skipped) {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut skipped = Skipped::default();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let all = subset.addresses.iter().flatten().map(|a| (a, true));
        let all = all.chain(subset.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        let mut added = 0;
        for (address, ready) in all {
            if added >= MAX_ENDPOINTS_PER_SUBSET {
                skipped.over_max += 1;
                continue;
            }
            let Some((endpoint, address_type)) = address_to_endpoint(address, ready) else {
                skipped.invalid += 1;
                continue;
            };
            let group = groups
                .entry(group_key(address_type, &ports))
                .or_insert_with(|| Group { ports: ports.clone(), endpoints: Vec::new() });
            let id = endpoint_id(&endpoint);
            match group.endpoints.iter_mut().find(|e| endpoint_id(e) == id) {
                Some(e) => *e = endpoint,
                None => group.endpoints.push(endpoint),
            }
            added += 1;
        }
    }
    (groups, skipped)
}

#[derive(Debug, Default)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
}

/// `newEndpointSlice`: the Endpoints' labels and annotations (but the trigger time and
/// last-applied), our labels, and a controller reference to the Endpoints.
fn new_slice(endpoints: &Endpoints, group: &Group, address_type: &str, name: Option<String>) -> EndpointSlice {
    let ep_name = endpoints.metadata.name.clone().unwrap_or_default();
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), ep_name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    let mut annotations = endpoints.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(TRIGGER_TIME_ANNOTATION);
    annotations.remove(LAST_APPLIED);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| format!("{ep_name}-")),
            name,
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Endpoints".into(),
                name: ep_name,
                uid: endpoints.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: group.endpoints.clone(),
        ports: Some(group.ports.clone()),
    }
}

/// Whether `slice` already says what `want` says (same endpoints as a set, labels, annotations).
fn same_content(slice: &EndpointSlice, want: &EndpointSlice) -> bool {
    let ids = |s: &EndpointSlice| {
        let mut v: Vec<_> = s.endpoints.iter().map(|e| (endpoint_id(e), e.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, e)| e).collect::<Vec<_>>()
    };
    let map = |m: &Option<BTreeMap<String, String>>| m.clone().unwrap_or_default();
    ids(slice) == ids(want)
        && map(&slice.metadata.labels) == map(&want.metadata.labels)
        && map(&slice.metadata.annotations) == map(&want.metadata.annotations)
        && slice.metadata.owner_references == want.metadata.owner_references
}

/// One slice per group: the first existing one is kept (and rewritten if it differs), the rest
/// deleted; groups nobody wants any more are deleted; creates reuse slices about to be deleted.
fn reconcile(endpoints: &Endpoints, desired: BTreeMap<GroupKey, Group>, existing: &[Arc<EndpointSlice>]) -> Plan {
    let mut plan = Plan::default();
    let mut by_key: HashMap<GroupKey, Vec<EndpointSlice>> = HashMap::new();
    for slice in existing {
        let key = group_key(&slice.address_type, slice.ports.as_deref().unwrap_or_default());
        by_key.entry(key).or_default().push((**slice).clone());
    }
    for (key, group) in desired {
        let mut slices = by_key.remove(&key).unwrap_or_default().into_iter();
        match slices.next() {
            None => plan.create.push(new_slice(endpoints, &group, &key.0, None)),
            Some(first) => {
                let mut want = new_slice(endpoints, &group, &key.0, first.metadata.name.clone());
                if !same_content(&first, &want) {
                    want.metadata.resource_version = first.metadata.resource_version.clone();
                    plan.update.push(want);
                }
            }
        }
        plan.delete.extend(slices);
    }
    plan.delete.extend(by_key.into_values().flatten());
    // `recycleSlices`: turn a create into an update of a slice of the same type being deleted.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        match plan.create.iter().position(|c| c.address_type == plan.delete[i].address_type) {
            Some(c) => {
                let old = plan.delete.remove(i);
                let mut slice = plan.create.remove(c);
                slice.metadata.name = old.metadata.name;
                slice.metadata.generate_name = None;
                slice.metadata.resource_version = old.metadata.resource_version;
                plan.update.push(slice);
            }
            None => i += 1,
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(subsets: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "ns", "uid": "ep-uid", "labels": {"team": "a"},
                         "annotations": {"note": "x", TRIGGER_TIME_ANNOTATION: "2024-01-01T00:00:00Z"}},
            "subsets": subsets
        }))
        .unwrap()
    }

    fn named(plan: Plan) -> Vec<Arc<EndpointSlice>> {
        plan.create
            .into_iter()
            .chain(plan.update)
            .enumerate()
            .map(|(i, mut s)| {
                s.metadata.name.get_or_insert_with(|| format!("ext-{i}"));
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn mirrors_per_subset_and_family() {
        let ep = endpoints(json!([
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "notReadyAddresses": [{"ip": "10.0.0.2"}],
             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            {"addresses": [{"ip": "10.0.0.3"}, {"ip": "not-an-ip"}], "ports": [{"port": 81}]}
        ]));
        let (desired, skipped) = desired_groups(&ep);
        assert_eq!(skipped.invalid, 1);
        let plan = reconcile(&ep, desired, &[]);
        assert_eq!(plan.create.len(), 3);
        let http4 = plan
            .create
            .iter()
            .find(|s| s.address_type == "IPv4" && s.ports.as_ref().unwrap()[0].port == Some(80))
            .unwrap();
        assert_eq!(http4.endpoints.len(), 2);
        assert_eq!(http4.endpoints[1].conditions.as_ref().unwrap().ready, Some(false));
        let labels = http4.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("ext"));
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some(CONTROLLER_NAME));
        let annotations = http4.metadata.annotations.as_ref().unwrap();
        assert!(annotations.contains_key("note") && !annotations.contains_key(TRIGGER_TIME_ANNOTATION));
        assert_eq!(http4.metadata.owner_references.as_ref().unwrap()[0].kind, "Endpoints");

        // Nothing changed: nothing to do.
        let existing = named(plan);
        let (desired, _) = desired_groups(&ep);
        let again = reconcile(&ep, desired, &existing);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    }

    #[test]
    fn a_changed_port_rewrites_the_slice_in_place() {
        let ep = endpoints(json!([{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]));
        let existing = named(reconcile(&ep, desired_groups(&ep).0, &[]));
        let ep2 = endpoints(json!([{"addresses": [{"ip": "10.2.3.4"}], "ports": [{"port": 8080}]}]));
        let plan = reconcile(&ep2, desired_groups(&ep2).0, &existing);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("ext-0"));
        assert_eq!(plan.update[0].endpoints[0].addresses, ["10.2.3.4"]);
        // No subsets: the slices go.
        let empty = endpoints(json!([]));
        assert_eq!(reconcile(&empty, desired_groups(&empty).0, &existing).delete.len(), 1);
    }

    #[test]
    fn at_most_max_per_subset() {
        let addresses: Vec<_> = (0..1005).map(|i| json!({"ip": format!("10.0.{}.{}", i / 250, i % 250)})).collect();
        let ep = endpoints(json!([{"addresses": addresses, "ports": [{"port": 80}]}]));
        let (desired, skipped) = desired_groups(&ep);
        assert_eq!(skipped.over_max, 5);
        assert_eq!(desired.values().next().unwrap().endpoints.len(), MAX_ENDPOINTS_PER_SUBSET);
    }
}
