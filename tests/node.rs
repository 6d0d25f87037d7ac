//! The node agent against an in-process cluster, through kube-rs: the Node and its Lease, binding,
//! simulated pods (IPs, conditions, container statuses), pinned IPs, readiness driven through
//! `/status`, graceful deletion, and IP allocations rebuilt after a restart.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

struct Fx {
    cluster: kplane::Cluster,
    node: String,
}

impl Fx {
    async fn start() -> Self {
        Self::with(kplane::Config::ephemeral()).await
    }

    async fn with(config: kplane::Config) -> Self {
        let node = config.node.clone().expect("node agent on by default").name;
        let cluster = kplane::Cluster::start_with(config).await.expect("cluster starts");
        Fx { cluster, node }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client(), "default")
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.cluster.client())
    }

    async fn create(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("a pod");
        self.pods().create(&PostParams::default(), &pod).await.expect("pod created")
    }

    /// Waits until the pod satisfies `cond`; returns it.
    async fn wait_pod(&self, name: &str, what: &str, cond: impl Fn(&Pod) -> bool) -> Pod {
        let cond = |p: Option<&Pod>| p.is_some_and(&cond);
        let found = tokio::time::timeout(DEADLINE, await_condition(self.pods(), name, cond)).await;
        found.unwrap_or_else(|_| panic!("pod {name}: {what} in time")).expect("watch").expect("pod exists")
    }

    async fn running(&self, name: &str) -> Pod {
        self.wait_pod(name, "Running", |p| phase(p) == "Running").await
    }

    async fn gone(&self, name: &str) {
        let found = tokio::time::timeout(DEADLINE, await_condition(self.pods(), name, |p: Option<&Pod>| p.is_none()));
        found.await.unwrap_or_else(|_| panic!("pod {name} gone in time")).expect("watch");
    }

    async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.cluster.client(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events.list(&lp).await.expect("events").items
    }

    /// Waits for an event about the pod with this reason.
    async fn wait_event(&self, pod: &str, reason: &str) -> Event {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events_for(pod).await.into_iter().find(|e| e.reason.as_deref() == Some(reason)) {
                return e;
            }
            assert!(start.elapsed() < DEADLINE, "no {reason} event for {pod}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    })
}

fn with(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut v);
    v
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn pod_ip(p: &Pod) -> Option<IpAddr> {
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn condition_status(p: &Pod, t: &str) -> String {
    condition(p, t).map(|c| c.status.clone()).unwrap_or_default()
}

fn in_pod_cidr(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if a.octets()[0] == 127 && a.octets()[1] == 244)
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn node_registers_ready_as_a_kubelet() {
    let fx = Fx::start().await;
    // Registered before start returned.
    let node = fx.nodes().get(&fx.node).await.expect("node registered");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&fx.node));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    let arch = labels.get("kubernetes.io/arch").cloned().unwrap_or_default();
    assert!(["amd64", "arm64"].contains(&arch.as_str()), "{arch}");
    assert!(!labels.keys().any(|k| k.starts_with("node-role.kubernetes.io/")), "a kubelet sets no role");
    let status = node.status.clone().expect("status");
    let conditions = status.conditions.clone().unwrap_or_default();
    let summary: Vec<(String, String, String)> =
        conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone().unwrap_or_default())).collect();
    let want = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(summary, want);
    let ready = conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.message.as_deref(), Some("kubelet is posting ready status"));
    assert!(ready.last_heartbeat_time.is_some() && ready.last_transition_time.is_some());
    let addresses: Vec<(String, String)> =
        status.addresses.clone().unwrap_or_default().into_iter().map(|a| (a.type_, a.address)).collect();
    assert_eq!(addresses, [("InternalIP".into(), "127.0.0.1".into()), ("Hostname".into(), fx.node.clone())]);
    let capacity = status.capacity.clone().unwrap_or_default();
    let allocatable = status.allocatable.clone().unwrap_or_default();
    for key in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(capacity.contains_key(key) && allocatable.contains_key(key), "{key} in {capacity:?}");
    }
    assert_eq!(capacity["pods"].0, "110");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(capacity["cpu"].0, cpus.to_string());
    assert!(capacity["memory"].0.ends_with("Ki"));
    let info = status.node_info.clone().expect("nodeInfo");
    let version = fx.cluster.client().apiserver_version().await.expect("version");
    assert_eq!(info.kubelet_version, version.git_version);
    assert_eq!(info.operating_system, "linux");
    assert_eq!(info.architecture, arch);
    assert!(info.container_runtime_version.starts_with("kplane://"), "{}", info.container_runtime_version);
    assert!(!info.kernel_version.is_empty() && !info.os_image.is_empty());
    assert_eq!(node.spec.and_then(|s| s.pod_cidr).as_deref(), Some("127.244.0.0/16"));

    // The heartbeat Lease, owned by the Node.
    let leases: Api<Lease> = Api::namespaced(fx.cluster.client(), "kube-node-lease");
    let lease = leases.get(&fx.node).await.expect("lease");
    let spec = lease.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(fx.node.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert!(spec.renew_time.is_some());
    let owner = &lease.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", fx.node.as_str()));
    assert_eq!(Some(&owner.uid), node.metadata.uid.as_ref());
}

