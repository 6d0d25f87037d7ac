//! Health checking (kube-proxy `pkg/proxy/healthcheck`): the proxy's own `/healthz` and
//! `/livez` (`proxy_health.go`), and the health-check NodePort of each `externalTrafficPolicy:
//! Local` LoadBalancer Service (`service_health.go`), which tells a load balancer whether this
//! node has local endpoints. Both answer any path and method with a small JSON document.

use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A queued change not applied within this long makes the proxy unhealthy (2 × kube-proxy's
/// default `syncPeriod` of 30 s).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// The taint a node being removed carries (`ToBeDeletedByClusterAutoscaler`).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// How long a client may take to send its request head, and how much of it is read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One answer: status, JSON body, and for a Service the endpoint-weight header's value.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    body: String,
    weight: Option<usize>,
}

/// Sync freshness, as the proxy's health server reports it.
#[derive(Debug)]
pub struct ProxyHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    last_updated: Timestamp,
    /// When the oldest change not yet applied arrived.
    queued_since: Option<Instant>,
    node_eligible: bool,
}

impl Default for ProxyHealth {
    fn default() -> Self {
        Self {
            state: Mutex::new(HealthState { last_updated: Timestamp::now(), queued_since: None, node_eligible: true }),
        }
    }
}

impl ProxyHealth {
    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A change arrived that the next sync will apply (`QueuedUpdate`).
    pub fn queued(&self) {
        self.with(|s| {
            s.queued_since.get_or_insert_with(Instant::now);
        });
    }

    /// Everything queued so far is applied (`Updated`).
    pub fn updated(&self) {
        self.with(|s| {
            s.queued_since = None;
            s.last_updated = Timestamp::now();
        });
    }

    /// Whether this node may take traffic (no deletionTimestamp, no to-be-deleted taint).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.with(|s| s.node_eligible = eligible);
    }

    /// Whether syncs keep up (`/livez`; with node eligibility, `/healthz`).
    pub fn syncs_fresh(&self) -> bool {
        self.with(|s| s.queued_since.is_none_or(|t| t.elapsed() < STALE_AFTER))
    }

    /// `/healthz` (`healthz`) or `/livez` (`livez`): status and body.
    fn render(&self, path: &str) -> Reply {
        let (fresh, eligible, last) = self.with(|s| {
            let fresh = s.queued_since.is_none_or(|t| t.elapsed() < STALE_AFTER);
            // When everything is applied, "last updated" is now.
            let last = if s.queued_since.is_none() { Timestamp::now() } else { s.last_updated };
            (fresh, s.node_eligible, last)
        });
        let now = go_time(Timestamp::now());
        let last = go_time(last);
        if path.starts_with("/livez") {
            let body = format!(r#"{{"lastUpdated": "{last}","currentTime": "{now}"}}"#);
            return Reply { status: if fresh { 200 } else { 503 }, body, weight: None };
        }
        let body = format!(r#"{{"lastUpdated": "{last}","currentTime": "{now}", "nodeEligible": {eligible}}}"#);
        Reply { status: if fresh && eligible { 200 } else { 503 }, body, weight: None }
    }
}

/// A time as Go's `time.Time.String` prints it (what kube-proxy's health body quotes).
fn go_time(t: Timestamp) -> String {
    format!("{} +0000 UTC", t.strftime("%Y-%m-%d %H:%M:%S%.f"))
}

/// What one Service's health check reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub namespace: String,
    pub name: String,
    /// Distinct ready endpoint IPs on this node, across the Service's ports.
    pub local_endpoints: usize,
}

impl ServiceHealth {
    fn render(&self, proxy_healthy: bool) -> Reply {
        let body = format!(
            r#"{{"service": {{"namespace": "{}", "name": "{}"}}, "localEndpoints": {}, "serviceProxyHealthy": {}}}"#,
            self.namespace, self.name, self.local_endpoints, proxy_healthy
        );
        let status = if self.local_endpoints > 0 && proxy_healthy { 200 } else { 503 };
        Reply { status, body, weight: Some(self.local_endpoints) }
    }
}

/// Reports a health-check port that cannot be opened (an Event on the Service).
pub type BindFailure = Arc<dyn Fn(&ServiceHealth, u16, &io::Error) + Send + Sync>;

/// The health-check servers of all Services, kept in step with the desired state.
pub(crate) struct ServiceHealthServers {
    node_ips: Vec<IpAddr>,
    proxy: Arc<ProxyHealth>,
    on_bind_failure: BindFailure,
    servers: BTreeMap<u16, Server>,
}

