//! Table-driven tests of the cluster zone, after CoreDNS `plugin/kubernetes/handler_test.go`,
//! `kubernetes_apex_test.go`, `reverse_test.go` and `handler_pod_verified_test.go`.

use super::*;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

const SOA: &str =
    "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1499347823 7200 1800 86400 5";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture object")
}

fn service(name: &str, spec: Value) -> Service {
    obj(json!({"metadata": {"name": name, "namespace": "testns"}, "spec": spec}))
}

fn http() -> Value {
    json!([{"name": "http", "protocol": "TCP", "port": 80}])
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Value, family: &str) -> EndpointSlice {
    obj(json!({
        "metadata": {"name": name, "namespace": "testns", "labels": {"kubernetes.io/service-name": service}},
        "addressType": family, "ports": ports, "endpoints": endpoints,
    }))
}

fn ep(ip: &str) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": true}})
}

fn fixture() -> ClusterData {
    let services = vec![
        service("svc1", json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": http()})),
        service("svcempty", json!({"clusterIP": "10.0.0.2", "ports": http()})),
        service("svc6", json!({"clusterIP": "1234:abcd::1", "clusterIPs": ["1234:abcd::1"], "ports": http()})),
        service(
            "svc-dual-stack",
            json!({"clusterIP": "10.0.0.3", "clusterIPs": ["10.0.0.3", "10::3"], "ports": http()}),
        ),
        service("svc-noports", json!({"clusterIP": "10.0.0.6"})),
        service(
            "multi",
            json!({"clusterIP": "10.0.0.5", "ports": [
                {"name": "http", "protocol": "TCP", "port": 80},
                {"name": "https", "protocol": "TCP", "port": 443},
                {"name": "dns", "protocol": "UDP", "port": 53},
            ]}),
        ),
        service("hdls1", json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": http()})),
        service("hdlsprtls", json!({"clusterIP": "None"})),
        service("hdls-unready", json!({"clusterIP": "None", "ports": http()})),
        service("external", json!({"type": "ExternalName", "externalName": "ext.interwebs.test"})),
        service(
            "external-to-service",
            json!({"type": "ExternalName", "externalName": "svc1.testns.svc.cluster.local"}),
        ),
        service("external-ip", json!({"type": "ExternalName", "externalName": "1.2.3.4"})),
        service("loop-a", json!({"type": "ExternalName", "externalName": "loop-b.testns.svc.cluster.local"})),
        service("loop-b", json!({"type": "ExternalName", "externalName": "loop-a.testns.svc.cluster.local."})),
    ];
    let http_port = json!([{"name": "http", "protocol": "TCP", "port": 80}]);
    let slices = vec![
        slice(
            "hdls1-v4",
            "hdls1",
            http_port.clone(),
            json!([
                ep("172.0.0.2"),
                ep("172.0.0.3"),
                {"addresses": ["172.0.0.4"], "hostname": "dup-name"},
                {"addresses": ["172.0.0.5"], "hostname": "dup-name", "conditions": {"ready": true}},
                {"addresses": ["172.0.0.9"], "conditions": {"ready": false}},
            ]),
            "IPv4",
        ),
        slice("hdls1-v6", "hdls1", http_port.clone(), json!([ep("5678:abcd::1"), ep("5678:abcd::2")]), "IPv6"),
        slice("hdlsprtls", "hdlsprtls", json!([]), json!([ep("172.0.0.20")]), "IPv4"),
        slice(
            "unready",
            "hdls-unready",
            http_port.clone(),
            json!([{"addresses": ["172.0.0.30"], "conditions": {"ready": false}}]),
            "IPv4",
        ),
        slice("svc1", "svc1", http_port, json!([{"addresses": ["172.0.0.40"], "hostname": "web-0"}]), "IPv4"),
    ];
    let pods: Vec<Pod> = vec![
        obj(
            json!({"metadata": {"name": "p1", "namespace": "testns"}, "status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}]}}),
        ),
        obj(json!({"metadata": {"name": "p2", "namespace": "default"}, "status": {"podIP": "10.244.0.6"}})),
        obj(
            json!({"metadata": {"name": "gone", "namespace": "testns", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"podIP": "10.244.0.7"}}),
        ),
    ];
    let namespaces: Vec<Namespace> =
        ["testns", "default", "kube-system"].iter().map(|n| obj(json!({"metadata": {"name": n}}))).collect();
    ClusterData::build(&services, &slices, &pods, &namespaces)
}

fn zone(synced: bool) -> Zone {
    let config =
        ZoneConfig { domain: "cluster.local".into(), ttl: 5, local_addrs: vec!["127.0.0.1:53".parse().expect("addr")] };
    Zone::new(&config, fixture(), 1499347823, synced)
}

struct Case {
    name: &'static str,
    qtype: QType,
    rcode: Rcode,
    answer: &'static [&'static str],
    ns: &'static [&'static str],
    extra: &'static [&'static str],
}

const fn case(name: &'static str, qtype: QType, rcode: Rcode, answer: &'static [&'static str]) -> Case {
    Case { name, qtype, rcode, answer, ns: &[], extra: &[] }
}

const fn nx(name: &'static str, qtype: QType) -> Case {
    Case { name, qtype, rcode: Rcode::NxDomain, answer: &[], ns: &[SOA], extra: &[] }
}

const fn nodata(name: &'static str, qtype: QType) -> Case {
    Case { name, qtype, rcode: Rcode::NoError, answer: &[], ns: &[SOA], extra: &[] }
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

fn want(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn run(zone: &Zone, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let Lookup::Answer(got) = zone.lookup(c.name, c.qtype) else {
            failures.push(format!("{} {:?}: not answered by the zone", c.name, c.qtype));
            continue;
        };
        let ok = got.rcode == c.rcode
            && sorted(&got.answers) == want(c.answer)
            && sorted(&got.authority) == want(c.ns)
            && sorted(&got.additionals) == want(c.extra);
        if !ok {
            failures.push(format!(
                "{} {:?}: got {:?} answer={:?} ns={:?} extra={:?}",
                c.name,
                c.qtype,
                got.rcode,
                sorted(&got.answers),
                sorted(&got.authority),
                sorted(&got.additionals)
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn cluster_ip_services() {
    use QType::*;
    use Rcode::*;
    run(
        &zone(true),
        &[
            case("svc1.testns.svc.cluster.local.", A, NoError, &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
            case(
                "svcempty.testns.svc.cluster.local.",
                A,
                NoError,
                &["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.2"],
            ),
            case(
                "svc6.testns.svc.cluster.local.",
                Aaaa,
                NoError,
                &["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"],
            ),
            nodata("svc1.testns.svc.cluster.local.", Aaaa),
            nodata("svc6.testns.svc.cluster.local.", A),
            case(
                "svc-dual-stack.testns.svc.cluster.local.",
                A,
                NoError,
                &["svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3"],
            ),
            case(
                "svc-dual-stack.testns.svc.cluster.local.",
                Aaaa,
                NoError,
                &["svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3"],
            ),
            // No ports: the name still resolves (CoreDNS gives it port -1).
            case(
                "svc-noports.testns.svc.cluster.local.",
                A,
                NoError,
                &["svc-noports.testns.svc.cluster.local. 5 IN A 10.0.0.6"],
            ),
            // Case-insensitive, and the answer keeps the question's spelling.
            case("SVC1.TestNS.svc.Cluster.Local.", A, NoError, &["SVC1.TestNS.svc.Cluster.Local. 5 IN A 10.0.0.1"]),
            case("svc1.testns.svc.cluster.local", A, NoError, &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
            // An A query on an SRV-style name answers the Service's address.
            case(
                "_http._tcp.svc1.testns.svc.cluster.local.",
                A,
                NoError,
                &["_http._tcp.svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
            ),
        ],
    );
}

#[test]
fn srv_records() {
    use QType::*;
    use Rcode::*;
    run(
        &zone(true),
        &[
            Case {
                name: "_http._tcp.svc1.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
                ns: &[],
                extra: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
            },
            Case {
                name: "svc1.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &["svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
                ns: &[],
                extra: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
            },
            Case {
                name: "_http._tcp.svc6.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &["_http._tcp.svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local."],
                ns: &[],
                extra: &["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"],
            },
            // Dual stack: two entries for one port, so weight 50, one SRV, both addresses as glue.
            Case {
                name: "svc-dual-stack.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &[
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &[
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3",
                ],
            },
            // All ports on the bare name; weight floor(100/3) = 33.
            Case {
                name: "multi.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &[
                    "multi.testns.svc.cluster.local. 5 IN SRV 0 33 443 multi.testns.svc.cluster.local.",
                    "multi.testns.svc.cluster.local. 5 IN SRV 0 33 53 multi.testns.svc.cluster.local.",
                    "multi.testns.svc.cluster.local. 5 IN SRV 0 33 80 multi.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["multi.testns.svc.cluster.local. 5 IN A 10.0.0.5"],
            },
            Case {
                name: "_dns._udp.multi.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &[
                    "_dns._udp.multi.testns.svc.cluster.local. 5 IN SRV 0 100 53 multi.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["multi.testns.svc.cluster.local. 5 IN A 10.0.0.5"],
            },
            // Protocol and port names are matched case-insensitively.
            Case {
                name: "_HTTPS._TCP.multi.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &[
                    "_HTTPS._TCP.multi.testns.svc.cluster.local. 5 IN SRV 0 100 443 multi.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["multi.testns.svc.cluster.local. 5 IN A 10.0.0.5"],
            },
            nx("_dns._tcp.multi.testns.svc.cluster.local.", Srv),
            nx("_nope._tcp.svc1.testns.svc.cluster.local.", Srv),
            nx("_http._tcp.svc-noports.testns.svc.cluster.local.", Srv),
            // The name exists but has no port: no SRV.
            nodata("svc-noports.testns.svc.cluster.local.", Srv),
            // Headless: one SRV per ready endpoint (duplicates by target merged), weight floor(100/6) = 16.
            Case {
                name: "_http._tcp.hdls1.testns.svc.cluster.local.",
                qtype: Srv,
                rcode: NoError,
                answer: &[
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &[
                    "172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
                    "172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
                    "5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
                    "5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
            },
            // ExternalName: no SRV, and no port prefix.
            nodata("external.testns.svc.cluster.local.", Srv),
            nx("_http._tcp.external.testns.svc.cluster.local.", Srv),
        ],
    );
}

#[test]
fn headless_services_and_endpoints() {
    use QType::*;
    use Rcode::*;
    run(
        &zone(true),
        &[
            case(
                "hdls1.testns.svc.cluster.local.",
                A,
                NoError,
                &[
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
            ),
            case(
                "hdls1.testns.svc.cluster.local.",
                Aaaa,
                NoError,
                &[
                    "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
                    "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2",
                ],
            ),
            case(
                "hdlsprtls.testns.svc.cluster.local.",
                A,
                NoError,
                &["hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"],
            ),
            case(
                "172-0-0-20.hdlsprtls.testns.svc.cluster.local.",
                A,
                NoError,
                &["172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"],
            ),
            case(
                "172-0-0-2.hdls1.testns.svc.cluster.local.",
                A,
                NoError,
                &["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"],
            ),
            case(
                "5678-abcd--1.hdls1.testns.svc.cluster.local.",
                Aaaa,
                NoError,
                &["5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"],
            ),
            case(
                "dup-name.hdls1.testns.svc.cluster.local.",
                A,
                NoError,
                &[
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
            ),
            // Endpoint names work for ClusterIP Services too.
            case(
                "web-0.svc1.testns.svc.cluster.local.",
                A,
                NoError,
                &["web-0.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.40"],
            ),
            // Not-ready addresses are not published; no ready endpoint at all is NXDOMAIN.
            nx("172-0-0-9.hdls1.testns.svc.cluster.local.", A),
            nx("hdls-unready.testns.svc.cluster.local.", A),
            nx("hdls-unready.testns.svc.cluster.local.", Aaaa),
            nx("bogusendpoint.hdls1.testns.svc.cluster.local.", A),
            nx("bogusendpoint.svc0.testns.svc.cluster.local.", A),
            // An IPv6-only endpoint asked for A: the name exists.
            nodata("5678-abcd--1.hdls1.testns.svc.cluster.local.", A),
        ],
    );
}

#[test]
fn external_names() {
    use QType::*;
    use Rcode::*;
    let zone = zone(true);
    run(
        &zone,
        &[
            case(
                "external.testns.svc.cluster.local.",
                Cname,
                NoError,
                &["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."],
            ),
            // In-zone targets are followed here.
            case(
                "external-to-service.testns.svc.cluster.local",
                A,
                NoError,
                &[
                    "external-to-service.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
                    "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
                ],
            ),
            // An IP is not a CNAME target: NXDOMAIN.
            nx("external-ip.testns.svc.cluster.local.", A),
            nx("external-ip.testns.svc.cluster.local.", Cname),
            nx("endpoint.external.testns.svc.cluster.local.", Cname),
            nx("subdomain.subdomain.external.testns.svc.cluster.local.", Cname),
            nodata("svc1.testns.svc.cluster.local.", Cname),
            // A loop of ExternalNames ends without answers.
            nodata("loop-a.testns.svc.cluster.local.", A),
        ],
    );
    // Out-of-zone targets are left for the server to resolve upstream.
    let Lookup::Answer(a) = zone.lookup("external.testns.svc.cluster.local.", A) else { panic!("ours") };
    assert_eq!(sorted(&a.answers), want(&["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]));
    assert_eq!(a.chase.as_deref(), Some("ext.interwebs.test."));
    let Lookup::Answer(a) = zone.lookup("external.testns.svc.cluster.local.", Aaaa) else { panic!("ours") };
    assert_eq!(a.chase.as_deref(), Some("ext.interwebs.test."));
}

#[test]
fn negative_answers() {
    use QType::*;
    run(
        &zone(true),
        &[
            // NXDOMAIN: unknown service, unknown namespace, bad grammar, too long.
            nx("svc0.testns.svc.cluster.local.", A),
            nx("svc0.testns.svc.cluster.local.", Aaaa),
            nx("svc0.svc-nons.svc.cluster.local.", A),
            nx("svc-nons.svc.cluster.local.", A),
            nx("foo.cluster.local.", A),
            nx("foo.cluster.local.", Ns),
            nx("foo.svc.cluster.local.", Ns),
            nx("svc1.testns.bogus.cluster.local.", A),
            nx("a.b.c.svc1.testns.svc.cluster.local.", A),
            nx("svc0.svc-nons.svc.cluster.local.", Txt),
            nx("svc0.testns.svc.cluster.local.", Mx),
            nx("svc0.testns.svc.cluster.local.", Other(13)),
            // NODATA: the name exists, the type does not.
            nodata("svc1.testns.svc.cluster.local.", Txt),
            nodata("svc1.testns.svc.cluster.local.", Mx),
            nodata("svc1.testns.svc.cluster.local.", Ptr),
            nodata("svc1.testns.svc.cluster.local.", Other(13)),
            nodata("svc1.testns.svc.cluster.local.", Soa),
            nodata("svc.cluster.local.", A),
            nodata("pod.cluster.local.", A),
            nodata("testns.svc.cluster.local.", A),
            nodata("testns.svc.cluster.local.", Txt),
            nodata("testns.pod.cluster.local.", A),
            nodata("svc.cluster.local.", Ns),
            nodata("testns.svc.cluster.local.", Ns),
            nodata("cluster.local.", A),
            nodata("cluster.local.", Aaaa),
            nodata("cluster.local.", Srv),
            nodata("cluster.local.", Other(13)),
        ],
    );
}

#[test]
fn apex_and_version() {
    use QType::*;
    use Rcode::*;
    run(
        &zone(true),
        &[
            case("cluster.local.", Soa, NoError, &[SOA]),
            case("Cluster.Local.", Soa, NoError, &[SOA]),
            Case {
                name: "cluster.local.",
                qtype: Ns,
                rcode: NoError,
                answer: &["cluster.local. 5 IN NS ns.dns.cluster.local."],
                ns: &[],
                extra: &["ns.dns.cluster.local. 5 IN A 127.0.0.1"],
            },
            case("ns.dns.cluster.local.", A, NoError, &["ns.dns.cluster.local. 5 IN A 127.0.0.1"]),
            nodata("ns.dns.cluster.local.", Aaaa),
            case("dns-version.cluster.local.", Txt, NoError, &["dns-version.cluster.local. 28800 IN TXT 1.1.0"]),
            case("DNS-Version.cluster.local.", Txt, NoError, &["DNS-Version.cluster.local. 28800 IN TXT 1.1.0"]),
            case("cluster.local.", Axfr, Refused, &[]),
            case("svc1.testns.svc.cluster.local.", Ixfr, Refused, &[]),
        ],
    );
}

#[test]
fn pods_are_verified() {
    use QType::*;
    use Rcode::*;
    run(
        &zone(true),
        &[
            case(
                "10-244-0-5.testns.pod.cluster.local.",
                A,
                NoError,
                &["10-244-0-5.testns.pod.cluster.local. 5 IN A 10.244.0.5"],
            ),
            case(
                "fd00--5.testns.pod.cluster.local.",
                Aaaa,
                NoError,
                &["fd00--5.testns.pod.cluster.local. 5 IN AAAA fd00::5"],
            ),
            nodata("10-244-0-5.testns.pod.cluster.local.", Aaaa),
            // The pod is in another namespace, does not exist, is terminating, or the name is no IP.
            nx("10-244-0-6.testns.pod.cluster.local.", A),
            nx("10-244-0-99.testns.pod.cluster.local.", A),
            nx("10-244-0-7.testns.pod.cluster.local.", A),
            nx("not-an-ip.testns.pod.cluster.local.", A),
            nx("10-244-0-5.nons.pod.cluster.local.", A),
            case(
                "10-244-0-6.default.pod.cluster.local.",
                A,
                NoError,
                &["10-244-0-6.default.pod.cluster.local. 5 IN A 10.244.0.6"],
            ),
        ],
    );
}

#[test]
fn reverse_names() {
    let zone = zone(true);
    let ptr = |name: &str| match zone.lookup(name, QType::Ptr) {
        Lookup::Answer(a) => Some(sorted(&a.answers)),
        Lookup::NotOurs => None,
    };
    assert_eq!(
        ptr("1.0.0.10.in-addr.arpa."),
        Some(want(&["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."]))
    );
    assert_eq!(
        ptr("3.0.0.10.IN-ADDR.ARPA."),
        Some(want(&["3.0.0.10.IN-ADDR.ARPA. 5 IN PTR svc-dual-stack.testns.svc.cluster.local."]))
    );
    let v6 = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.ip6.arpa.";
    assert_eq!(ptr(v6), Some(want(&[&format!("{v6} 5 IN PTR svc-dual-stack.testns.svc.cluster.local.")])));
    assert_eq!(
        ptr("2.0.0.172.in-addr.arpa."),
        Some(want(&["2.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-2.hdls1.testns.svc.cluster.local."]))
    );
    assert_eq!(
        ptr("4.0.0.172.in-addr.arpa."),
        Some(want(&["4.0.0.172.in-addr.arpa. 5 IN PTR dup-name.hdls1.testns.svc.cluster.local."]))
    );
    assert_eq!(
        ptr("40.0.0.172.in-addr.arpa."),
        Some(want(&["40.0.0.172.in-addr.arpa. 5 IN PTR web-0.svc1.testns.svc.cluster.local."]))
    );
    // Unknown, not ready, partial or malformed names, and other types fall through to the upstreams.
    for name in [
        "9.0.0.172.in-addr.arpa.",
        "99.0.0.10.in-addr.arpa.",
        "0.10.in-addr.arpa.",
        "x.0.0.10.in-addr.arpa.",
        "256.0.0.10.in-addr.arpa.",
    ] {
        assert_eq!(ptr(name), None, "{name}");
    }
    assert_eq!(zone.lookup("1.0.0.10.in-addr.arpa.", QType::A), Lookup::NotOurs);
    assert_eq!(zone.lookup("example.com.", QType::A), Lookup::NotOurs);
    assert_eq!(zone.lookup("local.", QType::A), Lookup::NotOurs);
}

#[test]
fn until_synced_missing_names_are_servfail() {
    let zone = zone(false);
    let Lookup::Answer(a) = zone.lookup("svc0.testns.svc.cluster.local.", QType::A) else { panic!("ours") };
    assert_eq!((a.rcode, sorted(&a.authority)), (Rcode::ServFail, want(&[SOA])));
    let Lookup::Answer(a) = zone.lookup("svc1.testns.svc.cluster.local.", QType::A) else { panic!("ours") };
    assert_eq!(a.rcode, Rcode::NoError);
}

#[test]
fn ttl_is_configurable_and_soa_ttl_capped() {
    let config = ZoneConfig { domain: "Example.Test.".into(), ttl: 3600, local_addrs: vec![] };
    let zone = Zone::new(&config, fixture(), 7, true);
    let Lookup::Answer(a) = zone.lookup("svc0.testns.svc.example.test.", QType::A) else { panic!("ours") };
    assert_eq!(
        sorted(&a.authority),
        want(&["example.test. 300 IN SOA ns.dns.example.test. hostmaster.example.test. 7 7200 1800 86400 3600"])
    );
    let Lookup::Answer(a) = zone.lookup("svc1.testns.svc.example.test.", QType::A) else { panic!("ours") };
    assert_eq!(sorted(&a.answers), want(&["svc1.testns.svc.example.test. 3600 IN A 10.0.0.1"]));
    assert_eq!(zone.lookup("svc1.testns.svc.cluster.local.", QType::A), Lookup::NotOurs);
}

#[test]
fn ns_names_follow_the_dns_service_endpoints() {
    use crate::data::{Endpoint, EndpointGroup, Port, ServiceEntry};
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let dns_port = |n: i32| Port { name: "dns".into(), protocol: "UDP".into(), port: n };
    let mut data = fixture();
    let dns = ("kube-system".to_string(), "kube-dns".to_string());
    let api = ("default".to_string(), "kubernetes".to_string());
    for (key, cluster_ip, port) in [(&dns, "10.0.0.10", 53), (&api, "10.0.0.100", 6443)] {
        data.services.insert(key.clone(), ServiceEntry { kind: Kind::ClusterIp(vec![ip(cluster_ip)]), ports: vec![] });
        let endpoints = vec![Endpoint { ip: ip("127.0.0.1"), hostname: "127-0-0-1".into() }];
        data.endpoints.insert(key.clone(), vec![EndpointGroup { ports: vec![dns_port(port)], endpoints }]);
    }
    let config =
        ZoneConfig { domain: "cluster.local".into(), ttl: 5, local_addrs: vec!["127.0.0.1:53".parse().expect("addr")] };
    let zone = Zone::new(&config, data, 1, true);
    // The API server shares the IP but not the port.
    let Lookup::Answer(a) = zone.lookup("cluster.local.", QType::Ns) else { panic!("ours") };
    assert_eq!(sorted(&a.answers), want(&["cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."]));
    assert_eq!(sorted(&a.additionals), want(&["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"]));
    let Lookup::Answer(a) = zone.lookup("ns.dns.cluster.local.", QType::A) else { panic!("ours") };
    assert_eq!(sorted(&a.answers), want(&["ns.dns.cluster.local. 5 IN A 10.0.0.10"]));
}

#[test]
fn reverse_ip_parsing() {
    assert_eq!(reverse_ip("4.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().expect("ip")));
    assert_eq!(reverse_ip("4.3.2.1.in-addr.arpa.extra"), None);
    assert_eq!(reverse_ip("04.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().expect("ip")));
    assert_eq!(reverse_ip("1234.3.2.1.in-addr.arpa"), None);
    assert_eq!(reverse_ip(".3.2.1.in-addr.arpa"), None);
    let nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa";
    assert_eq!(reverse_ip(nibbles), Some("1234:abcd::1".parse().expect("ip")));
    assert_eq!(reverse_ip(&nibbles.replacen('1', "g", 1)), None);
    assert_eq!(reverse_ip(&nibbles[2..]), None);
}

#[test]
fn grammar() {
    let r = parse("_http._tcp.svc1.testns.svc").expect("valid");
    assert_eq!((r.port, r.protocol, r.service, r.namespace, r.pod_or_svc), ("http", "tcp", "svc1", "testns", "svc"));
    let r = parse("ep.svc1.testns.svc").expect("valid");
    assert_eq!((r.endpoint, r.service), ("ep", "svc1"));
    assert_eq!(parse("").expect("apex"), Request::default());
    assert_eq!(parse("svc").expect("svc"), Request::default());
    assert!(parse("x.testns.bogus").is_err());
    assert!(parse("a.b.c.svc1.testns.svc").is_err());
    let r = parse("testns.pod").expect("valid");
    assert_eq!((r.namespace, r.service, r.pod_or_svc), ("testns", "", "pod"));
}
