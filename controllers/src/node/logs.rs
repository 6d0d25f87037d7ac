//! Container log files of process pods and reading them as `kubectl logs` asks (the kubelet's
//! `pkg/kubelet/kuberuntime/logs/logs.go` over CRI log files). One file per container instance,
//! `<root>/<ns>_<pod>_<uid>/<container>/<restartCount>.log`, each line a CRI record:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>` (`P` for a piece of a line longer than 16 KiB).
//! A file that reaches 10 MiB is rotated to `<n>.log.1` (the kubelet's `containerLogMaxSize`;
//! one rotated file is kept, where the kubelet keeps four).

use bytes::Bytes;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

/// Longest content of one record; longer lines are split into partial records, as the CRI does.
const MAX_RECORD: usize = 16 * 1024;

/// Size at which a log file is rotated (`containerLogMaxSize`).
const MAX_FILE: u64 = 10 * 1024 * 1024;

/// A log stream: the bytes `kubectl logs` prints.
pub type LogStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no log for container {0}")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdout,
    Stderr,
}

impl Pipe {
    fn name(self) -> &'static str {
        match self {
            Pipe::Stdout => "stdout",
            Pipe::Stderr => "stderr",
        }
    }
}

/// What to read (`PodLogOptions`, validated by the API server).
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub follow: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<SystemTime>,
    pub limit_bytes: Option<u64>,
}

/// The pod a log belongs to.
#[derive(Debug, Clone)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    fn dir(&self) -> String {
        format!("{}_{}_{}", self.namespace, self.name, self.uid)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    written: u64,
    done: bool,
    /// Bumped at each rotation: a follower then finishes the file it has and opens the new one.
    rotations: u64,
}

/// The file being written and its size.
struct Writing {
    file: Option<std::fs::File>,
    size: u64,
}

struct InstanceLog {
    path: PathBuf,
    pod_uid: String,
    max_file: u64,
    writing: Mutex<Writing>,
    progress: watch::Sender<Progress>,
}

impl InstanceLog {
    fn rotated(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, Writing> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (rotated file if any, current file) and notes the rotation count, all under the
    /// writer's lock so no rotation falls in between.
    fn open(&self) -> std::io::Result<(Option<std::fs::File>, std::fs::File, u64)> {
        let _w = self.writing();
        let rotated = std::fs::File::open(self.rotated()).ok();
        let current = std::fs::File::open(&self.path)?;
        Ok((rotated, current, self.progress.borrow().rotations))
    }
}

struct Inner {
    root: PathBuf,
    temporary: bool,
    max_file: u64,
    instances: Mutex<HashMap<String, Arc<InstanceLog>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Every container instance's log, by container ID. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("root", &self.inner.root).finish()
    }
}

