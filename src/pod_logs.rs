//! `pods/{name}/log` served from the node agent's log store: the kubelet's side of
//! `kubectl logs` (`GetKubeletContainerLogs`), plugged into the API server as its [`PodLogs`].

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kplane_apiserver::http::logs::{LogBody, PodLogOptions, PodLogs, PodLogsError};
use kplane_controllers::node::logs::{LogError, LogStore, ReadOptions, log_container_id};
use serde_json::Value;

/// The one node's container logs.
pub struct NodeLogs {
    store: LogStore,
    node: String,
}

impl NodeLogs {
    pub fn new(store: LogStore, node: String) -> Self {
        NodeLogs { store, node }
    }
}

impl PodLogs for NodeLogs {
    fn logs(&self, pod: Value, opts: PodLogOptions) -> BoxFuture<'static, Result<LogBody, PodLogsError>> {
        let store = self.store.clone();
        let node = self.node.clone();
        async move {
            let pod: Pod = serde_json::from_value(pod).map_err(|e| PodLogsError::Internal(e.to_string()))?;
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if bound != node {
                // No kubelet here for that node (a test's stand-in Node, say).
                return Err(PodLogsError::Internal(format!(
                    "Get \"https://{bound}:10250/containerLogs/{}/{}/{}\": no kubelet serves node {bound:?}",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or(""),
                    opts.container
                )));
            }
            let id = log_container_id(&pod, &opts.container, opts.previous).map_err(PodLogsError::BadRequest)?;
            let read = ReadOptions {
                follow: opts.follow,
                timestamps: opts.timestamps,
                tail_lines: opts.tail_lines,
                since: opts.since,
                limit_bytes: opts.limit_bytes,
            };
            match store.read(&id, read).await {
                Ok(stream) => Ok(stream),
                // A simulated container prints nothing.
                Err(LogError::NotFound(_)) => Ok(Box::pin(futures::stream::empty()) as LogBody),
                Err(e) => Err(PodLogsError::Internal(e.to_string())),
            }
        }
        .boxed()
    }
}
