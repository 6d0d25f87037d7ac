//! The service proxy over real sockets (spec `service-semantics.md` §4; §7 items 5, 6, 11–14, 22,
//! 23): an in-process cluster with its proxy, hand-made EndpointSlices pointing at test servers on
//! loopback addresses, and clients connecting to ClusterIPs and NodePorts.
//!
//! Each test has its own cluster, Service range (`127.97.N.0/24`), NodePort range and backend
//! addresses (`127.98.N.x`), so the tests run in parallel. Waits poll with a deadline.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config, NodePortRange, ProxyConfig};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const NS: &str = "default";
const NODE: &str = "node-a";
const DEADLINE: Duration = Duration::from_secs(15);
/// What one attempt may take; a refusal must come well within it.
const ATTEMPT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------------------------
// Fixture.

struct Fx {
    cluster: Cluster,
    n: u8,
}

impl Fx {
    /// Cluster number `n` (1..=50): Services in 127.97.n.0/24, NodePorts 31000+20n.., backends 127.98.n.x.
    async fn start(n: u8) -> Self {
        Self::start_with(n, |_| {}).await
    }

    async fn start_with(n: u8, tune: impl FnOnce(&mut ProxyConfig)) -> Self {
        let first = 31000 + 20 * u16::from(n);
        let mut proxy = ProxyConfig {
            node_name: NODE.into(),
            node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..ProxyConfig::default()
        };
        tune(&mut proxy);
        let config = Config {
            service_cidr: format!("127.97.{n}.0/24"),
            node_port_range: NodePortRange { first, last: first + 19 },
            lb_pool: Some(format!("127.241.{n}.0/24")),
            proxy: Some(proxy),
            ..Config::ephemeral()
        };
        let cluster = Cluster::start_with(config).await.expect("cluster starts");
        let fx = Self { cluster, n };
        timeout(DEADLINE, fx.cluster.proxy().expect("proxy runs").wait_synced()).await.expect("proxy syncs");
        fx
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.cluster.client(), NS)
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.cluster.client(), NS)
    }

    /// A backend address of this test.
    fn ip(&self, last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 98, self.n, last))
    }

    async fn create_service(&self, body: Value) -> Service {
        let svc: Service = serde_json::from_value(body).expect("service json");
        self.services().create(&PostParams::default(), &svc).await.expect("create service")
    }

    async fn patch_service(&self, name: &str, patch: Value) -> Service {
        self.services().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch service")
    }

    /// Creates or replaces slice `name` of `service` with one port and `endpoints`.
    async fn put_slice(&self, service: &str, name: &str, port: (&str, &str, u16), endpoints: Vec<Value>) {
        let (port_name, protocol, number) = port;
        let body = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "proxy-tests.kplane.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": port_name, "protocol": protocol, "port": number}],
        });
        let slice: EndpointSlice = serde_json::from_value(body).expect("slice json");
        let api = self.slices();
        match api.get_opt(name).await.expect("get slice") {
            None => {
                api.create(&PostParams::default(), &slice).await.expect("create slice");
            }
            Some(old) => {
                let mut slice = slice;
                slice.metadata.resource_version = old.metadata.resource_version;
                api.replace(name, &PostParams::default(), &slice).await.expect("replace slice");
            }
        }
    }

    async fn delete_slice(&self, name: &str) {
        self.slices().delete(name, &DeleteParams::default()).await.expect("delete slice");
    }
}

/// An endpoint: address, conditions (ready, serving, terminating) and node.
fn endpoint(ip: IpAddr, conditions: (bool, bool, bool), node: &str) -> Value {
    let (ready, serving, terminating) = conditions;
    json!({
        "addresses": [ip.to_string()],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": node,
    })
}

const READY: (bool, bool, bool) = (true, true, false);

fn service(name: &str, type_: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"type": type_, "ports": ports}})
}

fn cluster_ip(svc: &Service) -> IpAddr {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()).and_then(|ip| ip.parse().ok()).expect("clusterIP")
}

fn node_port(svc: &Service, index: usize) -> u16 {
    let port = svc.spec.as_ref().and_then(|s| s.ports.as_ref()?.get(index)?.node_port).expect("nodePort");
    u16::try_from(port).expect("port")
}

/// A task ended when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP server that greets each connection with `name\n`, then echoes.
async fn tcp_backend(addr: SocketAddr, name: &str) -> Task {
    let listener = TcpListener::bind(addr).await.expect("backend binds");
    let name = name.to_string();
    Task(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                if stream.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    }))
}

/// A UDP server answering each datagram with `name:` and the datagram.
async fn udp_backend(addr: SocketAddr, name: &str) -> Task {
    let socket = UdpSocket::bind(addr).await.expect("backend binds");
    let name = name.to_string();
    Task(tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    }))
}

