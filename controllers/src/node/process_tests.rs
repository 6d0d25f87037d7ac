//! Unit tests of the process-pod supervisor: phases, and real processes under it.

use super::*;

fn status(state: serde_json::Value, last: serde_json::Value) -> ContainerStatus {
    serde_json::from_value(serde_json::json!({
        "name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
        "state": state, "lastState": last
    }))
    .expect("status")
}

#[test]
fn phase_as_get_phase() {
    let running = status(serde_json::json!({"running": {}}), serde_json::json!({}));
    let ok = status(serde_json::json!({"terminated": {"exitCode": 0}}), serde_json::json!({}));
    let bad = status(serde_json::json!({"terminated": {"exitCode": 1}}), serde_json::json!({}));
    let creating = status(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}), serde_json::json!({}));
    let backoff = status(
        serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
        serde_json::json!({"terminated": {"exitCode": 1}}),
    );
    type Case = (&'static str, Vec<ContainerStatus>, Vec<ContainerStatus>, bool, &'static str);
    let cases: Vec<Case> = vec![
        ("Always", vec![], vec![creating.clone()], false, "Pending"),
        ("Always", vec![], vec![running.clone()], false, "Running"),
        ("Always", vec![], vec![backoff.clone()], false, "Running"),
        ("Always", vec![], vec![ok.clone()], false, "Running"),
        ("Always", vec![], vec![ok.clone()], true, "Succeeded"),
        ("Always", vec![], vec![bad.clone()], true, "Failed"),
        ("OnFailure", vec![], vec![ok.clone()], false, "Succeeded"),
        ("OnFailure", vec![], vec![backoff.clone()], false, "Running"),
        ("Never", vec![], vec![bad.clone()], false, "Failed"),
        ("Never", vec![], vec![ok.clone(), bad.clone()], false, "Failed"),
        ("Never", vec![], vec![ok.clone(), running.clone()], false, "Running"),
        ("Never", vec![bad.clone()], vec![creating.clone()], false, "Failed"),
        ("Always", vec![running.clone()], vec![creating.clone()], false, "Pending"),
        ("Always", vec![backoff.clone()], vec![creating.clone()], false, "Pending"),
        ("Always", vec![ok.clone()], vec![running], false, "Running"),
    ];
    for (policy, init, main, terminal, want) in cases {
        assert_eq!(pod_phase(policy, &init, &main, terminal), want, "{policy} {init:?} {main:?}");
    }
}

struct NoObjects;

impl EnvLookup for NoObjects {
    fn service_env(
        &self,
        _: &Pod,
    ) -> futures::future::BoxFuture<'_, Result<std::collections::BTreeMap<String, String>, container_env::EnvError>>
    {
        Box::pin(async { Ok([("KUBERNETES_SERVICE_HOST".to_string(), "10.96.0.1".to_string())].into()) })
    }
    fn config_map<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<k8s_openapi::api::core::v1::ConfigMap>, container_env::EnvError>>
    {
        Box::pin(async { Ok(None) })
    }
    fn secret<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<k8s_openapi::api::core::v1::Secret>, container_env::EnvError>>
    {
        Box::pin(async { Ok(None) })
    }
}

struct Harness {
    run: PodRun,
    events: mpsc::UnboundedReceiver<PodEvent>,
    logs: LogStore,
}

fn start(spec: serde_json::Value) -> Harness {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
        "spec": spec,
    }))
    .expect("pod");
    let logs = LogStore::temporary().expect("logs");
    let config = RunConfig {
        pod_ips: vec!["127.0.0.1".into()],
        node: NodeFacts::default(),
        lookup: Arc::new(NoObjects),
        logs: logs.clone(),
        backoff: BackoffPolicy { initial: Duration::from_millis(300), max: Duration::from_secs(1) },
        config_retry: Duration::from_millis(200),
    };
    let (tx, events) = mpsc::unbounded_channel();
    Harness { run: PodRun::start(pod, config, tx), events, logs }
}

