//! kplane's service proxy: a kube-rs client that watches Services, EndpointSlices and its Node
//! and forwards Service traffic in userspace, as kube-proxy's rules would (`pkg/proxy`).
//!
//! For each Service port it listens (TCP and/or UDP) on the ClusterIPs, on each node address at
//! the NodePort, on the externalIPs and on the load-balancer ingress IPs, and relays each new
//! connection or UDP flow to one endpoint chosen as kube-proxy chooses (ready, else serving and
//! terminating; node-local for `Local` traffic policies; ClientIP affinity). A port without
//! usable endpoints is not listened on, so clients are refused at once.
//!
//! Layers, from the outside in:
//! - `sync`: reflectors and the diff-apply loop;
//! - [`desired`] and [`endpoints`]: pure functions from API objects to listeners and endpoints;
//! - `listener`, `tcp` (+ `relay`: buffer, then splice(2) on Linux), `udp`: sockets and relaying,
//!   on the data path's threads (`runtime`: one per core, a connection stays on its thread);
//! - [`balance`] (a tower layer: endpoint order, fallback, affinity) over [`connect`].
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), kplane_proxy::ProxyError> {
//! let config = kplane_proxy::ProxyConfig { node_name: "node-1".into(), ..Default::default() };
//! let proxy = kplane_proxy::run(client, config).await?;
//! proxy.wait_synced().await;
//! # Ok(()) }
//! ```

pub mod affinity;
pub mod balance;
pub mod connect;
pub mod desired;
pub mod endpoints;
mod events;
mod health;
pub mod incremental;
mod listener;
mod nftables;
mod relay;
mod runtime;
mod sync;
mod tcp;
mod udp;

pub use desired::{Listen, ServicePortName};
pub use endpoints::Protocol;

use runtime::ProxyRuntime;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's name: endpoints with this `nodeName` are local (`--hostname-override`).
    pub node_name: String,
    /// The addresses NodePorts listen on (`--nodeport-addresses`); default `127.0.0.1`.
    pub node_ips: Vec<IpAddr>,
    /// How long to wait for an endpoint to accept a TCP connection before trying the next.
    pub connect_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// Open UDP flows across the proxy; at the limit a new client's flow replaces the stalest
    /// (unanswered first) of the listener it reaches.
    pub udp_max_flows: usize,
    /// A pause after each change before recomputing, so a burst of events is applied at once.
    /// Zero by default: events that arrive during a pass are applied together by the next one.
    pub min_sync_interval: Duration,
    /// Addresses served by something else in this process (the cluster DNS on the kube-dns
    /// ClusterIP): the proxy leaves them alone, TCP and UDP.
    pub reserved: Vec<std::net::SocketAddr>,
    /// Where the proxy serves `/healthz` and `/livez` (`--proxy-healthz-listen`); `None`: nowhere.
    pub healthz_listen: Option<std::net::SocketAddr>,
    /// How Service traffic is forwarded (`--proxy-mode`).
    pub mode: ProxyMode,
    /// The Service CIDRs (`--service-cidr`). The nftables mode drops new connections to an
    /// address in them that no rule DNATed (upstream's "unallocated ClusterIPs" rule), so an
    /// attempt made before the proxy has a Service's rules leaves no un-NATed conntrack entry
    /// behind. Empty: no such rule.
    pub service_cidrs: Vec<desired::SourceRange>,
}

/// How the proxy forwards Service traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// Sockets on every Service address, relaying in this process; needs no privileges.
    #[default]
    Userspace,
    /// DNAT rules in kplane's own nftables table (`table inet kplane`), as kube-proxy's
    /// nftables mode; needs root (CAP_NET_ADMIN) and libnftables (Debian `libnftables1`) or the
    /// `nft` command.
    Nftables,
}

impl std::str::FromStr for ProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "userspace" => Ok(Self::Userspace),
            "nftables" => Ok(Self::Nftables),
            _ => Err(format!("{s:?} is not a proxy mode (userspace, nftables)")),
        }
    }
}

impl Default for ProxyConfig {
    /// The host's name as the node name (as kube-proxy), NodePorts on `127.0.0.1`.
    fn default() -> Self {
        Self {
            node_name: hostname(),
            node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            connect_timeout: Duration::from_secs(3),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 1024,
            min_sync_interval: Duration::ZERO,
            reserved: Vec::new(),
            healthz_listen: None,
            mode: ProxyMode::Userspace,
            service_cidrs: Vec::new(),
        }
    }
}

/// The host name, lower-cased, or `localhost` if it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy configuration: {0}")]
    Config(String),
    #[error("reading Services from the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("nftables proxy mode: {0}")]
    Nftables(String),
    #[error("starting the proxy's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where one listener stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerState {
    /// Not yet bound; `error` says why the last attempt failed (retries continue).
    Binding {
        error: Option<String>,
    },
    Listening,
}

/// One listener the proxy holds or is trying to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub listen: Listen,
    pub service: ServicePortName,
    pub state: ListenerState,
}

/// A running proxy. Dropping it stops the proxy: listeners close and open connections end.
pub struct ProxyHandle {
    task: tokio::task::JoinHandle<()>,
    healthz: Option<tokio::task::JoinHandle<()>>,
    synced: watch::Receiver<bool>,
    status: Arc<Mutex<BTreeMap<Listen, ListenerStatus>>>,
    /// Dropped with the handle, which tells every connection task to end.
    _shutdown: watch::Sender<()>,
    /// Where all of the above runs; dropped last.
    _runtime: ProxyRuntime,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(h) = &self.healthz {
            h.abort();
        }
    }
}

impl ProxyHandle {
    /// Waits until the first complete view of Services and EndpointSlices has been applied.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The listeners, bound or still retrying.
    pub fn listeners(&self) -> Vec<ListenerStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Stops the proxy (the same as dropping the handle).
    pub fn shutdown(self) {}
}

/// Starts the proxy over `client`: checks the API can be read, then watches and forwards in the
/// background until the handle is dropped.
pub async fn run(client: kube::Client, config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    if config.node_name.is_empty() {
        return Err(ProxyError::Config("node_name must not be empty".into()));
    }
    if config.udp_max_flows == 0 {
        return Err(ProxyError::Config("udp_max_flows must be at least 1".into()));
    }
    let runtime = ProxyRuntime::new()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let status = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = listener::Shared {
        connect: connect::TcpConnect { timeout: config.connect_timeout },
        udp: udp::UdpSettings {
            idle_timeout: config.udp_idle_timeout,
            flows: Arc::new(Semaphore::new(config.udp_max_flows.min(Semaphore::MAX_PERMITS))),
        },
        shutdown: shutdown_rx,
        status: status.clone(),
        events: Some(events::Events::new(client.clone(), &config.node_name)),
        data: runtime.data().clone(),
    };
    let (synced_tx, synced_rx) = watch::channel(false);
    let health = Arc::new(health::ProxyHealth::default());
    let healthz = config.healthz_listen.map(|addr| {
        let _in = runtime.handle().enter();
        health::serve_proxy_health(addr, health.clone())
    });
    // Started on the proxy's runtime, so everything it spawns runs there.
    let started = runtime
        .handle()
        .spawn(async move { sync::start(client, config, shared, synced_tx, health).await.map(tokio::spawn) });
    let task = match started.await {
        Ok(task) => task?,
        Err(e) => return Err(ProxyError::Runtime(std::io::Error::other(e))),
    };
    Ok(ProxyHandle { task, healthz, synced: synced_rx, status, _shutdown: shutdown_tx, _runtime: runtime })
}
