//! The protobuf schema of the built-in Kubernetes types: a table `build.rs` generates from the `k8s-pb` crate (tags,
//! wire types, message types) and the `k8s-openapi` crate (JSON names, required fields), and lookups in it.

/// Type of a field (of a map's value, for maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    Bytes,
    /// Index into [`MESSAGES`].
    Message(u16),
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Label {
    Optional,
    Repeated,
    /// `map<string, V>` (always string keys in Kubernetes), with `V`; the field's own [`Ty`] is the key's.
    Map(Ty),
}

/// Messages whose JSON form is not their protobuf structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    None,
    /// `metav1.Time`: RFC 3339 seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 microseconds, `null` when zero.
    MicroTime,
    /// `metav1.Duration`: Go's `time.Duration` string.
    Duration,
    /// `RawExtension`, `FieldsV1`, apiextensions `JSON`: embedded JSON (or a nested `k8s\0` protobuf object).
    RawJson,
    /// `ExtraValue`, `Verbs`: a list of strings.
    Items,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `resource.Quantity`: its string.
    Quantity,
    /// apiextensions `JSONSchemaPropsOrArray`: a schema or a list of them.
    SchemaOrArray,
    /// apiextensions `JSONSchemaPropsOrBool`: a schema or a boolean.
    SchemaOrBool,
    /// apiextensions `JSONSchemaPropsOrStringArray`: a schema or a list of strings.
    SchemaOrStringArray,
}

#[derive(Debug)]
pub(super) struct Field {
    pub tag: u32,
    /// JSON name (for inline fields and special messages, prost's name in lowerCamelCase).
    pub json: &'static str,
    pub ty: Ty,
    pub label: Label,
    /// Required in the OpenAPI schema (a Go field without `omitempty`): an empty string is kept.
    pub required: bool,
    /// An embedded Go struct (`Volume.volumeSource`): its fields belong to the parent's JSON object.
    pub inline: bool,
}

#[derive(Debug)]
pub(super) struct Message {
    /// Upstream type name (`AWSElasticBlockStoreVolumeSource`), for errors.
    pub name: &'static str,
    pub special: Special,
    /// Sorted by tag.
    pub fields: &'static [Field],
}

// Short names for the generated table.
const B: Ty = Ty::Bool;
const I32: Ty = Ty::Int32;
const I64: Ty = Ty::Int64;
const D: Ty = Ty::Double;
const S: Ty = Ty::String;
const BY: Ty = Ty::Bytes;
const O: Label = Label::Optional;
const R: Label = Label::Repeated;
use Ty::Message as M;

/// A table row; `flags`: 1 = required, 2 = inline.
const fn f(tag: u32, json: &'static str, ty: Ty, label: Label, flags: u8) -> Field {
    Field { tag, json, ty, label, required: flags & 1 != 0, inline: flags & 2 != 0 }
}

// MESSAGES, KINDS, UNKNOWN
include!(concat!(env!("OUT_DIR"), "/protobuf_schema.rs"));

/// A message by its index (indices in the table are checked by the tests).
pub(super) fn message(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

impl Message {
    /// The field with this tag and its position, if the schema knows it.
    pub(super) fn field(&self, tag: u32) -> Option<(usize, &'static Field)> {
        let fields: &'static [Field] = self.fields;
        fields.binary_search_by_key(&tag, |f| f.tag).ok().map(|i| (i, &fields[i]))
    }

    /// Position of the field with this JSON name.
    pub(super) fn position(&self, json: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.json == json)
    }
}

/// The message of a built-in kind. Every message of a group-version is accepted as a kind (as upstream's protobuf
/// serializer does for registered types), and the `meta.k8s.io/v1` kinds (`DeleteOptions`, `Status`, ...) under
/// every known group-version, where Kubernetes registers them too.
pub(super) fn kind(api_version: &str, kind: &str) -> Option<&'static Message> {
    let find = |api_version: &str| {
        KINDS.binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind))).ok().map(|i| message(KINDS[i].2))
    };
    find(api_version).or_else(|| {
        let first = KINDS.partition_point(|(v, _, _)| *v < api_version);
        KINDS.get(first).filter(|(v, _, _)| *v == api_version).and_then(|_| find("meta.k8s.io/v1"))
    })
}
