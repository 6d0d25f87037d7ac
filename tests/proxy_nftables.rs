//! The nftables proxy mode (`--proxy-mode nftables`) for real, inside network namespaces each
//! test creates: a "node" namespace where kplane runs (an in-process cluster on a thread that
//! entered it, or the binary under `ip netns exec`) and a "pod" namespace behind a veth pair
//! holding backends on pod IPs. Clients in the node namespace connect to ClusterIPs and NodePorts;
//! the kernel DNATs them by kplane's rules. The host's own namespace is never touched.
//!
//! Needs root, `nft` and `ip netns`. Without them each test prints why and passes, unless
//! `KPLANE_REQUIRE_NETNS=1` (CI), when it fails.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config, NodePortRange, ProxyConfig};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

const NS: &str = "default";
const NODE: &str = "node-a";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
const BACKEND_PORT: u16 = 8080;
const DEADLINE: Duration = Duration::from_secs(15);
/// What one connection attempt may take; a refusal comes well within it.
const ATTEMPT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------------------------
// Namespaces.

/// A node and a pod namespace joined by a veth pair; deleted on drop, also when a test fails.
struct Netns {
    node: String,
    pod: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    /// The namespaces for test `tag`, or `None` (skip) when this machine cannot make them.
    fn create(tag: &str) -> Option<Self> {
        let pid = std::process::id();
        let me = Self { node: format!("kpnft-{pid}-{tag}-node"), pod: format!("kpnft-{pid}-{tag}-pod") };
        match me.setup() {
            Ok(()) => Some(me),
            Err(reason) => {
                drop(me);
                if std::env::var("KPLANE_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                    panic!("KPLANE_REQUIRE_NETNS=1 but network namespaces are unavailable: {reason}");
                }
                eprintln!("skipping the nftables proxy test: {reason}");
                None
            }
        }
    }

    fn setup(&self) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        run(&["nft", "--version"])?;
        let (node, pod) = (self.node.as_str(), self.pod.as_str());
        run(&["ip", "netns", "add", node])?;
        run(&["ip", "netns", "add", pod])?;
        run(&["ip", "link", "add", "veth0", "netns", node, "type", "veth", "peer", "name", "veth0", "netns", pod])?;
        let node_ip = format!("{NODE_IP}/24");
        let (a, b) = (format!("{POD_A}/24"), format!("{POD_B}/24"));
        for cmd in [
            vec!["ip", "-n", node, "link", "set", "lo", "up"],
            vec!["ip", "-n", node, "addr", "add", &node_ip, "dev", "veth0"],
            vec!["ip", "-n", node, "link", "set", "veth0", "up"],
            // ClusterIPs need a route for connect(2) to pick a source before DNAT rewrites them.
            vec!["ip", "-n", node, "route", "add", "default", "dev", "veth0"],
            vec!["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"],
            vec!["ip", "-n", pod, "link", "set", "lo", "up"],
            vec!["ip", "-n", pod, "addr", "add", &a, "dev", "veth0"],
            vec!["ip", "-n", pod, "addr", "add", &b, "dev", "veth0"],
            vec!["ip", "-n", pod, "link", "set", "veth0", "up"],
        ] {
            run(&cmd)?;
        }
        // Another program's table, which kplane must leave alone.
        self.nft_node("add table ip other\nadd chain ip other keep\n")?;
        Ok(())
    }

    /// Runs an nft script in the node namespace.
    fn nft_node(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().map(|mut s| s.write_all(script.as_bytes())).transpose().map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `nft list table <table>` in the node namespace, or the error.
    fn list(&self, table: &str) -> Result<String, String> {
        let words: Vec<&str> = table.split(' ').collect();
        let mut args = vec!["ip", "netns", "exec", &self.node, "nft", "list", "table"];
        args.extend(words);
        run(&args)
    }

    /// Runs `f` on a thread inside namespace `name` (sockets it creates stay there).
    fn within<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace descriptor; only this thread changes namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Runs `test` on a single-threaded runtime inside the node namespace; everything it starts
    /// (the cluster, the proxy, nft, clients) lives there.
    fn run_in_node<F: Future<Output = ()> + 'static>(&self, test: impl FnOnce() -> F + Send + 'static) {
        Self::within(&self.node, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(test());
        })
    }

    /// UDP backends in the pod namespace: each answers every datagram with its name.
    fn udp_backends(&self) -> Vec<std::net::UdpSocket> {
        Self::within(&self.pod, || {
            [POD_A, POD_B]
                .into_iter()
                .map(|ip| {
                    let s = std::net::UdpSocket::bind((ip, BACKEND_PORT)).expect("bind a UDP backend");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect()
        })
    }

    /// Backends in the pod namespace: each answers every connection with its name.
    fn backends(&self) -> Vec<std::net::TcpListener> {
        Self::within(&self.pod, || {
            [POD_A, POD_B]
                .into_iter()
                .map(|ip| {
                    let l = std::net::TcpListener::bind((ip, BACKEND_PORT)).expect("bind a backend");
                    l.set_nonblocking(true).expect("nonblocking");
                    l
                })
                .collect()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixture inside the node namespace.

/// Serves `listeners` (from [`Netns::backends`]): each connection gets `a\n` or `b\n`.
fn serve_backends(listeners: Vec<std::net::TcpListener>) {
    for (listener, name) in listeners.into_iter().zip(["a", "b"]) {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
                    // The client closes first (see `ask`).
                    let mut rest = [0u8; 16];
                    let _ = timeout(DEADLINE, conn.read(&mut rest)).await;
                });
            }
        });
    }
}

