//! Cluster DNS figures (issue 6), each against a baseline from the same run (all traffic on
//! loopback): `dnsperf` queries/s and latency for a mix of Service A, headless A, SRV and NXDOMAIN
//! questions over 10,000 Services, against kplane's DNS server and against Knot DNS serving the same
//! records as a static `cluster.local` zone; then the time from a Service create to the first UDP
//! answer that carries its ClusterIP.
//!
//! Before the timed runs, a sample of the questions is asked of both servers with a hand-built query,
//! and every answer (rcode, A addresses, SRV priority/weight/port/target) is checked against what
//! CoreDNS's `kubernetes` plugin answers for those objects; the dnsperf runs check the response
//! codes (the throughput run: the NOERROR/NXDOMAIN split; the fixed-rate run: every answer's rcode
//! by its name). A wrong answer fails the run.
//!
//! Needs `dnsperf` and `knotd` (Debian packages `dnsperf`, `knot`) on PATH.
//! `cargo build --release -p kplane-e2e --bin kplane-bench-dns && target/release/kplane-bench-dns`
//! Flags: `--only throughput,latency,update`, `--services N` (default 10000), `--headless N` (200),
//! `--seconds S` (dnsperf -l, 10), `--clients C` (dnsperf -c, 4), `--outstanding Q` (dnsperf -q, 256),
//! `--rate R` (the fixed-rate run's -Q, 20000), `--runs N` (throughput runs per server, alternating, 1),
//! `--updates N` (200), `--verify N` (questions checked per server, 3000), `--quick`.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kplane::{Cluster, Config};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const DOMAIN: &str = "cluster.local";
const NAMESPACES: usize = 4;
const IN_FLIGHT: usize = 200;
const ENDPOINTS_PER_HEADLESS: usize = 3;
const TTL: u32 = 5;
/// Lines in the dnsperf query file (it is replayed from the start when exhausted).
const QUERY_LINES: usize = 50_000;
/// CoreDNS's published figure on 2 vCPUs (issue 6).
const COREDNS_QPS: f64 = 33_669.0;

/// Between two questions of the create → answer poller.
const POLL_PAUSE: Duration = Duration::from_micros(200);

const A: u16 = 1;
const SRV: u16 = 33;
const SOA: u16 = 6;

struct Args {
    only: Option<Vec<String>>,
    services: usize,
    headless: usize,
    seconds: u64,
    clients: usize,
    outstanding: usize,
    rate: u64,
    runs: usize,
    updates: usize,
    verify: usize,
}

