//! The supervisor of one process pod (`kplane.dev/run: process`): init containers in order, then
//! the main containers, each `command`+`args` a host process in its own process group with its
//! output in [`LogStore`]; restarts per `restartPolicy` with the kubelet's crash-loop back-off;
//! probes; graceful stop. It reports container statuses and the pod phase as the kubelet computes
//! them (`pkg/kubelet/kuberuntime/kuberuntime_manager.go` `doBackOff`, `kubelet_pods.go`
//! `getPhase`, `status/generate.go`, `client-go/util/flowcontrol/backoff.go`).

use super::backoff::{Backoff, BackoffPolicy, go_duration};
use super::container_env::{self, EnvLookup, NodeFacts};
use super::logs::{LogStore, LogWriter, Pipe, PodKey};
use super::probes::{self, ProbeKind, ProbeReport, ProbeTarget, run_hook};
use super::spawn::{kill_group, new_container_id, spawn, start_error_message};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// `format.Pod`: `name_namespace(uid)`.
pub fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

/// An Event the node agent records for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// `spec.containers{name}` or `spec.initContainers{name}`.
    pub field_path: Option<String>,
}

/// What the kubelet would write into the pod's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRunStatus {
    pub phase: String,
    pub init_container_statuses: Vec<ContainerStatus>,
    pub container_statuses: Vec<ContainerStatus>,
    /// Init containers not yet succeeded (`Initialized` is false while any is listed).
    pub not_initialized: Vec<String>,
    /// Containers not ready (`ContainersReady` and `Ready` are false while any is listed).
    pub not_ready: Vec<String>,
}

