//! Endpoint figures: 100 Services × 10 pods in an in-process cluster. Pods are flipped Ready one
//! at a time, timing the /status write returning → a watch on EndpointSlices showing the pod
//! ready (p50/p99); then all 1,000 are flipped at once, timing until every slice reflects it.
//!
//! `cargo build --release -p kplane-e2e --bin kplane-bench-endpoints && target/release/kplane-bench-endpoints [--quick]`

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const SERVICES: usize = 100;
const PODS_PER_SERVICE: usize = 10;
const NODE: &str = "bench-node";
const TIMEOUT: Duration = Duration::from_secs(60);

fn ip(i: usize) -> String {
    format!("127.245.{}.{}", i / 250, i % 250 + 1)
}

/// What the slice watch has seen: each pod IP's `ready`, and when it last changed.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, (bool, Instant)>,
    slice_writes: usize,
}

async fn set_ready(pods: &Api<Pod>, i: usize, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip(i),
        "podIPs": [{"ip": ip(i)}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}],
    }});
    pods.patch_status(&format!("p{i}"), &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
}

async fn wait_all(seen: &Mutex<Seen>, changed: &Notify, n: usize, ready: bool) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let notified = changed.notified();
            {
                let s = seen.lock().unwrap();
                if (0..n).all(|i| s.ready.get(&ip(i)).is_some_and(|(r, _)| *r == ready)) {
                    return;
                }
            }
            notified.await;
        }
    })
    .await
    .expect("every pod reflected in its slice");
}

/// CPU time this process has used (user + system), from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // After the command: state is field 0, utime 11, stime 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?").to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("load average before: {}", load());
    let flips = if quick { 200 } else { SERVICES * PODS_PER_SERVICE };
    let total = SERVICES * PODS_PER_SERVICE;
    let cluster = kplane::Cluster::start().await.expect("cluster starts");
    let client = cluster.client();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.expect("node");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let changed = Arc::new(Notify::new());
    let (s, c) = (seen.clone(), changed.clone());
    let watch = watcher(slices, watcher::Config::default().labels("endpointslice.kubernetes.io/managed-by"));
    tokio::spawn(async move {
        let mut events = watch.default_backoff().boxed();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let (Ok(watcher::Event::Apply(slice)) | Ok(watcher::Event::InitApply(slice))) = event else { continue };
            let mut seen = s.lock().unwrap();
            seen.slice_writes += 1;
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                for a in &ep.addresses {
                    let entry = seen.ready.entry(a.clone()).or_insert((!ready, now));
                    if entry.0 != ready {
                        *entry = (ready, now);
                    }
                }
            }
            drop(seen);
            c.notify_waiters();
        }
    });

    let setup = Instant::now();
    let pp = PostParams::default();
    for i in 0..SERVICES {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("s{i}")},
            "spec": {"selector": {"app": format!("s{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        services.create(&pp, &svc).await.expect("service");
    }
    futures::stream::iter(0..total)
        .for_each_concurrent(32, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i}"), "labels": {"app": format!("s{}", i % SERVICES)}},
                    "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]}
                }))
                .unwrap();
                pods.create(&PostParams::default(), &pod).await.expect("pod");
                set_ready(&pods, i, false).await;
            }
        })
        .await;
    wait_all(&seen, &changed, total, false).await;
    println!(
        "setup: {SERVICES} Services, {total} pods (not ready) in slices after {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // One at a time: write returned → slice shows it ready.
    let mut after_return = Vec::with_capacity(flips);
    let mut after_start = Vec::with_capacity(flips);
    let mut writes = Vec::with_capacity(flips);
    for i in 0..flips {
        let start = Instant::now();
        set_ready(&pods, i, true).await;
        let returned = Instant::now();
        let observed = tokio::time::timeout(TIMEOUT, async {
            loop {
                let notified = changed.notified();
                if let Some((true, at)) = seen.lock().unwrap().ready.get(&ip(i)).copied() {
                    return at;
                }
                notified.await;
            }
        })
        .await
        .expect("slice shows the pod ready");
        after_return.push(observed.saturating_duration_since(returned));
        after_start.push(observed.saturating_duration_since(start));
        writes.push(returned - start);
    }
    for v in [&mut after_return, &mut after_start, &mut writes] {
        v.sort();
    }
    let before_return = after_return.iter().filter(|d| d.is_zero()).count();
    println!("single flips ({flips} pods, one at a time, Ready false → true):");
    println!(
        "  /status write returned → slice ready: p50 {}  p99 {}  max {}  ({} seen before the write returned)",
        ms(percentile(&after_return, 0.5)),
        ms(percentile(&after_return, 0.99)),
        ms(percentile(&after_return, 1.0)),
        before_return
    );
    println!(
        "  /status write sent → slice ready:     p50 {}  p99 {}  max {}",
        ms(percentile(&after_start, 0.5)),
        ms(percentile(&after_start, 0.99)),
        ms(percentile(&after_start, 1.0))
    );
    println!(
        "  the /status write itself:             p50 {}  p99 {}",
        ms(percentile(&writes, 0.5)),
        ms(percentile(&writes, 0.99))
    );

    // Everything at once: all pods flipped to not ready, concurrently.
    for i in flips..total {
        set_ready(&pods, i, true).await;
    }
    wait_all(&seen, &changed, total, true).await;
    let writes_before = seen.lock().unwrap().slice_writes;
    let cpu_before = cpu_time();
    let start = Instant::now();
    futures::stream::iter(0..total)
        .for_each_concurrent(64, |i| {
            let pods = pods.clone();
            async move { set_ready(&pods, i, false).await }
        })
        .await;
    let written = start.elapsed();
    wait_all(&seen, &changed, total, false).await;
    let converged = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let slice_writes = seen.lock().unwrap().slice_writes - writes_before;
    println!("burst ({total} pods flipped Ready true → false at once, 64 concurrent writers):");
    println!(
        "  all /status writes returned after {}; every slice reflected all after {} ({} after the last write)",
        ms(written),
        ms(converged),
        ms(converged.saturating_sub(written))
    );
    println!(
        "  {slice_writes} slice updates seen ({:.0}/s); {SERVICES} Services converged: {:.0} Services/s, {:.0} pod changes/s",
        slice_writes as f64 / converged.as_secs_f64(),
        SERVICES as f64 / converged.as_secs_f64(),
        total as f64 / converged.as_secs_f64()
    );
    println!(
        "  CPU used by the process (server, controllers and this client) meanwhile: {} ({:.2} of 2 cores)",
        ms(cpu),
        cpu.as_secs_f64() / converged.as_secs_f64()
    );
    println!("load average after: {}", load());
}
