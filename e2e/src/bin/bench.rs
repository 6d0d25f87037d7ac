//! `kplane-bench`: figures for the release binary, printed as markdown tables.
//!
//! It starts `target/release/kplane` (or `$KPLANE_BIN`, or `--bin PATH`) itself and measures, over
//! HTTPS on 127.0.0.1 only:
//!
//! 1. exec → first `/readyz` 200 (median of N starts: ephemeral, fresh data dir, restart);
//! 2. idle RSS after start;
//! 3. on a `--data-dir` server: ConfigMap (1 KiB) creates/s, gets/s with p50/p99 at 1, 16 and 64
//!    clients (one connection each), and the latency of listing 1000 objects;
//! 4. watch delivery latency to 1000 watchers (one connection each) of one namespace;
//! 5. baselines from the same run: a trivial HTTPS server in this process (fixed 1 KiB JSON; the
//!    client + TLS ceiling), write + fdatasync of 1 KiB, and sled insert + flush, with ratios.
//!
//! `--quick` runs a short version; `--http1` uses keep-alive HTTP/1.1 instead of HTTP/2;
//! `--only startup,load,watch,baselines` runs some phases. The default run takes under 3 minutes.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// Size of the ConfigMap payload and of the baseline server's answer.
const PAYLOAD: usize = 1024;
/// Concurrency levels of the request phases.
const LEVELS: [usize; 3] = [1, 16, 64];
/// Objects in the list namespace.
const LIST_OBJECTS: usize = 1000;
/// The annotation the watch writer stamps with `<write>:<nanos since EPOCH>`.
const SENT_ANNOTATION: &str = "bench.kplane.io/sent";

/// The clock every timestamp in this process is relative to.
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch_nanos() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Clone)]
struct Plan {
    quick: bool,
    http1: bool,
    /// Keep the load phase's data directory (for profiling a restart over it).
    keep: bool,
    /// Extra arguments for `kplane serve` (e.g. `--no-proxy`), for experiments.
    server_args: Vec<String>,
    bin: PathBuf,
    base_dir: PathBuf,
    phases: Vec<String>,
    starts: usize,
    level_time: Duration,
    create_max: usize,
    get_max: usize,
    list_reps: usize,
    watchers: usize,
    watch_writes: usize,
    baseline_time: Duration,
    fsync_time: Duration,
}