fn args() -> Args {
    let mut a = Args {
        only: None,
        services: 10_000,
        headless: 200,
        seconds: 10,
        clients: 4,
        outstanding: 256,
        rate: 20_000,
        runs: 1,
        updates: 200,
        verify: 3000,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> usize {
        v.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{flag} takes a number"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--only" => a.only = it.next().map(|s| s.split(',').map(String::from).collect()),
            "--services" => a.services = num(it.next(), &flag),
            "--headless" => a.headless = num(it.next(), &flag),
            "--seconds" => a.seconds = num(it.next(), &flag) as u64,
            "--clients" => a.clients = num(it.next(), &flag),
            "--outstanding" => a.outstanding = num(it.next(), &flag),
            "--rate" => a.rate = num(it.next(), &flag) as u64,
            "--runs" => a.runs = num(it.next(), &flag).max(1),
            "--updates" => a.updates = num(it.next(), &flag),
            "--verify" => a.verify = num(it.next(), &flag),
            "--quick" => {
                a.services = 2000;
                a.headless = 50;
                a.seconds = 3;
                a.updates = 50;
                a.verify = 500;
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!((1..=16_000).contains(&a.headless), "--headless: 1 to 16000 (endpoint addresses come from 127.250.0.0/16)");
    assert!(a.services > 0, "--services: at least 1");
    a
}

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|p| p == part))
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// User + system CPU time of a process (all its threads); this process when `pid` is None. Clock
/// ticks of 10 ms (`getconf CLK_TCK` is 100 on Linux in practice).
fn cpu_time(pid: Option<u32>) -> Duration {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else { return Duration::ZERO };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ---- the records --------------------------------------------------------------------------------

/// The objects the bench creates, and so the records both servers must hold.
struct Records {
    /// (namespace, name, ClusterIP).
    services: Vec<(String, String, Ipv4Addr)>,
    /// (namespace, name, ready endpoint addresses).
    headless: Vec<(String, String, Vec<Ipv4Addr>)>,
}

fn namespace_of(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

fn headless_ips(j: usize) -> Vec<Ipv4Addr> {
    let base = j * 4;
    (1..=ENDPOINTS_PER_HEADLESS)
        .map(|k| Ipv4Addr::new(127, 250, (base >> 8) as u8, (base & 255) as u8 + k as u8))
        .collect()
}

/// CoreDNS `endpointHostname` for an address without a hostname: the dashed IP.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn service_name(ns: &str, name: &str) -> String {
    format!("{name}.{ns}.svc.{DOMAIN}")
}

/// What a question must get back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    NxDomain,
    A(BTreeSet<Ipv4Addr>),
    /// (priority, weight, port, target without the trailing dot, lower case).
    Srv(BTreeSet<(u16, u16, u16, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    ServiceA,
    HeadlessA,
    ServiceSrv,
    HeadlessSrv,
    NxDomain,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::ServiceA => "Service A",
            Kind::HeadlessA => "headless A",
            Kind::ServiceSrv => "Service SRV (_http._tcp)",
            Kind::HeadlessSrv => "headless SRV (_http._tcp)",
            Kind::NxDomain => "NXDOMAIN (in the zone)",
        }
    }
}

struct Question {
    kind: Kind,
    name: String,
    qtype: u16,
    expect: Expect,
}

/// xorshift64*: a fixed sequence, so every run asks the same questions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

impl Records {
    /// One question of `kind` about a random object.
    fn question(&self, kind: Kind, rng: &mut Rng) -> Question {
        match kind {
            Kind::ServiceA => {
                let (ns, name, ip) = &self.services[rng.below(self.services.len())];
                Question { kind, name: service_name(ns, name), qtype: A, expect: Expect::A([*ip].into()) }
            }
            Kind::ServiceSrv => {
                let (ns, name, _) = &self.services[rng.below(self.services.len())];
                let target = service_name(ns, name);
                Question {
                    kind,
                    name: format!("_http._tcp.{target}"),
                    qtype: SRV,
                    expect: Expect::Srv([(0, 100, 80, target)].into()),
                }
            }
            Kind::HeadlessA => {
                let (ns, name, ips) = &self.headless[rng.below(self.headless.len())];
                Question {
                    kind,
                    name: service_name(ns, name),
                    qtype: A,
                    expect: Expect::A(ips.iter().copied().collect()),
                }
            }
            Kind::HeadlessSrv => {
                let (ns, name, ips) = &self.headless[rng.below(self.headless.len())];
                let svc = service_name(ns, name);
                let weight = (100 / ips.len()) as u16;
                let srv = ips.iter().map(|ip| (0, weight, 8080, format!("{}.{svc}", dashed(*ip)))).collect();
                Question { kind, name: format!("_http._tcp.{svc}"), qtype: SRV, expect: Expect::Srv(srv) }
            }
            Kind::NxDomain => {
                let i = rng.below(self.services.len());
                // Half: no such Service in an existing namespace; half: no such namespace.
                let name = if i.is_multiple_of(2) {
                    service_name(&namespace_of(i), &format!("nx{i}"))
                } else {
                    service_name("nsmissing", &format!("s{i}"))
                };
                Question { kind, name, qtype: A, expect: Expect::NxDomain }
            }
        }
    }

    /// The query mix: 40 % Service A, 20 % headless A, 15 % Service SRV, 5 % headless SRV, 20 % NXDOMAIN.
    fn questions(&self, n: usize) -> Vec<Question> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..n)
            .map(|_| {
                let kind = match rng.below(20) {
                    0..8 => Kind::ServiceA,
                    8..12 => Kind::HeadlessA,
                    12..15 => Kind::ServiceSrv,
                    15 => Kind::HeadlessSrv,
                    _ => Kind::NxDomain,
                };
                self.question(kind, &mut rng)
            })
            .collect()
    }

    /// The same records as a static zone, as kplane answers them (TTL 5, SOA as `plugin.SOA`).
    fn zone_file(&self) -> String {
        let mut z = String::with_capacity(self.services.len() * 120 + self.headless.len() * 600);
        let _ = writeln!(z, "$ORIGIN {DOMAIN}.\n$TTL {TTL}");
        let _ = writeln!(z, "@ {TTL} IN SOA ns.dns.{DOMAIN}. hostmaster.{DOMAIN}. 1 7200 1800 86400 {TTL}");
        let _ = writeln!(z, "@ IN NS ns.dns.{DOMAIN}.\nns.dns IN A 127.0.0.1");
        for (ns, name, ip) in &self.services {
            let _ = writeln!(z, "{name}.{ns}.svc IN A {ip}");
            let _ = writeln!(z, "_http._tcp.{name}.{ns}.svc IN SRV 0 100 80 {name}.{ns}.svc.{DOMAIN}.");
        }
        for (ns, name, ips) in &self.headless {
            let weight = 100 / ips.len();
            for ip in ips {
                let host = dashed(*ip);
                let _ = writeln!(z, "{name}.{ns}.svc IN A {ip}");
                let _ = writeln!(z, "{host}.{name}.{ns}.svc IN A {ip}");
                let _ =
                    writeln!(z, "_http._tcp.{name}.{ns}.svc IN SRV 0 {weight} 8080 {host}.{name}.{ns}.svc.{DOMAIN}.");
            }
        }
        z
    }
}

