//! kplane's cluster DNS: the Kubernetes DNS schema (kubernetes/dns spec 1.1.0, as the CoreDNS
//! `kubernetes` plugin serves it) over any `kube::Client`, with forwarding of other names.
//!
//! `data` reduces API objects to DNS facts, `zone` answers questions from them (pure), `prepared`
//! keeps the zone with its positive answers encoded ahead of time, `watch` applies each watch event
//! to it, `forward` talks to upstreams, `server` is the hickory adapter (TCP), `udp` the receive
//! loops, `resolv` reads and writes resolv.conf.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), kplane_dns::DnsError> {
//! use kplane_dns::{DnsConfig, serve};
//! let config = DnsConfig { listen: ([127, 0, 0, 1], 0).into(), ..DnsConfig::default() };
//! let dns = serve(client, config).await?;
//! println!("cluster DNS on {}", dns.local_addr());
//! dns.shutdown().await;
//! # Ok(()) }
//! ```

pub mod data;
pub mod forward;
pub mod prepared;
pub mod resolv;
mod server;
mod udp;
pub mod watch;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long `serve` waits for the first complete listing before answering anyway (CoreDNS
/// `startup_timeout`); until then, names that would be NXDOMAIN are SERVFAIL.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run the cluster DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// TTL of cluster answers (CoreDNS default 5, at most 3600).
    pub ttl: u32,
    /// Where other names go; empty means the nameservers of `/etc/resolv.conf`.
    pub upstreams: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 10053)),
            cluster_domain: "cluster.local".into(),
            ttl: 5,
            upstreams: Vec::new(),
        }
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cluster DNS cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid cluster domain {0:?}")]
    Domain(String),
    #[error("invalid DNS TTL {0}: must be 0-3600")]
    Ttl(u32),
}

/// A UDP socket and a TCP listener bound on one address, not yet served: bind early (before anything
/// else may take the address), serve later with [`serve_on`].
pub struct DnsSockets {
    sockets: (tokio::net::UdpSocket, tokio::net::TcpListener),
    local_addr: SocketAddr,
}

impl DnsSockets {
    /// Bind UDP and TCP on `listen`; port 0 picks one free port for both.
    pub async fn bind(listen: SocketAddr) -> Result<Self, DnsError> {
        let (sockets, local_addr) =
            server::Listening::bind_sockets(listen).await.map_err(|source| DnsError::Bind { addr: listen, source })?;
        Ok(DnsSockets { sockets, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A running DNS server; dropping it stops it too.
pub struct DnsServer {
    listening: Option<server::Listening>,
    local_addr: SocketAddr,
    upstreams: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The upstream resolvers in use.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Stop serving and watching.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(l) = self.listening.take() {
            l.shutdown().await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Bind `config.listen`, start the reflectors, and serve. Returns once the zone has synced (or after
/// 5 s without, like CoreDNS).
pub async fn serve(client: kube::Client, config: DnsConfig) -> Result<DnsServer, DnsError> {
    check(&config)?;
    serve_on(client, DnsSockets::bind(config.listen).await?, config).await
}

fn check(config: &DnsConfig) -> Result<(), DnsError> {
    let domain = config.cluster_domain.trim_end_matches('.');
    if domain.is_empty() || domain.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(DnsError::Domain(config.cluster_domain.clone()));
    }
    if config.ttl > 3600 {
        return Err(DnsError::Ttl(config.ttl));
    }
    Ok(())
}

/// As [`serve`], on sockets bound beforehand (`config.listen` is not used).
pub async fn serve_on(client: kube::Client, sockets: DnsSockets, config: DnsConfig) -> Result<DnsServer, DnsError> {
    check(&config)?;
    let domain = config.cluster_domain.trim_end_matches('.');
    let DnsSockets { sockets, local_addr } = sockets;
    let local_ip = match local_addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let upstreams = if config.upstreams.is_empty() {
        resolv::ResolvConf::system().upstreams(&[local_addr, SocketAddr::new(local_ip, local_addr.port())])
    } else {
        config.upstreams.clone()
    };
    let zone_config = zone::ZoneConfig {
        domain: domain.to_string(),
        ttl: config.ttl,
        local_addrs: vec![SocketAddr::new(local_ip, local_addr.port())],
    };
    let feed = watch::start(client, zone_config);
    let handler = server::Handler::new(feed.zone.clone(), forward::Upstreams::new(upstreams.clone()));
    let listening =
        server::Listening::serve(sockets, handler).map_err(|source| DnsError::Bind { addr: local_addr, source })?;
    let mut synced_rx = feed.zone.synced();
    let synced = tokio::time::timeout(STARTUP_TIMEOUT, synced_rx.wait_for(|s| *s)).await;
    if !matches!(synced, Ok(Ok(_))) {
        tracing::warn!("dns: starting with unsynced Kubernetes data");
    }
    Ok(DnsServer { listening: Some(listening), local_addr, upstreams, tasks: feed.tasks })
}