/// Serves `sockets` (from [`Netns::udp_backends`]): each datagram is answered with `a` or `b`.
fn serve_udp_backends(sockets: Vec<std::net::UdpSocket>) {
    for (socket, name) in sockets.into_iter().zip(["a", "b"]) {
        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(name.as_bytes(), from).await;
            }
        });
    }
}

/// One datagram from a new client socket (a new flow): the backend's name, or the error.
async fn ask_udp(addr: SocketAddr) -> std::io::Result<String> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(addr).await?;
    socket.send(b"who").await?;
    let mut buf = [0u8; 64];
    let n = timeout(ATTEMPT, socket.recv(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn start_cluster() -> Cluster {
    start_cluster_with("10.96.0.0/24").await
}

async fn start_cluster_with(service_cidr: &str) -> Cluster {
    let proxy = ProxyConfig {
        node_name: NODE.into(),
        node_ips: vec![IpAddr::V4(NODE_IP)],
        healthz_listen: Some(SocketAddr::from(([127, 0, 0, 1], 10256))),
        mode: kplane_proxy::ProxyMode::Nftables,
        service_cidrs: vec![kplane_proxy::desired::SourceRange::parse(service_cidr).expect("a CIDR")],
        ..ProxyConfig::default()
    };
    let config = Config {
        service_cidr: service_cidr.into(),
        node_port_range: NodePortRange { first: 30000, last: 30099 },
        lb_pool: None,
        proxy: Some(proxy),
        node: None,
        ..Config::ephemeral()
    };
    let cluster = Cluster::start_with(config).await.expect("cluster starts in nftables mode");
    cluster.proxy().expect("proxy").wait_synced().await;
    cluster
}

async fn create_service(cluster: &Cluster, name: &str, ip: &str, node_port: Option<u16>, extra: Value) {
    let mut spec = json!({
        "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
        "clusterIP": ip,
        "ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT, "nodePort": node_port}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("a Service");
    let api: Api<Service> = Api::namespaced(cluster.client(), NS);
    api.create(&PostParams::default(), &svc).await.expect("create the Service");
}

/// Sets the one slice of Service `name` to `endpoints` (pod IP, node).
async fn set_slice(cluster: &Cluster, name: &str, endpoints: &[(Ipv4Addr, &str)]) {
    set_slice_of(cluster, name, "TCP", BACKEND_PORT, endpoints).await
}

async fn set_slice_of(cluster: &Cluster, name: &str, protocol: &str, port: u16, endpoints: &[(Ipv4Addr, &str)]) {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip.to_string()], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let slice_name = format!("{name}-manual");
    let body = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": port, "protocol": protocol}],
    });
    let mut slice: EndpointSlice = serde_json::from_value(body).expect("a slice");
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client(), NS);
    match api.get_opt(&slice_name).await.expect("get the slice") {
        None => {
            api.create(&PostParams::default(), &slice).await.expect("create the slice");
        }
        Some(old) => {
            slice.metadata.resource_version = old.metadata.resource_version;
            api.replace(&slice_name, &PostParams::default(), &slice).await.expect("replace the slice");
        }
    }
}

