//! Content negotiation: decoding request bodies (JSON, YAML, Kubernetes protobuf), reading
//! query options, and shaping responses (plain JSON, `Table`, `PartialObjectMetadata`).

use crate::error::{ApiError, ApiResult};
use crate::registry::{DeleteOptions, ListOptions, Resource, WatchOptions, WriteOptions, table};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Largest request body accepted (upstream's `MaxRequestBodyBytes`).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The query string as a map (last value wins, as Go's `url.Values.Get` takes the first; no
/// Kubernetes option is repeated).
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn is_watch(&self) -> bool {
        self.flag("watch")
    }

    pub fn write_options(&self) -> ApiResult<WriteOptions> {
        let dry_run = match self.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "CreateOptions",
                    "",
                    vec![crate::error::FieldError::not_supported("dryRun", other, &["All"])],
                ));
            }
        };
        Ok(WriteOptions {
            dry_run,
            field_manager: self.get("fieldManager").map(str::to_string),
            force: self.flag("force"),
        })
    }

    pub fn list_options(&self) -> ApiResult<ListOptions> {
        let limit = match self.get("limit").filter(|l| !l.is_empty()) {
            None => None,
            Some(l) => {
                Some(l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?.max(0)
                    as usize)
            }
        };
        let s = |k: &str| self.get(k).map(str::to_string);
        Ok(ListOptions {
            label_selector: s("labelSelector"),
            field_selector: s("fieldSelector"),
            limit,
            continue_token: s("continue"),
            resource_version: s("resourceVersion"),
            resource_version_match: s("resourceVersionMatch"),
        })
    }

    pub fn watch_options(&self) -> ApiResult<WatchOptions> {
        let timeout_seconds = match self.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                Some(t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?)
            }
        };
        let send_initial_events = match self.get("sendInitialEvents") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        Ok(WatchOptions {
            list: self.list_options()?,
            allow_bookmarks: self.flag("allowWatchBookmarks"),
            send_initial_events,
            timeout_seconds,
        })
    }

    /// `DeleteOptions` from the body (kubectl sends one) with query parameters taking part.
    pub fn delete_options(&self, body: &[u8], headers: &HeaderMap) -> ApiResult<DeleteOptions> {
        let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            serde_json::from_value(decode_body(headers, body)?).map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        if let Some(g) = self.get("gracePeriodSeconds") {
            opts.grace_period_seconds =
                Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
        }
        if let Some(p) = self.get("propagationPolicy") {
            opts.propagation_policy = Some(p.to_string());
        }
        if self.get("dryRun") == Some("All") {
            opts.dry_run = true;
        }
        if let Some(p) = opts.propagation_policy.as_deref()
            && !["Orphan", "Background", "Foreground"].contains(&p)
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::error::FieldError::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        Ok(opts)
    }
}

fn media_type(headers: &HeaderMap) -> String {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(JSON);
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The Content-Type's media type without parameters, for PATCH.
pub fn content_type(headers: &HeaderMap) -> String {
    media_type(headers)
}

/// Decodes an object body by its Content-Type.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let value: Value = match media_type(headers).as_str() {
        "" | JSON | "*/*" => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("json: {e}")))?,
        YAML | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("yaml: {e}")))?;
            serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("yaml: {e}")))?
        }
        PROTOBUF => super::protobuf::decode_object(body).map_err(|e| ApiError::bad_request(e.to_string()))?,
        _ => return Err(ApiError::unsupported_media_type(&[JSON, YAML, PROTOBUF])),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    Ok(value)
}

/// How the client wants objects shaped, from its Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Object,
    Table,
    PartialMetadata,
}

pub fn shape(headers: &HeaderMap) -> Shape {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if has("g=meta.k8s.io") && (has("v=v1") || has("v=v1beta1")) {
            if has("as=Table") {
                return Shape::Table;
            }
            if has("as=PartialObjectMetadata") || has("as=PartialObjectMetadataList") {
                return Shape::PartialMetadata;
            }
        }
        if params.first().is_some_and(|m| *m == JSON || *m == "*/*" || *m == PROTOBUF) && params.len() == 1 {
            return Shape::Object;
        }
    }
    Shape::Object
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json_response(status, &self.to_status());
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Shapes one object or a list as the client asked.
pub fn shape_object(r: &Resource, shape: Shape, include: Option<&str>, obj: Value) -> Value {
    match shape {
        Shape::Object => obj,
        Shape::Table => to_table(r, include, std::slice::from_ref(&obj), resource_version(&obj), true),
        Shape::PartialMetadata => table::partial_metadata(&obj),
    }
}

pub fn shape_list(r: &Resource, shape: Shape, include: Option<&str>, list: Value) -> Value {
    match shape {
        Shape::Object => list,
        Shape::Table => {
            let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let mut t = to_table(r, include, items, None, true);
            t["metadata"] = list["metadata"].clone();
            t
        }
        Shape::PartialMetadata => {
            let items: Vec<Value> =
                list["items"].as_array().into_iter().flatten().map(table::partial_metadata).collect();
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"], "items": items})
        }
    }
}

fn resource_version(obj: &Value) -> Option<Value> {
    obj["metadata"].get("resourceVersion").cloned()
}

/// A `meta.k8s.io/v1` `Table` of `items`; `include` is `includeObject` (`None`, `Metadata`, `Object`).
pub fn to_table(r: &Resource, include: Option<&str>, items: &[Value], rv: Option<Value>, with_columns: bool) -> Value {
    let strategy = r.strategy();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": strategy.table_row(obj)});
            match include.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = obj.clone(),
                _ => row["object"] = table::partial_metadata(obj),
            }
            row
        })
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = table::definitions(strategy.table());
    }
    if let Some(rv) = rv {
        t["metadata"]["resourceVersion"] = rv;
    }
    t
}
