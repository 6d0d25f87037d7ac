//! Storage: keys, bytes and one global revision (etcd's model), over a pluggable key-value
//! [`Backend`] (sled on disk, or memory). Knows no kinds: the registry builds the keys.
//!
//! Every write is a transaction of [`Op`]s that commits atomically under the next revision;
//! it is acknowledged only once durable (concurrent writers share one flush). Each change
//! becomes an [`Event`] in an in-memory history window that watches resume from.

mod history;
mod memory;
mod sled_backend;

pub use history::{Event, EventKind, Memo, WatchStream};
pub use memory::MemoryBackend;
pub use sled_backend::SledBackend;

use history::History;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, watch};

/// The global revision: the `resourceVersion` of every object.
pub type Revision = u64;

/// Stored bytes, shared between the store, the history and watchers without copying.
pub type Bytes = Arc<[u8]>;

/// One stored key with its value and the revision that last wrote it.
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub mod_revision: Revision,
}

/// A condition a write must meet, checked atomically with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist.
    Exists,
    /// The key must exist and have been last written at this revision (optimistic concurrency).
    ModRevision(Revision),
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: String, value: Bytes, pre: Precondition },
    Delete { key: String, pre: Precondition },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
    fn pre(&self) -> Precondition {
        match self {
            Op::Put { pre, .. } | Op::Delete { pre, .. } => *pre,
        }
    }
}

/// Storage failures. The registry maps them to API errors (`interpret_*`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StorageError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted { requested: Revision, oldest: Revision },
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A key-value engine: ordered keys, atomic batches, an explicit flush. The [`Store`] adds
/// revisions, preconditions, history and durability on top, the same for every engine.
pub trait Backend: Send + Sync + 'static {
    /// The value and mod revision stored at `key`.
    fn get(&self, key: &str) -> StorageResult<Option<(Revision, Bytes)>>;
    /// Keys starting with `prefix`, in order, strictly after `start_after`, at most `limit`.
    fn scan(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StorageResult<Vec<KeyValue>>;
    /// Applies puts (`Some`) and deletes (`None`) atomically and records `revision` as current.
    fn apply(&self, writes: &[(String, Option<Bytes>)], revision: Revision) -> StorageResult<()>;
    /// The revision recorded by the last `apply` (0 for a new store).
    fn revision(&self) -> StorageResult<Revision>;
    /// Makes everything applied so far durable. Blocking.
    fn flush(&self) -> StorageResult<()>;
    /// Whether `flush` does anything (false for memory: nothing to wait for).
    fn is_durable(&self) -> bool;
}

/// The store: a backend plus the global revision, history window and group commit.
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Writers take it exclusively to check preconditions, apply and publish under one
    /// revision; lists and watch registration take it shared, so they see a whole revision.
    state: RwLock<State>,
    durability: Option<Durability>,
}

struct State {
    revision: Revision,
    history: History,
}

impl Store {
    /// Opens a store over `backend`, keeping the last `history_window` events for watches.
    /// Must be called inside a tokio runtime when the backend is durable (it starts the flusher).
    pub fn open(backend: Arc<dyn Backend>, history_window: usize) -> StorageResult<Arc<Self>> {
        let revision = backend.revision()?;
        let durability = backend.is_durable().then(|| Durability::start(backend.clone()));
        Ok(Arc::new(Self {
            backend,
            state: RwLock::new(State { revision, history: History::new(history_window, revision) }),
            durability,
        }))
    }

    /// An in-memory store, as for `--ephemeral`.
    pub fn memory() -> Arc<Self> {
        match Self::open(Arc::new(MemoryBackend::default()), history::DEFAULT_WINDOW) {
            Ok(store) => store,
            Err(_) => unreachable!("the memory backend cannot fail to open"),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.read_state().revision
    }

    pub fn get(&self, key: &str) -> StorageResult<Option<KeyValue>> {
        Ok(self.backend.get(key)?.map(|(mod_revision, value)| KeyValue { key: key.to_string(), value, mod_revision }))
    }

    /// Lists keys under `prefix` after `start_after` (at most `limit`), with the revision the
    /// list is consistent with.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<(Vec<KeyValue>, Revision)> {
        let state = self.read_state();
        let items = self.backend.scan(prefix, start_after, limit)?;
        Ok((items, state.revision))
    }

    /// Commits `ops` atomically under the next revision, waits until durable and returns it.
    /// Every precondition is checked first; if one fails nothing is written.
    pub async fn commit(&self, ops: Vec<Op>) -> StorageResult<Revision> {
        let revision = self.apply(ops)?;
        if let Some(d) = &self.durability {
            d.wait_durable(revision).await?;
        }
        Ok(revision)
    }

