//! Readiness, liveness and startup probes of process pods: one attempt (`pkg/probe/http`,
//! `pkg/probe/tcp`, `pkg/probe/exec`, bounded by `timeoutSeconds`) and the per-probe worker
//! with its delay, period and thresholds (`pkg/kubelet/prober/worker.go`, `prober.go`).

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// The most of a probe's output kept, as upstream (`maxReadLength`).
const MAX_OUTPUT: usize = 10 * 1024;

/// The three probes a container can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// As upstream prints it in Events: `Liveness probe failed: …`.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Success,
    /// The probe ran and failed; the output (`HTTP probe failed with statuscode: 500`, …).
    Failure(String),
    /// The probe could not run (unknown named port, unsupported handler): no result.
    Error(String),
}

/// Where a container's probes go and what they run with.
#[derive(Debug, Clone, Default)]
pub struct ProbeTarget {
    /// Default host for httpGet and tcpSocket.
    pub pod_ip: String,
    /// The container's named ports.
    pub ports: HashMap<String, i32>,
    /// exec probes run with the container's environment and working directory.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
}

impl ProbeTarget {
    pub fn with_ports(mut self, ports: &[ContainerPort]) -> Self {
        self.ports = ports.iter().filter_map(|p| Some((p.name.clone()?, p.container_port))).collect();
        self
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let n = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(s) => match s.parse::<i32>() {
                Ok(n) => n,
                Err(_) => *self.ports.get(s).ok_or_else(|| format!("unable to find port: {s:?}"))?,
            },
        };
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| format!("invalid port number: {n}"))
    }
}

/// The probe's timeout (`timeoutSeconds`, default 1).
pub fn timeout_of(probe: &Probe) -> Duration {
    Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64)
}

/// Runs one attempt of `probe`, never longer than its timeout.
pub async fn probe_once(probe: &Probe, target: &ProbeTarget) -> Attempt {
    let timeout = timeout_of(probe);
    if let Some(h) = &probe.http_get {
        let port = match target.port(&h.port) {
            Ok(p) => p,
            Err(e) => return Attempt::Error(e),
        };
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
        let https = h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let headers: Vec<(String, String)> =
            h.http_headers.iter().flatten().map(|hd| (hd.name.clone(), hd.value.clone())).collect();
        let path = h.path.clone().unwrap_or_default();
        return http_get(&host, port, https, &path, &headers, timeout).await;
    }
    if let Some(t) = &probe.tcp_socket {
        let port = match target.port(&t.port) {
            Ok(p) => p,
            Err(e) => return Attempt::Error(e),
        };
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
        return tcp(&host, port, timeout).await;
    }
    if let Some(e) = &probe.exec {
        return exec(e.command.as_deref().unwrap_or_default(), target, timeout).await;
    }
    if probe.grpc.is_some() {
        return Attempt::Error("grpc probes are not supported for process pods".into());
    }
    Attempt::Error("missing probe handler".into())
}

/// `host:port` as Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Go's dialer messages: `dial tcp 10.0.0.1:80: connect: connection refused`.
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    };
    format!("dial tcp {addr}: {what}")
}

async fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, String> {
    let addr = join_host_port(host, port);
    match tokio::time::timeout_at(deadline, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(dial_error(&addr, &e)),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Attempt {
    match connect(host, port, Instant::now() + timeout).await {
        Ok(_) => Attempt::Success,
        Err(e) => Attempt::Failure(e),
    }
}

/// A GET as the kubelet's prober sends it; 200–399 is success. Redirects are not followed
/// (a 3xx counts as success, as a redirect to another host does upstream).
async fn http_get(
    host: &str,
    port: u16,
    https: bool,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Attempt {
    let deadline = Instant::now() + timeout;
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let url = format!("{}://{}{}", if https { "https" } else { "http" }, join_host_port(host, port), path);
    let fail = |what: String| Attempt::Failure(format!("Get {url:?}: {what}"));
    let stream = match connect(host, port, deadline).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("Host") {
        request.push_str(&format!("Host: {}\r\n", join_host_port(host, port)));
    }
    if !has("User-Agent") {
        request.push_str(&format!("User-Agent: kube-probe/{}\r\n", KUBE_MINOR));
    }
    if !has("Accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        if https {
            let tls = tls_connector()?;
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("invalid server name: {e}"))?;
            let stream = tls.connect(name, stream).await.map_err(|e| e.to_string())?;
            exchange(stream, request.as_bytes()).await
        } else {
            exchange(stream, request.as_bytes()).await
        }
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => fail("context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into()),
        Ok(Err(e)) => fail(e),
        Ok(Ok(code)) if (200..400).contains(&code) => Attempt::Success,
        Ok(Ok(code)) => Attempt::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// The Kubernetes minor release the User-Agent names (`kube-probe/1.33`).
const KUBE_MINOR: &str = "1.33";

/// Sends the request and reads the status code of the response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Result<u16, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_OUTPUT {
            return Err("malformed HTTP response".into());
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err("malformed HTTP response".into());
    };
    if !version.starts_with("HTTP/") {
        return Err(format!("malformed HTTP response {:?}", line.lines().next().unwrap_or("")));
    }
    code.parse().map_err(|_| format!("malformed HTTP status code {code:?}"))
}

/// TLS without verifying the server's certificate, as the kubelet's HTTPS probes do.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use std::sync::OnceLock;
    static CONNECTOR: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// Accepts any certificate (`InsecureSkipVerify`) but still checks handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs the command with the container's environment; exit 0 is success. On timeout the
/// command's whole process group is killed.
async fn exec(command: &[String], target: &ProbeTarget, timeout: Duration) -> Attempt {
    let Some((program, args)) = command.split_first() else {
        return Attempt::Error("exec probe has no command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &target.working_dir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // As the runtime reports an exec that cannot start; the probe fails.
        Err(e) => return Attempt::Failure(super::spawn::start_error_message(program, &e)),
    };
    let pgid = child.id();
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Attempt::Error("exec probe: no pipes".into());
    };
    let run = async {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut out = (&mut out).take(MAX_OUTPUT as u64);
        let mut err = (&mut err).take(MAX_OUTPUT as u64);
        let (_, _, status) = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b), child.wait());
        a.extend_from_slice(&b);
        a.truncate(MAX_OUTPUT);
        (status, a)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    if let Some(pid) = pgid {
        // Whatever the command left behind in its group goes with it.
        super::spawn::kill_group(pid, rustix::process::Signal::KILL);
    }
    match outcome {
        Err(_) => Attempt::Failure(format!("command {:?} timed out", command.join(" "))),
        Ok((Ok(status), output)) if status.success() => {
            let _ = output;
            Attempt::Success
        }
        Ok((Ok(_), output)) => Attempt::Failure(String::from_utf8_lossy(&output).into_owned()),
        Ok((Err(e), _)) => Attempt::Error(e.to_string()),
    }
}

/// Runs a lifecycle hook (`sleep`, `exec`, `httpGet`; `tcpSocket` is accepted and does
/// nothing, as upstream) with the probes' machinery; its failure, if it failed.
pub async fn run_hook(
    hook: &k8s_openapi::api::core::v1::LifecycleHandler,
    target: &ProbeTarget,
    grace: Duration,
) -> Option<String> {
    if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(grace)).await;
        return None;
    }
    let probe = k8s_openapi::api::core::v1::Probe {
        exec: hook.exec.clone(),
        http_get: hook.http_get.clone(),
        timeout_seconds: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX).max(1)),
        ..Default::default()
    };
    if probe.exec.is_none() && probe.http_get.is_none() {
        return None;
    }
    match probe_once(&probe, target).await {
        Attempt::Success => None,
        Attempt::Failure(why) | Attempt::Error(why) => Some(why),
    }
}

/// What a worker tells the container's supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeReport {
    /// An attempt failed or errored: the Warning Event `Unhealthy` with this message.
    Unhealthy(String),
    /// The probe's result after the thresholds: `true` success, `false` failure.
    Result(bool),
}

