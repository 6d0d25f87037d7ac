//! The Endpoints controller (legacy v1 Endpoints, `endpoint-controller`): one Endpoints per
//! Service with a selector, named as the Service, listing the matching pods of the Service's
//! primary IP family as ready or not-ready addresses, repacked into canonical subsets and
//! truncated to 1000 addresses. Follows `pkg/controller/endpoint/endpoints_controller.go` and
//! `pkg/api/v1/endpoints/util.go` (`RepackSubsets`).

use crate::endpoint_informers::{
    Informers, Key, Recorder, Retry, SyncError, SyncFailure, WorkQueue, is_namespace_terminating, is_not_found, key_of,
    object_ref, run_workers,
};
use crate::pod_selection::{
    HEADLESS_LABEL, LEADER_ANNOTATION, TRIGGER_TIME_ANNOTATION, TriggerTimeTracker, find_port, format_trigger_time,
    is_pod_ready, is_service_ip_set, parse_ip_sloppy, pod_ips, selector_matches, service_selector,
    should_pod_be_in_endpoints, should_set_hostname,
};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Addresses an Endpoints object holds at most (`maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;
/// `endpoints.kubernetes.io/over-capacity`, set to `truncated` past [`MAX_CAPACITY`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
const WORKERS: usize = 5;
/// `DefaultTypedControllerRateLimiter`: 5 ms doubling; `maxRetries`.
const RETRY: Retry = Retry { base: Duration::from_millis(5), max: Duration::from_secs(1000), max_retries: 15 };

/// The controller: a work queue of Service keys fed by the shared caches.
pub struct EndpointsController {
    informers: Arc<Informers>,
    queue: Arc<WorkQueue<Key>>,
    tracker: Mutex<TriggerTimeTracker>,
    recorder: Recorder,
}

impl EndpointsController {
    pub fn new(informers: &Arc<Informers>) -> Arc<Self> {
        let queue = WorkQueue::new(RETRY.base, RETRY.max);
        informers.on_pod_services(queue.clone());
        let q = queue.clone();
        informers.services.subscribe(move |old, new| {
            if let Some(s) = new.or(old) {
                q.add(key_of(&s.metadata));
            }
        });
        // Only deletions: an Endpoints removed by someone else is written again.
        let q = queue.clone();
        informers.endpoints.subscribe(move |old, new| {
            if let (Some(old), None) = (old, new) {
                q.add(key_of(&old.metadata));
            }
        });
        Arc::new(Self {
            recorder: Recorder::new(informers.client(), "endpoint-controller"),
            informers: informers.clone(),
            queue,
            tracker: Mutex::new(TriggerTimeTracker::default()),
        })
    }

    /// Waits for the caches, queues every Service and every leftover Endpoints (whose Service
    /// may be gone), then runs the workers until aborted.
    pub async fn run(self: Arc<Self>) {
        self.informers.wait_ready().await;
        for service in self.informers.services.all() {
            self.queue.add(key_of(&service.metadata));
        }
        for ep in self.informers.endpoints.all() {
            if !ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION)) {
                self.queue.add(key_of(&ep.metadata));
            }
        }
        let this = self.clone();
        run_workers(self.queue.clone(), WORKERS, RETRY, "endpoint-controller", move |key| {
            let this = this.clone();
            async move { this.sync(key).await }
        })
        .await;
    }

    async fn sync(&self, (ns, name): Key) -> Result<(), SyncFailure> {
        let api: Api<Endpoints> = Api::namespaced(self.informers.client(), &ns);
        let Some(service) = self.informers.services.get(&ns, &name) else {
            // The Service is gone: so are its Endpoints (the API server usually got there first).
            if self.informers.endpoints.get(&ns, &name).is_some() {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                self.informers.endpoints.forget(&ns, &name);
            }
            self.tracker.lock().unwrap_or_else(|e| e.into_inner()).delete(&ns, &name);
            return Ok(());
        };
        let Some(selector) = service_selector(&service) else { return Ok(()) };
        let pods = self.informers.pods.filter(&ns, |p| selector_matches(selector, p.metadata.labels.as_ref()));
        // Computed even when nothing is written, so the tracker sees every sync.
        let trigger =
            self.tracker.lock().unwrap_or_else(|e| e.into_inner()).compute(&service, pods.iter().map(|p| &**p));
        let subsets = desired_subsets(&service, &pods);

        let current = self.informers.endpoints.get(&ns, &name);
        let service_labels = service.metadata.labels.clone().unwrap_or_default();
        if let Some(current) = &current {
            let mut labels = current.metadata.labels.clone().unwrap_or_default();
            labels.remove(HEADLESS_LABEL);
            if normalize(current.subsets.clone()) == normalize(Some(subsets.clone()))
                && labels == service_labels
                && capacity_annotation_correct(current)
            {
                return Ok(());
            }
        }

        let mut next = match &current {
            Some(c) => (**c).clone(),
            None => Endpoints {
                metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
                subsets: None,
            },
        };
        next.subsets = (!subsets.is_empty()).then_some(subsets);
        let truncated = truncate(&mut next);
        let annotations = next.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match trigger {
            Some(t) => annotations.insert(TRIGGER_TIME_ANNOTATION.into(), format_trigger_time(t)),
            None => annotations.remove(TRIGGER_TIME_ANNOTATION),
        };
        if truncated {
            annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY_ANNOTATION);
        }
        let mut labels = service_labels;
        if is_service_ip_set(&service) {
            labels.remove(HEADLESS_LABEL);
        } else {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        next.metadata.labels = Some(labels);

        let pp = PostParams::default();
        let result = match &current {
            None => api.create(&pp, &next).await,
            Some(_) => api.replace(&name, &pp, &next).await,
        };
        match result {
            Ok(written) => {
                self.informers.endpoints.write_through(written);
                Ok(())
            }
            Err(e) if current.is_none() && is_namespace_terminating(&e) => Ok(()),
            Err(e) => {
                let e = SyncFailure::from(e);
                if !e.is_conflict() {
                    let (reason, message) = match current {
                        None => (
                            "FailedToCreateEndpoint",
                            format!("Failed to create endpoint for service {ns}/{name}: {e}"),
                        ),
                        Some(_) => ("FailedToUpdateEndpoint", format!("Failed to update endpoint {ns}/{name}: {e}")),
                    };
                    self.recorder.warn(object_ref("Endpoints", "v1", &next.metadata), reason, message).await;
                }
                Err(e)
            }
        }
    }
}

/// The family the Service's Endpoints list: `ipFamilies[0]`; else the ClusterIP's; for a
/// headless Service without families, each pod's `podIP`'s (`None` here).
fn primary_family_v6(service: &Service) -> Option<bool> {
    let spec = service.spec.as_ref()?;
    if let Some(first) = spec.ip_families.as_ref().and_then(|f| f.first()) {
        return Some(first == "IPv6");
    }
    if is_service_ip_set(service) {
        return Some(spec.cluster_ip.as_deref().and_then(parse_ip_sloppy).is_some_and(|ip| ip.is_ipv6()));
    }
    None
}

/// `podToEndpointAddressForService`: the pod's address of the Service's family, if it has one.
fn pod_address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let ips = pod_ips(pod);
    let v6 = primary_family_v6(service).unwrap_or_else(|| ips.first().is_some_and(IpAddr::is_ipv6));
    let ip = ips.into_iter().find(|ip| ip.is_ipv6() == v6)?;
    let spec = pod.spec.as_ref();
    Some(EndpointAddress {
        ip: ip.to_string(),
        node_name: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        hostname: should_set_hostname(pod, service).then(|| spec.and_then(|s| s.hostname.clone())).flatten(),
    })
}

/// The subsets for the Service's pods, repacked.
pub(crate) fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = service.spec.as_ref();
    let publish = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut entries: Vec<(EndpointAddress, Option<EndpointPort>, bool)> = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(address) = pod_address(service, pod) else { continue };
        let ready = publish || is_pod_ready(pod);
        if ports.is_empty() {
            // A headless Service may have no ports: addresses alone.
            if !is_service_ip_set(service) {
                entries.push((address, None, ready));
            }
            continue;
        }
        for sp in &ports {
            let Some(n) = find_port(pod, sp) else { continue };
            let port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: n,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            };
            entries.push((address.clone(), Some(port), ready));
        }
    }
    repack(entries)
}

/// Addresses are the same address when IP and target UID agree.
type AddressKey = (String, String);
/// A port by value (`None`: a headless Service without ports).
type PortId = Option<(String, i32, String, Option<String>)>;

fn address_key(a: &EndpointAddress) -> AddressKey {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

/// `LessEndpointAddress`: by IP (byte-wise string compare), then target UID.
fn address_order(a: &EndpointAddress, b: &EndpointAddress) -> std::cmp::Ordering {
    address_key(a).cmp(&address_key(b))
}

/// `RepackSubsets`: each distinct set of (address, ready) becomes one subset with every port
/// it serves; an address not ready on any port of a set counts as not ready there.
pub(crate) fn repack(entries: Vec<(EndpointAddress, Option<EndpointPort>, bool)>) -> Vec<EndpointSubset> {
    let mut addresses: HashMap<AddressKey, EndpointAddress> = HashMap::new();
    let mut ports: HashMap<PortId, (Option<EndpointPort>, BTreeMap<AddressKey, bool>)> = HashMap::new();
    for (address, port, ready) in entries {
        let key = address_key(&address);
        addresses.entry(key.clone()).or_insert(address);
        let id = port.as_ref().map(|p| {
            (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default(), p.app_protocol.clone())
        });
        let slot = ports.entry(id).or_insert_with(|| (port, BTreeMap::new()));
        let was = slot.1.entry(key).or_insert(ready);
        *was = *was && ready;
    }
    // Addresses with their readiness → the ports they serve.
    type Group = Vec<(PortId, Option<EndpointPort>)>;
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Group> = BTreeMap::new();
    for (id, (port, set)) in ports {
        groups.entry(set.into_iter().collect()).or_default().push((id, port));
    }
    let mut subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, mut group_ports)| {
            group_ports.sort_by(|a, b| a.0.cmp(&b.0));
            let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
            for (key, is_ready) in set {
                let Some(a) = addresses.get(&key) else { continue };
                if is_ready { ready.push(a.clone()) } else { not_ready.push(a.clone()) }
            }
            ready.sort_by(address_order);
            not_ready.sort_by(address_order);
            let group_ports: Vec<EndpointPort> = group_ports.into_iter().filter_map(|(_, p)| p).collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!group_ports.is_empty()).then_some(group_ports),
            }
        })
        .collect();
    subsets.sort_by_cached_key(|s| serde_json::to_string(s).unwrap_or_default());
    subsets
}

/// Subsets for comparison: empty lists as absent, targetRef resourceVersions ignored.
fn normalize(subsets: Option<Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let clean = |list: Option<Vec<EndpointAddress>>| {
        list.filter(|l| !l.is_empty()).map(|l| {
            l.into_iter()
                .map(|mut a| {
                    if let Some(r) = a.target_ref.as_mut() {
                        r.resource_version = None;
                    }
                    a
                })
                .collect::<Vec<_>>()
        })
    };
    subsets
        .unwrap_or_default()
        .into_iter()
        .map(|s| EndpointSubset {
            addresses: clean(s.addresses),
            not_ready_addresses: clean(s.not_ready_addresses),
            ports: s.ports.filter(|p| !p.is_empty()),
        })
        .collect()
}

fn address_count(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| {
        (r + s.addresses.as_ref().map_or(0, Vec::len), n + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
    })
}

/// `capacityAnnotationSetCorrectly`: within capacity and not annotated.
fn capacity_annotation_correct(ep: &Endpoints) -> bool {
    let (ready, not_ready) = address_count(ep.subsets.as_deref().unwrap_or_default());
    ready + not_ready <= MAX_CAPACITY
        && !ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION))
}

/// `truncateEndpoints`: cut to [`MAX_CAPACITY`] addresses, ready ones first, each subset keeping
/// its share (rounded up); returns whether anything was cut.
pub(crate) fn truncate(ep: &mut Endpoints) -> bool {
    let Some(subsets) = ep.subsets.as_mut() else { return false };
    let (total_ready, total_not_ready) = address_count(subsets);
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, total) =
        if truncate_ready { (MAX_CAPACITY, total_ready) } else { (MAX_CAPACITY - total_ready, total_not_ready) };
    let mut room = max;
    for subset in subsets.iter_mut() {
        let len = |l: &Option<Vec<EndpointAddress>>| l.as_ref().map_or(0, Vec::len);
        let in_subset = if truncate_ready { len(&subset.addresses) } else { len(&subset.not_ready_addresses) };
        let share = (in_subset * max).div_ceil(total).min(room);
        if truncate_ready {
            if let Some(a) = subset.addresses.as_mut() {
                a.truncate(share);
            }
            subset.not_ready_addresses = None;
            room -= len(&subset.addresses);
        } else {
            if let Some(a) = subset.not_ready_addresses.as_mut() {
                a.truncate(share);
            }
            room -= len(&subset.not_ready_addresses);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.10", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                               {"name": "admin", "port": 81, "protocol": "TCP", "targetPort": 9000}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(i: usize, ready: bool, named: bool) -> Arc<Pod> {
        let ports = if named { json!([{"name": "http", "containerPort": 8080}]) } else { json!([]) };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("uid{i}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
                "status": {"podIPs": [{"ip": format!("fd00::{i}")}, {"ip": format!("10.0.{}.{}", i / 200, i % 200 + 1)}],
                           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_and_not_ready_grouped_by_ports() {
        let svc = service(json!({}));
        // Both pods serve both ports: one subset with two ports.
        let subsets = desired_subsets(&svc, &[pod(1, true, true), pod(2, false, true)]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports.as_ref().unwrap().len(), 2);
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.3");
        // p3's named port resolves to nothing: it serves 81 only, so the ports split.
        let pods = [pod(1, true, true), pod(2, false, true), pod(3, true, false)];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 2);
        let admin = subsets.iter().find(|s| s.ports.as_ref().unwrap()[0].port == 9000).unwrap();
        let ips: Vec<_> = admin.addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.4"]);
        let http = subsets.iter().find(|s| s.ports.as_ref().unwrap()[0].port == 8080).unwrap();
        assert_eq!(http.addresses.as_ref().unwrap().len(), 1);
        assert_eq!(http.not_ready_addresses.as_ref().unwrap().len(), 1);
        // Deterministic.
        assert_eq!(subsets, desired_subsets(&svc, &pods));
    }

    #[test]
    fn primary_family_only_and_terminating_left_out() {
        let v6 = service(json!({"ipFamilies": ["IPv6", "IPv4"], "clusterIP": "fd00::10"}));
        let subsets = desired_subsets(&v6, &[pod(1, true, true)]);
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "fd00::1");
        let mut p = (*pod(2, true, true)).clone();
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        let p = Arc::new(p);
        assert!(desired_subsets(&service(json!({})), std::slice::from_ref(&p)).is_empty());
        let publish = desired_subsets(&service(json!({"publishNotReadyAddresses": true})), &[p, pod(3, false, true)]);
        assert_eq!(publish.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum::<usize>(), 2);
        assert!(publish.iter().all(|s| s.not_ready_addresses.is_none()));
    }

    #[test]
    fn repack_not_ready_trumps_and_ips_sort_bytewise() {
        let a = |ip: &str, uid: &str| EndpointAddress {
            ip: ip.into(),
            target_ref: Some(ObjectReference { uid: Some(uid.into()), ..Default::default() }),
            ..Default::default()
        };
        let p = |n: i32| Some(EndpointPort { port: n, protocol: Some("TCP".into()), ..Default::default() });
        let subsets = repack(vec![
            (a("10.0.0.9", "x"), p(80), true),
            (a("10.0.0.10", "y"), p(80), true),
            (a("10.0.0.9", "x"), p(80), false),
        ]);
        assert_eq!(subsets.len(), 1);
        let ready: Vec<_> = subsets[0].addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
        assert_eq!(ready, ["10.0.0.10"]);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.9");
        // Headless without ports: one subset, no ports.
        let headless = repack(vec![(a("10.0.0.1", "x"), None, true)]);
        assert_eq!(headless.len(), 1);
        assert!(headless[0].ports.is_none());
    }

    #[test]
    fn truncates_over_capacity_ready_first() {
        let pods: Vec<_> = (0..1500).map(|i| pod(i, i % 3 != 0, true)).collect();
        let svc = service(json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}));
        let mut ep = Endpoints { subsets: Some(desired_subsets(&svc, &pods)), ..Default::default() };
        assert!(truncate(&mut ep));
        let (ready, not_ready) = address_count(ep.subsets.as_deref().unwrap());
        assert_eq!((ready, not_ready), (1000, 0));
        let fewer: Vec<_> = (0..1200).map(|i| pod(i, i < 900, true)).collect();
        let mut ep = Endpoints { subsets: Some(desired_subsets(&svc, &fewer)), ..Default::default() };
        assert!(truncate(&mut ep));
        assert_eq!(address_count(ep.subsets.as_deref().unwrap()), (900, 100));
        let mut small = Endpoints { subsets: Some(desired_subsets(&svc, &fewer[..10])), ..Default::default() };
        assert!(!truncate(&mut small));
    }

    #[test]
    fn normalize_ignores_resource_versions_and_empty_lists() {
        let mut with_rv = desired_subsets(&service(json!({})), &[pod(1, true, true)]);
        if let Some(r) = with_rv[0].addresses.as_mut().and_then(|a| a[0].target_ref.as_mut()) {
            r.resource_version = Some("42".into());
        }
        with_rv[0].not_ready_addresses = Some(vec![]);
        assert_eq!(
            normalize(Some(with_rv)),
            normalize(Some(desired_subsets(&service(json!({})), &[pod(1, true, true)])))
        );
    }
}