impl LogStore {
    /// Logs under `root` (the data directory's `pods/`). What an earlier run left there is
    /// removed: the containers it logged are gone with that run, and nothing names them now.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        if root.is_dir() {
            for entry in std::fs::read_dir(&root)?.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        std::fs::create_dir_all(&root)?;
        Ok(Self::with_root(root, false))
    }

    /// Logs in a fresh temporary directory removed when the last clone is dropped
    /// (ephemeral clusters).
    pub fn temporary() -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "kplane-logs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)?;
        Ok(Self::with_root(root, true))
    }

    fn with_root(root: PathBuf, temporary: bool) -> Self {
        LogStore {
            inner: Arc::new(Inner { root, temporary, max_file: MAX_FILE, instances: Mutex::new(HashMap::new()) }),
        }
    }

    /// The same store rotating files at `bytes` (tests).
    pub fn with_max_file_size(self, bytes: u64) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.max_file = bytes;
                LogStore { inner: Arc::new(inner) }
            }
            Err(inner) => LogStore { inner },
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<InstanceLog>>> {
        self.inner.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty log for one container instance.
    pub fn create(
        &self,
        pod: &PodKey,
        container: &str,
        attempt: u32,
        container_id: &str,
    ) -> std::io::Result<LogWriter> {
        let dir = self.inner.root.join(pod.dir()).join(container);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{attempt}.log"));
        let file = std::fs::File::create(&path)?;
        let _ = std::fs::remove_file(dir.join(format!("{attempt}.log.1")));
        let log = Arc::new(InstanceLog {
            path,
            pod_uid: pod.uid.clone(),
            max_file: self.inner.max_file,
            writing: Mutex::new(Writing { file: Some(file), size: 0 }),
            progress: watch::Sender::new(Progress::default()),
        });
        self.instances().insert(container_id.to_string(), log.clone());
        Ok(LogWriter { log })
    }

    /// Whether a log exists for this container ID.
    pub fn has(&self, container_id: &str) -> bool {
        self.instances().contains_key(container_id)
    }

    /// Drops one instance's log (the kubelet keeps the current and the previous instance).
    pub fn remove(&self, container_id: &str) {
        if let Some(log) = self.instances().remove(container_id) {
            let _ = std::fs::remove_file(&log.path);
            let _ = std::fs::remove_file(log.rotated());
        }
    }

    /// Drops every log of a pod (deleted pods take their logs with them).
    pub fn remove_pod(&self, pod: &PodKey) {
        self.instances().retain(|_, l| l.pod_uid != pod.uid);
        let _ = std::fs::remove_dir_all(self.inner.root.join(pod.dir()));
    }

    /// The last `lines` lines and at most `bytes` bytes of an instance's output: the
    /// `FallbackToLogsOnError` termination message.
    pub fn tail_text(&self, container_id: &str, lines: usize, bytes: usize) -> String {
        let Some(log) = self.instances().get(container_id).cloned() else { return String::new() };
        let Ok((rotated, current, _)) = log.open() else { return String::new() };
        let mut data = Vec::new();
        for mut f in rotated.into_iter().chain([current]) {
            let _ = std::io::Read::read_to_end(&mut f, &mut data);
        }
        let mut out: VecDeque<Vec<u8>> = VecDeque::new();
        let mut current = Vec::new();
        for line in data.split_inclusive(|b| *b == b'\n') {
            let Some(rec) = Record::parse(line) else { continue };
            current.extend_from_slice(rec.content);
            if rec.full {
                current.push(b'\n');
                out.push_back(std::mem::take(&mut current));
                if out.len() > lines {
                    out.pop_front();
                }
            }
        }
        let all: Vec<u8> = out.into_iter().flatten().collect();
        let start = all.len().saturating_sub(bytes);
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// Reads an instance's log as `opts` says; with `follow`, the stream ends when the
    /// instance's output ends.
    pub async fn read(&self, container_id: &str, opts: ReadOptions) -> Result<LogStream, LogError> {
        let log = self.instances().get(container_id).cloned().ok_or_else(|| LogError::NotFound(container_id.into()))?;
        let progress = log.progress.subscribe();
        let files = log.open()?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
        tokio::spawn(async move {
            if let Err(e) = pump(log, files, progress, opts, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let mut rx = rx;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))))
    }
}

/// One parsed CRI record.
struct Record<'a> {
    time: &'a str,
    full: bool,
    content: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(line: &'a [u8]) -> Option<Self> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut parts = line.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?;
        let _pipe = parts.next()?;
        let tag = parts.next()?;
        let content = parts.next().unwrap_or(b"");
        Some(Record { time, full: tag != b"P", content })
    }

    fn timestamp(&self) -> Option<Timestamp> {
        self.time.parse().ok()
    }

    /// The bytes `kubectl logs` prints for this record.
    fn render(&self, timestamps: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.content.len() + 40);
        if timestamps {
            out.extend_from_slice(self.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(self.content);
        if self.full {
            out.push(b'\n');
        }
        out
    }
}

/// What is left of `limitBytes`, and whether the reader should stop.
struct Sink<'a> {
    tx: &'a mpsc::Sender<std::io::Result<Bytes>>,
    left: Option<u64>,
    since: Option<Timestamp>,
    timestamps: bool,
}

