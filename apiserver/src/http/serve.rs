//! The HTTPS server: TLS (rustls), HTTP/1.1 and HTTP/2, bearer-token authentication, and a
//! graceful stop that lets open requests finish briefly before watches are cut.

use crate::error::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long open connections get to finish after a stop is asked for.
const DRAIN: Duration = Duration::from_secs(2);

/// Paths anyone may read, as upstream's `system:public-info-viewer` allows.
const PUBLIC: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Checks the bearer token of every request but the public ones.
#[derive(Clone)]
pub struct Authenticator {
    token: Arc<str>,
}

impl Authenticator {
    pub fn new(token: &str) -> Self {
        Self { token: token.into() }
    }

    /// The router behind a 401 `Status` for requests without the token.
    pub fn protect(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let auth = self.clone();
            async move { auth.check(req, next).await }
        }))
    }

    async fn check(&self, req: Request, next: Next) -> Response {
        let header = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if PUBLIC.contains(&req.uri().path()) || crate::auth::token_matches(&self.token, header) {
            next.run(req).await
        } else {
            ApiError::unauthorized().into_response()
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::info!("connections still open after the drain period; closing them");
    }
}