/// Deleting the Node: it is registered again at once, and the Lease is renewed (every 10 s) and
/// owned by the new Node.
#[tokio::test]
async fn node_registers_again_and_the_lease_is_renewed() {
    let fx = Fx::start().await;
    let leases: Api<Lease> = Api::namespaced(fx.cluster.client(), "kube-node-lease");
    let first = leases.get(&fx.node).await.expect("lease");
    let first_renew = first.spec.as_ref().and_then(|s| s.renew_time.clone()).expect("renewed");
    let old_uid = fx.nodes().get(&fx.node).await.expect("node").metadata.uid;
    fx.nodes().delete(&fx.node, &DeleteParams::default()).await.expect("delete node");
    let cond = |n: Option<&Node>| n.is_some_and(|n| n.metadata.uid != old_uid);
    let again = tokio::time::timeout(DEADLINE, await_condition(fx.nodes(), &fx.node, cond)).await;
    let node = again.expect("registered again in time").expect("watch").expect("node");
    assert_eq!(condition_node_ready(&node), "True");
    let new_uid = node.metadata.uid.clone().unwrap_or_default();
    let cond = move |l: Option<&Lease>| {
        l.is_some_and(|l| {
            let renewed = l.spec.as_ref().and_then(|s| s.renew_time.clone()).is_some_and(|t| t != first_renew);
            let owned = l.metadata.owner_references.iter().flatten().any(|o| o.uid == new_uid);
            renewed && owned
        })
    };
    let renewed = tokio::time::timeout(DEADLINE, await_condition(leases.clone(), &fx.node, cond)).await;
    let lease = renewed.expect("lease renewed with the new owner").expect("watch").expect("lease");
    // And again on the next heartbeat, 10 s later.
    let last = lease.spec.and_then(|s| s.renew_time).expect("renew time");
    let cond = move |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.renew_time.clone()).is_some_and(|t| t != last);
    let start = Instant::now();
    let again = tokio::time::timeout(Duration::from_secs(30), await_condition(leases, &fx.node, cond)).await;
    again.expect("renewed by the heartbeat").expect("watch");
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "renewed on the heartbeat, not in a loop: {:?}",
        start.elapsed()
    );
}

fn condition_node_ready(n: &Node) -> String {
    let conditions = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| c.status).unwrap_or_default()
}