impl Sink<'_> {
    /// Sends one record; `false` when the reader is done (limit reached or client gone).
    async fn send(&mut self, line: &[u8]) -> bool {
        let Some(rec) = Record::parse(line) else { return true };
        if let (Some(since), Some(t)) = (self.since, rec.timestamp())
            && t < since
        {
            return true;
        }
        let mut out = rec.render(self.timestamps);
        if let Some(left) = self.left.as_mut() {
            if (out.len() as u64) >= *left {
                out.truncate(*left as usize);
                *left = 0;
            } else {
                *left -= out.len() as u64;
            }
        }
        if !out.is_empty() && self.tx.send(Ok(Bytes::from(out))).await.is_err() {
            return false;
        }
        self.left != Some(0)
    }
}

async fn pump(
    log: Arc<InstanceLog>,
    (rotated, current, mut rotations): (Option<std::fs::File>, std::fs::File, u64),
    mut progress: watch::Receiver<Progress>,
    opts: ReadOptions,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let since = opts.since.and_then(|t| Timestamp::try_from(t).ok());
    let mut sink = Sink { tx, left: opts.limit_bytes, since, timestamps: opts.timestamps };
    if sink.left == Some(0) {
        return Ok(());
    }
    // With tailLines, what is there at first is held back to keep only the last records.
    let mut tail: Option<VecDeque<Vec<u8>>> = opts.tail_lines.map(|_| VecDeque::new());
    let keep = opts.tail_lines.unwrap_or(0);
    let mut pending = Vec::new();
    if let Some(f) = rotated {
        let mut reader = BufReader::new(tokio::fs::File::from_std(f));
        if !read_records(&mut reader, &mut pending, &mut tail, keep, &mut sink).await? {
            return Ok(());
        }
        pending.clear();
    }
    let mut reader = BufReader::new(tokio::fs::File::from_std(current));
    let mut writer_gone = false;
    loop {
        // Seen before reading: if the instance had ended, what follows is all there is.
        let seen = *progress.borrow_and_update();
        let done = seen.done || writer_gone;
        if !read_records(&mut reader, &mut pending, &mut tail, keep, &mut sink).await? {
            return Ok(());
        }
        for line in tail.take().into_iter().flatten() {
            if !sink.send(&line).await {
                return Ok(());
            }
        }
        if seen.rotations != rotations {
            // The file in hand was rotated away, complete: finish it, then go on in the new one.
            if !read_records(&mut reader, &mut pending, &mut tail, keep, &mut sink).await? {
                return Ok(());
            }
            pending.clear();
            let (between, file, now) = log.open()?;
            // Rotated more than once meanwhile: the `.1` file is the one after ours (any
            // older are gone, as on a node whose follower falls behind).
            if let Some(f) = between.filter(|_| now - rotations >= 2) {
                let mut r = BufReader::new(tokio::fs::File::from_std(f));
                if !read_records(&mut r, &mut pending, &mut tail, keep, &mut sink).await? {
                    return Ok(());
                }
                pending.clear();
            }
            reader = BufReader::new(tokio::fs::File::from_std(file));
            rotations = now;
            continue;
        }
        if !opts.follow || done {
            return Ok(());
        }
        if progress.changed().await.is_err() {
            writer_gone = true;
        }
    }
}

/// Reads whole records to the end of what is written (a record cut short stays in `pending`),
/// into the tail window or the sink; `false` when the reader is done.
async fn read_records(
    reader: &mut BufReader<tokio::fs::File>,
    pending: &mut Vec<u8>,
    tail: &mut Option<VecDeque<Vec<u8>>>,
    keep: u64,
    sink: &mut Sink<'_>,
) -> std::io::Result<bool> {
    while reader.read_until(b'\n', pending).await? > 0 {
        if !pending.ends_with(b"\n") {
            continue;
        }
        let line = std::mem::take(pending);
        match tail.as_mut() {
            Some(records) => {
                records.push_back(line);
                if records.len() as u64 > keep {
                    records.pop_front();
                }
            }
            None if !sink.send(&line).await => return Ok(false),
            None => {}
        }
    }
    Ok(true)
}

/// Writes one container instance's log.
#[derive(Clone)]
pub struct LogWriter {
    log: Arc<InstanceLog>,
}

