//! The `kplane` command line: `serve`, `resolv-conf`, `env`, `version`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kplane::{Cluster, Config, NodePortRange};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kplane", version, about = "A Kubernetes control plane for Services in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once: the size of `serve`'s arguments costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the control plane until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Print the resolv.conf of a pod in a namespace (dnsPolicy ClusterFirst).
    ResolvConf(ResolvConfArgs),
    /// Print, shell-sourceable, the Service environment variables a pod in a namespace gets.
    Env(EnvArgs),
    /// Print the Kubernetes version kplane serves.
    Version,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where state lives (default: the per-user data directory, e.g. ~/.local/share/kplane).
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing is written but the kubeconfig.
    #[arg(long)]
    ephemeral: bool,
    /// The HTTPS address; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (default: $KUBECONFIG, else ~/.kube/kplane.yaml).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The Service IP range; a second, IPv6 range after a comma gives dual stack.
    #[arg(long, value_name = "CIDR[,CIDR]", default_value = "127.96.0.0/12")]
    service_cidr: String,
    /// The pod IP range.
    #[arg(long, value_name = "CIDR", default_value = "127.244.0.0/16")]
    pod_cidr: String,
    /// The NodePort range.
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767")]
    node_port_range: NodePortRange,
    /// Where LoadBalancer ingress IPs come from (one range, or an IPv4 and an IPv6 one), or `none`.
    #[arg(long, value_name = "CIDR[,CIDR]|none", default_value = "127.240.0.0/16")]
    lb_pool: String,
    /// The cluster DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The cluster DNS address (UDP and TCP), or `none`. Default: the kube-dns ClusterIP on port 53 if
    /// it can be bound, else 127.0.0.1:10053, else a free port.
    #[arg(long, value_name = "ADDR|none")]
    dns_listen: Option<String>,
    /// An upstream resolver for names outside the cluster (repeatable; default: /etc/resolv.conf's).
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_upstream)]
    dns_upstream: Vec<SocketAddr>,
    /// TTL of cluster DNS answers, in seconds (0-3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    dns_ttl: u32,
    /// Run no service proxy (ClusterIPs and NodePorts then answer nothing).
    #[arg(long)]
    no_proxy: bool,
    /// The addresses NodePorts answer on (default: the node IP).
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    nodeport_addresses: Vec<IpAddr>,
    /// How the proxy forwards: `userspace` (sockets; no privileges needed) or `nftables` (DNAT
    /// rules in kplane's own `table inet kplane`; needs root and the `nft` command).
    #[arg(long, value_name = "MODE", default_value = "userspace")]
    proxy_mode: kplane_proxy::ProxyMode,
    /// Where the proxy serves `/healthz` and `/livez`, or `none`.
    #[arg(long, value_name = "ADDR|none", default_value = "127.0.0.1:10256")]
    proxy_healthz_listen: OptionalAddr,
    /// The most endpoints one EndpointSlice holds (1-1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_endpoints_per_slice: usize,
    /// The name of the node the built-in node agent registers (default: the host's name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The node's IP: its InternalIP and every pod's hostIP.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Run no node agent: no Node, pods stay unscheduled and Pending.
    #[arg(long)]
    no_node_agent: bool,
}

#[derive(clap::Args)]
struct EnvArgs {
    /// The pod's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config, else the one `kplane serve` writes).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// The pod's `enableServiceLinks`: false leaves out every Service but `default/kubernetes`.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    enable_service_links: bool,
}

#[derive(clap::Args)]
struct ResolvConfArgs {
    /// The pod's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
    /// The cluster DNS address pods use (repeatable; default: the kube-dns ClusterIP of --service-cidr).
    #[arg(long, value_name = "IP")]
    nameserver: Vec<IpAddr>,
    /// The Service IP range the cluster was started with.
    #[arg(long, value_name = "CIDR[,CIDR]", default_value = "127.96.0.0/12")]
    service_cidr: String,
    /// The cluster DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
}

/// `IP:PORT`, or `none`.
#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self(None)),
            _ => s.parse().map(|a| Self(Some(a))).map_err(|_| format!("{s:?} is not IP:PORT or none")),
        }
    }
}