#[tokio::test]
async fn an_unscheduled_pod_is_bound_and_runs_as_a_kubelet_reports_it() {
    let fx = Fx::start().await;
    let spec = with(pod("web"), |p| {
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox:1.36"}]);
    });
    fx.create(spec).await;
    let p = fx.running("web").await;
    assert_eq!(p.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some(fx.node.as_str()));
    let status = p.status.clone().expect("status");
    assert!(in_pod_cidr(pod_ip(&p).expect("pod IP")), "{:?}", status.pod_ip);
    assert_eq!(status.pod_ips.as_ref().map(|ips| ips[0].ip.clone()), status.pod_ip);
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.host_ips.as_ref().map(|h| h[0].ip.as_str()), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let types: Vec<&str> = status.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]);
    for c in status.conditions.iter().flatten() {
        assert_eq!(c.status, "True", "{c:?}");
        assert!(c.last_transition_time.is_some(), "{c:?}");
    }
    let c = &status.container_statuses.clone().expect("container statuses")[0];
    assert_eq!(c.name, "web");
    assert_eq!(c.image, "docker.io/library/nginx:latest");
    assert!(c.image_id.starts_with("docker.io/library/nginx@sha256:"), "{}", c.image_id);
    assert!(c.container_id.as_deref().is_some_and(|id| id.starts_with("kplane://")));
    assert!(c.ready && c.started == Some(true) && c.restart_count == 0);
    assert!(c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()).is_some());
    let init = &status.init_container_statuses.clone().expect("init statuses")[0];
    let done = init.state.as_ref().and_then(|s| s.terminated.clone()).expect("init container terminated");
    assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
    assert!(!init.ready);
    // What the scheduler and the kubelet record.
    let scheduled = fx.wait_event("web", "Scheduled").await;
    assert_eq!(scheduled.message, Some(format!("Successfully assigned default/web to {}", fx.node)));
    let started = fx.wait_event("web", "Started").await;
    assert_eq!(started.source.and_then(|s| s.component).as_deref(), Some("kubelet"));
}

#[tokio::test]
async fn restart_policies_never_and_on_failure_just_run() {
    let fx = Fx::start().await;
    for (name, policy) in [("never", "Never"), ("onfailure", "OnFailure")] {
        fx.create(with(pod(name), |p| p["spec"]["restartPolicy"] = json!(policy))).await;
    }
    fx.running("never").await;
    fx.running("onfailure").await;
}

#[tokio::test]
async fn pinned_ips_are_used_and_a_test_server_answers_there() {
    let fx = Fx::start().await;
    let server = tokio::net::TcpListener::bind("127.0.99.7:0").await.expect("bind a loopback address");
    let port = server.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = server.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = conn.write_all(b"hello from the backend\n").await;
        }
    });
    let pinned =
        |name: &str, ip: &str| with(pod(name), |p| p["metadata"]["annotations"] = json!({"kplane.dev/pod-ip": ip}));
    fx.create(pinned("backend", "127.0.99.7")).await;
    let p = fx.running("backend").await;
    let ip = pod_ip(&p).expect("pod IP");
    assert_eq!(ip.to_string(), "127.0.99.7");
    let mut conn = tokio::net::TcpStream::connect((ip, port)).await.expect("connect to the pod IP");
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut answer).await.expect("read");
    assert_eq!(answer, "hello from the backend\n");

    // A second pod pinned to the same address waits, with the sandbox failure reported.
    fx.create(pinned("twin", "127.0.99.7")).await;
    let waiting = fx
        .wait_pod("twin", "sandbox failure reported", |p| condition_status(p, "PodReadyToStartContainers") == "False")
        .await;
    assert_eq!(phase(&waiting), "Pending");
    assert_eq!(pod_ip(&waiting), None);
    let w = waiting.status.as_ref().and_then(|s| s.container_statuses.clone()).expect("statuses");
    let reason = w[0].state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
    assert_eq!(reason.as_deref(), Some("ContainerCreating"));
    let event = fx.wait_event("twin", "FailedCreatePodSandBox").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(message.contains("127.0.99.7 is already in use by pod default/backend"), "{message}");
    // Once the holder is gone, the waiting pod gets the address.
    fx.pods().delete("backend", &DeleteParams::default()).await.expect("delete");
    let twin = fx.running("twin").await;
    assert_eq!(pod_ip(&twin).map(|i| i.to_string()).as_deref(), Some("127.0.99.7"));

    // Bad values: the pod stays Pending with an event; fixing the annotation lets it run.
    for (name, bad) in [("bad-text", "not-an-ip"), ("bad-any", "0.0.0.0"), ("bad-multicast", "239.1.1.1")] {
        fx.create(pinned(name, bad)).await;
        let event = fx.wait_event(name, "FailedCreatePodSandBox").await;
        assert!(event.message.unwrap_or_default().contains(bad));
        let p = fx.pods().get(name).await.expect("pod");
        assert_eq!(phase(&p), "Pending");
    }
    let fix = json!({"metadata": {"annotations": {"kplane.dev/pod-ip": "127.0.99.8"}}});
    fx.pods().patch("bad-text", &PatchParams::default(), &Patch::Merge(&fix)).await.expect("fix annotation");
    let fixed = fx.running("bad-text").await;
    assert_eq!(pod_ip(&fixed).map(|i| i.to_string()).as_deref(), Some("127.0.99.8"));
}

