//! The conformance tests of spec `service-semantics.md` §7 items 3, 4, 18–24 and 36, black-box
//! against the real `kplane serve` binary over HTTPS with kube-rs, following upstream's e2e
//! steps (`test/e2e/network/service.go`, `endpointslice.go`, `endpointslicemirroring.go`,
//! `test/e2e/common/node/pods.go`) and their assertions, made exact where upstream tolerates
//! slack a one-node cluster has no reason for.
//!
//! Nothing is faked: pods are bound and run by kplane's node agent (simulated pods, or
//! `kplane.dev/run: process` for item 36), Endpoints and EndpointSlices come from its
//! controllers, and traffic goes through its proxy. Where upstream runs `agnhost netexec` in a
//! pod, the test pins the pod's IP (`kplane.dev/pod-ip`) and listens there itself; where
//! upstream execs into a client pod, the test connects from the host.
//!
//! Each test has its own server, namespace and addresses, so the tests run in parallel (also
//! with other test binaries): test `n` uses Services in `127.160.n.0/24`, pods in
//! `127.161.n.0/24`, backends on `127.162.n.x`, NodePorts `32000+10n…+9`, no LoadBalancer
//! pool, no proxy health server and no DNS server. Waits poll with a deadline.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;
use kplane_e2e::Server;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long anything may take to converge (upstream allows minutes; this machine is shared).
const DEADLINE: Duration = Duration::from_secs(60);
/// Upstream's bound for the mirroring controller (`endpointslicemirroring.go`: 12 s per step).
const MIRROR_DEADLINE: Duration = Duration::from_secs(12);
const POLL: Duration = Duration::from_millis(50);
/// What one connection attempt may take.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Connections made per reachability check.
const TRIES: usize = 20;

const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-4";

// ---------------------------------------------------------------------------------------------------------------
// Fixture.

struct Fx {
    server: Server,
    client: kube::Client,
    ns: String,
    n: u8,
}

impl Fx {
    /// Server number `n` with namespace `ns` (created unless it is `default`).
    async fn start(n: u8, ns: &str) -> Self {
        let service_cidr = format!("127.160.{n}.0/24");
        let pod_cidr = format!("127.161.{n}.0/24");
        let first = 32000 + 10 * u32::from(n);
        let node_ports = format!("{first}-{}", first + 9);
        let args = [
            "--service-cidr",
            &service_cidr,
            "--pod-cidr",
            &pod_cidr,
            "--node-port-range",
            &node_ports,
            "--lb-pool",
            "none",
            "--proxy-healthz-listen",
            "none",
            "--dns-listen",
            "none",
        ];
        let server = Server::try_start_with(None, &args).unwrap_or_else(|e| panic!("kplane serve {args:?}: {e:#}"));
        let client = server.client().await;
        if ns != "default" {
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
        }
        Fx { server, client, ns: ns.to_string(), n }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        self.api()
    }

    async fn create<K>(&self, body: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"));
        self.api::<K>().create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("creating {body}: {e}"))
    }

    /// A backend address of this test: `127.162.n.last`.
    fn backend_ip(&self, last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 162, self.n, last))
    }

    /// The one Node's name.
    async fn node_name(&self) -> String {
        let nodes = Api::<Node>::all(self.client.clone()).list(&ListParams::default()).await.expect("list nodes");
        assert_eq!(nodes.items.len(), 1, "one node: {:?}", nodes.items);
        nodes.items[0].metadata.name.clone().expect("node name")
    }

    /// The slices labelled with `service`'s name (upstream lists them so, whoever manages them).
    async fn slices(&self, service: &str) -> Result<Vec<EndpointSlice>, String> {
        let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
        self.api::<EndpointSlice>().list(&params).await.map(|l| l.items).map_err(|e| format!("listing slices: {e}"))
    }

    /// Waits until the pod runs and has an IP (the pinned one, if `pinned`); upstream's CreateSync.
    async fn wait_running(&self, name: &str, pinned: Option<IpAddr>) -> Pod {
        let pods = self.pods();
        let pods = &pods;
        eventually(&format!("pod {name} Running with an IP"), DEADLINE, move || async move {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            let status = pod.status.clone().unwrap_or_default();
            let ip = status.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
            let ips = status.pod_ips.as_ref().map_or(0, Vec::len);
            let running = status.phase.as_deref() == Some("Running");
            match (running, ip, pinned) {
                (true, Some(ip), Some(want)) if ip == want && ips == 1 => Ok(pod),
                (true, Some(_), None) if ips == 1 => Ok(pod),
                _ => Err(format!("status: {status:?}")),
            }
        })
        .await
    }

    /// Deletes the pod as `kubectl delete` does (default grace period).
    async fn delete_pod(&self, name: &str) {
        self.pods().delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("deleting pod {name}: {e}"));
    }

    async fn wait_gone(&self, name: &str) {
        let pods = self.pods();
        let pods = &pods;
        eventually(&format!("pod {name} to be gone"), DEADLINE, move || async move {
            match pods.get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(p)) => Err(format!("still there: {:?}", p.status.and_then(|s| s.phase))),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Upstream's `validateEndpointsPortsOrFail`: the Endpoints and the EndpointSlices of
    /// `service` expose exactly these pods with these (target) ports. Made exact: every
    /// address must also be the pod's IP, ready (no `notReadyAddresses`, slice condition ready).
    async fn validate_endpoints_ports(&self, service: &str, expected: &[(&str, &[i32])]) {
        let mut want = PortsByPod::new();
        let mut names = BTreeMap::new();
        for (name, ports) in expected {
            let pod = self.pods().get(name).await.unwrap_or_else(|e| panic!("pod {name}: {e}"));
            let uid = pod.metadata.uid.clone().expect("uid");
            let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
            names.insert(uid, name.to_string());
            let mut ports = ports.to_vec();
            ports.sort_unstable();
            want.insert((name.to_string(), ip), ports);
        }
        let (want, names) = (&want, &names);
        let endpoints = self.api::<Endpoints>();
        let endpoints = &endpoints;
        let what = format!("{service} to expose {expected:?}");
        eventually(&what, DEADLINE, move || async move {
            let ep = endpoints.get(service).await.map_err(|e| format!("getting Endpoints: {e}"))?;
            let from_endpoints = endpoints_ports(&ep, names);
            let from_slices = slice_ports(&self.slices(service).await?, names);
            if &from_endpoints == want && &from_slices == want {
                Ok(())
            } else {
                Err(format!("Endpoints: {from_endpoints:?}; EndpointSlices: {from_slices:?}"))
            }
        })
        .await
    }
}

/// Ports by (pod name, address); a name says when the address is not ready or not a known pod.
type PortsByPod = BTreeMap<(String, String), Vec<i32>>;

fn pod_name_of(
    target: Option<&k8s_openapi::api::core::v1::ObjectReference>,
    names: &BTreeMap<String, String>,
) -> String {
    match target {
        None => "<no targetRef>".into(),
        Some(t) => {
            let uid = t.uid.clone().unwrap_or_default();
            match names.get(&uid) {
                Some(name) if t.kind.as_deref() == Some("Pod") && t.name.as_deref() == Some(name) => name.clone(),
                _ => format!("<targetRef {:?}/{:?} uid {uid}>", t.kind, t.name),
            }
        }
    }
}

/// Upstream's `e2eendpoints.GetContainerPortsByPodUID`, with not-ready addresses marked.
fn endpoints_ports(ep: &Endpoints, names: &BTreeMap<String, String>) -> PortsByPod {
    let mut out = PortsByPod::new();
    for subset in ep.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            for (list, ready) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
                for addr in list.iter().flatten() {
                    let mut name = pod_name_of(addr.target_ref.as_ref(), names);
                    if !ready {
                        name.push_str(" (not ready)");
                    }
                    out.entry((name, addr.ip.clone())).or_default().push(port.port);
                }
            }
        }
    }
    out.values_mut().for_each(|v| v.sort_unstable());
    out
}

