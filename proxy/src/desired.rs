//! The pure heart of the proxy: from Services, EndpointSlices and this node, the listeners that
//! should exist and where each forwards (kube-proxy's `serviceport.go`, `servicechangetracker.go`
//! and the proxier's per-service loop). No IO here; `sync` applies the result.

use crate::endpoints::{self, Endpoint, PortKey, Protocol, SERVICE_NAME_LABEL, Topology};
use crate::health::ServiceHealth;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// A socket the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// One port of one Service (`ServicePortName`): `namespace/name:port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}/{}", self.namespace, self.name, self.port, self.protocol)
    }
}

/// Which traffic policy governs a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The ClusterIP: `internalTrafficPolicy`.
    Internal,
    /// NodePorts, externalIPs and load-balancer IPs: `externalTrafficPolicy`.
    External,
}

/// What one listener forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub service: ServicePortName,
    pub class: Class,
    /// Never empty: a listener without endpoints is not opened, so clients are refused.
    pub endpoints: Vec<SocketAddr>,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// The clients a load-balancer IP admits (`loadBalancerSourceRanges`); empty admits all.
    pub sources: Vec<SourceRange>,
}

/// One range of `loadBalancerSourceRanges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl SourceRange {
    /// `10.0.0.0/8` (surrounding spaces allowed, as upstream trims them).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.trim().split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        (prefix <= if addr.is_ipv4() { 32 } else { 128 }).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let host = bits - u32::from(self.prefix);
        host >= 128 || (a >> host) == (b >> host)
    }
}

/// The annotation older clients set instead of `loadBalancerSourceRanges`.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `GetLoadBalancerSourceRanges`: the field, else the annotation; unparsable entries are skipped
/// (validation refuses them in the field).
fn source_ranges(service: &Service) -> Vec<SourceRange> {
    let field = service.spec.as_ref().and_then(|s| s.load_balancer_source_ranges.clone()).unwrap_or_default();
    let annotation = service.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_RANGES_ANNOTATION));
    let text: Vec<String> = match (field.is_empty(), annotation) {
        (true, Some(a)) => a.split(',').map(str::to_string).collect(),
        _ => field,
    };
    text.iter().filter_map(|s| SourceRange::parse(s)).collect()
}

/// Two Service ports wanting the same socket; the older Service keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub listen: Listen,
    pub kept: ServicePortName,
    pub dropped: ServicePortName,
}

/// The proxy's node as this computation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub name: &'a str,
    pub zone: Option<&'a str>,
    /// Addresses NodePorts listen on.
    pub ips: &'a [IpAddr],
}

/// Everything the proxy should be doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<Listen, RouteSpec>,
    pub conflicts: Vec<Conflict>,
    /// Health-check NodePorts of `externalTrafficPolicy: Local` LoadBalancers, by port.
    pub health: BTreeMap<u16, ServiceHealth>,
}

/// Computes the listeners and their endpoints. Services the proxy does not handle (headless,
/// ExternalName, claimed by another proxy) and slices without a Service name are skipped.
pub fn desired(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], node: Node<'_>) -> Desired {
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL) || l.contains_key(PROXY_NAME_LABEL)) {
            continue;
        }
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        slices_by_service.entry((namespace, service.as_str())).or_default().push(slice);
    }

    // Oldest first, so a Service keeps a contested socket when a newer one asks for it.
    let mut ordered: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    ordered.sort_by(|a, b| {
        let key = |s: &Service| {
            (s.metadata.creation_timestamp.clone(), s.metadata.namespace.clone(), s.metadata.name.clone())
        };
        key(a).cmp(&key(b))
    });

    let mut out = Desired::default();
    let topo = Topology { node_name: node.name, zone: node.zone };
    for service in ordered {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let slices = slices_by_service.get(&(namespace, name)).map(Vec::as_slice).unwrap_or_default();
        if let Some((port, health)) = service_health(service, slices, node) {
            out.health.entry(port).or_insert(health);
        }
        for (listen, spec) in service_routes(service, slices, node, topo) {
            match out.routes.get(&listen) {
                Some(kept) if kept.service == spec.service => {} // e.g. an externalIP listed twice
                Some(kept) => {
                    let conflict = Conflict { listen, kept: kept.service.clone(), dropped: spec.service };
                    if !out.conflicts.contains(&conflict) {
                        out.conflicts.push(conflict);
                    }
                }
                None => {
                    out.routes.insert(listen, spec);
                }
            }
        }
    }
    drop_loops(&mut out.routes);
    out
}

/// Drops endpoints that are the proxy's own listeners (a Service pointing at itself or at
/// another Service's address): relaying to them would loop or chain, which kube-proxy's
/// single NAT pass never does either.
fn drop_loops(routes: &mut BTreeMap<Listen, RouteSpec>) {
    let own: Vec<Listen> = routes.keys().copied().collect();
    routes.retain(|listen, spec| {
        spec.endpoints.retain(|e| own.binary_search(&Listen { addr: *e, protocol: listen.protocol }).is_err());
        !spec.endpoints.is_empty()
    });
}

/// The health check of a Service with a `healthCheckNodePort` (`service_health.go`): the number
/// of distinct ready endpoint IPs on this node, across all its ports.
pub(crate) fn service_health(
    service: &Service,
    slices: &[&EndpointSlice],
    node: Node<'_>,
) -> Option<(u16, ServiceHealth)> {
    let spec = service.spec.as_ref()?;
    let port = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let local: BTreeSet<IpAddr> = endpoints::by_port(slices.iter().copied(), node.name)
        .into_values()
        .flatten()
        .filter(|e| e.local && e.ready)
        .map(|e| e.addr.ip())
        .collect();
    let health = ServiceHealth {
        namespace: service.metadata.namespace.clone().unwrap_or_default(),
        name: service.metadata.name.clone().unwrap_or_default(),
        local_endpoints: local.len(),
    };
    Some((port, health))
}

