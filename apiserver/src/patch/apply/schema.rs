//! The structure server-side apply merges by (upstream reads it from the OpenAPI extensions
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`, themselves
//! from the `+listType`/`+listMapKey`/`+mapType`/`+structType` markers of `k8s.io/api`). These
//! tables restate the markers of the kinds kplane serves. Anything not named: maps merge field by
//! field, lists are atomic (replaced whole), as an unmarked list is upstream.

/// How one field's value merges.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A map merged field by field, with these fields' shapes (others take the default).
    Struct(&'static Node),
    /// A map owned and replaced as a whole (`+mapType=atomic`, `+structType=atomic`).
    AtomicMap,
    /// `+listType=map`: items are maps identified by these key fields (with a default for a key
    /// an item may omit), merged item by item.
    ListMap(&'static [Key], &'static Node),
    /// `+listType=set`: scalars merged as a set.
    ListSet,
    /// A list replaced whole (`+listType=atomic`, the default).
    AtomicList,
}

/// One key field of a `+listType=map` list, and its default when an item omits it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// The fields of a struct whose shape is not the default.
#[derive(Debug)]
pub struct Node {
    pub fields: &'static [(&'static str, Shape)],
}

/// A struct with no special fields.
pub static ANY: Node = Node { fields: &[] };

impl Node {
    /// The shape of field `name`, whose value is `value` (the default depends on what it is).
    pub fn field(&self, name: &str, value: &serde_json::Value) -> Shape {
        if let Some((_, s)) = self.fields.iter().find(|(n, _)| *n == name) {
            return *s;
        }
        match value {
            serde_json::Value::Array(_) => Shape::AtomicList,
            _ => Shape::Struct(&ANY),
        }
    }
}

const fn key(name: &'static str) -> Key {
    Key { name, default: None }
}

const PROTOCOL_TCP: Key = Key { name: "protocol", default: Some("TCP") };

static BY_NAME: &[Key] = &[key("name")];
static BY_TYPE: &[Key] = &[key("type")];
static BY_IP: &[Key] = &[key("ip")];

static OBJECT_META: Node =
    Node { fields: &[("finalizers", Shape::ListSet), ("ownerReferences", Shape::ListMap(&[key("uid")], &ANY))] };

static CONTAINER: Node = Node {
    fields: &[
        ("ports", Shape::ListMap(&[key("containerPort"), PROTOCOL_TCP], &ANY)),
        ("env", Shape::ListMap(BY_NAME, &ANY)),
        ("volumeMounts", Shape::ListMap(&[key("mountPath")], &ANY)),
        ("volumeDevices", Shape::ListMap(&[key("devicePath")], &ANY)),
        ("resizePolicy", Shape::ListMap(&[key("resourceName")], &ANY)),
    ],
};

static POD_SPEC: Node = Node {
    fields: &[
        ("containers", Shape::ListMap(BY_NAME, &CONTAINER)),
        ("initContainers", Shape::ListMap(BY_NAME, &CONTAINER)),
        ("ephemeralContainers", Shape::ListMap(BY_NAME, &CONTAINER)),
        ("volumes", Shape::ListMap(BY_NAME, &ANY)),
        ("imagePullSecrets", Shape::ListMap(BY_NAME, &ANY)),
        ("hostAliases", Shape::ListMap(BY_IP, &ANY)),
        ("topologySpreadConstraints", Shape::ListMap(&[key("topologyKey"), key("whenUnsatisfiable")], &ANY)),
        ("resourceClaims", Shape::ListMap(BY_NAME, &ANY)),
        ("schedulingGates", Shape::ListMap(BY_NAME, &ANY)),
        ("nodeSelector", Shape::AtomicMap),
    ],
};

static POD_STATUS: Node = Node {
    fields: &[
        ("conditions", Shape::ListMap(BY_TYPE, &ANY)),
        ("podIPs", Shape::ListMap(BY_IP, &ANY)),
        ("hostIPs", Shape::ListMap(BY_IP, &ANY)),
        ("resourceClaimStatuses", Shape::ListMap(BY_NAME, &ANY)),
    ],
};

static POD: Node = Node {
    fields: &[
        ("metadata", Shape::Struct(&OBJECT_META)),
        ("spec", Shape::Struct(&POD_SPEC)),
        ("status", Shape::Struct(&POD_STATUS)),
    ],
};

static POD_TEMPLATE: Node =
    Node { fields: &[("metadata", Shape::Struct(&OBJECT_META)), ("spec", Shape::Struct(&POD_SPEC))] };

static WORKLOAD_SPEC: Node =
    Node { fields: &[("selector", Shape::AtomicMap), ("template", Shape::Struct(&POD_TEMPLATE))] };

static CONDITIONS: Node = Node { fields: &[("conditions", Shape::ListMap(BY_TYPE, &ANY))] };

static WORKLOAD: Node = Node {
    fields: &[
        ("metadata", Shape::Struct(&OBJECT_META)),
        ("spec", Shape::Struct(&WORKLOAD_SPEC)),
        ("status", Shape::Struct(&CONDITIONS)),
    ],
};

static SERVICE_SPEC: Node =
    Node { fields: &[("ports", Shape::ListMap(&[key("port"), PROTOCOL_TCP], &ANY)), ("selector", Shape::AtomicMap)] };

static SERVICE: Node = Node {
    fields: &[
        ("metadata", Shape::Struct(&OBJECT_META)),
        ("spec", Shape::Struct(&SERVICE_SPEC)),
        ("status", Shape::Struct(&CONDITIONS)),
    ],
};

static NODE_SPEC: Node = Node { fields: &[("podCIDRs", Shape::ListSet)] };

static NODE_STATUS: Node =
    Node { fields: &[("conditions", Shape::ListMap(BY_TYPE, &ANY)), ("addresses", Shape::ListMap(BY_TYPE, &ANY))] };

static NODE: Node = Node {
    fields: &[
        ("metadata", Shape::Struct(&OBJECT_META)),
        ("spec", Shape::Struct(&NODE_SPEC)),
        ("status", Shape::Struct(&NODE_STATUS)),
    ],
};

static NAMESPACE: Node =
    Node { fields: &[("metadata", Shape::Struct(&OBJECT_META)), ("status", Shape::Struct(&CONDITIONS))] };

static SERVICE_ACCOUNT: Node =
    Node { fields: &[("metadata", Shape::Struct(&OBJECT_META)), ("secrets", Shape::ListMap(BY_NAME, &ANY))] };

/// Any other kind: only its metadata is special.
static PLAIN: Node = Node { fields: &[("metadata", Shape::Struct(&OBJECT_META))] };

/// The structure of a kind's objects.
pub fn of_kind(kind: &str) -> &'static Node {
    match kind {
        "Pod" => &POD,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => &WORKLOAD,
        "Service" => &SERVICE,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        _ => &PLAIN,
    }
}
