//! The seam between the node agent and what runs a pod's containers: the [`PodRuntime`] trait
//! (the part of kubelet's `kubecontainer.Runtime` in `pkg/kubelet/container/runtime.go` that
//! kplane needs), the pod "sandbox" the agent sets up first, and [`PodEvents`], the agent's
//! equivalent of the PLEG (`pkg/kubelet/pleg`): how a runtime says a pod's containers changed.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the agent set up for a pod before its containers run (kubelet's pod sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The pod's IP (`status.podIP`, the `POD_IP` of its processes).
    pub pod_ip: IpAddr,
    /// The node's IP (`status.hostIP`).
    pub host_ip: IpAddr,
    /// The node's name (`spec.nodeName`).
    pub node_name: String,
}

/// The containers of a pod as a runtime sees them, as the API reports them: name, image,
/// imageID, containerID, state, lastState, ready, started, restartCount. A container the
/// runtime leaves out is reported `waiting` (`ContainerCreating`, or `PodInitializing` while init
/// containers run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeStatus {
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
}

/// Runs pods' containers. The agent owns the pod object: its IP, phase, conditions, status
/// writes and deletion; a runtime only starts and stops containers and reports their states.
///
/// The agent calls a pod's methods from one task at a time (its pod worker), never
/// concurrently for the same pod. Work that outlives a call (a process running, a probe, a
/// restart back-off) goes in the runtime's own tasks, which call [`PodEvents::changed`] when a
/// container's state (or readiness) changes so the agent writes the new status.
pub trait PodRuntime: Send + Sync + 'static {
    /// A short name for logs and events (`simulated`, `process`).
    fn name(&self) -> &'static str;

    /// Whether this runtime runs the pod. Asked once per pod UID, at its first sync; the first
    /// runtime that says yes keeps the pod for its whole life.
    fn handles(&self, pod: &Pod) -> bool;

    /// Brings the pod's containers to what its spec asks: starts what has not started, restarts
    /// per `restartPolicy`, follows image changes. Called on every sync of a live pod (after
    /// each change of the pod, and after each [`PodEvents::changed`]); must be idempotent, and
    /// should return promptly (long work goes in the runtime's tasks).
    fn sync_pod<'a>(&'a self, pod: &'a Pod, sandbox: &'a Sandbox) -> BoxFuture<'a, ()>;

    /// Stops every container of the pod: the `preStop` hook and SIGTERM, then SIGKILL once
    /// `grace` has passed. Resolves when all have stopped; their statuses then show
    /// `terminated`. Also called for a pod that reached a terminal phase, and with a zero grace
    /// for a pod that vanished from the API.
    fn kill_pod<'a>(&'a self, pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()>;

    /// The pod's containers now; `None` when this runtime never ran it.
    fn pod_status(&self, uid: &str) -> Option<RuntimeStatus>;

    /// The pod is gone from the API and stopped: drop everything kept for it.
    fn forget_pod(&self, uid: &str);

    /// The agent is stopping (the cluster shuts down): stop every container and task now,
    /// without waiting.
    fn shutdown(&self) {}
}

/// How a runtime tells the agent that a pod's containers changed (a PLEG event): the agent
/// then syncs the pod and writes its status.
#[derive(Debug, Clone)]
pub struct PodEvents {
    tx: mpsc::UnboundedSender<String>,
}

impl PodEvents {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// The containers of the pod with this UID changed.
    pub fn changed(&self, uid: &str) {
        let _ = self.tx.send(uid.to_string());
    }
}

/// What a runtime is built with.
#[derive(Clone)]
pub struct RuntimeContext {
    /// A client of the cluster (ConfigMaps, Secrets, Services for a container's environment).
    pub client: kube::Client,
    /// The node's name.
    pub node_name: String,
    /// Where to report container changes.
    pub events: PodEvents,
    /// Records Events about pods as the kubelet does (`Pulled`, `Started`, `Killing`, `BackOff`…).
    pub recorder: super::events::Recorder,
}
