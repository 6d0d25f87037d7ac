//! The storage suite. Every generic test runs against both backends (memory and sled in a
//! temporary directory); the durability tests run against sled only.

use super::history::FANOUT_CAPACITY;
use super::*;
use std::path::Path;
use std::sync::Weak;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Generates one `#[tokio::test]` per backend for each generic test, and sled-only tests.
macro_rules! suite {
    (both: [$($both:ident),* $(,)?], sled: [$($sled:ident),* $(,)?] $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $both() {
                    super::$both(super::Fixture::memory()).await
                }
            )*
        }
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $both() {
                    super::$both(super::Fixture::sled()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $sled() {
                    super::$sled(super::Fixture::sled()).await
                }
            )*
        }
    };
}

suite! {
    both: [
        revision_starts_at_zero_and_each_commit_takes_the_next,
        multi_op_commit_uses_one_revision,
        empty_and_no_op_commits_do_not_bump_the_revision,
        precondition_failures,
        preconditions_that_hold,
        failed_precondition_in_multi_op_commit_writes_nothing,
        deleting_an_absent_key_is_a_no_op,
        list_prefix_isolation_and_order,
        list_start_after_and_limit,
        list_reports_the_current_revision,
        list_with_empty_prefix_sees_only_object_keys,
        watch_backlog_then_live,
        watch_event_kinds_and_prev_values,
        watch_filters_by_prefix,
        watch_multi_op_commit_events_share_one_revision,
        watch_from_current_revision_gets_only_new_events,
        watch_from_future_revision_skips_up_to_it,
        watch_before_window_is_compacted,
        window_drops_whole_commits,
        watch_after_restart,
        watch_ends_when_store_is_dropped,
        concurrent_commits_get_distinct_revisions,
        slow_watcher_is_compacted,
        watcher_exactly_at_capacity_misses_nothing,
    ],
    sled: [
        sled_values_and_revision_survive_reopen,
        sled_acknowledged_commits_are_on_disk,
    ],
}

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

const WINDOW: usize = history::DEFAULT_WINDOW;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A backend factory that can also "restart": the memory backend is kept and handed to the
/// new store; sled is closed and reopened from the same directory.
struct Fixture {
    dir: Option<TempDir>,
    memory: Arc<MemoryBackend>,
    sled: Weak<SledBackend>,
}

impl Fixture {
    fn memory() -> Self {
        Self { dir: None, memory: Arc::default(), sled: Weak::new() }
    }

    fn sled() -> Self {
        Self { dir: Some(tempfile::tempdir().unwrap()), memory: Arc::default(), sled: Weak::new() }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("a sled fixture").path()
    }

    fn open(&mut self, window: usize) -> Arc<Store> {
        let backend: Arc<dyn Backend> = match &self.dir {
            None => self.memory.clone(),
            Some(dir) => {
                let sled = Arc::new(open_sled(dir.path()));
                self.sled = Arc::downgrade(&sled);
                sled
            }
        };
        Store::open(backend, window).unwrap()
    }

