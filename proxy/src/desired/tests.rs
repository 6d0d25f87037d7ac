//! Table tests for `desired`: which listeners a set of Services and slices asks for, and where
//! each forwards (kube-proxy's `serviceport.go` and the proxier's per-class endpoint choice).

use super::*;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

pub(crate) const NODE: &str = "node-a";
pub(crate) const NODE_IPS: &[IpAddr] =
    &[IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)];

pub(crate) fn node() -> Node<'static> {
    Node { name: NODE, zone: None, ips: NODE_IPS }
}

pub(crate) fn service(name: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

pub(crate) fn sport(name: &str, port: i32, protocol: &str, node_port: Option<i32>) -> ServicePort {
    ServicePort { name: Some(name.into()), port, protocol: Some(protocol.into()), node_port, ..Default::default() }
}

/// A slice for `service` with endpoints `(ip, port, node, ready)`.
pub(crate) fn slice(
    service: &str,
    port_name: &str,
    protocol: &str,
    port: i32,
    eps: &[(&str, Option<&str>, bool)],
) -> EndpointSlice {
    let family = if eps.first().is_some_and(|e| e.0.contains(':')) { "IPv6" } else { "IPv4" };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-{port_name}-{family}")),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), service.to_string())])),
            ..Default::default()
        },
        address_type: family.into(),
        endpoints: eps
            .iter()
            .map(|(ip, node, ready)| SliceEndpoint {
                addresses: vec![ip.to_string()],
                node_name: node.map(String::from),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*ready),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(port),
            protocol: Some(protocol.into()),
            app_protocol: None,
        }]),
    }
}

