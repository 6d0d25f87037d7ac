//! Service allocation figures: Service creates/s (ClusterIP and NodePort) against ConfigMap
//! creates/s from the same in-process cluster, and the cost of allocating the last free
//! address of a nearly full /16 against allocating from an empty one.
//!
//! `cargo run --release -p kplane-e2e --bin kplane-bench-services [-- --quick]`

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kplane_apiserver::alloc::IpAllocator;
use kube::api::{Api, PostParams};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;

async fn creates_per_second<K>(api: Api<K>, n: usize, make: impl Fn(usize) -> K) -> f64
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let objects: Vec<K> = (0..n).map(make).collect();
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "creates failed");
    n as f64 / elapsed.as_secs_f64()
}

fn service(i: usize, node_port: bool) -> Service {
    let ty = if node_port { "NodePort" } else { "ClusterIP" };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("s{i}")},
        "spec": {"type": ty, "selector": {"app": "x"}, "ports": [{"port": 80}]}
    }))
    .expect("valid Service")
}

fn config_map(i: usize) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": format!("c{i}")}, "data": {"k": "v"}}))
        .expect("valid ConfigMap")
}

/// Mean time of `allocate_next` after releasing one random address, in a range with `free` left.
fn last_free(alloc: &mut IpAllocator, rounds: usize) -> Duration {
    let mut total = Duration::ZERO;
    let taken: Vec<_> = alloc.iter().collect();
    for i in 0..rounds {
        let ip = taken[(i * 7919) % taken.len()];
        alloc.release(ip);
        let start = Instant::now();
        let got = black_box(alloc.allocate_next());
        total += start.elapsed();
        assert_eq!(got.ok(), Some(ip), "the only free address is the one released");
    }
    total / rounds as u32
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 500 } else { 3000 };

    println!(
        "## Service allocation (in-process cluster, {CONCURRENCY} concurrent kube-rs clients, {n} objects each)\n"
    );
    println!("| what | creates/s | vs ConfigMap |");
    println!("|---|---|---|");
    let mut config = kplane::Config::ephemeral();
    config.node_port_range = "30000-32767".parse().expect("range");
    let cluster = kplane::Cluster::start_with(config).await.expect("cluster");
    let base = creates_per_second(Api::<ConfigMap>::namespaced(cluster.client(), "default"), n, config_map).await;
    println!("| ConfigMap (baseline) | {base:.0} | 1.00 |");
    let cip =
        creates_per_second(Api::<Service>::namespaced(cluster.client(), "default"), n, |i| service(i, false)).await;
    println!("| Service ClusterIP | {cip:.0} | {:.2} |", cip / base);
    let np_n = n.min(2000); // the NodePort range holds 2768
    let api = Api::<Service>::namespaced(cluster.client(), "kube-public");
    let np = creates_per_second(api, np_n, |i| service(i, true)).await;
    println!("| Service NodePort ({np_n}) | {np:.0} | {:.2} |", np / base);

    println!("\n## Allocating the last free IP of a /16\n");
    let rounds = if quick { 200 } else { 2000 };
    let mut empty = IpAllocator::parse("10.0.0.0/16").expect("range");
    let start = Instant::now();
    for _ in 0..rounds {
        let ip = black_box(empty.allocate_next().expect("free"));
        empty.release(ip);
    }
    let empty_cost = start.elapsed() / rounds as u32;
    let mut full = IpAllocator::parse("10.0.0.0/16").expect("range");
    while full.allocate_next().is_ok() {}
    let full_cost = last_free(&mut full, rounds);
    let mut big = IpAllocator::parse("10.0.0.0/12").expect("range");
    while big.allocate_next().is_ok() {}
    let big_cost = last_free(&mut big, rounds);
    println!("| range | allocate_next | vs empty /16 |");
    println!("|---|---|---|");
    println!("| empty /16 (baseline) | {empty_cost:?} | 1.0 |");
    println!(
        "| /16 with one free address | {full_cost:?} | {:.1} |",
        full_cost.as_secs_f64() / empty_cost.as_secs_f64()
    );
    println!("| /12 with one free address | {big_cost:?} | {:.1} |", big_cost.as_secs_f64() / empty_cost.as_secs_f64());
}
