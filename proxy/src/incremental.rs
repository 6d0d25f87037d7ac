//! The desired state kept current one Service at a time (kube-proxy's change trackers,
//! `servicechangetracker.go` / `endpointschangetracker.go`): a Service or EndpointSlice event
//! marks its Service dirty, and [`Incremental::flush`] recomputes only dirty Services and the
//! listeners they touch, so a change costs the same with 10 or 10,000 Services. The result is
//! always what [`desired::desired`] computes from scratch (a randomized test checks this).

use crate::desired::{self, Conflict, HEADLESS_LABEL, Listen, Node, PROXY_NAME_LABEL, RouteSpec};
use crate::endpoints::{SERVICE_NAME_LABEL, Topology};
use crate::health::ServiceHealth;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// `(namespace, name)` of a Service or an EndpointSlice.
pub type Key = (String, String);
/// Who keeps a contested listener: the oldest Service, then by namespace and name.
type Order = (Option<Time>, String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// What changed for one listener: its new route, or `None` when it should close.
pub type Change = (Listen, Option<RouteSpec>);

/// The outcome of a [`Incremental::flush`].
#[derive(Debug, Default)]
pub struct Flushed {
    /// Listeners whose route changed.
    pub changes: Vec<Change>,
    /// Every listener re-evaluated (conflicts may have changed on these even without a change).
    pub affected: Vec<Listen>,
    /// The Services recomputed, present or deleted (the nftables mode re-renders these).
    pub services: Vec<Key>,
}

/// Services, slices and this node, with the routes derived from them.
#[derive(Default)]
pub struct Incremental {
    node_name: String,
    zone: Option<String>,
    node_ips: Vec<IpAddr>,
    services: HashMap<Key, Arc<Service>>,
    /// Slice → the Service it belongs to (slices the proxy ignores are not kept).
    slices: HashMap<Key, (Key, Arc<EndpointSlice>)>,
    slices_of: HashMap<Key, BTreeMap<String, Arc<EndpointSlice>>>,
    /// Each Service's routes before contested listeners are settled.
    routes_of: HashMap<Key, BTreeMap<Listen, RouteSpec>>,
    health_of: HashMap<Key, (u16, ServiceHealth)>,
    /// The Services that want each listener, oldest first.
    claims: BTreeMap<Listen, BTreeMap<Order, Key>>,
    /// Listeners whose route forwards to an address (for loop removal when it becomes a listener).
    by_endpoint: HashMap<Listen, HashSet<Listen>>,
    /// The endpoint addresses each listener is indexed under in `by_endpoint`.
    indexed: HashMap<Listen, Vec<Listen>>,
    /// The routes in effect.
    effective: HashMap<Listen, RouteSpec>,
    dirty: HashSet<Key>,
}

impl Incremental {
    pub fn new(node_name: &str, node_ips: Vec<IpAddr>) -> Self {
        Self { node_name: node_name.to_string(), node_ips, ..Self::default() }
    }

    /// The node's zone (from its label); a change re-evaluates every Service.
    pub fn set_zone(&mut self, zone: Option<String>) {
        if zone != self.zone {
            self.zone = zone;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    pub fn apply_service(&mut self, service: Arc<Service>) {
        let key = key_of(&service.metadata);
        self.dirty.insert(key.clone());
        self.services.insert(key, service);
    }

    pub fn delete_service(&mut self, key: &Key) {
        self.services.remove(key);
        self.dirty.insert(key.clone());
    }

    pub fn apply_slice(&mut self, slice: Arc<EndpointSlice>) {
        let key = key_of(&slice.metadata);
        self.delete_slice(&key);
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else { return };
        if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL) || l.contains_key(PROXY_NAME_LABEL)) {
            return;
        }
        let owner = (key.0.clone(), service.clone());
        self.slices_of.entry(owner.clone()).or_default().insert(key.1.clone(), slice.clone());
        self.dirty.insert(owner.clone());
        self.slices.insert(key, (owner, slice));
    }

    pub fn delete_slice(&mut self, key: &Key) {
        if let Some((owner, _)) = self.slices.remove(key) {
            if let Some(set) = self.slices_of.get_mut(&owner) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.slices_of.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    /// Every Service key and slice key held (to find what a relist no longer has).
    pub fn keys(&self) -> (Vec<Key>, Vec<Key>) {
        (self.services.keys().cloned().collect(), self.slices.keys().cloned().collect())
    }

    /// Recomputes the dirty Services; returns the listeners whose route changed.
    pub fn flush(&mut self) -> Flushed {
        let dirty: Vec<Key> = self.dirty.drain().collect();
        let node = Node { name: &self.node_name, zone: self.zone.as_deref(), ips: &self.node_ips };
        let topo = Topology { node_name: node.name, zone: node.zone };
        let mut affected: HashSet<Listen> = HashSet::new();
        let mut appeared_or_gone: Vec<Listen> = Vec::new();
        for key in dirty.iter().cloned() {
            let old = self.routes_of.remove(&key).unwrap_or_default();
            self.health_of.remove(&key);
            let mut new = BTreeMap::new();
            let mut order = None;
            if let Some(service) = self.services.get(&key) {
                let slices: Vec<&EndpointSlice> =
                    self.slices_of.get(&key).into_iter().flat_map(|s| s.values()).map(|s| s.as_ref()).collect();
                for (listen, spec) in desired::service_routes(service, &slices, node, topo) {
                    new.entry(listen).or_insert(spec); // the first wins, as in `desired`
                }
                if let Some(health) = desired::service_health(service, &slices, node) {
                    self.health_of.insert(key.clone(), health);
                }
                let m = &service.metadata;
                order = Some((m.creation_timestamp.clone(), key.0.clone(), key.1.clone()));
            }
            for listen in old.keys() {
                if let Some(claimants) = self.claims.get_mut(listen) {
                    claimants.retain(|_, k| *k != key);
                    if claimants.is_empty() {
                        self.claims.remove(listen);
                        appeared_or_gone.push(*listen);
                    }
                }
                affected.insert(*listen);
            }
            if let Some(order) = order {
                for listen in new.keys() {
                    let claimants = self.claims.entry(*listen).or_default();
                    if claimants.is_empty() {
                        appeared_or_gone.push(*listen);
                    }
                    claimants.insert(order.clone(), key.clone());
                    affected.insert(*listen);
                }
            }
            if !new.is_empty() {
                self.routes_of.insert(key, new);
            }
        }
        // A listener that appeared or went may be another route's endpoint: re-check those.
        for listen in appeared_or_gone {
            affected.extend(self.by_endpoint.get(&listen).into_iter().flatten().copied());
        }
        let mut changes = Vec::new();
        let affected: Vec<Listen> = affected.into_iter().collect();
        for &listen in &affected {
            let next = self.settle(&listen);
            self.reindex(listen);
            let same = self.effective.get(&listen) == next.as_ref();
            match &next {
                Some(spec) => self.effective.insert(listen, spec.clone()),
                None => self.effective.remove(&listen),
            };
            if !same {
                changes.push((listen, next));
            }
        }
        changes.sort_by_key(|c| c.0);
        Flushed { changes, affected, services: dirty }
    }

    /// Indexes `listen` under the endpoints of its winning route (before loop removal, so a loop
    /// that goes away is seen too).
    fn reindex(&mut self, listen: Listen) {
        for target in self.indexed.remove(&listen).unwrap_or_default() {
            if let Some(users) = self.by_endpoint.get_mut(&target) {
                users.remove(&listen);
                if users.is_empty() {
                    self.by_endpoint.remove(&target);
                }
            }
        }
        let targets: Vec<Listen> = self
            .winner(&listen)
            .map(|spec| spec.endpoints.iter().map(|e| Listen { addr: *e, protocol: listen.protocol }).collect())
            .unwrap_or_default();
        for target in &targets {
            self.by_endpoint.entry(*target).or_default().insert(listen);
        }
        if !targets.is_empty() {
            self.indexed.insert(listen, targets);
        }
    }

    fn winner(&self, listen: &Listen) -> Option<&RouteSpec> {
        let (_, key) = self.claims.get(listen)?.iter().next()?;
        self.routes_of.get(key)?.get(listen)
    }

    /// The route in effect on `listen`: the oldest claimant's, without endpoints that are the
    /// proxy's own listeners (see `desired::drop_loops`).
    fn settle(&self, listen: &Listen) -> Option<RouteSpec> {
        let mut spec = self.winner(listen)?.clone();
        spec.endpoints.retain(|e| !self.claims.contains_key(&Listen { addr: *e, protocol: listen.protocol }));
        (!spec.endpoints.is_empty()).then_some(spec)
    }

    /// The Service held under `key`.
    pub fn service(&self, key: &Key) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// The routes in effect.
    pub fn routes(&self) -> &HashMap<Listen, RouteSpec> {
        &self.effective
    }

    /// Listeners more than one Service wants: the older keeps it.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let all: Vec<Listen> = self.claims.keys().copied().collect();
        self.conflicts_on(&all)
    }

    /// The conflicts on `listens`.
    pub fn conflicts_on(&self, listens: &[Listen]) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (listen, claimants) in listens.iter().filter_map(|l| Some((l, self.claims.get(l)?))) {
            let mut it = claimants.values();
            let Some(kept) = it.next().and_then(|k| self.routes_of.get(k)?.get(listen)) else { continue };
            for other in it {
                if let Some(dropped) = self.routes_of.get(other).and_then(|r| r.get(listen)) {
                    out.push(Conflict {
                        listen: *listen,
                        kept: kept.service.clone(),
                        dropped: dropped.service.clone(),
                    });
                }
            }
        }
        out
    }

    /// The health checks, one per port (the oldest Service's, as `desired`).
    pub fn health(&self) -> BTreeMap<u16, ServiceHealth> {
        let mut by_port: BTreeMap<u16, (Order, ServiceHealth)> = BTreeMap::new();
        for (key, (port, health)) in &self.health_of {
            let Some(service) = self.services.get(key) else { continue };
            let order = (service.metadata.creation_timestamp.clone(), key.0.clone(), key.1.clone());
            match by_port.get(port) {
                Some((o, _)) if *o <= order => {}
                _ => {
                    by_port.insert(*port, (order, health.clone()));
                }
            }
        }
        by_port.into_iter().map(|(p, (_, h))| (p, h)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{NODE, NODE_IPS, node, service, slice, spec, sport};
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A Service drawn from a small space, so that collisions (shared externalIPs and LB IPs,
    /// Services pointing at other Services) are frequent.
    fn random_service(rng: &mut StdRng, name: &str) -> Service {
        let port = [80, 81][rng.random_range(0..2)];
        let node_port = rng.random_bool(0.3).then(|| 30000 + rng.random_range(0..3));
        let mut s =
            service(name, &format!("127.96.0.{}", rng.random_range(1..6)), vec![sport("http", port, "TCP", node_port)]);
        if rng.random_bool(0.3) {
            spec(&mut s).external_ips = Some(vec![format!("127.50.0.{}", rng.random_range(1..3))]);
        }
        if rng.random_bool(0.2) {
            spec(&mut s).type_ = Some("LoadBalancer".into());
            spec(&mut s).external_traffic_policy = Some(if rng.random_bool(0.5) { "Local" } else { "Cluster" }.into());
            spec(&mut s).health_check_node_port = Some(32000 + rng.random_range(0..2));
            s.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(format!("127.240.0.{}", rng.random_range(1..3))),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            });
        }
        let second = rng.random_range(0..4);
        s.metadata.creation_timestamp = Some(Time(format!("2026-11-30T00:00:0{second}Z").parse().expect("time")));
        s
    }

    fn random_slice(rng: &mut StdRng, service: &str, name: &str) -> EndpointSlice {
        let eps: Vec<(String, Option<&str>, bool)> = (0..rng.random_range(0..3))
            .map(|_| {
                // Some endpoints are other Services' ClusterIPs or externalIPs (loops).
                let ip = match rng.random_range(0..4) {
                    0 => format!("127.96.0.{}", rng.random_range(1..6)),
                    1 => format!("127.50.0.{}", rng.random_range(1..3)),
                    _ => format!("127.10.0.{}", rng.random_range(1..5)),
                };
                (ip, [Some(NODE), Some("node-b"), None][rng.random_range(0..3)], rng.random_bool(0.7))
            })
            .collect();
        let eps: Vec<(&str, Option<&str>, bool)> = eps.iter().map(|(ip, n, r)| (ip.as_str(), *n, *r)).collect();
        let mut s = slice(service, "http", "TCP", [80, 8080][rng.random_range(0..2)], &eps);
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn incremental_matches_the_full_computation() {
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut inc = Incremental::new(NODE, NODE_IPS.to_vec());
            let mut services: BTreeMap<String, Service> = BTreeMap::new();
            let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
            let mut effective: HashMap<Listen, RouteSpec> = HashMap::new();
            for step in 0..150 {
                let name = format!("s{}", rng.random_range(0..8));
                match rng.random_range(0..5) {
                    0 | 1 => {
                        let s = random_service(&mut rng, &name);
                        inc.apply_service(Arc::new(s.clone()));
                        services.insert(name, s);
                    }
                    2 => {
                        inc.delete_service(&("ns".into(), name.clone()));
                        services.remove(&name);
                    }
                    3 => {
                        let slice_name = format!("{name}-{}", rng.random_range(0..2));
                        // Sometimes a slice moves to another Service.
                        let owner = if rng.random_bool(0.2) { format!("s{}", rng.random_range(0..8)) } else { name };
                        let s = random_slice(&mut rng, &owner, &slice_name);
                        inc.apply_slice(Arc::new(s.clone()));
                        slices.insert(slice_name, s);
                    }
                    _ => {
                        let slice_name = format!("{name}-{}", rng.random_range(0..2));
                        inc.delete_slice(&("ns".into(), slice_name.clone()));
                        slices.remove(&slice_name);
                    }
                }
                if rng.random_bool(0.4) {
                    for (listen, change) in inc.flush().changes {
                        match change {
                            Some(spec) => {
                                assert_ne!(effective.insert(listen, spec.clone()), Some(spec), "a no-op change")
                            }
                            None => assert!(effective.remove(&listen).is_some(), "closing {listen} that was not open"),
                        }
                    }
                    let all_services: Vec<Arc<Service>> = services.values().cloned().map(Arc::new).collect();
                    let all_slices: Vec<Arc<EndpointSlice>> = slices.values().cloned().map(Arc::new).collect();
                    let want = desired::desired(&all_services, &all_slices, node());
                    let got: BTreeMap<Listen, RouteSpec> = inc.routes().iter().map(|(l, r)| (*l, r.clone())).collect();
                    assert_eq!(got, want.routes, "seed {seed} step {step}: routes");
                    assert_eq!(effective.len(), got.len(), "seed {seed} step {step}: the changes add up");
                    let mut conflicts = inc.conflicts();
                    let mut wanted = want.conflicts.clone();
                    let sort = |c: &mut Vec<Conflict>| c.sort_by_key(|c| (c.listen, c.dropped.clone()));
                    sort(&mut conflicts);
                    sort(&mut wanted);
                    assert_eq!(conflicts, wanted, "seed {seed} step {step}: conflicts");
                    assert_eq!(inc.health(), want.health, "seed {seed} step {step}: health");
                }
            }
        }
    }
}