pub(crate) fn run(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Desired {
    let services: Vec<Arc<Service>> = services.into_iter().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = slices.into_iter().map(Arc::new).collect();
    desired(&services, &slices, node())
}

/// The routes as `addr/proto → [endpoints]` strings, for compact assertions.
pub(crate) fn table(d: &Desired) -> Vec<String> {
    d.routes
        .iter()
        .map(|(l, r)| {
            let eps: Vec<String> = r.endpoints.iter().map(|e| e.to_string()).collect();
            format!("{l} -> {}", eps.join(","))
        })
        .collect()
}

pub(crate) fn spec(s: &mut Service) -> &mut ServiceSpec {
    s.spec.get_or_insert_with(Default::default)
}

#[test]
fn cluster_ip_forwards_to_the_matching_port_of_the_slices() {
    let svc = service("web", "127.96.0.5", vec![sport("http", 80, "TCP", None), sport("dns", 53, "UDP", None)]);
    let slices = vec![
        slice("web", "http", "TCP", 8080, &[("127.0.0.2", None, true), ("127.0.0.3", None, true)]),
        slice("web", "dns", "UDP", 5353, &[("127.0.0.2", None, true)]),
        slice("other", "http", "TCP", 9999, &[("127.0.0.9", None, true)]),
    ];
    let d = run(vec![svc], slices);
    assert_eq!(
        table(&d),
        vec!["127.96.0.5:53/UDP -> 127.0.0.2:5353", "127.96.0.5:80/TCP -> 127.0.0.2:8080,127.0.0.3:8080"]
    );
    let route = d.routes.values().next().expect("a route");
    assert_eq!(route.service.to_string(), "ns/web:dns/UDP");
    assert_eq!(route.class, Class::Internal);
    assert_eq!(route.affinity, None);
}

#[test]
fn services_the_proxy_does_not_handle_get_no_listener() {
    let eps = |svc: &str| slice(svc, "http", "TCP", 80, &[("127.0.0.2", None, true)]);
    let headless = service("headless", "None", vec![sport("http", 80, "TCP", None)]);
    let mut external_name = service("ext", "127.96.0.6", vec![sport("http", 80, "TCP", None)]);
    spec(&mut external_name).type_ = Some("ExternalName".into());
    let unallocated = service("pending", "", vec![sport("http", 80, "TCP", None)]);
    let mut claimed = service("claimed", "127.96.0.7", vec![sport("http", 80, "TCP", None)]);
    claimed.metadata.labels = Some(BTreeMap::from([(PROXY_NAME_LABEL.to_string(), "other".to_string())]));
    let no_endpoints = service("empty", "127.96.0.8", vec![sport("http", 80, "TCP", None)]);
    let not_ready = service("notready", "127.96.0.9", vec![sport("http", 80, "TCP", None)]);
    let mut headless_slice = eps("labelled");
    if let Some(l) = headless_slice.metadata.labels.as_mut() {
        l.insert(HEADLESS_LABEL.into(), "".into());
    }
    let labelled = service("labelled", "127.96.0.10", vec![sport("http", 80, "TCP", None)]);
    let d = run(
        vec![headless, external_name, unallocated, claimed, no_endpoints, not_ready, labelled],
        vec![
            eps("headless"),
            eps("ext"),
            eps("pending"),
            eps("claimed"),
            slice("notready", "http", "TCP", 80, &[("127.0.0.2", None, false)]),
            headless_slice,
        ],
    );
    assert_eq!(table(&d), Vec::<String>::new());
}

#[test]
fn node_ports_external_ips_and_load_balancer_ips() {
    let mut svc = service("web", "127.96.0.5", vec![sport("http", 80, "TCP", Some(30080))]);
    spec(&mut svc).type_ = Some("LoadBalancer".into());
    spec(&mut svc).external_ips = Some(vec![" 127.1.0.1 ".into(), "fd00::1".into()]);
    let ingress = |ip: Option<&str>, mode: Option<&str>| LoadBalancerIngress {
        ip: ip.map(String::from),
        ip_mode: mode.map(String::from),
        hostname: Some("lb.example".into()),
        ..Default::default()
    };
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![
                ingress(Some("127.2.0.1"), None),
                ingress(Some("127.2.0.2"), Some("VIP")),
                ingress(Some("127.2.0.3"), Some("Proxy")),
                ingress(None, None),
            ]),
        }),
        ..Default::default()
    });
    let d = run(vec![svc], vec![slice("web", "http", "TCP", 8080, &[("127.0.0.2", None, true)])]);
    // IPv6 node address and externalIP: not this (IPv4-only) Service's family.
    assert_eq!(
        table(&d),
        vec![
            "127.0.0.1:30080/TCP -> 127.0.0.2:8080",
            "127.1.0.1:80/TCP -> 127.0.0.2:8080",
            "127.2.0.1:80/TCP -> 127.0.0.2:8080",
            "127.2.0.2:80/TCP -> 127.0.0.2:8080",
            "127.96.0.5:80/TCP -> 127.0.0.2:8080",
        ]
    );
    let classes: Vec<Class> = d.routes.values().map(|r| r.class).collect();
    assert_eq!(classes, vec![Class::External, Class::External, Class::External, Class::External, Class::Internal]);
}

#[test]
fn traffic_policies_pick_the_local_set_per_class() {
    let eps = &[("127.0.0.2", Some(NODE), true), ("127.0.0.3", Some("node-b"), true)];
    let mut itp = service("itp", "127.96.0.5", vec![sport("http", 80, "TCP", Some(30001))]);
    spec(&mut itp).internal_traffic_policy = Some("Local".into());
    let mut etp = service("etp", "127.96.0.6", vec![sport("http", 80, "TCP", Some(30002))]);
    spec(&mut etp).external_traffic_policy = Some("Local".into());
    let mut itp_remote_only = service("remote", "127.96.0.7", vec![sport("http", 80, "TCP", Some(30003))]);
    spec(&mut itp_remote_only).internal_traffic_policy = Some("Local".into());
    spec(&mut itp_remote_only).external_traffic_policy = Some("Local".into());
    let d = run(
        vec![itp, etp, itp_remote_only],
        vec![
            slice("itp", "http", "TCP", 80, eps),
            slice("etp", "http", "TCP", 80, eps),
            slice("remote", "http", "TCP", 80, &[("127.0.0.3", Some("node-b"), true)]),
        ],
    );
    assert_eq!(
        table(&d),
        vec![
            "127.0.0.1:30001/TCP -> 127.0.0.2:80,127.0.0.3:80", // ETP Cluster
            "127.0.0.1:30002/TCP -> 127.0.0.2:80",              // ETP Local
            // Neither listener of `remote`: no local endpoint, so clients are refused.
            "127.96.0.5:80/TCP -> 127.0.0.2:80",              // ITP Local
            "127.96.0.6:80/TCP -> 127.0.0.2:80,127.0.0.3:80", // ITP Cluster
        ]
    );
}