/// Upstream's `e2eendpointslice.GetContainerPortsByPodUID`, with endpoints that are not
/// (ready, serving, not terminating) marked.
fn slice_ports(slices: &[EndpointSlice], names: &BTreeMap<String, String>) -> PortsByPod {
    let mut out = PortsByPod::new();
    for slice in slices {
        for port in slice.ports.iter().flatten() {
            let Some(number) = port.port else { continue };
            for ep in &slice.endpoints {
                let mut name = pod_name_of(ep.target_ref.as_ref(), names);
                let c = ep.conditions.clone().unwrap_or_default();
                if (c.ready, c.serving, c.terminating) != (Some(true), Some(true), Some(false)) {
                    name.push_str(&format!(
                        " (ready {:?} serving {:?} terminating {:?})",
                        c.ready, c.serving, c.terminating
                    ));
                }
                out.entry((name, ep.addresses.join(","))).or_default().push(number);
            }
        }
    }
    out.values_mut().for_each(|v| v.sort_unstable());
    out
}

/// Polls `attempt` until it returns `Ok`; panics with its last `Err` after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn cluster_ip(svc: &Service) -> IpAddr {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).expect("clusterIP");
    ip.parse().unwrap_or_else(|e| panic!("clusterIP {ip:?}: {e}"))
}

/// A simulated pod: one agnhost container with these ports, its IP pinned if `ip` is given.
fn agnhost_pod(name: &str, labels: &Value, ip: Option<IpAddr>, ports: Value) -> Value {
    let annotations = ip.map_or(json!({}), |ip| json!({"kplane.dev/pod-ip": ip.to_string()}));
    json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "agnhost-container", "image": AGNHOST, "args": ["netexec"], "ports": ports}]},
    })
}