impl LogWriter {
    /// Appends one record stamped now.
    pub fn write(&self, pipe: Pipe, content: &[u8], full: bool) {
        let now = Timestamp::now();
        let mut rec = Vec::with_capacity(content.len() + 48);
        let _ = write!(rec, "{} {} {} ", now, pipe.name(), if full { "F" } else { "P" });
        rec.extend_from_slice(content);
        rec.push(b'\n');
        let mut w = self.log.writing();
        if w.size > 0 && w.size + rec.len() as u64 > self.log.max_file && w.file.is_some() {
            // Rotate: the full file becomes `.1` (replacing the one before), writing starts anew.
            let rotated = std::fs::rename(&self.log.path, self.log.rotated())
                .and_then(|()| std::fs::File::create(&self.log.path));
            match rotated {
                Ok(f) => {
                    w.file = Some(f);
                    w.size = 0;
                    self.log.progress.send_modify(|p| p.rotations += 1);
                }
                Err(e) => tracing::warn!(path = %self.log.path.display(), error = %e, "rotating a container log"),
            }
        }
        if let Some(f) = w.file.as_mut()
            && f.write_all(&rec).is_ok()
        {
            w.size += rec.len() as u64;
            self.log.progress.send_modify(|p| p.written += rec.len() as u64);
        }
    }

    /// Copies a pipe into the log, line by line, until it closes.
    pub fn capture(&self, pipe: Pipe, reader: impl AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<()> {
        let writer = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(MAX_RECORD, reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                // Read at most one record's worth; a longer line becomes partial records.
                let n = match read_line_capped(&mut reader, &mut line, MAX_RECORD).await {
                    Ok(n) => n,
                    Err(_) => break,
                };
                if n == 0 {
                    break;
                }
                match line.strip_suffix(b"\n") {
                    Some(content) => writer.write(pipe, content, true),
                    None if line.len() >= MAX_RECORD => writer.write(pipe, &line, false),
                    // The pipe closed mid-line.
                    None => writer.write(pipe, &line, true),
                }
            }
        })
    }

    /// Marks the instance's output as ended: followers stop at the end of the file.
    pub fn finish(&self) {
        if let Some(f) = self.log.writing().file.take() {
            let _ = f.sync_data();
        }
        self.log.progress.send_modify(|p| p.done = true);
    }
}

/// Like `read_until(b'\n')` but stops after `cap` bytes.
async fn read_line_capped(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    out: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let room = cap - out.len();
        let take = buf.iter().take(room).position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(buf.len().min(room));
        out.extend_from_slice(&buf[..take]);
        reader.consume(take);
        total += take;
        if out.ends_with(b"\n") || out.len() >= cap {
            return Ok(total);
        }
    }
}

