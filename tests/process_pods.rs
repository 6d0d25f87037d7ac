//! Process pods (`kplane.dev/run: process`) against an in-process cluster through kube-rs: the
//! environment a container gets (Service variables of spec §6 incl. conformance §7 item 36,
//! env/envFrom/fieldRef/`$(VAR)`, POD_IP, HOSTNAME), logs through `pods/{name}/log`, restart
//! policies with crash-loop back-off and `--previous`, commands that do not exist, readiness
//! (httpGet against the pod's own server) driving Ready and the EndpointSlice, a hanging exec
//! probe cut at its timeout, liveness restarts, and deletion stopping the processes.

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const NS: &str = "default";

struct Fx {
    cluster: kplane::Cluster,
}

impl Fx {
    /// A cluster whose pod IPs no other test's cluster uses (process pods bind them).
    async fn start() -> Self {
        Self::with(kplane::Config::ephemeral()).await
    }

    async fn with(mut config: kplane::Config) -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        config.pod_cidr = format!("127.245.{}.0/24", NEXT.fetch_add(1, Ordering::Relaxed));
        Fx { cluster: kplane::Cluster::start_with(config).await.expect("cluster starts") }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), NS)
    }

    async fn create<K>(&self, obj: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + k8s_openapi::serde::Serialize
            + k8s_openapi::serde::de::DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(obj).expect("object");
        self.api::<K>().create(&PostParams::default(), &obj).await.expect("created")
    }

    /// A process pod: `containers` as given, `extra` merged into its spec.
    async fn pod(&self, name: &str, containers: Value, extra: Value) -> Pod {
        let mut spec = json!({"containers": containers});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        self.create(json!({
            "metadata": {"name": name, "annotations": {"kplane.dev/run": "process"}, "labels": {"app": name}},
            "spec": spec
        }))
        .await
    }

    async fn wait_pod(&self, name: &str, what: &str, cond: impl Fn(&Pod) -> bool) -> Pod {
        let cond = |p: Option<&Pod>| p.is_some_and(&cond);
        match tokio::time::timeout(DEADLINE, await_condition(self.api(), name, cond)).await {
            Ok(found) => found.expect("watch").expect("pod exists"),
            Err(_) => {
                let now = self.api::<Pod>().get(name).await.map(|p| p.status);
                panic!("pod {name}: no {what} in time; status: {now:#?}")
            }
        }
    }

    async fn logs(&self, name: &str, lp: &LogParams) -> Result<String, kube::Error> {
        self.api::<Pod>().logs(name, lp).await
    }

    /// Polls the log until it contains `what`.
    async fn wait_log(&self, name: &str, lp: &LogParams, what: &str) -> String {
        let start = Instant::now();
        loop {
            if let Ok(log) = self.logs(name, lp).await
                && log.contains(what)
            {
                return log;
            }
            assert!(start.elapsed() < DEADLINE, "log of {name} never showed {what:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_event(&self, pod: &str, cond: impl Fn(&Event) -> bool) -> Event {
        let events: Api<Event> = self.api();
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        let start = Instant::now();
        loop {
            let list = events.list(&lp).await.expect("events").items;
            if let Some(e) = list.iter().find(|e| cond(e)) {
                return e.clone();
            }
            assert!(start.elapsed() < DEADLINE, "no such event for {pod}: {list:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    let conds = p.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

fn container(p: &Pod, i: usize) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.get(i).cloned()).unwrap_or_default()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    container(p, 0).state?.waiting?.reason
}

fn status_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn a_process_pod_sees_the_kubelet_environment() {
    let fx = Fx::start().await;
    let svc: Service = fx
        .create(json!({"metadata": {"name": "fooservice"}, "spec": {
            "selector": {"app": "nothing"}, "ports": [{"port": 8765, "targetPort": 8080}]
        }}))
        .await;
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("clusterIP");
    let _: ConfigMap = fx.create(json!({"metadata": {"name": "cfg"}, "data": {"COLOR": "blue", "SIZE": "xl"}})).await;
    let _: Secret = fx.create(json!({"metadata": {"name": "sec"}, "data": {"TOKEN": "czNjcjN0"}})).await;
    fx.pod(
        "envpod",
        json!([{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c"], "args": ["echo started; env; exec sleep 3600"],
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
            "env": [
                {"name": "GREETING", "value": "hello"},
                {"name": "COMPOSED", "value": "$(GREETING)-$(CM_COLOR)-$(FOOSERVICE_SERVICE_PORT)-$$(GREETING)-$(MISSING)"},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "SIZE"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}}
            ]
        }]),
        json!({}),
    )
    .await;
    let pod = fx.wait_pod("envpod", "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    assert_eq!(phase(&pod), "Running");
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("podIP");
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).expect("bound");
    let log = fx.wait_log("envpod", &LogParams::default(), "KUBERNETES_SERVICE_HOST").await;
    assert!(log.starts_with("started\n"), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let want = [
        format!("POD_IP={pod_ip}"),
        "HOSTNAME=envpod".to_string(),
        format!("FOOSERVICE_SERVICE_HOST={cluster_ip}"),
        "FOOSERVICE_SERVICE_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT=tcp://{cluster_ip}:8765"),
        format!("FOOSERVICE_PORT_8765_TCP=tcp://{cluster_ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp".to_string(),
        "FOOSERVICE_PORT_8765_TCP_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT_8765_TCP_ADDR={cluster_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "GREETING=hello".to_string(),
        "COMPOSED=hello-blue-8765-$(GREETING)-$(MISSING)".to_string(),
        "MY_NAME=envpod".to_string(),
        format!("MY_IP={pod_ip}"),
        format!("MY_NODE={node}"),
        "APP=envpod".to_string(),
        "CM_COLOR=blue".to_string(),
        "CM_SIZE=xl".to_string(),
        "FROM_CM=xl".to_string(),
        "FROM_SECRET=s3cr3t".to_string(),
    ];
    for w in &want {
        assert!(lines.contains(&w.as_str()), "{w} missing from:\n{log}");
    }
    // Status as a kubelet reports it.
    let c = container(&pod, 0);
    assert!(c.ready && c.started == Some(true) && c.restart_count == 0);
    assert!(c.container_id.is_some_and(|id| id.contains("://")));
    assert_eq!(c.image, "docker.io/library/busybox:latest");
    assert!(c.state.and_then(|s| s.running).is_some());
}

#[tokio::test]
async fn crash_loops_back_off_and_previous_logs_show_the_last_run() {
    let fx = Fx::start().await;
    fx.pod("crasher", json!([{"name": "c", "command": ["sh", "-c", "echo attempt; exit 1"]}]), json!({})).await;
    let pod = fx
        .wait_pod("crasher", "CrashLoopBackOff", |p| {
            waiting_reason(p).as_deref() == Some("CrashLoopBackOff") && container(p, 0).restart_count >= 1
        })
        .await;
    let c = container(&pod, 0);
    let msg = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.message.clone()).unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    assert_eq!(msg, format!("back-off 10s restarting failed container=c pod=crasher_default({uid})"));
    let last = c.last_state.and_then(|s| s.terminated).expect("lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(phase(&pod), "Running");
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    let previous = LogParams { previous: true, ..Default::default() };
    assert_eq!(fx.logs("crasher", &previous).await.expect("previous"), "attempt\n");
    // Not running: the last terminated instance.
    assert_eq!(fx.logs("crasher", &LogParams::default()).await.expect("log"), "attempt\n");
    fx.wait_event("crasher", |e| e.reason.as_deref() == Some("BackOff")).await;
}

#[tokio::test]
async fn restart_policy_never_fails_the_pod_and_on_failure_completes_it() {
    let fx = Fx::start().await;
    fx.pod(
        "never",
        json!([{"name": "c", "command": ["sh", "-c", "echo bye; exit 3"]}]),
        json!({"restartPolicy": "Never"}),
    )
    .await;
    fx.pod("done", json!([{"name": "c", "command": ["true"]}]), json!({"restartPolicy": "OnFailure"})).await;
    let failed = fx.wait_pod("never", "Failed", |p| phase(p) == "Failed").await;
    let t = container(&failed, 0).state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(container(&failed, 0).restart_count, 0);
    assert_eq!(fx.logs("never", &LogParams::default()).await.expect("log of a finished container"), "bye\n");
    let ok = fx.wait_pod("done", "Succeeded", |p| phase(p) == "Succeeded").await;
    let t = container(&ok, 0).state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
}

#[tokio::test]
async fn a_command_that_does_not_exist_is_a_container_state_not_a_crash() {
    let fx = Fx::start().await;
    fx.pod("ghost", json!([{"name": "c", "command": ["kplane-test-no-such-command", "x"]}]), json!({})).await;
    let pod = fx
        .wait_pod("ghost", "StartError", |p| {
            container(p, 0)
                .last_state
                .and_then(|s| s.terminated)
                .is_some_and(|t| t.reason.as_deref() == Some("StartError"))
        })
        .await;
    let c = container(&pod, 0);
    let t = c.last_state.clone().and_then(|s| s.terminated).expect("terminated");
    assert_eq!(t.exit_code, 128);
    assert!(t.message.as_deref().is_some_and(|m| m.contains("executable file not found in $PATH")), "{t:?}");
    assert!(matches!(waiting_reason(&pod).as_deref(), Some("RunContainerError" | "CrashLoopBackOff")));
    fx.wait_event("ghost", |e| e.reason.as_deref() == Some("Failed")).await;
    // No command at all: nothing to run without an image's entrypoint.
    fx.pod("noentry", json!([{"name": "c", "image": "nginx"}]), json!({})).await;
    let pod = fx
        .wait_pod("noentry", "config error", |p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"))
        .await;
    assert_eq!(phase(&pod), "Pending");
    // A missing ConfigMap: upstream's reason and message.
    fx.pod(
        "nocm",
        json!([{"name": "c", "command": ["true"], "envFrom": [{"configMapRef": {"name": "absent"}}]}]),
        json!({}),
    )
    .await;
    let pod = fx
        .wait_pod("nocm", "config error", |p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"))
        .await;
    let msg = container(&pod, 0).state.and_then(|s| s.waiting).and_then(|w| w.message);
    assert_eq!(msg.as_deref(), Some("configmap \"absent\" not found"));
    // The server is fine.
    let logs = fx.logs("noentry", &LogParams::default()).await.expect_err("not started");
    assert_eq!(
        status_error(logs),
        (400, "container \"c\" in pod \"noentry\" is waiting to start: CreateContainerConfigError".to_string())
    );
    assert!(fx.api::<Pod>().list(&ListParams::default()).await.is_ok());
}

#[tokio::test]
async fn readiness_over_http_against_the_pods_own_server_flips_ready_and_endpoints() {
    let fx = Fx::start().await;
    let _: Service = fx
        .create(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}))
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let ready_file = dir.path().join("index.html");
    // The server serves a directory whose index appears later: 404 (not ready) then 200.
    fx.pod(
        "web",
        json!([{
            "name": "py", "command": ["sh", "-c", "exec python3 -m http.server 8080 --bind \"$POD_IP\""],
            "workingDir": dir.path().display().to_string(),
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1}
        }]),
        json!({}),
    )
    .await;
    let pod = fx.wait_pod("web", "Running", |p| container(p, 0).state.and_then(|s| s.running).is_some()).await;
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    std::fs::write(&ready_file, b"ok").expect("index");
    let pod = fx.wait_pod("web", "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    let ip = pod.status.and_then(|s| s.pod_ip).expect("podIP");
    // The EndpointSlice follows.
    let slices: Api<EndpointSlice> = fx.api();
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    let start = Instant::now();
    loop {
        let items = slices.list(&lp).await.expect("slices").items;
        let ready = items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.addresses.contains(&ip) && e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
        if ready {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "endpoint {ip} never ready: {items:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&ready_file).expect("unready");
    fx.wait_pod("web", "not Ready", |p| condition(p, "Ready").as_deref() == Some("False")).await;
    fx.wait_event("web", |e| {
        e.message.as_deref().is_some_and(|m| m.contains("HTTP probe failed with statuscode: 404"))
    })
    .await;
}

#[tokio::test]
async fn a_hanging_exec_probe_is_cut_at_its_timeout_and_liveness_failures_restart() {
    let fx = Fx::start().await;
    fx.pod(
        "hang",
        json!([{
            "name": "c", "command": ["sleep", "3600"],
            "readinessProbe": {"exec": {"command": ["sleep", "30"]}, "timeoutSeconds": 1, "periodSeconds": 1}
        }]),
        json!({}),
    )
    .await;
    let start = Instant::now();
    let e = fx
        .wait_event("hang", |e| e.message.as_deref() == Some("Readiness probe failed: command \"sleep 30\" timed out"))
        .await;
    assert!(start.elapsed() < Duration::from_secs(15), "cut at 1s, not 30s");
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reason.as_deref(), Some("Unhealthy"));
    let pod = fx.api::<Pod>().get("hang").await.expect("pod");
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));

    fx.pod(
        "sick",
        json!([{
            "name": "c", "command": ["sh", "-c", "echo up; exec sleep 3600"],
            "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}
        }]),
        json!({"terminationGracePeriodSeconds": 2}),
    )
    .await;
    let pod = fx.wait_pod("sick", "restarted", |p| container(p, 0).restart_count >= 1).await;
    let last = container(&pod, 0).last_state.and_then(|s| s.terminated).expect("lastState");
    assert_eq!(last.exit_code, 143, "SIGTERM ends sleep");
    fx.wait_event("sick", |e| {
        e.reason.as_deref() == Some("Killing")
            && e.message.as_deref() == Some("Container c failed liveness probe, will be restarted")
    })
    .await;
}

#[tokio::test]
async fn logs_follow_tail_and_refuse_bad_requests_as_upstream() {
    let fx = Fx::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let more = dir.path().join("more");
    let script = format!(
        // `$$$$`: the kubelet turns `$$` into `$` in commands, so the shell sees `$$`.
        "echo one; echo two; echo three; while [ ! -e {m} ]; do sleep 0.05; done; echo $$$$ > {m}.pid; echo four; exec sleep 3600",
        m = more.display()
    );
    fx.pod(
        "talker",
        json!([{"name": "a", "command": ["sh", "-c", script]}, {"name": "b", "command": ["sleep", "3600"]}]),
        json!({"terminationGracePeriodSeconds": 5}),
    )
    .await;
    let a = LogParams { container: Some("a".into()), ..Default::default() };
    fx.wait_log("talker", &a, "three").await;
    let tail = LogParams { tail_lines: Some(2), ..a.clone() };
    assert_eq!(fx.logs("talker", &tail).await.expect("tail"), "two\nthree\n");
    let limited = LogParams { limit_bytes: Some(5), ..a.clone() };
    assert_eq!(fx.logs("talker", &limited).await.expect("limit"), "one\nt");
    let stamped = LogParams { timestamps: true, tail_lines: Some(1), ..a.clone() };
    let line = fx.logs("talker", &stamped).await.expect("timestamps");
    let (ts, rest) = line.split_once(' ').expect("timestamp first");
    assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    assert_eq!(rest, "three\n");

    // Follow: sees a line written after it started.
    let follow = LogParams { follow: true, tail_lines: Some(1), ..a.clone() };
    let mut lines = fx.api::<Pod>().log_stream("talker", &follow).await.expect("follow").lines();
    async fn next<S: futures::Stream + Unpin>(l: &mut S) -> Option<S::Item> {
        tokio::time::timeout(DEADLINE, l.next()).await.expect("a line in time")
    }
    assert_eq!(next(&mut lines).await.expect("line").expect("ok"), "three");
    std::fs::write(&more, b"").expect("more");
    assert_eq!(next(&mut lines).await.expect("line").expect("ok"), "four");

    // Upstream's 400s.
    let err = fx.logs("talker", &LogParams::default()).await.expect_err("ambiguous");
    assert_eq!(
        status_error(err),
        (400, "a container name must be specified for pod talker, choose one of: [a b]".into())
    );
    let err =
        fx.logs("talker", &LogParams { container: Some("zz".into()), ..Default::default() }).await.expect_err("x");
    assert_eq!(status_error(err), (400, "container zz is not valid for pod talker".into()));
    let err = fx.logs("talker", &LogParams { previous: true, ..a.clone() }).await.expect_err("no previous");
    assert_eq!(status_error(err), (400, "previous terminated container \"a\" in pod \"talker\" not found".into()));
    let err = fx.logs("nobody", &a).await.expect_err("no pod");
    assert_eq!(status_error(err).0, 404);

    // Deletion stops the processes (SIGTERM) and the follower's stream ends.
    let pid_file = format!("{}.pid", more.display());
    let pid: u32 = std::fs::read_to_string(&pid_file).expect("pid").trim().parse().expect("a pid");
    fx.api::<Pod>().delete("talker", &DeleteParams::default()).await.expect("delete");
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(l) = lines.next().await {
            if l.is_err() {
                break;
            }
        }
    });
    ended.await.expect("follow ends with the container");
    let gone = tokio::time::timeout(DEADLINE, await_condition(fx.api(), "talker", |p: Option<&Pod>| p.is_none()));
    gone.await.expect("pod deleted in time").expect("watch");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still runs");
}

#[tokio::test]
async fn https_and_tcp_probes_reach_a_server_with_a_certificate_nobody_trusts() {
    // The API server's own HTTPS port: a self-signed CA the probe does not verify, as upstream.
    let mut config = kplane::Config::ephemeral();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let fx = Fx::with(config).await;
    let url = fx.cluster.url().expect("listening").to_string();
    let port: i32 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    fx.pod(
        "tls",
        json!([{
            "name": "c", "command": ["sleep", "3600"],
            "readinessProbe": {"httpGet": {"scheme": "HTTPS", "host": "127.0.0.1", "port": port, "path": "/readyz"},
                               "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"host": "127.0.0.1", "port": port}, "periodSeconds": 1}
        }]),
        json!({}),
    )
    .await;
    let pod = fx.wait_pod("tls", "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    assert_eq!(container(&pod, 0).restart_count, 0);
}
