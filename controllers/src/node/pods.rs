//! The node agent's pods: one worker per pod that sets up its sandbox (the pod IP), has a
//! [`PodRuntime`] run its containers, writes the status, and on deletion stops the containers
//! and deletes the pod (kubelet `pod_workers.go`, `kubelet.go` `SyncPod`/`SyncTerminatingPod`,
//! `status/status_manager.go` `syncPod`/`canBeDeleted`).

use super::events::{Recorder, WARNING};
use super::pod_ips::{POD_IP_ANNOTATION, PodIps};
use super::runtime::{PodRuntime, Sandbox};
use super::status::{self, Observed};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Wait before retrying a pod whose sync failed on an API error.
const RETRY: Duration = Duration::from_secs(1);
/// Status writes tried per sync when other writers keep winning.
const WRITE_TRIES: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn phase_of(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase_of(pod), "Succeeded" | "Failed")
}

/// The latest known state of a pod, and the bell that wakes its worker.
#[derive(Clone)]
struct Worker {
    /// `None` once the pod is gone from the API.
    latest: Arc<Mutex<Option<Arc<Pod>>>>,
    notify: Arc<Notify>,
}

/// What a worker remembers of its pod between syncs.
#[derive(Default)]
struct PodState {
    runtime: Option<Arc<dyn PodRuntime>>,
    last: Option<Arc<Pod>>,
    /// The `Ready` and `ContainersReady` statuses this agent computed last: a stored value that
    /// differs while the computed one has not moved was written by someone else, and is kept.
    own_readiness: Option<[String; 2]>,
    /// The sandbox failure last reported, so its event is recorded once.
    sandbox_error: Option<String>,
    /// Containers stopped for good (terminal or terminating pod).
    killed: bool,
    /// The agent deleted the pod; only the watch's word that it is gone remains.
    finished: bool,
}

/// The pods bound to this node.
pub(super) struct Pods {
    client: kube::Client,
    node: String,
    host_ip: IpAddr,
    ips: Mutex<PodIps>,
    runtimes: Vec<Arc<dyn PodRuntime>>,
    recorder: Recorder,
    workers: Mutex<HashMap<String, (Worker, tokio::task::AbortHandle)>>,
    /// Pods whose sandbox waits for an address (a pinned IP held by another pod).
    waiting_for_ip: Mutex<HashSet<String>>,
}

impl Pods {
    pub(super) fn new(
        client: kube::Client,
        node: String,
        host_ip: IpAddr,
        ips: PodIps,
        runtimes: Vec<Arc<dyn PodRuntime>>,
        recorder: Recorder,
    ) -> Self {
        Self {
            client,
            node,
            host_ip,
            ips: Mutex::new(ips),
            runtimes,
            recorder,
            workers: Mutex::new(HashMap::new()),
            waiting_for_ip: Mutex::new(HashSet::new()),
        }
    }

    fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }

    /// The IPs of this node's pods, taken back from their statuses (the allocator's repair pass).
    pub(super) async fn restore(&self) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut pods = api.list(&ListParams::default().fields(&self.field_selector())).await?.items;
        pods.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        let mut ips = lock(&self.ips);
        for pod in pods.iter().filter(|p| !is_terminal(p)) {
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()) else {
                continue;
            };
            if let Err(e) = ips.hold(uid_of(pod), &key_of(pod), ip) {
                tracing::warn!(pod = %key_of(pod), error = %e, "pod IP held twice; the later pod gets another");
            }
        }
        Ok(())
    }

    /// Pod IPs in use (for tests and diagnostics).
    pub(super) fn ips_in_use(&self) -> usize {
        lock(&self.ips).len()
    }

    /// Follows the node's pods and the runtimes' change reports until the client goes away.
    pub(super) async fn run(self: Arc<Self>, mut pleg: mpsc::UnboundedReceiver<String>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&self.field_selector());
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut relist: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Init)) => relist = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let Some(seen) = relist.as_mut() {
                            seen.insert(uid_of(&pod).to_string());
                        }
                        self.update(pod);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let seen = relist.take().unwrap_or_default();
                        let known: Vec<String> = lock(&self.workers).keys().cloned().collect();
                        for uid in known.into_iter().filter(|u| !seen.contains(u)) {
                            self.gone(&uid);
                        }
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => self.update(pod),
                    Some(Ok(watcher::Event::Delete(pod))) => self.gone(uid_of(&pod)),
                    Some(Err(e)) => tracing::debug!(error = %e, "watching the node's pods"),
                    None => return,
                },
                Some(uid) = pleg.recv() => {
                    let uid: String = uid;
                    self.poke(&uid);
                }
            }
        }
    }

    fn update(self: &Arc<Self>, pod: Pod) {
        let uid = uid_of(&pod).to_string();
        let mut workers = lock(&self.workers);
        let (worker, _) = workers.entry(uid.clone()).or_insert_with(|| {
            let w = Worker { latest: Arc::new(Mutex::new(None)), notify: Arc::new(Notify::new()) };
            let task = tokio::spawn(self.clone().work(uid, w.clone()));
            (w, task.abort_handle())
        });
        *lock(&worker.latest) = Some(Arc::new(pod));
        worker.notify.notify_one();
    }

    fn gone(&self, uid: &str) {
        if let Some((w, _)) = lock(&self.workers).get(uid) {
            *lock(&w.latest) = None;
            w.notify.notify_one();
        }
    }

    fn poke(&self, uid: &str) {
        if let Some((w, _)) = lock(&self.workers).get(uid) {
            w.notify.notify_one();
        }
    }

    /// Ends every pod worker and tells the runtimes to stop (the agent is stopping).
    pub(super) fn stop(&self) {
        for (_, (_, task)) in lock(&self.workers).drain() {
            task.abort();
        }
        for r in &self.runtimes {
            r.shutdown();
        }
    }

    /// A pod's worker: syncs it after every change until it is gone, then cleans up.
    async fn work(self: Arc<Self>, uid: String, w: Worker) {
        let mut st = PodState::default();
        loop {
            w.notify.notified().await;
            let latest = lock(&w.latest).clone();
            let Some(pod) = latest else {
                self.cleanup(&uid, &mut st).await;
                lock(&self.workers).remove(&uid);
                return;
            };
            st.last = Some(pod.clone());
            if let Err(e) = self.sync(&mut st, &pod).await {
                tracing::debug!(pod = %key_of(&pod), error = %e, "pod sync failed; retrying");
                let notify = w.notify.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY).await;
                    notify.notify_one();
                });
            }
        }
    }

    fn runtime_for(&self, pod: &Pod) -> Option<Arc<dyn PodRuntime>> {
        self.runtimes.iter().find(|r| r.handles(pod)).cloned()
    }

    async fn sync(&self, st: &mut PodState, pod: &Pod) -> Result<(), kube::Error> {
        if st.finished {
            return Ok(());
        }
        if st.runtime.is_none() {
            st.runtime = self.runtime_for(pod);
        }
        let Some(runtime) = st.runtime.clone() else {
            tracing::warn!(pod = %key_of(pod), "no runtime runs this pod");
            return Ok(());
        };
        let uid = uid_of(pod).to_string();
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(st, pod, &runtime).await;
        }
        if is_terminal(pod) {
            // Finished by itself (restartPolicy Never/OnFailure): stop what is left, free the IP.
            if !st.killed {
                runtime.kill_pod(pod, Duration::ZERO).await;
                st.killed = true;
                self.release(&uid);
            }
            return Ok(());
        }
        let pin = pod.metadata.annotations.as_ref().and_then(|a| a.get(POD_IP_ANNOTATION)).map(String::as_str);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        // A host-network pod has the node's IP and takes none from the range.
        let assigned = if host_network { Ok(self.host_ip) } else { lock(&self.ips).assign(&uid, &key_of(pod), pin) };
        match assigned {
            Err(e) => {
                lock(&self.waiting_for_ip).insert(uid);
                let message = format!("Failed to create pod sandbox: {e}");
                if st.sandbox_error.as_deref() != Some(message.as_str()) {
                    self.recorder.pod(pod, None, WARNING, "FailedCreatePodSandBox", message.clone());
                    st.sandbox_error = Some(message);
                }
                self.write_status(st, pod, &runtime, None, false, false).await
            }
            Ok(ip) => {
                lock(&self.waiting_for_ip).remove(&uid);
                st.sandbox_error = None;
                let sandbox = Sandbox { pod_ip: ip, host_ip: self.host_ip, node_name: self.node.clone() };
                runtime.sync_pod(pod, &sandbox).await;
                self.write_status(st, pod, &runtime, Some(ip), true, false).await
            }
        }
    }

    /// `SyncTerminatingPod` then the status manager's final delete: stop the containers within
    /// the grace period, report them terminated, delete the pod for good (grace 0, UID precondition).
    async fn terminate(&self, st: &mut PodState, pod: &Pod, runtime: &Arc<dyn PodRuntime>) -> Result<(), kube::Error> {
        let uid = uid_of(pod).to_string();
        if !st.killed {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0);
            runtime.kill_pod(pod, Duration::from_secs(grace.unsigned_abs())).await;
            st.killed = true;
        }
        if runtime.pod_status(&uid).is_some() {
            let ip = lock(&self.ips).get(&uid);
            self.write_status(st, pod, runtime, ip, false, true).await?;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
            Ok(_) => {}
            // Gone already, or another pod of the same name now.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
        st.finished = true;
        self.release(&uid);
        Ok(())
    }

    /// The pod vanished from the API: stop anything still running and forget it.
    async fn cleanup(&self, uid: &str, st: &mut PodState) {
        if let (Some(runtime), Some(pod)) = (st.runtime.clone(), st.last.clone()) {
            if !st.killed {
                runtime.kill_pod(&pod, Duration::ZERO).await;
            }
            runtime.forget_pod(uid);
        }
        lock(&self.waiting_for_ip).remove(uid);
        self.release(uid);
    }

    /// Frees a pod's IP and wakes the pods waiting for one.
    fn release(&self, uid: &str) {
        if lock(&self.ips).release(uid).is_none() {
            return;
        }
        let waiting: Vec<String> = lock(&self.waiting_for_ip).iter().cloned().collect();
        for w in waiting {
            self.poke(&w);
        }
    }

    /// Writes the status generated from what the runtime reports, if it differs from the
    /// stored one; re-reads and regenerates when another writer got there first.
    async fn write_status(
        &self,
        st: &mut PodState,
        pod: &Pod,
        runtime: &Arc<dyn PodRuntime>,
        pod_ip: Option<IpAddr>,
        sandbox_ready: bool,
        terminal: bool,
    ) -> Result<(), kube::Error> {
        let uid = uid_of(pod).to_string();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let mut current = pod.clone();
        for _ in 0..WRITE_TRIES {
            let reported = runtime.pod_status(&uid);
            let observed = Observed {
                pod: &current,
                host_ip: self.host_ip,
                pod_ip,
                sandbox_ready,
                runtime: reported.as_ref(),
                terminal,
            };
            let mut next = status::generate(&observed, &status::now());
            let computed = readiness(&next);
            keep_foreign_readiness(st.own_readiness.as_ref(), &current, &mut next);
            if current.status.as_ref() == Some(&next) {
                st.own_readiness = Some(computed);
                return Ok(());
            }
            let mut body = current.clone();
            body.status = Some(next);
            match api.replace_status(&name, &PostParams::default(), &body).await {
                Ok(_) => {
                    st.own_readiness = Some(computed);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await? {
                    Some(fresh) if uid_of(&fresh) == uid => current = fresh,
                    _ => return Ok(()),
                },
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(kube::Error::Service("pod status: too many concurrent writers".into()))
    }
}

/// The statuses of `Ready` and `ContainersReady` in a status.
fn readiness(status: &PodStatus) -> [String; 2] {
    ["Ready", "ContainersReady"].map(|t| {
        status.conditions.iter().flatten().find(|c| c.type_ == t).map(|c| c.status.clone()).unwrap_or_default()
    })
}

/// Keeps a `Ready`/`ContainersReady` condition someone else wrote through `/status` while the
/// agent's own view has not changed since it last wrote; the agent's next transition wins.
/// After a restart (nothing remembered) a running pod's stored readiness is adopted.
fn keep_foreign_readiness(own: Option<&[String; 2]>, current: &Pod, next: &mut PodStatus) {
    let stored = current.status.as_ref();
    let computed = readiness(next);
    let adopt = own.is_none() && stored.and_then(|s| s.phase.as_deref()) == Some("Running");
    for (i, t) in ["Ready", "ContainersReady"].into_iter().enumerate() {
        let Some(theirs) = stored.and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == t))
        else {
            continue;
        };
        let unchanged = own.is_some_and(|o| o[i] == computed[i]) || adopt;
        if unchanged
            && theirs.status != computed[i]
            && let Some(slot) = next.conditions.iter_mut().flatten().find(|c| c.type_ == t)
        {
            *slot = theirs.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;

    fn status(phase: &str, ready: &str) -> PodStatus {
        let c = |t: &str| PodCondition { type_: t.into(), status: ready.into(), ..Default::default() };
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![c("Ready"), c("ContainersReady")]),
            ..Default::default()
        }
    }

    #[test]
    fn a_foreign_ready_stays_until_the_agent_changes_its_mind() {
        let own = ["True".to_string(), "True".to_string()];
        let pod = Pod { status: Some(status("Running", "False")), ..Default::default() };
        // The agent still computes True, as it last wrote: the test's False stays.
        let mut next = status("Running", "True");
        keep_foreign_readiness(Some(&own), &pod, &mut next);
        assert_eq!(readiness(&next), ["False", "False"]);
        // The agent's own view moved (True → False → True): its value is written.
        let own_false = ["False".to_string(), "False".to_string()];
        let mut next = status("Running", "True");
        keep_foreign_readiness(Some(&own_false), &pod, &mut next);
        assert_eq!(readiness(&next), ["True", "True"]);
        // First sight of a running pod after a restart: adopted.
        let mut next = status("Running", "True");
        keep_foreign_readiness(None, &pod, &mut next);
        assert_eq!(readiness(&next), ["False", "False"]);
        // A pending pod becoming ready: the agent writes.
        let pending = Pod { status: Some(status("Pending", "False")), ..Default::default() };
        let mut next = status("Running", "True");
        keep_foreign_readiness(None, &pending, &mut next);
        assert_eq!(readiness(&next), ["True", "True"]);
    }
}