// ---- the cluster --------------------------------------------------------------------------------

fn json_to<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn cluster_ip_service(name: &str) -> Service {
    json_to(json!({
        "metadata": {"name": name},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    }))
}

fn headless_service(name: &str) -> Service {
    json_to(json!({
        "metadata": {"name": name},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    }))
}

fn ready_slice(service: &str, ips: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> =
        ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect();
    json_to(json!({
        "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }))
}

fn ipv4_of(svc: &Service) -> Ipv4Addr {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok()).expect("an IPv4 clusterIP")
}

/// Namespaces, `services` ClusterIP Services and `headless` headless ones with ready endpoints,
/// `IN_FLIGHT` creates at a time.
async fn populate(cluster: &Cluster, services: usize, headless: usize) -> Records {
    let client = cluster.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..NAMESPACES {
        let ns: Namespace = json_to(json!({"metadata": {"name": namespace_of(i)}}));
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
    }
    let created: Vec<_> = futures::stream::iter(0..services)
        .map(|i| {
            let client = client.clone();
            async move {
                let (ns, name) = (namespace_of(i), format!("s{i}"));
                let api: Api<Service> = Api::namespaced(client, &ns);
                let svc = api.create(&PostParams::default(), &cluster_ip_service(&name)).await.expect("service");
                (ns, name, ipv4_of(&svc))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let make_headless = |j: usize| {
        let client = client.clone();
        async move {
            let (ns, name, ips) = (namespace_of(j), format!("h{j}"), headless_ips(j));
            let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
            let slices: Api<EndpointSlice> = Api::namespaced(client, &ns);
            svcs.create(&PostParams::default(), &headless_service(&name)).await.expect("headless service");
            slices.create(&PostParams::default(), &ready_slice(&name, &ips)).await.expect("slice");
            (ns, name, ips)
        }
    };
    let mut headless: Vec<_> =
        futures::stream::iter(0..headless - 1).map(make_headless).buffer_unordered(IN_FLIGHT).collect().await;
    // The last headless Service and its slice are written after everything else: once DNS answers
    // them, every earlier Service and slice is in its reflector's store (each watch is in order).
    headless.push(make_headless(headless.len()).await);
    let mut records = Records { services: created, headless };
    records.services.sort_by_key(|(_, name, _)| name[1..].parse::<usize>().unwrap_or(0));
    records.headless.sort_by_key(|(_, name, _)| name[1..].parse::<usize>().unwrap_or(0));
    records
}

// ---- a DNS client -------------------------------------------------------------------------------

fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b
}

/// A decoded reply: its id, rcode and the answer section's A and SRV data.
#[derive(Debug, Default)]
struct Reply {
    id: u16,
    rcode: u8,
    a: BTreeSet<Ipv4Addr>,
    srv: BTreeSet<(u16, u16, u16, String)>,
    other_answers: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The name at `at` (following compression pointers), lower case without the trailing dot, and the
/// offset after it.
fn read_name(b: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *b.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = usize::from(be16(b, at)? & 0x3fff);
            continue;
        }
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), end.unwrap_or(at + 1)));
        }
        labels.push(String::from_utf8_lossy(b.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    None
}

fn parse_reply(b: &[u8]) -> Option<Reply> {
    let mut r = Reply { id: be16(b, 0)?, rcode: b.get(3)? & 0x0f, ..Reply::default() };
    let (qd, an) = (be16(b, 4)?, be16(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(b, at)?.1 + 4;
    }
    for _ in 0..an {
        let (_, after) = read_name(b, at)?;
        let (rtype, len) = (be16(b, after)?, usize::from(be16(b, after + 8)?));
        let data = after + 10;
        let rdata = b.get(data..data + len)?;
        match rtype {
            A if len == 4 => {
                r.a.insert(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
            }
            SRV if len >= 7 => {
                let target = read_name(b, data + 6)?.0;
                r.srv.insert((be16(b, data)?, be16(b, data + 2)?, be16(b, data + 4)?, target));
            }
            _ => r.other_answers += 1,
        }
        at = data + len;
    }
    Some(r)
}

struct Client {
    socket: UdpSocket,
    next_id: u16,
    buf: Vec<u8>,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.connect(server).await.expect("connect");
        Client { socket, next_id: 1, buf: vec![0; 65535] }
    }

    /// One question; `None` if no reply came within `wait`.
    async fn ask_once(&mut self, name: &str, qtype: u16, wait: Duration) -> Option<Reply> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.socket.send(&query_bytes(id, name, qtype)).await.ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buf)).await.ok()?.ok()?;
            match parse_reply(&self.buf[..n]) {
                Some(r) if r.id == id => return Some(r),
                _ => continue, // a late reply to an earlier question
            }
        }
    }

    async fn ask(&mut self, name: &str, qtype: u16) -> Reply {
        for _ in 0..5 {
            if let Some(r) = self.ask_once(name, qtype, Duration::from_secs(1)).await {
                return r;
            }
        }
        panic!("no reply to {name} type {qtype}");
    }
}

