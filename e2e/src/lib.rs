//! The black-box test harness for kplane: runs the real `kplane` binary as a child process and
//! talks to it only over loopback HTTPS, the way users do (kubectl, kube-rs, raw HTTP, Python).
//!
//! ```no_run
//! let server = kplane_e2e::Server::start_ephemeral();
//! let out = server.kubectl("1.33", &["get", "ns", "-o", "name"]);
//! assert!(out.status.success());
//! ```
//!
//! # Which binary runs
//!
//! Cargo only exposes `CARGO_BIN_EXE_<name>` to the package that defines the binary, so the
//! harness finds `kplane` itself, first match wins:
//!
//! 1. `$KPLANE_BIN`;
//! 2. `kplane` next to the profile directory of the running test executable
//!    (`target/<profile>/deps/<test>` → `target/<profile>/kplane`), which honours
//!    `CARGO_TARGET_DIR` and `--release` on its own;
//! 3. `$CARGO_TARGET_DIR/debug/kplane`, then `<workspace>/target/debug/kplane`.
//!
//! `cargo test -p kplane-e2e` does **not** build the binary: run `cargo build --bin kplane`
//! (with the same profile) first. `.ci/run` builds it before it runs the tests.
//!
//! # Isolation
//!
//! Every [`Server`] listens on `127.0.0.1:0` (a free port), writes its own kubeconfig into its
//! own temporary directory, and every kubectl run gets a fresh `--cache-dir`, so tests run in
//! parallel. Nothing sleeps: waits are blocking reads with deadlines.
//!
//! # kubectl
//!
//! kubectl binaries are looked up in `$KPLANE_KUBECTL_DIR`, else in the directory of the real
//! file behind `kubectl` on `PATH` (the Cloud SDK keeps `kubectl.1.27` … `kubectl.1.33` and the
//! version-picking `kubectl` dispatcher side by side there).

use anyhow::{Context, anyhow, bail};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server gets to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one kubectl command may run before it is killed and the test fails.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// The `version` argument of [`Server::kubectl`] that runs the `kubectl` dispatcher itself
/// (it picks a kubectl by the server's version) rather than a pinned `kubectl.1.NN`.
pub const DISPATCHER: &str = "kubectl";

/// A running `kplane serve` child process. Killed (SIGKILL) and reaped when dropped.
pub struct Server {
    child: Option<Child>,
    url: String,
    kubeconfig: PathBuf,
    data_dir: Option<PathBuf>,
    scratch: tempfile::TempDir,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    caches: AtomicUsize,
}

impl Server {
    /// `kplane serve --ephemeral`: state in memory only. Panics if the server does not come up.
    pub fn start_ephemeral() -> Self {
        Self::try_start(None).unwrap_or_else(|e| panic!("starting kplane --ephemeral: {e:#}"))
    }