impl Harness {
    async fn until(&self, what: &str, pred: impl Fn(&PodRunStatus) -> bool) -> PodRunStatus {
        let mut rx = self.run.status();
        let wait = async {
            loop {
                let s = rx.borrow_and_update().clone();
                if pred(&s) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    panic!("supervisor gone waiting for {what}");
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(15), wait).await {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}: {:#?}", self.run.status().borrow()),
        }
    }

    fn events(&mut self) -> Vec<PodEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    async fn log(&self, container_id: &str) -> String {
        use futures::StreamExt;
        let mut s = self.logs.read(container_id, Default::default()).await.expect("log");
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.expect("chunk"));
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn c0(s: &PodRunStatus) -> &ContainerStatus {
    &s.container_statuses[0]
}
fn waiting_reason(s: &ContainerStatus) -> Option<&str> {
    s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}
fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref()?.terminated.as_ref()
}

#[tokio::test]
async fn crashing_container_restarts_with_back_off_and_keeps_the_previous_log() {
    let mut h = start(serde_json::json!({"containers": [
        {"name": "c", "command": ["sh", "-c", "echo run $HOSTNAME $POD_IP $KUBERNETES_SERVICE_HOST; exit 3"]}
    ]}));
    let s = h
        .until("CrashLoopBackOff", |s| waiting_reason(c0(s)) == Some("CrashLoopBackOff") && c0(s).restart_count >= 1)
        .await;
    let c = c0(&s);
    let msg = c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.message.clone());
    assert!(
        msg.as_deref().is_some_and(
            |m| m.starts_with("back-off ") && m.ends_with(" restarting failed container=c pod=p_ns(uid-1)")
        ),
        "{msg:?}"
    );
    let last = last_terminated(c).expect("lastState");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(s.phase, "Running");
    assert!(!s.containers_ready());
    let prev = last.container_id.clone().expect("id");
    assert_eq!(h.log(&prev).await, "run p 127.0.0.1 10.96.0.1\n");
    h.until("more restarts", |s| c0(s).restart_count >= 3).await;
    let reasons: Vec<String> = h.events().into_iter().map(|e| e.reason).collect();
    for r in ["Created", "Started", "BackOff"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
}

#[tokio::test]
async fn fallback_to_logs_on_error_puts_the_log_tail_in_the_message() {
    let h = start(serde_json::json!({"restartPolicy": "Never", "containers": [
        {"name": "c", "command": ["sh", "-c", "echo first; echo boom; exit 2"],
         "terminationMessagePolicy": "FallbackToLogsOnError"},
        {"name": "d", "command": ["sh", "-c", "echo fine"], "terminationMessagePolicy": "FallbackToLogsOnError"}
    ]}));
    let s = h.until("Failed", |s| s.phase == "Failed").await;
    let t = |i: usize| s.container_statuses[i].state.as_ref().and_then(|st| st.terminated.clone()).expect("terminated");
    assert_eq!(t(0).message.as_deref(), Some("first\nboom\n"));
    assert_eq!(t(1).message, None, "only on error");
}

#[tokio::test]
async fn pre_stop_hooks_run_before_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let mark = dir.path().join("pre").display().to_string();
    let mut h = start(serde_json::json!({"containers": [{
        "name": "c",
        "command": ["sh", "-c", format!("trap 'test -e {mark} && echo after-hook; exit 0' TERM; while :; do sleep 0.05; done")],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", format!("sleep 0.5; touch {mark}")]}}}
    }, {
        "name": "s", "command": ["sleep", "30"], "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}
    }, {
        "name": "f", "command": ["sleep", "30"], "lifecycle": {"preStop": {"exec": {"command": ["false"]}}}
    }]}));
    let s = h
        .until("running", |s| {
            s.container_statuses.iter().all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
        })
        .await;
    let id = c0(&s).container_id.clone().expect("id");
    let start = std::time::Instant::now();
    let s = h.run.stop(Duration::from_secs(10)).await;
    assert!(start.elapsed() >= Duration::from_secs(1), "the sleep hook holds the stop");
    let code =
        |i: usize| s.container_statuses[i].state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.exit_code);
    assert_eq!(code(0), Some(0), "SIGTERM came after the hook: the trap saw its mark");
    assert_eq!(code(1), Some(143));
    // (The shell may also report its `sleep` child, which got the group's SIGTERM.)
    let log = h.log(&id).await;
    assert!(log.ends_with("after-hook\n"), "{log}");
    let events = h.events();
    assert!(events.iter().any(|e| e.reason == "FailedPreStopHook"), "{events:?}");
}