/// Ask for `qname`'s A record every `POLL_PAUSE` until it holds `ip`: when that answer came, the
/// number of questions, and the socket back.
fn poll_until(
    socket: std::net::UdpSocket,
    qname: &str,
    ip: Ipv4Addr,
    sent: Instant,
) -> (Instant, usize, std::net::UdpSocket) {
    let mut buf = vec![0u8; 65535];
    let mut polls = 0usize;
    loop {
        polls += 1;
        let id = polls as u16;
        socket.send(&query_bytes(id, qname, A)).expect("send");
        while let Ok(n) = socket.recv(&mut buf) {
            let Some(r) = parse_reply(&buf[..n]) else { continue };
            if r.id != id {
                continue; // a late reply to an earlier question
            }
            if r.rcode == 0 && r.a.contains(&ip) {
                return (Instant::now(), polls, socket);
            }
            assert!(r.rcode == 3 || r.rcode == 0, "{qname}: rcode {} while waiting", r.rcode);
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "{qname} never answered");
        std::thread::sleep(POLL_PAUSE);
    }
}

fn matches(reply: &Reply, expect: &Expect) -> bool {
    match expect {
        Expect::NxDomain => reply.rcode == 3 && reply.a.is_empty() && reply.srv.is_empty(),
        Expect::A(ips) => reply.rcode == 0 && &reply.a == ips && reply.srv.is_empty() && reply.other_answers == 0,
        Expect::Srv(srv) => reply.rcode == 0 && &reply.srv == srv && reply.a.is_empty() && reply.other_answers == 0,
    }
}

/// Ask `server` every `step`-th question; panics on the first wrong answer.
async fn verify(server: SocketAddr, who: &str, questions: &[Question], count: usize) -> usize {
    let mut client = Client::new(server).await;
    let step = (questions.len() / count.max(1)).max(1);
    let mut checked = 0;
    for q in questions.iter().step_by(step).take(count) {
        let reply = client.ask(&q.name, q.qtype).await;
        assert!(
            matches(&reply, &q.expect),
            "{who} answered {} {} wrongly: got rcode {} A {:?} SRV {:?} (+{} other), expected {:?}",
            q.name,
            q.qtype,
            reply.rcode,
            reply.a,
            reply.srv,
            reply.other_answers,
            q.expect
        );
        checked += 1;
    }
    checked
}

