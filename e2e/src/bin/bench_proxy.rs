//! Service proxy figures, each against baselines from the same run (all traffic on loopback):
//! bulk TCP throughput through a ClusterIP vs the direct connection and vs haproxy; HTTP
//! requests/s and p99 with `wrk` (keep-alive, and one connection per request) through ClusterIP
//! and NodePort vs direct and vs haproxy doing the same TCP forwarding; and the time from an
//! EndpointSlice change to the first connection that uses it, with 10,000 Services present.
//!
//! Needs `wrk` and `haproxy` (Debian packages) on PATH.
//! `cargo build --release -p kplane-e2e --bin kplane-bench-proxy && target/release/kplane-bench-proxy`
//! Flags: `--only throughput,http,change`, `--services N` (default 10000), `--seconds S` (each wrk run,
//! default 3), `--rounds R` (wrk rounds, paths interleaved, medians reported; default 3).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config, ProxyConfig};
use kube::Api;
use kube::api::{PostParams, ResourceExt};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const NODE: &str = "bench-node";
const BULK_BYTES: u64 = 1 << 30;

struct Args {
    only: Option<Vec<String>>,
    services: usize,
    seconds: u64,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args { only: None, services: 10_000, seconds: 3, rounds: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--only" => a.only = it.next().map(|s| s.split(',').map(String::from).collect()),
            "--services" => a.services = it.next().and_then(|s| s.parse().ok()).unwrap_or(a.services),
            "--seconds" => a.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(a.seconds),
            "--rounds" => a.rounds = it.next().and_then(|s| s.parse().ok()).filter(|r| *r > 0).unwrap_or(a.rounds),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|p| p == part))
    }
}

/// A backend on its own runtime thread, so the proxy under test does not share its workers.
fn spawn_backend<F, Fut>(listener: std::net::TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle.clone()(stream));
            }
        });
    });
}

fn bind(addr: &str) -> std::net::TcpListener {
    std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// Answers every HTTP/1.1 request on the connection with a 5-byte body (keep-alive honoured).
async fn http_hello(stream: TcpStream) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        let mut close = false;
        // Request line and headers up to the blank line.
        loop {
            line.clear();
            match r.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.eq_ignore_ascii_case("connection: close\r\n") {
                close = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let reply: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        };
        if w.write_all(reply).await.is_err() || close {
            return;
        }
    }
}

/// Reads everything, then answers with the byte count.
async fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = stream.write_all(format!("{total}\n").as_bytes()).await;
}

/// Greets with `name`.
fn greeter(name: &'static str) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone {
    move |mut stream: TcpStream| {
        Box::pin(async move {
            let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
        })
    }
}

/// Sends [`BULK_BYTES`] to `addr`; MB/s.
async fn bulk(addr: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let chunk = vec![7u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK_BYTES {
        stream.write_all(&chunk).await.expect("write");
        sent += chunk.len() as u64;
    }
    stream.shutdown().await.expect("shutdown");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await.expect("count");
    assert_eq!(answer.trim().parse::<u64>().ok(), Some(sent), "the sink got everything");
    sent as f64 / start.elapsed().as_secs_f64() / 1e6
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// haproxy in TCP mode forwarding `listen` to `backend`, as the proxy does.
fn haproxy(listen: SocketAddr, backend: SocketAddr, dir: &std::path::Path) -> Haproxy {
    let cfg = dir.join(format!("haproxy-{}.cfg", listen.port()));
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend f\n  bind {listen}\n  default_backend b\nbackend b\n  server s1 {backend}\n"
        ),
    )
    .expect("haproxy config");
    let child = Command::new("haproxy").arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null()).spawn();
    Haproxy(child.expect("haproxy (apt-get install haproxy)"))
}

async fn until_connects(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What one `wrk` run measured.
struct Wrk {
    rps: f64,
    p99_ms: f64,
    requests: u64,
}

/// `wrk` against `addr`.
fn wrk(addr: SocketAddr, seconds: u64, close: bool) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c64", &format!("-d{seconds}s"), "--latency"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(format!("http://{addr}/")).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in {text}"));
    let p99_ms =
        text.lines().find_map(|l| l.trim().strip_prefix("99%")).map(|v| parse_wrk_time(v.trim())).unwrap_or(0.0);
    // "  123456 requests in 3.00s, 9.42MB read"
    let requests = text
        .lines()
        .find_map(|l| l.split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no request count in {text}"));
    Wrk { rps, p99_ms, requests }
}

fn parse_wrk_time(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => n,
    }
}