fn label(obj: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    obj.labels.as_ref().and_then(|l| l.get(key)).cloned()
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Backends and clients.

/// A TCP server that answers each connection with `name\n` and closes it; stopped when dropped.
struct Backend(JoinHandle<()>);

impl Drop for Backend {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn backend(addr: SocketAddr, name: &str) -> Backend {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("backend {name} binding {addr}: {e}"));
    let greeting = format!("{name}\n");
    Backend(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(greeting.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

/// Connects to `addr` and reads the backend's name.
async fn ask(addr: SocketAddr) -> io::Result<String> {
    let mut stream = timeout(ATTEMPT, TcpStream::connect(addr)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    let mut answer = String::new();
    timeout(ATTEMPT, stream.read_to_string(&mut answer)).await.map_err(|_| io::ErrorKind::TimedOut)??;
    match answer.strip_suffix('\n') {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(io::Error::other(format!("answer {answer:?}"))),
    }
}

/// Waits until [`TRIES`] connections in a row to `addr` all succeed and reach exactly the
/// backends `want` (each of them at least once, nothing else): upstream's
/// `CheckServiceReachability` / `execHostnameTest`, from the host.
async fn until_serves(addr: SocketAddr, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let want = &want;
    eventually(&format!("{addr} to be served by exactly {want:?}"), DEADLINE, move || async move {
        let mut seen = BTreeSet::new();
        for _ in 0..TRIES {
            seen.insert(ask(addr).await.map_err(|e| format!("connection failed: {e} (seen so far {seen:?})"))?);
        }
        if &seen == want { Ok(()) } else { Err(format!("reached {seen:?}")) }
    })
    .await
}

/// Waits until connecting to `addr` is refused (a Service without endpoints, spec §4.3).
async fn until_refused(addr: SocketAddr) {
    eventually(&format!("{addr} to refuse connections"), DEADLINE, move || async move {
        match ask(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("got {other:?}")),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------------
// [sig-network] Services.

/// §7 item 3, "should serve a basic endpoint from pods": a selector Service with no pods has
/// empty endpoints; pods appear with their ports as they start and go as they are deleted; the
/// Service forwards to the pods it has.
#[tokio::test]
async fn services_should_serve_a_basic_endpoint_from_pods() {
    let fx = Fx::start(3, "services-3").await;
    let name = "endpoint-test2";
    let labels = json!({"testid": "endpoint-test2"});
    let spec = json!({"selector": labels, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]});
    let svc: Service = fx.create(json!({"metadata": {"name": name}, "spec": spec})).await;
    let vip = SocketAddr::new(cluster_ip(&svc), 80);
    fx.validate_endpoints_ports(name, &[]).await;

    let (ip1, ip2) = (fx.backend_ip(1), fx.backend_ip(2));
    let _pod1 = backend(SocketAddr::new(ip1, 80), "pod1").await;
    let _pod2 = backend(SocketAddr::new(ip2, 80), "pod2").await;

    fx.create::<Pod>(agnhost_pod("pod1", &labels, Some(ip1), json!([{"containerPort": 80}]))).await;
    fx.wait_running("pod1", Some(ip1)).await;
    fx.validate_endpoints_ports(name, &[("pod1", &[80])]).await;
    until_serves(vip, &["pod1"]).await;

    fx.create::<Pod>(agnhost_pod("pod2", &labels, Some(ip2), json!([{"containerPort": 80}]))).await;
    fx.wait_running("pod2", Some(ip2)).await;
    fx.validate_endpoints_ports(name, &[("pod1", &[80]), ("pod2", &[80])]).await;
    until_serves(vip, &["pod1", "pod2"]).await;

    fx.delete_pod("pod1").await;
    fx.validate_endpoints_ports(name, &[("pod2", &[80])]).await;
    until_serves(vip, &["pod2"]).await;

    fx.delete_pod("pod2").await;
    fx.validate_endpoints_ports(name, &[]).await;
    until_refused(vip).await;
    fx.wait_gone("pod1").await;
    fx.wait_gone("pod2").await;
}

/// §7 item 4, "should serve multiport endpoints from pods": two Service ports with named
/// targetPorts, each matched by a different pod.
#[tokio::test]
async fn services_should_serve_multiport_endpoints_from_pods() {
    let fx = Fx::start(4, "services-4").await;
    let name = "multi-endpoint-test";
    let labels = json!({"testid": "multi-endpoint-test"});
    let spec = json!({"selector": labels, "ports": [
        {"name": "portname1", "port": 80, "protocol": "TCP", "targetPort": "svc1"},
        {"name": "portname2", "port": 81, "protocol": "TCP", "targetPort": "svc2"},
    ]});
    let svc: Service = fx.create(json!({"metadata": {"name": name}, "spec": spec})).await;
    let (vip1, vip2) = (SocketAddr::new(cluster_ip(&svc), 80), SocketAddr::new(cluster_ip(&svc), 81));
    fx.validate_endpoints_ports(name, &[]).await;

    let (ip1, ip2) = (fx.backend_ip(1), fx.backend_ip(2));
    let _pod1 = backend(SocketAddr::new(ip1, 100), "pod1").await;
    let _pod2 = backend(SocketAddr::new(ip2, 101), "pod2").await;

    fx.create::<Pod>(agnhost_pod("pod1", &labels, Some(ip1), json!([{"name": "svc1", "containerPort": 100}]))).await;
    fx.wait_running("pod1", Some(ip1)).await;
    fx.validate_endpoints_ports(name, &[("pod1", &[100])]).await;

    fx.create::<Pod>(agnhost_pod("pod2", &labels, Some(ip2), json!([{"name": "svc2", "containerPort": 101}]))).await;
    fx.wait_running("pod2", Some(ip2)).await;
    fx.validate_endpoints_ports(name, &[("pod1", &[100]), ("pod2", &[101])]).await;

    // Each Service port reaches the one pod that resolves its named targetPort.
    until_serves(vip1, &["pod1"]).await;
    until_serves(vip2, &["pod2"]).await;
    // The Endpoints carry the Service port names (each pod resolves only one of them).
    let ep = fx.api::<Endpoints>().get(name).await.expect("Endpoints");
    let mut ports: Vec<(Option<String>, i32, Option<String>)> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
        .collect();
    ports.sort();
    let tcp = Some("TCP".to_string());
    assert_eq!(ports, [(Some("portname1".into()), 100, tcp.clone()), (Some("portname2".into()), 101, tcp)]);

    fx.delete_pod("pod1").await;
    fx.validate_endpoints_ports(name, &[("pod2", &[101])]).await;
    until_refused(vip1).await;
    until_serves(vip2, &["pod2"]).await;

    fx.delete_pod("pod2").await;
    fx.validate_endpoints_ports(name, &[]).await;
    until_refused(vip2).await;
    fx.wait_gone("pod1").await;
    fx.wait_gone("pod2").await;
}

// ---------------------------------------------------------------------------------------------------------------
// [sig-network] EndpointSlice.

/// §7 item 18, "should have Endpoints and EndpointSlices pointing to API Server": `kubernetes`
/// has both, with the same addresses and ports, and they are the API server: its ClusterIP
/// answers HTTPS with the server's own `/version`, through the proxy.
#[tokio::test]
async fn endpointslice_should_have_endpoints_and_slices_pointing_to_api_server() {
    let fx = Fx::start(18, "default").await;
    let svc = fx.api::<Service>().get("kubernetes").await.expect("the kubernetes Service");
    let ep = fx.api::<Endpoints>().get("kubernetes").await.expect("the kubernetes Endpoints");
    let subsets = ep.subsets.clone().unwrap_or_default();
    assert!(!subsets.is_empty(), "at least one subset: {ep:?}");
    let slices = fx.slices("kubernetes").await.expect("slices");
    assert!(!slices.is_empty(), "at least one EndpointSlice");

    // upstream's endpointSlicesEqual: same addresses and ports (the slices of the Service's family).
    let ep_addresses: BTreeSet<String> = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()))
        .map(|a| a.ip.clone())
        .collect();
    let ep_ports: BTreeSet<i32> = subsets.iter().flat_map(|s| s.ports.iter().flatten()).map(|p| p.port).collect();
    let v4: Vec<&EndpointSlice> = slices.iter().filter(|s| s.address_type == "IPv4").collect();
    let slice_addresses: BTreeSet<String> =
        v4.iter().flat_map(|s| &s.endpoints).flat_map(|e| e.addresses.iter().cloned()).collect();
    let slice_ports: BTreeSet<i32> = v4.iter().flat_map(|s| s.ports.iter().flatten()).filter_map(|p| p.port).collect();
    assert_eq!(ep_addresses, slice_addresses, "{ep:?}\n{slices:?}");
    assert_eq!(ep_ports, slice_ports, "{ep:?}\n{slices:?}");

    // They point at this API server: its address and port, under the Service's port name.
    let listen: SocketAddr = fx.server.url().trim_start_matches("https://").parse().expect("server address");
    assert_eq!(ep_addresses, BTreeSet::from([listen.ip().to_string()]));
    assert_eq!(ep_ports, BTreeSet::from([i32::from(listen.port())]));
    let svc_port = &svc.spec.as_ref().and_then(|s| s.ports.clone()).expect("ports")[0];
    assert_eq!((svc_port.name.as_deref(), svc_port.port), (Some("https"), 443));
    let names: Vec<Option<String>> = v4.iter().flat_map(|s| s.ports.iter().flatten()).map(|p| p.name.clone()).collect();
    assert_eq!(names, [Some("https".to_string())]);

    // And traffic to the ClusterIP reaches it: HTTPS (the serving certificate names the ClusterIP).
    let http = fx.server.https_client().timeout(ATTEMPT).build().expect("http client");
    let want = fx.client.apiserver_version().await.expect("/version").git_version;
    let url = format!("https://{}:443/version", cluster_ip(&svc));
    let (http, url) = (&http, &url);
    let got = eventually(&format!("GET {url}"), DEADLINE, move || async move {
        let response = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        body["gitVersion"].as_str().map(str::to_string).ok_or_else(|| format!("body {body}"))
    })
    .await;
    assert_eq!(got, want);
}

/// §7 item 19, "should create and delete Endpoints and EndpointSlices for a Service with a
/// selector specified": both appear for a selector matching nothing, and go with the Service.
#[tokio::test]
async fn endpointslice_should_create_and_delete_endpoints_and_slices_for_a_service_with_a_selector() {
    let fx = Fx::start(19, "endpointslice-19").await;
    let name = "example-empty-selector";
    let spec = json!({
        "selector": {"does-not-match-anything": "endpoints-and-endpoint-slices-should-still-be-created"},
        "ports": [{"name": "example", "port": 80, "protocol": "TCP"}],
    });
    let svc: Service = fx.create(json!({"metadata": {"name": name}, "spec": spec})).await;
    let uid = svc.metadata.uid.clone().expect("uid");

    let endpoints = fx.api::<Endpoints>();
    let endpoints = &endpoints;
    let ep =
        eventually(
            "the Endpoints",
            DEADLINE,
            move || async move { endpoints.get(name).await.map_err(|e| e.to_string()) },
        )
        .await;
    assert!(ep.subsets.unwrap_or_default().is_empty(), "no pods, no subsets");

    let fx = &fx;
    let slices = eventually("an EndpointSlice", DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        if slices.is_empty() { Err("none".to_string()) } else { Ok(slices) }
    })
    .await;
    assert_eq!(slices.len(), 1, "{slices:?}");
    let slice = &slices[0];
    assert_eq!(label(&slice.metadata, MANAGED_BY_LABEL).as_deref(), Some(SLICE_CONTROLLER));
    assert!(slice.endpoints.is_empty(), "{slice:?}");
    let owners = slice.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owners.iter().map(|o| (o.kind.as_str(), o.uid.as_str())).collect::<Vec<_>>(),
        [("Service", uid.as_str())]
    );

    fx.api::<Service>().delete(name, &DeleteParams::default()).await.expect("deleting the Service");
    eventually("the Endpoints to be deleted", DEADLINE, move || async move {
        match endpoints.get(name).await {
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // upstream allows 90 s (its garbage collector resyncs every 30 s).
    eventually("the EndpointSlices to be deleted", DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        if slices.is_empty() { Ok(()) } else { Err(format!("{slices:?}")) }
    })
    .await;
}

/// upstream's `expectEndpointsAndSlices`: waits for `numSubsets` subsets and `numSlices`
/// slices holding exactly `pods`, then checks ports (named: the pod's own container port),
/// addresses and target references in both.
async fn expect_endpoints_and_slices(
    fx: &Fx,
    svc: &Service,
    pods: &[&Pod],
    num_subsets: usize,
    num_slices: usize,
    named_port: bool,
) -> Vec<EndpointSlice> {
    let name = svc.metadata.name.as_deref().expect("name");
    let want_ips: BTreeSet<String> =
        pods.iter().map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP")).collect();
    let want_ips = &want_ips;
    let slices = eventually(&format!("{num_slices} slices of {name} for {want_ips:?}"), DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        let addresses: Vec<String> = slices.iter().flat_map(|s| &s.endpoints).map(|e| e.addresses[0].clone()).collect();
        let distinct: BTreeSet<String> = addresses.iter().cloned().collect();
        if slices.len() == num_slices && addresses.len() == want_ips.len() && &distinct == want_ips {
            Ok(slices)
        } else {
            Err(format!("{slices:?}"))
        }
    })
    .await;
    let endpoints = fx.api::<Endpoints>();
    let endpoints = &endpoints;
    let ep = eventually(&format!("{num_subsets} subsets of {name} for {want_ips:?}"), DEADLINE, move || async move {
        let ep = endpoints.get(name).await.map_err(|e| e.to_string())?;
        let subsets = ep.subsets.clone().unwrap_or_default();
        let ips: Vec<String> = subsets
            .iter()
            .flat_map(|s| s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()))
            .map(|a| a.ip.clone())
            .collect();
        let distinct: BTreeSet<String> = ips.iter().cloned().collect();
        if subsets.len() == num_subsets && ips.len() == want_ips.len() && &distinct == want_ips {
            Ok(ep)
        } else {
            Err(format!("{ep:?}"))
        }
    })
    .await;

    let by_ip: BTreeMap<String, &Pod> =
        pods.iter().map(|p| (p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP"), *p)).collect();
    let svc_ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).expect("ports");
    let check_target = |target: Option<&k8s_openapi::api::core::v1::ObjectReference>, pod: &Pod| {
        let t = target.unwrap_or_else(|| panic!("no targetRef for pod {:?}", pod.metadata.name));
        assert_eq!(
            (t.kind.as_deref(), t.namespace.as_deref(), t.name.as_deref(), t.uid.as_deref()),
            (Some("Pod"), pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref(), pod.metadata.uid.as_deref()),
        );
    };
    // The container port a named targetPort resolves to for `pod`.
    let named = |pod: &Pod| -> i32 {
        let target = match svc_ports[0].target_port.clone() {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
            other => panic!("not a named targetPort: {other:?}"),
        };
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let port = container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(target.as_str()));
        port.unwrap_or_else(|| panic!("pod {:?} has no port {target}", pod.metadata.name)).container_port
    };
    let target_int = |i: usize| match svc_ports[i].target_port.clone() {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
        other => panic!("not a numeric targetPort: {other:?}"),
    };

    for subset in ep.subsets.iter().flatten() {
        let ports = subset.ports.clone().unwrap_or_default();
        assert_eq!(ports.len(), svc_ports.len(), "{subset:?}");
        if !named_port {
            for (i, p) in ports.iter().enumerate() {
                let want = (svc_ports[i].name.clone(), svc_ports[i].protocol.clone(), target_int(i));
                assert_eq!((p.name.clone(), p.protocol.clone(), p.port), want, "{subset:?}");
            }
        }
        for addr in subset.addresses.iter().flatten().chain(subset.not_ready_addresses.iter().flatten()) {
            let pod = by_ip.get(&addr.ip).unwrap_or_else(|| panic!("unexpected address {}", addr.ip));
            check_target(addr.target_ref.as_ref(), pod);
            if named_port {
                assert_eq!(
                    (ports[0].port, ports[0].name.clone()),
                    (named(pod), svc_ports[0].name.clone()),
                    "{subset:?}"
                );
            }
        }
    }
    if pods.is_empty() {
        assert_eq!(slices.len(), 1, "one placeholder slice: {slices:?}");
    }
    for slice in &slices {
        let ports = slice.ports.clone().unwrap_or_default();
        let want_len = if pods.is_empty() { 0 } else { svc_ports.len() };
        assert_eq!(ports.len(), want_len, "{slice:?}");
        if !named_port {
            for (i, p) in ports.iter().enumerate() {
                let want = (svc_ports[i].name.clone(), svc_ports[i].protocol.clone(), Some(target_int(i)));
                assert_eq!((p.name.clone(), p.protocol.clone(), p.port), want, "{slice:?}");
            }
        }
        for endpoint in &slice.endpoints {
            let pod = by_ip.get(&endpoint.addresses[0]).unwrap_or_else(|| panic!("unexpected endpoint {endpoint:?}"));
            assert_eq!(endpoint.addresses.len(), 1, "{endpoint:?}");
            check_target(endpoint.target_ref.as_ref(), pod);
            if named_port {
                assert_eq!((ports[0].port, ports[0].name.clone()), (Some(named(pod)), svc_ports[0].name.clone()));
            }
        }
    }
    slices
}

/// §7 item 20, "should create Endpoints and EndpointSlices for Pods matching a Service": int
/// and named targetPorts (a named one resolved per pod), target references, an empty Service
/// with one slice and no ports, slices recreated after deletion; slices labelled and owned
/// (spec §3.3); a not-ready pod marked not ready until its readiness gate passes.
#[tokio::test]
async fn endpointslice_should_create_endpoints_and_slices_for_pods_matching_a_service() {
    let fx = Fx::start(20, "endpointslice-20").await;
    let node = fx.node_name().await;
    let pod = |name: &str, labels: Value, ports: Value| {
        json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "container1", "image": NGINX, "ports": ports}]},
        })
    };
    fx.create::<Pod>(pod(
        "pod1",
        json!({"pod1": "on", "shared12": "on"}),
        json!([{"name": "example-name", "containerPort": 3000}]),
    ))
    .await;
    fx.create::<Pod>(pod(
        "pod2",
        json!({"pod2": "on", "shared12": "on"}),
        json!([{"name": "example-name", "containerPort": 3001}, {"name": "other-port", "containerPort": 3002}]),
    ))
    .await;
    let service = |name: &str, selector: Value, port: Value| {
        let spec = json!({"selector": selector, "publishNotReadyAddresses": true, "ports": [port]});
        json!({"metadata": {"name": name}, "spec": spec})
    };
    let svc1: Service = fx
        .create(service(
            "example-int-port",
            json!({"pod1": "on"}),
            json!({"name": "example", "port": 80, "targetPort": 3000, "protocol": "TCP"}),
        ))
        .await;
    let svc2: Service = fx
        .create(service(
            "example-named-port",
            json!({"shared12": "on"}),
            json!({"name": "http", "port": 80, "targetPort": "example-name", "protocol": "TCP"}),
        ))
        .await;
    let svc3: Service = fx
        .create(service(
            "example-no-match",
            json!({"pod3": "on"}),
            json!({"name": "example-no-match", "port": 80, "targetPort": 8080, "protocol": "TCP"}),
        ))
        .await;
    let pod1 = fx.wait_running("pod1", None).await;
    let pod2 = fx.wait_running("pod2", None).await;

    // referencing a single matching pod
    expect_endpoints_and_slices(&fx, &svc1, &[&pod1], 1, 1, false).await;
    // referencing matching pods with named port
    let slices = expect_endpoints_and_slices(&fx, &svc2, &[&pod1, &pod2], 2, 2, true).await;
    // creating empty Endpoints and EndpointSlices for no matching Pods
    let empty = expect_endpoints_and_slices(&fx, &svc3, &[], 0, 1, false).await;
    assert!(empty[0].endpoints.is_empty());

    // Labelled, owned and filled as the controller does (spec §3.3).
    let svc2_uid = svc2.metadata.uid.clone().expect("uid");
    for slice in &slices {
        let meta = &slice.metadata;
        assert!(meta.name.as_deref().is_some_and(|n| n.starts_with("example-named-port-")), "{meta:?}");
        assert_eq!(label(meta, SERVICE_NAME_LABEL).as_deref(), Some("example-named-port"));
        assert_eq!(label(meta, MANAGED_BY_LABEL).as_deref(), Some(SLICE_CONTROLLER));
        assert_eq!(label(meta, "service.kubernetes.io/headless"), None);
        let owners = meta.owner_references.clone().unwrap_or_default();
        let owners: Vec<_> = owners
            .iter()
            .map(|o| {
                (
                    o.api_version.as_str(),
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.uid.as_str(),
                    o.controller,
                    o.block_owner_deletion,
                )
            })
            .collect();
        assert_eq!(owners, [("v1", "Service", "example-named-port", svc2_uid.as_str(), Some(true), Some(true))]);
        assert_eq!(slice.address_type, "IPv4");
        for endpoint in &slice.endpoints {
            let c = endpoint.conditions.clone().unwrap_or_default();
            assert_eq!((c.ready, c.serving, c.terminating), (Some(true), Some(true), Some(false)), "{endpoint:?}");
            assert_eq!(endpoint.node_name.as_deref(), Some(node.as_str()));
        }
        assert_eq!(slice.ports.as_ref().expect("ports")[0].protocol.as_deref(), Some("TCP"));
    }

    // recreating EndpointSlices after they've been deleted
    let before: BTreeSet<String> = slices.iter().filter_map(|s| s.metadata.uid.clone()).collect();
    for slice in &slices {
        let name = slice.metadata.name.as_deref().expect("name");
        fx.api::<EndpointSlice>().delete(name, &DeleteParams::default()).await.expect("deleting a slice");
    }
    let (fx_ref, before) = (&fx, &before);
    eventually("the deleted slices to be gone", DEADLINE, move || async move {
        let now = fx_ref.slices("example-named-port").await?;
        let left: Vec<_> = now.iter().filter(|s| s.metadata.uid.as_ref().is_some_and(|u| before.contains(u))).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;
    let recreated = expect_endpoints_and_slices(&fx, &svc2, &[&pod1, &pod2], 2, 2, true).await;
    assert_eq!(recreated.len(), 2);

    // A pod that is not ready (a readiness gate not yet passed) is marked so, then ready once it passes.
    let gate = "example.com/e2e-gate";
    let _svc4: Service = fx
        .create(json!({"metadata": {"name": "example-not-ready"}, "spec": {
            "selector": {"pod4": "on"},
            "ports": [{"name": "example", "port": 80, "targetPort": 3000, "protocol": "TCP"}],
        }}))
        .await;
    let mut spec4 = pod("pod4", json!({"pod4": "on"}), json!([{"name": "example-name", "containerPort": 3000}]));
    spec4["spec"]["readinessGates"] = json!([{"conditionType": gate}]);
    fx.create::<Pod>(spec4).await;
    let pod4 = fx.wait_running("pod4", None).await;
    let ready_of = |pod: &Pod| {
        pod.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    assert_eq!(ready_of(&pod4).as_deref(), Some("False"), "{:?}", pod4.status);
    let ip4 = pod4.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
    let endpoints = fx.api::<Endpoints>();
    let check = |ready: bool| {
        let (endpoints, ip4, node) = (&endpoints, &ip4, &node);
        async move {
            let what = format!("pod4 {} in example-not-ready", if ready { "ready" } else { "not ready" });
            eventually(&what, DEADLINE, move || async move {
                let slices = fx_ref.slices("example-not-ready").await?;
                let all: Vec<_> = slices.iter().flat_map(|s| s.endpoints.iter()).collect();
                let ok_slice = all.len() == 1 && {
                    let e = all[0];
                    let c = e.conditions.clone().unwrap_or_default();
                    e.addresses == [ip4.clone()]
                        && (c.ready, c.serving, c.terminating) == (Some(ready), Some(ready), Some(false))
                        && e.node_name.as_deref() == Some(node.as_str())
                };
                let ep = endpoints.get("example-not-ready").await.map_err(|e| e.to_string())?;
                let subsets = ep.subsets.clone().unwrap_or_default();
                let ips = |ready_list: bool| -> Vec<String> {
                    subsets
                        .iter()
                        .flat_map(|s| {
                            if ready_list {
                                s.addresses.iter().flatten()
                            } else {
                                s.not_ready_addresses.iter().flatten()
                            }
                        })
                        .map(|a| a.ip.clone())
                        .collect()
                };
                let (want_ready, want_not_ready) =
                    if ready { (vec![ip4.clone()], vec![]) } else { (vec![], vec![ip4.clone()]) };
                if ok_slice && ips(true) == want_ready && ips(false) == want_not_ready {
                    Ok(())
                } else {
                    Err(format!("slice endpoints {all:?}; Endpoints {ep:?}"))
                }
            })
            .await
        }
    };
    check(false).await;
    let patch = json!({"status": {"conditions": [{"type": gate, "status": "True"}]}});
    fx.pods()
        .patch_status("pod4", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patching the gate");
    check(true).await;
}

/// §7 item 21, "should support creating EndpointSlice API operations": discovery, then create,
/// get, list, watch (namespaced and cluster-wide), patch, update, delete, deletecollection.
#[tokio::test]
async fn endpointslice_should_support_creating_endpointslice_api_operations() {
    let fx = Fx::start(21, "endpointslice-21").await;
    let unique = "endpointslice-21-ops";
    let selector = format!("special-label={unique}");

    // getting /apis
    let groups = fx.client.list_api_groups().await.expect("/apis");
    let discovery = groups.groups.iter().find(|g| g.name == "discovery.k8s.io").expect("the discovery.k8s.io group");
    assert!(discovery.versions.iter().any(|v| v.version == "v1"), "{discovery:?}");
    // getting /apis/discovery.k8s.io
    let request = http::Request::get("/apis/discovery.k8s.io").body(Vec::new()).expect("request");
    let group: APIGroup = fx.client.request(request).await.expect("/apis/discovery.k8s.io");
    assert_eq!(group.name, "discovery.k8s.io");
    assert!(group.versions.iter().any(|v| v.version == "v1" && v.group_version == "discovery.k8s.io/v1"), "{group:?}");
    // getting /apis/discovery.k8s.io/v1
    let resources = fx.client.list_api_group_resources("discovery.k8s.io/v1").await.expect("/apis/discovery.k8s.io/v1");
    let eps = resources.resources.iter().find(|r| r.name == "endpointslices").expect("endpointslices");
    assert_eq!((eps.kind.as_str(), eps.namespaced), ("EndpointSlice", true));
    let verbs: BTreeSet<&str> = eps.verbs.iter().map(String::as_str).collect();
    let want = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
    assert_eq!(verbs, BTreeSet::from(want), "{eps:?}");

    let api = fx.api::<EndpointSlice>();
    let all = Api::<EndpointSlice>::all(fx.client.clone());
    let template: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"generateName": "e2e-example-ing", "labels": {"special-label": unique}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["1.2.3.4", "5.6.7.8"]}, {"addresses": ["2.2.3.4", "6.6.7.8"]}],
    }))
    .expect("template");

    // creating
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(api.create(&PostParams::default(), &template).await.expect("create"));
    }
    let names: BTreeSet<String> = created.iter().map(|s| s.metadata.name.clone().expect("name")).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("e2e-example-ing") && n.len() > "e2e-example-ing".len()), "{names:?}");
    let created_eps = created.pop().expect("one");
    let created_name = created_eps.metadata.name.clone().expect("name");
    let created_rv: u64 = created_eps.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).expect("rv");
    assert_eq!(created_eps.endpoints.len(), 2);

    // getting
    let got = api.get(&created_name).await.expect("get");
    assert_eq!(got.metadata.uid, created_eps.metadata.uid);
    assert_eq!(got.metadata.resource_version, created_eps.metadata.resource_version);

    // listing
    let list = api.list(&ListParams::default().labels(&selector)).await.expect("list");
    let listed: BTreeSet<String> = list.items.iter().filter_map(|s| s.metadata.name.clone()).collect();
    assert_eq!(listed, names, "filtered list should have the 3 items");
    let list_rv = list.metadata.resource_version.clone().expect("list resourceVersion");

    // watching
    let params = WatchParams::default().labels(&selector);
    let mut watch = api.watch(&params, &list_rv).await.expect("watch").boxed();
    // cluster-wide listing and watching
    let cluster_list = all.list(&ListParams::default().labels(&selector)).await.expect("cluster-wide list");
    let cluster_listed: BTreeSet<String> = cluster_list.items.iter().filter_map(|s| s.metadata.name.clone()).collect();
    assert_eq!(cluster_listed, names);
    let mut cluster_watch = all.watch(&params, &list_rv).await.expect("cluster-wide watch").boxed();

    // patching
    let patch = json!({"metadata": {"annotations": {"patched": "true"}}});
    let patched = api.patch(&created_name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    assert_eq!(patched.metadata.annotations.as_ref().and_then(|a| a.get("patched")).map(String::as_str), Some("true"));
    let patched_rv: u64 = patched.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).expect("rv");
    assert!(patched_rv > created_rv, "patched object should have a larger resource version");

    // updating
    let mut to_update = api.get(&created_name).await.expect("get");
    to_update.metadata.annotations.get_or_insert_with(BTreeMap::new).insert("updated".into(), "true".into());
    let updated = api.replace(&created_name, &PostParams::default(), &to_update).await.expect("update");
    let annotations = updated.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("updated").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("patched").map(String::as_str), Some("true"));

    // Both watches see exactly the patch, then the update, as MODIFIED.
    for (what, stream) in [("watch", &mut watch), ("cluster-wide watch", &mut cluster_watch)] {
        let events = next_events(stream, 2).await;
        let seen: Vec<(String, String, Option<String>, Option<String>)> = events
            .iter()
            .map(|(kind, s)| {
                let a = s.metadata.annotations.clone().unwrap_or_default();
                (
                    kind.clone(),
                    s.metadata.name.clone().unwrap_or_default(),
                    a.get("patched").cloned(),
                    a.get("updated").cloned(),
                )
            })
            .collect();
        let t = Some("true".to_string());
        let want = [
            ("MODIFIED".to_string(), created_name.clone(), t.clone(), None),
            ("MODIFIED".to_string(), created_name.clone(), t.clone(), t.clone()),
        ];
        assert_eq!(seen, want, "{what}");
    }

    // deleting
    api.delete(&created_name, &DeleteParams::default()).await.expect("delete");
    let err = api.get(&created_name).await.expect_err("deleted");
    assert_eq!(api_code(&err), Some(404), "{err:?}");
    let list = api.list(&ListParams::default().labels(&selector)).await.expect("list");
    let left: BTreeSet<String> = list.items.iter().filter_map(|s| s.metadata.name.clone()).collect();
    let mut want_left = names.clone();
    want_left.remove(&created_name);
    assert_eq!(left, want_left, "filtered list should have the 2 others");

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await
        .expect("deletecollection");
    let list = api.list(&ListParams::default().labels(&selector)).await.expect("list");
    assert!(list.items.is_empty(), "filtered list should have 0 items: {:?}", list.items);
    // The watch saw every deletion.
    let deleted: BTreeSet<String> = next_events(&mut watch, 3)
        .await
        .into_iter()
        .map(|(kind, s)| format!("{kind} {}", s.metadata.name.unwrap_or_default()))
        .collect();
    assert_eq!(deleted, names.iter().map(|n| format!("DELETED {n}")).collect());
}