/// Slices of headless Services carry this label; the proxy ignores them.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Objects claimed by another proxy carry this label; this proxy ignores them.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label selector kube-proxy lists Services and EndpointSlices with.
pub const LABEL_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// The routes of one Service, with non-empty endpoint sets.
pub(crate) fn service_routes(
    service: &Service,
    slices: &[&EndpointSlice],
    node: Node<'_>,
    topo: Topology<'_>,
) -> Vec<(Listen, RouteSpec)> {
    routes(service, slices, node, topo, false)
}

/// Every address and port `service` answers on once it has endpoints, whatever they are now
/// (the nftables mode rejects on the ones without endpoints).
pub(crate) fn service_listens(service: &Service, node: Node<'_>) -> Vec<Listen> {
    let topo = Topology { node_name: node.name, zone: node.zone };
    let mut listens: Vec<Listen> = routes(service, &[], node, topo, true).into_iter().map(|(l, _)| l).collect();
    listens.sort();
    listens.dedup();
    listens
}

/// The ClusterIPs of `service` (`spec.clusterIPs`, else `spec.clusterIP`); none when headless
/// (`None`) or not yet allocated.
pub(crate) fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else { return Vec::new() };
    match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
    }
}

/// The routes of `service`; with `keep_empty`, also the listeners no endpoint serves yet.
fn routes(
    service: &Service,
    slices: &[&EndpointSlice],
    node: Node<'_>,
    topo: Topology<'_>,
    keep_empty: bool,
) -> Vec<(Listen, RouteSpec)> {
    let Some(spec) = &service.spec else { return Vec::new() };
    if service.metadata.labels.as_ref().is_some_and(|l| l.contains_key(PROXY_NAME_LABEL)) {
        return Vec::new();
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips = cluster_ips(service);
    if cluster_ips.is_empty() {
        return Vec::new(); // headless (`None`) or not yet allocated
    }
    let same_family = |ip: &IpAddr| cluster_ips.iter().any(|c| c.is_ipv4() == ip.is_ipv4());
    let external_ips: Vec<IpAddr> =
        spec.external_ips.iter().flatten().filter_map(|ip| ip.trim().parse().ok()).filter(same_family).collect();
    let lb_ips: Vec<IpAddr> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| matches!(i.ip_mode.as_deref(), None | Some("VIP")))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .filter(same_family)
        .collect();
    let node_ips: Vec<IpAddr> = node.ips.iter().copied().filter(same_family).collect();
    let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let seconds = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0);
        seconds.map(Duration::from_secs).unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });

    let ranges = source_ranges(service);
    let by_port = endpoints::by_port(slices.iter().copied(), node.name);
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
        if protocol == Protocol::Sctp {
            continue; // no userspace SCTP
        }
        let Ok(number) = u16::try_from(port.port) else { continue };
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
        let port_name = port.name.clone().unwrap_or_default();
        let key = PortKey { name: port_name.clone(), protocol };
        let service_port = ServicePortName {
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            name: service.metadata.name.clone().unwrap_or_default(),
            port: port_name,
            protocol,
        };
        let externally_accessible = node_port.is_some() || !external_ips.is_empty() || !lb_ips.is_empty();
        let uses_cluster = !itp_local || externally_accessible;
        let uses_local = itp_local || (etp_local && externally_accessible);
        let all: &[Endpoint] = by_port.get(&key).map(Vec::as_slice).unwrap_or_default();

        // Per family: an IPv4 listener forwards to IPv4 endpoints.
        let mut add = |ip: IpAddr, number: u16, class: Class, sources: Vec<SourceRange>| {
            let family: Vec<Endpoint> = all.iter().filter(|e| e.addr.is_ipv4() == ip.is_ipv4()).cloned().collect();
            let sets = endpoints::categorize(&family, uses_cluster, uses_local, topo);
            let local = match class {
                Class::Internal => itp_local,
                Class::External => etp_local,
            };
            let mut endpoints = if local { sets.local } else { sets.cluster };
            if endpoints.is_empty() && !keep_empty {
                return;
            }
            endpoints.sort();
            let listen = Listen { addr: SocketAddr::new(ip, number), protocol };
            out.push((listen, RouteSpec { service: service_port.clone(), class, endpoints, affinity, sources }));
        };
        for ip in &cluster_ips {
            add(*ip, number, Class::Internal, Vec::new());
        }
        // NodePorts are not subject to loadBalancerSourceRanges.
        if let Some(node_port) = node_port {
            for ip in &node_ips {
                add(*ip, node_port, Class::External, Vec::new());
            }
        }
        for ip in &external_ips {
            add(*ip, number, Class::External, Vec::new());
        }
        for ip in &lb_ips {
            // The load balancer's own address may reach it too when this node is inside a range.
            let mut sources = ranges.clone();
            if !sources.is_empty() && node.ips.iter().any(|n| sources.iter().any(|r| r.contains(*n))) {
                sources.push(SourceRange { addr: *ip, prefix: if ip.is_ipv4() { 32 } else { 128 } });
            }
            add(*ip, number, Class::External, sources);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