    /// `kplane serve --data-dir DIR`: state in sled under `dir`, which outlives the server so a
    /// later server can be started on it. Panics if the server does not come up.
    pub fn start_with_data_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self::try_start(Some(dir)).unwrap_or_else(|e| panic!("starting kplane --data-dir {}: {e:#}", dir.display()))
    }

    /// Starts a server and waits (up to [`START_TIMEOUT`]) for its ready line:
    /// `kplane ready: https://127.0.0.1:PORT kubeconfig=FILE`.
    pub fn try_start(data_dir: Option<&Path>) -> anyhow::Result<Self> {
        Self::try_start_with(data_dir, &[])
    }

    /// As [`Server::try_start`], with more `kplane serve` flags.
    pub fn try_start_with(data_dir: Option<&Path>, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = kplane_bin()?;
        let scratch = tempfile::Builder::new().prefix("kplane-e2e-").tempdir()?;
        let kubeconfig = scratch.path().join("kubeconfig");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--kubeconfig").arg(&kubeconfig);
        match data_dir {
            Some(d) => cmd.arg("--data-dir").arg(d),
            None => cmd.arg("--ephemeral"),
        };
        cmd.args(extra);
        cmd.env_remove("KUBECONFIG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| drain_into(pipe, stderr.clone()));
        let (lines, _stdout_reader) = line_channel(child.stdout.take().context("no stdout pipe")?);

        let mut server = Server {
            child: Some(child),
            url: String::new(),
            kubeconfig,
            data_dir: data_dir.map(Path::to_path_buf),
            scratch,
            stderr,
            stderr_reader,
            caches: AtomicUsize::new(0),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("kplane ready: ") {
                        let (url, kc) = rest.split_once(" kubeconfig=").context("malformed ready line")?;
                        if Path::new(kc) != server.kubeconfig {
                            bail!("ready line names kubeconfig {kc}, expected {}", server.kubeconfig.display());
                        }
                        server.url = url.to_string();
                        return Ok(server);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    server.kill_9();
                    bail!("no ready line within {START_TIMEOUT:?}; stderr:\n{}", server.stderr());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.reap();
                    bail!("kplane exited before it was ready ({status:?}); stderr:\n{}", server.stderr());
                }
            }
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig the server wrote (cluster CA, server URL, bearer token).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The data directory, for servers started with one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// A temporary directory owned by this server, for manifests and the like.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Writes `contents` to `name` in [`Server::scratch_dir`] and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9` the server and wait until it is gone: a crash, with no chance to flush or clean up.
    pub fn kill_9(&mut self) {
        self.reap();
    }

    /// SIGKILLs (std's `Child::kill`) and reaps the child; its exit status, if there was a child.
    fn reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// The bearer token from the kubeconfig.
    pub fn token(&self) -> String {
        use secrecy::ExposeSecret;
        let kc = self.read_kubeconfig();
        let token = kc.auth_infos.first().and_then(|a| a.auth_info.as_ref()).and_then(|a| a.token.as_ref());
        token.map(|t| t.expose_secret().to_string()).expect("the kubeconfig has no token")
    }

    /// An HTTPS client builder that trusts only this server's CA (the token is the caller's to
    /// send), for raw requests kube-rs would refuse to make.
    pub fn https_client(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()).expect("the kubeconfig's CA is PEM");
        reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca).no_proxy()
    }

    /// The cluster CA certificate (PEM) from the kubeconfig.
    pub fn ca_pem(&self) -> Vec<u8> {
        use base64::Engine as _;
        let kc = self.read_kubeconfig();
        let data = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.certificate_authority_data.clone())
            .expect("the kubeconfig has no certificate-authority-data");
        base64::engine::general_purpose::STANDARD.decode(data.trim()).expect("certificate-authority-data is not base64")
    }

    fn read_kubeconfig(&self) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()))
    }

    /// A kube-rs client built from the kubeconfig (`Config::from_custom_kubeconfig`): real HTTPS.
    pub async fn client(&self) -> kube::Client {
        self.try_client(None).await.unwrap_or_else(|e| panic!("kube client: {e:#}"))
    }

    /// Like [`Server::client`] but authenticating with `token` instead of the kubeconfig's.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        self.try_client(Some(token)).await.unwrap_or_else(|e| panic!("kube client: {e:#}"))
    }

    async fn try_client(&self, token: Option<&str>) -> anyhow::Result<kube::Client> {
        let mut kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        if let Some(token) = token {
            for a in &mut kc.auth_infos {
                if let Some(info) = a.auth_info.as_mut() {
                    info.token = Some(secrecy::SecretString::from(token));
                }
            }
        }
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubectl command for this server: `kubectl[.VERSION] --kubeconfig KC --cache-dir FRESH ARGS…`,
    /// with `KUBECONFIG` removed from its environment. `version` is `"1.27"` … `"1.33"`, or
    /// [`DISPATCHER`] for the version-picking `kubectl`.
    pub fn kubectl_command(&self, version: &str, args: &[&str]) -> Command {
        let n = self.caches.fetch_add(1, Ordering::Relaxed);
        let cache = self.scratch.path().join(format!("kubectl-cache-{n}"));
        let mut cmd = Command::new(kubectl_path(version));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(cache).args(args);
        cmd.env_remove("KUBECONFIG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Runs kubectl to completion (killed after [`KUBECTL_TIMEOUT`], which fails the test).
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        let mut cmd = self.kubectl_command(version, args);
        run_with_deadline(&mut cmd, KUBECTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("kubectl.{version} {}: {e:#}", args.join(" ")))
    }

    /// Runs kubectl, asserts it succeeded, returns its stdout.
    pub fn kubectl_ok(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(out.status.success(), "expected success: {}", describe_kubectl(version, args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserts it exited 1 (a request kubectl or the server refused), returns stderr.
    pub fn kubectl_fails(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert_eq!(out.status.code(), Some(1), "expected exit 1: {}", describe_kubectl(version, args, &out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose stdout lines can be awaited.
    pub fn kubectl_spawn(&self, version: &str, args: &[&str]) -> Spawned {
        let mut cmd = self.kubectl_command(version, args);
        Spawned::spawn(&mut cmd).unwrap_or_else(|e| panic!("kubectl.{version} {}: {e:#}", args.join(" ")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.reap();
    }
}

/// A child process whose stdout is read line by line; killed and reaped when dropped.
pub struct Spawned {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Spawned {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            drain_into(pipe, stderr.clone());
        }
        let (lines, _) = line_channel(child.stdout.take().context("no stdout pipe")?);
        Ok(Self { child, lines, seen: Vec::new(), stderr })
    }

    /// Waits up to `timeout` for a stdout line satisfying `want`; returns it, or an error that
    /// lists every line seen and stderr.
    pub fn wait_for_line(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("no matching line within {timeout:?}"),
                        RecvTimeoutError::Disconnected => "stdout closed (the process ended)".to_string(),
                    };
                    return Err(anyhow!("{why}; stdout so far: {:?}; stderr: {}", self.seen, self.stderr()));
                }
            }
        }
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Whether the process has exited on its own.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion with captured output; kills it (by its pid) after `timeout`.
/// A kubectl run, for assertion messages: the command, exit code, stdout and stderr.
pub fn describe_kubectl(version: &str, args: &[&str], out: &Output) -> String {
    format!(
        "kubectl[{version}] {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // Our own child, by its pid: the waiting thread owns the `Child`.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let out = rx.recv_timeout(Duration::from_secs(10)).ok().and_then(Result::ok);
            let (stdout, stderr) = out
                .map(|o| {
                    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
                })
                .unwrap_or_default();
            bail!("still running after {timeout:?}; killed.\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
    }
}

/// Lines of `pipe` on a channel, read by a thread until EOF.
fn line_channel(pipe: impl Read + Send + 'static) -> (Receiver<String>, JoinHandle<()>) {
    let (tx, rx) = channel();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the writer never blocks.
                continue;
            }
        }
    });
    (rx, handle)
}

/// Copies `pipe` into `buf` until EOF.
fn drain_into(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk[..n]);
        }
    })
}

/// The `kplane` binary to run (see the crate docs for the search order).
pub fn kplane_bin() -> anyhow::Result<PathBuf> {
    let name = format!("kplane{}", std::env::consts::EXE_SUFFIX);
    if let Some(p) = std::env::var_os("KPLANE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(anyhow!("KPLANE_BIN={} is not a file", p.display())) };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/<test-binary>
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(&name));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        candidates.push(PathBuf::from(t).join("debug").join(&name));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("debug").join(&name));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "the kplane binary was not found (looked at {candidates:?}); run `cargo build --bin kplane` first, \
             or set KPLANE_BIN"
        )
    })
}

/// The directory holding `kubectl` and `kubectl.1.NN`.
pub fn kubectl_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("KPLANE_KUBECTL_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .expect("no kubectl on PATH (set KPLANE_KUBECTL_DIR to the folder holding kubectl.1.NN)")
    })
}

/// The kubectl binary for `version` (`"1.27"` … or [`DISPATCHER`]).
pub fn kubectl_path(version: &str) -> PathBuf {
    let file =
        if version.is_empty() || version == DISPATCHER { "kubectl".to_string() } else { format!("kubectl.{version}") };
    let path = kubectl_dir().join(file);
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}