impl PodRunStatus {
    pub fn initialized(&self) -> bool {
        self.not_initialized.is_empty()
    }
    pub fn containers_ready(&self) -> bool {
        self.not_ready.is_empty() && !self.container_statuses.is_empty()
    }
    pub fn terminal(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// What a pod's supervisor needs.
#[derive(Clone)]
pub struct RunConfig {
    pub pod_ips: Vec<String>,
    pub node: NodeFacts,
    pub lookup: Arc<dyn EnvLookup>,
    pub logs: LogStore,
    pub backoff: BackoffPolicy,
    /// How soon a container whose configuration failed (`CreateContainerConfigError`) is retried.
    pub config_retry: Duration,
}

/// A running pod supervisor. Dropping it kills every process of the pod.
pub struct PodRun {
    status: watch::Receiver<PodRunStatus>,
    control: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodRun {
    /// Starts supervising `pod` (bound, with its IP known). Events arrive on `events`.
    pub fn start(pod: Pod, config: RunConfig, events: mpsc::UnboundedSender<PodEvent>) -> Self {
        let (control, rx) = mpsc::unbounded_channel();
        let sup = Supervisor::new(pod, config, events, control.clone());
        let (status_tx, status) = watch::channel(sup.status());
        let task = tokio::spawn(sup.run(rx, status_tx));
        PodRun { status, control, task }
    }

    /// The latest status; `changed()` on it waits for the next.
    pub fn status(&self) -> watch::Receiver<PodRunStatus> {
        self.status.clone()
    }

    /// Stops every container: SIGTERM to each process group, SIGKILL after `grace`. Returns when
    /// all have exited; the status then holds the terminal phase.
    pub async fn stop(&self, grace: Duration) -> PodRunStatus {
        self.stopper().stop(grace).await
    }

    /// A handle that stops the pod without borrowing the `PodRun`.
    pub fn stopper(&self) -> Stopper {
        Stopper { control: self.control.clone(), status: self.status.clone() }
    }
}

/// Stops a pod's processes (see [`PodRun::stop`]).
#[derive(Clone)]
pub struct Stopper {
    control: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<PodRunStatus>,
}

impl Stopper {
    pub async fn stop(&self, grace: Duration) -> PodRunStatus {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Msg::Stop { grace, done: tx }).is_ok() {
            let _ = rx.await;
        }
        self.status.borrow().clone()
    }
}

enum Msg {
    Exited {
        slot: usize,
        instance: u64,
        code: i32,
        finished: Timestamp,
    },
    Probe {
        slot: usize,
        instance: u64,
        kind: ProbeKind,
        report: ProbeReport,
    },
    GraceOver {
        slot: usize,
        instance: u64,
    },
    /// The preStop hook ended (with its failure, if any); `left` is what remains of the grace.
    PreStopDone {
        slot: usize,
        instance: u64,
        failure: Option<String>,
        left: Duration,
    },
    /// The postStart hook failed: the container is killed (and restarted per policy).
    PostStartFailed {
        slot: usize,
        instance: u64,
        why: String,
    },
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Containers get at least this long between SIGTERM and SIGKILL (`minimumGracePeriodInSeconds`).
const MIN_GRACE: Duration = Duration::from_secs(2);

/// The process of one container instance.
struct Instance {
    id: u64,
    pgid: u32,
    container_id: String,
    started: Timestamp,
    probes: Vec<tokio::task::JoinHandle<()>>,
    startup_done: watch::Sender<bool>,
    killing: bool,
    /// What probes and hooks run against: the pod IP, ports, env and working directory.
    target: Arc<ProbeTarget>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for p in &self.probes {
            p.abort();
        }
        // The supervisor is going away (or the instance ended): nothing of it may outlive it.
        kill_group(self.pgid, rustix::process::Signal::KILL);
    }
}

struct Slot {
    spec: Container,
    init: bool,
    /// A sidecar: an init container with `restartPolicy: Always`, which keeps running beside
    /// the main containers.
    sidecar: bool,
    /// Whether it has started once (a sidecar no longer holds back what follows it).
    ever_started: bool,
    status: ContainerStatus,
    instance: Option<Instance>,
    backoff: Backoff,
    /// When to try starting again (back-off, configuration retry); `None` with `done` or
    /// `blocked` means never.
    next_start: Option<Instant>,
    /// Terminated for good (restart policy says so, or stopped).
    done: bool,
    /// Cannot start at all (no command): waits for the pod to be deleted.
    blocked: bool,
    /// Instances started so far (the next log file's number).
    attempts: u32,
    ready: bool,
    /// Container IDs with a log, oldest first: the current instance and the one before.
    logs: std::collections::VecDeque<String>,
}

struct Supervisor {
    pod: Pod,
    config: RunConfig,
    events: mpsc::UnboundedSender<PodEvent>,
    control: mpsc::UnboundedSender<Msg>,
    slots: Vec<Slot>,
    next_instance: u64,
    stopping: Option<Vec<oneshot::Sender<()>>>,
    key: PodKey,
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

impl Supervisor {
    fn new(
        pod: Pod,
        config: RunConfig,
        events: mpsc::UnboundedSender<PodEvent>,
        control: mpsc::UnboundedSender<Msg>,
    ) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let slot = |c: &Container, init: bool| Slot {
            status: ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                started: Some(false),
                state: Some(waiting(if init || has_init { "PodInitializing" } else { "ContainerCreating" }, None)),
                last_state: Some(ContainerState::default()),
                ..Default::default()
            },
            spec: c.clone(),
            init,
            sidecar: init && c.restart_policy.as_deref() == Some("Always"),
            ever_started: false,
            instance: None,
            backoff: Backoff::new(config.backoff),
            next_start: None,
            done: false,
            blocked: false,
            attempts: 0,
            ready: false,
            logs: Default::default(),
        };
        let mut slots: Vec<Slot> = spec.init_containers.iter().flatten().map(|c| slot(c, true)).collect();
        slots.extend(spec.containers.iter().map(|c| slot(c, false)));
        let key = PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        Supervisor { pod, config, events, control, slots, next_instance: 0, stopping: None, key }
    }

    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    fn event(&self, slot: usize, warning: bool, reason: &str, message: String) {
        let s = &self.slots[slot];
        let field = if s.init { "spec.initContainers" } else { "spec.containers" };
        let _ = self.events.send(PodEvent {
            warning,
            reason: reason.into(),
            message,
            field_path: Some(format!("{field}{{{}}}", s.spec.name)),
        });
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, status: watch::Sender<PodRunStatus>) {
        loop {
            self.start_due().await;
            let current = self.status();
            status.send_if_modified(|s| {
                let changed = *s != current;
                *s = current;
                changed
            });
            if self.stopping.is_some() && self.slots.iter().all(|s| s.instance.is_none()) {
                for done in self.stopping.take().into_iter().flatten() {
                    let _ = done.send(());
                }
                // Stopped for good: later Stop messages are answered at once.
                self.stopping = Some(Vec::new());
            }
            let wake = self.slots.iter().filter_map(|s| s.next_start).min();
            let msg = match wake {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => continue,
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else { return };
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Exited { slot, instance, code, finished } => self.exited(slot, instance, code, finished),
            Msg::Probe { slot, instance, kind, report } => self.probed(slot, instance, kind, report),
            Msg::GraceOver { slot, instance } => {
                if let Some(i) = self.slots[slot].instance.as_ref().filter(|i| i.id == instance) {
                    kill_group(i.pgid, rustix::process::Signal::KILL);
                }
            }
            Msg::PostStartFailed { slot, instance, why } => {
                if self.slots[slot].instance.as_ref().is_some_and(|i| i.id == instance) {
                    self.event(slot, true, "FailedPostStartHook", why);
                    let grace = self.grace_period();
                    self.kill(slot, grace, "FailedPostStartHook".into());
                }
            }
            Msg::PreStopDone { slot, instance, failure, left } => {
                if self.slots[slot].instance.as_ref().is_some_and(|i| i.id == instance) {
                    if let Some(why) = failure {
                        self.event(slot, true, "FailedPreStopHook", format!("PreStopHook failed: {why}"));
                    }
                    self.terminate(slot, left);
                }
            }
            Msg::Stop { grace, done } => {
                self.stopping.get_or_insert_with(Vec::new).push(done);
                for i in 0..self.slots.len() {
                    self.slots[i].next_start = None;
                    let msg = format!("Stopping container {}", self.slots[i].spec.name);
                    self.kill(i, grace, msg);
                }
            }
        }
    }

    /// SIGTERM to the instance's group (once, with the `Killing` Event), SIGKILL once `grace`
    /// is over (a later, shorter grace period wins).
    fn kill(&mut self, slot: usize, grace: Duration, message: String) {
        let pre_stop = self.slots[slot].spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let Some(inst) = self.slots[slot].instance.as_mut() else { return };
        let (id, first, target) = (inst.id, !inst.killing, inst.target.clone());
        inst.killing = true;
        if !first {
            // Killed again, perhaps with a shorter grace period: that one's SIGKILL also stands.
            self.kill_after(slot, id, grace.max(MIN_GRACE));
            return;
        }
        self.event(slot, false, "Killing", message);
        match pre_stop.filter(|_| !grace.is_zero()) {
            // The preStop hook runs first, within the grace period (`executePreStopHook`).
            Some(hook) => {
                let control = self.control.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let failure = tokio::time::timeout(grace, run_hook(&hook, &target, grace)).await.unwrap_or(None);
                    let left = grace.saturating_sub(start.elapsed());
                    let _ = control.send(Msg::PreStopDone { slot, instance: id, failure, left });
                });
            }
            None => self.terminate(slot, grace),
        }
    }

