//! Cluster DNS end to end: an in-process cluster, `kplane_dns::serve` on a loopback port, objects made
//! through kube-rs, questions asked over real UDP and TCP sockets. Other names go to a fake upstream
//! that this file runs on 127.0.0.1; nothing leaves the machine.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane_dns::{DnsConfig, DnsServer};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    cluster: kplane::Cluster,
    dns: DnsServer,
    upstream: FakeUpstream,
}

async fn start() -> Env {
    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let upstream = FakeUpstream::start().await;
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstreams: vec![upstream.addr],
        ..DnsConfig::default()
    };
    let dns = kplane_dns::serve(cluster.client(), config).await.expect("dns starts");
    Env { cluster, dns, upstream }
}

impl Env {
    fn addr(&self) -> SocketAddr {
        self.dns.local_addr()
    }

    async fn create_service(&self, ns: &str, name: &str, spec: Value) -> Service {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service");
        let api: Api<Service> = Api::namespaced(self.cluster.client(), ns);
        api.create(&PostParams::default(), &svc).await.expect("create service")
    }

    async fn create_slice(&self, ns: &str, service: &str, name: &str, ports: Value, endpoints: Value) {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .expect("slice");
        let api: Api<EndpointSlice> = Api::namespaced(self.cluster.client(), ns);
        api.create(&PostParams::default(), &slice).await.expect("create slice");
    }
}

// ---- asking questions ------------------------------------------------------------------------

fn query_message(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(server).await.expect("connect");
    s.write_all(&(bytes.len() as u16).to_be_bytes()).await.expect("write");
    s.write_all(bytes).await.expect("write");
    let read = async {
        let n = s.read_u16().await.ok()?;
        let mut reply = vec![0u8; usize::from(n)];
        s.read_exact(&mut reply).await.ok()?;
        Some(reply)
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok().flatten()
}

fn parse(bytes: Option<Vec<u8>>, id: u16) -> Message {
    let bytes = bytes.expect("an answer");
    let m = Message::from_vec(&bytes).expect("a valid message");
    assert_eq!(m.metadata.id, id, "reply id");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

async fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    udp_with(server, query_message(name, rtype, Some(1232))).await
}

async fn udp_with(server: SocketAddr, m: Message) -> Message {
    parse(udp_raw(server, &m.to_vec().expect("encode")).await, m.metadata.id)
}

async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let m = query_message(name, rtype, None);
    parse(tcp_raw(server, &m.to_vec().expect("encode")).await, m.metadata.id)
}

/// As a stub resolver does: UDP, then TCP when the answer is truncated.
async fn resolve(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let m = udp(server, name, rtype).await;
    if m.metadata.truncation { tcp(server, name, rtype).await } else { m }
}

fn rdata(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn soa(m: &Message) -> &SOA {
    match m.authorities.as_slice() {
        [Record { data: RData::SOA(soa), .. }] => soa,
        other => panic!("want one SOA in authority, got {other:?}"),
    }
}

/// Negative answer: the rcode, no answers, the zone's SOA in authority.
fn assert_negative(m: &Message, rcode: ResponseCode) {
    assert_eq!(m.metadata.response_code, rcode, "{m:?}");
    assert!(m.answers.is_empty(), "{:?}", m.answers);
    assert!(m.metadata.authoritative);
    assert_eq!(soa(m).mname.to_ascii(), "ns.dns.cluster.local.");
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reverse(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

fn cluster_ip(svc: &Service) -> Ipv4Addr {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok()).expect("a cluster IP")
}

// ---- the fake upstream -----------------------------------------------------------------------

/// A resolver on 127.0.0.1 that knows a few names under `example.test` and logs what it is asked.
struct FakeUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeUpstream {
    async fn start() -> Self {
        // One port for both protocols; another socket may hold the UDP port's number for TCP.
        let (udp, tcp) = 'pair: {
            for _ in 0..16 {
                let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("addr")).await {
                    break 'pair (udp, tcp);
                }
            }
            panic!("no port free for both UDP and TCP");
        };
        let addr = udp.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let reply = upstream_answer(&q, &log);
                let limit = q.edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
                let mut bytes = reply.to_vec().expect("encode");
                if bytes.len() > limit {
                    bytes = reply.truncate().to_vec().expect("encode");
                }
                let _ = udp.send_to(&bytes, from).await;
            }
        });
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    while let Ok(n) = s.read_u16().await {
                        let mut q = vec![0u8; usize::from(n)];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Ok(q) = Message::from_vec(&q) else { return };
                        let bytes = upstream_answer(&q, &log).to_vec().expect("encode");
                        let _ = s.write_all(&(bytes.len() as u16).to_be_bytes()).await;
                        let _ = s.write_all(&bytes).await;
                    }
                });
            }
        });
        FakeUpstream { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("log").clone()
    }
}

