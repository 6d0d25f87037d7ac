//! The watch history: the last N events in memory, and the fan-out of new ones to watchers.

use super::{Bytes, Revision, StorageError, StorageResult};
use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for watches to resume from (etcd keeps more, but compacts every 5 minutes;
/// upstream's watch cache holds 100 per resource). A watch from before the window gets 410.
pub const DEFAULT_WINDOW: usize = 50_000;

/// Events a watcher may fall behind by before it is ended with `Compacted` (it re-lists).
pub(super) const FANOUT_CAPACITY: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change: the key, its new value (none for a delete) and the value it replaced.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    pub kind: EventKind,
    pub value: Option<Bytes>,
    pub prev: Option<Bytes>,
    /// What watchers derive from this event, computed by the first and shared with the rest.
    pub memo: Memo,
}

/// Forms the layers above derive from one event (decoded objects, encoded lines), each made
/// once however many watchers receive the event, as upstream's watch cache shares one
/// serialization among watchers. Storage never looks inside; a tag names the deriver.
#[derive(Default)]
pub struct Memo(Mutex<Vec<(usize, Arc<dyn Any + Send + Sync>)>>);

impl Memo {
    /// The value derived under `tag`, made by `make` if this is the first asker. Askers that
    /// come while it is being made wait for it rather than making their own.
    pub fn get_or_insert_with<T: Any + Send + Sync>(&self, tag: usize, make: impl FnOnce() -> T) -> Arc<T> {
        let mut slots = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, v)) = slots.iter().find(|(t, _)| *t == tag)
            && let Ok(v) = v.clone().downcast::<T>()
        {
            return v;
        }
        let v = Arc::new(make());
        slots.push((tag, v.clone()));
        v
    }
}

impl Clone for Memo {
    /// A copied event derives its forms afresh.
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

pub(super) struct History {
    window: usize,
    events: VecDeque<Arc<Event>>,
    /// Every event at or below this revision has left the window.
    compacted: Revision,
    fanout: broadcast::Sender<Arc<Event>>,
}

impl History {
    /// A history that starts empty at `revision` (nothing before it can be watched).
    pub(super) fn new(window: usize, revision: Revision) -> Self {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        Self { window: window.max(1), events: VecDeque::new(), compacted: revision, fanout }
    }

    pub(super) fn push(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.events.len() == self.window
            && let Some(old) = self.events.pop_front()
        {
            self.compacted = old.revision;
            // Events of one revision leave together, so a resume never sees half a commit.
            while self.events.front().is_some_and(|e| e.revision == old.revision) {
                self.events.pop_front();
            }
        }
        let _ = self.fanout.send(event.clone());
        self.events.push_back(event);
    }

    pub(super) fn compacted(&self) -> Revision {
        self.compacted
    }

    pub(super) fn watch(&self, prefix: &str, after: Revision, current: Revision) -> StorageResult<WatchStream> {
        if after < self.compacted {
            return Err(StorageError::Compacted { requested: after, oldest: self.compacted + 1 });
        }
        let start = self.events.partition_point(|e| e.revision <= after);
        let backlog = if after >= current {
            VecDeque::new()
        } else {
            self.events.range(start..).filter(|e| e.key.starts_with(prefix)).cloned().collect()
        };
        Ok(WatchStream { prefix: prefix.to_string(), after, backlog, live: self.fanout.subscribe() })
    }
}

/// The events under a prefix after a revision: the backlog from the window, then live ones.
pub struct WatchStream {
    prefix: String,
    /// Live events at or below it are skipped (a watch from a revision not yet reached).
    after: Revision,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
}

impl WatchStream {
    /// The next event, `None` when the store is gone, or `Compacted` if this watcher fell so
    /// far behind that events were dropped (the client must re-list, as after a 410).
    pub async fn next(&mut self) -> Option<StorageResult<Arc<Event>>> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(Ok(e));
        }
        loop {
            match self.live.recv().await {
                Ok(e) if e.revision > self.after && e.key.starts_with(&self.prefix) => return Some(Ok(e)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(Err(StorageError::Compacted { requested: 0, oldest: n }));
                }
            }
        }
    }
}