/// The next `n` events (bookmarks skipped) of a watch, as (type, object); panics at the deadline.
async fn next_events<S>(stream: &mut S, n: usize) -> Vec<(String, EndpointSlice)>
where
    S: Stream<Item = kube::Result<WatchEvent<EndpointSlice>>> + Unpin,
{
    let mut out = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = match next {
            Err(_) => panic!("timed out waiting for {n} watch events; got {out:?}"),
            Ok(None) => panic!("the watch ended after {out:?}"),
            Ok(Some(e)) => e.expect("watch event"),
        };
        match event {
            WatchEvent::Added(s) => out.push(("ADDED".into(), s)),
            WatchEvent::Modified(s) => out.push(("MODIFIED".into(), s)),
            WatchEvent::Deleted(s) => out.push(("DELETED".into(), s)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?} after {out:?}"),
        }
    }
    out
}

/// A hand-made EndpointSlice of `service` (upstream's template in items 22 and 23).
fn custom_slice(service: &str, ns: &str, ip: IpAddr, port_name: &str, port: i32) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"generateName": "e2e-custom-slice", "labels": {
            SERVICE_NAME_LABEL: service,
            MANAGED_BY_LABEL: format!("e2e-test{ns}"),
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }))
    .expect("slice")
}

/// upstream's `container-handle-<port>-request` agnhost container.
fn netexec(port: u16) -> Value {
    json!({
        "name": format!("container-handle-{port}-request"),
        "image": AGNHOST,
        "args": ["netexec", "--http-port", port.to_string(), "--udp-port", "-1"],
        "ports": [{"containerPort": port, "protocol": "TCP"}],
    })
}