#[tokio::test]
async fn readiness_written_through_status_is_not_overwritten() {
    let fx = Fx::start().await;
    fx.create(pod("ready")).await;
    fx.wait_pod("ready", "Ready", |p| condition_status(p, "Ready") == "True").await;
    let set_ready = |p: &Pod, value: &str| {
        let mut p = p.clone();
        for c in p.status.as_mut().and_then(|s| s.conditions.as_mut()).into_iter().flatten() {
            if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                c.status = value.into();
            }
        }
        p
    };
    // The agent then has to write the pod again: a new image restarts the simulated container.
    let new_image = |image: &str| {
        let pods = fx.pods();
        let image = image.to_string();
        async move {
            let mut p = pods.get("ready").await.expect("pod");
            if let Some(spec) = p.spec.as_mut() {
                spec.containers[0].image = Some(image);
            }
            pods.replace("ready", &PostParams::default(), &p).await.expect("image changed");
        }
    };
    let restarts = |p: &Pod| p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|c| c[0].restart_count);
    for (round, value) in [(1, "False"), (2, "True")] {
        let p = fx.pods().get("ready").await.expect("pod");
        fx.pods().replace_status("ready", &PostParams::default(), &set_ready(&p, value)).await.expect("status write");
        new_image(&format!("nginx:1.{round}")).await;
        let p = fx.wait_pod("ready", "restarted with the new image", |p| restarts(p) == Some(round)).await;
        assert_eq!(condition_status(&p, "Ready"), value, "round {round}: the agent overwrote Ready");
        assert_eq!(condition_status(&p, "ContainersReady"), value);
        assert_eq!(phase(&p), "Running");
    }
}