    fn apply(&self, ops: Vec<Op>) -> StorageResult<Revision> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut prevs = Vec::with_capacity(ops.len());
        for op in &ops {
            let current = self.backend.get(op.key())?;
            check(op.key(), op.pre(), current.as_ref().map(|(r, _)| *r))?;
            prevs.push(current);
        }
        let mut keys = std::collections::HashSet::with_capacity(ops.len());
        if !ops.iter().all(|op| keys.insert(op.key())) {
            // As etcd: one transaction may not touch a key twice.
            return Err(StorageError::Backend("duplicate key in one transaction".into()));
        }
        let revision = state.revision + 1;
        let mut writes = Vec::with_capacity(ops.len());
        let mut events = Vec::with_capacity(ops.len());
        for (op, prev) in ops.into_iter().zip(prevs) {
            match op {
                Op::Put { key, value, .. } => {
                    let mut stored = Vec::with_capacity(8 + value.len());
                    stored.extend_from_slice(&revision.to_be_bytes());
                    stored.extend_from_slice(&value);
                    writes.push((key.clone(), Some(Bytes::from(stored))));
                    let kind = if prev.is_some() { EventKind::Modified } else { EventKind::Added };
                    events.push(Event {
                        revision,
                        key,
                        kind,
                        value: Some(value),
                        prev: prev.map(|(_, v)| v),
                        memo: Memo::default(),
                    });
                }
                Op::Delete { key, .. } => {
                    // Deleting an absent key (no precondition) is a no-op, not an event.
                    if let Some((_, prev)) = prev {
                        writes.push((key.clone(), None));
                        events.push(Event {
                            revision,
                            key,
                            kind: EventKind::Deleted,
                            value: None,
                            prev: Some(prev),
                            memo: Memo::default(),
                        });
                    }
                }
            }
        }
        if writes.is_empty() {
            return Ok(state.revision);
        }
        self.backend.apply(&writes, revision)?;
        state.revision = revision;
        if let Some(d) = &self.durability {
            d.request(revision);
        }
        for event in events {
            state.history.push(event);
        }
        Ok(revision)
    }

    /// Watches keys under `prefix` for changes strictly after revision `after`.
    /// Fails with [`StorageError::Compacted`] when the window no longer holds them.
    pub fn watch(&self, prefix: &str, after: Revision) -> StorageResult<WatchStream> {
        let state = self.read_state();
        state.history.watch(prefix, after, state.revision)
    }

    /// The oldest revision a watch can still start from.
    pub fn oldest_watchable(&self) -> Revision {
        self.read_state().history.compacted()
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn check(key: &str, pre: Precondition, current: Option<Revision>) -> StorageResult<()> {
    match (pre, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::Absent, None) | (Precondition::Exists, Some(_)) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StorageError::AlreadyExists { key: key.to_string() }),
        (Precondition::Exists | Precondition::ModRevision(_), None) => {
            Err(StorageError::NotFound { key: key.to_string() })
        }
        (Precondition::ModRevision(expected), Some(actual)) if expected == actual => Ok(()),
        (Precondition::ModRevision(expected), Some(actual)) => {
            Err(StorageError::Conflict { key: key.to_string(), expected, actual })
        }
    }
}

/// Splits a stored value into its mod revision and payload.
fn decode_stored(stored: &[u8]) -> StorageResult<(Revision, Bytes)> {
    if stored.len() < 8 {
        return Err(StorageError::Backend("stored value shorter than its revision header".into()));
    }
    let (rev, value) = stored.split_at(8);
    let mut buf = [0u8; 8];
    buf.copy_from_slice(rev);
    Ok((Revision::from_be_bytes(buf), Bytes::from(value)))
}

/// Group commit: writers ask for their revision to be durable; one flusher task flushes
/// everything applied so far, so concurrent writers share a flush.
struct Durability {
    wanted: Arc<Wanted>,
    flushed: watch::Receiver<Result<Revision, String>>,
}

struct Wanted {
    revision: AtomicU64,
    wake: Notify,
}

impl Durability {
    fn start(backend: Arc<dyn Backend>) -> Self {
        let initial = backend.revision().unwrap_or(0);
        let (tx, rx) = watch::channel(Ok(initial));
        let wanted = Arc::new(Wanted { revision: AtomicU64::new(initial), wake: Notify::new() });
        let w = wanted.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = w.wake.notified() => {}
                    _ = tx.closed() => return,
                }
                let target = w.revision.load(Ordering::Acquire);
                let b = backend.clone();
                let result = match tokio::task::spawn_blocking(move || b.flush()).await {
                    Ok(Ok(())) => Ok(target),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if tx.send(result).is_err() {
                    return;
                }
            }
        });
        Self { wanted, flushed: rx }
    }

    fn request(&self, revision: Revision) {
        self.wanted.revision.fetch_max(revision, Ordering::AcqRel);
        self.wanted.wake.notify_one();
    }

    async fn wait_durable(&self, revision: Revision) -> StorageResult<()> {
        let mut rx = self.flushed.clone();
        loop {
            match &*rx.borrow_and_update() {
                Ok(done) if *done >= revision => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(StorageError::Backend(format!("flush failed: {e}"))),
            }
            if rx.changed().await.is_err() {
                return Err(StorageError::Backend("the flusher stopped".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
