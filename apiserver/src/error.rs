//! The one API error: every failure a client sees, rendered as a `metav1.Status`
//! (apimachinery `pkg/api/errors/errors.go`, `pkg/util/validation/field/errors.go`).

use serde_json::{Value, json};
use std::fmt;

/// The type of a field error, as apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
    /// Not a field error: the `NamespaceTerminating` cause of a create refused in a terminating
    /// namespace (`v1.NamespaceTerminatingCause`); its message is the detail alone.
    NamespaceTerminating,
    /// Not a field error: a server-side apply conflict (`metav1.CauseTypeFieldManagerConflict`);
    /// its message is the detail alone (`conflict with "manager"`).
    FieldManagerConflict,
}

impl FieldErrorType {
    /// The `causes[].reason` of this type (`metav1.CauseType`).
    pub fn cause_reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::NamespaceTerminating => "NamespaceTerminating",
            Self::FieldManagerConflict => "FieldManagerConflict",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
            Self::TypeInvalid => "Invalid value",
            Self::NamespaceTerminating | Self::FieldManagerConflict => "",
        }
    }
}

/// One field error (`field.Error`): a path such as `spec.ports[0].port`, a type, the bad value
/// (already JSON) and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorType,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    fn new(field: impl Into<String>, kind: FieldErrorType, value: Option<Value>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind, value, detail: detail.into() }
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Invalid, Some(value.into()), detail)
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Required, None, detail)
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Forbidden, None, detail)
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(field, FieldErrorType::Duplicate, Some(value.into()), "")
    }
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(field, FieldErrorType::NotFound, Some(value.into()), "")
    }
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorType::Internal, None, detail)
    }
    /// `field.NotSupported`: `supported` are quoted in the order given.
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(field, FieldErrorType::NotSupported, Some(value.into()), detail)
    }
    pub fn too_long(field: impl Into<String>, value: impl Into<Value>, max: usize) -> Self {
        Self::new(field, FieldErrorType::TooLong, Some(value.into()), format!("may not be more than {max} bytes"))
    }
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::new(field, FieldErrorType::TooMany, Some(Value::from(actual)), format!("must have at most {max} items"))
    }

    /// The body without the field path, as in `causes[].message` (`ErrorBody`).
    pub fn body(&self) -> String {
        if matches!(self.kind, FieldErrorType::NamespaceTerminating | FieldErrorType::FieldManagerConflict) {
            return self.detail.clone();
        }
        let mut s = self.kind.label().to_string();
        match self.kind {
            FieldErrorType::Required
            | FieldErrorType::Forbidden
            | FieldErrorType::TooLong
            | FieldErrorType::Internal => {}
            _ => {
                if let Some(v) = &self.value {
                    s.push_str(": ");
                    s.push_str(&render_value(v));
                }
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.body()) } else { write!(f, "{}: {}", self.field, self.body()) }
    }
}

/// How apimachinery prints a bad value: numbers bare, strings Go-quoted, anything else as JSON.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// `metav1.StatusReason` values used by kplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    BadRequest,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    Unauthorized,
    Forbidden,
    Gone,
    Expired,
    InternalError,
    ServiceUnavailable,
    Timeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Invalid => "Invalid",
            Self::BadRequest => "BadRequest",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotAcceptable => "NotAcceptable",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Gone => "Gone",
            Self::Expired => "Expired",
            Self::InternalError => "InternalError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::Timeout => "Timeout",
        }
    }
}

/// A failure as the client will see it: a `metav1.Status` with reason, code, details and causes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub code: u16,
    pub message: String,
    pub group: String,
    /// `details.kind`: upstream puts the resource (plural) or the kind here, depending on the error.
    pub kind: String,
    pub name: String,
    pub causes: Vec<FieldError>,
    /// `details.retryAfterSeconds`, where upstream sets it.
    pub retry_after: Option<u32>,
}

/// A group and resource, as in `schema.GroupResource`; renders as `services` or `deployments.apps`.
#[derive(Debug, Clone, Copy)]
pub struct GroupResource<'a> {
    pub group: &'a str,
    pub resource: &'a str,
}

impl fmt::Display for GroupResource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(self.resource) } else { write!(f, "{}.{}", self.resource, self.group) }
    }
}

