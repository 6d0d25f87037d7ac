//! The simulated runtime, the default for every pod: no process runs, but each container is
//! reported as a container runtime (containerd through the kubelet's `kuberuntime_manager.go`)
//! would report it. Init containers complete at once, sidecars and containers run and are
//! ready; an image change restarts the container; on `kill_pod` a container behaves as a
//! well-behaved server: it runs its `preStop` sleep, then exits 0 shortly after SIGTERM.
//!
//! The exit comes [`STOP_AFTER`] after SIGTERM (or at the grace period, if shorter): long
//! enough for watchers (the EndpointSlice controller) to see the pod terminating, short enough
//! that `kubectl delete` returns at once. A `lifecycle.preStop.sleep` lengthens the window as
//! on a real node, bounded by the grace period.

use super::events::{NORMAL, Recorder};
use super::runtime::{PodEvents, PodRuntime, RuntimeContext, RuntimeStatus, Sandbox};
use super::status::now;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long a simulated container takes to exit after SIGTERM.
pub const STOP_AFTER: Duration = Duration::from_millis(500);

/// Runs every pod, in simulation.
pub struct Simulated {
    pods: Mutex<HashMap<String, RuntimeStatus>>,
    events: PodEvents,
    recorder: Recorder,
}

impl Simulated {
    pub fn new(ctx: &RuntimeContext) -> Self {
        Self { pods: Mutex::new(HashMap::new()), events: ctx.events.clone(), recorder: ctx.recorder.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RuntimeStatus>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// containerd's normalised reference: `nginx` → `docker.io/library/nginx:latest`.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_domain, name.contains('/')) {
        (true, _) => name.to_string(),
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

/// `repo@sha256:…`: the image's digest if it names one, else a stable made-up one.
fn image_id(image: &str) -> String {
    let normal = normalize_image(image);
    if normal.contains('@') {
        return normal;
    }
    let repo = match normal.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r.to_string(),
        _ => normal.clone(),
    };
    format!("{repo}@sha256:{}", hex64(&normal))
}

/// 64 hex digits derived from `seed` (FNV-1a, four lanes): an opaque, stable identifier.
fn hex64(seed: &str) -> String {
    (0u64..4)
        .map(|lane| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in seed.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

fn container_id(uid: &str, name: &str, restarts: i32) -> String {
    format!("kplane://{}", hex64(&format!("{uid}/{name}/{restarts}")))
}

fn running_status(uid: &str, c: &Container, restarts: i32, ready: bool) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image: normalize_image(&image),
        image_id: image_id(&image),
        container_id: Some(container_id(uid, &c.name, restarts)),
        ready,
        started: Some(true),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(now()) }),
            ..Default::default()
        }),
        last_state: Some(ContainerState::default()),
        ..Default::default()
    }
}

fn completed(status: &ContainerStatus) -> ContainerState {
    let started = status.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone());
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            started_at: started.or_else(|| Some(now())),
            finished_at: Some(now()),
            container_id: status.container_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status the pod had, for a pod this runtime ran before the agent restarted.
fn adopted(pod: &Pod, name: &str, init: bool) -> Option<ContainerStatus> {
    let status = pod.status.as_ref()?;
    let list = if init { &status.init_container_statuses } else { &status.container_statuses };
    let s = list.as_ref()?.iter().find(|s| s.name == name)?;
    let st = s.state.as_ref()?;
    (st.running.is_some() || (init && st.terminated.is_some())).then(|| s.clone())
}

fn field_path(init: bool, name: &str) -> String {
    format!("spec.{}{{{name}}}", if init { "initContainers" } else { "containers" })
}

impl Simulated {
    /// Starts one container (or adopts it from the pod's status) and records the kubelet's events.
    fn start(&self, pod: &Pod, c: &Container, init: bool, restarts: i32) -> ContainerStatus {
        if restarts == 0
            && let Some(s) = adopted(pod, &c.name, init)
        {
            return s;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let path = Some(field_path(init, &c.name));
        let r = &self.recorder;
        r.pod(pod, path.clone(), NORMAL, "Pulled", format!("Container image {image:?} already present on machine"));
        r.pod(pod, path.clone(), NORMAL, "Created", format!("Created container: {}", c.name));
        r.pod(pod, path, NORMAL, "Started", format!("Started container {}", c.name));
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let mut s = running_status(uid, c, restarts, !init || sidecar);
        if init && !sidecar {
            // A simulated init container finishes as soon as it starts.
            s.state = Some(completed(&s));
            s.started = Some(false);
        }
        s
    }
}

impl PodRuntime for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn handles(&self, _pod: &Pod) -> bool {
        true
    }

