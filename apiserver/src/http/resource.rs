//! The resource handler: every verb on every kind, dispatched from the path and method to the
//! registry (`apiserver/pkg/endpoints/handlers`). Names no kind.

use super::AppState;
use super::codec::{self, Query, Shape, json_response, shape_list, shape_object};
use super::logs;
use super::path::{self, Target};
use crate::error::{ApiError, ApiResult, FieldError, Reason};
use crate::registry::{PatchType, Subresource, Watch, WriteOptions};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// Serves every path under `/api` and `/apis` that names a resource.
pub async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match serve(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// The generic 404 for paths that name nothing.
pub fn not_found() -> ApiError {
    let mut e = ApiError::bad_request("the server could not find the requested resource");
    e.reason = Reason::NotFound;
    e.code = 404;
    e
}

async fn serve(state: &AppState, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let target = path::parse(&state.registry, parts.uri.path()).ok_or_else(not_found)?;
    let query = Query::parse(parts.uri.query());
    let headers = parts.headers;
    let body = read_body(body).await?;
    let registry = &state.registry;
    let Target { resource: r, namespace, name, subresource } = target;
    let info = r.info();
    let ns = namespace.as_deref();
    let shape = codec::shape(&headers);
    let include = query.get("includeObject");
    let sub = match subresource.as_deref() {
        None => None,
        Some(s) => Some(info.subresources.iter().copied().find(|x| x.name() == s).ok_or_else(not_found)?),
    };
    let method = parts.method;
    let verb = method.to_string();
    let not_allowed = || ApiError::method_not_allowed(&verb, info.group_resource());

    // A namespaced kind without a namespace can only be listed or watched across namespaces.
    if info.namespaced() && ns.is_none() && (name.is_some() || method != Method::GET) {
        return Err(not_found());
    }
    let Some(name) = name else {
        return match method {
            Method::GET if query.is_watch() => {
                Ok(watch_response(registry.watch(&r, ns, &query.watch_options()?)?, &r, shape, include))
            }
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &shape_list(&r, shape, include, registry.list(&r, ns, &query.list_options()?)?),
            )),
            Method::POST => {
                let obj = codec::decode_body(&headers, &body)?;
                let created = registry.create(&r, ns, obj, &write_options(&query, &headers)?).await?;
                Ok(json_response(StatusCode::CREATED, &shape_object(&r, shape, include, created)))
            }
            Method::DELETE => {
                let opts = query.delete_options(&body, &headers)?;
                let list = registry.delete_collection(&r, ns, &query.list_options()?, &opts).await?;
                Ok(json_response(StatusCode::OK, &list))
            }
            _ => Err(not_allowed()),
        };
    };

    let respond = |status: StatusCode, obj: Value| json_response(status, &shape_object(&r, shape, include, obj));
    match (sub, method) {
        (None | Some(Subresource::Status), Method::GET) => Ok(respond(StatusCode::OK, registry.get(&r, ns, &name)?)),
        (None | Some(Subresource::Status | Subresource::Finalize), Method::PUT) => {
            let obj = codec::decode_body(&headers, &body)?;
            let (obj, created) = registry.update(&r, ns, &name, obj, &write_options(&query, &headers)?, sub).await?;
            Ok(respond(if created { StatusCode::CREATED } else { StatusCode::OK }, obj))
        }
        (None | Some(Subresource::Status), Method::PATCH) => {
            let patch_type = patch_type(&headers)?;
            let opts = patch_options(&query, &headers, patch_type)?;
            let (obj, created) = registry.patch(&r, ns, &name, patch_type, &body, &opts, sub).await?;
            Ok(respond(if created { StatusCode::CREATED } else { StatusCode::OK }, obj))
        }
        (None, Method::DELETE) => {
            let opts = query.delete_options(&body, &headers)?;
            Ok(respond(StatusCode::OK, registry.delete(&r, ns, &name, &opts).await?))
        }
        (Some(Subresource::Binding), Method::POST) => {
            let binding = codec::decode_body(&headers, &body)?;
            Ok(json_response(
                StatusCode::CREATED,
                &registry.bind(&r, ns, &name, binding, &query.write_options()?).await?,
            ))
        }
        (Some(Subresource::Log), Method::GET) => logs::serve(state, &r, ns, &name, &query).await,
        (Some(Subresource::Scale), Method::GET) => {
            Ok(json_response(StatusCode::OK, &registry.get_scale(&r, ns, &name)?))
        }
        (Some(Subresource::Scale), Method::PUT) => {
            let scale = codec::decode_body(&headers, &body)?;
            Ok(json_response(
                StatusCode::OK,
                &registry.update_scale(&r, ns, &name, scale, &write_options(&query, &headers)?).await?,
            ))
        }
        (Some(Subresource::Scale), Method::PATCH) => {
            let patch_type = patch_type(&headers)?;
            let opts = patch_options(&query, &headers, patch_type)?;
            let scale = registry.patch_scale(&r, ns, &name, patch_type, &body, &opts).await?;
            Ok(json_response(StatusCode::OK, &scale))
        }
        _ => Err(not_allowed()),
    }
}