impl ApiError {
    fn plain(reason: Reason, code: u16, message: impl Into<String>) -> Self {
        Self {
            reason,
            code,
            message: message.into(),
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn with_details(mut self, gr: GroupResource<'_>, name: &str) -> Self {
        self.group = gr.group.to_string();
        self.kind = gr.resource.to_string();
        self.name = name.to_string();
        self
    }

    /// `NewNotFound`: `services "x" not found`.
    pub fn not_found(gr: GroupResource<'_>, name: &str) -> Self {
        Self::plain(Reason::NotFound, 404, format!("{gr} {name:?} not found")).with_details(gr, name)
    }

    /// `NewAlreadyExists`: `services "x" already exists`.
    pub fn already_exists(gr: GroupResource<'_>, name: &str) -> Self {
        Self::plain(Reason::AlreadyExists, 409, format!("{gr} {name:?} already exists")).with_details(gr, name)
    }

    /// `NewConflict`: `Operation cannot be fulfilled on services "x": <why>`.
    pub fn conflict(gr: GroupResource<'_>, name: &str, why: &str) -> Self {
        Self::plain(Reason::Conflict, 409, format!("Operation cannot be fulfilled on {gr} {name:?}: {why}"))
            .with_details(gr, name)
    }

    /// The optimistic-concurrency conflict (`OptimisticLockErrorMsg`).
    pub fn stale(gr: GroupResource<'_>, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `NewInvalid`: `Service "x" is invalid: [a, b]`, with causes.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let mut texts: Vec<String> = Vec::new();
        for c in &causes {
            let t = c.to_string();
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
        let message = match texts.len() {
            0 => format!("{kind} {name:?} is invalid"),
            1 => format!("{kind} {name:?} is invalid: {}", texts[0]),
            _ => format!("{kind} {name:?} is invalid: [{}]", texts.join(", ")),
        };
        Self {
            reason: Reason::Invalid,
            code: 422,
            message,
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            causes,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(Reason::BadRequest, 400, message)
    }

    /// A 422 that is not a field validation failure (a JSON patch that does not apply).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::plain(Reason::Invalid, 422, message)
    }

    pub fn method_not_allowed(verb: &str, gr: GroupResource<'_>) -> Self {
        Self::plain(
            Reason::MethodNotAllowed,
            405,
            format!("{verb} is not supported on resources of kind {gr:?}", gr = gr.to_string()),
        )
    }

    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::plain(
            Reason::UnsupportedMediaType,
            415,
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::plain(
            Reason::NotAcceptable,
            406,
            format!("only the following media types are accepted: {}", accepted.join(", ")),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::plain(Reason::RequestEntityTooLarge, 413, format!("Request entity too large: limit is {limit}"))
    }

    pub fn unauthorized() -> Self {
        Self::plain(Reason::Unauthorized, 401, "Unauthorized")
    }

    pub fn forbidden(gr: GroupResource<'_>, name: &str, why: &str) -> Self {
        let message = if name.is_empty() {
            format!("{gr} is forbidden: {why}")
        } else {
            format!("{gr} {name:?} is forbidden: {why}")
        };
        Self::plain(Reason::Forbidden, 403, message).with_details(gr, name)
    }

    /// `NewResourceExpired`: a watch or list from a revision older than the history window.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::plain(Reason::Expired, 410, message)
    }

    /// `NewGone`.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::plain(Reason::Gone, 410, message)
    }

    /// `NewInternalError`: `Internal error occurred: <msg>`.
    pub fn internal(message: impl fmt::Display) -> Self {
        let mut e = Self::plain(Reason::InternalError, 500, format!("Internal error occurred: {message}"));
        e.causes.push(FieldError {
            field: String::new(),
            kind: FieldErrorType::Internal,
            value: None,
            detail: message.to_string(),
        });
        e
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::plain(Reason::ServiceUnavailable, 503, message)
    }

    /// `NewTimeoutError`.
    pub fn timeout(message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::plain(Reason::Timeout, 504, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), self.name.clone().into());
        }
        if !self.group.is_empty() {
            details.insert("group".into(), self.group.clone().into());
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), self.kind.clone().into());
        }
        if !self.causes.is_empty() && self.reason != Reason::InternalError {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.kind.cause_reason(), "message": c.body(), "field": c.field}))
                .collect();
            details.insert("causes".into(), causes.into());
        } else if self.reason == Reason::InternalError {
            let causes: Vec<Value> = self.causes.iter().map(|c| json!({"message": c.detail})).collect();
            details.insert("causes".into(), causes.into());
        }
        if let Some(s) = self.retry_after {
            details.insert("retryAfterSeconds".into(), s.into());
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// A result whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: GroupResource<'static> = GroupResource { group: "", resource: "services" };

    #[test]
    fn not_found_status_matches_upstream() {
        let s = ApiError::not_found(SVC, "x").to_status();
        assert_eq!(s["message"], "services \"x\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "services");
        assert_eq!(s["details"]["name"], "x");
    }

    #[test]
    fn group_renders_as_resource_dot_group() {
        let gr = GroupResource { group: "apps", resource: "deployments" };
        assert_eq!(ApiError::already_exists(gr, "web").message, "deployments.apps \"web\" already exists");
    }

    #[test]
    fn invalid_aggregates_distinct_causes() {
        let one = ApiError::invalid("", "Service", "x", vec![FieldError::required("spec.ports", "")]);
        assert_eq!(one.message, "Service \"x\" is invalid: spec.ports: Required value");
        let two = ApiError::invalid(
            "",
            "Service",
            "x",
            vec![
                FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive"),
                FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "ExternalName"]),
            ],
        );
        assert_eq!(
            two.message,
            "Service \"x\" is invalid: [spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive, \
             spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\"]"
        );
        let s = two.to_status();
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.ports[0].port");
        assert_eq!(s["details"]["causes"][0]["message"], "Invalid value: 0: must be between 1 and 65535, inclusive");
    }
}
