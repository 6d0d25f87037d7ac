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

/// Everything the zone needs, indexed. Built whole from the reflectors' stores on every change.
#[derive(Debug, Clone, Default)]
pub struct ClusterData {
    pub namespaces: BTreeSet<String>,
    pub services: BTreeMap<Key, ServiceEntry>,
    pub endpoints: BTreeMap<Key, Vec<EndpointGroup>>,
    /// ClusterIP → the Service that holds it (the first by namespace/name wins).
    pub service_ips: HashMap<IpAddr, Key>,
    /// Ready endpoint IP → every (service, endpoint label) that lists it.
    pub endpoint_ips: HashMap<IpAddr, Vec<(Key, String)>>,
    /// Pod IP → the namespaces of the running (not terminating) pods that have it.
    pub pod_ips: HashMap<IpAddr, BTreeSet<String>>,
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
            if let Some(name) = &ns.metadata.name {
                data.namespaces.insert(name.to_ascii_lowercase());
            }
        }
        for svc in services {
            if let (Some(key), Some(entry)) = (key_of(&svc.metadata), service_entry(svc)) {
                data.services.insert(key, entry);
            }
        }
        for (key, svc) in &data.services {
            if let Kind::ClusterIp(ips) = &svc.kind {
                for ip in ips {
                    data.service_ips.entry(*ip).or_insert_with(|| key.clone());
                }
            }
        }
        for slice in slices {
            let Some(ns) = &slice.metadata.namespace else { continue };
            let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            if slice.address_type == "FQDN" {
                continue;
            }
            let key = (ns.to_ascii_lowercase(), service.to_ascii_lowercase());
            let group = endpoint_group(slice);
            for ep in &group.endpoints {
                data.endpoint_ips.entry(ep.ip).or_default().push((key.clone(), ep.hostname.clone()));
            }
            data.endpoints.entry(key).or_default().push(group);
        }
        for pod in pods {
            let Some(ns) = &pod.metadata.namespace else { continue };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            let ips = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(status.pod_ip.as_deref());
            for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                data.pod_ips.entry(ip).or_default().insert(ns.to_ascii_lowercase());
            }
        }
        data
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
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
