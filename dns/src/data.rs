//! The cluster state that DNS answers from: Services, EndpointSlices, Pods and Namespaces reduced to
//! what the schema needs and indexed by name and by IP (CoreDNS `plugin/kubernetes/object/*.go` and the
//! indexers of `controller.go`). Pure: built from API objects, no IO.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port, or an EndpointSlice port; `port` is -1 when the object declares none (as CoreDNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

/// What a Service name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `spec.clusterIPs` (all families).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints answer.
    Headless,
    /// `spec.externalName`, as written (a name or, invalidly for DNS, an IP).
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: Kind,
    pub ports: Vec<Port>,
}

/// A ready endpoint address with its DNS label: `hostname`, else the dashed IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub hostname: String,
}

/// One EndpointSlice: its ports and its ready addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointGroup {
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

/// `(namespace, name)`.
pub type Key = (String, String);

/// What an update changed, for the answers prepared ahead of time: the Services whose names may
/// answer differently now, or every Service of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Service(Key),
    Namespace(String),
}

/// Everything the zone needs, indexed, and kept current one object at a time: each `apply_*` /
/// `delete_*` touches only the entries of that object (CoreDNS's informer indexers), so an update
/// costs the same with 10 or 10,000 Services. [`ClusterData::build`] is the same updates from empty.
#[derive(Debug, Clone, Default)]
pub struct ClusterData {
    pub namespaces: BTreeSet<String>,
    pub services: BTreeMap<Key, ServiceEntry>,
    /// The ready endpoints of each Service, one group per EndpointSlice in slice-name order.
    pub endpoints: BTreeMap<Key, Vec<EndpointGroup>>,
    /// ClusterIP → the Service that holds it (the first by namespace/name wins).
    pub service_ips: HashMap<IpAddr, Key>,
    /// Ready endpoint IP → every (service, endpoint label) that lists it, with how many times.
    pub endpoint_ips: HashMap<IpAddr, BTreeMap<(Key, String), usize>>,
    /// Pod IP → the namespaces of the running (not terminating) pods that have it, with how many.
    pub pod_ips: HashMap<IpAddr, BTreeMap<String, usize>>,
    /// Every Service holding each ClusterIP (`service_ips` keeps the first).
    ip_holders: HashMap<IpAddr, BTreeSet<Key>>,
    /// EndpointSlice `(namespace, name)` → its Service and its group.
    slices: HashMap<Key, (Key, EndpointGroup)>,
    /// Service → its slices by name (`endpoints` is these groups in order).
    slices_of: HashMap<Key, BTreeMap<String, EndpointGroup>>,
    /// Pod `(namespace, name)` → the IPs it counts in `pod_ips` under its namespace.
    pods: HashMap<Key, Vec<IpAddr>>,
}

/// The indexes the zone reads, compared (the bookkeeping behind them is not).
impl PartialEq for ClusterData {
    fn eq(&self, other: &Self) -> bool {
        self.namespaces == other.namespaces
            && self.services == other.services
            && self.endpoints == other.endpoints
            && self.service_ips == other.service_ips
            && self.endpoint_ips == other.endpoint_ips
            && self.pod_ips == other.pod_ips
    }
}