    /// SIGTERM now, SIGKILL after `grace` (at least [`MIN_GRACE`]).
    fn terminate(&mut self, slot: usize, grace: Duration) {
        let Some(inst) = self.slots[slot].instance.as_ref() else { return };
        kill_group(inst.pgid, rustix::process::Signal::TERM);
        let id = inst.id;
        self.kill_after(slot, id, grace.max(MIN_GRACE));
    }

    fn kill_after(&self, slot: usize, instance: u64, after: Duration) {
        let control = self.control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = control.send(Msg::GraceOver { slot, instance });
        });
    }

    fn grace_period(&self) -> Duration {
        let secs = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Starts whatever is due: the next init container, or the main containers once all init
    /// containers have succeeded.
    async fn start_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let due = |s: &Slot| s.instance.is_none() && !s.done && !s.blocked && s.next_start.is_none_or(|t| t <= now);
        let init_count = self.slots.iter().filter(|s| s.init).count();
        for i in 0..init_count {
            let s = &self.slots[i];
            if s.sidecar && s.ever_started {
                // Restarts of a sidecar that has started once hold nothing back.
                if due(s) {
                    self.try_start(i).await;
                }
                continue;
            }
            if s.sidecar || !s.done {
                // This one first: a regular init container until it has succeeded, a sidecar
                // until it has started.
                if due(s) {
                    self.try_start(i).await;
                }
                return;
            }
        }
        if self.slots[..init_count].iter().any(|s| !s.sidecar && !succeeded(&s.status)) {
            // An init container failed for good (restartPolicy Never): the pod has failed.
            return;
        }
        for i in init_count..self.slots.len() {
            if due(&self.slots[i]) {
                self.try_start(i).await;
            }
        }
        if self.slots[init_count..].iter().all(|s| s.done) {
            // The main containers are finished for good: sidecars stop too, last first.
            let grace = self.grace_period();
            let sidecars: Vec<usize> = (0..init_count).rev().filter(|&i| self.slots[i].sidecar).collect();
            for i in sidecars {
                let slot = &mut self.slots[i];
                slot.done = true;
                slot.next_start = None;
                if slot.instance.as_ref().is_some_and(|inst| !inst.killing) {
                    let msg = format!("Stopping container {}", slot.spec.name);
                    self.kill(i, grace, msg);
                }
            }
        }
    }

    /// Starts a container unless its back-off says wait (`doBackOff`).
    async fn try_start(&mut self, i: usize) {
        let last_finished = self.slots[i]
            .status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| SystemTime::from(t.0));
        if let Some(finished) = last_finished.filter(|_| self.slots[i].attempts > 0) {
            let now = SystemTime::now();
            let slot = &mut self.slots[i];
            if slot.backoff.in_backoff_since(finished, now) {
                let b = slot.backoff.current();
                let wait = (finished + b).duration_since(now).unwrap_or_default();
                slot.next_start = Some(Instant::now() + wait);
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_duration(b),
                    slot.spec.name,
                    pod_ref(&self.pod)
                );
                let was = slot.status.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
                slot.status.state = Some(waiting("CrashLoopBackOff", Some(msg)));
                if was.as_deref() != Some("CrashLoopBackOff") {
                    let name = slot.spec.name.clone();
                    self.event(
                        i,
                        true,
                        "BackOff",
                        format!("Back-off restarting failed container {name} in pod {}", pod_ref(&self.pod)),
                    );
                }
                return;
            }
            slot.backoff.next(finished);
        }
        self.slots[i].next_start = None;
        self.start(i).await;
    }

    async fn start(&mut self, i: usize) {
        let spec = self.slots[i].spec.clone();
        let built = container_env::build_env(
            self.config.lookup.as_ref(),
            &self.pod,
            &spec,
            &self.config.pod_ips,
            &self.config.node,
        )
        .await;
        let built = match built {
            Ok(b) => b,
            Err(e) => return self.config_error(i, e.to_string(), true),
        };
        for (reason, message) in &built.warnings {
            let event = PodEvent { warning: true, reason: reason.clone(), message: message.clone(), field_path: None };
            let _ = self.events.send(event);
        }
        let pod_ip = self.config.pod_ips.first().cloned();
        let env = container_env::process_env(&built, &container_env::pod_hostname(&self.pod), pod_ip.as_deref());
        let Some(argv) = container_env::command_line(&spec, &env) else {
            let msg = format!(
                "container {:?} has no command: kplane runs process pods on the host without images, so there is no entrypoint to fall back on",
                spec.name
            );
            return self.config_error(i, msg, false);
        };
        let attempt = self.slots[i].attempts;
        let container_id = new_container_id(&self.key, &spec.name, attempt);
        let log = match self.config.logs.create(&self.key, &spec.name, attempt, &container_id) {
            Ok(l) => l,
            Err(e) => return self.config_error(i, format!("failed to create container log: {e}"), true),
        };
        let working_dir = spec.working_dir.clone().filter(|d| !d.is_empty());
        let spawned = match &working_dir {
            Some(dir) if !std::path::Path::new(dir).is_dir() => Err(format!(
                "unable to start container process: chdir to cwd ({dir:?}) set in config.json failed: no such file or directory"
            )),
            _ => spawn(&argv, &env, working_dir.as_deref()).map_err(|e| start_error_message(&argv[0], &e)),
        };

        // A new instance: restartCount counts the ones before it; the kubelet keeps the log of
        // the current and the previous instance only.
        let slot = &mut self.slots[i];
        slot.attempts += 1;
        slot.status.restart_count = attempt as i32;
        slot.status.container_id = Some(container_id.clone());
        slot.logs.push_back(container_id.clone());
        while slot.logs.len() > 2 {
            if let Some(old) = slot.logs.pop_front() {
                self.config.logs.remove(&old);
            }
        }
        let name = spec.name.clone();
        let mut child = match spawned {
            Ok(c) => c,
            Err(msg) => {
                log.finish();
                // containerd's record of a task that never started...
                slot.status.state = Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some("StartError".into()),
                        message: Some(msg.clone()),
                        started_at: Some(Time(Timestamp::UNIX_EPOCH)),
                        finished_at: Some(now_time()),
                        container_id: Some(container_id),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                slot.status.started = Some(false);
                slot.ready = false;
                self.event(i, true, "Failed", format!("Error: {msg}"));
                // ...and the kubelet's reason while it waits to try again.
                if self.after_exit(i, 128) {
                    self.slots[i].status.state = Some(waiting("RunContainerError", Some(msg)));
                }
                return;
            }
        };
        self.event(i, false, "Created", format!("Created container: {name}"));
        let pgid = child.id().unwrap_or(0);
        let mut captures = Vec::new();
        if let Some(out) = child.stdout.take() {
            captures.push(log.capture(Pipe::Stdout, out));
        }
        if let Some(err) = child.stderr.take() {
            captures.push(log.capture(Pipe::Stderr, err));
        }
        let id = self.next_instance;
        self.next_instance += 1;
        let started = Timestamp::now();
        tokio::spawn(wait_exit(child, pgid, captures, log, self.control.clone(), i, id));

        let has_startup = spec.startup_probe.is_some();
        let (startup_done, startup_rx) = watch::channel(!has_startup);
        let target = Arc::new(
            ProbeTarget {
                pod_ip: pod_ip.unwrap_or_else(|| "127.0.0.1".into()),
                env,
                working_dir: working_dir.map(Into::into),
                ..Default::default()
            }
            .with_ports(spec.ports.as_deref().unwrap_or_default()),
        );
        if let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            let (control, target, grace) = (self.control.clone(), target.clone(), self.grace_period());
            tokio::spawn(async move {
                if let Some(why) = run_hook(&hook, &target, grace).await {
                    let _ = control.send(Msg::PostStartFailed { slot: i, instance: id, why });
                }
            });
        }
        let mut workers = Vec::new();
        let probes = [
            (ProbeKind::Startup, spec.startup_probe.clone()),
            (ProbeKind::Liveness, spec.liveness_probe.clone()),
            (ProbeKind::Readiness, spec.readiness_probe.clone()),
        ];
        for (kind, probe) in probes {
            // Regular init containers have no probes that matter; sidecars do.
            let (Some(probe), false) = (probe, self.slots[i].init && !self.slots[i].sidecar) else { continue };
            let control = self.control.clone();
            let report = move |report| {
                let _ = control.send(Msg::Probe { slot: i, instance: id, kind, report });
            };
            workers.push(probes::spawn_worker(kind, probe, target.clone(), Instant::now(), startup_rx.clone(), report));
        }
        let slot = &mut self.slots[i];
        slot.instance =
            Some(Instance { id, pgid, container_id, started, probes: workers, startup_done, killing: false, target });
        slot.status.state = Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(started)) }),
            ..Default::default()
        });
        slot.status.started = Some(!has_startup);
        slot.ever_started |= !has_startup;
        slot.ready = !has_startup && spec.readiness_probe.is_none();
        self.event(i, false, "Started", format!("Started container {name}"));
    }

    /// The container cannot be created: `CreateContainerConfigError`, retried later if `retry`.
    fn config_error(&mut self, i: usize, msg: String, retry: bool) {
        let slot = &mut self.slots[i];
        slot.status.state = Some(waiting("CreateContainerConfigError", Some(msg.clone())));
        slot.next_start = retry.then(|| Instant::now() + self.config.config_retry);
        slot.blocked = !retry;
        self.event(i, true, "Failed", format!("Error: {msg}"));
    }

    fn exited(&mut self, i: usize, instance: u64, code: i32, finished: Timestamp) {
        let policy_fallback = self.slots[i].spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let Some(inst) = self.slots[i].instance.take().filter(|x| x.id == instance) else { return };
        let message = (policy_fallback && code != 0)
            .then(|| self.config.logs.tail_text(&inst.container_id, 80, 2048))
            .filter(|m| !m.is_empty());
        let slot = &mut self.slots[i];
        slot.status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message,
                started_at: Some(Time(inst.started)),
                finished_at: Some(Time(finished)),
                container_id: Some(inst.container_id.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        slot.status.started = Some(false);
        slot.ready = false;
        // Reaped and its group killed already: its number may be reused, so no signal on drop.
        let mut inst = inst;
        inst.pgid = 0;
        drop(inst);
        self.after_exit(i, code);
    }

    /// After an instance ended (or failed to start): done for good, or restart (now or after
    /// back-off, decided when it is due).
    fn after_exit(&mut self, i: usize, code: i32) -> bool {
        let init_count = self.slots.iter().filter(|s| s.init).count();
        let mains_done = self.slots[init_count..].iter().all(|s| s.done);
        let restart = self.stopping.is_none()
            && match (self.slots[i].init, self.restart_policy()) {
                _ if self.slots[i].sidecar => !self.slots[i].done && !mains_done,
                (true, "Never") => false,
                (true, _) => code != 0,
                (false, "Always") => true,
                (false, "OnFailure") => code != 0,
                _ => false,
            };
        let slot = &mut self.slots[i];
        if !restart {
            slot.done = true;
            slot.next_start = None;
            return false;
        }
        // The dead instance becomes lastState now; the next start decides on back-off.
        if let Some(state) = slot.status.state.clone().filter(|s| s.terminated.is_some()) {
            slot.status.last_state = Some(state);
        }
        slot.next_start = Some(Instant::now());
        true
    }

    fn probed(&mut self, i: usize, instance: u64, kind: ProbeKind, report: ProbeReport) {
        let Some(inst) = self.slots[i].instance.as_ref().filter(|x| x.id == instance) else { return };
        if inst.killing {
            return;
        }
        match report {
            ProbeReport::Unhealthy(msg) => self.event(i, true, "Unhealthy", msg),
            ProbeReport::Result(ok) => match kind {
                ProbeKind::Readiness => self.slots[i].ready = ok,
                // A passing liveness probe changes nothing.
                ProbeKind::Liveness if ok => {}
                ProbeKind::Startup if ok => {
                    let _ = inst.startup_done.send(true);
                    let slot = &mut self.slots[i];
                    slot.status.started = Some(true);
                    slot.ever_started = true;
                    slot.ready = slot.spec.readiness_probe.is_none();
                }
                ProbeKind::Liveness | ProbeKind::Startup => {
                    let slot = &self.slots[i];
                    let (what, probe) = match kind {
                        ProbeKind::Liveness => ("liveness", slot.spec.liveness_probe.as_ref()),
                        _ => ("startup", slot.spec.startup_probe.as_ref()),
                    };
                    // A probe-level terminationGracePeriodSeconds overrides the pod's.
                    let grace = probe
                        .and_then(|p| p.termination_grace_period_seconds)
                        .map(|s| Duration::from_secs(s.max(0) as u64))
                        .unwrap_or_else(|| self.grace_period());
                    let mut msg = format!("Container {} failed {what} probe", slot.spec.name);
                    if self.restart_policy() != "Never" {
                        msg.push_str(", will be restarted");
                    }
                    self.kill(i, grace, msg);
                }
            },
        }
    }

    fn status(&self) -> PodRunStatus {
        let mut out = PodRunStatus::default();
        for s in &self.slots {
            let mut st = s.status.clone();
            if s.sidecar {
                st.ready = s.ready && s.instance.is_some();
                if !s.ever_started {
                    out.not_initialized.push(st.name.clone());
                }
                if !st.ready && !s.done {
                    out.not_ready.push(st.name.clone());
                }
                out.init_container_statuses.push(st);
            } else if s.init {
                st.ready = succeeded(&st);
                if !st.ready {
                    out.not_initialized.push(st.name.clone());
                }
                out.init_container_statuses.push(st);
            } else {
                st.ready = s.ready && s.instance.is_some();
                if !st.ready {
                    out.not_ready.push(st.name.clone());
                }
                out.container_statuses.push(st);
            }
        }
        let terminal = self.stopping.is_some() && self.slots.iter().all(|s| s.instance.is_none());
        // Sidecars do not decide the phase (the node agent's status weighs them as upstream).
        let regular_init: Vec<ContainerStatus> = (self.slots.iter().filter(|s| s.init))
            .zip(&out.init_container_statuses)
            .filter(|(s, _)| !s.sidecar)
            .map(|(_, st)| st.clone())
            .collect();
        out.phase = pod_phase(self.restart_policy(), &regular_init, &out.container_statuses, terminal).to_string();
        out
    }
}

