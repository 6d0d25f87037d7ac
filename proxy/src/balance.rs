//! Endpoint selection as a tower layer: for each new connection, the client's affine endpoint
//! first, then the others in random order (kube-proxy balances uniformly at random per
//! connection); an endpoint whose connector fails is skipped and the next one tried.

use crate::affinity::Affinity;
use crate::desired::{ServicePortName, SourceRange};
use rand::seq::SliceRandom;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};

/// What a listener forwards to, as the sync loop last set it.
#[derive(Debug)]
pub struct Route {
    pub service: ServicePortName,
    pub endpoints: Vec<SocketAddr>,
    /// Shared by every listener of the Service port, so ClusterIP and NodePort agree.
    pub affinity: Option<Arc<Affinity>>,
    /// The clients admitted (`loadBalancerSourceRanges` of a load-balancer IP); empty: all.
    pub sources: Vec<SourceRange>,
}

impl Route {
    /// Whether `client` may use this route.
    pub fn admits(&self, client: IpAddr) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|r| r.contains(client))
    }

    /// The endpoints to try for a new connection from `client`, in order.
    pub fn order(&self, client: IpAddr) -> Vec<SocketAddr> {
        let mut order = self.endpoints.clone();
        order.shuffle(&mut rand::rng());
        if let Some(sticky) = self.affinity.as_ref().and_then(|a| a.lookup(client, &self.endpoints))
            && let Some(i) = order.iter().position(|e| *e == sticky)
        {
            order[..=i].rotate_right(1);
        }
        order
    }

    /// Notes that `client` opened a new connection through `endpoint`.
    pub fn record(&self, client: IpAddr, endpoint: SocketAddr) {
        if let Some(affinity) = &self.affinity {
            affinity.record(client, endpoint);
        }
    }
}

/// Why no endpoint took a connection.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("{service} has no endpoints")]
    NoEndpoints { service: ServicePortName },
    #[error("{service} does not admit {client} (loadBalancerSourceRanges)")]
    SourceNotAdmitted { service: ServicePortName, client: IpAddr },
    #[error("{service}: all {tried} endpoints failed, the last ({endpoint}) with: {source}")]
    AllFailed { service: ServicePortName, tried: usize, endpoint: SocketAddr, source: io::Error },
}

/// Wraps a connector (`Service<SocketAddr>`, the endpoint) into a `Service<SocketAddr>` taking
/// the client's address and answering with the chosen endpoint and the connection to it.
#[derive(Debug, Clone)]
pub struct BalanceLayer {
    route: watch::Receiver<Arc<Route>>,
}

impl BalanceLayer {
    pub fn new(route: watch::Receiver<Arc<Route>>) -> Self {
        Self { route }
    }
}

impl<C> Layer<C> for BalanceLayer {
    type Service = Balance<C>;
    fn layer(&self, connect: C) -> Balance<C> {
        Balance { route: self.route.clone(), connect }
    }
}

