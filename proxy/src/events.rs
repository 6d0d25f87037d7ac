//! Warning Events the proxy records on Services (`record.EventRecorder` in kube-proxy): a port
//! it cannot open, an address two Services want. Best effort and non-blocking: recording never
//! holds up the data path or the sync loop.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Records Events as this node's proxy.
#[derive(Clone)]
pub(crate) struct Events {
    recorder: Recorder,
    node: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("node", &self.node).finish()
    }
}

impl Events {
    pub(crate) fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter { controller: "kube-proxy".into(), instance: Some(node.to_string()) };
        Self { recorder: Recorder::new(client, reporter), node: node.to_string() }
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// A Warning on Service `namespace/name` (also logged).
    pub(crate) fn warn(&self, namespace: &str, name: &str, reason: &str, note: String) {
        tracing::warn!(service = %format!("{namespace}/{name}"), reason, "{note}");
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Proxy".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "recording an event");
            }
        });
    }
}
