//! The TCP data path: accept → pick an endpoint (skipping ones that refuse) → relay both ways until
//! both sides are done. A connection nobody can take is reset at once, never left hanging.

use crate::balance::{BalanceLayer, Route};
use crate::connect::TcpConnect;
use crate::desired::Listen;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

/// How long to pause accepting after a resource error (out of file descriptors, memory).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until the task is dropped; each runs in its own task and
/// outlives the listener, so a removed endpoint's open connections finish.
pub(crate) async fn serve(
    listener: TcpListener,
    listen: Listen,
    route: watch::Receiver<Arc<Route>>,
    connect: TcpConnect,
    shutdown: watch::Receiver<()>,
) {
    let balance = BalanceLayer::new(route).layer(connect);
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let balance = balance.clone();
                let mut shutdown = shutdown.clone();
                let span = tracing::debug_span!("conn", %listen, %client);
                tokio::spawn(
                    async move {
                        tokio::select! {
                            () = forward(stream, client, balance) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
            Err(e) => {
                tracing::warn!(%listen, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One client connection: connect it to an endpoint and relay, or reset it.
pub(crate) async fn forward<B>(mut downstream: TcpStream, client: SocketAddr, balance: B)
where
    B: Service<SocketAddr, Response = (SocketAddr, TcpStream)>,
    B::Error: std::fmt::Display,
{
    let _ = downstream.set_nodelay(true);
    match balance.oneshot(client).await {
        Ok((endpoint, mut upstream)) => match crate::relay::relay(&mut downstream, &mut upstream).await {
            Ok((sent, received)) => tracing::debug!(%endpoint, sent, received, "connection done"),
            Err(e) => tracing::debug!(%endpoint, error = %e, "connection ended"),
        },
        Err(e) => {
            tracing::debug!(error = %e, "refusing the connection");
            // A reset, as the kernel answers a port nobody listens on.
            let _ = downstream.set_zero_linger();
        }
    }
}
