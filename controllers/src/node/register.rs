//! The node agent's Node and Lease: registration as a kubelet registers (labels, addresses,
//! capacity and allocatable, conditions, nodeInfo), the status kept current, the heartbeat
//! Lease in `kube-node-lease`, and registering again when the Node is deleted
//! (`pkg/kubelet/kubelet_node_status.go` `registerWithAPIServer`/`tryUpdateNodeStatus`,
//! `pkg/kubelet/nodestatus/setters.go`, `pkg/kubelet/nodelease`, `component-helpers/apimachinery/lease`).

use super::host::HostFacts;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Where node Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` of the kubelet's Lease.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The Lease is renewed every quarter of its duration (`renewIntervalFraction`), as is the
/// Node's status checked (`nodeStatusUpdateFrequency`).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// An unchanged Node status is still reported this often (`nodeStatusReportFrequency`).
const REPORT_EVERY: Duration = Duration::from_secs(300);

/// Pods a node runs at most (the kubelet's `--max-pods` default).
pub const MAX_PODS: u32 = 110;
/// Memory kept back from allocatable (the kubelet's hard eviction threshold `memory.available<100Mi`).
const EVICTION_MEMORY_KIB: u64 = 100 * 1024;

/// What the Node says about itself.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub name: String,
    pub ip: IpAddr,
    pub pod_cidr: String,
    pub kubelet_version: String,
    pub host: HostFacts,
}

fn labels(id: &Identity) -> BTreeMap<String, String> {
    let arch = id.host.architecture.clone();
    [
        ("beta.kubernetes.io/arch", arch.clone()),
        ("beta.kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", arch),
        ("kubernetes.io/hostname", id.name.clone()),
        ("kubernetes.io/os", "linux".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.clone()))).collect()
}

fn node_condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The Node's status now; transition times come from `old` where a condition did not change.
pub(super) fn node_status(id: &Identity, old: Option<&NodeStatus>, now: &Time) -> NodeStatus {
    let h = &id.host;
    let capacity = quantities(&[
        ("cpu", h.cpus.to_string()),
        ("ephemeral-storage", format!("{}Ki", h.storage_bytes / 1024)),
        ("hugepages-1Gi", "0".into()),
        ("hugepages-2Mi", "0".into()),
        ("memory", format!("{}Ki", h.memory_kib)),
        ("pods", MAX_PODS.to_string()),
    ]);
    let allocatable = quantities(&[
        ("cpu", h.cpus.to_string()),
        // The kubelet's hard eviction threshold `nodefs.available<10%`.
        ("ephemeral-storage", (h.storage_bytes / 10 * 9).to_string()),
        ("hugepages-1Gi", "0".into()),
        ("hugepages-2Mi", "0".into()),
        ("memory", format!("{}Ki", h.memory_kib.saturating_sub(EVICTION_MEMORY_KIB))),
        ("pods", MAX_PODS.to_string()),
    ]);
    let mut conditions = vec![
        node_condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            now,
        ),
        node_condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
        node_condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now),
        node_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now),
    ];
    for c in &mut conditions {
        if let Some(before) =
            old.and_then(|o| o.conditions.as_ref()).and_then(|cs| cs.iter().find(|b| b.type_ == c.type_))
            && before.status == c.status
        {
            c.last_transition_time = before.last_transition_time.clone();
        }
    }
    NodeStatus {
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: id.ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: id.name.clone() },
        ]),
        allocatable: Some(allocatable),
        capacity: Some(capacity),
        conditions: Some(conditions),
        // No kubelet API listens: logs and exec go through kplane's API server.
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: 0 }) }),
        node_info: Some(NodeSystemInfo {
            architecture: h.architecture.clone(),
            boot_id: h.boot_id.clone(),
            container_runtime_version: format!("kplane://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: h.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: id.kubelet_version.clone(),
            machine_id: h.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: h.os_image.clone(),
            system_uuid: h.system_uuid.clone(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// The Node as first registered.
pub(super) fn initial_node(id: &Identity) -> Node {
    let now = super::status::now();
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels(id)),
            annotations: Some(
                [("volumes.kubernetes.io/controller-managed-attach-detach".to_string(), "true".to_string())].into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.pod_cidr.clone()),
            pod_cidrs: Some(vec![id.pod_cidr.clone()]),
            ..Default::default()
        }),
        status: Some(node_status(id, None, &now)),
    }
}

/// Whether two statuses differ in more than their heartbeat times.
fn differs(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) != strip(b)
}

/// Keeps the Node registered and its status and Lease current.
pub(super) struct Registration {
    client: kube::Client,
    id: Identity,
    last_report: Option<Instant>,
}

impl Registration {
    pub(super) fn new(client: kube::Client, id: Identity) -> Self {
        Self { client, id, last_report: None }
    }

    pub(super) fn identity(&self) -> &Identity {
        &self.id
    }

    /// Registers the Node, or takes over an existing one of the same name (`tryRegisterWithAPIServer`:
    /// its default labels are restored), and reports its status. Returns the Node.
    pub(super) async fn register(&mut self) -> Result<Node, kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = match api.create(&PostParams::default(), &initial_node(&self.id)).await {
            Ok(node) => node,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let mut existing = api.get(&self.id.name).await?;
                let want = labels(&self.id);
                let have = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
                if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
                    have.extend(want);
                    existing = api.replace(&self.id.name, &PostParams::default(), &existing).await?;
                }
                existing
            }
            Err(e) => return Err(e),
        };
        self.last_report = None;
        self.update_status(node).await
    }

    /// `tryUpdateNodeStatus`: writes the status when it changed or a report is due.
    async fn update_status(&mut self, node: Node) -> Result<Node, kube::Error> {
        let now = super::status::now();
        let status = node_status(&self.id, node.status.as_ref(), &now);
        let due = self.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if !due && node.status.as_ref().is_some_and(|old| !differs(old, &status)) {
            return Ok(node);
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let mut body = node;
        body.status = Some(status);
        let node = api.replace_status(&self.id.name, &PostParams::default(), &body).await?;
        self.last_report = Some(Instant::now());
        Ok(node)
    }

    /// One heartbeat: the Node's status (registering again if it is gone), then the Lease.
    pub(super) async fn heartbeat(&mut self) -> Result<Node, kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = match api.get_opt(&self.id.name).await? {
            Some(node) => match self.update_status(node).await {
                Ok(node) => node,
                Err(kube::Error::Api(s)) if s.code == 404 => self.register().await?,
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(&self.id.name).await?,
                Err(e) => return Err(e),
            },
            None => {
                tracing::info!(node = %self.id.name, "the Node was deleted; registering it again");
                self.register().await?
            }
        };
        self.renew_lease(&node).await?;
        Ok(node)
    }

    /// Creates or renews the Lease (`backoffEnsureLease`/`retryUpdateLease`), owned by the Node.
    pub(super) async fn renew_lease(&self, node: &Node) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.id.name.clone(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        let renew = MicroTime(Timestamp::now());
        let spec = |old: Option<LeaseSpec>| LeaseSpec {
            holder_identity: Some(self.id.name.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(renew.clone()),
            ..old.unwrap_or_default()
        };
        for _ in 0..3 {
            match api.get_opt(&self.id.name).await? {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.id.name.clone()),
                            namespace: Some(LEASE_NAMESPACE.into()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        spec: Some(spec(None)),
                    };
                    match api.create(&PostParams::default(), &lease).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(mut lease) => {
                    lease.spec = Some(spec(lease.spec.take()));
                    lease.metadata.owner_references = Some(vec![owner.clone()]);
                    match api.replace(&self.id.name, &PostParams::default(), &lease).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(kube::Error::Service("node lease: too many concurrent writers".into()))
    }

    /// Heartbeats every [`HEARTBEAT`], and at once when the Node is deleted, until the client's
    /// server goes away.
    pub(super) async fn run(mut self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.id.name));
        let mut deletions = watcher::watcher(api, config)
            .default_backoff()
            .filter(|e| std::future::ready(matches!(e, Ok(watcher::Event::Delete(_)))))
            .boxed();
        let mut ticker = tokio::time::interval(HEARTBEAT);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; registration just happened
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                deleted = deletions.next() => if deleted.is_none() { return },
            }
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(node = %self.id.name, error = %e, "node heartbeat");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            name: "box".into(),
            ip: "127.0.0.1".parse().expect("ip"),
            pod_cidr: "127.244.0.0/16".into(),
            kubelet_version: "v1.33.1+kplane.0.1.0".into(),
            host: HostFacts {
                cpus: 4,
                memory_kib: 1_048_576,
                storage_bytes: 10 * 1024 * 1024 * 1024,
                kernel_version: "6.8.0".into(),
                os_image: "Ubuntu".into(),
                machine_id: "m".into(),
                system_uuid: "u".into(),
                boot_id: "b".into(),
                architecture: "amd64".into(),
            },
        }
    }

    #[test]
    fn registers_as_a_kubelet() {
        let node = initial_node(&identity());
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("box"));
        assert_eq!(labels.get("kubernetes.io/arch").map(String::as_str), Some("amd64"));
        let status = node.status.unwrap_or_default();
        let cap = status.capacity.unwrap_or_default();
        assert_eq!(cap.get("memory"), Some(&Quantity("1048576Ki".into())));
        assert_eq!(cap.get("pods"), Some(&Quantity("110".into())));
        let alloc = status.allocatable.unwrap_or_default();
        assert_eq!(alloc.get("memory"), Some(&Quantity("946176Ki".into())));
        let types: Vec<String> = status.conditions.unwrap_or_default().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]);
    }

    #[test]
    fn heartbeat_times_alone_are_no_change() {
        let id = identity();
        let t1 = Time(Timestamp::from_second(1_000).expect("time"));
        let t2 = Time(Timestamp::from_second(2_000).expect("time"));
        let a = node_status(&id, None, &t1);
        let b = node_status(&id, Some(&a), &t2);
        assert!(!differs(&a, &b));
        let ready = |s: &NodeStatus| s.conditions.clone().unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready(&b).and_then(|c| c.last_transition_time), Some(t1));
        assert_eq!(ready(&b).and_then(|c| c.last_heartbeat_time), Some(t2));
    }
}