/// The options of a write, its manager defaulting to the User-Agent's product (`managerOrUserAgent`).
fn write_options(query: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let mut opts = query.write_options()?;
    if opts.field_manager.as_deref().is_none_or(str::is_empty) {
        let agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        opts.field_manager = Some(crate::registry::manager_from_user_agent(agent));
    }
    Ok(opts)
}

/// `PatchOptions` (`ValidatePatchOptions`): apply needs `fieldManager`; only apply takes `force`,
/// which is true unless `0`, `f` or `false` (apimachinery's query conversion of a bool).
fn patch_options(query: &Query, headers: &HeaderMap, patch_type: PatchType) -> ApiResult<WriteOptions> {
    let manager = query.get("fieldManager").unwrap_or("");
    let force = query.get("force");
    let mut errs = Vec::new();
    if patch_type == PatchType::Apply {
        if manager.is_empty() {
            errs.push(FieldError::required("fieldManager", "is required for apply patch"));
        }
    } else if force.is_some() {
        errs.push(FieldError::forbidden("force", "may not be specified for non-apply patch"));
    }
    errs.extend(crate::validation::validate_field_manager(manager, "fieldManager"));
    if !errs.is_empty() {
        let mut e = ApiError::invalid("meta.k8s.io", "PatchOptions", "", errs);
        e.message = e.message.replacen("PatchOptions", "PatchOptions.meta.k8s.io", 1);
        return Err(e);
    }
    let mut opts = write_options(query, headers)?;
    opts.force = force.is_some_and(|f| !(f == "0" || f.eq_ignore_ascii_case("f") || f.eq_ignore_ascii_case("false")));
    Ok(opts)
}

fn patch_type(headers: &HeaderMap) -> ApiResult<PatchType> {
    PatchType::from_content_type(&codec::content_type(headers))
        .ok_or_else(|| ApiError::unsupported_media_type(PatchType::CONTENT_TYPES))
}

/// Reads the whole body, refusing more than [`codec::MAX_BODY`] with 413.
async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, codec::MAX_BODY).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large { ApiError::too_large(codec::MAX_BODY) } else { ApiError::bad_request(e.to_string()) }
    })
}

/// A chunked stream of newline-delimited `WatchEvent`s; Tables when the client asked for them.
fn watch_response(watch: Watch, r: &Arc<crate::registry::Resource>, shape: Shape, include: Option<&str>) -> Response {
    let timeout = watch.timeout();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let r = r.clone();
    let include = include.map(str::to_string);
    let stream = futures::stream::unfold((watch, true), move |(mut watch, first)| {
        let r = r.clone();
        let include = include.clone();
        async move {
            let event = match deadline {
                Some(d) => tokio::time::timeout_at(d, watch.next()).await.ok()??,
                None => watch.next().await?,
            };
            let is_row = event.watched().is_some();
            let line = match (event.watched(), shape) {
                // The object's encoding is shared by every watcher of this event.
                (Some(o), Shape::Object) => watch_line(event.type_name(), o.json()),
                (Some(o), Shape::PartialMetadata) => watch_line(event.type_name(), o.partial_metadata_json()),
                (Some(o), Shape::Table) => {
                    let rv = o.value()["metadata"].get("resourceVersion").cloned();
                    let table = codec::to_table(&r, include.as_deref(), std::slice::from_ref(o.value()), rv, first);
                    watch_line(event.type_name(), &serde_json::to_vec(&table).unwrap_or_default())
                }
                (None, _) => watch_line(event.type_name(), &serde_json::to_vec(event.object()).unwrap_or_default()),
            };
            Some((Ok::<_, std::io::Error>(Bytes::from(line)), (watch, first && !is_row)))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    resp
}

/// One newline-terminated `{"type":…,"object":…}` line around an already encoded object.
fn watch_line(type_name: &str, object: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(object.len() + type_name.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(type_name.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line
}