// ---- Knot DNS -----------------------------------------------------------------------------------

struct Knot {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP (right now).
fn free_port() -> u16 {
    for _ in 0..32 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// `knotd` in the foreground serving `zone` as `cluster.local`, from files in `dir`.
async fn start_knot(dir: &Path, zone: &str) -> Knot {
    let port = free_port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::fs::write(dir.join(format!("{DOMAIN}.zone")), zone).expect("zone file");
    std::fs::create_dir_all(dir.join("db")).expect("db dir");
    let d = dir.display();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n\
         database:\n    storage: {d}/db\n\
         template:\n  - id: default\n    storage: {d}\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    \
         zonefile-load: whole\n    journal-content: none\n\
         log:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: {DOMAIN}\n"
    );
    let conf_path = dir.join("knot.conf");
    std::fs::write(&conf_path, conf).expect("knot.conf");
    let log = std::fs::File::create(dir.join("knot.log")).expect("knot.log");
    let child = tokio::process::Command::new("knotd")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("knotd (apt-get install knot)");
    let knot = Knot { child, addr };
    let mut client = Client::new(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = client.ask_once(DOMAIN, SOA, Duration::from_millis(200)).await
            && r.rcode == 0
        {
            return knot;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("knot.log")).unwrap_or_default();
            panic!("knotd never served {DOMAIN} (check the zone with `knotc -c {}/knot.conf zone-check`):\n{log}", d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- dnsperf ------------------------------------------------------------------------------------

/// What a dnsperf run printed, and the servers' CPU.
#[derive(Debug, Default, Clone)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    rcodes: Vec<(String, u64)>,
    qps: f64,
    avg_ms: f64,
    min_ms: f64,
    max_ms: f64,
    stddev_ms: f64,
    server_cpu: Duration,
    client_cpu: Duration,
    wall: Duration,
    /// Verbose runs: each answer's latency (ms), and answers whose rcode was not the expected one.
    latencies: Vec<f64>,
    wrong: Vec<String>,
    timeouts: u64,
}

impl Perf {
    fn rcode(&self, name: &str) -> u64 {
        self.rcodes.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    }

    fn us_per_query(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.completed.max(1) as f64
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim)
}

fn first_number(s: &str) -> f64 {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|t| !t.is_empty())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0)
}

fn parse_dnsperf(text: &str) -> Perf {
    let mut p = Perf::default();
    let num = |key: &str| field(text, key).map(first_number).unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
    p.sent = num("Queries sent:") as u64;
    p.completed = num("Queries completed:") as u64;
    p.lost = num("Queries lost:") as u64;
    p.qps = num("Queries per second:");
    let avg = field(text, "Average Latency (s):").unwrap_or_default();
    p.avg_ms = first_number(avg) * 1e3;
    p.min_ms = avg.split("min ").nth(1).map(first_number).unwrap_or(0.0) * 1e3;
    p.max_ms = avg.split("max ").nth(1).map(first_number).unwrap_or(0.0) * 1e3;
    p.stddev_ms = num("Latency StdDev (s):") * 1e3;
    // "NOERROR 294422 (66.67%), NXDOMAIN 147212 (33.33%)"
    for part in field(text, "Response codes:").unwrap_or_default().split(',') {
        let mut words = part.split_whitespace();
        if let (Some(code), Some(n)) = (words.next(), words.next().and_then(|n| n.parse().ok())) {
            p.rcodes.push((code.to_string(), n));
        }
    }
    p
}

struct PerfRun<'a> {
    server: SocketAddr,
    server_pid: Option<u32>,
    queries: &'a Path,
    seconds: u64,
    clients: usize,
    outstanding: usize,
    /// `-Q`, and `-v` (every answer's rcode and latency, checked against `expected`).
    rate: Option<u64>,
    expected: &'a HashMap<String, &'static str>,
}