struct Server {
    state: watch::Sender<ServiceHealth>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ServiceHealthServers {
    pub(crate) fn new(node_ips: Vec<IpAddr>, proxy: Arc<ProxyHealth>, on_bind_failure: BindFailure) -> Self {
        Self { node_ips, proxy, on_bind_failure, servers: BTreeMap::new() }
    }

    /// Opens, updates and closes servers so there is one per health-check port in `want`.
    pub(crate) fn apply(&mut self, want: &BTreeMap<u16, ServiceHealth>) {
        self.servers.retain(|port, _| want.contains_key(port));
        for (port, health) in want {
            match self.servers.get(port) {
                Some(s) if s.state.borrow().name == health.name && s.state.borrow().namespace == health.namespace => {
                    s.state.send_if_modified(|cur| {
                        let changed = cur != health;
                        *cur = health.clone();
                        changed
                    });
                }
                _ => {
                    let (state, rx) = watch::channel(health.clone());
                    let tasks = self
                        .node_ips
                        .iter()
                        .map(|ip| {
                            let addr = SocketAddr::new(*ip, *port);
                            let (rx, proxy, report) = (rx.clone(), self.proxy.clone(), self.on_bind_failure.clone());
                            tokio::spawn(async move {
                                let listener = bind_retrying(addr, |e| report(&rx.borrow(), addr.port(), e)).await;
                                serve(listener, move |_| rx.borrow().render(proxy.syncs_fresh())).await;
                            })
                        })
                        .collect();
                    self.servers.insert(*port, Server { state, tasks });
                }
            }
        }
    }
}

/// Serves the proxy's `/healthz` and `/livez` on `addr` until dropped.
pub(crate) fn serve_proxy_health(addr: SocketAddr, health: Arc<ProxyHealth>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let listener =
            bind_retrying(addr, |e| tracing::warn!(%addr, error = %e, "cannot serve proxy health; will retry")).await;
        serve(listener, move |path| health.render(path)).await;
    })
}

/// Binds `addr`, retrying with backoff; `on_error` hears of the first failure only.
async fn bind_retrying(addr: SocketAddr, on_error: impl Fn(&io::Error)) -> TcpListener {
    let mut delay = Duration::from_millis(100);
    let mut told = false;
    loop {
        let bound = (|| {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(128)
        })();
        match bound {
            Ok(l) => return l,
            Err(e) => {
                if !told {
                    on_error(&e);
                    told = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Answers every request on `listener` with `render(path)`.
async fn serve(listener: TcpListener, render: impl Fn(&str) -> Reply + Send + Sync + 'static) {
    let render = Arc::new(render);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &*render).await;
        });
    }
}

async fn answer(mut stream: TcpStream, render: &(dyn Fn(&str) -> Reply + Send + Sync)) -> io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let Reply { status, body, weight } = render(&path);
    let reason = if status == 200 { "OK" } else { "Service Unavailable" };
    let weight = weight.map(|n| format!("X-Load-Balancing-Endpoint-Weight: {n}\r\n")).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         {weight}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head (or the size limit); returns its first line.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_health_goes_stale_and_recovers() {
        let h = ProxyHealth::default();
        let Reply { status, body, .. } = h.render("/healthz");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""nodeEligible": true"#) && body.contains(" +0000 UTC\""), "{body}");
        h.queued();
        assert!(h.syncs_fresh(), "a change just queued is not stale yet");
        h.with(|s| s.queued_since = Some(Instant::now() - STALE_AFTER));
        assert_eq!(h.render("/healthz").status, 503);
        let Reply { status, body, .. } = h.render("/livez");
        assert_eq!(status, 503);
        assert!(!body.contains("nodeEligible"), "{body}");
        h.updated();
        assert_eq!(h.render("/livez").status, 200);
        h.set_node_eligible(false);
        assert_eq!(h.render("/healthz").status, 503, "a node being deleted is not eligible");
        assert_eq!(h.render("/livez").status, 200, "but the proxy is alive");
    }

    #[test]
    fn service_health_is_ok_only_with_local_endpoints() {
        let mut s = ServiceHealth { namespace: "ns".into(), name: "web".into(), local_endpoints: 2 };
        let body =
            r#"{"service": {"namespace": "ns", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true}"#;
        assert_eq!(s.render(true), Reply { status: 200, body: body.into(), weight: Some(2) });
        assert_eq!(s.render(false).status, 503);
        s.local_endpoints = 0;
        assert_eq!(s.render(true).status, 503);
    }

    #[test]
    fn go_time_looks_like_go() {
        let t: Timestamp = "2026-11-30T01:50:06.1234Z".parse().expect("time");
        assert_eq!(go_time(t), "2026-11-30 01:50:06.1234 +0000 UTC");
        let whole: Timestamp = "2026-11-30T01:50:06Z".parse().expect("time");
        assert_eq!(go_time(whole), "2026-11-30 01:50:06 +0000 UTC");
    }
}
