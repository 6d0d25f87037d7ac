//! A Service port's endpoints read from its EndpointSlices (kube-proxy's `endpointslicecache.go`)
//! and the choice among them (`topology.go::CategorizeEndpoints`): ready ones, else serving and
//! terminating ones; the node-local subset for `Local` traffic policies; topology hints.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The node label carrying its zone (`v1.LabelTopologyZone`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling; an absent protocol is TCP (the API default).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

/// Slice ports are matched to Service ports by name and protocol (`ServicePortName`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub name: String,
    pub protocol: Protocol,
}

/// One endpoint of a Service port, with the conditions kube-proxy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `nodeName` is this proxy's node.
    pub local: bool,
    pub zone_hints: BTreeSet<String>,
    pub node_hints: BTreeSet<String>,
}

impl Endpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The endpoints of each port of one Service, from all its slices (one Service's slices only).
///
/// As upstream: a port with no name or no number is ignored, only `addresses[0]` counts, nil
/// `ready`/`serving` mean true and nil `terminating` false, and an `ip:port` seen in two slices is
/// kept once, preferring the local and then the non-terminating entry. FQDN slices are ignored.
pub fn by_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> BTreeMap<PortKey, Vec<Endpoint>> {
    let mut slices: Vec<&EndpointSlice> = slices.into_iter().collect();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: BTreeMap<PortKey, BTreeMap<SocketAddr, Endpoint>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        for port in slice.ports.iter().flatten() {
            let (Some(name), Some(number)) = (&port.name, port.port) else { continue };
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
            let Ok(number) = u16::try_from(number) else { continue };
            if number == 0 {
                continue;
            }
            let set = out.entry(PortKey { name: name.clone(), protocol }).or_default();
            for ep in &slice.endpoints {
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
                let conditions = ep.conditions.as_ref();
                let hints = ep.hints.as_ref();
                let endpoint = Endpoint {
                    addr: SocketAddr::new(ip, number),
                    ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                    serving: conditions.and_then(|c| c.serving).unwrap_or(true),
                    terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                    local: ep.node_name.as_deref() == Some(node_name),
                    zone_hints: hints
                        .iter()
                        .flat_map(|h| h.for_zones.iter().flatten())
                        .map(|z| z.name.clone())
                        .collect(),
                    node_hints: hints
                        .iter()
                        .flat_map(|h| h.for_nodes.iter().flatten())
                        .map(|n| n.name.clone())
                        .collect(),
                };
                match set.get(&endpoint.addr) {
                    Some(old) if !prefer(&endpoint, old) => {}
                    _ => {
                        set.insert(endpoint.addr, endpoint);
                    }
                }
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.into_values().collect())).collect()
}

/// Whether a duplicate `new` replaces `old`: local wins, then non-terminating.
fn prefer(new: &Endpoint, old: &Endpoint) -> bool {
    (new.local && !old.local) || (new.local == old.local && old.terminating && !new.terminating)
}

/// Where this proxy runs, for locality and topology hints.
#[derive(Debug, Clone, Copy)]
pub struct Topology<'a> {
    pub node_name: &'a str,
    pub zone: Option<&'a str>,
}

/// Which hint filter applies (`topologyModeFromHints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintMode {
    None,
    Node,
    Zone,
}

fn hint_mode(endpoints: &[Endpoint], topo: Topology<'_>) -> HintMode {
    let ready = || endpoints.iter().filter(|e| e.ready);
    let all_node_hints = ready().all(|e| !e.node_hints.is_empty());
    let all_zone_hints = ready().all(|e| !e.zone_hints.is_empty());
    if ready().next().is_none() {
        return HintMode::None;
    }
    if all_node_hints && ready().any(|e| e.node_hints.contains(topo.node_name)) {
        return HintMode::Node;
    }
    if all_zone_hints
        && let Some(zone) = topo.zone
        && ready().any(|e| e.zone_hints.contains(zone))
    {
        return HintMode::Zone;
    }
    HintMode::None
}

fn hinted_here(e: &Endpoint, mode: HintMode, topo: Topology<'_>) -> bool {
    match mode {
        HintMode::None => true,
        HintMode::Node => e.node_hints.contains(topo.node_name),
        HintMode::Zone => topo.zone.is_some_and(|z| e.zone_hints.contains(z)),
    }
}

/// The endpoint sets one Service port may use (`CategorizeEndpoints`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For `Cluster` policies: ready endpoints (hint-filtered), else all serving+terminating.
    pub cluster: Vec<SocketAddr>,
    /// For `Local` policies: local ready endpoints, else local serving+terminating.
    pub local: Vec<SocketAddr>,
    /// Any ready or serving+terminating endpoint anywhere.
    pub has_any: bool,
}

/// Sorts `endpoints` into the cluster-wide and node-local sets, computing only those in use.
pub fn categorize(endpoints: &[Endpoint], uses_cluster: bool, uses_local: bool, topo: Topology<'_>) -> Categorized {
    let pick = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<SocketAddr> {
        endpoints.iter().filter(|e| f(e)).map(|e| e.addr).collect()
    };
    let mut out =
        Categorized { has_any: endpoints.iter().any(|e| e.ready || e.serving_terminating()), ..Default::default() };
    if uses_cluster {
        let mode = hint_mode(endpoints, topo);
        out.cluster = pick(&|e| e.ready && hinted_here(e, mode, topo));
        if out.cluster.is_empty() {
            out.cluster = pick(&|e| e.serving_terminating());
        }
    }
    if uses_local {
        out.local = pick(&|e| e.local && e.ready);
        if out.local.is_empty() {
            out.local = pick(&|e| e.local && e.serving_terminating());
        }
    }
    out
}

#[cfg(test)]
mod tests;