/// See [`BalanceLayer`].
#[derive(Debug, Clone)]
pub struct Balance<C> {
    route: watch::Receiver<Arc<Route>>,
    connect: C,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<C> Service<SocketAddr> for Balance<C>
where
    C: Service<SocketAddr, Error = io::Error> + Clone + Send + 'static,
    C::Future: Send,
    C::Response: Send,
{
    type Response = (SocketAddr, C::Response);
    type Error = BalanceError;
    type Future = BoxFuture<Result<Self::Response, BalanceError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BalanceError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, client: SocketAddr) -> Self::Future {
        // New connections use the newest endpoint set; open ones keep theirs.
        let route = self.route.borrow().clone();
        let connect = self.connect.clone();
        Box::pin(async move {
            if !route.admits(client.ip()) {
                return Err(BalanceError::SourceNotAdmitted { service: route.service.clone(), client: client.ip() });
            }
            let order = route.order(client.ip());
            let mut last = None;
            for endpoint in &order {
                match connect.clone().oneshot(*endpoint).await {
                    Ok(conn) => {
                        route.record(client.ip(), *endpoint);
                        return Ok((*endpoint, conn));
                    }
                    Err(e) => {
                        tracing::debug!(service = %route.service, %endpoint, error = %e, "endpoint failed, trying the next");
                        last = Some((*endpoint, e));
                    }
                }
            }
            match last {
                Some((endpoint, source)) => Err(BalanceError::AllFailed {
                    service: route.service.clone(),
                    tried: order.len(),
                    endpoint,
                    source,
                }),
                None => Err(BalanceError::NoEndpoints { service: route.service.clone() }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Protocol;
    use std::collections::HashSet;
    use std::time::Duration;
    use tower::service_fn;

    fn ep(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }
    fn client(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, last], 40000))
    }
    fn route(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Arc<Route> {
        let service =
            ServicePortName { namespace: "ns".into(), name: "svc".into(), port: "".into(), protocol: Protocol::Tcp };
        Arc::new(Route {
            service,
            endpoints,
            affinity: affinity.map(|t| Arc::new(Affinity::new(t))),
            sources: Vec::new(),
        })
    }
    /// A connector that refuses the endpoints in `dead` and answers with the endpoint otherwise.
    fn mock(
        dead: &'static [SocketAddr],
    ) -> impl Service<SocketAddr, Response = SocketAddr, Error = io::Error, Future: Send> + Clone {
        service_fn(move |ep: SocketAddr| async move {
            if dead.contains(&ep) { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) } else { Ok(ep) }
        })
    }

    #[tokio::test]
    async fn spreads_over_all_endpoints() {
        let (_tx, rx) = watch::channel(route(vec![ep(1), ep(2), ep(3)], None));
        let balance = BalanceLayer::new(rx).layer(mock(&[]));
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let (chosen, conn) = balance.clone().oneshot(client(1)).await.expect("connects");
            assert_eq!(chosen, conn);
            seen.insert(chosen);
        }
        assert_eq!(seen.len(), 3);
    }

    #[tokio::test]
    async fn a_refusing_endpoint_is_skipped() {
        const DEAD: &[SocketAddr] =
            &[SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 80))];
        let (_tx, rx) = watch::channel(route(vec![ep(1), ep(2)], None));
        let balance = BalanceLayer::new(rx).layer(mock(DEAD));
        for _ in 0..50 {
            assert_eq!(balance.clone().oneshot(client(1)).await.expect("connects").0, ep(2));
        }
    }

    #[tokio::test]
    async fn all_refusing_or_none_is_an_error() {
        const DEAD: &[SocketAddr] =
            &[SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 80))];
        let (tx, rx) = watch::channel(route(vec![ep(1)], None));
        let balance = BalanceLayer::new(rx).layer(mock(DEAD));
        let err = balance.clone().oneshot(client(1)).await.expect_err("refused");
        assert!(matches!(err, BalanceError::AllFailed { tried: 1, .. }), "{err}");
        tx.send_replace(route(vec![], None));
        let err = balance.oneshot(client(1)).await.expect_err("no endpoints");
        assert!(matches!(err, BalanceError::NoEndpoints { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn client_ip_affinity_sticks_per_client_and_expires() {
        let (_tx, rx) = watch::channel(route(vec![ep(1), ep(2), ep(3), ep(4)], Some(Duration::from_secs(5))));
        let balance = BalanceLayer::new(rx).layer(mock(&[]));
        let first = balance.clone().oneshot(client(1)).await.expect("connects").0;
        for port in 0..30 {
            // Affinity is by client IP only: another source port of the same client sticks too.
            let from = SocketAddr::new(client(1).ip(), 41000 + port);
            assert_eq!(balance.clone().oneshot(from).await.expect("connects").0, first);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        let mut seen = HashSet::new();
        for _ in 0..40 {
            seen.insert(balance.clone().oneshot(client(1)).await.expect("connects").0);
            tokio::time::advance(Duration::from_secs(6)).await;
        }
        assert!(seen.len() > 1, "after the timeout a new choice is made");
    }

    #[tokio::test]
    async fn an_affine_endpoint_that_refuses_is_replaced() {
        const DEAD: &[SocketAddr] =
            &[SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 80))];
        let r = route(vec![ep(1), ep(2)], Some(Duration::from_secs(60)));
        r.record(client(1).ip(), ep(1));
        let (_tx, rx) = watch::channel(r.clone());
        let balance = BalanceLayer::new(rx).layer(mock(DEAD));
        assert_eq!(balance.oneshot(client(1)).await.expect("connects").0, ep(2));
        assert_eq!(r.affinity.as_ref().and_then(|a| a.lookup(client(1).ip(), &r.endpoints)), Some(ep(2)));
    }
}