fn service(name: &str, ty: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": ty, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

fn slice(service: &str, backend: SocketAddr) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}, "nodeName": NODE}],
        "ports": [{"name": "http", "protocol": "TCP", "port": backend.port()}],
    }))
    .expect("slice")
}

fn cluster_ip(svc: &Service) -> IpAddr {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok()).expect("clusterIP")
}

async fn start_cluster() -> Cluster {
    let proxy = ProxyConfig {
        node_name: NODE.into(),
        node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..ProxyConfig::default()
    };
    let config = Config { proxy: Some(proxy), ..Config::ephemeral() };
    let cluster = Cluster::start_with(config).await.expect("cluster");
    cluster.proxy().expect("proxy").wait_synced().await;
    cluster
}

/// A Service with one endpoint at `backend`; its ClusterIP and NodePort addresses.
async fn expose(cluster: &Cluster, name: &str, backend: SocketAddr) -> (SocketAddr, SocketAddr) {
    let services: Api<Service> = Api::default_namespaced(cluster.client());
    let slices: Api<EndpointSlice> = Api::default_namespaced(cluster.client());
    let svc = services.create(&PostParams::default(), &service(name, "NodePort")).await.expect("service");
    slices.create(&PostParams::default(), &slice(name, backend)).await.expect("slice");
    let node_port = svc.spec.as_ref().and_then(|s| s.ports.as_ref()?.first()?.node_port).expect("nodePort");
    let cip = SocketAddr::new(cluster_ip(&svc), 80);
    let np = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), u16::try_from(node_port).expect("port"));
    until_connects(cip).await;
    until_connects(np).await;
    (cip, np)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (user + system) from a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Duration {
    // Fields after the parenthesised command: state is the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    // In clock ticks: USER_HZ, 100 on Linux.
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// The proxy's runtime threads.
const PROXY_THREADS: &[&str] = &["kplane-proxy", "kplane-proxy-io"];
/// The runtime threads of the cluster (API server, controllers) and of the proxy.
const ALL_THREADS: &[&str] = &["kplane-proxy", "kplane-proxy-io", "tokio-rt-worker"];

/// CPU time of this process's threads named one of `names`.
fn threads_cpu(names: &[&str]) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| names.contains(&c.trim())))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|s| stat_cpu(&s))
        .sum()
}

/// CPU time of process `pid`, all its threads.
fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| stat_cpu(&s)).unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(it: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = it.collect();
    v.sort();
    v
}

/// Waits until the runtime threads (the cluster and its proxy) use under 5% of a core over a
/// 500 ms window (at most 60 s); the CPU they used meanwhile.
async fn settle_workers() -> Duration {
    let start = threads_cpu(ALL_THREADS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = threads_cpu(ALL_THREADS);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if threads_cpu(ALL_THREADS) - before < Duration::from_millis(25) || Instant::now() > deadline {
            return threads_cpu(ALL_THREADS) - start;
        }
    }
}