    fn sync_pod<'a>(&'a self, pod: &'a Pod, _sandbox: &'a Sandbox) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(spec) = pod.spec.as_ref() else { return };
            let known = self.lock().get(&uid).cloned();
            let mut next = RuntimeStatus::default();
            for (init, specs) in [(true, spec.init_containers.as_deref().unwrap_or(&[])), (false, &spec.containers[..])]
            {
                let before = known.as_ref().map(|k| if init { &k.init_containers } else { &k.containers });
                for c in specs {
                    let old = before.and_then(|b| b.iter().find(|s| s.name == c.name));
                    let status = match old {
                        // The image changed: the kubelet kills the container and starts the new one.
                        Some(old) if !init && old.image != normalize_image(c.image.as_deref().unwrap_or_default()) => {
                            let mut s = self.start(pod, c, init, old.restart_count + 1);
                            s.last_state = Some(completed(old));
                            s
                        }
                        Some(old) => old.clone(),
                        None => self.start(pod, c, init, 0),
                    };
                    if init { next.init_containers.push(status) } else { next.containers.push(status) }
                }
            }
            self.lock().insert(uid, next);
        })
    }

    fn kill_pod<'a>(&'a self, pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(known) = self.lock().get(&uid).cloned() else { return };
            let spec = pod.spec.clone().unwrap_or_default();
            let running: Vec<&ContainerStatus> = known
                .containers
                .iter()
                .chain(&known.init_containers)
                .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
                .collect();
            if running.is_empty() {
                return;
            }
            for s in known.containers.iter().filter(|s| running.iter().any(|r| r.name == s.name)) {
                self.recorder.pod(
                    pod,
                    Some(field_path(false, &s.name)),
                    NORMAL,
                    "Killing",
                    format!("Stopping container {}", s.name),
                );
            }
            // The longest preStop sleep of a running container, then the exit after SIGTERM.
            let pre_stop = spec
                .containers
                .iter()
                .filter(|c| running.iter().any(|r| r.name == c.name))
                .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref().map(|s| s.seconds))
                .max()
                .unwrap_or(0);
            let wait = Duration::from_secs(u64::try_from(pre_stop).unwrap_or(0)) + STOP_AFTER;
            tokio::time::sleep(wait.min(grace)).await;
            let mut pods = self.lock();
            if let Some(k) = pods.get_mut(&uid) {
                for s in k.containers.iter_mut().chain(k.init_containers.iter_mut()) {
                    if s.state.as_ref().is_some_and(|st| st.running.is_some()) {
                        s.state = Some(completed(s));
                        s.ready = false;
                        s.started = Some(false);
                    }
                }
            }
            drop(pods);
            self.events.changed(&uid);
        })
    }

    fn pod_status(&self, uid: &str) -> Option<RuntimeStatus> {
        self.lock().get(uid).cloned()
    }

    fn forget_pod(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_normalised_as_containerd_reports_them() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(normalize_image("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(normalize_image("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(normalize_image("localhost:5000/app"), "localhost:5000/app:latest");
        let id = image_id("nginx");
        assert!(
            id.starts_with("docker.io/library/nginx@sha256:")
                && id.len() == "docker.io/library/nginx@sha256:".len() + 64
        );
        assert_eq!(image_id("nginx"), image_id("nginx"));
        assert_eq!(image_id("x@sha256:abc"), "docker.io/library/x@sha256:abc");
    }

    #[test]
    fn container_ids_are_distinct_per_restart() {
        assert_ne!(container_id("u", "c", 0), container_id("u", "c", 1));
        assert!(container_id("u", "c", 0).starts_with("kplane://"));
    }
}
