//! Events the node agent records about pods and its Node, as core/v1 Events the way client-go's
//! `record.EventRecorder` writes them for the kubelet and the scheduler
//! (`staging/src/k8s.io/client-go/tools/record/event.go`): `<object>.<hex nanos>` names,
//! `source.component`/`host`, counts of one. Recording never blocks the caller.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// `Normal` events.
pub const NORMAL: &str = "Normal";
/// `Warning` events.
pub const WARNING: &str = "Warning";

/// Writes Events as one component (`kubelet`, `default-scheduler`) of one node.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    host: Option<String>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("component", &self.component).field("host", &self.host).finish()
    }
}

impl Recorder {
    /// Events from `component`, on `host` when it runs on a node (the kubelet does).
    pub fn new(client: kube::Client, component: &'static str, host: Option<String>) -> Self {
        Self { client, component, host }
    }

    /// An event about a pod; `container` (e.g. `spec.containers{web}`) narrows it to a container.
    pub fn pod(&self, pod: &Pod, container: Option<String>, type_: &str, reason: &str, message: impl Into<String>) {
        let m = &pod.metadata;
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: container,
        };
        self.record(object, type_, reason, message.into());
    }

    /// An event about the Node (cluster-scoped; kept in `default` as upstream does).
    pub fn node(&self, name: &str, uid: Option<String>, type_: &str, reason: &str, message: impl Into<String>) {
        let object = ObjectReference {
            kind: Some("Node".into()),
            name: Some(name.into()),
            // The kubelet refers to its Node by name as UID.
            uid: uid.or_else(|| Some(name.into())),
            ..Default::default()
        };
        self.record(object, type_, reason, message.into());
    }

    fn record(&self, object: ObjectReference, type_: &str, reason: &str, message: String) {
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = super::status::now();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", object.name.as_deref().unwrap_or("object"))),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource { component: Some(self.component.into()), host: self.host.clone() }),
            first_timestamp: Some(Time(now.0)),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.host.clone().unwrap_or_default()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "recording an event");
            }
        });
    }
}