fn upstream_answer(q: &Message, log: &Mutex<Vec<String>>) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.edns = q.edns.clone();
    let Some(query) = q.queries.first() else { return m };
    m.add_query(query.clone());
    let name = query.name().to_lowercase().to_ascii();
    log.lock().expect("log").push(format!("{name} {}", query.query_type()));
    let a = |last: u8| Record::from_rdata(query.name().clone(), 60, RData::A(A::new(192, 0, 2, last)));
    match (name.as_str(), query.query_type()) {
        ("example.test.", RecordType::A) => {
            m.add_answer(a(1));
        }
        ("ext.example.test.", RecordType::A) => {
            m.add_answer(a(7));
        }
        ("big.example.test.", RecordType::A) => {
            m.add_answers((1..=60).map(a));
        }
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii("example.test.").expect("name");
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 1, 1, 1, 30);
            m.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        }
    }
    m
}

// ---- the tests -------------------------------------------------------------------------------

#[tokio::test]
async fn cluster_ip_services_over_udp_and_tcp() {
    let env = start().await;
    let svc = env
        .create_service(
            "default",
            "web",
            json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        )
        .await;
    let ip = cluster_ip(&svc);
    let name = "web.default.svc.cluster.local.";
    eventually("the service's A record", || async { !udp(env.addr(), name, RecordType::A).await.answers.is_empty() })
        .await;

    for m in [udp(env.addr(), name, RecordType::A).await, tcp(env.addr(), name, RecordType::A).await] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(rdata(&m.answers), vec![ip.to_string()]);
        assert_eq!(m.answers[0].ttl, 5);
    }
    // EDNS in, EDNS out.
    assert!(udp(env.addr(), name, RecordType::A).await.edns.is_some());
    assert!(tcp(env.addr(), name, RecordType::A).await.edns.is_none());
    // Names are case-insensitive; the answer keeps the question's spelling.
    let m = udp(env.addr(), "WEB.Default.SVC.cluster.LOCAL.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec![ip.to_string()]);
    assert_eq!(m.answers[0].name.to_ascii(), "WEB.Default.SVC.cluster.LOCAL.");
    // An IPv4 service has no AAAA: NODATA.
    assert_negative(&udp(env.addr(), name, RecordType::AAAA).await, ResponseCode::NoError);

    // SRV per named port, and all ports on the bare name (weight 100 / 2).
    let m = udp(env.addr(), "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(rdata(&m.answers), vec!["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(rdata(&m.additionals), vec![ip.to_string()]);
    let m = tcp(env.addr(), "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(rdata(&m.answers), vec!["0 100 53 web.default.svc.cluster.local."]);
    let m = udp(env.addr(), name, RecordType::SRV).await;
    assert_eq!(
        rdata(&m.answers),
        vec!["0 50 53 web.default.svc.cluster.local.", "0 50 80 web.default.svc.cluster.local."]
    );
    assert_negative(
        &udp(env.addr(), "_http._udp.web.default.svc.cluster.local.", RecordType::SRV).await,
        ResponseCode::NXDomain,
    );

    // PTR of the ClusterIP.
    let m = udp(env.addr(), &reverse(ip), RecordType::PTR).await;
    assert_eq!(rdata(&m.answers), vec![name]);

    // The built-in services (conformance: "should provide DNS for the cluster").
    let m = tcp(env.addr(), "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.96.0.1"]);
    let m = udp(env.addr(), "kube-dns.kube-system.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.96.0.10"]);
    let m = udp(env.addr(), &reverse(Ipv4Addr::new(127, 96, 0, 1)), RecordType::PTR).await;
    assert_eq!(rdata(&m.answers), vec!["kubernetes.default.svc.cluster.local."]);

    // The schema version.
    let m = udp(env.addr(), "dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!((rdata(&m.answers), m.answers[0].ttl), (vec!["1.1.0".to_string()], 28800));
    assert!(env.upstream.seen().is_empty(), "cluster names were forwarded: {:?}", env.upstream.seen());
}

#[tokio::test]
async fn headless_services_answer_ready_endpoints() {
    let env = start().await;
    env.create_service("default", "db", json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]})).await;
    env.create_slice(
        "default",
        "db",
        "db-1",
        json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        json!([
            {"addresses": ["127.244.0.11"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["127.244.0.12"], "conditions": {"ready": true}},
            {"addresses": ["127.244.0.13"], "conditions": {"ready": false}},
        ]),
    )
    .await;
    let name = "db.default.svc.cluster.local.";
    eventually("the endpoints", || async { udp(env.addr(), name, RecordType::A).await.answers.len() == 2 }).await;
    let m = tcp(env.addr(), name, RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.244.0.11", "127.244.0.12"]);

    // Per-endpoint names: the hostname (pod hostname + subdomain), else the dashed IP.
    let m = udp(env.addr(), "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.244.0.11"]);
    let m = udp(env.addr(), "127-244-0-12.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.244.0.12"]);
    assert_negative(
        &udp(env.addr(), "127-244-0-13.db.default.svc.cluster.local.", RecordType::A).await,
        ResponseCode::NXDomain,
    );

    // SRV: one per endpoint, targets the endpoint names, weight 100 / 2.
    let m = udp(env.addr(), "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(
        rdata(&m.answers),
        vec!["0 50 5432 127-244-0-12.db.default.svc.cluster.local.", "0 50 5432 db-0.db.default.svc.cluster.local."]
    );
    assert_eq!(rdata(&m.additionals), vec!["127.244.0.11", "127.244.0.12"]);

    // PTR of an endpoint IP.
    let m = udp(env.addr(), &reverse(Ipv4Addr::new(127, 244, 0, 11)), RecordType::PTR).await;
    assert_eq!(rdata(&m.answers), vec!["db-0.db.default.svc.cluster.local."]);

    // No ready endpoint at all: NXDOMAIN.
    env.create_service("default", "empty", json!({"clusterIP": "None", "ports": [{"port": 80}]})).await;
    env.create_slice(
        "default",
        "empty",
        "empty-1",
        json!([]),
        json!([{"addresses": ["127.244.0.20"], "conditions": {"ready": false}}]),
    )
    .await;
    let m = udp(env.addr(), "empty.default.svc.cluster.local.", RecordType::A).await;
    assert_negative(&m, ResponseCode::NXDomain);
}