impl ClusterData {
    /// Index the given objects. Objects without a name or namespace are skipped.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
    ) -> Self {
        let mut data = ClusterData::default();
        for ns in namespaces {
            data.apply_namespace(ns);
        }
        for svc in services {
            data.apply_service(svc);
        }
        for slice in slices {
            data.apply_slice(slice);
        }
        for pod in pods {
            data.apply_pod(pod);
        }
        data
    }

    /// A Namespace was added or changed.
    pub fn apply_namespace(&mut self, ns: &Namespace) -> Vec<Touched> {
        let Some(name) = &ns.metadata.name else { return Vec::new() };
        let name = name.to_ascii_lowercase();
        if self.namespaces.insert(name.clone()) { vec![Touched::Namespace(name)] } else { Vec::new() }
    }

    /// The Namespace `name` is gone.
    pub fn delete_namespace(&mut self, name: &str) -> Vec<Touched> {
        let name = name.to_ascii_lowercase();
        if self.namespaces.remove(&name) { vec![Touched::Namespace(name)] } else { Vec::new() }
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, svc: &Service) -> Vec<Touched> {
        let Some(key) = key_of(&svc.metadata) else { return Vec::new() };
        match service_entry(svc) {
            Some(entry) => {
                if self.services.get(&key) == Some(&entry) {
                    return Vec::new();
                }
                self.unindex_service_ips(&key);
                if let Kind::ClusterIp(ips) = &entry.kind {
                    for ip in ips {
                        self.ip_holders.entry(*ip).or_default().insert(key.clone());
                        self.elect(*ip);
                    }
                }
                self.services.insert(key.clone(), entry);
                vec![Touched::Service(key)]
            }
            None => self.delete_service(&key),
        }
    }

    /// The Service `key` (namespace, name) is gone.
    pub fn delete_service(&mut self, key: &Key) -> Vec<Touched> {
        let key = (key.0.to_ascii_lowercase(), key.1.to_ascii_lowercase());
        if !self.services.contains_key(&key) {
            return Vec::new();
        }
        self.unindex_service_ips(&key);
        self.services.remove(&key);
        vec![Touched::Service(key)]
    }

    fn unindex_service_ips(&mut self, key: &Key) {
        let Some(ServiceEntry { kind: Kind::ClusterIp(ips), .. }) = self.services.get(key) else { return };
        for ip in ips.clone() {
            if let Some(holders) = self.ip_holders.get_mut(&ip) {
                holders.remove(key);
                if holders.is_empty() {
                    self.ip_holders.remove(&ip);
                }
            }
            self.elect(ip);
        }
    }

    /// `service_ips[ip]` = the first Service holding `ip`, if any.
    fn elect(&mut self, ip: IpAddr) {
        match self.ip_holders.get(&ip).and_then(|h| h.first()) {
            Some(first) => {
                if self.service_ips.get(&ip) != Some(first) {
                    self.service_ips.insert(ip, first.clone());
                }
            }
            None => {
                self.service_ips.remove(&ip);
            }
        }
    }

    /// An EndpointSlice was added or changed (slices without the Service label, or of type FQDN,
    /// count as absent).
    pub fn apply_slice(&mut self, slice: &EndpointSlice) -> Vec<Touched> {
        let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) else { return Vec::new() };
        let slice_key = (ns.clone(), name.clone());
        let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        let Some(service) = service.filter(|_| slice.address_type != "FQDN") else {
            return self.delete_slice(&slice_key);
        };
        let key = (ns.to_ascii_lowercase(), service.to_ascii_lowercase());
        let group = endpoint_group(slice);
        if self.slices.get(&slice_key) == Some(&(key.clone(), group.clone())) {
            return Vec::new();
        }
        let mut touched = self.delete_slice(&slice_key);
        for ep in &group.endpoints {
            let at = self.endpoint_ips.entry(ep.ip).or_default();
            *at.entry((key.clone(), ep.hostname.clone())).or_default() += 1;
        }
        self.slices_of.entry(key.clone()).or_default().insert(name.clone(), group.clone());
        self.slices.insert(slice_key, (key.clone(), group));
        self.regroup(&key);
        if !touched.contains(&Touched::Service(key.clone())) {
            touched.push(Touched::Service(key));
        }
        touched
    }

    /// The EndpointSlice `(namespace, name)` is gone.
    pub fn delete_slice(&mut self, slice_key: &Key) -> Vec<Touched> {
        let Some((key, group)) = self.slices.remove(slice_key) else { return Vec::new() };
        for ep in &group.endpoints {
            if let Some(at) = self.endpoint_ips.get_mut(&ep.ip) {
                let label = (key.clone(), ep.hostname.clone());
                if let Some(n) = at.get_mut(&label) {
                    *n -= 1;
                    if *n == 0 {
                        at.remove(&label);
                    }
                }
                if at.is_empty() {
                    self.endpoint_ips.remove(&ep.ip);
                }
            }
        }
        if let Some(of) = self.slices_of.get_mut(&key) {
            of.remove(&slice_key.1);
            if of.is_empty() {
                self.slices_of.remove(&key);
            }
        }
        self.regroup(&key);
        vec![Touched::Service(key)]
    }

    /// `endpoints[key]` from the Service's slices.
    fn regroup(&mut self, key: &Key) {
        match self.slices_of.get(key) {
            Some(of) => {
                self.endpoints.insert(key.clone(), of.values().cloned().collect());
            }
            None => {
                self.endpoints.remove(key);
            }
        }
    }

    /// A Pod was added or changed: its IPs count under its namespace while it runs and is not
    /// terminating. Pod names are not prepared answers, so nothing is reported touched.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else { return };
        let key = (ns.clone(), name.clone());
        let mut ips: Vec<IpAddr> = Vec::new();
        if pod.metadata.deletion_timestamp.is_none()
            && let Some(status) = &pod.status
        {
            let all = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(status.pod_ip.as_deref());
            for ip in all.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if self.pods.get(&key).map(Vec::as_slice).unwrap_or_default() == ips.as_slice() {
            return;
        }
        self.delete_pod(&key);
        let lower = ns.to_ascii_lowercase();
        for ip in &ips {
            *self.pod_ips.entry(*ip).or_default().entry(lower.clone()).or_default() += 1;
        }
        if !ips.is_empty() {
            self.pods.insert(key, ips);
        }
    }

    /// The Pod `(namespace, name)` is gone.
    pub fn delete_pod(&mut self, key: &Key) {
        let Some(ips) = self.pods.remove(key) else { return };
        let lower = key.0.to_ascii_lowercase();
        for ip in ips {
            if let Some(at) = self.pod_ips.get_mut(&ip) {
                if let Some(n) = at.get_mut(&lower) {
                    *n -= 1;
                    if *n == 0 {
                        at.remove(&lower);
                    }
                }
                if at.is_empty() {
                    self.pod_ips.remove(&ip);
                }
            }
        }
    }

    /// The keys of the Services, slices and pods held (for a relist to drop those it no longer lists).
    pub fn service_keys(&self) -> impl Iterator<Item = &Key> {
        self.services.keys()
    }

    pub fn slice_keys(&self) -> impl Iterator<Item = &Key> {
        self.slices.keys()
    }

    pub fn pod_keys(&self) -> impl Iterator<Item = &Key> {
        self.pods.keys()
    }
}