async fn dnsperf(run: PerfRun<'_>) -> Perf {
    let mut cmd = tokio::process::Command::new("dnsperf");
    cmd.args(["-s", &run.server.ip().to_string(), "-p", &run.server.port().to_string()])
        .arg("-d")
        .arg(run.queries)
        .args(["-l", &run.seconds.to_string(), "-c", &run.clients.to_string(), "-q", &run.outstanding.to_string()])
        .args(["-t", "2"]);
    if let Some(rate) = run.rate {
        cmd.args(["-Q", &rate.to_string(), "-v"]);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let (cpu0, self0) = (cpu_time(run.server_pid), cpu_time(None));
    let child0 = children_cpu();
    let start = Instant::now();
    let out = cmd.output().await.expect("dnsperf (apt-get install dnsperf)");
    let wall = start.elapsed();
    let (cpu1, self1) = (cpu_time(run.server_pid), cpu_time(None));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dnsperf failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let mut p = parse_dnsperf(&text);
    p.wall = wall;
    p.server_cpu = if run.server_pid.is_some() { cpu1 - cpu0 } else { self1 - self0 };
    p.client_cpu = children_cpu().saturating_sub(child0);
    if run.rate.is_some() {
        // "> NOERROR s1.ns1.svc.cluster.local A 0.000204"
        for line in text.lines().filter_map(|l| l.strip_prefix("> ")) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [rcode, name, _qtype, latency] = parts[..] else { continue };
            if rcode == "T" || rcode == "I" {
                p.timeouts += 1;
                continue;
            }
            p.latencies.push(latency.parse::<f64>().unwrap_or(0.0) * 1e3);
            let want = run.expected.get(name).copied().unwrap_or("?");
            if rcode != want && p.wrong.len() < 10 {
                p.wrong.push(format!("{name}: {rcode}, expected {want}"));
            }
        }
        p.latencies.sort_by(f64::total_cmp);
    }
    p
}

/// CPU time of this process's waited-for children (cutime + cstime).
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(13) + ticks(14)) * 10)
}

/// The throughput run must have answered the mix: no lost queries to speak of, only NOERROR and
/// NXDOMAIN, and NXDOMAIN's share within a point of the file's.
fn check_mix(who: &str, p: &Perf, nx_share: f64) {
    let (noerror, nx) = (p.rcode("NOERROR"), p.rcode("NXDOMAIN"));
    let others: Vec<_> = p.rcodes.iter().filter(|(c, _)| c != "NOERROR" && c != "NXDOMAIN").collect();
    assert!(others.is_empty(), "{who}: unexpected response codes {others:?}");
    assert_eq!(noerror + nx, p.completed, "{who}: every completed query is NOERROR or NXDOMAIN");
    let share = nx as f64 / p.completed.max(1) as f64;
    assert!((share - nx_share).abs() < 0.01, "{who}: NXDOMAIN share {share:.4}, the query file has {nx_share:.4}");
    assert!(p.lost as f64 <= p.sent as f64 * 0.001, "{who}: {} of {} queries lost", p.lost, p.sent);
}

