//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded to Kubernetes JSON.
//!
//! kubectl 1.32+ and client-go send built-in kinds as `k8s\0` + `runtime.Unknown{typeMeta, raw, contentEncoding,
//! contentType}`, with `raw` the object's protobuf bytes. [`decode_object`] turns such a body into the JSON of the
//! same object (camelCase names, embedded Go structs inlined, `IntOrString` as number or string, `Quantity` and
//! `Time` as strings, `[]byte` as base64, maps as objects), so the rest of the server only ever sees JSON.
//!
//! There is no per-kind code. The schema is a table `build.rs` generates at build time from two crates.io packages:
//! `k8s-pb` (prost structs: tags, wire types, message types) and `k8s-openapi` (JSON names, required fields); see
//! `schema.rs`. `wire.rs` reads the protobuf wire format and `json.rs` walks a message into JSON, with the special
//! apimachinery types and the zero-value rule documented there.
//!
//! Differences from Go's JSON, all harmless for a JSON server: `null` is never written (absent fields, nil
//! slices/maps and zero `Time`s are left out), zero numbers and `false` of Go value fields are kept where Go's
//! `omitempty` drops them (`metadata.generation: 0`, `hostNetwork: false`), and `Quantity` strings are passed
//! through as sent (Go re-canonicalises them, e.g. `1000m` -> `1`).

mod json;
mod schema;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use schema::Ty;
use wire::Slots;

/// Media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\x00";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the Kubernetes magic prefix k8s\\0")]
    MissingMagic,
    /// The `runtime.Unknown` envelope is not valid protobuf.
    #[error("invalid protobuf envelope: {0}")]
    InvalidEnvelope(String),
    /// The envelope carries no `apiVersion` or no `kind`.
    #[error("protobuf envelope has no apiVersion/kind")]
    MissingTypeMeta,
    /// The envelope's `contentEncoding` is set (Kubernetes defines none).
    #[error("unsupported protobuf envelope contentEncoding {0:?}")]
    UnsupportedContentEncoding(String),
    /// The envelope's `contentType` is not protobuf.
    #[error("unsupported protobuf envelope contentType {0:?}")]
    UnsupportedContentType(String),
    /// No built-in protobuf type for this apiVersion/kind (custom resources have none).
    #[error("no protobuf type known for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    /// The object bytes are not a valid protobuf encoding of the kind, or hold a value JSON cannot carry.
    #[error("invalid protobuf for {kind}: {message}")]
    InvalidObject { kind: String, message: String },
}

/// Decodes a whole Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) to the object's Kubernetes JSON, with
/// `apiVersion` and `kind` set from the envelope.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_envelope(body, 0, 0)
}

/// [`decode_object`] of an envelope nested `envelopes` deep in `RawExtension`s, `depth` messages deep.
fn decode_envelope(body: &[u8], envelopes: usize, depth: usize) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::MissingMagic)?;
    let unknown = Slots::read(schema::message(schema::UNKNOWN), rest).map_err(ProtobufError::InvalidEnvelope)?;
    let type_meta = match unknown.message.position("typeMeta").map(|i| unknown.message.fields[i].ty) {
        Some(Ty::Message(i)) => schema::message(i),
        _ => return Err(ProtobufError::InvalidEnvelope("schema: runtime.Unknown has no typeMeta".into())),
    };
    let type_meta = Slots::read(type_meta, unknown.bytes("typeMeta").unwrap_or_default())
        .map_err(ProtobufError::InvalidEnvelope)?;
    let api_version = type_meta.string("apiVersion").map_err(ProtobufError::InvalidEnvelope)?;
    let kind = type_meta.string("kind").map_err(ProtobufError::InvalidEnvelope)?;
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    match unknown.string("contentEncoding").map_err(ProtobufError::InvalidEnvelope)? {
        "" => {}
        encoding => return Err(ProtobufError::UnsupportedContentEncoding(encoding.to_string())),
    }
    match unknown.string("contentType").map_err(ProtobufError::InvalidEnvelope)? {
        "" | CONTENT_TYPE => {}
        other => return Err(ProtobufError::UnsupportedContentType(other.to_string())),
    }
    let message = schema::kind(api_version, kind)
        .ok_or_else(|| ProtobufError::UnknownKind { api_version: api_version.to_string(), kind: kind.to_string() })?;
    let invalid = |message: String| ProtobufError::InvalidObject { kind: kind.to_string(), message };
    let raw = unknown.bytes("raw").unwrap_or_default();
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.to_string()));
    out.insert("kind".into(), Value::String(kind.to_string()));
    let walker = json::Walker { envelopes };
    match walker.message(message, raw, depth).map_err(|e| invalid(e.to_string()))? {
        Some(Value::Object(fields)) => out.extend(fields),
        Some(_) => return Err(invalid("not an object".into())),
        None => {}
    }
    Ok(Value::Object(out))
}
