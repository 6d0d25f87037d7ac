//! Table tests for `endpoints`: slice reading (`endpointslicecache_test.go`) and
//! `CategorizeEndpoints` (`topology_test.go`), cases as upstream's.

use super::*;
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointHints, EndpointPort, ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const NODE: &str = "node-a";

/// An endpoint in a table: last octet, conditions (`None` = unset), node, zone hints, node hints.
#[derive(Clone, Copy)]
struct E {
    ip: u8,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
    node: Option<&'static str>,
    zones: &'static [&'static str],
    nodes: &'static [&'static str],
}

const fn e(ip: u8) -> E {
    E { ip, ready: Some(true), serving: Some(true), terminating: Some(false), node: None, zones: &[], nodes: &[] }
}
impl E {
    const fn local(mut self) -> Self {
        self.node = Some(NODE);
        self
    }
    const fn remote(mut self) -> Self {
        self.node = Some("node-b");
        self
    }
    /// Terminating but still serving (a pod in its grace period).
    const fn term(mut self) -> Self {
        self.ready = Some(false);
        self.terminating = Some(true);
        self
    }
    /// Terminating and no longer serving.
    const fn gone(mut self) -> Self {
        self.ready = Some(false);
        self.serving = Some(false);
        self.terminating = Some(true);
        self
    }
    const fn not_ready(mut self) -> Self {
        self.ready = Some(false);
        self.serving = Some(false);
        self
    }
    const fn unset(mut self) -> Self {
        self.ready = None;
        self.serving = None;
        self.terminating = None;
        self
    }
    const fn zones(mut self, z: &'static [&'static str]) -> Self {
        self.zones = z;
        self
    }
    const fn for_nodes(mut self, n: &'static [&'static str]) -> Self {
        self.nodes = n;
        self
    }
    fn to_slice_endpoint(self) -> SliceEndpoint {
        let hints = (!self.zones.is_empty() || !self.nodes.is_empty()).then(|| EndpointHints {
            for_zones: Some(self.zones.iter().map(|z| ForZone { name: z.to_string() }).collect()),
            for_nodes: Some(self.nodes.iter().map(|n| ForNode { name: n.to_string() }).collect()),
        });
        SliceEndpoint {
            addresses: vec![format!("10.0.0.{}", self.ip)],
            conditions: Some(EndpointConditions {
                ready: self.ready,
                serving: self.serving,
                terminating: self.terminating,
            }),
            node_name: self.node.map(String::from),
            hints,
            ..Default::default()
        }
    }
}

fn slice(name: &str, ports: Vec<EndpointPort>, endpoints: &[E]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        address_type: "IPv4".into(),
        endpoints: endpoints.iter().map(|e| e.to_slice_endpoint()).collect(),
        ports: Some(ports),
    }
}

fn port(name: Option<&str>, number: Option<i32>, protocol: Option<&str>) -> EndpointPort {
    EndpointPort {
        name: name.map(String::from),
        port: number,
        protocol: protocol.map(String::from),
        app_protocol: None,
    }
}

fn http() -> Vec<EndpointPort> {
    vec![port(Some("http"), Some(80), Some("TCP"))]
}

fn addr(ip: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, ip], 80))
}

fn read(endpoints: &[E]) -> Vec<Endpoint> {
    let s = slice("s1", http(), endpoints);
    by_port([&s], NODE).remove(&PortKey { name: "http".into(), protocol: Protocol::Tcp }).unwrap_or_default()
}

struct Case {
    name: &'static str,
    endpoints: &'static [E],
    uses_cluster: bool,
    uses_local: bool,
    zone: Option<&'static str>,
    cluster: &'static [u8],
    local: &'static [u8],
    has_any: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "ready endpoints are used, not-ready and terminating ones are not",
        endpoints: &[e(1), e(2), e(3).not_ready(), e(4).term()],
        uses_cluster: true,
        uses_local: false,
        zone: None,
        cluster: &[1, 2],
        local: &[],
        has_any: true,
    },
    Case {
        name: "unset conditions mean ready",
        endpoints: &[e(1).unset()],
        uses_cluster: true,
        uses_local: false,
        zone: None,
        cluster: &[1],
        local: &[],
        has_any: true,
    },
    Case {
        name: "no ready endpoint: fall back to serving terminating ones",
        endpoints: &[e(1).term(), e(2).gone(), e(3).not_ready(), e(4).term()],
        uses_cluster: true,
        uses_local: false,
        zone: None,
        cluster: &[1, 4],
        local: &[],
        has_any: true,
    },
    Case {
        name: "nothing usable",
        endpoints: &[e(1).gone(), e(2).not_ready()],
        uses_cluster: true,
        uses_local: true,
        zone: None,
        cluster: &[],
        local: &[],
        has_any: false,
    },
    Case {
        name: "local policy: only this node's ready endpoints",
        endpoints: &[e(1).local(), e(2).remote(), e(3), e(4).local().term()],
        uses_cluster: false,
        uses_local: true,
        zone: None,
        cluster: &[],
        local: &[1],
        has_any: true,
    },
    Case {
        name: "local policy: no local ready endpoint, local serving terminating ones",
        endpoints: &[e(1).local().term(), e(2).remote(), e(3).local().gone()],
        uses_cluster: true,
        uses_local: true,
        zone: None,
        cluster: &[2],
        local: &[1],
        has_any: true,
    },
    Case {
        name: "local policy: no local endpoint at all, even with remote ones",
        endpoints: &[e(1).remote(), e(2).remote().term()],
        uses_cluster: false,
        uses_local: true,
        zone: None,
        cluster: &[],
        local: &[],
        has_any: true,
    },
    Case {
        name: "zone hints: all ready endpoints hinted and some for this zone",
        endpoints: &[e(1).zones(&["z1"]), e(2).zones(&["z2"]), e(3).zones(&["z1", "z3"]), e(4).not_ready()],
        uses_cluster: true,
        uses_local: false,
        zone: Some("z1"),
        cluster: &[1, 3],
        local: &[],
        has_any: true,
    },
    Case {
        name: "zone hints ignored when one ready endpoint has none",
        endpoints: &[e(1).zones(&["z1"]), e(2)],
        uses_cluster: true,
        uses_local: false,
        zone: Some("z1"),
        cluster: &[1, 2],
        local: &[],
        has_any: true,
    },
    Case {
        name: "zone hints ignored when none is for this zone",
        endpoints: &[e(1).zones(&["z2"]), e(2).zones(&["z3"])],
        uses_cluster: true,
        uses_local: false,
        zone: Some("z1"),
        cluster: &[1, 2],
        local: &[],
        has_any: true,
    },
    Case {
        name: "zone hints ignored when the node has no zone",
        endpoints: &[e(1).zones(&["z1"]), e(2).zones(&["z2"])],
        uses_cluster: true,
        uses_local: false,
        zone: None,
        cluster: &[1, 2],
        local: &[],
        has_any: true,
    },
    Case {
        name: "node hints win over zone hints",
        endpoints: &[e(1).zones(&["z1"]).for_nodes(&["node-b"]), e(2).zones(&["z1"]).for_nodes(&[NODE])],
        uses_cluster: true,
        uses_local: false,
        zone: Some("z1"),
        cluster: &[2],
        local: &[],
        has_any: true,
    },
    Case {
        name: "hints do not restrict the local set",
        endpoints: &[e(1).local().zones(&["z2"]), e(2).zones(&["z1"])],
        uses_cluster: true,
        uses_local: true,
        zone: Some("z1"),
        cluster: &[2],
        local: &[1],
        has_any: true,
    },
];