#[tokio::test]
async fn sidecars_start_before_what_follows_and_stop_after_the_main_containers() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    let mut h = start(serde_json::json!({"restartPolicy": "Never",
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "command": ["sh", "-c", format!("touch {d}/side; exec sleep 30")],
             "startupProbe": {"exec": {"command": ["test", "-e", format!("{d}/side")]}, "periodSeconds": 1}},
            {"name": "init", "command": ["sh", "-c", format!("test -e {d}/side")]}
        ],
        "containers": [{"name": "main", "command": ["sh", "-c", "sleep 0.3"],
            "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}}]
    }));
    let s = h.until("main done", |s| c0(s).state.as_ref().is_some_and(|st| st.terminated.is_some())).await;
    let init = &s.init_container_statuses;
    assert_eq!(
        init[1].state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.exit_code),
        Some(0),
        "the sidecar was up first"
    );
    let s = h
        .until("sidecar stopped", |s| {
            s.init_container_statuses[0].state.as_ref().is_some_and(|st| st.terminated.is_some())
        })
        .await;
    assert_eq!(s.phase, "Succeeded");
    assert_eq!(s.init_container_statuses[0].restart_count, 0, "a sidecar stopped with the pod is not restarted");
    let events = h.events();
    assert!(events.iter().any(|e| e.message == "Stopping container side"), "{events:?}");
}

#[tokio::test]
async fn a_failing_post_start_hook_kills_the_container() {
    let mut h = start(serde_json::json!({"restartPolicy": "Never", "containers": [{
        "name": "c", "command": ["sleep", "30"], "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo no; exit 1"]}}}
    }]}));
    let s = h.until("killed", |s| c0(s).state.as_ref().is_some_and(|st| st.terminated.is_some())).await;
    assert_eq!(s.phase, "Failed");
    let events = h.events();
    assert!(events.iter().any(|e| e.reason == "FailedPostStartHook" && e.message == "no\n"), "{events:?}");
}

#[tokio::test]
async fn restart_policies_decide_the_phase() {
    let never = start(serde_json::json!({"restartPolicy": "Never", "containers": [
        {"name": "c", "command": ["sh", "-c", "exit 1"]}
    ]}));
    let s = never.until("Failed", |s| s.phase == "Failed").await;
    assert_eq!(c0(&s).restart_count, 0);
    let on_failure = start(serde_json::json!({"restartPolicy": "OnFailure", "containers": [
        {"name": "a", "command": ["true"]}, {"name": "b", "command": ["sh", "-c", "exit 0"]}
    ]}));
    let s = on_failure.until("Succeeded", |s| s.phase == "Succeeded").await;
    for c in &s.container_statuses {
        let t = c.state.as_ref().and_then(|st| st.terminated.as_ref()).expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    }
}

