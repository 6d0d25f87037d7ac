//! Allocation across a crash: after `kill -9` and a restart, the allocators are rebuilt from the
//! stored Services, so no ClusterIP or NodePort is ever handed out twice.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kplane_e2e::Server;
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeSet;

fn node_port_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
    .expect("a valid Service")
}

async fn create_many(api: &Api<Service>, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move { api.create(&PostParams::default(), &node_port_service(&name)).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("every create succeeds");
}

/// Small ranges, so a restart that forgot what was allocated would hand values out twice.
const SMALL_RANGES: &[&str] =
    &["--service-cidr", "127.99.0.0/24", "--node-port-range", "30000-30300", "--no-proxy", "--dns-listen", "none"];

fn start(data: &std::path::Path) -> Server {
    Server::try_start_with(Some(data), SMALL_RANGES).expect("kplane starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocations_survive_kill_9_without_duplicates() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = start(data.path());
    let api: Api<Service> = Api::namespaced(server.client().await, "default");
    create_many(&api, "before", 60).await;
    server.kill_9();
    drop(server);

    let server = start(data.path());
    let api: Api<Service> = Api::namespaced(server.client().await, "default");
    create_many(&api, "after", 60).await;

    let services = api.list(&ListParams::default()).await.expect("list").items;
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut held_ports = 0;
    for svc in services.iter().filter(|s| s.metadata.name.as_deref() != Some("kubernetes")) {
        let spec = svc.spec.as_ref().expect("spec");
        let ip = spec.cluster_ip.clone().expect("clusterIP");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        let svc_ports: BTreeSet<i32> = spec.ports.iter().flatten().filter_map(|p| p.node_port).collect();
        held_ports += svc_ports.len();
        ports.extend(svc_ports);
    }
    assert_eq!(ips.len(), 120);
    assert_eq!(ports.len(), held_ports, "a NodePort was handed out twice");
    assert_eq!(held_ports, 240, "each Service holds two NodePorts (80/TCP and 53/UDP)");
}
