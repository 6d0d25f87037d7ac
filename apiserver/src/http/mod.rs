//! The HTTP API: routing, content negotiation, watch streams, tables, discovery and OpenAPI,
//! and the TLS server in front of it. Knows no kind by name: the registry's table drives it.

mod codec;
mod discovery;
pub mod logs;
mod path;
pub mod protobuf;
mod resource;
mod serve;

pub use discovery::{KUBE_MINOR, KUBE_VERSION};
pub use serve::{Authenticator, serve_tls};

use crate::registry::Registry;
use axum::Router;
use axum::routing::get;
use std::sync::Arc;

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// `host:port` clients reach the server at (for `serverAddressByClientCIDRs`).
    pub advertise: String,
    /// Where `pods/{name}/log` reads container logs (the node agent's log store), if anywhere.
    pub pod_logs: Option<Arc<dyn logs::PodLogs>>,
}

/// The API router, without authentication: in-process clients call it directly; the TLS
/// server wraps it with the token check.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api))
        .route("/api/v1", get(discovery::core_v1))
        .route("/apis", get(discovery::apis))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .fallback(resource::handle)
        .with_state(state)
}

async fn ok() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests;
