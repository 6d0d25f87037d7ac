//! A work queue with client-go's guarantees (`util/workqueue`): an item waits in the queue at
//! most once, no two workers hold the same item (added while being processed, it is queued again
//! when the worker is done), delayed adds, and per-item exponential back-off for failures (the
//! item half of `DefaultControllerRateLimiter`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

struct State<T> {
    queue: VecDeque<T>,
    /// Items waiting to be processed (queued, or to be queued when their worker is done).
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// A deduplicating queue of keys shared by a controller's workers.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<T> {
    /// A queue whose failed items come back after `base_delay`, doubling up to `max_delay`.
    pub fn new(base_delay: Duration, max_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
            base_delay,
            max_delay,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if !s.dirty.insert(item.clone()) {
            return;
        }
        if s.processing.contains(&item) {
            return; // queued again by `done`
        }
        s.queue.push_back(item);
        drop(s);
        self.ready.notify_one();
    }

    /// Queues `item` after `delay`.
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let queue: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(item);
            }
        });
    }

    /// Queues `item` again after its back-off, which doubles with each failure since the last
    /// [`WorkQueue::forget`].
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        self.retry(item, self.base_delay);
    }

    /// As [`WorkQueue::add_rate_limited`], from a first delay of `base` (a conflict is worth a
    /// quicker retry than other failures); returns the failures since the last forget.
    pub fn retry(self: &Arc<Self>, item: T, base: Duration) -> u32 {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(item.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.add_after(item, base.saturating_mul(factor).min(self.max_delay));
        failures
    }

    /// Clears the back-off of `item` (it succeeded).
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// The next item; the caller must call [`WorkQueue::done`] with it.
    pub async fn get(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Ends the processing of `item`; queues it again if it was added meanwhile.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Items waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_waits_once_and_is_never_held_twice() {
        let q = WorkQueue::new(Duration::from_millis(1), Duration::from_millis(10));
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await;
        assert_eq!(first, "a");
        q.add("a"); // while processing: not handed out again until done
        assert_eq!(q.get().await, "b");
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, "a");
    }

    #[tokio::test]
    async fn failures_back_off_and_come_back() {
        let q = WorkQueue::new(Duration::from_millis(5), Duration::from_millis(20));
        q.add_rate_limited("x");
        let got = tokio::time::timeout(Duration::from_secs(2), q.get()).await.expect("requeued");
        assert_eq!(got, "x");
        q.done(&"x");
        q.forget(&"x");
        assert!(q.lock().failures.is_empty());
    }

    #[tokio::test]
    async fn retries_count_failures_until_forgotten() {
        let q = WorkQueue::new(Duration::from_millis(1), Duration::from_secs(1));
        assert_eq!(q.retry("k", Duration::from_millis(1)), 1);
        assert_eq!(q.get().await, "k");
        q.done(&"k");
        assert_eq!(q.retry("k", Duration::from_millis(1)), 2);
        q.forget(&"k");
        assert_eq!(q.retry("k", Duration::from_millis(1)), 1);
    }
}
