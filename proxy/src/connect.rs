//! The TCP connector: a `tower::Service<SocketAddr>` opening a connection to an endpoint within a
//! deadline, so an unreachable endpoint costs at most the timeout before the next is tried.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower::Service;

/// Connects to endpoints, giving up after `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct TcpConnect {
    pub timeout: Duration,
}

impl Service<SocketAddr> for TcpConnect {
    type Response = TcpStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, endpoint: SocketAddr) -> Self::Future {
        let timeout = self.timeout;
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))??;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn connects_and_reports_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connect = TcpConnect { timeout: Duration::from_secs(5) };
        assert!(connect.oneshot(addr).await.is_ok());
        drop(listener);
        let err = connect.oneshot(addr).await.expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
