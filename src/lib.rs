//! kplane: a Kubernetes control plane for Services in one binary, and the embedding API that
//! starts a whole cluster in-process for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kplane::ClusterError> {
//! use k8s_openapi::api::core::v1::Namespace;
//! let cluster = kplane::Cluster::start().await?;
//! let namespaces: kube::Api<Namespace> = kube::Api::all(cluster.client());
//! assert!(namespaces.get("default").await.is_ok());
//! # Ok(()) }
//! ```

mod config;
mod pod_logs;

pub use config::{Config, ConfigError, NodeConfig, NodePortRange};
pub use kplane_dns::DnsConfig;
pub use kplane_proxy::{ProxyConfig, ProxyHandle};

use kplane_apiserver::auth::{self, AuthError, KubeconfigOutcome, TlsMaterial};
use kplane_apiserver::http::{self, AppState, Authenticator};
use kplane_apiserver::registry::{Registry, RegistryConfig};
use kplane_apiserver::storage::{SledBackend, StorageError, Store};
use kplane_controllers::builtin_services::BuiltinServices;
use kplane_controllers::lb_ipam;
use kplane_controllers::node::logs::LogStore;
use kplane_controllers::{endpoint_informers, endpoints, endpointslice, endpointslice_mirroring};
use kplane_controllers::{garbage_collector, namespace, podgc};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Events kept in memory for watches to resume from.
const HISTORY_WINDOW: usize = 50_000;

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("data directory {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("service ranges: {0}")]
    Ranges(String),
    #[error("controllers: {0}")]
    Controller(kube::Error),
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] kplane_apiserver::ApiError),
    #[error("{0}")]
    Dns(#[from] kplane_dns::DnsError),
    #[error("service proxy: {0}")]
    Proxy(#[from] kplane_proxy::ProxyError),
    #[error("node agent: {0}")]
    Node(#[from] kplane_controllers::node::NodeError),
}

/// A running cluster: the API server (in-process, and over HTTPS when asked to listen).
pub struct Cluster {
    registry: Arc<Registry>,
    client: kube::Client,
    pod_logs: Option<Arc<dyn http::logs::PodLogs>>,
    url: Option<String>,
    kubeconfig: Option<PathBuf>,
    kubeconfig_outcome: Option<KubeconfigOutcome>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Controllers and other background work, ended with the cluster.
    tasks: Vec<JoinHandle<()>>,
    /// The cluster DNS server, when one runs.
    dns: Option<kplane_dns::DnsServer>,
    /// The service proxy, when one runs.
    proxy: Option<ProxyHandle>,
    /// The node agent, when it runs.
    node: Option<kplane_controllers::node::NodeAgent>,
    /// The node agent's container logs, which `pods/{name}/log` reads.
    logs: Option<LogStore>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// An ephemeral in-process cluster with no socket: the fastest fixture for Rust tests.
    pub async fn start() -> Result<Self, ClusterError> {
        Self::start_with(Config::ephemeral()).await
    }

    /// A cluster as `config` says: storage on disk or in memory, HTTPS listener and kubeconfig if asked.
    pub async fn start_with(config: Config) -> Result<Self, ClusterError> {
        config.validate()?;
        let store = match &config.data_dir {
            None => Store::memory(),
            Some(dir) => {
                let db = dir.join("db");
                std::fs::create_dir_all(&db).map_err(|source| ClusterError::DataDir { path: db.clone(), source })?;
                Store::open(Arc::new(SledBackend::open(&db)?), HISTORY_WINDOW)?
            }
        };
        let ranges = RegistryConfig {
            service_cidrs: config.service_cidr.split(',').map(|s| s.trim().to_string()).collect(),
            node_ports: (config.node_port_range.first, config.node_port_range.last),
        };
        let registry = Registry::new(store, &ranges).map_err(|e| ClusterError::Ranges(e.to_string()))?;
        registry.bootstrap().await?;
        // Process pods' logs: under the data directory, or in a temporary one for an ephemeral cluster.
        let logs = match (&config.node, &config.data_dir) {
            (None, _) => None,
            (Some(_), Some(dir)) => {
                let path = dir.join("pods");
                Some(LogStore::open(&path).map_err(|source| ClusterError::DataDir { path, source })?)
            }
            (Some(_), None) => {
                let path = std::env::temp_dir();
                Some(LogStore::temporary().map_err(|source| ClusterError::DataDir { path, source })?)
            }
        };

        let pod_logs = pod_logs_of(&config, logs.as_ref());
        let mut cluster = Cluster {
            registry: registry.clone(),
            client: in_process_client(&registry, "127.0.0.1:0", pod_logs.clone(), None),
            pod_logs,
            url: None,
            kubeconfig: None,
            kubeconfig_outcome: None,
            stop: None,
            server: None,
            tasks: Vec::new(),
            dns: None,
            proxy: None,
            node: None,
            logs,
        };
        let apiserver = match config.listen {
            Some(addr) => cluster.listen(&config, addr).await?,
            None => SocketAddr::from(([127, 0, 0, 1], 6443)),
        };
        cluster.start_controllers(&config, apiserver).await?;
        // DNS first: it may listen on the kube-dns ClusterIP, which the proxy would otherwise claim.
        if let Some(listen) = config.dns_listen {
            cluster.start_dns(config.dns_config(listen)).await?;
        }
        if let Some(mut proxy) = config.proxy.clone() {
            proxy.reserved.extend(cluster.dns_addr());
            if proxy.service_cidrs.is_empty() {
                // The nftables mode drops new connections into these that no rule DNATed.
                proxy.service_cidrs = config
                    .service_cidrs()?
                    .iter()
                    .map(|c| kplane_proxy::desired::SourceRange { addr: c.addr, prefix: c.prefix })
                    .collect();
            }
            cluster.proxy = Some(kplane_proxy::run(cluster.client_as("kube-proxy"), proxy).await?);
        }
        Ok(cluster)
    }

    /// The controllers that run inside the binary. The built-in Services exist before this returns.
    async fn start_controllers(&mut self, config: &Config, apiserver: SocketAddr) -> Result<(), ClusterError> {
        let cidrs = config.service_cidrs()?;
        // Each component writes under its upstream name, which becomes its field manager.
        let (apiserver_client, controller_manager) =
            (self.client_as("kube-apiserver"), self.client_as("kube-controller-manager"));
        let builtin = BuiltinServices {
            kubernetes_ip: cidrs[0].nth(1),
            dns_ip: cidrs[0].nth(10),
            apiserver: apiserver.ip(),
            apiserver_port: apiserver.port(),
        };
        builtin.ensure(&apiserver_client).await.map_err(ClusterError::Controller)?;
        self.tasks.push(tokio::spawn(builtin.run(apiserver_client)));
        if config.lb_pool.is_some() {
            let pools = config.lb_pools()?.into_iter().map(|c| lb_ipam::Pool { network: c.addr, prefix: c.prefix });
            self.tasks.push(tokio::spawn(lb_ipam::LbIpam::new(controller_manager.clone(), pools.collect()).run()));
        }
        // Endpoints, EndpointSlices and mirroring over one set of caches (pods, Services, Nodes, slices, Endpoints).
        let informers = Arc::new(endpoint_informers::Informers::new(controller_manager.clone()));
        let slices = endpointslice::EndpointSliceController::new(&informers, config.max_endpoints_per_slice);
        self.tasks.push(tokio::spawn(slices.run()));
        self.tasks.push(tokio::spawn(endpoints::EndpointsController::new(&informers).run()));
        self.tasks.push(tokio::spawn(endpointslice_mirroring::MirroringController::new(&informers).run()));
        self.tasks.push(tokio::spawn(informers.run()));
        // Garbage collection, namespace deletion (woken by the collector's deletions) and pod GC.
        let gc = garbage_collector::GarbageCollector::new(controller_manager.clone(), Default::default());
        let deletions = gc.deletions();
        self.tasks.push(tokio::spawn(gc.run()));
        self.tasks.push(tokio::spawn(namespace::run(controller_manager.clone(), Some(deletions))));
        self.tasks.push(tokio::spawn(podgc::run(controller_manager.clone(), Default::default())));
        self.tasks.push(tokio::spawn(kplane_controllers::replicaset::run(controller_manager.clone())));
        self.tasks.push(tokio::spawn(kplane_controllers::deployment::run(controller_manager.clone())));
        // The node agent: its Node is registered and Ready before this returns.
        if let Some(node) = &config.node {
            let agent = kplane_controllers::node::NodeAgentConfig {
                node_name: node.name.clone(),
                node_ip: node.ip,
                pod_cidr: config.pod_cidr.clone(),
                data_dir: config.data_dir.clone(),
                logs: self.logs.clone(),
            };
            self.node = Some(kplane_controllers::node::NodeAgent::start(self.client_as("kubelet"), agent).await?);
        }
        Ok(())
    }

    async fn listen(&mut self, config: &Config, addr: SocketAddr) -> Result<SocketAddr, ClusterError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ClusterError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| ClusterError::Listen { addr, source })?;
        let host = match local.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            ip => ip.to_string(),
        };
        let advertise = SocketAddr::new(host.parse().unwrap_or(local.ip()), local.port()).to_string();
        let secrets = config.data_dir.as_deref().map(|d| d.join("pki"));
        let tls = TlsMaterial::load_or_create(secrets.as_deref(), &[host.clone(), config.kubernetes_service_ip()])?;
        let token = auth::load_or_create_token(secrets.as_deref())?;
        let url = format!("https://{advertise}");
        if let Some(path) = &config.kubeconfig {
            self.kubeconfig_outcome = Some(auth::write_kubeconfig(path, &url, tls.ca_pem(), &token, "kplane")?);
            self.kubeconfig = Some(path.clone());
        }
        let pod_logs = pod_logs_of(config, self.logs.as_ref());
        let state = Arc::new(AppState { registry: self.registry.clone(), advertise, pod_logs });
        let router = Authenticator::new(&token).protect(http::router(state));
        let server_config = tls.server_config()?;
        let (stop, stopped) = oneshot::channel();
        self.server = Some(tokio::spawn(http::serve_tls(listener, router, server_config, async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
        self.url = Some(url);
        Ok(SocketAddr::new(host.parse().unwrap_or(local.ip()), local.port()))
    }

    /// Serve cluster DNS (UDP and TCP) as `config` says; returns the bound address.
    pub async fn start_dns(&mut self, config: kplane_dns::DnsConfig) -> Result<SocketAddr, ClusterError> {
        let sockets = kplane_dns::DnsSockets::bind(config.listen).await?;
        self.start_dns_on(sockets, config).await
    }

    /// Serve cluster DNS on sockets bound beforehand (`config.listen` is not used).
    pub async fn start_dns_on(
        &mut self,
        sockets: kplane_dns::DnsSockets,
        config: kplane_dns::DnsConfig,
    ) -> Result<SocketAddr, ClusterError> {
        let dns = kplane_dns::serve_on(self.client_as("kplane-dns"), sockets, config).await?;
        let addr = dns.local_addr();
        self.dns = Some(dns);
        Ok(addr)
    }

    /// An in-process client that names itself `agent` in its User-Agent, and so writes as the
    /// field manager `agent` (as `kube-controller-manager`, `kubelet`, … do upstream).
    pub fn client_as(&self, agent: &str) -> kube::Client {
        in_process_client(&self.registry, "127.0.0.1:0", self.pod_logs.clone(), Some(agent))
    }

    /// The service proxy, when it runs.
    pub fn proxy(&self) -> Option<&ProxyHandle> {
        self.proxy.as_ref()
    }

    /// Where the cluster DNS listens, when it runs.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.local_addr())
    }

    /// A client that talks to the API server in-process (no socket, no TLS).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Service IPs and NodePorts the allocators hold (for tests: no leaks, no doubles).
    pub fn service_allocations(&self) -> (usize, usize) {
        self.registry.service_allocations()
    }

    /// The HTTPS URL, when the cluster listens.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The kubeconfig written for this cluster, if any.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// Whether the kubeconfig was merged into a file kplane does not own.
    pub fn kubeconfig_merged(&self) -> bool {
        self.kubeconfig_outcome == Some(KubeconfigOutcome::Merged)
    }

    /// Stops serving: no new connections; open ones get a moment to finish. When it returns,
    /// the data directory is free for another cluster.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.proxy.take();
        self.node.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(dns) = self.dns.take() {
            dns.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        // The in-process client's buffer worker and in-flight responses hold the registry, and
        // with it the data directory's lock, for a moment after their clients are gone: wait
        // for them, so a cluster over the same directory can start as soon as this returns.
        let store = Arc::downgrade(&self.registry);
        drop(self);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// What serves `pods/{name}/log`: the node agent's log store, when the agent runs.
fn pod_logs_of(config: &Config, logs: Option<&LogStore>) -> Option<Arc<dyn http::logs::PodLogs>> {
    let (node, logs) = (config.node.as_ref()?, logs?);
    Some(Arc::new(pod_logs::NodeLogs::new(logs.clone(), node.name.clone())))
}

/// A `kube::Client` whose requests go straight to the router as a tower service.
fn in_process_client(
    registry: &Arc<Registry>,
    advertise: &str,
    pod_logs: Option<Arc<dyn http::logs::PodLogs>>,
    agent: Option<&str>,
) -> kube::Client {
    let state = Arc::new(AppState { registry: registry.clone(), advertise: advertise.to_string(), pod_logs });
    let router = http::router(state);
    let user_agent =
        agent.and_then(|a| ::http::HeaderValue::from_str(&format!("{a}/v{} (kplane)", env!("CARGO_PKG_VERSION"))).ok());
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut req: ::http::Request<kube::client::Body>| {
            if let Some(ua) = &user_agent {
                req.headers_mut().entry(::http::header::USER_AGENT).or_insert_with(|| ua.clone());
            }
            // kube sends relative URIs to its base URL; the router only needs the path and query.
            let pq = req.uri().path_and_query().cloned();
            if let Some(pq) = pq {
                *req.uri_mut() = ::http::Uri::from(pq);
            }
            req
        })
        .service(router);
    kube::Client::new(service, "default")
}