/// The key a Service is held under (lower case).
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.as_ref()?.to_ascii_lowercase(), meta.name.as_ref()?.to_ascii_lowercase()))
}

/// `object.ToService`: ExternalName first, then `None` → headless, else the parsed ClusterIPs.
fn service_entry(svc: &Service) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        Kind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else {
        let ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        if ips.first() == Some(&"None") {
            Kind::Headless
        } else {
            Kind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
        }
    };
    let ports = match spec.ports.as_deref() {
        None | Some([]) => vec![no_port()],
        Some(ports) => ports
            .iter()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect(),
    };
    Some(ServiceEntry { kind, ports })
}

fn no_port() -> Port {
    Port { name: String::new(), protocol: String::new(), port: -1 }
}

/// `object.EndpointSliceToEndpoints`: ready (or unknown-readiness) addresses only.
fn endpoint_group(slice: &EndpointSlice) -> EndpointGroup {
    let ports = match slice.ports.as_deref() {
        None | Some([]) => vec![no_port()],
        Some(ports) => ports
            .iter()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_default(),
                port: p.port.unwrap_or(-1),
            })
            .collect(),
    };
    let mut endpoints = Vec::new();
    for ep in &slice.endpoints {
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready {
            continue;
        }
        for addr in &ep.addresses {
            let Ok(ip) = addr.parse::<IpAddr>() else { continue };
            let hostname = match &ep.hostname {
                Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                _ => dashed(ip),
            };
            endpoints.push(Endpoint { ip, hostname });
        }
    }
    EndpointGroup { ports, endpoints }
}

/// `endpointHostname` without a hostname: `10-1-2-3`; for IPv6 `:` → `-`, with `0` appended after a trailing `-`.
pub fn dashed(ip: IpAddr) -> String {
    let s = ip.to_string();
    match ip {
        IpAddr::V4(_) => s.replace('.', "-"),
        IpAddr::V6(_) => {
            let d = s.replace(':', "-");
            if d.ends_with('-') { d + "0" } else { d }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_names_follow_coredns() {
        let cases = [("10.1.2.3", "10-1-2-3"), ("5678:abcd::1", "5678-abcd--1"), ("fd00::", "fd00--0")];
        for (ip, want) in cases {
            assert_eq!(dashed(ip.parse().expect("ip")), want, "{ip}");
        }
    }
}