impl Plan {
    fn from_args() -> Result<Plan> {
        let mut quick = false;
        let mut http1 = false;
        let mut keep = false;
        let mut server_args = Vec::new();
        let mut bin = std::env::var_os("KPLANE_BIN").map(PathBuf::from);
        let mut base_dir = std::env::temp_dir();
        let mut phases: Vec<String> = ["startup", "load", "watch", "baselines"].map(String::from).to_vec();
        let mut watchers = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--http1" => http1 = true,
                "--keep" => keep = true,
                "--server-arg" => server_args.push(args.next().context("--server-arg needs a value")?),
                "--bin" => bin = Some(args.next().context("--bin needs a path")?.into()),
                "--dir" => base_dir = args.next().context("--dir needs a directory")?.into(),
                "--watchers" => watchers = Some(args.next().context("--watchers needs a number")?.parse()?),
                "--only" => {
                    phases = args.next().context("--only needs phases")?.split(',').map(String::from).collect();
                    for p in &phases {
                        if !["startup", "load", "watch", "baselines"].contains(&p.as_str()) {
                            bail!("unknown phase {p:?} (startup, load, watch, baselines)");
                        }
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: kplane-bench [--quick] [--http1] [--bin PATH] [--dir DIR] [--watchers N] \
                         [--only startup,load,watch,baselines] [--keep] [--server-arg ARG]...\n\
                         Starts the release kplane binary (--bin, $KPLANE_BIN, or target/release/kplane) and prints \
                         markdown tables of its figures next to same-run baselines."
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        let bin = match bin {
            Some(b) => b,
            None => default_bin()?,
        };
        if !bin.is_file() {
            bail!(
                "{} is not a file: build it with `cargo build --release --bin kplane` or set KPLANE_BIN",
                bin.display()
            );
        }
        let q = |quick_value: usize, full_value: usize| if quick { quick_value } else { full_value };
        let secs =
            |quick_value: u64, full_value: u64| Duration::from_secs(if quick { quick_value } else { full_value });
        Ok(Plan {
            quick,
            http1,
            keep,
            server_args,
            bin,
            base_dir,
            phases,
            starts: q(3, 10),
            level_time: secs(1, 5),
            create_max: q(5_000, 50_000),
            get_max: q(30_000, 300_000),
            list_reps: q(5, 30),
            watchers: watchers.unwrap_or(1000),
            watch_writes: q(10, 50),
            baseline_time: secs(1, 3),
            fsync_time: secs(1, 3),
        })
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// `target/release/kplane` next to this binary, else relative to the working directory.
fn default_bin() -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("kplane");
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    Ok(PathBuf::from("target/release/kplane"))
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Clone, Copy, Default)]
struct Lat {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Lat {
    if v.is_empty() {
        return Lat::default();
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Lat { p50: at(0.50), p99: at(0.99), max: v[v.len() - 1] }
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 { format!("{m:.2}") } else { format!("{m:.1}") }
}

fn per_sec(n: f64) -> String {
    if n >= 100.0 { format!("{n:.0}") } else { format!("{n:.1}") }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "–".into() }
}

// ---------------------------------------------------------------------------------------------
// TLS

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate: only for the readiness probe, which runs before the
/// kubeconfig (and so the CA) exists. Signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn probe_tls_config() -> Result<Arc<ClientConfig>> {
    let p = provider();
    let config = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(p)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn client_tls_config(ca: &[CertificateDer<'static>], http1: bool) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if http1 { b"http/1.1".to_vec() } else { b"h2".to_vec() }];
    Ok(Arc::new(config))
}

fn localhost() -> ServerName<'static> {
    ServerName::IpAddress(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

// ---------------------------------------------------------------------------------------------
// The kplane process

struct Server {
    child: Child,
    port: u16,
    kubeconfig: PathBuf,
    stderr_log: PathBuf,
    /// exec → first `/readyz` 200.
    ready: Duration,
    /// exec → the `kplane ready:` line on stdout.
    ready_line: Option<Duration>,
}

/// A free port on 127.0.0.1 (bound then released; the server binds it right after).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// One GET /readyz over a fresh TLS connection; Ok(true) on 200.
fn probe_readyz(port: u16, tls: &Arc<ClientConfig>) -> std::io::Result<bool> {
    let tcp = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ClientConnection::new(tls.clone(), localhost()).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

/// Starts `kplane serve` and waits (polling every ~200 µs) for `/readyz` to answer 200.
fn start_server(plan: &Plan, data_dir: Option<&Path>, work: &Path, probe: &Arc<ClientConfig>) -> Result<Server> {
    let port = free_port()?;
    let kubeconfig = work.join("kubeconfig.yaml");
    let stderr_log = work.join(format!("kplane-{port}.stderr"));
    let _ = std::fs::remove_file(&kubeconfig);
    let mut cmd = Command::new(&plan.bin);
    cmd.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--kubeconfig").arg(&kubeconfig);
    match data_dir {
        Some(d) => cmd.arg("--data-dir").arg(d),
        None => cmd.arg("--ephemeral"),
    };
    cmd.args(&plan.server_args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr_log)?);
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", plan.bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("kplane ready:") {
                let _ = line_tx.send(t0.elapsed());
            }
        }
    });
    let deadline = t0 + Duration::from_secs(30);
    let ready = loop {
        if let Ok(true) = probe_readyz(port, probe) {
            break t0.elapsed();
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
            bail!("kplane exited with {status} before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("kplane was not ready after 30 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let ready_line = line_rx.recv_timeout(Duration::from_secs(5)).ok();
    Ok(Server { child, port, kubeconfig, stderr_log, ready, ready_line })
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/{}/status", self.pid()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Whether the server still runs, and the end of its stderr: for errors.
    fn post_mortem(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "kplane is still running".to_string(),
            Ok(Some(status)) => format!("kplane exited: {status}"),
            Err(e) => format!("kplane state unknown: {e}"),
        };
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let tail: String = log.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect();
        format!("{state}; its stderr ends with:\n{tail}")
    }

    /// SIGTERM, then SIGKILL if it has not exited after 10 s.
    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("kplane {} did not stop on SIGTERM; killing it", self.pid());
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Where to send requests, authenticated as the kubeconfig says.
    fn target(&self, http1: bool) -> Result<Arc<Target>> {
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let doc: serde_json::Value = serde_saphyr::from_str(&text).context("parsing the kubeconfig")?;
        let ca_b64 = doc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .context("no certificate-authority-data in the kubeconfig")?;
        let token = doc["users"][0]["user"]["token"].as_str().context("no token in the kubeconfig")?;
        let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca_b64.trim())?;
        let ca: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut &ca_pem[..]).collect::<Result<_, _>>().context("CA PEM")?;
        Ok(Arc::new(Target {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            tls: client_tls_config(&ca, http1)?,
            auth: Some(format!("Bearer {token}")),
            http1,
        }))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client: one connection per client, HTTP/2 (default) or keep-alive HTTP/1.1

struct Target {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    auth: Option<String>,
    http1: bool,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

struct Client {
    sender: Sender,
    target: Arc<Target>,
}

impl Client {
    async fn connect(target: &Arc<Target>) -> Result<Client> {
        let tcp = tokio::net::TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(target.tls.clone()).connect(localhost(), tcp).await?;
        let io = TokioIo::new(tls);
        let sender = if target.http1 {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(sender)
        } else {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new()).handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(sender)
        };
        Ok(Client { sender, target: target.clone() })
    }

    fn build(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Request<Full<Bytes>>> {
        let uri = if self.target.http1 { path.to_string() } else { format!("https://{}{path}", self.target.addr) };
        let mut req = Request::builder().method(method).uri(uri).header(header::ACCEPT, "application/json");
        if self.target.http1 {
            req = req.header(header::HOST, self.target.addr.to_string());
        }
        if let Some(auth) = &self.target.auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(req.body(Full::new(body.unwrap_or_default()))?)
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        Ok(match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        })
    }

    /// A request with its whole response body.
    async fn call(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Result<(StatusCode, Bytes)> {
        let req = self.build(method, path, body)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

fn payload() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| "x".repeat(PAYLOAD))
}

fn configmap(name: &str, annotation: Option<&str>) -> Bytes {
    let annotations = match annotation {
        Some(a) => format!(r#","annotations":{{"{SENT_ANNOTATION}":"{a}"}}"#),
        None => String::new(),
    };
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"{annotations}}},"data":{{"payload":"{}"}}}}"#,
        payload()
    ))
}

async fn create_namespace(target: &Arc<Target>, name: &str) -> Result<()> {
    let mut c = Client::connect(target).await?;
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    let (status, body) = c.call(Method::POST, "/api/v1/namespaces", Some(Bytes::from(body))).await?;
    if status != StatusCode::CREATED {
        bail!("creating namespace {name}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Closed-loop load at a fixed concurrency

struct LevelResult {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    lat: Lat,
    /// CPU time the server process used during the level (None for the in-process baseline).
    server_cpu: Option<Duration>,
    /// CPU time this process (clients, and the baseline server if any) used during the level.
    bench_cpu: Duration,
}

impl LevelResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Cores busy on average: CPU time over wall time.
    fn cores(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU time per successful request, in µs.
    fn us_per_op(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.ok.max(1) as f64)
    }
}

/// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`, 100 on Linux in practice).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User + system CPU time of a process (all its threads); this process when `pid` is None.
fn cpu_time(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else { return Duration::ZERO };
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    Duration::from_nanos(total * 1_000_000_000 / clock_ticks())
}

type MakeRequest = Arc<dyn Fn(usize) -> (Method, String, Option<Bytes>) + Send + Sync>;

/// `clients` connections, each sending one request at a time, until `max` requests were
/// started in total or `limit` passed. `make(i)` builds request number `i`.
#[allow(clippy::too_many_arguments)]
async fn run_level(
    target: &Arc<Target>,
    server: Option<u32>,
    clients: usize,
    max: usize,
    limit: Duration,
    expect: StatusCode,
    make: MakeRequest,
) -> Result<LevelResult> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Client::connect(target).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let (server_cpu0, bench_cpu0) = (server.map(|p| cpu_time(Some(p))), cpu_time(None));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for mut c in conns {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                // Time first, then the ticket: every ticket taken is sent, so names stay contiguous.
                if start.elapsed() >= limit {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let (method, path, body) = make(i);
                let t = Instant::now();
                match c.call(method, &path, body).await {
                    Ok((status, _)) if status == expect => lats.push(t.elapsed()),
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lats, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (lats, e, fe) = t.await?;
        all.extend(lats);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let elapsed = start.elapsed();
    let server_cpu = server.zip(server_cpu0).map(|(p, c0)| cpu_time(Some(p)).saturating_sub(c0));
    let bench_cpu = cpu_time(None).saturating_sub(bench_cpu0);
    if let Some(e) = &first_error {
        eprintln!("  {errors} errors; first: {}", e.chars().take(300).collect::<String>());
    }
    Ok(LevelResult { ok: all.len(), errors, first_error, elapsed, lat: percentiles(all), server_cpu, bench_cpu })
}

// ---------------------------------------------------------------------------------------------
// Phases

struct StartFigures {
    mode: &'static str,
    ready: Duration,
    ready_line: Duration,
    idle_rss_kib: u64,
    runs: usize,
}

/// Measures `plan.starts` starts of one kind; the last one is left running 1 s to read its idle RSS.
fn measure_starts(
    plan: &Plan,
    mode: &'static str,
    probe: &Arc<ClientConfig>,
    mut data_dir: impl FnMut(usize) -> Result<Option<PathBuf>>,
    work: &Path,
    runs: usize,
) -> Result<StartFigures> {
    let mut ready = Vec::new();
    let mut lines = Vec::new();
    let mut idle_rss_kib = 0;
    for i in 0..runs {
        let dir = data_dir(i)?;
        let server = start_server(plan, dir.as_deref(), work, probe)?;
        ready.push(server.ready);
        lines.extend(server.ready_line);
        if i + 1 == runs {
            std::thread::sleep(Duration::from_secs(1));
            idle_rss_kib = server.rss_kib()?.0;
        }
        server.stop()?;
    }
    eprintln!(
        "  {mode}: ready {} ms (median of {runs}), idle RSS {} MiB",
        ms(median(ready.clone())),
        mib(idle_rss_kib)
    );
    Ok(StartFigures { mode, ready: median(ready), ready_line: median(lines), idle_rss_kib, runs })
}

fn startup_phase(plan: &Plan) -> Result<Vec<StartFigures>> {
    eprintln!("startup: {} starts per mode", plan.starts);
    let probe = probe_tls_config()?;
    let work = tempfile::Builder::new().prefix("kplane-bench-start").tempdir_in(&plan.base_dir)?;
    let mut out = Vec::new();
    out.push(measure_starts(plan, "ephemeral", &probe, |_| Ok(None), work.path(), plan.starts)?);
    let fresh_root = work.path().join("fresh");
    let last = fresh_root.join(format!("d{}", plan.starts - 1));
    out.push(measure_starts(
        plan,
        "data dir, fresh",
        &probe,
        |i| {
            let d = fresh_root.join(format!("d{i}"));
            std::fs::create_dir_all(&d)?;
            Ok(Some(d))
        },
        work.path(),
        plan.starts,
    )?);
    out.push(measure_starts(plan, "data dir, restart", &probe, |_| Ok(Some(last.clone())), work.path(), plan.starts)?);
    Ok(out)
}

struct LoadFigures {
    creates: Vec<(usize, LevelResult)>,
    gets: Vec<(usize, LevelResult)>,
    list: Lat,
    list_bytes: usize,
    list_reps: usize,
    rss_after_kib: (u64, u64),
    objects: usize,
    restart_after_load: Option<Duration>,
    fsync: Option<DiskFigures>,
    fsync_append: Option<DiskFigures>,
    sled: Option<DiskFigures>,
    watch: Option<WatchFigures>,
}

struct DiskFigures {
    rate: f64,
    lat: Lat,
}

async fn load_phase(plan: &Plan) -> Result<LoadFigures> {
    let work = tempfile::Builder::new().prefix("kplane-bench-load").tempdir_in(&plan.base_dir)?;
    let data_dir = work.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let probe = probe_tls_config()?;
    let server = {
        let (plan, data_dir, work, probe) = (plan.clone(), data_dir.clone(), work.path().to_path_buf(), probe.clone());
        tokio::task::spawn_blocking(move || start_server(&plan, Some(&data_dir), &work, &probe)).await??
    };
    eprintln!("load: kplane pid {} on port {} (data dir {})", server.pid(), server.port, data_dir.display());
    let target = server.target(plan.http1)?;
    let mut figures = LoadFigures {
        creates: Vec::new(),
        gets: Vec::new(),
        list: Lat::default(),
        list_bytes: 0,
        list_reps: plan.list_reps,
        rss_after_kib: (0, 0),
        objects: 0,
        restart_after_load: None,
        fsync: None,
        fsync_append: None,
        sled: None,
        watch: None,
    };

    let mut server = server;
    if let Err(e) = drive_load(plan, &target, server.pid(), &mut figures).await {
        return Err(e.context(server.post_mortem()));
    }

    figures.rss_after_kib = server.rss_kib()?;
    let (fsync, sled, restart) = tokio::task::spawn_blocking({
        let (plan, data_dir, work_path, probe) = (plan.clone(), data_dir.clone(), work.path().to_path_buf(), probe);
        move || -> Result<_> {
            server.stop()?;
            // A restart over everything the load wrote.
            let restart = if plan.runs("load") {
                let s = start_server(&plan, Some(&data_dir), &work_path, &probe)?;
                let ready = s.ready;
                s.stop()?;
                Some(ready)
            } else {
                None
            };
            let (fsync, sled) = if plan.runs("baselines") {
                let fsync = fsync_baseline(&data_dir.join("fsync-baseline"), plan.fsync_time, false)?;
                eprintln!("  overwrite 1 KiB + fdatasync: {}/s", per_sec(fsync.rate));
                let append = fsync_baseline(&data_dir.join("fsync-baseline"), plan.fsync_time, true)?;
                eprintln!("  append 1 KiB + fdatasync: {}/s", per_sec(append.rate));
                let sled = sled_baseline(&data_dir.join("sled-baseline"), plan.fsync_time)?;
                eprintln!("  sled insert+flush 1 KiB: {}/s", per_sec(sled.rate));
                (Some((fsync, append)), Some(sled))
            } else {
                (None, None)
            };
            Ok((fsync, sled, restart))
        }
    })
    .await??;
    (figures.fsync, figures.fsync_append) = fsync.unzip();
    figures.sled = sled;
    figures.restart_after_load = restart;
    if plan.keep {
        eprintln!("load: kept the data dir {}", work.keep().join("data").display());
    }
    Ok(figures)
}

/// Creates, gets and the list (phase `load`), then the watch phase, against a running server.
async fn drive_load(plan: &Plan, target: &Arc<Target>, server_pid: u32, figures: &mut LoadFigures) -> Result<()> {
    let pid = Some(server_pid);
    let target = target.clone();
    if plan.runs("load") {
        create_namespace(&target, "bench").await?;
        for clients in LEVELS {
            let make: MakeRequest = Arc::new(move |i| {
                let name = format!("c{clients}-{i}");
                (Method::POST, "/api/v1/namespaces/bench/configmaps".to_string(), Some(configmap(&name, None)))
            });
            let r =
                run_level(&target, pid, clients, plan.create_max, plan.level_time, StatusCode::CREATED, make).await?;
            eprintln!(
                "  creates, {clients:>2} clients: {}/s p50 {} ms p99 {} ms",
                per_sec(r.rate()),
                ms(r.lat.p50),
                ms(r.lat.p99)
            );
            figures.objects += r.ok;
            figures.creates.push((clients, r));
        }
        // Reads go to the objects the 64-client level created (names c64-0 .. c64-n, all successful or
        // the level reported errors).
        let existing = figures.creates.last().map(|(_, r)| r.ok).unwrap_or(0).max(1);
        for clients in LEVELS {
            let make: MakeRequest = Arc::new(move |i| {
                (Method::GET, format!("/api/v1/namespaces/bench/configmaps/c64-{}", i % existing), None)
            });
            let r = run_level(&target, pid, clients, plan.get_max, plan.level_time, StatusCode::OK, make).await?;
            eprintln!(
                "  gets, {clients:>2} clients: {}/s p50 {} ms p99 {} ms",
                per_sec(r.rate()),
                ms(r.lat.p50),
                ms(r.lat.p99)
            );
            figures.gets.push((clients, r));
        }

        create_namespace(&target, "bench-list").await?;
        let make: MakeRequest = Arc::new(|i| {
            (Method::POST, "/api/v1/namespaces/bench-list/configmaps".into(), Some(configmap(&format!("l-{i}"), None)))
        });
        let r = run_level(&target, pid, 64, LIST_OBJECTS, Duration::from_secs(60), StatusCode::CREATED, make).await?;
        if r.ok != LIST_OBJECTS {
            bail!("created {} of {LIST_OBJECTS} objects to list: {:?}", r.ok, r.first_error);
        }
        figures.objects += r.ok;
        let mut c = Client::connect(&target).await?;
        let mut lats = Vec::new();
        for rep in 0..plan.list_reps {
            let t = Instant::now();
            let (status, body) = c.call(Method::GET, "/api/v1/namespaces/bench-list/configmaps", None).await?;
            lats.push(t.elapsed());
            if status != StatusCode::OK {
                bail!("list: {status}");
            }
            if rep == 0 {
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                let n = v["items"].as_array().map_or(0, Vec::len);
                if n != LIST_OBJECTS {
                    bail!("list returned {n} items, expected {LIST_OBJECTS}");
                }
                figures.list_bytes = body.len();
            }
        }
        figures.list = percentiles(lats);
        eprintln!("  list of {LIST_OBJECTS}: p50 {} ms p99 {} ms", ms(figures.list.p50), ms(figures.list.p99));
    }

    if plan.runs("watch") {
        figures.watch = Some(watch_phase(plan, &target, server_pid).await?);
    }
    Ok(())
}

struct WatchFigures {
    watchers: usize,
    connected: usize,
    writes: usize,
    per_watcher: Lat,
    last_watcher: Lat,
    write_lat: Lat,
    delivered: usize,
    errors: usize,
    connect_time: Duration,
    /// CPU time of the server and of this process over the write loop.
    server_cpu: Duration,
    bench_cpu: Duration,
    writes_elapsed: Duration,
}

/// 1000 watchers of one namespace, one connection each; the writer creates objects stamped
/// with the send time and waits for every watcher to see each before the next.
async fn watch_phase(plan: &Plan, target: &Arc<Target>, pid: u32) -> Result<WatchFigures> {
    let ns = "bench-watch";
    create_namespace(target, ns).await?;
    let mut writer = Client::connect(target).await?;
    let (status, body) = writer.call(Method::GET, &format!("/api/v1/namespaces/{ns}/configmaps"), None).await?;
    if status != StatusCode::OK {
        bail!("list before watch: {status}");
    }
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    let rv = list["metadata"]["resourceVersion"].as_str().context("list without resourceVersion")?.to_string();
    let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}");

    let writes = plan.watch_writes;
    let seen: Arc<Vec<AtomicUsize>> = Arc::new((0..writes).map(|_| AtomicUsize::new(0)).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connecting = Arc::new(Semaphore::new(64));
    eprintln!("watch: connecting {} watchers", plan.watchers);
    let t_connect = Instant::now();
    let mut tasks = Vec::with_capacity(plan.watchers);
    for _ in 0..plan.watchers {
        let (target, path, seen, ready, failed, connecting) =
            (target.clone(), path.clone(), seen.clone(), ready.clone(), failed.clone(), connecting.clone());
        let mut stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<(usize, Duration)> = Vec::new();
            let mut errors = 0usize;
            let opened = async {
                let _permit = connecting.acquire().await?;
                let mut c = Client::connect(&target).await?;
                let req = c.build(Method::GET, &path, None)?;
                let resp = c.send(req).await?;
                if resp.status() != StatusCode::OK {
                    bail!("watch: {}", resp.status());
                }
                anyhow::Ok((c, resp.into_body()))
            };
            let (_client, mut body) = match opened.await {
                Ok(x) => x,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("  a watcher failed: {e:#}");
                    }
                    return (got, 1);
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            let marker = format!("\"{SENT_ANNOTATION}\":\"");
            let mut buf: Vec<u8> = Vec::new();
            while got.len() < writes {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = stop_rx.changed() => break,
                };
                let now = epoch_nanos();
                let data = match frame {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Some(Err(_)) | None => {
                        errors += 1;
                        break;
                    }
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    match stamp(&line, marker.as_bytes()) {
                        Some((i, sent)) if i < writes => {
                            got.push((i, Duration::from_nanos(now.saturating_sub(sent))));
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => errors += 1,
                    }
                }
            }
            (got, errors)
        }));
    }
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < plan.watchers
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let connect_time = t_connect.elapsed();
    let connected = ready.load(Ordering::Relaxed);
    eprintln!("  {connected} watchers connected in {} ms; {writes} writes", ms(connect_time));

    let phase_deadline = Instant::now() + Duration::from_secs(if plan.quick { 15 } else { 40 });
    let mut write_lats = Vec::new();
    let (server_cpu0, bench_cpu0, t_writes) = (cpu_time(Some(pid)), cpu_time(None), Instant::now());
    for i in 0..writes {
        if Instant::now() > phase_deadline {
            eprintln!("  watch phase out of time after {i} writes");
            break;
        }
        let sent = epoch_nanos();
        let t = Instant::now();
        let body = configmap(&format!("w-{i}"), Some(&format!("{i}:{sent}")));
        let (status, resp) =
            writer.call(Method::POST, &format!("/api/v1/namespaces/{ns}/configmaps"), Some(body)).await?;
        write_lats.push(t.elapsed());
        if status != StatusCode::CREATED {
            bail!("watch write: {status}: {}", String::from_utf8_lossy(&resp));
        }
        let wait_until = Instant::now() + Duration::from_secs(5);
        while seen[i].load(Ordering::Relaxed) < connected && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Let the fan-out settle so the next write meets idle watchers.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writes_elapsed = t_writes.elapsed();
    let server_cpu = cpu_time(Some(pid)).saturating_sub(server_cpu0);
    let bench_cpu = cpu_time(None).saturating_sub(bench_cpu0);
    let _ = stop_tx.send(true);
    let mut per_watcher = Vec::new();
    let mut last: Vec<Duration> = vec![Duration::ZERO; writes];
    let mut errors = 0;
    for t in tasks {
        let (got, e) = t.await?;
        errors += e;
        for (i, d) in got {
            last[i] = last[i].max(d);
            per_watcher.push(d);
        }
    }
    let delivered = per_watcher.len();
    let done_writes = write_lats.len();
    last.truncate(done_writes);
    let f = WatchFigures {
        watchers: plan.watchers,
        connected,
        writes: done_writes,
        per_watcher: percentiles(per_watcher),
        last_watcher: percentiles(last),
        write_lat: percentiles(write_lats),
        delivered,
        errors: errors + failed.load(Ordering::Relaxed),
        connect_time,
        server_cpu,
        bench_cpu,
        writes_elapsed,
    };
    eprintln!(
        "  delivery p50 {} ms p99 {} ms; all watchers p50 {} ms; {} of {} events",
        ms(f.per_watcher.p50),
        ms(f.per_watcher.p99),
        ms(f.last_watcher.p50),
        f.delivered,
        f.connected * f.writes
    );
    Ok(f)
}

/// `(write, nanos)` from the annotation `"<SENT_ANNOTATION>":"<write>:<nanos>"` of a watch event line.
fn stamp(line: &[u8], marker: &[u8]) -> Option<(usize, u64)> {
    let at = line.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &line[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let (i, nanos) = text.split_once(':')?;
    Some((i.parse().ok()?, nanos.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Baselines

/// Writes 1 KiB and fdatasyncs, one at a time, for `time`: appending (each sync also commits the
/// new file size), or overwriting a preallocated 16 MiB file (data only, as a log that reuses
/// its segments does).
fn fsync_baseline(path: &Path, time: Duration, append: bool) -> Result<DiskFigures> {
    use std::os::unix::fs::FileExt;
    const PREALLOCATED: u64 = 16 << 20;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    if !append {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(PREALLOCATED >> 20) {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
    }
    let block = vec![b'x'; PAYLOAD];
    let mut lats = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time && lats.len() < 100_000 {
        let t = Instant::now();
        if append {
            f.write_all(&block)?;
        } else {
            f.write_all_at(&block, (lats.len() as u64 * PAYLOAD as u64) % PREALLOCATED)?;
        }
        f.sync_data()?;
        lats.push(t.elapsed());
    }
    let rate = lats.len() as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(DiskFigures { rate, lat: percentiles(lats) })
}

/// sled as kplane opens it (no periodic flush): insert 1 KiB, then flush, one at a time.
fn sled_baseline(dir: &Path, time: Duration) -> Result<DiskFigures> {
    let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
    let value = vec![b'x'; PAYLOAD + 8];
    let mut lats = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time && lats.len() < 100_000 {
        let t = Instant::now();
        db.insert(format!("/configmaps/bench/k{}", lats.len()).as_bytes(), &value[..])?;
        db.flush()?;
        lats.push(t.elapsed());
    }
    let rate = lats.len() as f64 / start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    Ok(DiskFigures { rate, lat: percentiles(lats) })
}

/// A trivial HTTPS server (same stack as kplane: rustls/ring, hyper auto h1/h2, ECDSA P-256)
/// answering every request with a fixed 1 KiB JSON body, on its own 2-thread runtime.
struct BaselineServer {
    target: Arc<Target>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BaselineServer {
    fn start(http1: bool) -> Result<BaselineServer> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let body = Bytes::from(format!(r#"{{"kind":"Baseline","data":{{"payload":"{}"}}}}"#, "x".repeat(PAYLOAD - 40)));
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("baseline runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                loop {
                    let (tcp, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    let _ = tcp.set_nodelay(true);
                    let (acceptor, builder, body) = (acceptor.clone(), builder.clone(), body.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let body = body.clone();
                            async move {
                                req.into_body().collect().await?;
                                let mut resp = Response::new(Full::new(body));
                                resp.headers_mut()
                                    .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                                Ok::<_, hyper::Error>(resp)
                            }
                        });
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    });
                }
            });
            rt.shutdown_background();
        });
        let target =
            Arc::new(Target { addr, tls: client_tls_config(&[ca_cert.der().clone()], http1)?, auth: None, http1 });
        Ok(BaselineServer { target, stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct HttpsBaseline {
    gets: Vec<(usize, LevelResult)>,
    posts: Vec<(usize, LevelResult)>,
}

async fn https_baseline(plan: &Plan) -> Result<HttpsBaseline> {
    eprintln!("baseline: trivial HTTPS server, 1 KiB JSON");
    let server = BaselineServer::start(plan.http1)?;
    let mut gets = Vec::new();
    let mut posts = Vec::new();
    for clients in LEVELS {
        let make: MakeRequest = Arc::new(|_| (Method::GET, "/api/v1/namespaces/bench/configmaps/x".into(), None));
        let r =
            run_level(&server.target, None, clients, plan.get_max, plan.baseline_time, StatusCode::OK, make).await?;
        eprintln!("  GET, {clients:>2} clients: {}/s", per_sec(r.rate()));
        gets.push((clients, r));
        let make: MakeRequest = Arc::new(|i| {
            (Method::POST, "/api/v1/namespaces/bench/configmaps".into(), Some(configmap(&format!("b-{i}"), None)))
        });
        let r =
            run_level(&server.target, None, clients, plan.get_max, plan.baseline_time, StatusCode::OK, make).await?;
        eprintln!("  POST 1 KiB, {clients:>2} clients: {}/s", per_sec(r.rate()));
        posts.push((clients, r));
    }
    drop(server);
    Ok(HttpsBaseline { gets, posts })
}

// ---------------------------------------------------------------------------------------------
// Report

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

static LOAD_BEFORE: OnceLock<String> = OnceLock::new();

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{nproc} CPUs ({model}), {:.1} GiB RAM", mem_kib as f64 / 1024.0 / 1024.0)
}

fn level_of(v: &[(usize, LevelResult)], clients: usize) -> Option<&LevelResult> {
    v.iter().find(|(c, _)| *c == clients).map(|(_, r)| r)
}

fn report(
    plan: &Plan,
    starts: Option<&[StartFigures]>,
    load: Option<&LoadFigures>,
    https: Option<&HttpsBaseline>,
    total: Duration,
) {
    let mut out = String::new();
    let w = &mut out;
    let line = |w: &mut String, s: String| {
        w.push_str(&s);
        w.push('\n');
    };
    line(w, format!("## kplane-bench{}", if plan.quick { " (--quick)" } else { "" }));
    line(w, String::new());
    line(w, format!("- binary: `{}`", plan.bin.display()));
    if !plan.server_args.is_empty() {
        line(w, format!("- extra server arguments: `{}`", plan.server_args.join(" ")));
    }
    line(w, format!("- machine: {}", machine()));
    line(
        w,
        format!(
            "- client: this process, {} over TLS 1.3 (rustls/ring), one connection per client, 127.0.0.1 only",
            if plan.http1 { "HTTP/1.1 keep-alive" } else { "HTTP/2" }
        ),
    );
    line(w, format!("- total run time: {:.0} s", total.as_secs_f64()));
    line(
        w,
        format!(
            "- load average (1/5/15 min) before: {}, after: {}",
            LOAD_BEFORE.get().map_or("?", String::as_str),
            loadavg()
        ),
    );
    line(w, String::new());

    if let Some(starts) = starts {
        line(w, "### Start and memory".into());
        line(w, String::new());
        line(
            w,
            "| Mode | exec → /readyz 200 (median) | exec → ready line (median) | idle RSS (1 s after ready) | Goal |"
                .into(),
        );
        line(w, "|---|---:|---:|---:|---|".into());
        for s in starts {
            line(
                w,
                format!(
                    "| {} (n={}) | {} ms | {} ms | {} MiB | ready < 100 ms, RSS < 40 MiB |",
                    s.mode,
                    s.runs,
                    ms(s.ready),
                    ms(s.ready_line),
                    mib(s.idle_rss_kib)
                ),
            );
        }
        if let Some(d) = load.and_then(|l| l.restart_after_load) {
            line(
                w,
                format!(
                    "| data dir, restart after the load phase ({} objects, n=1) | {} ms | – | – | |",
                    load.map_or(0, |l| l.objects),
                    ms(d)
                ),
            );
        }
        line(w, String::new());
    }

    if let Some(l) = load.filter(|l| !l.creates.is_empty()) {
        line(w, "### Requests on a `--data-dir` server (durable writes), ConfigMaps with 1 KiB data".into());
        line(w, String::new());
        line(w, "| Operation | Clients | kplane ops/s | p50 ms | p99 ms | Baseline ops/s (trivial HTTPS, 1 KiB) | kplane / baseline |".into());
        line(w, "|---|---:|---:|---:|---:|---:|---:|".into());
        let rows = [("create (POST)", &l.creates, https.map(|h| &h.posts)), ("get", &l.gets, https.map(|h| &h.gets))];
        for (name, mine, base) in rows {
            for (clients, r) in mine.iter() {
                let b = base.and_then(|b| level_of(b, *clients));
                let errors = if r.errors > 0 { format!(" ({} errors)", r.errors) } else { String::new() };
                line(
                    w,
                    format!(
                        "| {name} | {clients} | {}{errors} | {} | {} | {} | {} |",
                        per_sec(r.rate()),
                        ms(r.lat.p50),
                        ms(r.lat.p99),
                        b.map_or("–".into(), |b| per_sec(b.rate())),
                        b.map_or("–".into(), |b| ratio(r.rate(), b.rate())),
                    ),
                );
            }
        }
        line(
            w,
            format!(
                "| list {LIST_OBJECTS} ConfigMaps ({:.2} MiB JSON, n={}) | 1 | {} | {} | {} | | |",
                l.list_bytes as f64 / 1048576.0,
                l.list_reps,
                per_sec(1.0 / l.list.p50.as_secs_f64().max(1e-9)),
                ms(l.list.p50),
                ms(l.list.p99)
            ),
        );
        line(w, String::new());
        line(
            w,
            format!(
                "RSS after the load phase: {} MiB (peak {} MiB) with {} ConfigMaps stored.",
                mib(l.rss_after_kib.0),
                mib(l.rss_after_kib.1),
                l.objects
            ),
        );
        line(w, String::new());
        line(w, "CPU during each level (2 cores in all; the bench's clients run on the same cores):".into());
        line(w, String::new());
        line(w, "| Operation | Clients | kplane CPU µs/op | kplane cores busy | bench cores busy | baseline: total CPU µs/op (client + trivial server) |".into());
        line(w, "|---|---:|---:|---:|---:|---:|".into());
        for (name, mine, base) in rows {
            for (clients, r) in mine.iter() {
                let Some(cpu) = r.server_cpu else { continue };
                let b = base.and_then(|b| level_of(b, *clients));
                line(
                    w,
                    format!(
                        "| {name} | {clients} | {:.0} | {:.2} | {:.2} | {} |",
                        r.us_per_op(cpu),
                        r.cores(cpu),
                        r.cores(r.bench_cpu),
                        b.map_or("–".into(), |b| format!("{:.0}", b.us_per_op(b.bench_cpu))),
                    ),
                );
            }
        }
        line(w, String::new());
    }

    if let Some(f) = load.and_then(|l| l.watch.as_ref()) {
        line(w, format!("### Watch fan-out: {} watchers of one namespace, {} creates", f.watchers, f.writes));
        line(w, String::new());
        line(w, "| Metric | p50 ms | p99 ms | max ms |".into());
        line(w, "|---|---:|---:|---:|".into());
        let row = |w: &mut String, name: &str, l: &Lat| {
            w.push_str(&format!("| {name} | {} | {} | {} |\n", ms(l.p50), ms(l.p99), ms(l.max)));
        };
        row(w, "write sent → event read, per watcher", &f.per_watcher);
        row(w, "write sent → last of the watchers has it", &f.last_watcher);
        row(w, "the write itself (POST → 201)", &f.write_lat);
        line(w, String::new());
        line(
            w,
            format!(
                "{} of {} watchers connected in {} ms; {} of {} events delivered; {} errors.",
                f.connected,
                f.watchers,
                ms(f.connect_time),
                f.delivered,
                f.connected * f.writes,
                f.errors
            ),
        );
        line(
            w,
            format!(
                "Over the {:.1} s of writes the server used {:.2} s of CPU ({:.0} µs per delivered event), this \
                 process {:.2} s.",
                f.writes_elapsed.as_secs_f64(),
                f.server_cpu.as_secs_f64(),
                f.server_cpu.as_secs_f64() * 1e6 / f.delivered.max(1) as f64,
                f.bench_cpu.as_secs_f64()
            ),
        );
        line(w, String::new());
    }

    if let Some(l) = load.filter(|l| l.fsync.is_some()) {
        line(w, "### Disk baselines (same file system as the data dir)".into());
        line(w, String::new());
        line(w, "| Baseline | ops/s | p50 ms | p99 ms |".into());
        line(w, "|---|---:|---:|---:|".into());
        for (name, d) in [
            ("overwrite 1 KiB in a preallocated file + fdatasync", &l.fsync),
            ("append 1 KiB + fdatasync", &l.fsync_append),
            ("sled insert 1 KiB + flush (kplane's engine, one writer)", &l.sled),
        ] {
            if let Some(d) = d {
                line(w, format!("| {name} | {} | {} | {} |", per_sec(d.rate), ms(d.lat.p50), ms(d.lat.p99)));
            }
        }
        line(w, String::new());
        if let Some(fs) = &l.fsync {
            line(
                w,
                "| Durable creates vs the disk | Clients | creates/s ÷ fdatasync/s | creates/s ÷ sled flush/s |".into(),
            );
            line(w, "|---|---:|---:|---:|".into());
            for (clients, r) in &l.creates {
                let sled = l.sled.as_ref().map_or("–".into(), |s| ratio(r.rate(), s.rate));
                line(w, format!("| create | {clients} | {} | {sled} |", ratio(r.rate(), fs.rate)));
            }
            line(w, String::new());
        }
    }

    line(w, "### Goals (issue)".into());
    line(w, String::new());
    line(w, "| Goal | Measured | Met |".into());
    line(w, "|---|---:|---|".into());
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    if let Some(starts) = starts {
        let worst_ready = starts.iter().take(2).map(|s| s.ready).max().unwrap_or_default();
        let worst_rss = starts.iter().take(2).map(|s| s.idle_rss_kib).max().unwrap_or_default();
        line(
            w,
            format!(
                "| ready < 100 ms | {} ms (worst of ephemeral / fresh dir) | {} |",
                ms(worst_ready),
                yes(worst_ready < Duration::from_millis(100))
            ),
        );
        line(
            w,
            format!(
                "| idle RSS < 40 MiB | {} MiB (worst of ephemeral / fresh dir) | {} |",
                mib(worst_rss),
                yes(worst_rss < 40 * 1024)
            ),
        );
    }
    if let Some(l) = load.filter(|l| !l.creates.is_empty()) {
        let best_create = l.creates.iter().map(|(_, r)| r.rate()).fold(0.0, f64::max);
        let best_get = l.gets.iter().map(|(_, r)| r.rate()).fold(0.0, f64::max);
        line(
            w,
            format!(
                "| ≥ 5,000 durable creates/s | {} /s (best level) | {} |",
                per_sec(best_create),
                yes(best_create >= 5000.0)
            ),
        );
        line(w, format!("| ≥ 30,000 gets/s | {} /s (best level) | {} |", per_sec(best_get), yes(best_get >= 30000.0)));
    }
    print!("{out}");
}

#[tokio::main]
async fn main() -> Result<()> {
    EPOCH.get_or_init(Instant::now);
    let t0 = Instant::now();
    LOAD_BEFORE.get_or_init(loadavg);
    let plan = Plan::from_args()?;
    eprintln!("kplane-bench: {}", plan.bin.display());
    let starts = if plan.runs("startup") {
        let p = plan.clone();
        Some(tokio::task::spawn_blocking(move || startup_phase(&p)).await??)
    } else {
        None
    };
    let load = if plan.runs("load") || plan.runs("watch") || plan.runs("baselines") {
        Some(load_phase(&plan).await?)
    } else {
        None
    };
    let https = if plan.runs("baselines") { Some(https_baseline(&plan).await?) } else { None };
    report(&plan, starts.as_deref(), load.as_ref(), https.as_ref(), t0.elapsed());
    Ok(())
}
