//! Patches a PATCH request carries, applied to the current object's JSON
//! (`apiserver/pkg/endpoints/handlers/patch.go`): JSON patch (RFC 6902), merge patch (RFC 7386)
//! and strategic merge patch (`strategic.rs`, over the kinds' patch metadata in `schema.rs`).
//! Server-side apply (`apply.rs`) is not a patch of the object alone: the registry runs it with
//! the object's managedFields.

pub mod apply;
mod schema;
mod strategic;

use crate::error::{ApiError, ApiResult};
use crate::registry::PatchType;
use serde_json::Value;

/// A parsed patch, ready to apply to the current object (possibly more than once, on conflict).
pub enum Patch {
    Json(json_patch::Patch),
    Merge(Value),
    Strategic(Value, &'static schema::Type),
}

impl Patch {
    /// Parses a request body of the given type for an object of `kind`; malformed bodies are
    /// 400 Bad Request.
    pub fn parse(patch_type: PatchType, body: &[u8], kind: &str) -> ApiResult<Self> {
        match patch_type {
            PatchType::Json => {
                serde_json::from_slice(body).map(Patch::Json).map_err(|e| ApiError::bad_request(e.to_string()))
            }
            PatchType::Merge => {
                let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                if !v.is_object() {
                    return Err(ApiError::bad_request("invalid JSON merge patch: the patch must be a JSON object"));
                }
                Ok(Patch::Merge(v))
            }
            PatchType::Strategic => {
                let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                if !v.is_object() {
                    return Err(ApiError::bad_request(
                        "invalid strategic merge patch: the patch must be a JSON object",
                    ));
                }
                Ok(Patch::Strategic(v, schema::of_kind(kind)))
            }
            PatchType::Apply => Err(ApiError::unsupported_media_type(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ])),
        }
    }

    /// The object after the patch. A JSON patch that cannot apply is 422, as upstream.
    pub fn apply(&self, current: &Value) -> ApiResult<Value> {
        let mut doc = current.clone();
        match self {
            Patch::Json(p) => {
                json_patch::patch(&mut doc, p).map_err(|e| ApiError::unprocessable(e.to_string()))?;
            }
            Patch::Merge(p) => json_patch::merge(&mut doc, p),
            Patch::Strategic(p, ty) => doc = strategic::apply(&doc, p, ty)?,
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let p =
            Patch::parse(PatchType::Merge, br#"{"metadata":{"labels":{"a":"b","gone":null}}}"#, "Pod").expect("parses");
        let out = p.apply(&json!({"metadata": {"labels": {"gone": "x", "keep": "y"}}})).expect("applies");
        assert_eq!(out, json!({"metadata": {"labels": {"keep": "y", "a": "b"}}}));
    }

    #[test]
    fn json_patch_failures_are_unprocessable() {
        let p = Patch::parse(PatchType::Json, br#"[{"op":"test","path":"/a","value":2}]"#, "Pod").expect("parses");
        assert_eq!(p.apply(&json!({"a": 1})).expect_err("test fails").code, 422);
        let ok = Patch::parse(PatchType::Json, br#"[{"op":"replace","path":"/a","value":2}]"#, "Pod").expect("parses");
        assert_eq!(ok.apply(&json!({"a": 1})).expect("applies"), json!({"a": 2}));
    }

    #[test]
    fn malformed_patches_are_bad_requests() {
        assert_eq!(Patch::parse(PatchType::Json, b"{", "Pod").err().map(|e| e.code), Some(400));
        assert_eq!(Patch::parse(PatchType::Merge, b"[1]", "Pod").err().map(|e| e.code), Some(400));
    }
}