fn selectorless_two_ports() -> Value {
    json!({"metadata": {"name": "example-custom-endpoints"}, "spec": {"ports": [
        {"name": "port80", "port": 80, "protocol": "TCP"},
        {"name": "port81", "port": 81, "protocol": "TCP"},
    ]}})
}

/// §7 item 22, "should support a Service with multiple ports specified in multiple
/// EndpointSlices": a selectorless Service on 80 and 81, two hand-made slices with the same
/// pod IP and different target ports; both ports work through the proxy.
#[tokio::test]
async fn endpointslice_should_support_a_service_with_multiple_ports_in_multiple_slices() {
    let fx = Fx::start(22, "endpointslice-22").await;
    let svc: Service = fx.create(selectorless_two_ports()).await;
    let ip = fx.backend_ip(1);
    // The server pod: two containers, 8090 and 9090, answering with the pod's name and port.
    let _b8090 = backend(SocketAddr::new(ip, 8090), "pod-handle-http-request:8090").await;
    let _b9090 = backend(SocketAddr::new(ip, 9090), "pod-handle-http-request:9090").await;
    let server_pod = json!({
        "metadata": {"name": "pod-handle-http-request", "annotations": {"kplane.dev/pod-ip": ip.to_string()}},
        "spec": {"containers": [netexec(8090), netexec(9090)]},
    });
    fx.create::<Pod>(server_pod).await;
    let pod = fx.wait_running("pod-handle-http-request", Some(ip)).await;
    let pod_ip: IpAddr = pod.status.and_then(|s| s.pod_ip).expect("pod IP").parse().expect("IP");

    let api = fx.api::<EndpointSlice>();
    let pp = PostParams::default();
    api.create(&pp, &custom_slice("example-custom-endpoints", &fx.ns, pod_ip, "port80", 8090)).await.expect("create");
    api.create(&pp, &custom_slice("example-custom-endpoints", &fx.ns, pod_ip, "port81", 9090)).await.expect("create");

    let vip = cluster_ip(&svc);
    until_serves(SocketAddr::new(vip, 80), &["pod-handle-http-request:8090"]).await;
    until_serves(SocketAddr::new(vip, 81), &["pod-handle-http-request:9090"]).await;
    // Selectorless: no controller made Endpoints, and the hand-made slices are all there is.
    let ep = fx.api::<Endpoints>().get_opt("example-custom-endpoints").await.expect("get Endpoints");
    assert!(ep.is_none(), "{ep:?}");
    let slices = fx.slices("example-custom-endpoints").await.expect("slices");
    assert_eq!(slices.len(), 2, "{slices:?}");
}

