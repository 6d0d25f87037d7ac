//! The UDP data path: a flow per client address (like a conntrack entry) with its own socket to
//! the endpoint, replies sent back from the Service address, closed after an idle timeout or when
//! its endpoint leaves the set (kube-proxy clears stale UDP conntrack entries the same way).
//! An endpoint that refuses before it ever answered is replaced by the next, datagram resent.

use crate::balance::Route;
use crate::desired::Listen;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;
/// At most one "flow table full" warning per listener this often.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Limits shared by every UDP listener of one proxy.
#[derive(Debug, Clone)]
pub(crate) struct UdpSettings {
    pub idle_timeout: Duration,
    /// One permit per open flow, across the proxy: a flood of new clients cannot take every
    /// file descriptor; when they are all taken, a new client replaces this listener's stalest.
    pub flows: Arc<Semaphore>,
}

/// Relays datagrams on `frontend` until the task is dropped, which closes every flow.
pub(crate) async fn serve(
    frontend: UdpSocket,
    listen: Listen,
    route: watch::Receiver<Arc<Route>>,
    settings: UdpSettings,
) {
    let frontend = Arc::new(frontend);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    let mut warned_full: Option<Instant> = None;
    loop {
        tokio::select! {
            received = frontend.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(%listen, error = %e, "receive failed");
                        continue;
                    }
                };
                let data = &buf[..n];
                if let Some(flow) = flows.get(&client) {
                    flow.send(data);
                    continue;
                }
                // A source outside loadBalancerSourceRanges is dropped, as kube-proxy's firewall does.
                if !route.borrow().admits(client.ip()) {
                    continue;
                }
                let permit = match settings.flows.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        if warned_full.is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY) {
                            tracing::warn!(%listen, "too many UDP flows; closing the stalest");
                            warned_full = Some(Instant::now());
                        }
                        evict_one(&mut flows);
                        match settings.flows.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => continue, // other listeners hold every flow
                        }
                    }
                };
                next_id += 1;
                let closed = (closed_tx.clone(), next_id);
                let opened = Flow::open(client, &frontend, route.clone(), settings.idle_timeout, closed, permit);
                match opened {
                    Ok(flow) => {
                        flow.send(data);
                        flows.insert(client, flow);
                    }
                    Err(e) => tracing::debug!(%listen, %client, error = %e, "cannot open a flow"),
                }
            }
            Some((client, id)) = closed_rx.recv() => {
                if flows.get(&client).is_some_and(|f| f.id == id) {
                    flows.remove(&client);
                }
            }
        }
    }
}

/// Closes one flow to make room: one that never got an answer if any (a flood to a dead
/// endpoint, like conntrack's early drop of unreplied entries), else the longest idle.
fn evict_one(flows: &mut HashMap<SocketAddr, Flow>) {
    let victim = flows
        .iter()
        .min_by_key(|(_, f)| (f.shared.replied.load(Ordering::Relaxed), f.shared.last()))
        .map(|(client, _)| *client);
    if let Some(client) = victim {
        flows.remove(&client);
    }
}

/// One client's flow, as the listener holds it. Dropping it ends the flow's task and frees
/// its place in the flow limit at once.
struct Flow {
    id: u64,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// State both halves of a flow touch.
struct Shared {
    started: Instant,
    /// Milliseconds from `started` to the last datagram either way.
    last: AtomicU64,
    replied: AtomicBool,
    /// The newest datagram sent before any reply, resent if the endpoint turns out dead.
    pending: Mutex<Option<Vec<u8>>>,
    /// The flow's socket for sending: a non-blocking duplicate of the relay's, written directly
    /// (tokio's `try_send` would drop datagrams until the reactor has seen the socket writable).
    tx: std::net::UdpSocket,
}

impl Shared {
    /// Sends without waiting: a datagram that finds the socket buffer full is dropped.
    fn send(&self, data: &[u8]) {
        match self.tx.send(data) {
            Ok(_) => {}
            // The refusal of an earlier datagram, reported here; this one may still arrive.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = self.tx.send(data);
            }
            Err(e) => tracing::trace!(error = %e, "datagram dropped"),
        }
    }
}