#[test]
fn client_ip_affinity_with_default_and_given_timeouts() {
    let mut default = service("a", "127.96.0.5", vec![sport("http", 80, "TCP", None)]);
    spec(&mut default).session_affinity = Some("ClientIP".into());
    let mut given = service("b", "127.96.0.6", vec![sport("http", 80, "TCP", None)]);
    spec(&mut given).session_affinity = Some("ClientIP".into());
    spec(&mut given).session_affinity_config =
        Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(7) }) });
    let mut none = service("c", "127.96.0.7", vec![sport("http", 80, "TCP", None)]);
    spec(&mut none).session_affinity = Some("None".into());
    let eps = &[("127.0.0.2", None, true)];
    let d = run(
        vec![default, given, none],
        vec![
            slice("a", "http", "TCP", 80, eps),
            slice("b", "http", "TCP", 80, eps),
            slice("c", "http", "TCP", 80, eps),
        ],
    );
    let affinity: Vec<Option<Duration>> = d.routes.values().map(|r| r.affinity).collect();
    assert_eq!(affinity, vec![Some(DEFAULT_AFFINITY_TIMEOUT), Some(Duration::from_secs(7)), None]);
}

#[test]
fn dual_stack_listeners_use_their_own_family() {
    let mut svc = service("web", "127.96.0.5", vec![sport("http", 80, "TCP", Some(30080))]);
    spec(&mut svc).cluster_ips = Some(vec!["127.96.0.5".into(), "fd00:96::5".into()]);
    let d = run(
        vec![svc],
        vec![
            slice("web", "http", "TCP", 8080, &[("127.0.0.2", None, true)]),
            slice("web", "http", "TCP", 8080, &[("fd00::2", None, true)]),
        ],
    );
    assert_eq!(
        table(&d),
        vec![
            "127.0.0.1:30080/TCP -> 127.0.0.2:8080",
            "127.96.0.5:80/TCP -> 127.0.0.2:8080",
            "[::1]:30080/TCP -> [fd00::2]:8080",
            "[fd00:96::5]:80/TCP -> [fd00::2]:8080",
        ]
    );
}

#[test]
fn colliding_addresses_go_to_the_older_service() {
    let mut old = service("old", "127.96.0.5", vec![sport("http", 80, "TCP", None)]);
    old.metadata.creation_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().expect("time")));
    spec(&mut old).external_ips = Some(vec!["127.1.0.1".into()]);
    let mut new = service("a-new", "127.96.0.6", vec![sport("http", 80, "TCP", None)]);
    new.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().expect("time")));
    spec(&mut new).external_ips = Some(vec!["127.1.0.1".into(), "127.1.0.1".into()]);
    let d = run(
        vec![new, old],
        vec![
            slice("old", "http", "TCP", 80, &[("127.0.0.2", None, true)]),
            slice("a-new", "http", "TCP", 80, &[("127.0.0.3", None, true)]),
        ],
    );
    assert_eq!(
        table(&d),
        vec![
            "127.1.0.1:80/TCP -> 127.0.0.2:80",
            "127.96.0.5:80/TCP -> 127.0.0.2:80",
            "127.96.0.6:80/TCP -> 127.0.0.3:80"
        ]
    );
    assert_eq!(d.conflicts.len(), 1, "{:?}", d.conflicts);
    assert_eq!(d.conflicts[0].kept.name, "old");
    assert_eq!(d.conflicts[0].dropped.name, "a-new");
}