#[tokio::test]
async fn binding_subresource_follows_upstream() {
    let fx = Fx::start().await;
    // A pod another scheduler owns: the agent leaves it unscheduled.
    fx.create(with(pod("manual"), |p| p["spec"]["schedulerName"] = json!("my-scheduler"))).await;
    let bind = |pod: &str, target: Value| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": target});
    let post = |pod: &'static str, body: Value| {
        let pods = fx.pods();
        async move { pods.create_subresource::<Value, Status>("binding", pod, &PostParams::default(), &body).await }
    };
    // Bad bodies.
    let e = api_error(
        post("manual", bind("other", json!({"kind": "Node", "name": "n"}))).await.expect_err("name mismatch"),
    );
    assert_eq!((e.code, e.message.as_str()), (400, "name in URL does not match name in Binding object"));
    let e = api_error(post("manual", bind("manual", json!({"kind": "Pod"}))).await.expect_err("bad target"));
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("target.name: Required value"), "{}", e.message);
    let e = api_error(post("missing", bind("missing", json!({"name": "n"}))).await.expect_err("no pod"));
    assert_eq!(e.code, 404);

    // Binding by hand to this node: 201 Success, PodScheduled True, and the agent runs it.
    let ok = post("manual", bind("manual", json!({"kind": "Node", "name": fx.node}))).await.expect("bound");
    assert_eq!((ok.status.as_deref(), ok.code), (Some("Success"), Some(201)));
    let p = fx.running("manual").await;
    assert_eq!(condition_status(&p, "PodScheduled"), "True");
    // Already assigned: 409 as upstream words it.
    let e = api_error(
        post("manual", bind("manual", json!({"kind": "Node", "name": "elsewhere"}))).await.expect_err("assigned"),
    );
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "Conflict");
    assert_eq!(
        e.message,
        format!(
            "Operation cannot be fulfilled on pods/binding \"manual\": pod manual is already assigned to node \"{}\"",
            fx.node
        )
    );
    // A pod bound to another node is left alone by the agent.
    let other = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "other-node"}});
    let other: Node = serde_json::from_value(other).expect("node");
    fx.nodes().create(&PostParams::default(), &other).await.expect("other node");
    fx.create(with(pod("elsewhere"), |p| p["spec"]["nodeName"] = json!("other-node"))).await;
    fx.create(pod("after")).await;
    fx.running("after").await;
    let p = fx.pods().get("elsewhere").await.expect("pod");
    assert_eq!(phase(&p), "Pending");
    assert!(p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_none(), "untouched: {:?}", p.status);
    // A pod being deleted cannot be bound.
    let finalized = with(pod("finalized"), |p| {
        p["spec"]["schedulerName"] = json!("my-scheduler");
        p["metadata"]["finalizers"] = json!(["example.com/hold"]);
    });
    fx.create(finalized).await;
    fx.pods().delete("finalized", &DeleteParams::default()).await.expect("delete");
    let e = api_error(post("finalized", bind("finalized", json!({"name": fx.node}))).await.expect_err("deleting"));
    assert_eq!(e.code, 409);
    assert!(e.message.ends_with("pod finalized is being deleted, cannot be assigned to a host"), "{}", e.message);
    let clear = json!({"metadata": {"finalizers": null}});
    fx.pods().patch("finalized", &PatchParams::default(), &Patch::Merge(&clear)).await.expect("release");
    // The unscheduled pod of another scheduler stayed unbound all along.
    let unbound = with(pod("unbound"), |p| p["spec"]["schedulerName"] = json!("my-scheduler"));
    fx.create(unbound).await;
    fx.create(pod("after-2")).await;
    fx.running("after-2").await;
    let p = fx.pods().get("unbound").await.expect("pod");
    assert_eq!(p.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn pods_that_do_not_fit_stay_pending_until_the_node_fits() {
    let fx = Fx::start().await;
    fx.create(with(pod("picky"), |p| p["spec"]["nodeSelector"] = json!({"disk": "ssd"}))).await;
    let p = fx.wait_pod("picky", "unschedulable", |p| condition_status(p, "PodScheduled") == "False").await;
    let c = condition(&p, "PodScheduled").expect("condition");
    assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        c.message.as_deref(),
        Some(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
    );
    fx.wait_event("picky", "FailedScheduling").await;
    let label = json!({"metadata": {"labels": {"disk": "ssd"}}});
    fx.nodes().patch(&fx.node, &PatchParams::default(), &Patch::Merge(&label)).await.expect("label node");
    let p = fx.running("picky").await;
    assert_eq!(condition_status(&p, "PodScheduled"), "True");
}

#[tokio::test]
async fn deletion_is_graceful_visible_then_gone() {
    let fx = Fx::start().await;
    let p = fx.create(pod("bye")).await;
    let uid = p.metadata.uid.clone();
    let running = fx.running("bye").await;
    let ip = pod_ip(&running).expect("ip");
    let mut watch = watcher::watcher(fx.pods(), watcher::Config::default().fields("metadata.name=bye")).boxed();
    // Skip the initial list.
    while !matches!(watch.try_next().await.expect("watch"), Some(watcher::Event::InitDone)) {}
    let started = Instant::now();
    fx.pods().delete("bye", &DeleteParams::default()).await.expect("delete");
    let (mut terminating, mut terminated) = (false, false);
    let seen = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = watch.try_next().await.expect("watch") {
            match event {
                watcher::Event::Apply(p) if p.metadata.deletion_timestamp.is_some() => {
                    terminating = true;
                    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
                    let states = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
                    if let Some(t) = states[0].state.as_ref().and_then(|s| s.terminated.clone()) {
                        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
                        assert_eq!(phase(&p), "Succeeded");
                        assert_eq!(condition(&p, "Ready").and_then(|c| c.reason.as_deref()), Some("PodCompleted"));
                        terminated = true;
                    }
                }
                watcher::Event::Delete(p) => {
                    assert_eq!(p.metadata.uid, uid);
                    return;
                }
                _ => {}
            }
        }
    });
    seen.await.expect("deleted in time");
    assert!(terminating, "the terminating window was visible");
    assert!(terminated, "the terminated containers were reported");
    assert!(started.elapsed() < Duration::from_secs(10), "no 30 s wait for a simulated pod: {:?}", started.elapsed());
    let stopping = fx.events_for("bye").await.into_iter().any(|e| e.reason.as_deref() == Some("Killing"));
    assert!(stopping, "a Killing event");
    // Its IP is free again: a pod pinned to it runs.
    let pinned = with(pod("reuse"), |p| p["metadata"]["annotations"] = json!({"kplane.dev/pod-ip": ip.to_string()}));
    fx.create(pinned).await;
    assert_eq!(pod_ip(&fx.running("reuse").await), Some(ip));
}

