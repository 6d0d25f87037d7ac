//! A pod's status as the kubelet generates it from what the runtime reports
//! (`pkg/kubelet/kubelet_pods.go` `generateAPIPodStatus`/`getPhase`/`convertToAPIContainerStatuses`,
//! `pkg/kubelet/status/generate.go`, the transition times of `status_manager.go`). Pure.

use super::runtime::RuntimeStatus;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::net::IpAddr;

/// The conditions the kubelet owns (`kubetypes.PodConditionByKubelet`), in the order it writes them.
pub const KUBELET_CONDITIONS: [&str; 5] =
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// Now, in whole seconds (what `metav1.Time` keeps), so a status read back compares equal.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// What the agent knows of a pod when it writes its status.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    pub host_ip: IpAddr,
    /// The sandbox's IP; `None` keeps what the status had.
    pub pod_ip: Option<IpAddr>,
    /// Whether the sandbox is up (`PodReadyToStartContainers`).
    pub sandbox_ready: bool,
    pub runtime: Option<&'a RuntimeStatus>,
    /// Whether the pod's containers were stopped for good (`podIsTerminal`).
    pub terminal: bool,
}

/// The status to write: the pod's current status with everything the kubelet owns regenerated.
pub fn generate(o: &Observed<'_>, now: &Time) -> PodStatus {
    let pod = o.pod;
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let init_specs = spec.init_containers.as_deref().unwrap_or(&[]);
    let empty = RuntimeStatus::default();
    let runtime = o.runtime.unwrap_or(&empty);

    let init = fill(init_specs, &runtime.init_containers, "PodInitializing");
    let init_done = init_specs.iter().zip(&init).all(|(c, s)| init_complete(c, s));
    let regular_default = if init_done { "ContainerCreating" } else { "PodInitializing" };
    let containers = fill(&spec.containers, &runtime.containers, regular_default);

    let old_phase = old.phase.as_deref().unwrap_or("Pending");
    let mut phase =
        get_phase(init_specs, &spec.containers, spec.restart_policy.as_deref(), &init, &containers, o.terminal);
    if o.terminal && !is_terminal(phase) {
        phase = "Failed";
    }
    // A terminal phase is final (`status_manager` refuses to leave it).
    if is_terminal(old_phase) {
        phase = if old_phase == "Succeeded" { "Succeeded" } else { "Failed" };
    }

    let mut conditions: Vec<PodCondition> =
        old.conditions.iter().flatten().filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str())).cloned().collect();
    conditions.push(condition("PodReadyToStartContainers", o.sandbox_ready && !o.terminal, None, None));
    conditions.push(initialized(pod, init_specs, &init, &containers, phase));
    let containers_ready = containers_ready(init_specs, &spec.containers, &init, &containers, phase);
    conditions.push(ready(pod, &containers_ready, &conditions));
    conditions.push(containers_ready);
    conditions.push(condition("PodScheduled", true, None, None));
    for c in &mut conditions {
        let before = old.conditions.iter().flatten().find(|b| b.type_ == c.type_);
        match before {
            Some(b) if b.status == c.status => {
                c.last_transition_time = b.last_transition_time.clone();
                c.last_probe_time = b.last_probe_time.clone();
            }
            _ if c.last_transition_time.is_none() => c.last_transition_time = Some(now.clone()),
            _ => {}
        }
    }

    let mut status = old.clone();
    status.phase = Some(phase.into());
    status.conditions = Some(conditions);
    status.host_ip = Some(o.host_ip.to_string());
    status.host_ips = Some(vec![HostIP { ip: o.host_ip.to_string() }]);
    if let Some(ip) = o.pod_ip {
        status.pod_ip = Some(ip.to_string());
        status.pod_ips = Some(vec![PodIP { ip: ip.to_string() }]);
    }
    status.start_time = old.start_time.or_else(|| Some(now.clone()));
    status.init_container_statuses = (!init.is_empty()).then_some(init);
    status.container_statuses = Some(containers);
    status
}

fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

/// The runtime's status of each container of `specs`, in spec order; a container the runtime
/// does not report is waiting with `default_reason`.
fn fill(specs: &[Container], reported: &[ContainerStatus], default_reason: &str) -> Vec<ContainerStatus> {
    specs
        .iter()
        .map(|c| {
            reported.iter().find(|s| s.name == c.name).cloned().unwrap_or_else(|| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                started: Some(false),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting { reason: Some(default_reason.into()), message: None }),
                    ..Default::default()
                }),
                last_state: Some(ContainerState::default()),
                ..Default::default()
            })
        })
        .collect()
}

