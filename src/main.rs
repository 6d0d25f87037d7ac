//! The `kplane` command line: `serve`, `kubeconfig`, `version`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kplane::{Cluster, Config, NodePortRange};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kplane", version, about = "A Kubernetes control plane for Services in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane until SIGINT or SIGTERM.
    Serve(ServeArgs),
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
    /// The cluster DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
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
    let config = Config {
        data_dir,
        listen: Some(args.listen),
        kubeconfig: Some(kubeconfig),
        service_cidr: args.service_cidr,
        pod_cidr: args.pod_cidr,
        node_port_range: args.node_port_range,
        cluster_domain: args.cluster_domain,
    };
    let cluster = Cluster::start_with(config).await?;
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
        Command::Version => {
            println!("kplane {} (Kubernetes {})", env!("CARGO_PKG_VERSION"), kplane_apiserver::http::KUBE_VERSION);
            Ok(())
        }
    }
}