// ---- main ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::Builder::new().prefix("kplane-bench-dns").tempdir().expect("tempdir");
    println!("# kplane-bench-dns (load before: {})\n", load());

    let config = Config {
        proxy: None,
        lb_pool: None,
        // Nothing is forwarded (every question is under the zone); if it were, it would stay on loopback.
        dns_upstreams: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 9))],
        ..Config::ephemeral()
    };
    let mut cluster = Cluster::start_with(config.clone()).await.expect("cluster");
    let dns = cluster.start_dns(config.dns_config("127.0.0.1:0".parse().expect("addr"))).await.expect("dns");

    let start = Instant::now();
    let records = populate(&cluster, a.services, a.headless).await;
    let created = start.elapsed();
    // The DNS server has them all once the last object written answers (see `populate`).
    let mut client = Client::new(dns).await;
    let (last_ns, last_name, last_ips) = records.headless.last().expect("headless").clone();
    let last_ips: BTreeSet<Ipv4Addr> = last_ips.into_iter().collect();
    let mut polls = 0;
    loop {
        polls += 1;
        let reply = client.ask(&service_name(&last_ns, &last_name), A).await;
        if reply.rcode == 0 && reply.a == last_ips {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the DNS server never answered {last_name}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let answered = start.elapsed();
    println!(
        "{} ClusterIP Services and {} headless Services ({} ready endpoints each, hand-made EndpointSlices) in \
         {NAMESPACES} namespaces created in {:.2} s ({IN_FLIGHT} in flight); kplane's DNS answered the last one \
         written at {:.2} s ({polls} polls).\n",
        records.services.len(),
        records.headless.len(),
        ENDPOINTS_PER_HEADLESS,
        created.as_secs_f64(),
        answered.as_secs_f64()
    );

    if a.wants("throughput") || a.wants("latency") {
        let questions = records.questions(QUERY_LINES);
        let query_file = dir.path().join("queries.txt");
        let mut text = String::with_capacity(QUERY_LINES * 48);
        let mut expected: HashMap<String, &'static str> = HashMap::new();
        let mut per_kind: std::collections::BTreeMap<Kind, usize> = Default::default();
        for q in &questions {
            let _ = writeln!(text, "{} {}", q.name, if q.qtype == SRV { "SRV" } else { "A" });
            expected.insert(q.name.clone(), if q.expect == Expect::NxDomain { "NXDOMAIN" } else { "NOERROR" });
            *per_kind.entry(q.kind).or_default() += 1;
        }
        std::fs::write(&query_file, text).expect("query file");
        let nx_share = per_kind.get(&Kind::NxDomain).copied().unwrap_or(0) as f64 / questions.len() as f64;

        let zone_dir = dir.path().join("knot");
        std::fs::create_dir_all(&zone_dir).expect("knot dir");
        let zone = records.zone_file();
        let knot = start_knot(&zone_dir, &zone).await;
        let knot_pid = knot.child.id();

        let checked_k = verify(dns, "kplane", &questions, a.verify).await;
        let checked_b = verify(knot.addr, "Knot", &questions, a.verify).await;

        println!("## Query mix ({} lines in the dnsperf file, replayed in order)\n", questions.len());
        println!("| question | share |\n|---|---:|");
        for (kind, n) in &per_kind {
            println!("| {} | {:.1} % |", kind.label(), *n as f64 * 100.0 / questions.len() as f64);
        }
        println!(
            "\nBoth servers answered {checked_k} / {checked_b} sampled questions exactly as expected (rcode, A set, \
             SRV priority/weight/port/target). Knot serves a {} KiB zone file with the same records.\n",
            zone.len() / 1024
        );

        if a.wants("throughput") {
            println!(
                "## dnsperf, UDP, unlimited rate: `dnsperf -l {} -c {} -q {} -t 2` (load before: {})\n",
                a.seconds,
                a.clients,
                a.outstanding,
                load()
            );
            println!(
                "| server | run | queries/s | avg ms | stddev ms | max ms | lost | NOERROR | NXDOMAIN | server CPU µs/query | \
                 server cores busy | dnsperf cores busy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            let mut best: HashMap<&str, f64> = HashMap::new();
            let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
            for run in 1..=a.runs {
                for (who, server, pid) in [("kplane", dns, None), ("Knot DNS", knot.addr, knot_pid)] {
                    let p = dnsperf(PerfRun {
                        server,
                        server_pid: pid,
                        queries: &query_file,
                        seconds: a.seconds,
                        clients: a.clients,
                        outstanding: a.outstanding,
                        rate: None,
                        expected: &expected,
                    })
                    .await;
                    check_mix(who, &p, nx_share);
                    let wall = p.wall.as_secs_f64();
                    println!(
                        "| {who} | {run} | {:.0} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {:.1} | {:.2} | {:.2} |",
                        p.qps,
                        p.avg_ms,
                        p.stddev_ms,
                        p.max_ms,
                        p.lost,
                        p.rcode("NOERROR"),
                        p.rcode("NXDOMAIN"),
                        p.us_per_query(p.server_cpu),
                        p.server_cpu.as_secs_f64() / wall,
                        p.client_cpu.as_secs_f64() / wall,
                    );
                    let b = best.entry(who).or_default();
                    *b = b.max(p.qps);
                    let s = sums.entry(who).or_default();
                    s.0 += p.qps;
                    s.1 += 1;
                }
            }
            let mean = |who: &str| sums.get(who).map_or(0.0, |(s, n)| s / *n as f64);
            let (k, b) = (mean("kplane"), mean("Knot DNS"));
            println!("\n(load after: {})\n", load());
            println!("| goal | measured (mean of {} run(s)) | met |\n|---|---|---|", a.runs);
            println!(
                "| kplane ≥ 0.5 × Knot DNS | {k:.0} / {b:.0} = {:.2} × | {} |",
                k / b,
                if k / b >= 0.5 { "yes" } else { "**no**" }
            );
            println!(
                "| kplane > CoreDNS's 33,669 q/s (2 vCPUs) | {k:.0} q/s | {} |\n",
                if k > COREDNS_QPS { "yes" } else { "**no**" }
            );
        }

        if a.wants("latency") {
            println!(
                "## dnsperf at a fixed {} q/s, every answer's rcode checked: `dnsperf -l {} -c {} -q {} -Q {} -v` \
                 (load before: {})\n",
                a.rate,
                a.seconds.min(5),
                a.clients,
                a.outstanding,
                a.rate,
                load()
            );
            println!(
                "| server | answers | queries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | wrong rcodes | timeouts | \
                 server CPU µs/query |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (who, server, pid) in [("kplane", dns, None), ("Knot DNS", knot.addr, knot_pid)] {
                let p = dnsperf(PerfRun {
                    server,
                    server_pid: pid,
                    queries: &query_file,
                    seconds: a.seconds.min(5),
                    clients: a.clients,
                    outstanding: a.outstanding,
                    rate: Some(a.rate),
                    expected: &expected,
                })
                .await;
                assert!(!p.latencies.is_empty(), "{who}: no verbose answers from dnsperf");
                let l = &p.latencies;
                println!(
                    "| {who} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} |",
                    l.len(),
                    p.qps,
                    percentile(l, 0.5),
                    percentile(l, 0.9),
                    percentile(l, 0.99),
                    percentile(l, 0.999),
                    l[l.len() - 1],
                    p.wrong.len(),
                    p.timeouts,
                    p.us_per_query(p.server_cpu),
                );
                assert!(p.wrong.is_empty(), "{who} answered with the wrong rcode: {:?}", p.wrong);
            }
            println!("\n(load after: {})\n", load());
        }
        drop(knot);
    }

    if a.wants("update") {
        println!(
            "## Service create → first correct answer over UDP ({} creates one at a time, {} Services present; \
             load before: {})\n",
            a.updates,
            records.services.len() + records.headless.len(),
            load()
        );
        let api: Api<Service> = Api::namespaced(cluster.client(), "ns0");
        // A blocking socket on its own thread, so the poller does not take one of the runtime's
        // workers from the server.
        let mut socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(dns).expect("connect");
        socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let (mut from_sent, mut from_returned, mut creates, mut polls) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
        let (cpu0, wall0) = (cpu_time(None), Instant::now());
        for i in 0..a.updates {
            let name = format!("u{i}");
            let qname = service_name("ns0", &name);
            let sent = Instant::now();
            let svc = api.create(&PostParams::default(), &cluster_ip_service(&name)).await.expect("create");
            let returned = Instant::now();
            let ip = ipv4_of(&svc);
            let (done, n, socket_back) =
                tokio::task::spawn_blocking(move || poll_until(socket, &qname, ip, sent)).await.expect("poller");
            socket = socket_back;
            polls += n;
            from_sent.push(done - sent);
            from_returned.push(done - returned);
            creates.push(returned - sent);
        }
        let (cpu, wall) = (cpu_time(None) - cpu0, wall0.elapsed());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("| measured from | p50 ms | p90 ms | p99 ms | max ms | goal |\n|---|---:|---:|---:|---:|---|");
        for (label, mut v, goal) in [
            ("create sent → answer", from_sent, "p99 < 10 ms"),
            ("create returned → answer", from_returned, ""),
            ("the create itself", creates, ""),
        ] {
            v.sort();
            println!(
                "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {goal} |",
                ms(percentile(&v, 0.5)),
                ms(percentile(&v, 0.9)),
                ms(percentile(&v, 0.99)),
                ms(v[v.len() - 1])
            );
        }
        println!(
            "\n{polls} UDP polls in all ({:.1} per create, one every {} µs). The process (API server, controllers, DNS, \
             poller) used {:.2} ms of CPU per create ({:.2} cores busy).\n",
            polls as f64 / a.updates.max(1) as f64,
            POLL_PAUSE.as_micros(),
            ms(cpu) / a.updates.max(1) as f64,
            cpu.as_secs_f64() / wall.as_secs_f64()
        );
    }
    println!("(load after: {})", load());
    cluster.shutdown().await;
}
