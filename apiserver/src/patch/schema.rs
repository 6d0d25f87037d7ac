//! Patch metadata of the built-in kinds: which lists merge by which key in a strategic merge
//! patch. Upstream reads it from the Go struct tags (`patchStrategy`, `patchMergeKey`) of
//! `k8s.io/api`; these tables restate those tags for the fields of the kinds kplane serves.
//! A list not named here is replaced whole, as an untagged list is upstream.

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Elements are maps matched by this key (`patchStrategy:"merge" patchMergeKey:"…"`).
    Key(&'static str),
    /// A list of scalars merged as a set (`patchStrategy:"merge"` without a key).
    Primitive,
}

/// One field of a [`Type`]: how it merges when it is a list, and the type of its value (for a
/// list, of its elements).
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub list: Option<ListMerge>,
    pub ty: Option<&'static Type>,
}

/// The fields of a struct that carry patch metadata, directly or below them.
#[derive(Debug)]
pub struct Type {
    pub fields: &'static [Field],
}

impl Type {
    pub fn field(&'static self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn obj(name: &'static str, ty: &'static Type) -> Field {
    Field { name, list: None, ty: Some(ty) }
}

const fn keyed(name: &'static str, key: &'static str, ty: Option<&'static Type>) -> Field {
    Field { name, list: Some(ListMerge::Key(key)), ty }
}

const fn set(name: &'static str) -> Field {
    Field { name, list: Some(ListMerge::Primitive), ty: None }
}

static OBJECT_META: Type = Type { fields: &[set("finalizers"), keyed("ownerReferences", "uid", None)] };

static CONTAINER: Type = Type {
    fields: &[
        keyed("ports", "containerPort", None),
        keyed("env", "name", None),
        keyed("volumeMounts", "mountPath", None),
        keyed("volumeDevices", "devicePath", None),
    ],
};

static POD_SPEC: Type = Type {
    fields: &[
        keyed("containers", "name", Some(&CONTAINER)),
        keyed("initContainers", "name", Some(&CONTAINER)),
        keyed("ephemeralContainers", "name", Some(&CONTAINER)),
        keyed("volumes", "name", None),
        keyed("imagePullSecrets", "name", None),
        keyed("hostAliases", "ip", None),
        keyed("topologySpreadConstraints", "topologyKey", None),
        keyed("resourceClaims", "name", None),
        keyed("schedulingGates", "name", None),
    ],
};

static POD_STATUS: Type = Type {
    fields: &[
        keyed("conditions", "type", None),
        keyed("podIPs", "ip", None),
        keyed("hostIPs", "ip", None),
        keyed("resourceClaimStatuses", "name", None),
    ],
};

static POD: Type =
    Type { fields: &[obj("metadata", &OBJECT_META), obj("spec", &POD_SPEC), obj("status", &POD_STATUS)] };

static POD_TEMPLATE_SPEC: Type = Type { fields: &[obj("metadata", &OBJECT_META), obj("spec", &POD_SPEC)] };

static WORKLOAD_SPEC: Type = Type { fields: &[obj("template", &POD_TEMPLATE_SPEC)] };

static CONDITIONS_STATUS: Type = Type { fields: &[keyed("conditions", "type", None)] };

static WORKLOAD: Type =
    Type { fields: &[obj("metadata", &OBJECT_META), obj("spec", &WORKLOAD_SPEC), obj("status", &CONDITIONS_STATUS)] };

static SERVICE_SPEC: Type = Type { fields: &[keyed("ports", "port", None)] };

static SERVICE: Type =
    Type { fields: &[obj("metadata", &OBJECT_META), obj("spec", &SERVICE_SPEC), obj("status", &CONDITIONS_STATUS)] };

static NODE_SPEC: Type = Type { fields: &[set("podCIDRs")] };

static NODE_STATUS: Type = Type { fields: &[keyed("conditions", "type", None), keyed("addresses", "type", None)] };

static NODE: Type =
    Type { fields: &[obj("metadata", &OBJECT_META), obj("spec", &NODE_SPEC), obj("status", &NODE_STATUS)] };

static NAMESPACE: Type = Type { fields: &[obj("metadata", &OBJECT_META), obj("status", &CONDITIONS_STATUS)] };

static SERVICE_ACCOUNT: Type = Type {
    fields: &[obj("metadata", &OBJECT_META), keyed("secrets", "name", None), keyed("imagePullSecrets", "name", None)],
};

/// Any other kind: only its metadata carries patch metadata.
static PLAIN: Type = Type { fields: &[obj("metadata", &OBJECT_META)] };

/// The patch metadata of a kind's objects.
pub fn of_kind(kind: &str) -> &'static Type {
    match kind {
        "Pod" => &POD,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => &WORKLOAD,
        "Service" => &SERVICE,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        _ => &PLAIN,
    }
}