#[test]
fn categorize_as_kube_proxy() {
    for case in CASES {
        let endpoints = read(case.endpoints);
        let got =
            categorize(&endpoints, case.uses_cluster, case.uses_local, Topology { node_name: NODE, zone: case.zone });
        let want = |ips: &[u8]| ips.iter().map(|i| addr(*i)).collect::<Vec<_>>();
        assert_eq!(got.cluster, want(case.cluster), "{}: cluster set", case.name);
        assert_eq!(got.local, want(case.local), "{}: local set", case.name);
        assert_eq!(got.has_any, case.has_any, "{}: has_any", case.name);
    }
}

#[test]
fn ports_are_matched_by_name_and_protocol() {
    let ports = vec![
        port(Some("http"), Some(8080), None), // protocol defaults to TCP
        port(Some("dns"), Some(53), Some("UDP")),
        port(None, Some(81), Some("TCP")), // nil name: ignored
        port(Some("zero"), Some(0), Some("TCP")),
        port(Some("none"), None, Some("TCP")),
        port(Some(""), Some(82), Some("TCP")), // an unnamed Service port's slice port
    ];
    let s = slice("s1", ports, &[e(1)]);
    let got = by_port([&s], NODE);
    let keys: Vec<(String, Protocol, u16)> =
        got.iter().map(|(k, v)| (k.name.clone(), k.protocol, v[0].addr.port())).collect();
    assert_eq!(
        keys,
        vec![("".into(), Protocol::Tcp, 82), ("dns".into(), Protocol::Udp, 53), ("http".into(), Protocol::Tcp, 8080)]
    );
}

#[test]
fn only_the_first_address_and_ip_slices_count() {
    let mut s = slice("s1", http(), &[e(1)]);
    s.endpoints[0].addresses.push("10.0.0.99".into());
    s.endpoints.push(SliceEndpoint { addresses: vec!["not-an-ip".into()], ..Default::default() });
    s.endpoints.push(SliceEndpoint { addresses: vec![], ..Default::default() });
    let mut fqdn = slice("s2", http(), &[]);
    fqdn.address_type = "FQDN".into();
    fqdn.endpoints.push(SliceEndpoint { addresses: vec!["example.com".into()], ..Default::default() });
    let got = by_port([&s, &fqdn], NODE);
    let eps: Vec<SocketAddr> = got.values().flatten().map(|e| e.addr).collect();
    assert_eq!(eps, vec![addr(1)]);
}

#[test]
fn duplicates_across_slices_are_kept_once_preferring_local_then_not_terminating() {
    let a = slice("a", http(), &[e(1).term(), e(2).remote(), e(3)]);
    let b = slice("b", http(), &[e(1), e(2).local(), e(3).term()]);
    for order in [[&a, &b], [&b, &a]] {
        let got =
            by_port(order, NODE).remove(&PortKey { name: "http".into(), protocol: Protocol::Tcp }).unwrap_or_default();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|e| !e.terminating), "non-terminating entries win: {got:?}");
        assert!(got.iter().any(|e| e.addr == addr(2) && e.local), "the local entry wins: {got:?}");
    }
}

#[test]
fn multiple_slices_for_one_port_are_merged() {
    // Conformance "multiple endpoint IPs specified in multiple EndpointSlices".
    let a = slice("a", http(), &[e(1)]);
    let b = slice("b", http(), &[e(2)]);
    let got = by_port([&a, &b], NODE);
    let eps: Vec<SocketAddr> = got.values().flatten().map(|e| e.addr).collect();
    assert_eq!(eps, vec![addr(1), addr(2)]);
}