/// Which container instance `kubectl logs` means, from the pod's status, with the kubelet's
/// messages when there is none (`validateContainerLogStatus`): the running instance, else the
/// last terminated one; with `previous`, the one before the current.
pub fn log_container_id(pod: &Pod, container: &str, previous: bool) -> Result<String, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.clone().unwrap_or_default();
    let found = [status.container_statuses, status.init_container_statuses, status.ephemeral_container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .find(|s| s.name == container)
        .ok_or_else(|| format!("container {container:?} in pod {pod_name:?} is not available"))?;
    let last = found.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let last_id = last.and_then(|t| t.container_id.clone()).filter(|id| !id.is_empty());
    let state = found.state.clone().unwrap_or_default();
    let terminated_msg = || format!("container {container:?} in pod {pod_name:?} is terminated");
    if previous {
        return last_id
            .ok_or_else(|| format!("previous terminated container {container:?} in pod {pod_name:?} not found"));
    }
    if state.running.is_some() {
        return found.container_id.clone().ok_or_else(terminated_msg);
    }
    if let Some(t) = &state.terminated {
        return t.container_id.clone().filter(|id| !id.is_empty()).or(last_id).ok_or_else(terminated_msg);
    }
    if last.is_some() {
        return last_id.ok_or_else(terminated_msg);
    }
    match state.waiting.and_then(|w| w.reason) {
        Some(r) if r == "ErrImagePull" => {
            Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"))
        }
        Some(r) if r == "ImagePullBackOff" => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
        )),
        Some(r) => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: {r}")),
        None => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start - no logs yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    fn pod() -> PodKey {
        PodKey { namespace: "ns".into(), name: "p".into(), uid: "u1".into() }
    }

    async fn collect(store: &LogStore, id: &str, opts: ReadOptions) -> String {
        let mut s = store.read(id, opts).await.expect("log");
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8(out).expect("utf8")
    }

    fn write_lines(w: &LogWriter, lines: &[&str]) {
        for l in lines {
            w.write(Pipe::Stdout, l.as_bytes(), true);
        }
    }

    #[tokio::test]
    async fn reads_all_tail_limit_and_timestamps() {
        let store = LogStore::temporary().expect("store");
        let w = store.create(&pod(), "c", 0, "id0").expect("create");
        write_lines(&w, &["one", "two", "three"]);
        w.write(Pipe::Stderr, b"err", true);
        w.finish();
        let all = |o| collect(&store, "id0", o);
        assert_eq!(all(ReadOptions::default()).await, "one\ntwo\nthree\nerr\n");
        assert_eq!(all(ReadOptions { tail_lines: Some(2), ..Default::default() }).await, "three\nerr\n");
        assert_eq!(all(ReadOptions { tail_lines: Some(0), ..Default::default() }).await, "");
        assert_eq!(all(ReadOptions { tail_lines: Some(10), ..Default::default() }).await, "one\ntwo\nthree\nerr\n");
        assert_eq!(all(ReadOptions { limit_bytes: Some(6), ..Default::default() }).await, "one\ntw");
        let stamped = all(ReadOptions { timestamps: true, tail_lines: Some(1), ..Default::default() }).await;
        let (ts, rest) = stamped.split_once(' ').expect("timestamp");
        assert!(ts.parse::<Timestamp>().is_ok(), "{ts}");
        assert_eq!(rest, "err\n");
        // Following a finished instance reads to the end and stops.
        assert_eq!(all(ReadOptions { follow: true, ..Default::default() }).await, "one\ntwo\nthree\nerr\n");
        // Since a moment in the future: nothing.
        let later = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(all(ReadOptions { since: Some(later), ..Default::default() }).await, "");
        let earlier = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(all(ReadOptions { since: Some(earlier), tail_lines: Some(1), ..Default::default() }).await, "err\n");
        assert!(matches!(store.read("nope", ReadOptions::default()).await, Err(LogError::NotFound(_))));
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_ends_with_the_instance() {
        let store = LogStore::temporary().expect("store");
        let w = store.create(&pod(), "c", 0, "id0").expect("create");
        write_lines(&w, &["first"]);
        let mut s = store
            .read("id0", ReadOptions { follow: true, tail_lines: Some(1), ..Default::default() })
            .await
            .expect("log");
        async fn next(s: &mut LogStream) -> Option<std::io::Result<Bytes>> {
            tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("in time")
        }
        assert_eq!(next(&mut s).await.expect("chunk").expect("ok"), "first\n");
        write_lines(&w, &["second"]);
        assert_eq!(next(&mut s).await.expect("chunk").expect("ok"), "second\n");
        w.finish();
        assert!(next(&mut s).await.is_none(), "stream ends with the instance");
    }

    #[tokio::test]
    async fn capture_splits_long_lines_and_keeps_a_cut_last_line() {
        let store = LogStore::temporary().expect("store");
        let w = store.create(&pod(), "c", 0, "id0").expect("create");
        let long = "x".repeat(MAX_RECORD + 10);
        let input = format!("a\n{long}\ntail-without-newline");
        w.capture(Pipe::Stdout, std::io::Cursor::new(input.into_bytes())).await.expect("capture");
        w.finish();
        let raw = std::fs::read_to_string(store.root().join("ns_p_u1/c/0.log")).expect("file");
        let tags: Vec<&str> = raw.lines().map(|l| l.split(' ').nth(2).expect("tag")).collect();
        assert_eq!(tags, ["F", "P", "F", "F"]);
        let out = collect(&store, "id0", ReadOptions::default()).await;
        assert_eq!(out, format!("a\n{long}\ntail-without-newline\n"));
        assert_eq!(
            collect(&store, "id0", ReadOptions { tail_lines: Some(1), ..Default::default() }).await,
            "tail-without-newline\n"
        );
        assert_eq!(store.tail_text("id0", 1, 8), "newline\n");
    }

    #[tokio::test]
    async fn instances_are_separate_and_removed_with_the_pod() {
        let store = LogStore::temporary().expect("store");
        let w0 = store.create(&pod(), "c", 0, "id0").expect("create");
        write_lines(&w0, &["old"]);
        w0.finish();
        let w1 = store.create(&pod(), "c", 1, "id1").expect("create");
        write_lines(&w1, &["new"]);
        assert_eq!(collect(&store, "id0", ReadOptions::default()).await, "old\n");
        assert_eq!(collect(&store, "id1", ReadOptions::default()).await, "new\n");
        store.remove("id0");
        assert!(!store.has("id0"));
        store.remove_pod(&pod());
        assert!(!store.has("id1"));
        assert!(!store.root().join("ns_p_u1").exists());
        let root = store.root().to_path_buf();
        drop(store);
        assert!(!root.exists(), "a temporary store removes its directory");
    }
    #[test]
    fn log_container_follows_the_kubelet() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [status]}}),
            )
            .expect("pod")
        };
        let base = serde_json::json!({"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 1});
        let with = |extra: serde_json::Value| {
            let mut s = base.clone();
            for (k, v) in extra.as_object().expect("object") {
                s[k] = v.clone();
            }
            pod(s)
        };
        let running = with(serde_json::json!({"containerID": "kplane://2", "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "kplane://1"}}}));
        assert_eq!(log_container_id(&running, "c", false).as_deref(), Ok("kplane://2"));
        assert_eq!(log_container_id(&running, "c", true).as_deref(), Ok("kplane://1"));
        assert_eq!(log_container_id(&running, "x", false), Err("container \"x\" in pod \"p\" is not available".into()));
        let backoff = with(serde_json::json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "kplane://1"}}}));
        assert_eq!(log_container_id(&backoff, "c", false).as_deref(), Ok("kplane://1"));
        let fresh = with(serde_json::json!({"containerID": "kplane://0", "state": {"running": {}}, "lastState": {}}));
        assert_eq!(
            log_container_id(&fresh, "c", true),
            Err("previous terminated container \"c\" in pod \"p\" not found".into())
        );
        let creating =
            with(serde_json::json!({"state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}));
        assert_eq!(
            log_container_id(&creating, "c", false),
            Err("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into())
        );
    }
    #[tokio::test]
    async fn files_rotate_and_readers_span_them() {
        let store = LogStore::temporary().expect("store").with_max_file_size(100);
        let w = store.create(&pod(), "c", 0, "id0").expect("create");
        let mut follow = store.read("id0", ReadOptions { follow: true, ..Default::default() }).await.expect("log");
        let lines: Vec<String> = (0..6).map(|i| format!("line-{i}")).collect();
        // Each record is ~45 bytes: two per file.
        for l in &lines {
            w.write(Pipe::Stdout, l.as_bytes(), true);
        }
        assert!(store.root().join("ns_p_u1/c/0.log.1").exists());
        let now = collect(&store, "id0", ReadOptions::default()).await;
        assert_eq!(now, "line-2\nline-3\nline-4\nline-5\n", "the current and the rotated file");
        assert_eq!(
            collect(&store, "id0", ReadOptions { tail_lines: Some(3), ..Default::default() }).await,
            "line-3\nline-4\nline-5\n"
        );
        w.finish();
        let mut seen = Vec::new();
        while let Some(c) = tokio::time::timeout(Duration::from_secs(5), follow.next()).await.expect("in time") {
            seen.extend_from_slice(&c.expect("chunk"));
        }
        let seen = String::from_utf8(seen).expect("utf8");
        // A follower that started first reads across rotations without losing or repeating lines.
        assert_eq!(seen, lines.iter().map(|l| format!("{l}\n")).collect::<String>());
        store.remove("id0");
        assert!(!store.root().join("ns_p_u1/c/0.log.1").exists());
    }
}