#[tokio::test]
async fn external_names_are_cnames_and_follow_changes() {
    let env = start().await;
    env.create_service("default", "ext", json!({"type": "ExternalName", "externalName": "ext.example.test"})).await;
    let name = "ext.default.svc.cluster.local.";
    eventually("the CNAME", || async { !udp(env.addr(), name, RecordType::CNAME).await.answers.is_empty() }).await;
    let m = tcp(env.addr(), name, RecordType::CNAME).await;
    assert_eq!(rdata(&m.answers), vec!["ext.example.test."]);
    // An A question gets the CNAME and the target's address from upstream.
    let m = udp(env.addr(), name, RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["192.0.2.7", "ext.example.test."]);
    assert!(matches!(m.answers[0].data, RData::CNAME(_)), "CNAME first");
    // No SRV and no port names for ExternalName.
    assert_negative(&udp(env.addr(), name, RecordType::SRV).await, ResponseCode::NoError);
    assert_negative(
        &udp(env.addr(), "_http._tcp.ext.default.svc.cluster.local.", RecordType::SRV).await,
        ResponseCode::NXDomain,
    );

    // A changed externalName is followed; then a switch to ClusterIP gives an A record.
    let api: Api<Service> = Api::namespaced(env.cluster.client(), "default");
    api.patch("ext", &PatchParams::default(), &Patch::Merge(json!({"spec": {"externalName": "other.example.test"}})))
        .await
        .expect("patch");
    eventually("the new target", || async {
        rdata(&udp(env.addr(), name, RecordType::CNAME).await.answers) == vec!["other.example.test."]
    })
    .await;
    let patch = json!({"spec": {"type": "ClusterIP", "externalName": null, "ports": [{"port": 80}]}});
    let svc = api.patch("ext", &PatchParams::default(), &Patch::Merge(patch)).await.expect("patch to ClusterIP");
    let ip = cluster_ip(&svc).to_string();
    eventually("the A record", || async {
        rdata(&udp(env.addr(), name, RecordType::A).await.answers) == vec![ip.clone()]
    })
    .await;
    // An IP as externalName is no CNAME target: NXDOMAIN.
    env.create_service("default", "ext-ip", json!({"type": "ExternalName", "externalName": "192.0.2.9"})).await;
    let ext_ip = "ext-ip.default.svc.cluster.local.";
    eventually("the service", || async {
        udp(env.addr(), ext_ip, RecordType::A).await.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
}

#[tokio::test]
async fn pod_records_are_verified() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.cluster.client(), "default");
    // Bound to a node that is not kplane's own, so the node agent leaves its status to the test
    // (and the Node exists, so pod GC leaves the pod).
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.cluster.client());
    let node = serde_json::from_value(json!({"metadata": {"name": "other-node"}})).expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": "other-node", "containers": [{"name": "c", "image": "none"}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let name = "127-244-0-77.default.pod.cluster.local.";
    assert_negative(&udp(env.addr(), name, RecordType::A).await, ResponseCode::NXDomain);
    let status = json!({"status": {"podIP": "127.244.0.77", "podIPs": [{"ip": "127.244.0.77"}]}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
    eventually("the pod record", || async {
        rdata(&udp(env.addr(), name, RecordType::A).await.answers) == vec!["127.244.0.77"]
    })
    .await;
    let m = tcp(env.addr(), name, RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.244.0.77"]);
    // The IP in another namespace does not exist.
    assert_negative(
        &udp(env.addr(), "127-244-0-77.kube-system.pod.cluster.local.", RecordType::A).await,
        ResponseCode::NXDomain,
    );
}

#[tokio::test]
async fn negative_answers_tell_nxdomain_from_nodata() {
    let env = start().await;
    let addr = env.addr();
    // NXDOMAIN: unknown service, namespace, grammar, and a TXT where nothing exists.
    for (name, rtype) in [
        ("nope.default.svc.cluster.local.", RecordType::A),
        ("nope.default.svc.cluster.local.", RecordType::AAAA),
        ("kubernetes.nons.svc.cluster.local.", RecordType::A),
        ("nons.svc.cluster.local.", RecordType::A),
        ("foo.cluster.local.", RecordType::A),
        ("a.b.c.kubernetes.default.svc.cluster.local.", RecordType::A),
        ("nope.default.svc.cluster.local.", RecordType::TXT),
        ("nope.default.svc.cluster.local.", RecordType::Unknown(65280)),
    ] {
        let m = udp(addr, name, rtype).await;
        assert_negative(&m, ResponseCode::NXDomain);
        let soa_record = &m.authorities[0];
        let soa = soa(&m);
        assert_eq!(
            (
                soa_record.name.to_ascii(),
                soa_record.ttl,
                soa.rname.to_ascii(),
                soa.refresh,
                soa.retry,
                soa.expire,
                soa.minimum
            ),
            ("cluster.local.".into(), 5, "hostmaster.cluster.local.".into(), 7200, 1800, 86400, 5),
            "{name}"
        );
    }
    // NODATA: the name exists, the type does not.
    for (name, rtype) in [
        ("kubernetes.default.svc.cluster.local.", RecordType::TXT),
        ("kubernetes.default.svc.cluster.local.", RecordType::MX),
        ("kubernetes.default.svc.cluster.local.", RecordType::AAAA),
        ("kubernetes.default.svc.cluster.local.", RecordType::Unknown(65280)),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
    ] {
        assert_negative(&tcp(addr, name, rtype).await, ResponseCode::NoError);
    }
    // The apex: SOA and NS answer.
    let m = udp(addr, "cluster.local.", RecordType::SOA).await;
    assert!(matches!(m.answers.as_slice(), [Record { data: RData::SOA(_), .. }]));
    let m = udp(addr, "cluster.local.", RecordType::NS).await;
    assert_eq!(rdata(&m.answers), vec!["ns.dns.cluster.local."]);
    assert_eq!(rdata(&m.additionals), vec!["127.0.0.1"]);
    // Zone transfers are refused.
    let m = tcp(addr, "cluster.local.", RecordType::AXFR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(env.upstream.seen().is_empty(), "cluster names were forwarded: {:?}", env.upstream.seen());
}

#[tokio::test]
async fn other_names_are_forwarded_and_cached() {
    let env = start().await;
    let addr = env.addr();
    let m = udp(addr, "example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_available && !m.metadata.authoritative);
    assert_eq!(rdata(&m.answers), vec!["192.0.2.1"]);
    // Answered from the cache the second time, TTL counting down from 60.
    let m = tcp(addr, "EXAMPLE.test.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["192.0.2.1"]);
    assert!(m.answers[0].ttl <= 60);
    let asked = |what: &str| env.upstream.seen().iter().filter(|s| *s == what).count();
    assert_eq!(asked("example.test. A"), 1);
    // NXDOMAIN from upstream is passed on with its SOA.
    let m = udp(addr, "missing.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities.len(), 1);
    // A reverse name no Service or endpoint has falls through to upstream.
    let m = udp(addr, "9.9.9.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(asked("9.9.9.127.in-addr.arpa. PTR"), 1);
    // A large upstream answer: truncated to a client without EDNS, whole over TCP.
    let m = udp_with(addr, query_message("big.example.test.", RecordType::A, None)).await;
    assert!(m.metadata.truncation);
    assert_eq!(resolve(addr, "big.example.test.", RecordType::A).await.answers.len(), 60);
    assert_eq!(tcp(addr, "big.example.test.", RecordType::A).await.answers.len(), 60);
    // Cluster names never reach the upstream.
    udp(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert!(env.upstream.seen().iter().all(|s| !s.contains("cluster.local")), "{:?}", env.upstream.seen());

    // With no reachable upstream: SERVFAIL, and the cluster still answers.
    let closed = UdpSocket::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let config =
        DnsConfig { listen: "127.0.0.1:0".parse().expect("addr"), upstreams: vec![closed], ..DnsConfig::default() };
    let lonely = kplane_dns::serve(env.cluster.client(), config).await.expect("dns starts");
    let m = udp(lonely.local_addr(), "example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = udp(lonely.local_addr(), "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.96.0.1"]);
    lonely.shutdown().await;
}

#[tokio::test]
async fn live_updates_are_answered_without_resync() {
    let env = start().await;
    let name = "late.default.svc.cluster.local.";
    assert_negative(&udp(env.addr(), name, RecordType::A).await, ResponseCode::NXDomain);
    let svc = env.create_service("default", "late", json!({"ports": [{"port": 80}]})).await;
    let ip = cluster_ip(&svc).to_string();
    eventually("the new service", || async {
        rdata(&udp(env.addr(), name, RecordType::A).await.answers) == vec![ip.clone()]
    })
    .await;
    let api: Api<Service> = Api::namespaced(env.cluster.client(), "default");
    api.delete("late", &DeleteParams::default()).await.expect("delete");
    eventually("the deletion", || async {
        udp(env.addr(), name, RecordType::A).await.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
    // A new endpoint appears on a headless service.
    env.create_service("default", "grow", json!({"clusterIP": "None", "ports": [{"port": 80}]})).await;
    env.create_slice("default", "grow", "grow-1", json!([]), json!([{"addresses": ["127.244.0.50"]}])).await;
    let grow = "grow.default.svc.cluster.local.";
    eventually("the first endpoint", || async { udp(env.addr(), grow, RecordType::A).await.answers.len() == 1 }).await;
    env.create_slice("default", "grow", "grow-2", json!([]), json!([{"addresses": ["127.244.0.51"]}])).await;
    eventually("the second endpoint", || async { udp(env.addr(), grow, RecordType::A).await.answers.len() == 2 }).await;
}

#[tokio::test]
async fn new_services_answer_at_once_and_existing_names_never_fail_during_churn() {
    let env = start().await;
    let api: Api<Service> = Api::namespaced(env.cluster.client(), "default");
    // 300 Services present, created 50 at a time.
    let mut existing: Vec<(String, String)> = Vec::new();
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let names: Vec<String> = chunk.iter().map(|i| format!("old-{i}")).collect();
        let spec = json!({"ports": [{"name": "http", "port": 80}]});
        let made =
            futures::future::join_all(names.iter().map(|n| env.create_service("default", n, spec.clone()))).await;
        for svc in made {
            let name = svc.metadata.name.clone().expect("name");
            existing.push((format!("{name}.default.svc.cluster.local."), cluster_ip(&svc).to_string()));
        }
    }
    let last = existing.last().cloned().expect("services");
    eventually("the last of 300", || async {
        rdata(&udp(env.addr(), &last.0, RecordType::A).await.answers) == vec![last.1.clone()]
    })
    .await;
    // Ask existing names (A and SRV) in a loop while Services come, change and go.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (addr, stop, existing) = (env.addr(), stop.clone(), existing.clone());
        tokio::spawn(async move {
            let (mut asked, mut wrong) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (name, ip) = &existing[asked * 7 % existing.len()];
                let m = udp(addr, name, RecordType::A).await;
                if rdata(&m.answers) != vec![ip.clone()] {
                    wrong.push(format!("{name} A: {:?} {:?}", m.metadata.response_code, rdata(&m.answers)));
                }
                let srv = format!("_http._tcp.{name}");
                let m = udp(addr, &srv, RecordType::SRV).await;
                if m.metadata.response_code != ResponseCode::NoError || m.answers.len() != 1 {
                    wrong.push(format!("{srv} SRV: {:?}", m.metadata.response_code));
                }
                asked += 1;
            }
            (asked, wrong)
        })
    };
    for i in 0..40 {
        // A new Service answers as soon as its watch event is applied: no rebuild to wait for.
        let svc = env.create_service("default", &format!("new-{i}"), json!({"ports": [{"port": 80}]})).await;
        let (name, ip) = (format!("new-{i}.default.svc.cluster.local."), cluster_ip(&svc).to_string());
        eventually("a new service", || async {
            rdata(&udp(env.addr(), &name, RecordType::A).await.answers) == vec![ip.clone()]
        })
        .await;
        // An existing Service changes (an event for a name being asked), another one goes.
        let patch = json!({"metadata": {"labels": {"round": i.to_string()}}});
        api.patch(&format!("old-{}", i * 7 % 300), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
        if i % 2 == 0 {
            api.delete(&format!("new-{}", i / 2), &DeleteParams::default()).await.expect("delete");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (asked, wrong) = asker.await.expect("asker");
    assert!(asked >= 40, "asked only {asked} times");
    assert!(
        wrong.is_empty(),
        "{} of {asked} answers for existing names were wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[tokio::test]
async fn large_headless_answers_truncate_and_retry_over_tcp() {
    let env = start().await;
    env.create_service("default", "many", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})).await;
    let endpoints: Vec<Value> = (1..=100).map(|i| json!({"addresses": [format!("127.244.1.{i}")]})).collect();
    env.create_slice(
        "default",
        "many",
        "many-1",
        json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
        json!(endpoints),
    )
    .await;
    let name = "many.default.svc.cluster.local.";
    eventually("the endpoints", || async { tcp(env.addr(), name, RecordType::A).await.answers.len() == 100 }).await;
    // Without EDNS: at most 512 bytes, TC set.
    let q = query_message(name, RecordType::A, None);
    let raw = udp_raw(env.addr(), &q.to_vec().expect("encode")).await.expect("answer");
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let m = parse(Some(raw), q.metadata.id);
    assert!(m.metadata.truncation && m.answers.len() < 100);
    // With EDNS 1232: still too big, TC set, within the advertised size.
    let q = query_message(name, RecordType::A, Some(1232));
    let raw = udp_raw(env.addr(), &q.to_vec().expect("encode")).await.expect("answer");
    assert!(raw.len() <= 1232, "{} bytes", raw.len());
    assert!(parse(Some(raw), q.metadata.id).metadata.truncation);
    // The resolver's retry over TCP gets everything.
    let m = resolve(env.addr(), name, RecordType::A).await;
    assert!(!m.metadata.truncation);
    let want: Vec<IpAddr> = (1..=100).map(|i| IpAddr::V4(Ipv4Addr::new(127, 244, 1, i))).collect();
    let mut got: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(got, want);
    let m = resolve(env.addr(), "_http._tcp.many.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!((m.answers.len(), m.additionals.len()), (100, 100));
    assert_eq!(rdata(&m.answers[..1])[0].split(' ').nth(1), Some("1"), "weight floor(100/100)");
}

#[tokio::test]
async fn bad_input_gets_an_error_or_silence_and_no_crash() {
    let env = start().await;
    let addr = env.addr();
    let header = |id: u16, flags: u16, qd: u16| {
        let mut h = Vec::new();
        for v in [id, flags, qd, 0, 0, 0] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h
    };
    // Too short for a header, and a response: silence.
    assert!(udp_raw(addr, &[1, 2, 3]).await.is_none());
    assert!(udp_raw(addr, &header(7, 0x8100, 0)).await.is_none());
    // A header promising a question that is not there: FORMERR.
    let m = parse(udp_raw(addr, &header(8, 0x0100, 1)).await, 8);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR, as CoreDNS (miekg/dns) does.
    let mut two = query_message("kubernetes.default.svc.cluster.local.", RecordType::A, None);
    two.add_query(Query::query(Name::from_ascii("example.test.").expect("name"), RecordType::A));
    assert_eq!(udp_with(addr, two).await.metadata.response_code, ResponseCode::FormErr);
    // Class CH: REFUSED. Opcode STATUS: NOTIMP. EDNS version 1: BADVERS.
    let mut chaos = query_message("version.bind.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(udp_with(addr, chaos).await.metadata.response_code, ResponseCode::Refused);
    let mut status = query_message("kubernetes.default.svc.cluster.local.", RecordType::A, None);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(udp_with(addr, status).await.metadata.response_code, ResponseCode::NotImp);
    let mut v1 = query_message("kubernetes.default.svc.cluster.local.", RecordType::A, Some(1232));
    if let Some(e) = v1.edns.as_mut() {
        e.set_version(1);
    }
    let m = udp_with(addr, v1).await;
    // BADVERS is 16, which hickory decodes as its alias BADSIG.
    assert_eq!(u16::from(m.metadata.response_code), u16::from(ResponseCode::BADVERS));
    // A name cut off mid-label: FORMERR or silence, never a crash.
    let mut cut = query_message("kubernetes.default.svc.cluster.local.", RecordType::A, None).to_vec().expect("encode");
    cut.truncate(20);
    if let Some(raw) = udp_raw(addr, &cut).await {
        assert_eq!(Message::from_vec(&raw).expect("valid").metadata.response_code, ResponseCode::FormErr);
    }
    // TCP: a frame longer than what follows, then close; a garbage frame.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0x01, 0x00, 0xde, 0xad]).await.expect("write");
    drop(s);
    assert!(tcp_raw(addr, &[0xff; 5]).await.is_none());
    // A bounded flood of random packets from one socket.
    let flood = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..2000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|j| (seed.rotate_left(j as u32 % 64) as u8) ^ (i as u8)).collect();
        let _ = flood.send_to(&bytes, addr).await;
    }
    // Still serving, over both transports.
    let m = udp(addr, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.96.0.1"]);
    let m = tcp(addr, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m.answers), vec!["127.96.0.1"]);
}

#[tokio::test]
async fn cluster_config_starts_the_dns_server() {
    let mut config = kplane::Config::ephemeral();
    config.dns_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.dns_ttl = 30;
    config.dns_upstreams = vec![UdpSocket::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr")];
    let cluster = kplane::Cluster::start_with(config).await.expect("cluster starts");
    let addr = cluster.dns_addr().expect("dns runs");
    let m = tcp(addr, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!((rdata(&m.answers), m.answers[0].ttl), (vec!["127.96.0.1".to_string()], 30));
    cluster.shutdown().await;
    assert!(kplane::Cluster::start().await.expect("cluster starts").dns_addr().is_none());
}