/// §7 item 23, "should support a Service with multiple endpoint IPs specified in multiple
/// EndpointSlices": as item 22, with two pods, each in its own slice and port.
#[tokio::test]
async fn endpointslice_should_support_a_service_with_multiple_endpoint_ips_in_multiple_slices() {
    let fx = Fx::start(23, "endpointslice-23").await;
    let svc: Service = fx.create(selectorless_two_ports()).await;
    let mut pod_ips = Vec::new();
    let mut backends = Vec::new();
    for (i, name) in [(1u8, "pod1-handle-http-request"), (2, "pod2-handle-http-request")] {
        let ip = fx.backend_ip(i);
        backends.push(backend(SocketAddr::new(ip, 8090), name).await);
        let server_pod = json!({
            "metadata": {"name": name, "annotations": {"kplane.dev/pod-ip": ip.to_string()}},
            "spec": {"containers": [netexec(8090)]},
        });
        fx.create::<Pod>(server_pod).await;
        let pod = fx.wait_running(name, Some(ip)).await;
        pod_ips.push(pod.status.and_then(|s| s.pod_ip).expect("pod IP").parse::<IpAddr>().expect("IP"));
    }

    let api = fx.api::<EndpointSlice>();
    let pp = PostParams::default();
    api.create(&pp, &custom_slice("example-custom-endpoints", &fx.ns, pod_ips[0], "port80", 8090))
        .await
        .expect("create");
    api.create(&pp, &custom_slice("example-custom-endpoints", &fx.ns, pod_ips[1], "port81", 8090))
        .await
        .expect("create");

    let vip = cluster_ip(&svc);
    until_serves(SocketAddr::new(vip, 80), &["pod1-handle-http-request"]).await;
    until_serves(SocketAddr::new(vip, 81), &["pod2-handle-http-request"]).await;
    let ep = fx.api::<Endpoints>().get_opt("example-custom-endpoints").await.expect("get Endpoints");
    assert!(ep.is_none(), "{ep:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// [sig-network] EndpointSliceMirroring.

/// §7 item 24, "should mirror a custom Endpoints resource through create update and delete",
/// within upstream's 12 s per step.
#[tokio::test]
async fn endpointslicemirroring_should_mirror_a_custom_endpoints_resource() {
    let fx = Fx::start(24, "endpointslicemirroring-24").await;
    let name = "example-custom-endpoints";
    let _svc: Service = fx
        .create(json!({"metadata": {"name": name}, "spec": {
            "ports": [{"name": "example", "port": 80, "protocol": "TCP"}],
        }}))
        .await;
    let mut endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": name},
        "subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3"}]}],
    }))
    .expect("Endpoints");
    let api = fx.api::<Endpoints>();
    let fx = &fx;

    // mirroring a new custom Endpoint: every slice there is must be the mirror (upstream fails
    // at once on a wrong one).
    let created = api.create(&PostParams::default(), &endpoints).await.expect("creating Endpoints");
    let slices = eventually("the Endpoints to be mirrored", MIRROR_DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        if slices.is_empty() {
            return Err("no slice yet".into());
        }
        for slice in &slices {
            assert_eq!(mirror_of(slice), (vec![Some(80)], vec![vec!["10.1.2.3".to_string()]]), "{slice:?}");
        }
        Ok(slices)
    })
    .await;
    assert_eq!(slices.len(), 1, "{slices:?}");
    let meta = &slices[0].metadata;
    assert_eq!(label(meta, MANAGED_BY_LABEL).as_deref(), Some(MIRROR_CONTROLLER));
    let owners = meta.owner_references.clone().unwrap_or_default();
    let owners: Vec<_> = owners.iter().map(|o| (o.kind.as_str(), Some(o.uid.clone()))).collect();
    assert_eq!(owners, [("Endpoints", created.metadata.uid.clone())]);
    assert_eq!(slices[0].ports.as_ref().expect("ports")[0].protocol.as_deref(), Some("TCP"));

    // mirroring an update to a custom Endpoint: an unconditional update (no resourceVersion).
    endpoints.subsets.as_mut().expect("subsets")[0].addresses =
        Some(vec![serde_json::from_value(json!({"ip": "10.2.3.4"})).expect("address")]);
    api.replace(name, &PostParams::default(), &endpoints).await.expect("updating Endpoints");
    eventually("the update to be mirrored", MIRROR_DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        let got: Vec<_> = slices.iter().map(mirror_of).collect();
        if got == [(vec![Some(80)], vec![vec!["10.2.3.4".to_string()]])] { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;

    // mirroring deletion of a custom Endpoint
    api.delete(name, &DeleteParams::default()).await.expect("deleting Endpoints");
    eventually("the deletion to be mirrored", MIRROR_DEADLINE, move || async move {
        let slices = fx.slices(name).await?;
        if slices.is_empty() { Ok(()) } else { Err(format!("{slices:?}")) }
    })
    .await;
}

/// A slice's ports and each endpoint's addresses.
fn mirror_of(slice: &EndpointSlice) -> (Vec<Option<i32>>, Vec<Vec<String>>) {
    (
        slice.ports.iter().flatten().map(|p| p.port).collect(),
        slice.endpoints.iter().map(|e| e.addresses.clone()).collect(),
    )
}

// ---------------------------------------------------------------------------------------------------------------
// [sig-node] Pods.

/// Deletes a process pod (and waits for it to go) if the test ends before it does: the server
/// is killed with SIGKILL when dropped, and its pods' child processes would outlive it.
struct PodGuard<'a> {
    server: &'a Server,
    ns: &'a str,
    name: &'a str,
    armed: bool,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // On a thread of its own with its own runtime: the test's runtime is unwinding.
        std::thread::scope(|scope| {
            let _ = scope.spawn(|| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async {
                    let pods: Api<Pod> = Api::namespaced(self.server.client().await, self.ns);
                    let _ = pods.delete(self.name, &DeleteParams::default()).await;
                    let deadline = Instant::now() + DEADLINE;
                    while Instant::now() < deadline && matches!(pods.get_opt(self.name).await, Ok(Some(_))) {
                        tokio::time::sleep(POLL).await;
                    }
                });
            });
        });
    }
}