#[tokio::test]
async fn a_command_that_cannot_start_waits_with_a_reason() {
    let h = start(serde_json::json!({"containers": [{"name": "c", "command": ["kplane-no-such-program"]}]}));
    let s = h
        .until("StartError", |s| last_terminated(c0(s)).is_some_and(|t| t.reason.as_deref() == Some("StartError")))
        .await;
    let c = c0(&s);
    let t = last_terminated(c).expect("lastState");
    assert_eq!(t.exit_code, 128);
    assert!(t.message.as_deref().is_some_and(|m| m.contains("executable file not found in $PATH")));
    assert!(matches!(waiting_reason(c), Some("RunContainerError" | "CrashLoopBackOff")));
    assert_eq!(s.phase, "Running");

    let none = start(serde_json::json!({"containers": [{"name": "c", "args": ["x"]}]}));
    let s = none.until("config error", |s| waiting_reason(c0(s)) == Some("CreateContainerConfigError")).await;
    assert_eq!(s.phase, "Pending");
    let missing = start(serde_json::json!({"containers": [
        {"name": "c", "command": ["true"], "envFrom": [{"configMapRef": {"name": "cfg"}}]}
    ]}));
    let s = missing.until("config error", |s| waiting_reason(c0(s)) == Some("CreateContainerConfigError")).await;
    let w = c0(&s).state.as_ref().and_then(|st| st.waiting.clone()).expect("waiting");
    assert_eq!(w.message.as_deref(), Some("configmap \"cfg\" not found"));
}

#[tokio::test]
async fn init_containers_run_first_and_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    let h = start(serde_json::json!({
        "initContainers": [
            {"name": "i1", "command": ["sh", "-c", format!("echo one > {d}/f")]},
            {"name": "i2", "command": ["sh", "-c", format!("echo two >> {d}/f")]}
        ],
        "containers": [{"name": "c", "command": ["sh", "-c", format!("cat {d}/f; sleep 30")]}]
    }));
    let s = h.until("running", |s| c0(s).state.as_ref().is_some_and(|st| st.running.is_some())).await;
    assert!(s.initialized());
    assert!(s.init_container_statuses.iter().all(|c| c.ready));
    assert_eq!(s.phase, "Running");
    assert!(s.containers_ready());
    let id = c0(&s).container_id.clone().expect("id");
    let log = async {
        loop {
            let l = h.log(&id).await;
            if l.contains("two") {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), log).await.expect("log"), "one\ntwo\n");
    let stopped = h.run.stop(Duration::from_secs(5)).await;
    assert_eq!(stopped.phase, "Failed", "sleep ends by SIGTERM: 143");
    let t = c0(&stopped).state.as_ref().and_then(|st| st.terminated.clone()).expect("terminated");
    assert_eq!(t.exit_code, 143);
}

#[tokio::test]
async fn stop_kills_after_the_grace_period() {
    let h = start(serde_json::json!({"containers": [
        {"name": "c", "command": ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]}
    ]}));
    h.until("running", |s| c0(s).state.as_ref().is_some_and(|st| st.running.is_some())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = std::time::Instant::now();
    let s = h.run.stop(Duration::from_secs(1)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let t = c0(&s).state.as_ref().and_then(|st| st.terminated.clone()).expect("terminated");
    assert_eq!(t.exit_code, 137);
    assert!(s.terminal());
}

#[tokio::test]
async fn probes_drive_readiness_and_liveness_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let flag = dir.path().join("ready").display().to_string();
    let mut h = start(serde_json::json!({"containers": [{
        "name": "c", "command": ["sleep", "30"],
        "readinessProbe": {"exec": {"command": ["test", "-e", flag]}, "periodSeconds": 1},
    }, {
        "name": "l", "command": ["sleep", "30"],
        "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
    }, {
        "name": "alive", "command": ["sleep", "30"],
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
    }]}));
    let s = h.until("running", |s| c0(s).state.as_ref().is_some_and(|st| st.running.is_some())).await;
    assert!(!c0(&s).ready);
    std::fs::write(&flag, b"").expect("flag");
    h.until("ready", |s| c0(s).ready).await;
    std::fs::remove_file(&flag).expect("unflag");
    h.until("unready", |s| !c0(s).ready).await;
    h.until("liveness restart", |s| s.container_statuses[1].restart_count >= 1).await;
    assert_eq!(h.run.status().borrow().container_statuses[2].restart_count, 0, "a passing liveness probe keeps it");
    let events = h.events();
    assert!(events.iter().any(|e| e.message == "Container l failed liveness probe, will be restarted"), "{events:?}");
    assert!(events.iter().any(|e| e.reason == "Unhealthy" && e.message.starts_with("Liveness probe failed")));
}