/// One connection: the backend's name, or the error.
async fn ask(addr: SocketAddr) -> std::io::Result<String> {
    let conn = timeout(ATTEMPT, tokio::net::TcpStream::connect(addr)).await??;
    read_name(conn).await
}

/// One connection from source address `local` (a port used before): the backend's name, or
/// the error.
async fn ask_from(local: SocketAddr, addr: SocketAddr) -> std::io::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(local)?;
    let conn = timeout(ATTEMPT, socket.connect(addr)).await??;
    read_name(conn).await
}

async fn read_name(conn: tokio::net::TcpStream) -> std::io::Result<String> {
    // One line, then this side closes first: the client keeps TIME_WAIT under the Service
    // address (which tcp_tw_reuse may reuse), not the pod, whose TIME_WAIT a reused client port
    // would hit and cost a one-second SYN retransmission when thousands of connections are made.
    let mut out = String::new();
    timeout(ATTEMPT, tokio::io::BufReader::new(conn).read_line(&mut out)).await??;
    if out.is_empty() {
        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed without a name"));
    }
    Ok(out.trim().to_string())
}

/// Polls until `want` holds for the names `n` connections to `addr` get.
async fn until_names(addr: SocketAddr, n: usize, what: &str, want: impl Fn(&BTreeSet<String>) -> bool) {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        seen.clear();
        for _ in 0..n {
            match ask(addr).await {
                Ok(name) => seen.insert(name),
                Err(e) => seen.insert(format!("error: {e}")),
            };
        }
        if want(&seen) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{addr}: {what}; saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Polls until a connection to `addr` is refused, quickly. A slow refusal is an attempt whose
/// first SYN came before the rules (dropped as an unallocated ClusterIP, refused when
/// retransmitted a second later): polled again.
async fn until_refused(addr: SocketAddr) {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let got = ask(addr).await;
        match &got {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && t.elapsed() < Duration::from_millis(500) => return,
            _ => assert!(start.elapsed() < DEADLINE, "{addr} is not refused at once: {got:?} after {:?}", t.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

#[test]
fn cluster_ip_and_node_port_are_dnated_to_pods_and_follow_the_endpoints() {
    let Some(netns) = Netns::create("basic") else { return };
    let backends = netns.backends();
    netns.run_in_node(move || async move {
        serve_backends(backends);
        let cluster = start_cluster().await;
        create_service(&cluster, "web", "10.96.0.50", Some(30080), json!({})).await;
        set_slice(&cluster, "web", &[(POD_A, NODE), (POD_B, NODE)]).await;
        let both = |s: &BTreeSet<String>| *s == names(&["a", "b"]);
        until_names(addr("10.96.0.50", 80), 24, "the ClusterIP spreads over both pods", both).await;
        until_names(addr("10.200.0.1", 30080), 24, "the NodePort spreads over both pods", both).await;

        // No endpoints at all: refused at once on the ClusterIP and the NodePort, not hung.
        create_service(&cluster, "empty", "10.96.0.51", Some(30081), json!({})).await;
        until_refused(addr("10.96.0.51", 80)).await;
        until_refused(addr("10.200.0.1", 30081)).await;

        // Endpoint changes take effect: one pod, then none (refused), then back.
        set_slice(&cluster, "web", &[(POD_B, NODE)]).await;
        until_names(addr("10.96.0.50", 80), 12, "only pod b", |s| *s == names(&["b"])).await;
        set_slice(&cluster, "web", &[]).await;
        until_refused(addr("10.96.0.50", 80)).await;
        set_slice(&cluster, "web", &[(POD_A, NODE)]).await;
        until_names(addr("10.200.0.1", 30080), 12, "only pod a", |s| *s == names(&["a"])).await;

        // Someone deletes kplane's table: the next change's transaction fails, and the whole
        // table is rebuilt from the desired state.
        run(&["nft", "delete", "table", "inet", "kplane"]).expect("delete the table (this thread is in the node)");
        set_slice(&cluster, "web", &[(POD_A, NODE), (POD_B, NODE)]).await;
        until_names(addr("10.96.0.50", 80), 24, "rebuilt after the table vanished", both).await;
        until_refused(addr("10.96.0.51", 80)).await;

        // A deleted Service leaves nothing behind in the table.
        let api: Api<Service> = Api::namespaced(cluster.client(), NS);
        api.delete("empty", &DeleteParams::default()).await.expect("delete");
        let start = Instant::now();
        while netns_list_contains("10.96.0.51") {
            assert!(start.elapsed() < DEADLINE, "the deleted Service's rules stay");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // /healthz keeps working in this mode.
        let health = http_get(addr("127.0.0.1", 10256), "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");

        // A clean stop removes kplane's table, and only it.
        drop(cluster);
        let start = Instant::now();
        while current_table().is_ok() {
            assert!(start.elapsed() < DEADLINE, "table inet kplane outlives the proxy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    netns.list("ip other").expect("another program's table is left alone");
}

#[test]
fn affinity_external_local_external_ips_and_lb_source_ranges() {
    let Some(netns) = Netns::create("policy") else { return };
    let backends = netns.backends();
    netns.run_in_node(move || async move {
        serve_backends(backends);
        let cluster = start_cluster().await;
        let sticky =
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}});
        create_service(&cluster, "sticky", "10.96.0.60", None, sticky).await;
        set_slice(&cluster, "sticky", &[(POD_A, NODE), (POD_B, NODE)]).await;
        until_names(addr("10.96.0.60", 80), 15, "15 connections stick to one pod", |s| {
            s.len() == 1 && !s.iter().any(|n| n.starts_with("error"))
        })
        .await;
        let api: Api<Service> = Api::namespaced(cluster.client(), NS);
        let off = json!({"spec": {"sessionAffinity": "None"}});
        api.patch("sticky", &PatchParams::default(), &Patch::Merge(&off)).await.expect("affinity off");
        until_names(addr("10.96.0.60", 80), 24, "without affinity both pods serve", |s| *s == names(&["a", "b"])).await;

        // externalTrafficPolicy Local: the NodePort only uses this node's pod; the ClusterIP both.
        create_service(&cluster, "local", "10.96.0.61", Some(30090), json!({"externalTrafficPolicy": "Local"})).await;
        set_slice(&cluster, "local", &[(POD_A, NODE), (POD_B, "node-b")]).await;
        until_names(addr("10.96.0.61", 80), 24, "the ClusterIP uses both", |s| *s == names(&["a", "b"])).await;
        until_names(addr("10.200.0.1", 30090), 24, "the NodePort only the local pod", |s| *s == names(&["a"])).await;

        // externalIPs and load-balancer ingress IPs are caught too; loadBalancerSourceRanges
        // admit the node (inside 10.200.0.0/24) on one and drop it on the other.
        let external = json!({"externalIPs": ["10.200.0.100"]});
        create_service(&cluster, "ext", "10.96.0.62", None, external).await;
        set_slice(&cluster, "ext", &[(POD_A, NODE)]).await;
        until_names(addr("10.200.0.100", 80), 6, "the externalIP reaches the pod", |s| *s == names(&["a"])).await;
        for (name, ip, lb, range) in [
            ("lb-in", "10.96.0.63", "10.200.0.101", "10.200.0.0/24"),
            ("lb-out", "10.96.0.64", "10.200.0.102", "192.0.2.0/24"),
        ] {
            let spec = json!({"type": "LoadBalancer", "loadBalancerSourceRanges": [range]});
            create_service(&cluster, name, ip, None, spec).await;
            set_slice(&cluster, name, &[(POD_B, NODE)]).await;
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": lb, "ipMode": "VIP"}]}}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("LB status");
        }
        until_names(addr("10.200.0.101", 80), 6, "an admitted source reaches the pod", |s| *s == names(&["b"])).await;
        // Same rules, other range: the firewall drops the node's SYN (a timeout, not a refusal).
        until_names(addr("10.96.0.64", 80), 1, "lb-out's ClusterIP works", |s| *s == names(&["b"])).await;
        let start = Instant::now();
        while !netns_list_contains("10.200.0.102 . tcp . 80 . 192.0.2.0/24") {
            assert!(start.elapsed() < DEADLINE, "no firewall for lb-out: {:?}", current_table());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dropped = ask(addr("10.200.0.102", 80)).await;
        assert!(dropped.as_ref().is_err_and(|e| e.kind() == ErrorKind::TimedOut), "{dropped:?}");
    });
}

#[test]
fn a_connection_tried_before_its_service_has_rules_does_not_block_its_client_port() {
    let Some(netns) = Netns::create("early") else { return };
    let backends = netns.backends();
    netns.run_in_node(move || async move {
        serve_backends(backends);
        let cluster = start_cluster().await;
        // A client tries a ClusterIP before any rule serves it (the proxy has not seen the
        // Service yet): one SYN, given up after 300 ms. Had its conntrack entry been kept, it
        // would hold that the connection is not NATed (NAT is chosen by a connection's first
        // packet) for 120 s (SYN_SENT), and a later SYN from that client port would match it.
        let target = addr("10.96.0.90", 80);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(SocketAddr::from((NODE_IP, 0))).expect("bind");
        let local = socket.local_addr().expect("the client port");
        let early = timeout(Duration::from_millis(300), socket.connect(target)).await;
        assert!(!matches!(early, Ok(Ok(_))), "nothing serves {target} yet: {early:?}");

        create_service(&cluster, "late", "10.96.0.90", None, json!({})).await;
        set_slice(&cluster, "late", &[(POD_A, NODE)]).await;
        until_names(target, 1, "the Service answers", |s| *s == names(&["a"])).await;
        // The same client port now reaches the pod. (The kernel reuses ports within seconds at
        // thousands of connections a second: in the bench, the first poll of a new Service can
        // precede its rules, and a later connection that got its port timed out.)
        let again = ask_from(local, target).await;
        assert_eq!(again.ok().as_deref(), Some("a"), "from {local}, which tried {target} before its rules");
    });
}

#[test]
fn a_cluster_ip_refuses_ports_no_service_serves_and_unallocated_addresses_are_dropped() {
    let Some(netns) = Netns::create("unserved") else { return };
    let backends = netns.backends();
    netns.run_in_node(move || async move {
        serve_backends(backends);
        let cluster = start_cluster().await;
        create_service(&cluster, "web", "10.96.0.40", None, json!({})).await;
        set_slice(&cluster, "web", &[(POD_A, NODE)]).await;
        until_names(addr("10.96.0.40", 80), 1, "the Service answers", |s| *s == names(&["a"])).await;

        // Another port of the same ClusterIP: no rule DNATs it, and it is refused at once (a
        // closed port), not dropped (a hang of SYN retransmissions). The rules are in: no retry.
        for port in [81, 8080] {
            let t = Instant::now();
            let got = ask(addr("10.96.0.40", port)).await;
            let took = t.elapsed();
            assert!(
                got.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
                    && took < Duration::from_millis(300),
                "TCP to 10.96.0.40:{port} is not refused at once: {got:?} after {took:?}"
            );
        }
        // UDP too: the node's own datagram is refused at send (EPERM from the output hook), or by
        // ICMP port unreachable (ECONNREFUSED); either way no answer is awaited.
        let t = Instant::now();
        let got = ask_udp(addr("10.96.0.40", 81)).await;
        assert!(
            got.as_ref().is_err_and(|e| matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::PermissionDenied))
                && t.elapsed() < Duration::from_millis(300),
            "UDP to 10.96.0.40:81: {got:?} after {:?}",
            t.elapsed()
        );

        // An address of the Service CIDR that no Service has: dropped, not refused.
        let unallocated = ask(addr("10.96.0.41", 80)).await;
        assert!(unallocated.as_ref().is_err_and(|e| e.kind() == ErrorKind::TimedOut), "{unallocated:?}");

        // The Service goes: its address is no longer known, so it is dropped as unallocated.
        let api: Api<Service> = Api::namespaced(cluster.client(), NS);
        api.delete("web", &DeleteParams::default()).await.expect("delete");
        let start = Instant::now();
        while netns_list_contains("10.96.0.40") {
            assert!(start.elapsed() < DEADLINE, "the deleted Service's address stays: {:?}", current_table());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let gone = ask(addr("10.96.0.40", 81)).await;
        assert!(gone.as_ref().is_err_and(|e| e.kind() == ErrorKind::TimedOut), "{gone:?}");
    });
}

/// The chains kplane's table always has; the others are `pick<family>-<protocol>-<n>` chains.
const FIXED_CHAINS: [&str; 15] = [
    "reject-chain",
    "mark-for-masquerade",
    "services",
    "cluster-ips-check",
    "endpoints-check",
    "firewall-check",
    "masquerading",
    "filter-prerouting",
    "filter-input",
    "filter-forward",
    "filter-output",
    "filter-output-post-dnat",
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
];

#[test]
fn services_add_elements_not_chains_and_a_pod_reaching_itself_is_masqueraded() {
    let Some(netns) = Netns::create("hairpin") else { return };
    // The pod namespace routes Service addresses through the node, which forwards.
    // (from pod a's address).
    let (via, src) = (NODE_IP.to_string(), POD_A.to_string());
    run(&["ip", "-n", &netns.pod, "route", "add", "10.96.0.0/16", "via", &via, "src", &src]).expect("route");
    run(&["ip", "netns", "exec", &netns.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"]).expect("forwarding");
    let backends = netns.backends();
    let pod = netns.pod.clone();
    netns.run_in_node(move || async move {
        serve_backends(backends);
        let cluster = start_cluster().await;
        // 40 Services (one or two endpoints each): the table has its fixed chains and one pick
        // chain per endpoint count, nothing per Service (nft reads every chain before each
        // transaction, so chains per Service would make every change cost O(Services)).
        for i in 0..40u8 {
            let name = format!("many{i}");
            create_service(&cluster, &name, &format!("10.96.0.{}", 100 + i), None, json!({})).await;
            let eps: &[(Ipv4Addr, &str)] = if i % 2 == 0 { &[(POD_A, NODE)] } else { &[(POD_A, NODE), (POD_B, NODE)] };
            set_slice(&cluster, &name, eps).await;
        }
        until_names(addr("10.96.0.139", 80), 24, "the last Service spreads", |s| *s == names(&["a", "b"])).await;
        let table = current_table().expect("the table");
        let chains: BTreeSet<&str> = table
            .lines()
            .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {"))
            .filter(|c| !FIXED_CHAINS.contains(c))
            .collect();
        assert_eq!(chains, BTreeSet::from(["pick4-tcp-1", "pick4-tcp-2"]), "{table}");

        // Pod a connects to a Service whose only endpoint is itself: DNATed back to its own
        // address, the connection only works if the node masquerades it (else pod a sees its own
        // address as the source and drops the SYN).
        create_service(&cluster, "self", "10.96.0.80", None, json!({})).await;
        set_slice(&cluster, "self", &[(POD_A, NODE)]).await;
        until_names(addr("10.96.0.80", 80), 1, "the node reaches it", |s| *s == names(&["a"])).await;
        let from_pod = move || {
            let pod = pod.clone();
            tokio::task::spawn_blocking(move || {
                Netns::within(&pod, || {
                    let client = std::net::TcpStream::connect_timeout(&addr("10.96.0.80", 80), ATTEMPT)?;
                    let mut line = String::new();
                    let mut conn = BufReader::new(client);
                    conn.get_ref().set_read_timeout(Some(ATTEMPT))?;
                    conn.read_line(&mut line)?;
                    Ok::<_, std::io::Error>(line.trim().to_string())
                })
            })
        };
        let start = Instant::now();
        loop {
            match from_pod().await.expect("the client thread") {
                Ok(name) if name == "a" => break,
                other => assert!(start.elapsed() < DEADLINE, "pod a through its own Service: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn udp_flows_are_dnated_and_refused_without_endpoints() {
    let Some(netns) = Netns::create("udp") else { return };
    let backends = netns.udp_backends();
    netns.run_in_node(move || async move {
        serve_udp_backends(backends);
        let cluster = start_cluster().await;
        let udp = json!({"ports": [{"name": "http", "port": 80, "protocol": "UDP", "targetPort": BACKEND_PORT}]});
        create_service(&cluster, "dns", "10.96.0.70", None, udp).await;
        set_slice_of(&cluster, "dns", "UDP", BACKEND_PORT, &[(POD_A, NODE), (POD_B, NODE)]).await;
        let start = Instant::now();
        let mut seen = BTreeSet::new();
        while seen != names(&["a", "b"]) {
            assert!(start.elapsed() < DEADLINE, "UDP flows reach both pods; saw {seen:?}");
            if let Ok(name) = ask_udp(addr("10.96.0.70", 80)).await {
                seen.insert(name);
            }
        }
        // No endpoints: rejected. The node's own datagram is refused at send (EPERM: the output
        // hook rejected it); one from elsewhere gets ICMP port unreachable (a connected socket's
        // ECONNREFUSED). Either way at once, not a timeout.
        set_slice_of(&cluster, "dns", "UDP", BACKEND_PORT, &[]).await;
        let start = Instant::now();
        loop {
            match ask_udp(addr("10.96.0.70", 80)).await {
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::PermissionDenied) => break,
                other => assert!(start.elapsed() < DEADLINE, "UDP without endpoints: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn the_binary_serves_in_nftables_mode_and_removes_its_table_on_sigterm() {
    let Some(netns) = Netns::create("binary") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &netns.node, env!("CARGO_BIN_EXE_kplane"), "serve", "--ephemeral"])
        .args(["--proxy-mode", "nftables", "--listen", "127.0.0.1:0", "--service-cidr", "10.96.0.0/24"])
        .args(["--node-ip", "10.200.0.1", "--node-name", NODE, "--dns-listen", "none", "--lb-pool", "none"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kplane");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.starts_with("kplane ready"), "{ready:?}");
    // The `kubernetes` Service (10.96.0.1:443, endpoint the API server) gets its rules.
    let start = std::time::Instant::now();
    while !netns.list("inet kplane").is_ok_and(|t| t.contains("10.96.0.1 . tcp . 443")) {
        assert!(start.elapsed() < DEADLINE, "no rules for the kubernetes Service: {:?}", netns.list("inet kplane"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The Service CIDR reaches the proxy: connections into it that no rule DNATed are dropped.
    let table = netns.list("inet kplane").unwrap_or_default();
    assert!(table.contains("10.96.0.0/24"), "no cluster-ips-check rule for --service-cidr: {table}");
    // `ip netns exec` execs kplane itself, so this is kplane's pid.
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    drop(lines);
    assert!(netns.list("inet kplane").is_err(), "table inet kplane is removed at shutdown");
    netns.list("ip other").expect("another program's table is left alone");
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers that run inside the node namespace (the calling thread's).

/// `nft list table inet kplane` from this thread's namespace.
fn current_table() -> Result<String, String> {
    run(&["nft", "list", "table", "inet", "kplane"])
}

fn netns_list_contains(needle: &str) -> bool {
    current_table().is_ok_and(|t| t.contains(needle))
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut conn = timeout(ATTEMPT, tokio::net::TcpStream::connect(addr)).await.expect("in time").expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    timeout(ATTEMPT, conn.read_to_string(&mut out)).await.expect("in time").expect("read");
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Figures (BENCHMARKS.md, "Service proxy: nftables mode"): not run by default.
//
// `cargo test --release --test proxy_nftables -- --ignored --nocapture`

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_nftables_throughput_and_change_latency() {
    let Some(netns) = Netns::create("bench") else { return };
    let backends = netns.backends();
    let sink = Netns::within(&netns.pod, || {
        let l = std::net::TcpListener::bind((POD_A, 9090)).expect("bind the sink");
        l.set_nonblocking(true).expect("nonblocking");
        l
    });
    let services: usize = std::env::var("KPLANE_BENCH_SERVICES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    Netns::within(&netns.node, move || {
        // Worker threads are spawned from this thread, so they are in the node namespace too.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(bench(backends, sink, services));
    });
}

async fn bench(backends: Vec<std::net::TcpListener>, sink: std::net::TcpListener, services: usize) {
    println!("(load before: {})", load());
    serve_backends(backends);
    let sink = tokio::net::TcpListener::from_std(sink).expect("sink");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                let _ = conn.write_all(b"done").await;
            });
        }
    });
    let cluster = start_cluster_with("10.96.0.0/16").await;
    let sink_svc = json!({"ports": [{"name": "http", "port": 80, "targetPort": 9090}]});
    create_service(&cluster, "sink", "10.96.0.2", None, sink_svc).await;
    set_slice_of(&cluster, "sink", "TCP", 9090, &[(POD_A, NODE)]).await;
    create_service(&cluster, "web", "10.96.0.3", None, json!({})).await;
    let t = Instant::now();
    set_slice(&cluster, "web", &[(POD_A, NODE)]).await;
    until_names(addr("10.96.0.3", 80), 1, "web answers", |s| *s == names(&["a"])).await;
    // About a second when the first SYN came before the rules (dropped, then retransmitted).
    println!("(web's first answer {:.0} ms after its slice write began)", t.elapsed().as_secs_f64() * 1000.0);

    println!("\n| figure | via ClusterIP (nftables DNAT) | direct to the pod IP | ratio |\n|---|---:|---:|---:|");
    let gib = 1u64 << 30;
    let (cip, direct) = (bulk(addr("10.96.0.2", 80), gib).await, bulk(SocketAddr::from((POD_A, 9090)), gib).await);
    println!("| bulk TCP, 1 GiB, one connection | {cip:.0} MB/s | {direct:.0} MB/s | {:.2} |", cip / direct);
    let seconds = Duration::from_secs(3);
    let cip = connections(addr("10.96.0.3", 80), seconds).await;
    let direct = connections(SocketAddr::from((POD_A, BACKEND_PORT)), seconds).await;
    println!("| new connections/s (one client, sequential) | {cip:.0} | {direct:.0} | {:.2} |", cip / direct);

    // Many Services, each with one endpoint: then how long an EndpointSlice change takes to reach the kernel.
    let start = Instant::now();
    let names_: Vec<String> = (0..services).map(|i| format!("s{i}")).collect();
    for chunk in names_.chunks(200) {
        futures::future::join_all(chunk.iter().enumerate().map(|(j, name)| {
            let cluster = &cluster;
            async move {
                let i: usize = name[1..].parse().unwrap_or(j);
                let ip = format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250);
                create_service(cluster, name, &ip, None, json!({})).await;
                set_slice(cluster, name, &[(POD_A, NODE)]).await;
            }
        }))
        .await;
    }
    let last = services - 1;
    let last_ip = format!("10.96.{}.{}", 1 + last / 250, 1 + last % 250);
    until_names(addr(&last_ip, 80), 1, "the last Service answers", |s| *s == names(&["a"])).await;
    println!(
        "\n{services} Services with one endpoint each created and in the kernel in {:.1} s.\n",
        start.elapsed().as_secs_f64()
    );
    let target = addr("10.96.1.1", 80);
    let (mut samples, mut writes, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..100 {
        let (pod, name) = if round % 2 == 0 { (POD_B, "b") } else { (POD_A, "a") };
        let t = Instant::now();
        set_slice(&cluster, "s0", &[(pod, NODE)]).await;
        let written = t.elapsed();
        while ask(target).await.ok().as_deref() != Some(name) {
            assert!(t.elapsed() < Duration::from_secs(10), "the change never applied");
        }
        samples.push(t.elapsed());
        writes.push(written);
        after.push(t.elapsed() - written);
    }
    println!("| EndpointSlice change → first connection using it | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (what, samples) in
        [("whole", &mut samples), ("the slice write (get + replace)", &mut writes), ("after the write", &mut after)]
    {
        samples.sort();
        let ms = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "| {services} Services, 100 samples: {what} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0)
        );
    }
    println!("\n(load after: {})", load());
}

/// MB/s of one connection sending `bytes` to a sink that answers when it has read them all.
async fn bulk(to: SocketAddr, bytes: u64) -> f64 {
    let mut conn = tokio::net::TcpStream::connect(to).await.expect("connect");
    let chunk = vec![7u8; 1 << 16];
    let start = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        conn.write_all(&chunk).await.expect("send");
        sent += chunk.len() as u64;
    }
    conn.shutdown().await.expect("shutdown");
    let mut done = String::new();
    conn.read_to_string(&mut done).await.expect("the sink's answer");
    assert_eq!(done, "done");
    sent as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Connections per second, each read to its end, one after another for `during`. A failed one
/// (which costs a whole `ATTEMPT` timeout) is counted and printed, and its time left out.
async fn connections(to: SocketAddr, during: Duration) -> f64 {
    let start = Instant::now();
    let (mut n, mut failed, mut lost) = (0u32, 0u32, Duration::ZERO);
    let mut first_error = None;
    while start.elapsed() < during {
        let t = Instant::now();
        match ask(to).await {
            Ok(_) => n += 1,
            Err(e) => {
                failed += 1;
                lost += t.elapsed();
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        println!("({to}: {failed} of {} connections failed, first: {e}; their {lost:?} left out)", n + failed);
    }
    f64::from(n) / (start.elapsed() - lost).as_secs_f64()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}