#[tokio::test]
async fn ips_are_never_shared_by_live_pods() {
    let fx = Fx::start().await;
    let names: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    futures::future::join_all(names.iter().map(|n| fx.create(pod(n)))).await;
    let mut ips = Vec::new();
    for n in &names {
        ips.push(pod_ip(&fx.running(n).await).expect("ip"));
    }
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), ips.len(), "{ips:?}");
    // Delete a third, add as many: no new pod shares an address with a live one.
    for n in &names[..10] {
        fx.pods().delete(n, &DeleteParams::default()).await.expect("delete");
    }
    let more: Vec<String> = (30..40).map(|i| format!("p{i}")).collect();
    futures::future::join_all(more.iter().map(|n| fx.create(pod(n)))).await;
    let mut live = Vec::new();
    for n in names[10..].iter().chain(&more) {
        live.push(pod_ip(&fx.running(n).await).expect("ip"));
    }
    assert_eq!(live.iter().collect::<HashSet<_>>().len(), live.len(), "{live:?}");
    for n in &names[..10] {
        fx.gone(n).await;
    }
}

#[tokio::test]
async fn a_restarted_agent_takes_back_the_ips_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || kplane::Config { data_dir: Some(dir.path().to_path_buf()), ..kplane::Config::ephemeral() };
    let before = {
        let fx = Fx::with(config()).await;
        let names: Vec<String> = (0..5).map(|i| format!("old{i}")).collect();
        for n in &names {
            fx.create(pod(n)).await;
        }
        let mut ips = Vec::new();
        for n in &names {
            ips.push((n.clone(), pod_ip(&fx.running(n).await).expect("ip")));
        }
        fx.cluster.shutdown().await;
        ips
    };
    let fx = Fx::with(config()).await;
    for n in (0..5).map(|i| format!("new{i}")) {
        fx.create(pod(&n)).await;
    }
    let mut all: Vec<IpAddr> = Vec::new();
    for (name, ip) in &before {
        let p = fx.running(name).await;
        assert_eq!(pod_ip(&p), Some(*ip), "{name} kept its IP");
        assert_eq!(condition_status(&p, "Ready"), "True");
        all.push(*ip);
    }
    for n in (0..5).map(|i| format!("new{i}")) {
        all.push(pod_ip(&fx.running(&n).await).expect("ip"));
    }
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len(), "an IP was handed out twice: {all:?}");
}

#[tokio::test]
async fn host_network_pods_have_the_node_ip() {
    let fx = Fx::start().await;
    fx.create(with(pod("host"), |p| p["spec"]["hostNetwork"] = json!(true))).await;
    fx.create(pod("regular")).await;
    let host = fx.running("host").await;
    assert_eq!(pod_ip(&host).map(|i| i.to_string()).as_deref(), Some("127.0.0.1"));
    let regular = fx.running("regular").await;
    assert!(in_pod_cidr(pod_ip(&regular).expect("ip")));
}