/// Connects and reads the backend's greeting.
async fn ask_tcp(addr: SocketAddr) -> io::Result<String> {
    let stream = timeout(ATTEMPT, TcpStream::connect(addr)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    greeting(&mut BufReader::new(stream)).await
}

async fn greeting(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    let n = timeout(ATTEMPT, reader.read_line(&mut line)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_string())
}

/// Sends one datagram from a new client socket; the backend's name from the answer.
async fn ask_udp(addr: SocketAddr) -> io::Result<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(addr).await?;
    socket.send(b"ping").await?;
    let mut buf = [0u8; 2048];
    let n = timeout(Duration::from_millis(500), socket.recv(&mut buf)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.strip_suffix(":ping").map(String::from).ok_or_else(|| io::Error::other(format!("odd answer {text:?}")))
}

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `addr` answers over TCP with one of `names`.
async fn until_tcp_answers(addr: SocketAddr, names: &[&str]) {
    eventually(&format!("{addr} to answer with one of {names:?}"), || async {
        ask_tcp(addr).await.ok().filter(|n| names.contains(&n.as_str()))
    })
    .await;
}

/// Waits until connecting to `addr` is refused.
async fn until_tcp_refused(addr: SocketAddr) {
    eventually(&format!("{addr} to refuse"), || async {
        match ask_tcp(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
}

/// The backends `count` new TCP connections to `addr` reached.
async fn tcp_spread(addr: SocketAddr, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        names.push(ask_tcp(addr).await.expect("answer"));
    }
    names
}

fn distinct(names: &[String]) -> HashSet<&str> {
    names.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

/// §7 item 5: one port number over TCP and UDP; dropping either protocol from the Service stops it.
#[tokio::test]
async fn cluster_ip_forwards_tcp_and_udp_on_the_same_port() {
    let fx = Fx::start(1).await;
    let _tcp = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "tcp-1").await;
    let _udp = udp_backend(SocketAddr::new(fx.ip(1), 8080), "udp-1").await;
    let ports = json!([
        {"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 8080},
    ]);
    let svc = fx.create_service(service("both", "ClusterIP", ports)).await;
    fx.put_slice("both", "both-tcp", ("tcp", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    fx.put_slice("both", "both-udp", ("udp", "UDP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    until_tcp_answers(vip, &["tcp-1"]).await;
    eventually("UDP answer", || async { ask_udp(vip).await.ok().filter(|n| n == "udp-1") }).await;

    // A connection carries data both ways, not only the greeting.
    let mut conn = BufReader::new(TcpStream::connect(vip).await.expect("connect"));
    assert_eq!(greeting(&mut conn).await.expect("greeting"), "tcp-1");
    conn.get_mut().write_all(b"hello\n").await.expect("write");
    assert_eq!(greeting(&mut conn).await.expect("echo"), "hello");

    // TCP only: UDP stops answering.
    fx.patch_service(
        "both",
        json!({"spec": {"ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
    )
    .await;
    eventually("UDP to stop", || async { ask_udp(vip).await.is_err().then_some(()) }).await;
    until_tcp_answers(vip, &["tcp-1"]).await;

    // UDP only: TCP is refused.
    fx.patch_service(
        "both",
        json!({"spec": {"ports": [{"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 8080}]}}),
    )
    .await;
    until_tcp_refused(vip).await;
    eventually("UDP answer again", || async { ask_udp(vip).await.ok().filter(|n| n == "udp-1") }).await;
}

/// §7 item 6: a NodePort Service answers on the node address and on its ClusterIP.
#[tokio::test]
async fn node_port_answers_on_the_node_ip() {
    let fx = Fx::start(2).await;
    let _a = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let _u = udp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let ports = json!([
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "dns", "port": 80, "protocol": "UDP", "targetPort": 8080},
    ]);
    let svc = fx.create_service(service("np", "NodePort", ports)).await;
    fx.put_slice("np", "np-http", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    fx.put_slice("np", "np-dns", ("dns", "UDP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let node_port_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&svc, 0));
    until_tcp_answers(node_port_addr, &["a"]).await;
    until_tcp_answers(SocketAddr::new(cluster_ip(&svc), 80), &["a"]).await;
    let udp_node_port = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&svc, 1));
    eventually("UDP on the NodePort", || async { ask_udp(udp_node_port).await.ok().filter(|n| n == "a") }).await;
}

/// §4.3: no usable endpoint → refused at once, for TCP and UDP; never a hang.
#[tokio::test]
async fn no_endpoints_means_refused_at_once() {
    let fx = Fx::start(3).await;
    let _a = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let ports = json!([
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8053},
    ]);
    let svc = fx.create_service(service("empty", "ClusterIP", ports)).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    let started = Instant::now();
    let err = ask_tcp(vip).await.expect_err("no endpoints");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(started.elapsed() < ATTEMPT);
    let udp = ask_udp(SocketAddr::new(cluster_ip(&svc), 53)).await.expect_err("no endpoints");
    assert_eq!(udp.kind(), io::ErrorKind::ConnectionRefused, "an ICMP port-unreachable, not silence");

    // Endpoints that are neither ready nor serving count as none.
    fx.put_slice("empty", "empty-http", ("http", "TCP", 8080), vec![endpoint(fx.ip(2), (false, false, false), NODE)])
        .await;
    fx.put_slice("empty", "empty-other", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    until_tcp_answers(vip, &["a"]).await;
    fx.delete_slice("empty-other").await;
    until_tcp_refused(vip).await;
}

/// A backend that refuses connections is skipped, for TCP and UDP.
#[tokio::test]
async fn a_dead_backend_is_skipped() {
    let fx = Fx::start(4).await;
    let _live = tcp_backend(SocketAddr::new(fx.ip(2), 8080), "live").await;
    let _live_udp = udp_backend(SocketAddr::new(fx.ip(2), 8080), "live").await;
    let ports = json!([
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "dns", "port": 80, "protocol": "UDP", "targetPort": 8080},
    ]);
    let svc = fx.create_service(service("mixed", "ClusterIP", ports)).await;
    // 127.98.4.1 has nobody listening: connections to it are refused.
    let eps = || vec![endpoint(fx.ip(1), READY, NODE), endpoint(fx.ip(2), READY, NODE)];
    fx.put_slice("mixed", "mixed-http", ("http", "TCP", 8080), eps()).await;
    fx.put_slice("mixed", "mixed-dns", ("dns", "UDP", 8080), eps()).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    until_tcp_answers(vip, &["live"]).await;
    let names = tcp_spread(vip, 20).await;
    assert_eq!(distinct(&names), HashSet::from(["live"]), "every connection reaches the live backend");
    for _ in 0..10 {
        assert_eq!(ask_udp(vip).await.expect("UDP answered").as_str(), "live");
    }

    // Only the dead endpoint left: each connection is reset at once, never left hanging.
    fx.put_slice("mixed", "mixed-http", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    eventually("connections to be reset", || async {
        match ask_tcp(vip).await {
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof) => Some(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => panic!("a connection hung"),
            _ => None,
        }
    })
    .await;
}

/// §4.2: with no ready endpoint, serving+terminating ones take the traffic; ready ones win back.
#[tokio::test]
async fn terminating_endpoints_are_the_fallback() {
    let fx = Fx::start(5).await;
    let _t = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "terminating").await;
    let _g = tcp_backend(SocketAddr::new(fx.ip(2), 8080), "not-serving").await;
    let _r = tcp_backend(SocketAddr::new(fx.ip(3), 8080), "ready").await;
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let svc = fx.create_service(service("term", "ClusterIP", ports)).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    let terminating = endpoint(fx.ip(1), (false, true, true), NODE);
    let not_serving = endpoint(fx.ip(2), (false, false, true), NODE);
    fx.put_slice("term", "term-1", ("http", "TCP", 8080), vec![terminating.clone(), not_serving.clone()]).await;
    until_tcp_answers(vip, &["terminating"]).await;
    assert_eq!(distinct(&tcp_spread(vip, 10).await), HashSet::from(["terminating"]));

    let ready = endpoint(fx.ip(3), READY, "node-b");
    fx.put_slice("term", "term-1", ("http", "TCP", 8080), vec![terminating, not_serving, ready]).await;
    until_tcp_answers(vip, &["ready"]).await;
    assert_eq!(distinct(&tcp_spread(vip, 10).await), HashSet::from(["ready"]));
}

/// §4.1/§4.2: `Local` policies use only endpoints on this node; the other class keeps the cluster set.
#[tokio::test]
async fn local_traffic_policies_use_this_nodes_endpoints() {
    let fx = Fx::start(6).await;
    let _l = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "local").await;
    let _r = tcp_backend(SocketAddr::new(fx.ip(2), 8080), "remote").await;
    let ports = || json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let eps = || vec![endpoint(fx.ip(1), READY, NODE), endpoint(fx.ip(2), READY, "node-b")];

    let mut itp = service("itp", "NodePort", ports());
    itp["spec"]["internalTrafficPolicy"] = json!("Local");
    let itp = fx.create_service(itp).await;
    fx.put_slice("itp", "itp-1", ("http", "TCP", 8080), eps()).await;
    let mut etp = service("etp", "NodePort", ports());
    etp["spec"]["externalTrafficPolicy"] = json!("Local");
    let etp = fx.create_service(etp).await;
    fx.put_slice("etp", "etp-1", ("http", "TCP", 8080), eps()).await;

    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let itp_vip = SocketAddr::new(cluster_ip(&itp), 80);
    let itp_node_port = SocketAddr::new(localhost, node_port(&itp, 0));
    let etp_vip = SocketAddr::new(cluster_ip(&etp), 80);
    let etp_node_port = SocketAddr::new(localhost, node_port(&etp, 0));
    for addr in [itp_vip, itp_node_port, etp_vip, etp_node_port] {
        until_tcp_answers(addr, &["local", "remote"]).await;
    }
    assert_eq!(distinct(&tcp_spread(itp_vip, 20).await), HashSet::from(["local"]), "ITP Local on the ClusterIP");
    assert_eq!(distinct(&tcp_spread(etp_node_port, 20).await), HashSet::from(["local"]), "ETP Local on the NodePort");
    let both = HashSet::from(["local", "remote"]);
    assert_eq!(distinct(&tcp_spread(itp_node_port, 60).await), both, "ETP Cluster on the NodePort");
    assert_eq!(distinct(&tcp_spread(etp_vip, 60).await), both, "ITP Cluster on the ClusterIP");

    // Only a remote endpoint: the Local class is refused, the other still answers.
    fx.put_slice("itp", "itp-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(2), READY, "node-b")]).await;
    until_tcp_refused(itp_vip).await;
    until_tcp_answers(itp_node_port, &["remote"]).await;
}

/// §7 items 11–14: ClientIP affinity sticks on the ClusterIP and the NodePort; switching it off
/// spreads connections; switching it back on sticks again.
#[tokio::test]
async fn client_ip_affinity_sticks_and_can_be_switched() {
    let fx = Fx::start(7).await;
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(tcp_backend(SocketAddr::new(fx.ip(i), 8080), &format!("b{i}")).await);
    }
    let mut body =
        service("sticky", "NodePort", json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
    body["spec"]["sessionAffinity"] = json!("ClientIP");
    body["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 300}});
    let svc = fx.create_service(body).await;
    let eps = (1..=3).map(|i| endpoint(fx.ip(i), READY, NODE)).collect();
    fx.put_slice("sticky", "sticky-1", ("http", "TCP", 8080), eps).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    let node_port_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&svc, 0));
    let all = ["b1", "b2", "b3"];
    until_tcp_answers(vip, &all).await;
    until_tcp_answers(node_port_addr, &all).await;

    for addr in [vip, node_port_addr] {
        let names = tcp_spread(addr, 15).await;
        assert_eq!(distinct(&names).len(), 1, "15 connections to {addr} hit one backend: {names:?}");
    }

    fx.patch_service("sticky", json!({"spec": {"sessionAffinity": "None"}})).await;
    eventually("connections to spread without affinity", || async {
        (distinct(&tcp_spread(vip, 15).await).len() > 1).then_some(())
    })
    .await;
    let names = tcp_spread(node_port_addr, 30).await;
    assert!(distinct(&names).len() > 1, "the NodePort spreads too: {names:?}");

    fx.patch_service("sticky", json!({"spec": {"sessionAffinity": "ClientIP"}})).await;
    eventually("affinity to stick again", || async {
        let names = tcp_spread(vip, 15).await;
        (distinct(&names).len() == 1).then_some(())
    })
    .await;
    let names = tcp_spread(node_port_addr, 15).await;
    assert_eq!(distinct(&names).len(), 1, "the NodePort sticks again: {names:?}");
}

/// New connections use a changed endpoint set; a connection open to a removed endpoint keeps working.
#[tokio::test]
async fn endpoint_changes_apply_to_new_connections_only() {
    let fx = Fx::start(8).await;
    let _a = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "old").await;
    let _b = tcp_backend(SocketAddr::new(fx.ip(2), 8080), "new").await;
    let svc = fx
        .create_service(service(
            "moving",
            "ClusterIP",
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
        ))
        .await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    fx.put_slice("moving", "moving-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    until_tcp_answers(vip, &["old"]).await;
    let mut open = BufReader::new(TcpStream::connect(vip).await.expect("connect"));
    assert_eq!(greeting(&mut open).await.expect("greeting"), "old");

    fx.put_slice("moving", "moving-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(2), READY, NODE)]).await;
    until_tcp_answers(vip, &["new"]).await;
    assert_eq!(distinct(&tcp_spread(vip, 10).await), HashSet::from(["new"]));
    open.get_mut().write_all(b"still there\n").await.expect("write");
    assert_eq!(greeting(&mut open).await.expect("echo"), "still there", "the old connection still works");
}

/// A Service port another program already holds is retried without harming other Services, and
/// taken once freed.
#[tokio::test]
async fn a_port_taken_by_another_program_does_not_break_other_services() {
    let fx = Fx::start(9).await;
    let _a = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let taken_ip = IpAddr::V4(Ipv4Addr::new(127, 97, 9, 50));
    let squatter = TcpListener::bind(SocketAddr::new(taken_ip, 80)).await.expect("the other program binds");
    let ports = || json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let mut blocked = service("blocked", "ClusterIP", ports());
    blocked["spec"]["clusterIP"] = json!(taken_ip.to_string());
    fx.create_service(blocked).await;
    fx.put_slice("blocked", "blocked-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    // An externalIP that is not on this machine cannot be bound either.
    let mut foreign = service("foreign", "ClusterIP", ports());
    foreign["spec"]["externalIPs"] = json!(["192.0.2.10"]);
    let foreign = fx.create_service(foreign).await;
    fx.put_slice("foreign", "foreign-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let free = fx.create_service(service("free", "ClusterIP", ports())).await;
    fx.put_slice("free", "free-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;

    until_tcp_answers(SocketAddr::new(cluster_ip(&free), 80), &["a"]).await;
    until_tcp_answers(SocketAddr::new(cluster_ip(&foreign), 80), &["a"]).await;
    let proxy = fx.cluster.proxy().expect("proxy");
    for unbindable in [SocketAddr::new(taken_ip, 80), "192.0.2.10:80".parse().expect("addr")] {
        eventually(&format!("{unbindable} to report its error"), || async {
            proxy.listeners().into_iter().find(|l| {
                l.listen.addr == unbindable
                    && matches!(&l.state, kplane_proxy::ListenerState::Binding { error: Some(_) })
            })
        })
        .await;
    }
    // Each is an Event on its Service, as well as a log line.
    let message = fx.until_event("blocked", "FailedToListen").await;
    assert!(
        message.starts_with("cannot listen on 127.97.9.50:80/TCP for default/blocked:http/TCP: ")
            && message.ends_with("; retrying"),
        "{message}"
    );
    let message = fx.until_event("foreign", "FailedToListen").await;
    assert!(message.starts_with("cannot listen on 192.0.2.10:80/TCP for default/foreign:http/TCP"), "{message}");

    drop(squatter);
    until_tcp_answers(SocketAddr::new(taken_ip, 80), &["a"]).await;
}

/// Two Services asking for one address and port: the older keeps it, the newer gets an Event.
#[tokio::test]
async fn services_wanting_one_address_get_an_event() {
    let fx = Fx::start(18).await;
    let _a = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "older").await;
    let _b = tcp_backend(SocketAddr::new(fx.ip(2), 8080), "newer").await;
    // Another load balancer (a class kplane leaves alone) gives both the same ingress IP. Created
    // in the same second, the name breaks the tie.
    for (name, ip) in [("a-older", fx.ip(1)), ("b-newer", fx.ip(2))] {
        let mut svc = service(name, "LoadBalancer", json!([{"name": "http", "port": 80, "targetPort": 8080}]));
        svc["spec"]["loadBalancerClass"] = json!("example.com/manual");
        fx.create_service(svc).await;
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "127.241.18.200"}]}}});
        fx.services().patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
        fx.put_slice(name, &format!("{name}-1"), ("http", "TCP", 8080), vec![endpoint(ip, READY, NODE)]).await;
    }
    let message = fx.until_event("b-newer", "AddressConflict").await;
    assert_eq!(
        message,
        "127.241.18.200:80/TCP is already used by default/a-older:http/TCP; the older Service keeps it"
    );
    until_tcp_answers("127.241.18.200:80".parse().expect("addr"), &["older"]).await;
}

/// §7 items 22–23: a Service's ports served by different slices, on one IP or on two.
#[tokio::test]
async fn ports_in_multiple_slices() {
    let fx = Fx::start(10).await;
    let _p1 = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "one-8080").await;
    let _p2 = tcp_backend(SocketAddr::new(fx.ip(1), 8090), "one-8090").await;
    let _p3 = tcp_backend(SocketAddr::new(fx.ip(2), 8090), "two-8090").await;
    let ports = json!([
        {"name": "example-port-80", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "example-port-81", "port": 81, "protocol": "TCP", "targetPort": 8090},
    ]);
    let svc = fx.create_service(service("multi", "ClusterIP", ports)).await;
    fx.put_slice("multi", "multi-80", ("example-port-80", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    fx.put_slice("multi", "multi-81", ("example-port-81", "TCP", 8090), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    until_tcp_answers(SocketAddr::new(cluster_ip(&svc), 80), &["one-8080"]).await;
    until_tcp_answers(SocketAddr::new(cluster_ip(&svc), 81), &["one-8090"]).await;

    // A second slice for port 81 with another IP: both serve it.
    fx.put_slice("multi", "multi-81b", ("example-port-81", "TCP", 8090), vec![endpoint(fx.ip(2), READY, NODE)]).await;
    eventually("both slices to serve port 81", || async {
        let names = tcp_spread(SocketAddr::new(cluster_ip(&svc), 81), 20).await;
        (distinct(&names) == HashSet::from(["one-8090", "two-8090"])).then_some(())
    })
    .await;
}

/// Bad input leaves the proxy serving: a UDP flood of new clients beyond the flow limit, a client
/// that sends without ever reading, connections opened and dropped at once.
#[tokio::test]
async fn floods_and_stalled_clients_leave_the_proxy_serving() {
    let fx = Fx::start_with(11, |c| c.udp_max_flows = 16).await;
    let _tcp = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let _udp = udp_backend(SocketAddr::new(fx.ip(1), 8080), "a").await;
    let ports = json!([
        {"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 8080},
    ]);
    let svc = fx.create_service(service("busy", "ClusterIP", ports)).await;
    fx.put_slice("busy", "busy-tcp", ("tcp", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    fx.put_slice("busy", "busy-udp", ("udp", "UDP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    until_tcp_answers(vip, &["a"]).await;
    eventually("UDP answer", || async { ask_udp(vip).await.ok().filter(|n| n == "a") }).await;

    // 300 new UDP clients, far over the limit of 16 flows, none reading its answer.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.send_to(b"flood", vip).await.expect("send");
        flood.push(socket);
    }
    eventually("a new UDP client to be answered after the flood", || async {
        ask_udp(vip).await.ok().filter(|n| n == "a")
    })
    .await;

    // A client that writes and never reads: the echoes back up until its connection stalls.
    let mut stalled = TcpStream::connect(vip).await.expect("connect");
    let _writer = Task(tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        while stalled.write_all(&chunk).await.is_ok() {}
    }));
    // Connections opened and dropped before anything is said.
    for _ in 0..200 {
        drop(TcpStream::connect(vip).await.expect("connect"));
    }
    assert_eq!(distinct(&tcp_spread(vip, 10).await), HashSet::from(["a"]));
    assert_eq!(ask_udp(vip).await.expect("UDP still answered"), "a");
}

/// The byte at `offset` of the test stream: content and order both checkable.
fn stream_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Bulk data both ways at once through a ClusterIP (the relay's splice path), then a half-close:
/// the echo comes back whole and in order, and the backend's close after the client's end of data
/// reaches the client.
#[tokio::test]
async fn bulk_transfers_arrive_whole_and_half_close_passes() {
    const LEN: u64 = 48 << 20;
    let fx = Fx::start(19).await;
    let _tcp = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "echo").await;
    let svc = fx.create_service(service("bulk", "ClusterIP", json!([{"port": 80, "targetPort": 8080}]))).await;
    fx.put_slice("bulk", "bulk-1", ("", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    until_tcp_answers(vip, &["echo"]).await;

    let stream = TcpStream::connect(vip).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut offset = 0u64;
        while offset < LEN {
            let chunk: Vec<u8> = (offset..(offset + 200_003).min(LEN)).map(stream_byte).collect();
            w.write_all(&chunk).await.expect("write");
            offset += chunk.len() as u64;
        }
        w.shutdown().await.expect("half-close");
    });
    let mut r = BufReader::new(r);
    assert_eq!(greeting_of(&mut r).await, "echo");
    let received = timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 100_000];
        let mut offset = 0u64;
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut r, &mut buf).await.expect("read");
            if n == 0 {
                return offset;
            }
            for b in &buf[..n] {
                assert_eq!(*b, stream_byte(offset), "byte {offset}");
                offset += 1;
            }
        }
    })
    .await
    .expect("the echo ends in time");
    assert_eq!(received, LEN, "the whole echo, then the end of data");
    writer.await.expect("writer");
}

async fn greeting_of(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut line = String::new();
    timeout(ATTEMPT, reader.read_line(&mut line)).await.expect("greeting in time").expect("greeting");
    line.trim_end().to_string()
}

// ---------------------------------------------------------------------------------------------------------------
// LoadBalancer: the LB IPAM controller's ingress IPs, served by the proxy.

fn ingress(svc: &Service) -> Vec<(String, String)> {
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone());
    ingress.unwrap_or_default().into_iter().map(|i| (i.ip.unwrap_or_default(), i.ip_mode.unwrap_or_default())).collect()
}

impl Fx {
    /// Waits until Service `name` has exactly `want` as ingress IPs (all with ipMode VIP).
    async fn until_ingress(&self, name: &str, want: &[&str]) -> Service {
        eventually(&format!("{name} ingress {want:?}"), || async {
            let svc = self.services().get(name).await.ok()?;
            let got = ingress(&svc);
            let wanted: Vec<(String, String)> = want.iter().map(|ip| (ip.to_string(), "VIP".to_string())).collect();
            (got == wanted).then_some(svc)
        })
        .await
    }

    /// Waits for an Event on Service `name` with `reason`; returns its message.
    async fn until_event(&self, name: &str, reason: &str) -> String {
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.cluster.client(), NS);
        let fields = format!("involvedObject.name={name},reason={reason}");
        eventually(&format!("{reason} event on {name}"), || async {
            let list = events.list(&kube::api::ListParams::default().fields(&fields)).await.ok()?;
            list.items.into_iter().next().and_then(|e| e.message)
        })
        .await
    }
}

#[tokio::test]
async fn load_balancers_get_ingress_ips_that_the_proxy_serves() {
    let fx = Fx::start(12).await;
    let _backend = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "lb-backend").await;
    fx.create_service(service("web", "LoadBalancer", json!([{"name": "http", "port": 80, "targetPort": 8080}]))).await;
    fx.put_slice("web", "web-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let svc = fx.until_ingress("web", &["127.241.12.1"]).await;
    let message = fx.until_event("web", "IPAllocated").await;
    assert_eq!(message, r#"Assigned IP ["127.241.12.1"]"#);
    // The ingress IP, the ClusterIP and the NodePort all reach the backend.
    until_tcp_answers("127.241.12.1:80".parse().expect("addr"), &["lb-backend"]).await;
    until_tcp_answers(SocketAddr::new(cluster_ip(&svc), 80), &["lb-backend"]).await;
    until_tcp_answers(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&svc, 0)), &["lb-backend"]).await;

    // Another class is someone else's; a ClusterIP Service has no ingress.
    let mut other = service("other", "LoadBalancer", json!([{"port": 80}]));
    other["spec"]["loadBalancerClass"] = json!("example.com/internal-vip");
    fx.create_service(other).await;
    fx.create_service(service("plain", "ClusterIP", json!([{"port": 80}]))).await;
    let second = service("second", "LoadBalancer", json!([{"port": 81}]));
    fx.create_service(second).await;
    fx.until_ingress("second", &["127.241.12.2"]).await;
    for name in ["other", "plain"] {
        assert!(ingress(&fx.services().get(name).await.expect("get")).is_empty(), "{name} has no ingress");
    }

    // Turning the Service into a ClusterIP clears its ingress and stops serving the IP.
    fx.patch_service("web", json!({"spec": {"type": "ClusterIP"}})).await;
    fx.until_ingress("web", &[]).await;
    until_tcp_refused("127.241.12.1:80".parse().expect("addr")).await;
    // The freed address is the lowest again.
    fx.create_service(service("third", "LoadBalancer", json!([{"port": 82}]))).await;
    fx.until_ingress("third", &["127.241.12.1"]).await;
}

#[tokio::test]
async fn requested_load_balancer_ips_conflict_and_wait_for_release() {
    let fx = Fx::start(13).await;
    let mut first = service("first", "LoadBalancer", json!([{"port": 80}]));
    first["spec"]["loadBalancerIP"] = json!("127.241.13.7");
    fx.create_service(first).await;
    fx.until_ingress("first", &["127.241.13.7"]).await;

    // The same address through MetalLB's annotation: refused while taken, with a Warning.
    let mut second = service("second", "LoadBalancer", json!([{"port": 80}]));
    second["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": "127.241.13.7"});
    fx.create_service(second).await;
    let message = fx.until_event("second", "AllocationFailed").await;
    assert_eq!(
        message,
        r#"Failed to allocate IP for "default/second": requested IP 127.241.13.7 is already allocated to default/first"#
    );
    assert!(ingress(&fx.services().get("second").await.expect("get")).is_empty());

    // An address outside the pool is refused too.
    let mut outside = service("outside", "LoadBalancer", json!([{"port": 80}]));
    outside["spec"]["loadBalancerIP"] = json!("127.0.0.9");
    fx.create_service(outside).await;
    let message = fx.until_event("outside", "AllocationFailed").await;
    assert!(message.ends_with("requested IP 127.0.0.9 is not in any pool of this cluster"), "{message}");

    // Deleting the holder hands the address to the waiting Service.
    fx.services().delete("first", &DeleteParams::default()).await.expect("delete");
    fx.until_ingress("second", &["127.241.13.7"]).await;
}

#[tokio::test]
async fn load_balancer_ips_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        service_cidr: "127.97.14.0/24".into(),
        node_port_range: NodePortRange { first: 31280, last: 31299 },
        lb_pool: Some("127.241.14.0/24".into()),
        ..Config::ephemeral()
    };
    let mut assigned = Vec::new();
    {
        let fx = Fx { cluster: Cluster::start_with(config()).await.expect("cluster starts"), n: 14 };
        for name in ["a", "b", "c"] {
            fx.create_service(service(name, "LoadBalancer", json!([{"port": 80}]))).await;
        }
        for (name, ip) in [("a", "127.241.14.1"), ("b", "127.241.14.2"), ("c", "127.241.14.3")] {
            fx.until_ingress(name, &[ip]).await;
        }
        fx.services().delete("a", &DeleteParams::default()).await.expect("delete");
        fx.cluster.shutdown().await;
    }
    let fx = Fx { cluster: Cluster::start_with(config()).await.expect("cluster restarts"), n: 14 };
    // b and c keep their addresses; a new Service gets the one a freed.
    fx.create_service(service("d", "LoadBalancer", json!([{"port": 80}]))).await;
    for (name, ip) in [("b", "127.241.14.2"), ("c", "127.241.14.3"), ("d", "127.241.14.1")] {
        assigned.push(fx.until_ingress(name, &[ip]).await);
    }
    assert_eq!(assigned.len(), 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Health checks: the health-check NodePort of `externalTrafficPolicy: Local` LoadBalancers, and the proxy's own.

/// A plain HTTP/1.1 GET: status, headers (lower-cased names) and body.
async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<(String, String)>, String)> {
    use tokio::io::AsyncReadExt;
    let mut stream = timeout(ATTEMPT, TcpStream::connect(addr)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    timeout(ATTEMPT, stream.read_to_string(&mut raw)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| io::Error::other(format!("no head in {raw:?}")))?;
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)?.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    Ok((status, headers, body.to_string()))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn health_check_node_port_reports_local_ready_endpoints() {
    let fx = Fx::start(15).await;
    // A health-check port someone else holds at first: an Event, then served once it is free.
    let hc_port = 31000 + 20 * 15 + 19;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", hc_port)).expect("squat");
    // The NodePort is pinned too: a random one could take the health-check port first.
    let ports = json!([{"name": "http", "port": 80, "targetPort": 8080, "nodePort": hc_port - 1}]);
    let mut svc = service("local", "LoadBalancer", ports);
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    svc["spec"]["healthCheckNodePort"] = json!(hc_port);
    fx.create_service(svc).await;
    let hc = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), hc_port);
    let message = fx.until_event("local", "FailedToStartServiceHealthcheck").await;
    assert!(
        message.starts_with(&format!("node {NODE} failed to start healthcheck \"default/local\" on port {hc_port}"))
    );
    drop(squatter);

    // Two local ready IPs (one with two entries), one remote, one local terminating.
    let endpoints = vec![
        endpoint(fx.ip(1), READY, NODE),
        endpoint(fx.ip(2), READY, NODE),
        endpoint(fx.ip(3), READY, "node-b"),
        endpoint(fx.ip(4), (false, true, true), NODE),
    ];
    fx.put_slice("local", "local-1", ("http", "TCP", 8080), endpoints).await;
    let (status, headers, body) = eventually("the health check to count 2", || async {
        http_get(hc, "/any/path").await.ok().filter(|(_, _, body)| body.contains(r#""localEndpoints": 2"#))
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"service": {"namespace": "default", "name": "local"}, "localEndpoints": 2, "serviceProxyHealthy": true}"#
    );
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "x-load-balancing-endpoint-weight"), Some("2"));

    // Only remote and terminating endpoints left: 503, so a load balancer skips this node.
    let endpoints = vec![endpoint(fx.ip(3), READY, "node-b"), endpoint(fx.ip(4), (false, true, true), NODE)];
    fx.put_slice("local", "local-1", ("http", "TCP", 8080), endpoints).await;
    let (status, headers, _) = eventually("the health check to fail", || async {
        http_get(hc, "/").await.ok().filter(|(status, _, _)| *status == 503)
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "x-load-balancing-endpoint-weight"), Some("0"));

    // Cluster traffic policy: no health check any more.
    fx.patch_service("local", json!({"spec": {"externalTrafficPolicy": "Cluster"}})).await;
    eventually("the health check port to close", || async { http_get(hc, "/").await.is_err().then_some(()) }).await;
}

#[tokio::test]
async fn proxy_serves_healthz_and_livez() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let _fx = Fx::start_with(16, |p| p.healthz_listen = Some(addr)).await;
    let (status, headers, body) = eventually("healthz", || async { http_get(addr, "/healthz").await.ok() }).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["nodeEligible"], true);
    assert!(doc["lastUpdated"].as_str().is_some_and(|t| t.ends_with(" +0000 UTC")), "{body}");
    let (status, _, body) = http_get(addr, "/livez").await.expect("livez");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert!(doc.get("nodeEligible").is_none() && doc["currentTime"].is_string(), "{body}");
}

/// Connects from `source` and reads the backend's greeting.
async fn ask_tcp_from(source: IpAddr, addr: SocketAddr) -> io::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = timeout(ATTEMPT, socket.connect(addr)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    greeting(&mut BufReader::new(stream)).await
}

#[tokio::test]
async fn load_balancer_source_ranges_admit_only_listed_clients() {
    let fx = Fx::start(17).await;
    let _backend = tcp_backend(SocketAddr::new(fx.ip(1), 8080), "ranged").await;
    let mut svc = service("ranged", "LoadBalancer", json!([{"name": "http", "port": 80, "targetPort": 8080}]));
    svc["spec"]["loadBalancerSourceRanges"] = json!(["127.17.0.0/16"]);
    fx.create_service(svc).await;
    fx.put_slice("ranged", "ranged-1", ("http", "TCP", 8080), vec![endpoint(fx.ip(1), READY, NODE)]).await;
    let lb: SocketAddr = "127.241.17.1:80".parse().expect("addr");
    let svc = fx.until_ingress("ranged", &["127.241.17.1"]).await;
    let inside: IpAddr = "127.17.0.9".parse().expect("ip");
    let outside: IpAddr = "127.18.0.9".parse().expect("ip");
    eventually("a listed client to get through", || async { ask_tcp_from(inside, lb).await.ok() }).await;
    // An unlisted client is turned away at once; the ClusterIP still takes it.
    assert!(ask_tcp_from(outside, lb).await.is_err(), "outside the ranges");
    assert_eq!(ask_tcp_from(outside, SocketAddr::new(cluster_ip(&svc), 80)).await.expect("clusterIP"), "ranged");
    // Widening the ranges lets it in.
    fx.patch_service("ranged", json!({"spec": {"loadBalancerSourceRanges": ["127.16.0.0/14"]}})).await;
    eventually("the wider range to apply", || async { ask_tcp_from(outside, lb).await.ok() }).await;
}