impl Shared {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

impl Flow {
    fn open(
        client: SocketAddr,
        frontend: &Arc<UdpSocket>,
        route: watch::Receiver<Arc<Route>>,
        idle: Duration,
        closed: (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
        permit: OwnedSemaphorePermit,
    ) -> io::Result<Self> {
        let current = route.borrow().clone();
        let mut order: VecDeque<SocketAddr> = current.order(client.ip()).into();
        let endpoint = order.pop_front().ok_or_else(|| io::Error::other("no endpoints"))?;
        let tx = std::net::UdpSocket::bind(unspecified(endpoint))?;
        tx.connect(endpoint)?;
        tx.set_nonblocking(true)?;
        let backend = Arc::new(UdpSocket::from_std(tx.try_clone()?)?);
        current.record(client.ip(), endpoint);
        let shared = Arc::new(Shared {
            started: Instant::now(),
            last: AtomicU64::new(0),
            replied: AtomicBool::new(false),
            pending: Mutex::new(None),
            tx,
        });
        let relay = Relay {
            client,
            endpoint,
            rest: order,
            backend,
            frontend: frontend.clone(),
            shared: shared.clone(),
            route,
            idle,
        };
        let span = tracing::debug_span!("udp flow", %client);
        let id = closed.1;
        let task = tokio::spawn(
            async move {
                relay.run().await;
                let _ = closed.0.send((client, closed.1));
            }
            .instrument(span),
        );
        Ok(Self { id, shared, task, _permit: permit })
    }

    /// Client → endpoint. Never waits: a datagram that finds the socket buffer full is dropped.
    fn send(&self, data: &[u8]) {
        self.shared.touch();
        if !self.shared.replied.load(Ordering::Relaxed) {
            *self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(data.to_vec());
        }
        self.shared.send(data);
    }
}

/// Endpoint → client, and the flow's end.
struct Relay {
    client: SocketAddr,
    endpoint: SocketAddr,
    /// Endpoints still to try if this one refuses before answering.
    rest: VecDeque<SocketAddr>,
    backend: Arc<UdpSocket>,
    frontend: Arc<UdpSocket>,
    shared: Arc<Shared>,
    route: watch::Receiver<Arc<Route>>,
    idle: Duration,
}

impl Relay {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = self.shared.last() + self.idle;
            tokio::select! {
                received = self.backend.recv(&mut buf) => match received {
                    Ok(n) => {
                        self.shared.replied.store(true, Ordering::Relaxed);
                        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
                        self.shared.touch();
                        if let Err(e) = self.frontend.send_to(&buf[..n], self.client).await {
                            tracing::trace!(error = %e, "reply dropped");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !self.shared.replied.load(Ordering::Relaxed) => {
                        if !self.fail_over().await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %self.endpoint, error = %e, "flow ends");
                        return;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    if self.shared.last() + self.idle <= Instant::now() {
                        tracing::trace!("idle flow closed");
                        return;
                    }
                }
                changed = self.route.changed() => {
                    if changed.is_err() || !self.route.borrow().endpoints.contains(&self.endpoint) {
                        tracing::debug!(endpoint = %self.endpoint, "endpoint removed; flow closed");
                        return;
                    }
                }
            }
        }
    }

    /// The endpoint refused: move to the next one and resend what the client last sent.
    async fn fail_over(&mut self) -> bool {
        let current = self.route.borrow().clone();
        while let Some(next) = self.rest.pop_front() {
            if !current.endpoints.contains(&next) {
                continue;
            }
            tracing::debug!(refused = %self.endpoint, %next, "endpoint refused; trying the next");
            if self.backend.connect(next).await.is_err() {
                continue;
            }
            self.endpoint = next;
            current.record(self.client.ip(), next);
            let pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(data) = pending {
                self.shared.send(&data);
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ServicePortName;
    use crate::endpoints::Protocol;

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    fn route(endpoints: Vec<SocketAddr>) -> Arc<Route> {
        let service =
            ServicePortName { namespace: "ns".into(), name: "dns".into(), port: "".into(), protocol: Protocol::Udp };
        Arc::new(Route { service, endpoints, affinity: None, sources: Vec::new() })
    }

    /// A relay on a free port; its address.
    async fn relay(
        route: watch::Receiver<Arc<Route>>,
        settings: UdpSettings,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let frontend = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = frontend.local_addr().expect("addr");
        let listen = Listen { addr, protocol: Protocol::Udp };
        (addr, tokio::spawn(serve(frontend, listen, route, settings)))
    }

    async fn ask(to: SocketAddr) -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.send_to(b"hello", to).await?;
        let mut buf = [0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        Ok(buf[..n].to_vec())
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn flows_close_when_idle_or_when_their_endpoint_goes() {
        let flows = Arc::new(Semaphore::new(4));
        let settings = UdpSettings { idle_timeout: Duration::from_millis(200), flows: flows.clone() };
        let backend = echo().await;
        let (tx, rx) = watch::channel(route(vec![backend]));
        let (addr, _task) = relay(rx, settings).await;

        assert_eq!(ask(addr).await.expect("answer"), b"hello");
        assert_eq!(flows.available_permits(), 3, "one flow open");
        until("the idle flow to close", || flows.available_permits() == 4).await;

        let settings_long = UdpSettings { idle_timeout: Duration::from_secs(300), flows: flows.clone() };
        let (tx2, rx2) = watch::channel(route(vec![backend]));
        let (addr2, _task2) = relay(rx2, settings_long).await;
        assert_eq!(ask(addr2).await.expect("answer"), b"hello");
        assert_eq!(flows.available_permits(), 3);
        tx2.send_replace(route(vec![SocketAddr::from(([127, 0, 0, 1], 9))]));
        until("the flow to a removed endpoint to close", || flows.available_permits() == 4).await;
        drop((tx, tx2));
    }

    #[tokio::test]
    async fn a_refusing_endpoint_is_replaced_and_floods_evict_stale_flows() {
        let flows = Arc::new(Semaphore::new(2));
        let settings = UdpSettings { idle_timeout: Duration::from_secs(300), flows: flows.clone() };
        let dead = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        }; // closed again: datagrams to it are refused
        let (_tx, rx) = watch::channel(route(vec![dead, echo().await]));
        let (addr, task) = relay(rx, settings).await;
        for _ in 0..10 {
            // Ten new clients over a limit of two flows; each is answered, whichever endpoint it drew.
            assert_eq!(ask(addr).await.expect("answer"), b"hello");
        }
        assert_eq!(flows.available_permits(), 0, "the limit holds");
        task.abort();
        let _ = task.await;
        assert_eq!(flows.available_permits(), 2, "closing the listener closes its flows");
    }
}