/// Switches slice `s0-1` between the two backends once per round and times each switch until a
/// new connection to `s0` reaches the new backend: (total, API write acknowledged, round,
/// connections tried) per round.
async fn change_samples(
    services: &Api<Service>,
    slices: &Api<EndpointSlice>,
    rounds: std::ops::Range<usize>,
    (old_addr, new_addr): (SocketAddr, SocketAddr),
) -> Vec<(Duration, Duration, usize, u32)> {
    let target = services.get("s0").await.expect("get");
    let addr = SocketAddr::new(cluster_ip(&target), 80);
    let mut out = Vec::new();
    for round in rounds {
        let (to, name) = if round % 2 == 0 { (new_addr, "new") } else { (old_addr, "old") };
        let mut s = slices.get("s0-1").await.expect("slice");
        let resource_version = s.resource_version();
        s = slice("s0", to);
        s.metadata.resource_version = resource_version;
        let t = Instant::now();
        slices.replace("s0-1", &PostParams::default(), &s).await.expect("replace");
        let written = t.elapsed();
        let mut tries = 0u32;
        loop {
            tries += 1;
            if let Ok(stream) = TcpStream::connect(addr).await {
                let mut line = String::new();
                let _ = BufReader::new(stream).read_line(&mut line).await;
                if line.trim() == name {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(10), "the change never applied");
        }
        out.push((t.elapsed(), written, round, tries));
    }
    out
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    println!("# kplane-bench-proxy (load before: {})\n", load());
    let cluster = start_cluster().await;

    if a.wants("throughput") {
        let backend = bind("127.0.0.1:0");
        let direct = backend.local_addr().expect("addr");
        spawn_backend(backend, sink);
        let (cip, _) = expose(&cluster, "bulk", direct).await;
        let hap_addr: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let hap = haproxy(hap_addr, direct, dir.path());
        until_connects(hap_addr).await;
        let hap_pid = hap.0.id();
        // Three rounds, the paths interleaved, so a burst of load elsewhere hits all of them.
        let (mut d, mut k, mut h) = (Vec::new(), Vec::new(), Vec::new());
        let (mut k_cpu, mut h_cpu) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..3 {
            d.push(bulk(direct).await);
            let before = threads_cpu(PROXY_THREADS);
            k.push(bulk(cip).await);
            k_cpu += threads_cpu(PROXY_THREADS) - before;
            let before = process_cpu(hap_pid);
            h.push(bulk(hap_addr).await);
            h_cpu += process_cpu(hap_pid) - before;
        }
        drop(hap);
        let (d, k, h) = (median(d), median(k), median(h));
        let per_gib = |cpu: Duration| {
            format!("{:.0}", cpu.as_secs_f64() * 1000.0 / 3.0 / (BULK_BYTES as f64 / (1u64 << 30) as f64))
        };
        println!("## Bulk TCP, 1 GiB one connection (median of 3 rounds)\n");
        println!("| path | MB/s | vs direct | relay CPU ms per GiB |\n|---|---:|---:|---:|");
        println!("| direct | {d:.0} | 1.00 | – |");
        println!("| kplane ClusterIP | {k:.0} | {:.2} | {} |", k / d, per_gib(k_cpu));
        println!("| haproxy (tcp mode) | {h:.0} | {:.2} | {} |", h / d, per_gib(h_cpu));
        println!();
    }

    if a.wants("http") {
        let backend = bind("127.0.0.1:0");
        let direct = backend.local_addr().expect("addr");
        spawn_backend(backend, http_hello);
        let (cip, np) = expose(&cluster, "web", direct).await;
        let hap_addr: SocketAddr = "127.0.0.1:18082".parse().expect("addr");
        let hap = haproxy(hap_addr, direct, dir.path());
        until_connects(hap_addr).await;
        for (title, close) in [("keep-alive, 64 connections", false), ("one connection per request", true)] {
            println!("## HTTP with wrk -t1 -c64 -d{}s, {title} (median of {} rounds)\n", a.seconds, a.rounds);
            println!(
                "| path | requests/s | p99 ms | vs direct | vs haproxy | forwarder CPU µs per request |\n\
                 |---|---:|---:|---:|---:|---:|"
            );
            let paths = [("direct", direct), ("haproxy", hap_addr), ("ClusterIP", cip), ("NodePort", np)];
            // The paths take turns each round, so load from elsewhere falls on all of them.
            let mut rps = vec![Vec::new(); paths.len()];
            let mut p99 = vec![Vec::new(); paths.len()];
            let mut cpu = vec![Vec::new(); paths.len()];
            for _ in 0..a.rounds {
                for (i, (name, addr)) in paths.iter().enumerate() {
                    // The forwarder's CPU: haproxy's process, or the proxy's threads.
                    let forwarder_cpu = || match *name {
                        "direct" => Duration::ZERO,
                        "haproxy" => process_cpu(hap.0.id()),
                        _ => threads_cpu(PROXY_THREADS),
                    };
                    let before = forwarder_cpu();
                    let run = wrk(*addr, a.seconds, close);
                    let spent = forwarder_cpu() - before;
                    rps[i].push(run.rps);
                    p99[i].push(run.p99_ms);
                    cpu[i].push(spent.as_secs_f64() * 1e6 / run.requests.max(1) as f64);
                }
            }
            let rps: Vec<f64> = rps.into_iter().map(median).collect();
            let p99: Vec<f64> = p99.into_iter().map(median).collect();
            let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
            for (i, (name, _)) in paths.iter().enumerate() {
                let cpu = if i == 0 { "–".to_string() } else { format!("{:.1}", cpu[i]) };
                println!(
                    "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {cpu} |",
                    rps[i],
                    p99[i],
                    rps[i] / rps[0],
                    rps[i] / rps[1]
                );
            }
            println!();
        }
    }

    if a.wants("change") {
        let old = bind("127.100.0.1:8080");
        let new = bind("127.100.0.2:8080");
        let (old_addr, new_addr) = (old.local_addr().expect("addr"), new.local_addr().expect("addr"));
        spawn_backend(old, greeter("old"));
        spawn_backend(new, greeter("new"));
        let services: Api<Service> = Api::default_namespaced(cluster.client());
        let slices: Api<EndpointSlice> = Api::default_namespaced(cluster.client());
        let start = Instant::now();
        // At most 200 Services in flight at once.
        for chunk in (0..a.services).collect::<Vec<_>>().chunks(200) {
            futures::future::join_all(chunk.iter().map(|i| {
                let (services, slices) = (services.clone(), slices.clone());
                async move {
                    let name = format!("s{i}");
                    services.create(&PostParams::default(), &service(&name, "ClusterIP")).await.expect("service");
                    slices.create(&PostParams::default(), &slice(&name, old_addr)).await.expect("slice");
                }
            }))
            .await;
        }
        let last = services.get(&format!("s{}", a.services - 1)).await.expect("get");
        until_connects(SocketAddr::new(cluster_ip(&last), 80)).await;
        let listening = cluster.proxy().expect("proxy").listeners().len();
        let created = start.elapsed();
        // The controllers are still digesting the burst of 20,000 creations (the proxy is done:
        // every listener is open): sample a few changes now, then again once the runtime is idle.
        let busy = change_samples(&services, &slices, 0..20, (old_addr, new_addr)).await;
        let settle = Instant::now();
        let busy_cpu = settle_workers().await;
        println!("## EndpointSlice change → first connection using it\n");
        println!(
            "{} Services with one endpoint each created and listening in {:.1} s ({listening} listeners). \
             Right after, while the controllers still digest the burst, {} changes: p50 {:.2} ms, max {:.2} ms. \
             The runtime workers then used {:.1} s of CPU over {:.1} s before going idle.\n",
            a.services,
            created.as_secs_f64(),
            busy.len(),
            ms(percentile(&sorted(busy.iter().map(|d| d.0)), 0.5)),
            ms(sorted(busy.iter().map(|d| d.0)).last().copied().unwrap_or_default()),
            busy_cpu.as_secs_f64(),
            settle.elapsed().as_secs_f64(),
        );
        let mut detail = change_samples(&services, &slices, 20..220, (old_addr, new_addr)).await;
        let mut samples: Vec<Duration> = detail.iter().map(|d| d.0).collect();
        samples.sort();
        detail.sort();
        println!("| samples | p50 ms | p90 ms | p99 ms | max ms | goal |\n|---:|---:|---:|---:|---:|---|");
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | p99 < 10 ms |\n",
            samples.len(),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.9)),
            ms(percentile(&samples, 0.99)),
            ms(samples[samples.len() - 1])
        );
        println!(
            "Slowest samples: round, total ms, of which the API write (until acknowledged) ms, connections tried:\n"
        );
        for (total, written, round, tries) in detail.iter().rev().take(5) {
            println!("- round {round}: {:.2} ms, write {:.2} ms, {tries} tries", ms(*total), ms(*written));
        }
        let writes = sorted(detail.iter().map(|d| d.1));
        println!(
            "\nThe API write alone: p50 {:.2} ms, p99 {:.2} ms.\n",
            ms(percentile(&writes, 0.5)),
            ms(percentile(&writes, 0.99))
        );
    }
    println!("(load after: {})", load());
}
