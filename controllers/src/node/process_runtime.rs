//! The process runtime: pods annotated `kplane.dev/run: process` run each container's
//! `command`+`args` as host processes under a [`PodRun`] supervisor (the agent's
//! [`PodRuntime`] for them, as kuberuntime is the kubelet's over containerd). Container
//! environments read ConfigMaps, Secrets and Services through the cluster client, as the
//! kubelet's managers do.

use super::backoff::BackoffPolicy;
use super::container_env::{EnvError, EnvLookup, NodeFacts};
use super::events::Recorder;
use super::logs::{LogStore, PodKey};
use super::process::{PodEvent, PodRun, RunConfig};
use super::runtime::{PodEvents, PodRuntime, RuntimeContext, RuntimeStatus, Sandbox};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::Api;
use kube::api::ListParams;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The annotation that makes a pod a process pod, and its value.
pub const RUN_ANNOTATION: &str = "kplane.dev/run";
pub const RUN_PROCESS: &str = "process";

/// Whether a pod asks to run as host processes.
pub fn is_process_pod(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(RUN_ANNOTATION)).is_some_and(|v| v == RUN_PROCESS)
}

/// ConfigMaps, Secrets and Services from the API, read when a container starts.
struct KubeLookup {
    client: kube::Client,
}

fn lookup_error(e: kube::Error) -> EnvError {
    EnvError::Lookup(e.to_string())
}

impl EnvLookup for KubeLookup {
    fn service_env(&self, pod: &Pod) -> BoxFuture<'_, Result<BTreeMap<String, String>, EnvError>> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        Box::pin(async move {
            let mut services: Vec<Service> = Vec::new();
            let mut namespaces = vec!["default".to_string()];
            if links && ns != "default" {
                namespaces.push(ns.clone());
            }
            for n in namespaces {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &n);
                services.extend(api.list(&ListParams::default()).await.map_err(lookup_error)?.items);
            }
            Ok(crate::service_env::service_env(&services, &ns, links).into_iter().collect())
        })
    }

    fn config_map<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ConfigMap>, EnvError>> {
        Box::pin(async move { Api::namespaced(self.client.clone(), ns).get_opt(name).await.map_err(lookup_error) })
    }

    fn secret<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Secret>, EnvError>> {
        Box::pin(async move { Api::namespaced(self.client.clone(), ns).get_opt(name).await.map_err(lookup_error) })
    }
}

/// One process pod.
struct Running {
    run: PodRun,
    key: PodKey,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs process pods.
pub struct ProcessRuntime {
    client: kube::Client,
    node_name: String,
    events: PodEvents,
    recorder: Recorder,
    logs: LogStore,
    backoff: BackoffPolicy,
    pods: Mutex<HashMap<String, Running>>,
}

impl ProcessRuntime {
    pub fn new(ctx: &RuntimeContext, logs: LogStore) -> Self {
        ProcessRuntime {
            client: ctx.client.clone(),
            node_name: ctx.node_name.clone(),
            events: ctx.events.clone(),
            recorder: ctx.recorder.clone(),
            logs,
            backoff: BackoffPolicy::default(),
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's allocatable resources: the default of unset limits in `resourceFieldRef`.
    async fn allocatable(&self) -> BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
        let api: Api<Node> = Api::all(self.client.clone());
        match api.get_opt(&self.node_name).await {
            Ok(Some(n)) => n.status.and_then(|s| s.allocatable).unwrap_or_default(),
            _ => BTreeMap::new(),
        }
    }
}

impl PodRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn handles(&self, pod: &Pod) -> bool {
        is_process_pod(pod)
    }

    fn sync_pod<'a>(&'a self, pod: &'a Pod, sandbox: &'a Sandbox) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if self.lock().contains_key(&uid) {
                return;
            }
            let config = RunConfig {
                pod_ips: vec![sandbox.pod_ip.to_string()],
                node: NodeFacts { host_ips: vec![sandbox.host_ip.to_string()], allocatable: self.allocatable().await },
                lookup: Arc::new(KubeLookup { client: self.client.clone() }),
                logs: self.logs.clone(),
                backoff: self.backoff,
                // The kubelet's pod worker retries a failed sync after its back-off period.
                config_retry: Duration::from_secs(10),
            };
            let (tx, mut rx) = mpsc::unbounded_channel::<PodEvent>();
            let run = PodRun::start(pod.clone(), config, tx);
            let mut status = run.status();
            let events = self.events.clone();
            let changed_uid = uid.clone();
            let watch = tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    events.changed(&changed_uid);
                }
            });
            let recorder = self.recorder.clone();
            let about = pod.clone();
            let record = tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    let type_ = if e.warning { "Warning" } else { "Normal" };
                    recorder.pod(&about, e.field_path, type_, &e.reason, e.message);
                }
            });
            let key = PodKey {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: uid.clone(),
            };
            let mut pods = self.lock();
            // Another sync may have started it meanwhile: keep the first.
            pods.entry(uid).or_insert(Running { run, key, tasks: vec![watch, record] });
        })
    }

    fn kill_pod<'a>(&'a self, pod: &'a Pod, grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            // Stop without holding the lock: the supervisor waits for the processes.
            let stopping = self.lock().get(&uid).map(|r| r.run.stopper());
            if let Some(stop) = stopping {
                stop.stop(grace).await;
            }
        })
    }

    fn pod_status(&self, uid: &str) -> Option<RuntimeStatus> {
        let pods = self.lock();
        let status = pods.get(uid)?.run.status();
        let s = status.borrow();
        // The image as containerd reports it, like the simulated runtime's.
        let normal = |list: &Vec<k8s_openapi::api::core::v1::ContainerStatus>| {
            let mut list = list.clone();
            for c in list.iter_mut().filter(|c| !c.image.is_empty()) {
                c.image = super::simulated::normalize_image(&c.image);
            }
            list
        };
        Some(RuntimeStatus {
            init_containers: normal(&s.init_container_statuses),
            containers: normal(&s.container_statuses),
        })
    }

    fn forget_pod(&self, uid: &str) {
        if let Some(r) = self.lock().remove(uid) {
            self.logs.remove_pod(&r.key);
        }
    }

    fn shutdown(&self) {
        self.lock().clear();
    }
}