/// `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP or IP:PORT"))
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("kplane"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir or --ephemeral")?;
    Ok(PathBuf::from(home).join(".local/share/kplane"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = match (args.ephemeral, args.data_dir) {
        (true, _) => None,
        (false, Some(d)) => Some(d),
        (false, None) => Some(default_data_dir()?),
    };
    let kubeconfig = match args.kubeconfig {
        Some(k) => k,
        None => kplane_apiserver::auth::default_kubeconfig_path()
            .context("cannot find a place for the kubeconfig; pass --kubeconfig")?,
    };
    let node_name = args.node_name.unwrap_or_else(|| kplane::NodeConfig::default().name);
    let config = Config {
        data_dir,
        listen: Some(args.listen),
        kubeconfig: Some(kubeconfig),
        service_cidr: args.service_cidr,
        pod_cidr: args.pod_cidr,
        node_port_range: args.node_port_range,
        lb_pool: (args.lb_pool != "none").then_some(args.lb_pool),
        cluster_domain: args.cluster_domain,
        dns_listen: None,
        dns_upstreams: args.dns_upstream,
        dns_ttl: args.dns_ttl,
        // The proxy is this node's: `Local` traffic policies mean endpoints on the agent's Node,
        // and NodePorts answer on its IP.
        proxy: (!args.no_proxy).then(|| kplane::ProxyConfig {
            node_name: node_name.clone(),
            node_ips: if args.nodeport_addresses.is_empty() {
                vec![args.node_ip]
            } else {
                args.nodeport_addresses.clone()
            },
            healthz_listen: args.proxy_healthz_listen.0,
            mode: args.proxy_mode,
            ..kplane::ProxyConfig::default()
        }),
        max_endpoints_per_slice: args.max_endpoints_per_slice,
        node: (!args.no_node_agent).then(|| kplane::NodeConfig { name: node_name.clone(), ip: args.node_ip }),
    };
    // The DNS sockets are bound before the cluster starts, so the proxy cannot take the kube-dns address first.
    let mut config = config;
    let dns_sockets = bind_dns(&config, args.dns_listen.as_deref()).await?;
    if let (Some(proxy), Some(sockets)) = (config.proxy.as_mut(), dns_sockets.as_ref()) {
        proxy.reserved.push(sockets.local_addr());
    }
    let mut cluster = Cluster::start_with(config.clone()).await?;
    if let Some(sockets) = dns_sockets {
        let listen = sockets.local_addr();
        let addr = cluster.start_dns_on(sockets, config.dns_config(listen)).await?;
        eprintln!("kplane: cluster DNS on {addr} (udp+tcp)");
    }
    let kubeconfig = cluster.kubeconfig().map(|p| p.display().to_string()).unwrap_or_default();
    if cluster.kubeconfig_merged() {
        eprintln!("kplane: {kubeconfig} was not written by kplane; added the `kplane` context to it");
    }
    println!("kplane ready: {} kubeconfig={kubeconfig}", cluster.url().unwrap_or_default());
    shutdown_signal().await;
    tracing::info!("shutting down");
    cluster.shutdown().await;
    Ok(())
}

/// Bind the cluster DNS sockets: where `--dns-listen` says, or on the first default address that binds.
async fn bind_dns(config: &Config, listen: Option<&str>) -> anyhow::Result<Option<kplane_dns::DnsSockets>> {
    let candidates: Vec<SocketAddr> = match listen {
        Some("none" | "off") => return Ok(None),
        Some(addr) => vec![addr.parse().with_context(|| format!("--dns-listen {addr:?}: expected IP:PORT or none"))?],
        None => {
            let fallback = Ipv4Addr::LOCALHOST;
            config
                .dns_service_ip()
                .map(|ip| SocketAddr::new(ip, 53))
                .into_iter()
                .chain([SocketAddr::new(fallback.into(), 10053), SocketAddr::new(fallback.into(), 0)])
                .collect()
        }
    };
    let mut last = None;
    for addr in candidates {
        match kplane_dns::DnsSockets::bind(addr).await {
            Ok(sockets) => return Ok(Some(sockets)),
            Err(e) if listen.is_none() => {
                tracing::info!("{e}; trying the next address");
                last = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no address for the cluster DNS")))
}

fn resolv_conf(args: ResolvConfArgs) -> anyhow::Result<()> {
    let mut config = Config::ephemeral();
    config.service_cidr = args.service_cidr;
    config.cluster_domain = args.cluster_domain;
    config.validate()?;
    let nameservers = match args.nameserver.as_slice() {
        [] => config.dns_service_ip().into_iter().collect(),
        given => given.to_vec(),
    };
    let host = kplane_dns::resolv::ResolvConf::system();
    print!("{}", kplane_dns::resolv::pod_resolv_conf(&args.namespace, &config.cluster_domain, &nameservers, &host));
    Ok(())
}

/// `kplane env`: the cluster found as kubectl finds it, its Services as a pod in the namespace sees them.
async fn env(args: EnvArgs) -> anyhow::Result<()> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?,
        None => match Kubeconfig::read() {
            Ok(k) => k,
            // Neither $KUBECONFIG nor ~/.kube/config: the file `kplane serve` writes by default.
            Err(e) => match kplane_apiserver::auth::default_kubeconfig_path().filter(|p| p.exists()) {
                Some(path) => Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?,
                None => return Err(anyhow::Error::new(e).context("no kubeconfig found; pass --kubeconfig")),
            },
        },
    };
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config).context("building a client")?;
    let mut services = Vec::new();
    let mut namespaces = vec!["default"];
    if args.namespace != "default" {
        namespaces.push(&args.namespace);
    }
    for ns in namespaces {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client.clone(), ns);
        let list = api.list(&Default::default()).await.with_context(|| format!("listing Services in {ns}"))?;
        services.extend(list.items);
    }
    let vars = kplane_controllers::service_env::service_env(&services, &args.namespace, args.enable_service_links);
    let mut out = String::new();
    for (name, value) in vars {
        out.push_str(&format!("export {name}='{}'\n", value.replace('\'', "'\\''")));
    }
    print!("{out}");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KPLANE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::ResolvConf(args) => resolv_conf(args),
        Command::Env(args) => env(args).await,
        Command::Version => {
            println!("kplane {} (Kubernetes {})", env!("CARGO_PKG_VERSION"), kplane_apiserver::http::KUBE_VERSION);
            Ok(())
        }
    }
}