/// A probe's settings with upstream's defaults.
#[derive(Debug, Clone, Copy)]
struct Timing {
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Timing {
    fn of(probe: &Probe, kind: ProbeKind) -> Self {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            // Liveness and startup probes must have a success threshold of 1.
            success_threshold: match kind {
                ProbeKind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
                _ => 1,
            },
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Runs one probe of one container instance until the task is aborted (the instance ended) or,
/// for liveness and startup probes, until the result that ends their job (a failure: the
/// container is restarted; for startup, a success). `started` gates liveness and readiness
/// until the startup probe succeeds; `started_at` is when the instance started.
pub fn spawn_worker(
    kind: ProbeKind,
    probe: Probe,
    target: Arc<ProbeTarget>,
    started_at: Instant,
    mut started: watch::Receiver<bool>,
    report: impl Fn(ProbeReport) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let timing = Timing::of(&probe, kind);
    tokio::spawn(async move {
        let mut last: Option<bool> = None;
        let mut run = 0u32;
        let mut ticker = tokio::time::interval(timing.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                // The startup probe just succeeded: probe at once rather than a period later.
                Ok(()) = started.changed(), if kind != ProbeKind::Startup => {}
            }
            if kind != ProbeKind::Startup && !*started.borrow() {
                continue;
            }
            if started_at.elapsed() < timing.initial_delay {
                continue;
            }
            let ok = match probe_once(&probe, &target).await {
                Attempt::Success => true,
                Attempt::Failure(out) => {
                    report(ProbeReport::Unhealthy(format!("{} probe failed: {out}", kind.title())));
                    false
                }
                Attempt::Error(e) => {
                    report(ProbeReport::Unhealthy(format!(
                        "{} probe errored and resulted in unknown state: {e}",
                        kind.title()
                    )));
                    continue;
                }
            };
            run = if last == Some(ok) { run + 1 } else { 1 };
            last = Some(ok);
            let threshold = if ok { timing.success_threshold } else { timing.failure_threshold };
            if run < threshold {
                continue;
            }
            report(ProbeReport::Result(ok));
            match (kind, ok) {
                (ProbeKind::Startup, true) => return,
                (ProbeKind::Liveness | ProbeKind::Startup, false) => return,
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    /// A one-shot HTTP server answering every request with `code`; returns its port.
    async fn http_server(code: u16) -> (u16, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let body = if req.contains("User-Agent: kube-probe/") && req.contains("X-Test: yes") {
                        "ok"
                    } else {
                        "bad headers"
                    };
                    let code = if body == "ok" { code } else { 599 };
                    let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (port, task)
    }

    fn target() -> ProbeTarget {
        ProbeTarget {
            pod_ip: "127.0.0.1".into(),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default()), ("MARK".into(), "m".into())],
            ..Default::default()
        }
        .with_ports(&[ContainerPort { name: Some("web".into()), container_port: 1, ..Default::default() }])
    }

    #[tokio::test]
    async fn http_probe_codes_and_named_ports() {
        let (port, _srv) = http_server(204).await;
        let mut t = target();
        t.ports.insert("web".into(), i32::from(port));
        let hdr = json!([{"name": "X-Test", "value": "yes"}]);
        let p = probe(json!({"httpGet": {"port": "web", "path": "/healthz", "httpHeaders": hdr}}));
        assert_eq!(probe_once(&p, &t).await, Attempt::Success);
        let (port, _srv) = http_server(500).await;
        let p = probe(json!({"httpGet": {"port": port, "httpHeaders": hdr}}));
        assert_eq!(probe_once(&p, &t).await, Attempt::Failure("HTTP probe failed with statuscode: 500".into()));
        let p = probe(json!({"httpGet": {"port": "nope"}}));
        assert!(matches!(probe_once(&p, &t).await, Attempt::Error(_)));
        // Nothing listening.
        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        let p = probe(json!({"httpGet": {"port": free, "path": "/x"}}));
        assert_eq!(
            probe_once(&p, &t).await,
            Attempt::Failure(format!(
                "Get \"http://127.0.0.1:{free}/x\": dial tcp 127.0.0.1:{free}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn http_probe_that_hangs_is_cut_at_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                conns.push(s);
            }
        });
        let p = probe(json!({"httpGet": {"port": port}, "timeoutSeconds": 1}));
        let start = std::time::Instant::now();
        let got = probe_once(&p, &target()).await;
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(matches!(&got, Attempt::Failure(m) if m.contains("Client.Timeout exceeded")), "{got:?}");
    }

    #[tokio::test]
    async fn tcp_probe() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(probe_once(&probe(json!({"tcpSocket": {"port": port}})), &target()).await, Attempt::Success);
        drop(l);
        assert!(matches!(
            probe_once(&probe(json!({"tcpSocket": {"port": port}})), &target()).await,
            Attempt::Failure(m) if m.ends_with("connection refused")
        ));
    }

    #[tokio::test]
    async fn exec_probe_env_exit_and_timeout() {
        let t = target();
        let ok = probe(json!({"exec": {"command": ["sh", "-c", "test \"$MARK\" = m"]}}));
        assert_eq!(probe_once(&ok, &t).await, Attempt::Success);
        let bad = probe(json!({"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}));
        assert_eq!(probe_once(&bad, &t).await, Attempt::Failure("nope\n".into()));
        let hang = probe(json!({"exec": {"command": ["sh", "-c", "sleep 30"]}, "timeoutSeconds": 1}));
        let start = std::time::Instant::now();
        assert_eq!(probe_once(&hang, &t).await, Attempt::Failure("command \"sh -c sleep 30\" timed out".into()));
        assert!(start.elapsed() < Duration::from_secs(3));
        let missing = probe(json!({"exec": {"command": ["/nonexistent/prog"]}}));
        assert!(matches!(probe_once(&missing, &t).await, Attempt::Failure(_)));
    }

    #[tokio::test]
    async fn worker_applies_thresholds_and_startup_gate() {
        // exec probe whose result flips when a file appears.
        let dir = tempfile::tempdir().expect("tmp");
        let flag = dir.path().join("ok");
        let p = probe(json!({
            "exec": {"command": ["test", "-e", flag.to_string_lossy()]},
            "periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2
        }));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let (gate_tx, gate) = watch::channel(false);
        let r = reports.clone();
        let task = spawn_worker(ProbeKind::Readiness, p, Arc::new(target()), Instant::now(), gate, move |rep| {
            r.lock().expect("lock").push(rep)
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(reports.lock().expect("lock").is_empty(), "gated until started");
        gate_tx.send(true).expect("gate");
        let deadline = Instant::now() + Duration::from_secs(10);
        let wait_for = |want: ProbeReport| {
            let reports = reports.clone();
            async move {
                while Instant::now() < deadline {
                    if reports.lock().expect("lock").contains(&want) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("no {want:?} in {:?}", reports.lock().expect("lock"));
            }
        };
        wait_for(ProbeReport::Result(false)).await;
        let failures = reports.lock().expect("lock").iter().filter(|r| matches!(r, ProbeReport::Unhealthy(_))).count();
        assert!(failures >= 2, "result only after failureThreshold attempts");
        std::fs::write(&flag, b"").expect("flag");
        wait_for(ProbeReport::Result(true)).await;
        task.abort();
    }
}