fn succeeded(s: &ContainerStatus) -> bool {
    s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code == 0)
}

/// `getPhase` for pods without sidecar containers.
pub fn pod_phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    main: &[ContainerStatus],
    terminal: bool,
) -> &'static str {
    let last_terminated = |s: &ContainerStatus| s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).cloned();
    let (mut pending_init, mut failed_init) = (0, 0);
    for s in init {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = st.terminated {
            failed_init += usize::from(t.exit_code != 0);
        } else if st.waiting.is_some() {
            match last_terminated(s) {
                Some(t) => failed_init += usize::from(t.exit_code != 0),
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in main {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            succeeded += usize::from(t.exit_code == 0);
        } else if last_terminated(s).is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if failed_init > 0 && restart_policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 || (failed_init > 0 && running == 0 && stopped == 0) {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    if terminal {
        return if stopped == succeeded { "Succeeded" } else { "Failed" };
    }
    match restart_policy {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "Never" => "Failed",
        _ => "Running",
    }
}

/// Waits for the instance's process, kills what it left in its group (a container's processes
/// end with it), lets the log catch up, then reports the exit.
async fn wait_exit(
    mut child: tokio::process::Child,
    pgid: u32,
    captures: Vec<tokio::task::JoinHandle<()>>,
    log: LogWriter,
    control: mpsc::UnboundedSender<Msg>,
    slot: usize,
    instance: u64,
) {
    use std::os::unix::process::ExitStatusExt;
    let code = match child.wait().await {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
        Err(_) => 128 + 9,
    };
    let finished = Timestamp::now();
    kill_group(pgid, rustix::process::Signal::KILL);
    for c in captures {
        // A process that escaped the group may hold the pipe open: don't wait for it forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    log.finish();
    let _ = control.send(Msg::Exited { slot, instance, code, finished });
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
