//! `GET …/pods/{name}/log` (`pkg/registry/core/pod/rest/log.go`; `strategy.go` `LogLocation`
//! and `ValidateContainer`; `validation.ValidatePodLogOptions`). The API server checks the
//! options and the container name; the bytes come from a [`PodLogs`] the binary plugs in (the
//! node agent's log store, standing in for the kubelet), so this crate depends on no controller.

use super::AppState;
use super::codec::Query;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::registry::Resource;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// What `kubectl logs` asks for (`PodLogOptions`), checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodLogOptions {
    /// The container, resolved (never empty).
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    /// From `sinceSeconds` or `sinceTime`.
    pub since: Option<SystemTime>,
    pub limit_bytes: Option<u64>,
}

/// Why a log cannot be served, as the kubelet answers (400 with its message) or as a failure
/// to reach it (500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodLogsError {
    BadRequest(String),
    Internal(String),
}

/// The log bytes, streamed.
pub type LogBody = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Serves container logs of pods bound to a node (the kubelet's `containerLogs` endpoint).
pub trait PodLogs: Send + Sync {
    /// The log of `opts.container` of `pod` (the stored object, already bound to a node).
    fn logs(&self, pod: Value, opts: PodLogOptions) -> BoxFuture<'static, Result<LogBody, PodLogsError>>;
}

fn flag(query: &Query, key: &str) -> ApiResult<bool> {
    match query.get(key) {
        None | Some("") => Ok(false),
        // strconv.ParseBool
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!("strconv.ParseBool: parsing {v:?}: invalid syntax"))),
    }
}

fn int(query: &Query, key: &str) -> ApiResult<Option<i64>> {
    match query.get(key) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))),
    }
}

/// Parses and validates the options, as `ValidatePodLogOptions`.
fn options(query: &Query, pod_name: &str) -> ApiResult<(PodLogOptions, Option<String>)> {
    let tail = int(query, "tailLines")?;
    let limit = int(query, "limitBytes")?;
    let since_seconds = int(query, "sinceSeconds")?;
    let since_time = match query.get("sinceTime").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| ApiError::bad_request(format!("parsing time {s:?}: {e}")))?,
        ),
    };
    let mut errs = Vec::new();
    if let Some(t) = tail.filter(|t| *t < 0) {
        errs.push(FieldError::invalid("tailLines", t, "must be greater than or equal to 0"));
    }
    if let Some(l) = limit.filter(|l| *l < 1) {
        errs.push(FieldError::invalid("limitBytes", l, "must be greater than 0"));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            errs.push(FieldError::forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
        }
        (Some(s), None) if s < 1 => errs.push(FieldError::invalid("sinceSeconds", s, "must be greater than 0")),
        _ => {}
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", pod_name, errs));
    }
    let since = match (since_seconds, since_time) {
        (Some(s), _) => SystemTime::now().checked_sub(Duration::from_secs(s as u64)),
        (None, Some(t)) => Some(SystemTime::from(t)),
        _ => None,
    };
    let opts = PodLogOptions {
        container: String::new(),
        follow: flag(query, "follow")?,
        previous: flag(query, "previous")?,
        timestamps: flag(query, "timestamps")?,
        tail_lines: tail.map(|t| t as u64),
        since,
        limit_bytes: limit.map(|l| l as u64),
    };
    Ok((opts, query.get("container").filter(|c| !c.is_empty()).map(str::to_string)))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `ValidateContainer`: the one container, or the named one if the pod has it.
fn container(pod: &Value, asked: Option<String>, pod_name: &str) -> ApiResult<String> {
    let spec = &pod["spec"];
    let mut all = names(&spec["initContainers"]);
    let main = names(&spec["containers"]);
    all.extend(main.iter().cloned());
    all.extend(names(&spec["ephemeralContainers"]));
    match asked {
        Some(c) if all.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}"))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None if main.is_empty() => {
            Err(ApiError::bad_request(format!("a container name must be specified for pod {pod_name}")))
        }
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// Serves one pod's log.
pub async fn serve(state: &AppState, r: &Resource, ns: Option<&str>, name: &str, query: &Query) -> ApiResult<Response> {
    let (mut opts, asked) = options(query, name)?;
    let pod = state.registry.get(r, ns, name)?;
    opts.container = container(&pod, asked, name)?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let body = if node.is_empty() {
        // Not yet on a node: upstream answers with an empty body.
        Body::empty()
    } else {
        let Some(source) = state.pod_logs.as_ref() else {
            return Err(ApiError::internal(format!("no kubelet serves logs for node {node:?}")));
        };
        match source.logs(pod, opts).await {
            Ok(stream) => Body::from_stream(stream),
            Err(PodLogsError::BadRequest(m)) => return Err(ApiError::bad_request(m)),
            Err(PodLogsError::Internal(m)) => return Err(ApiError::internal(m)),
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn options_parse_and_validate_as_upstream() {
        let (o, c) = options(&q("container=c&follow=true&tailLines=5&limitBytes=10&timestamps=1&previous=false"), "p")
            .expect("valid");
        assert_eq!(c.as_deref(), Some("c"));
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        let (o, _) = options(&q("sinceSeconds=60"), "p").expect("valid");
        assert!(o.since.is_some_and(|s| s < SystemTime::now()));
        let (o, _) = options(&q("sinceTime=2024-01-02T03:04:05Z"), "p").expect("valid");
        assert_eq!(o.since, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645)));

        let err = |s: &str| options(&q(s), "p").expect_err("invalid");
        let e = err("tailLines=-1&limitBytes=0");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
        assert_eq!(
            err("sinceSeconds=0").message,
            "PodLogOptions \"p\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        assert!(err("sinceSeconds=5&sinceTime=2024-01-02T03:04:05Z").message.contains("at most one of"));
        assert_eq!(err("follow=maybe").code, 400);
        assert_eq!(err("tailLines=x").code, 400);
    }

    #[test]
    fn container_choice_as_validate_container() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        let two = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container(&one, None, "p").expect("one"), "a");
        assert_eq!(container(&two, Some("i".into()), "p").expect("init"), "i");
        assert_eq!(
            container(&two, None, "p").expect_err("ambiguous").message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        let e = container(&one, Some("x".into()), "p").expect_err("unknown");
        assert_eq!((e.code, e.message.as_str()), (400, "container x is not valid for pod p"));
    }
}