    /// Drops `store` and opens a new one over the same data.
    async fn reopen(&mut self, store: Arc<Store>, window: usize) -> Arc<Store> {
        assert_eq!(Arc::strong_count(&store), 1, "the test must hold the only reference to the store");
        drop(store);
        // sled locks its directory; the flusher task releases the database once it sees the
        // store is gone.
        let deadline = Instant::now() + TIMEOUT;
        while self.sled.strong_count() > 0 {
            assert!(Instant::now() < deadline, "the sled database was never released");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.open(window)
    }
}

/// Opens sled in `dir`, waiting for a previous instance to let go of it: sled's own
/// background threads can hold the directory lock a moment after the last handle is dropped.
fn open_sled(dir: &Path) -> SledBackend {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match SledBackend::open(dir) {
            Ok(sled) => return sled,
            Err(StorageError::Backend(e)) if e.contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("opening sled in {}: {e}", dir.display()),
        }
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::from(s.as_bytes())
}

fn put(key: &str, value: &str) -> Op {
    put_if(key, value, Precondition::None)
}

fn put_if(key: &str, value: &str, pre: Precondition) -> Op {
    Op::Put { key: key.to_string(), value: bytes(value), pre }
}

fn del(key: &str) -> Op {
    del_if(key, Precondition::None)
}

fn del_if(key: &str, pre: Precondition) -> Op {
    Op::Delete { key: key.to_string(), pre }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn opt_text(b: &Option<Bytes>) -> Option<String> {
    b.as_deref().map(text)
}

/// The value and mod revision of `key`.
fn value(store: &Store, key: &str) -> Option<(String, Revision)> {
    store.get(key).unwrap().map(|kv| {
        assert_eq!(kv.key, key);
        (text(&kv.value), kv.mod_revision)
    })
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn commit(store: &Store, ops: Vec<Op>) -> Revision {
    store.commit(ops).await.unwrap()
}

/// The next event, failing the test on a timeout, the end of the stream or an error.
async fn next(stream: &mut WatchStream) -> Arc<Event> {
    match tokio::time::timeout(TIMEOUT, stream.next()).await {
        Err(_) => panic!("no event within {TIMEOUT:?}"),
        Ok(None) => panic!("the watch ended"),
        Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
        Ok(Some(Ok(e))) => e,
    }
}

#[track_caller]
fn assert_event(e: &Event, revision: Revision, key: &str, kind: EventKind, value: Option<&str>, prev: Option<&str>) {
    assert_eq!(
        (e.revision, e.key.as_str(), e.kind, opt_text(&e.value).as_deref(), opt_text(&e.prev).as_deref()),
        (revision, key, kind, value, prev),
    );
}

/// Commits a marker under `prefix` and checks it is the very next event: nothing else was
/// delivered before it. Deterministic, unlike waiting for "no event" with a timeout.
async fn assert_next_is_marker(store: &Store, stream: &mut WatchStream, prefix: &str) {
    let key = format!("{prefix}~marker");
    let rev = commit(store, vec![put(&key, "marker")]).await;
    let e = next(stream).await;
    assert_eq!((e.revision, e.key.as_str()), (rev, key.as_str()), "an unexpected event came before the marker");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Revisions
// ---------------------------------------------------------------------------------------------

async fn revision_starts_at_zero_and_each_commit_takes_the_next(mut f: Fixture) {
    let store = f.open(WINDOW);
    assert_eq!(store.revision(), 0);
    assert_eq!(store.oldest_watchable(), 0);
    assert!(store.get("/a/1").unwrap().is_none());

    assert_eq!(commit(&store, vec![put("/a/1", "v1")]).await, 1);
    assert_eq!(store.revision(), 1);
    assert_eq!(commit(&store, vec![put("/a/2", "v1")]).await, 2);
    assert_eq!(commit(&store, vec![put("/a/1", "v2")]).await, 3);
    assert_eq!(store.revision(), 3);

    // Each key carries the revision that last wrote it; the payload comes back without header.
    assert_eq!(value(&store, "/a/1"), Some(("v2".into(), 3)));
    assert_eq!(value(&store, "/a/2"), Some(("v1".into(), 2)));

    assert_eq!(commit(&store, vec![del("/a/2")]).await, 4);
    assert_eq!(value(&store, "/a/2"), None);
    assert_eq!(value(&store, "/a/1"), Some(("v2".into(), 3)));
    assert_eq!(store.revision(), 4);
}

async fn multi_op_commit_uses_one_revision(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v1")]).await;
    commit(&store, vec![put("/a/2", "v1")]).await;
    let rev = commit(
        &store,
        vec![
            put_if("/a/3", "new", Precondition::Absent),
            put_if("/a/1", "v2", Precondition::ModRevision(1)),
            del_if("/a/2", Precondition::Exists),
            put("/b/1", "other"),
        ],
    )
    .await;
    assert_eq!(rev, 3);
    assert_eq!(store.revision(), 3);
    assert_eq!(value(&store, "/a/1"), Some(("v2".into(), 3)));
    assert_eq!(value(&store, "/a/2"), None);
    assert_eq!(value(&store, "/a/3"), Some(("new".into(), 3)));
    assert_eq!(value(&store, "/b/1"), Some(("other".into(), 3)));
    assert_eq!(commit(&store, vec![put("/a/4", "v")]).await, 4);
}

async fn empty_and_no_op_commits_do_not_bump_the_revision(mut f: Fixture) {
    let store = f.open(WINDOW);
    assert_eq!(commit(&store, vec![]).await, 0);
    commit(&store, vec![put("/a/1", "v1")]).await;
    assert_eq!(commit(&store, vec![]).await, 1);
    assert_eq!(store.revision(), 1);
    assert_eq!(commit(&store, vec![put("/a/2", "v1")]).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------------------------

async fn precondition_failures(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/x", "v1")]).await;
    commit(&store, vec![put("/a/x", "v2")]).await;
    let k = || "/a/x".to_string();
    let missing = || "/a/missing".to_string();

    let cases = [
        (put_if("/a/x", "no", Precondition::Absent), StorageError::AlreadyExists { key: k() }),
        (
            put_if("/a/x", "no", Precondition::ModRevision(1)),
            StorageError::Conflict { key: k(), expected: 1, actual: 2 },
        ),
        (
            put_if("/a/x", "no", Precondition::ModRevision(3)),
            StorageError::Conflict { key: k(), expected: 3, actual: 2 },
        ),
        (del_if("/a/x", Precondition::ModRevision(1)), StorageError::Conflict { key: k(), expected: 1, actual: 2 }),
        (put_if("/a/missing", "no", Precondition::Exists), StorageError::NotFound { key: missing() }),
        (put_if("/a/missing", "no", Precondition::ModRevision(2)), StorageError::NotFound { key: missing() }),
        (del_if("/a/missing", Precondition::Exists), StorageError::NotFound { key: missing() }),
        (del_if("/a/missing", Precondition::ModRevision(2)), StorageError::NotFound { key: missing() }),
    ];
    let mut watch = store.watch("/a/", 2).unwrap();
    for (op, expected) in cases {
        let err = store.commit(vec![op.clone()]).await.unwrap_err();
        assert_eq!(err, expected, "{op:?}");
        assert_eq!(store.revision(), 2, "{op:?} bumped the revision");
        assert_eq!(value(&store, "/a/x"), Some(("v2".into(), 2)), "{op:?} wrote");
        assert_eq!(value(&store, "/a/missing"), None, "{op:?} wrote");
    }
    // Not one event for the failed commits.
    assert_next_is_marker(&store, &mut watch, "/a/").await;
}

async fn preconditions_that_hold(mut f: Fixture) {
    let store = f.open(WINDOW);
    assert_eq!(commit(&store, vec![put_if("/a/x", "v1", Precondition::Absent)]).await, 1);
    assert_eq!(commit(&store, vec![put_if("/a/x", "v2", Precondition::Exists)]).await, 2);
    assert_eq!(commit(&store, vec![put_if("/a/x", "v3", Precondition::ModRevision(2))]).await, 3);
    assert_eq!(value(&store, "/a/x"), Some(("v3".into(), 3)));
    assert_eq!(commit(&store, vec![del_if("/a/x", Precondition::ModRevision(3))]).await, 4);
    assert_eq!(value(&store, "/a/x"), None);
    // Absent holds again once deleted.
    assert_eq!(commit(&store, vec![put_if("/a/x", "v4", Precondition::Absent)]).await, 5);
    assert_eq!(commit(&store, vec![del_if("/a/x", Precondition::Exists)]).await, 6);
    assert_eq!(value(&store, "/a/x"), None);
}

async fn failed_precondition_in_multi_op_commit_writes_nothing(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v1")]).await;
    commit(&store, vec![put("/a/2", "v1")]).await;
    let mut watch = store.watch("/", 2).unwrap();

    // The failing op at every position: ops before it would have been written if the
    // preconditions were checked op by op.
    let good = [put("/a/1", "changed"), del("/a/2"), put_if("/a/3", "new", Precondition::Absent), put("/b/1", "new")];
    let bad = [
        (put_if("/a/1", "no", Precondition::Absent), StorageError::AlreadyExists { key: "/a/1".into() }),
        (
            put_if("/a/2", "no", Precondition::ModRevision(1)),
            StorageError::Conflict { key: "/a/2".into(), expected: 1, actual: 2 },
        ),
        (del_if("/a/9", Precondition::Exists), StorageError::NotFound { key: "/a/9".into() }),
    ];
    for (bad_op, expected) in &bad {
        for pos in 0..=good.len() {
            let mut ops = good.to_vec();
            ops.insert(pos, bad_op.clone());
            let err = store.commit(ops).await.unwrap_err();
            assert_eq!(&err, expected, "{bad_op:?} at {pos}");
            assert_eq!(store.revision(), 2);
            assert_eq!(value(&store, "/a/1"), Some(("v1".into(), 1)), "{bad_op:?} at {pos}");
            assert_eq!(value(&store, "/a/2"), Some(("v1".into(), 2)), "{bad_op:?} at {pos}");
            assert_eq!(value(&store, "/a/3"), None, "{bad_op:?} at {pos}");
            assert_eq!(value(&store, "/b/1"), None, "{bad_op:?} at {pos}");
        }
    }
    let (items, rev) = store.list("/", None, usize::MAX).unwrap();
    assert_eq!((keys(&items), rev), (vec!["/a/1", "/a/2"], 2));
    assert_next_is_marker(&store, &mut watch, "/").await;
    // And the next good commit takes the next revision.
    assert_eq!(commit(&store, good.to_vec()).await, 4);
}

async fn deleting_an_absent_key_is_a_no_op(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v1")]).await;
    let mut watch = store.watch("/a/", 1).unwrap();

    assert_eq!(commit(&store, vec![del("/a/missing")]).await, 1);
    assert_eq!(commit(&store, vec![del("/a/missing"), del("/a/other")]).await, 1);
    assert_eq!(store.revision(), 1);
    assert_eq!(value(&store, "/a/1"), Some(("v1".into(), 1)));

    // Deleted twice: the second delete is a no-op too.
    assert_eq!(commit(&store, vec![del("/a/1")]).await, 2);
    assert_eq!(commit(&store, vec![del("/a/1")]).await, 2);
    assert_event(&*next(&mut watch).await, 2, "/a/1", EventKind::Deleted, None, Some("v1"));

    // Mixed with a real write: one revision, and no event for the absent key.
    assert_eq!(commit(&store, vec![del("/a/missing"), put("/a/2", "v1")]).await, 3);
    assert_event(&*next(&mut watch).await, 3, "/a/2", EventKind::Added, Some("v1"), None);
    assert_next_is_marker(&store, &mut watch, "/a/").await;
}

// ---------------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------------

/// Keys written out of order, with neighbours of `/a/` on both sides.
async fn list_fixture(store: &Store) {
    for key in ["/ab/1", "/a/3", "/b/1", "/a/1", "/a", "/a/2", "/a/10", "/aa/1", "/0/1"] {
        commit(store, vec![put(key, &format!("value of {key}"))]).await;
    }
}

async fn list_prefix_isolation_and_order(mut f: Fixture) {
    let store = f.open(WINDOW);
    list_fixture(&store).await;

    let (items, _) = store.list("/a/", None, usize::MAX).unwrap();
    assert_eq!(keys(&items), ["/a/1", "/a/10", "/a/2", "/a/3"]);
    for kv in &items {
        assert_eq!(text(&kv.value), format!("value of {}", kv.key));
        assert_eq!(Some(kv.mod_revision), value(&store, &kv.key).map(|(_, r)| r));
    }
    let (items, _) = store.list("/ab/", None, usize::MAX).unwrap();
    assert_eq!(keys(&items), ["/ab/1"]);
    let (items, _) = store.list("/a", None, usize::MAX).unwrap();
    assert_eq!(keys(&items), ["/a", "/a/1", "/a/10", "/a/2", "/a/3", "/aa/1", "/ab/1"]);
    let (items, _) = store.list("/c/", None, usize::MAX).unwrap();
    assert!(items.is_empty());

    // mod revisions are the writes' revisions (the fixture writes one key per commit).
    let (items, _) = store.list("/b/", None, usize::MAX).unwrap();
    assert_eq!(items[0].mod_revision, 3);

    // Deleted keys leave the list; modified ones stay in place.
    commit(&store, vec![del("/a/10"), put("/a/1", "changed")]).await;
    let (items, _) = store.list("/a/", None, usize::MAX).unwrap();
    assert_eq!(keys(&items), ["/a/1", "/a/2", "/a/3"]);
    assert_eq!((text(&items[0].value), items[0].mod_revision), ("changed".into(), 10));
}

async fn list_start_after_and_limit(mut f: Fixture) {
    let store = f.open(WINDOW);
    list_fixture(&store).await;
    let list = |start: Option<&str>, limit: usize| {
        let (items, _) = store.list("/a/", start, limit).unwrap();
        items.into_iter().map(|kv| kv.key).collect::<Vec<_>>()
    };

    assert_eq!(list(Some("/a/1"), usize::MAX), ["/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(Some("/a/10"), usize::MAX), ["/a/2", "/a/3"]);
    // Strictly after, whether or not `start_after` itself exists.
    assert_eq!(list(Some("/a/1\0"), usize::MAX), ["/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(Some("/a/15"), usize::MAX), ["/a/2", "/a/3"]);
    assert_eq!(list(Some("/a/3"), usize::MAX), Vec::<String>::new());
    // Before the prefix: from its start; after it: nothing (never the neighbours).
    assert_eq!(list(Some("/"), usize::MAX), ["/a/1", "/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(Some("/a"), usize::MAX), ["/a/1", "/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(Some("/a/4"), usize::MAX), Vec::<String>::new());
    assert_eq!(list(Some("/aa/0"), usize::MAX), Vec::<String>::new());

    assert_eq!(list(None, 2), ["/a/1", "/a/10"]);
    assert_eq!(list(None, 4), ["/a/1", "/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(None, 5), ["/a/1", "/a/10", "/a/2", "/a/3"]);
    assert_eq!(list(None, 0), Vec::<String>::new());
    assert_eq!(list(Some("/a/10"), 1), ["/a/2"]);

    // Paging with limit 1 visits each key once, in order.
    let mut pages = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = list(start.as_deref(), 1);
        let Some(last) = page.last() else { break };
        assert_eq!(page.len(), 1);
        start = Some(last.clone());
        pages.extend(page);
    }
    assert_eq!(pages, ["/a/1", "/a/10", "/a/2", "/a/3"]);
}

async fn list_reports_the_current_revision(mut f: Fixture) {
    let store = f.open(WINDOW);
    assert_eq!(store.list("/a/", None, 10).unwrap().1, 0);
    list_fixture(&store).await;
    // The revision of the store, not of the newest key under the prefix.
    assert_eq!(store.list("/a/", None, 10).unwrap().1, 9);
    assert_eq!(store.list("/c/", None, 10).unwrap().1, 9);
    assert_eq!(store.list("/a/", Some("/a/3"), 1).unwrap().1, 9);
    commit(&store, vec![put("/z/1", "v")]).await;
    assert_eq!(store.list("/a/", None, 10).unwrap().1, 10);
    // A no-op commit leaves it.
    commit(&store, vec![del("/z/missing")]).await;
    assert_eq!(store.list("/a/", None, 10).unwrap().1, 10);
}

async fn list_with_empty_prefix_sees_only_object_keys(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/b/1", "v"), put("/a/1", "v")]).await;
    let (items, rev) = store.list("", None, usize::MAX).unwrap();
    assert_eq!((keys(&items), rev), (vec!["/a/1", "/b/1"], 1));
    let (items, _) = store.list("", None, 1).unwrap();
    assert_eq!(keys(&items), ["/a/1"]);
    let (items, _) = store.list("", Some(""), usize::MAX).unwrap();
    assert_eq!(keys(&items), ["/a/1", "/b/1"]);
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

async fn watch_backlog_then_live(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v1")]).await; // 1
    commit(&store, vec![put("/a/2", "v1")]).await; // 2
    commit(&store, vec![put("/a/1", "v2")]).await; // 3

    // Strictly after 1: revisions 2 and 3 from the backlog.
    let mut w = store.watch("/a/", 1).unwrap();
    // From 0: everything.
    let mut all = store.watch("/a/", 0).unwrap();
    // From 3 (the current revision): only what comes next.
    let mut now = store.watch("/a/", 3).unwrap();

    commit(&store, vec![del("/a/2")]).await; // 4, live

    assert_event(&*next(&mut w).await, 2, "/a/2", EventKind::Added, Some("v1"), None);
    assert_event(&*next(&mut w).await, 3, "/a/1", EventKind::Modified, Some("v2"), Some("v1"));
    assert_event(&*next(&mut w).await, 4, "/a/2", EventKind::Deleted, None, Some("v1"));

    assert_event(&*next(&mut all).await, 1, "/a/1", EventKind::Added, Some("v1"), None);
    assert_eq!(next(&mut all).await.revision, 2);
    assert_eq!(next(&mut all).await.revision, 3);
    assert_eq!(next(&mut all).await.revision, 4);

    assert_event(&*next(&mut now).await, 4, "/a/2", EventKind::Deleted, None, Some("v1"));

    // Nothing else in any of them: the next event of each is the same new commit.
    let rev = commit(&store, vec![put("/a/5", "v")]).await;
    for stream in [&mut w, &mut all, &mut now] {
        assert_event(&*next(stream).await, rev, "/a/5", EventKind::Added, Some("v"), None);
    }
}

async fn watch_event_kinds_and_prev_values(mut f: Fixture) {
    let store = f.open(WINDOW);
    let mut w = store.watch("/a/", 0).unwrap();
    commit(&store, vec![put("/a/x", "one")]).await;
    commit(&store, vec![put_if("/a/x", "two", Precondition::ModRevision(1))]).await;
    commit(&store, vec![put("/a/x", "three")]).await;
    commit(&store, vec![del("/a/x")]).await;
    commit(&store, vec![put_if("/a/x", "again", Precondition::Absent)]).await;
    commit(&store, vec![del_if("/a/x", Precondition::Exists)]).await;

    assert_event(&*next(&mut w).await, 1, "/a/x", EventKind::Added, Some("one"), None);
    assert_event(&*next(&mut w).await, 2, "/a/x", EventKind::Modified, Some("two"), Some("one"));
    assert_event(&*next(&mut w).await, 3, "/a/x", EventKind::Modified, Some("three"), Some("two"));
    assert_event(&*next(&mut w).await, 4, "/a/x", EventKind::Deleted, None, Some("three"));
    // Re-created after a delete: ADDED again, with no previous value.
    assert_event(&*next(&mut w).await, 5, "/a/x", EventKind::Added, Some("again"), None);
    assert_event(&*next(&mut w).await, 6, "/a/x", EventKind::Deleted, None, Some("again"));

    // The same events from the backlog.
    let mut replay = store.watch("/a/", 0).unwrap();
    let kinds = [
        EventKind::Added,
        EventKind::Modified,
        EventKind::Modified,
        EventKind::Deleted,
        EventKind::Added,
        EventKind::Deleted,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let e = next(&mut replay).await;
        assert_eq!((e.revision, e.kind), (i as Revision + 1, kind));
    }
}

async fn watch_filters_by_prefix(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/ab/0", "v")]).await; // 1
    commit(&store, vec![put("/a/0", "v")]).await; // 2
    let mut a = store.watch("/a/", 0).unwrap();
    let mut ab = store.watch("/ab/", 0).unwrap();
    let mut root = store.watch("/", 0).unwrap();

    commit(&store, vec![put("/ab/1", "v")]).await; // 3
    commit(&store, vec![put("/b/1", "v")]).await; // 4
    commit(&store, vec![put("/a", "v")]).await; // 5
    commit(&store, vec![put("/a/1", "v")]).await; // 6
    commit(&store, vec![put("/ab/2", "v"), put("/a/2", "v")]).await; // 7

    let seen = |events: Vec<Arc<Event>>| events.iter().map(|e| (e.revision, e.key.clone())).collect::<Vec<_>>();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut a).await);
    }
    assert_eq!(seen(got), [(2, "/a/0".to_string()), (6, "/a/1".into()), (7, "/a/2".into())]);
    assert_next_is_marker(&store, &mut a, "/a/").await;

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut ab).await);
    }
    assert_eq!(seen(got), [(1, "/ab/0".to_string()), (3, "/ab/1".into()), (7, "/ab/2".into())]);
    assert_next_is_marker(&store, &mut ab, "/ab/").await;

    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(next(&mut root).await);
    }
    let revs: Vec<Revision> = got.iter().map(|e| e.revision).collect();
    assert_eq!(revs, [1, 2, 3, 4, 5, 6, 7, 7]);
}

async fn watch_multi_op_commit_events_share_one_revision(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v1")]).await; // 1
    commit(&store, vec![put("/a/2", "v1")]).await; // 2
    let mut live = store.watch("/a/", 2).unwrap();

    let ops = vec![put("/a/3", "new"), put("/a/1", "v2"), del("/a/2"), put("/b/1", "other"), put("/a/0", "zero")];
    assert_eq!(commit(&store, ops).await, 3);
    commit(&store, vec![put("/a/4", "after")]).await; // 4

    let mut backlog = store.watch("/a/", 2).unwrap();
    for stream in [&mut live, &mut backlog] {
        // In op order, all together, all at revision 3, then revision 4.
        assert_event(&*next(stream).await, 3, "/a/3", EventKind::Added, Some("new"), None);
        assert_event(&*next(stream).await, 3, "/a/1", EventKind::Modified, Some("v2"), Some("v1"));
        assert_event(&*next(stream).await, 3, "/a/2", EventKind::Deleted, None, Some("v1"));
        assert_event(&*next(stream).await, 3, "/a/0", EventKind::Added, Some("zero"), None);
        assert_event(&*next(stream).await, 4, "/a/4", EventKind::Added, Some("after"), None);
    }
    // Resuming from the multi-op commit's revision skips all of it.
    let mut resumed = store.watch("/a/", 3).unwrap();
    assert_event(&*next(&mut resumed).await, 4, "/a/4", EventKind::Added, Some("after"), None);
}

async fn watch_from_current_revision_gets_only_new_events(mut f: Fixture) {
    let store = f.open(WINDOW);
    for i in 0..5 {
        commit(&store, vec![put(&format!("/a/{i}"), "v")]).await;
    }
    let current = store.revision();
    assert_eq!(current, 5);
    let mut w = store.watch("/a/", current).unwrap();
    assert_next_is_marker(&store, &mut w, "/a/").await;
    commit(&store, vec![put("/a/0", "changed")]).await;
    assert_event(&*next(&mut w).await, 7, "/a/0", EventKind::Modified, Some("changed"), Some("v"));
}

async fn watch_from_future_revision_skips_up_to_it(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v")]).await; // 1
    let mut w = store.watch("/a/", 3).unwrap();
    commit(&store, vec![put("/a/2", "v")]).await; // 2
    commit(&store, vec![put("/a/3", "v")]).await; // 3
    commit(&store, vec![put("/a/4", "v")]).await; // 4
    // Strictly after 3, even though 3 was in the future when the watch started.
    assert_event(&*next(&mut w).await, 4, "/a/4", EventKind::Added, Some("v"), None);
}

async fn watch_before_window_is_compacted(mut f: Fixture) {
    let store = f.open(3);
    for i in 1..=10 {
        commit(&store, vec![put("/a/x", &format!("v{i}"))]).await;
    }
    // Window of 3: revisions 8, 9 and 10 are kept.
    assert_eq!(store.oldest_watchable(), 7);
    for after in [0, 1, 6] {
        match store.watch("/a/", after) {
            Err(StorageError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (after, 8)),
            Err(e) => panic!("watch from {after}: {e}"),
            Ok(_) => panic!("watch from {after} should be compacted"),
        }
    }
    // Compacted regardless of prefix.
    assert!(matches!(store.watch("/nothing/", 6), Err(StorageError::Compacted { .. })));

    let mut w = store.watch("/a/", 7).unwrap();
    for rev in 8..=10 {
        let e = next(&mut w).await;
        let (v, p) = (format!("v{rev}"), format!("v{}", rev - 1));
        assert_event(&e, rev, "/a/x", EventKind::Modified, Some(&v), Some(&p));
    }
    assert_next_is_marker(&store, &mut w, "/a/").await; // 11
    for after in [8, 9, 10] {
        let mut w = store.watch("/a/", after).unwrap();
        assert_eq!(next(&mut w).await.revision, after + 1);
    }
    // The window moved with the marker.
    assert!(matches!(store.watch("/a/", 7), Err(StorageError::Compacted { requested: 7, oldest: 9 })));
}

async fn window_drops_whole_commits(mut f: Fixture) {
    let store = f.open(3);
    for i in 1..=3 {
        commit(&store, vec![put(&format!("/a/{i}"), "v")]).await;
    }
    commit(&store, vec![put("/a/4a", "v"), put("/a/4b", "v")]).await; // 4: two events
    // Window [2, 4a] → [3, 4a, 4b]
    assert_eq!(store.oldest_watchable(), 2);
    commit(&store, vec![put("/a/5", "v")]).await; // 5: [4a, 4b, 5]
    assert_eq!(store.oldest_watchable(), 3);
    commit(&store, vec![put("/a/6", "v")]).await; // 6: drops 4a and with it 4b → [5, 6]
    assert_eq!(store.oldest_watchable(), 4);
    assert!(matches!(store.watch("/a/", 3), Err(StorageError::Compacted { requested: 3, oldest: 5 })));
    let mut w = store.watch("/a/", 4).unwrap();
    assert_eq!(next(&mut w).await.revision, 5);
    assert_eq!(next(&mut w).await.revision, 6);
    assert_next_is_marker(&store, &mut w, "/a/").await;
}

async fn watch_after_restart(mut f: Fixture) {
    let store = f.open(WINDOW);
    for i in 1..=3 {
        commit(&store, vec![put(&format!("/a/{i}"), "v")]).await;
    }
    let store = f.reopen(store, WINDOW).await;
    assert_eq!(store.revision(), 3);
    assert_eq!(store.oldest_watchable(), 3);
    // The history is not persisted: nothing before the reopen revision can be replayed.
    for after in [0, 2] {
        assert!(
            matches!(store.watch("/a/", after), Err(StorageError::Compacted { requested, oldest: 4 }) if requested == after),
            "watch from {after} after a restart"
        );
    }
    let mut w = store.watch("/a/", 3).unwrap();
    assert_eq!(commit(&store, vec![put("/a/1", "v2")]).await, 4);
    assert_event(&*next(&mut w).await, 4, "/a/1", EventKind::Modified, Some("v2"), Some("v"));
    assert_eq!(next(&mut store.watch("/a/", 3).unwrap()).await.revision, 4);
}

async fn watch_ends_when_store_is_dropped(mut f: Fixture) {
    let store = f.open(WINDOW);
    commit(&store, vec![put("/a/1", "v")]).await;
    let mut w = store.watch("/a/", 0).unwrap();
    drop(store);
    // The backlog is still delivered, then the stream ends.
    assert_eq!(next(&mut w).await.revision, 1);
    let end = tokio::time::timeout(TIMEOUT, w.next()).await.expect("the watch should end");
    assert!(end.is_none());
}

// ---------------------------------------------------------------------------------------------
// Concurrency, fan-out and durability
// ---------------------------------------------------------------------------------------------

async fn concurrent_commits_get_distinct_revisions(mut f: Fixture) {
    const N: u64 = 200;
    let store = f.open(WINDOW);
    let mut w = store.watch("/c/", 0).unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("/c/{i:03}");
                let rev = store.commit(vec![put_if(&key, &format!("v{i}"), Precondition::Absent)]).await.unwrap();
                (key, rev)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut revs: Vec<Revision> = results.iter().map(|(_, r)| *r).collect();
    revs.sort_unstable();
    assert_eq!(revs, (1..=N).collect::<Vec<_>>());
    assert_eq!(store.revision(), N);
    for (key, rev) in &results {
        assert_eq!(store.get(key).unwrap().unwrap().mod_revision, *rev);
    }
    // The watcher sees every commit once, in revision order, matching each writer's revision.
    for rev in 1..=N {
        let e = next(&mut w).await;
        assert_eq!(e.revision, rev);
        assert!(results.contains(&(e.key.clone(), rev)));
    }

    let store = f.reopen(store, WINDOW).await;
    assert_eq!(store.revision(), N);
    let (items, _) = store.list("/c/", None, usize::MAX).unwrap();
    assert_eq!(items.len(), N as usize);
    for (key, rev) in &results {
        let i: u64 = key["/c/".len()..].parse().unwrap();
        assert_eq!(value(&store, key), Some((format!("v{i}"), *rev)));
    }
    assert_eq!(commit(&store, vec![put("/c/next", "v")]).await, N + 1);
}

async fn slow_watcher_is_compacted(mut f: Fixture) {
    let store = f.open(WINDOW);
    let mut slow = store.watch("/s/", 0).unwrap();
    // One commit of more events than the fan-out holds, none read in between.
    let ops = (0..=FANOUT_CAPACITY).map(|i| put(&format!("/s/{i:06}"), "v")).collect();
    assert_eq!(commit(&store, ops).await, 1);
    match tokio::time::timeout(TIMEOUT, slow.next()).await.expect("no result") {
        Some(Err(StorageError::Compacted { .. })) => {}
        Some(Ok(e)) => panic!("a lagging watcher got event {} {} instead of Compacted", e.revision, e.key),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

async fn watcher_exactly_at_capacity_misses_nothing(mut f: Fixture) {
    let store = f.open(WINDOW);
    let mut w = store.watch("/s/", 0).unwrap();
    let ops = (0..FANOUT_CAPACITY).map(|i| put(&format!("/s/{i:06}"), "v")).collect();
    assert_eq!(commit(&store, ops).await, 1);
    for i in 0..FANOUT_CAPACITY {
        let e = next(&mut w).await;
        assert_eq!((e.revision, e.key.as_str()), (1, format!("/s/{i:06}").as_str()));
    }
    assert_next_is_marker(&store, &mut w, "/s/").await;
}

async fn sled_values_and_revision_survive_reopen(mut f: Fixture) {
    const N: u64 = 60;
    let store = f.open(WINDOW);
    for i in 1..=N {
        let key = format!("/d/{i:03}");
        let ops = match i % 3 {
            // Every third commit also deletes the previous key: deletes must survive too.
            0 => vec![put(&key, &format!("v{i}")), del(&format!("/d/{:03}", i - 1))],
            _ => vec![put(&key, &format!("v{i}"))],
        };
        assert_eq!(commit(&store, ops).await, i);
    }
    commit(&store, vec![del("/d/missing")]).await; // a no-op: not a revision

    let store = f.reopen(store, WINDOW).await;
    assert_eq!(store.revision(), N);
    for i in 1..=N {
        let key = format!("/d/{i:03}");
        let expected = (i % 3 != 2).then(|| (format!("v{i}"), i));
        assert_eq!(value(&store, &key), expected, "{key}");
    }
    let (items, rev) = store.list("/d/", None, usize::MAX).unwrap();
    assert_eq!((items.len() as u64, rev), (N - N / 3, N));
    assert_eq!(commit(&store, vec![put("/d/next", "v")]).await, N + 1);

    // And again, with the new write.
    let store = f.reopen(store, WINDOW).await;
    assert_eq!(store.revision(), N + 1);
    assert_eq!(value(&store, "/d/next"), Some(("v".into(), N + 1)));
}

/// A copy of the directory taken right after the acknowledgements, with the store still
/// open, is what a crash at that moment would leave: every acknowledged write must be in it.
async fn sled_acknowledged_commits_are_on_disk(mut f: Fixture) {
    const N: u64 = 50;
    let store = f.open(WINDOW);
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(vec![put(&format!("/k/{i:03}"), &format!("v{i}"))]).await })
        })
        .collect();
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap().unwrap());
    }
    assert_eq!(commit(&store, vec![put("/k/last", "v")]).await, N + 1);

    let image = tempfile::tempdir().unwrap();
    copy_dir(f.dir(), image.path());
    let crashed = Store::open(Arc::new(SledBackend::open(image.path()).unwrap()), WINDOW).unwrap();
    assert_eq!(crashed.revision(), N + 1);
    for (i, rev) in revs.iter().enumerate() {
        assert_eq!(value(&crashed, &format!("/k/{i:03}")), Some((format!("v{i}"), *rev)));
    }
    assert_eq!(value(&crashed, "/k/last"), Some(("v".into(), N + 1)));
    assert_eq!(commit(&crashed, vec![put("/k/after", "v")]).await, N + 2);
    drop(store);
}
