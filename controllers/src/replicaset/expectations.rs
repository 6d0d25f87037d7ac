//! Controller expectations (`pkg/controller/controller_utils.go`, `UIDTrackingControllerExpectations`):
//! after a controller creates or deletes pods it waits until its watch has seen every one of them
//! before it acts on the same object again, so a lagging cache never makes it act twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unmet expectations are trusted before a sync goes ahead anyway (`ExpectationsTimeout`).
const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// Expectations keyed by the controlling object's `namespace/name`.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Expectation>) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Whether the object may be synced: nothing pending, or the expectation timed out.
    pub fn satisfied(&self, key: &str) -> bool {
        self.with(|m| match m.get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > TIMEOUT,
        })
    }

    /// Expects `n` pod creations to be observed (replaces what was expected before).
    pub fn expect_creations(&self, key: &str, n: usize) {
        let e = Expectation { adds: n as i64, deletes: HashSet::new(), since: Instant::now() };
        self.with(|m| m.insert(key.to_string(), e));
    }

    /// Expects the deletion of these pods (`namespace/name`) to be observed.
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        let e = Expectation { adds: 0, deletes: pods.into_iter().collect(), since: Instant::now() };
        self.with(|m| m.insert(key.to_string(), e));
    }

    /// A creation was seen (or will never be: the create failed or was skipped).
    pub fn creation_observed(&self, key: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.adds -= 1;
            }
        });
    }

    /// The deletion of `pod` was seen (or will never be).
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.deletes.remove(pod);
            }
        });
    }

    /// Forgets an object that is gone.
    pub fn forget(&self, key: &str) {
        self.with(|m| m.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_deletions_must_all_be_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 1);
        e.forget("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