#[test]
fn sctp_and_bad_ports_are_skipped() {
    let svc = service("web", "127.96.0.5", vec![sport("sctp", 80, "SCTP", None), sport("bad", 70000, "TCP", None)]);
    let d = run(
        vec![svc],
        vec![
            slice("web", "sctp", "SCTP", 80, &[("127.0.0.2", None, true)]),
            slice("web", "bad", "TCP", 80, &[("127.0.0.2", None, true)]),
        ],
    );
    assert!(d.routes.is_empty());
}

#[test]
fn endpoints_that_are_the_proxys_own_listeners_are_dropped() {
    let svc = service("loop", "127.96.0.5", vec![sport("http", 80, "TCP", Some(30080))]);
    let slices = vec![slice("loop", "http", "TCP", 80, &[("127.96.0.5", None, true), ("127.0.0.2", None, true)])];
    let d = run(vec![svc.clone()], slices.clone());
    assert_eq!(
        table(&d),
        vec!["127.0.0.1:30080/TCP -> 127.0.0.2:80", "127.96.0.5:80/TCP -> 127.0.0.2:80"],
        "the ClusterIP itself is not an endpoint"
    );
    let only_self = vec![slice("loop", "http", "TCP", 80, &[("127.96.0.5", None, true)])];
    assert!(run(vec![svc], only_self).routes.is_empty(), "nothing left: refused, no loop");
}

#[test]
fn load_balancer_source_ranges_restrict_only_load_balancer_ips() {
    let mut svc = service("lb", "127.96.0.5", vec![sport("http", 80, "TCP", Some(30080))]);
    spec(&mut svc).type_ = Some("LoadBalancer".into());
    spec(&mut svc).external_ips = Some(vec!["127.50.0.1".into()]);
    spec(&mut svc).load_balancer_source_ranges = Some(vec![" 10.0.0.0/8".into(), "192.168.1.0/24".into()]);
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress { ip: Some("127.240.0.1".into()), ..Default::default() }]),
        }),
        ..Default::default()
    });
    let d = run(vec![svc.clone()], vec![slice("lb", "http", "TCP", 8080, &[("127.0.0.2", None, true)])]);
    let sources = |addr: &str| {
        let listen = Listen { addr: addr.parse().expect("addr"), protocol: Protocol::Tcp };
        d.routes.get(&listen).map(|r| r.sources.clone()).expect("route")
    };
    let lb = sources("127.240.0.1:80");
    assert_eq!(lb.len(), 2);
    assert!(lb[0].contains("10.1.2.3".parse().expect("ip")) && !lb[0].contains("11.0.0.1".parse().expect("ip")));
    assert!(lb[1].contains("192.168.1.7".parse().expect("ip")));
    assert!(sources("127.96.0.5:80").is_empty(), "the ClusterIP admits everyone");
    assert!(sources("127.0.0.1:30080").is_empty(), "NodePorts are not subject to the ranges");
    assert!(sources("127.50.0.1:80").is_empty(), "externalIPs are not either");

    // The annotation when the field is empty; the node inside a range lets the LB IP itself in.
    spec(&mut svc).load_balancer_source_ranges = None;
    svc.metadata.annotations =
        Some(BTreeMap::from([(SOURCE_RANGES_ANNOTATION.to_string(), "127.0.0.0/8".to_string())]));
    let d = run(vec![svc], vec![slice("lb", "http", "TCP", 8080, &[("127.0.0.2", None, true)])]);
    let listen = Listen { addr: "127.240.0.1:80".parse().expect("addr"), protocol: Protocol::Tcp };
    let lb = &d.routes[&listen].sources;
    assert_eq!(lb.len(), 2, "{lb:?}");
    assert_eq!(lb[1], SourceRange { addr: "127.240.0.1".parse().expect("ip"), prefix: 32 });
    assert_eq!(SourceRange::parse("10.0.0.0/33"), None);
    assert!(SourceRange { addr: "::".parse().expect("ip"), prefix: 0 }.contains("fd00::1".parse().expect("ip")));
}