/// §7 item 36, "Pods should contain environment variables for services": a pod created after
/// Service `fooservice` (8765 → 8080) has exactly the `FOOSERVICE_*` variables of spec §6.
#[tokio::test]
async fn pods_should_contain_environment_variables_for_services() {
    let fx = Fx::start(36, "pods-36").await;
    let server_name = "server-envvars";
    let server_pod = json!({
        "metadata": {"name": server_name, "labels": {"name": server_name}},
        "spec": {"containers": [{"name": "srv", "image": AGNHOST, "ports": [{"containerPort": 9376}]}]},
    });
    fx.create::<Pod>(server_pod).await;
    fx.wait_running(server_name, None).await;
    let svc: Service = fx
        .create(json!({"metadata": {"name": "fooservice", "labels": {"name": "fooservice"}}, "spec": {
            "ports": [{"port": 8765, "targetPort": 8080}], "selector": {"name": server_name}}}))
        .await;
    let ip = cluster_ip(&svc).to_string();
    let kubernetes_ip = cluster_ip(
        &Api::<Service>::namespaced(fx.client.clone(), "default").get("kubernetes").await.expect("kubernetes"),
    );

    let client_name = "client-envvars";
    let mut guard = PodGuard { server: &fx.server, ns: &fx.ns, name: client_name, armed: true };
    fx.create::<Pod>(json!({
        "metadata": {
            "name": client_name,
            "labels": {"name": client_name},
            "annotations": {"kplane.dev/run": "process"},
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "env3cont", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                            "command": ["sh", "-c", "env; sleep 3600"]}],
        },
    }))
    .await;
    let pods = fx.pods();
    let pods = &pods;
    let params = LogParams { container: Some("env3cont".into()), ..LogParams::default() };
    let params = &params;
    let log = eventually("the container's environment in its log", DEADLINE, move || async move {
        let log = pods.logs(client_name, params).await.map_err(|e| e.to_string())?;
        let done = log.ends_with('\n') && log.lines().any(|l| l.starts_with("KUBERNETES_SERVICE_HOST="));
        if done && log.lines().any(|l| l.starts_with("FOOSERVICE_PORT_8765_TCP_ADDR=")) {
            Ok(log)
        } else {
            Err(format!("log so far:\n{log}"))
        }
    })
    .await;

    let foo: BTreeSet<&str> = log.lines().filter(|l| l.starts_with("FOOSERVICE_")).collect();
    let want = [
        format!("FOOSERVICE_SERVICE_HOST={ip}"),
        "FOOSERVICE_SERVICE_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT=tcp://{ip}:8765"),
        format!("FOOSERVICE_PORT_8765_TCP=tcp://{ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp".to_string(),
        "FOOSERVICE_PORT_8765_TCP_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT_8765_TCP_ADDR={ip}"),
    ];
    assert_eq!(foo, want.iter().map(String::as_str).collect::<BTreeSet<_>>(), "log:\n{log}");
    // Only the Services a pod here sees: its namespace's and default/kubernetes.
    let hosts: BTreeSet<&str> = log.lines().filter(|l| l.contains("_SERVICE_HOST=")).collect();
    let kubernetes_host = format!("KUBERNETES_SERVICE_HOST={kubernetes_ip}");
    let foo_host = format!("FOOSERVICE_SERVICE_HOST={ip}");
    assert_eq!(hosts, BTreeSet::from([kubernetes_host.as_str(), foo_host.as_str()]), "log:\n{log}");

    // The process goes with the pod.
    fx.delete_pod(client_name).await;
    fx.wait_gone(client_name).await;
    guard.armed = false;
}