fn restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn state(s: &ContainerStatus) -> ContainerState {
    s.state.clone().unwrap_or_default()
}

fn last_terminated_exit(s: &ContainerStatus) -> Option<i32> {
    s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| t.exit_code)
}

/// An init container is done: a regular one exited 0, a sidecar has started.
fn init_complete(c: &Container, s: &ContainerStatus) -> bool {
    if restartable(c) {
        return s.started == Some(true);
    }
    state(s).terminated.is_some_and(|t| t.exit_code == 0)
}

/// `getPhase`.
fn get_phase(
    init_specs: &[Container],
    specs: &[Container],
    restart_policy: Option<&str>,
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
    terminal: bool,
) -> &'static str {
    let (mut pending_sidecars, mut pending_init, mut failed_init) = (0, 0, 0);
    for (c, s) in init_specs.iter().zip(init) {
        let st = state(s);
        if restartable(c) {
            if st.running.is_none() {
                pending_sidecars += 1;
            }
            continue;
        }
        if st.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &st.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if st.waiting.is_some() {
            match last_terminated_exit(s) {
                Some(code) if code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for (_, s) in specs.iter().zip(containers) {
        let st = state(s);
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            match last_terminated_exit(s) {
                Some(code) => {
                    stopped += 1;
                    if code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && restart_policy == Some("Never") {
        return "Failed";
    }
    if pending_init > 0 || (pending_sidecars > 0 && running == 0 && stopped == 0) {
        return "Pending";
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            return if stopped == succeeded { "Succeeded" } else { "Failed" };
        }
        return match restart_policy.unwrap_or("Always") {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// `GeneratePodInitializedCondition`.
fn initialized(
    _pod: &Pod,
    init_specs: &[Container],
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    if phase == "Succeeded" {
        return condition("Initialized", true, Some("PodCompleted"), None);
    }
    // A regular container that ever ran means the pod was initialized before.
    let created = containers.iter().any(|s| {
        let st = state(s);
        st.running.is_some() || st.terminated.is_some() || last_terminated_exit(s).is_some()
    });
    let incomplete: Vec<String> =
        init_specs.iter().zip(init).filter(|(c, s)| !init_complete(c, s)).map(|(c, _)| c.name.clone()).collect();
    if incomplete.is_empty() || created {
        return condition("Initialized", true, None, None);
    }
    let message = format!("containers with incomplete status: {}", go_list(&incomplete));
    condition("Initialized", false, Some("ContainersNotInitialized"), Some(message))
}

/// `GenerateContainersReadyCondition`: every container (and sidecar) ready.
fn containers_ready(
    init_specs: &[Container],
    specs: &[Container],
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    match phase {
        "Succeeded" => return condition("ContainersReady", false, Some("PodCompleted"), None),
        "Failed" => return condition("ContainersReady", false, Some("PodFailed"), None),
        _ => {}
    }
    let sidecars = init_specs.iter().zip(init).filter(|(c, _)| restartable(c));
    let unready: Vec<String> =
        sidecars.chain(specs.iter().zip(containers)).filter(|(_, s)| !s.ready).map(|(c, _)| c.name.clone()).collect();
    if unready.is_empty() {
        return condition("ContainersReady", true, None, None);
    }
    let message = format!("containers with unready status: {}", go_list(&unready));
    condition("ContainersReady", false, Some("ContainersNotReady"), Some(message))
}

/// `GeneratePodReadyCondition`: containers ready and every readiness gate's condition True.
fn ready(pod: &Pod, containers_ready: &PodCondition, conditions: &[PodCondition]) -> PodCondition {
    if containers_ready.status != "True" {
        let mut c = containers_ready.clone();
        c.type_ = "Ready".into();
        return c;
    }
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_deref()).unwrap_or(&[]);
    let mut unready = Vec::new();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => unready.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => unready.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if unready.is_empty() {
        condition("Ready", true, None, None)
    } else {
        condition("Ready", false, Some("ReadinessGatesNotReady"), Some(unready.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStateRunning, ContainerStateTerminated, PodReadinessGate, PodSpec};

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        let c = |n: &&str| Container { name: n.to_string(), image: Some("nginx".into()), ..Default::default() };
        Pod {
            spec: Some(PodSpec {
                containers: containers.iter().map(c).collect(),
                init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            started: Some(true),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(now()) }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: code, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.iter().flatten().find(|c| c.type_ == t).expect("condition")
    }

    fn observe<'a>(pod: &'a Pod, rt: Option<&'a RuntimeStatus>, terminal: bool) -> Observed<'a> {
        Observed {
            pod,
            host_ip: "127.0.0.1".parse().expect("ip"),
            pod_ip: Some("127.244.0.2".parse().expect("ip")),
            sandbox_ready: true,
            runtime: rt,
            terminal,
        }
    }

    #[test]
    fn running_and_ready_as_a_kubelet_reports() {
        let p = pod(&["a", "b"], &["setup"]);
        let rt = RuntimeStatus {
            init_containers: vec![exited("setup", 0)],
            containers: vec![running("a", true), running("b", true)],
        };
        let s = generate(&observe(&p, Some(&rt), false), &now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let types: Vec<&str> = s.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, KUBELET_CONDITIONS);
        assert!(s.conditions.iter().flatten().all(|c| c.status == "True" && c.last_transition_time.is_some()));
        assert_eq!(s.pod_ip.as_deref(), Some("127.244.0.2"));
        assert_eq!(s.host_ips.as_ref().map(|h| h[0].ip.as_str()), Some("127.0.0.1"));
        assert!(s.start_time.is_some());
    }

    #[test]
    fn not_ready_messages_and_readiness_gates() {
        let p = pod(&["a", "b"], &[]);
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![running("a", false), running("b", false)] };
        let s = generate(&observe(&p, Some(&rt), false), &now());
        let r = cond(&s, "Ready");
        assert_eq!((r.status.as_str(), r.reason.as_deref()), ("False", Some("ContainersNotReady")));
        assert_eq!(r.message.as_deref(), Some("containers with unready status: [a b]"));
        let mut p = pod(&["a"], &[]);
        if let Some(spec) = p.spec.as_mut() {
            spec.readiness_gates = Some(vec![PodReadinessGate { condition_type: "example.com/lb".into() }]);
        }
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![running("a", true)] };
        let s = generate(&observe(&p, Some(&rt), false), &now());
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        let r = cond(&s, "Ready");
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("corresponding condition of pod readiness gate \"example.com/lb\" does not exist.")
        );
    }

    #[test]
    fn waiting_without_a_runtime_and_pending_init() {
        let p = pod(&["a"], &["setup"]);
        let mut o = observe(&p, None, false);
        o.sandbox_ready = false;
        let s = generate(&o, &now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        let i = cond(&s, "Initialized");
        assert_eq!(i.message.as_deref(), Some("containers with incomplete status: [setup]"));
        let waiting = |c: &ContainerStatus| c.state.as_ref().and_then(|s| s.waiting.clone()).and_then(|w| w.reason);
        assert_eq!(waiting(&s.container_statuses.clone().unwrap_or_default()[0]).as_deref(), Some("PodInitializing"));
    }

    #[test]
    fn phases_by_restart_policy_and_termination() {
        let specs = pod(&["a"], &[]).spec.unwrap_or_default().containers;
        let phase = |policy: &str, s: ContainerStatus, terminal: bool| {
            get_phase(&[], &specs, Some(policy), &[], std::slice::from_ref(&s), terminal)
        };
        assert_eq!(phase("Always", exited("a", 0), false), "Running");
        assert_eq!(phase("Never", exited("a", 0), false), "Succeeded");
        assert_eq!(phase("Never", exited("a", 1), false), "Failed");
        assert_eq!(phase("OnFailure", exited("a", 1), false), "Running");
        assert_eq!(phase("Always", exited("a", 0), true), "Succeeded");
        assert_eq!(phase("Always", exited("a", 137), true), "Failed");
        assert_eq!(phase("Always", running("a", true), false), "Running");
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let mut p = pod(&["a"], &[]);
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![running("a", true)] };
        let then = Time(Timestamp::from_second(1_000_000).expect("time"));
        let first = generate(&observe(&p, Some(&rt), false), &then);
        p.status = Some(first.clone());
        let later = now();
        let again = generate(&observe(&p, Some(&rt), false), &later);
        assert_eq!(first, again, "nothing changed, nothing to write");
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![running("a", false)] };
        let changed = generate(&observe(&p, Some(&rt), false), &later);
        assert_eq!(cond(&changed, "Ready").last_transition_time, Some(later));
        assert_eq!(cond(&changed, "PodScheduled").last_transition_time, Some(then));
    }

    #[test]
    fn deleted_pods_end_succeeded_and_completed() {
        let mut p = pod(&["a"], &[]);
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![running("a", true)] };
        p.status = Some(generate(&observe(&p, Some(&rt), false), &now()));
        let rt = RuntimeStatus { init_containers: vec![], containers: vec![exited("a", 0)] };
        let s = generate(&observe(&p, Some(&rt), true), &now());
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(cond(&s, "Initialized").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(s.pod_ip.as_deref(), Some("127.244.0.2"));
    }
}
