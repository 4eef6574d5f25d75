//! The behaviour every [`Store`] engine must have, as tests any engine's suite runs:
//! the embedded engine's unit tests run them all, and so does the etcd integration
//! test (`tests/etcd.rs`) against a private etcd.
//!
//! Each test takes a [`Harness`] that makes fresh, empty stores. Revisions are
//! asserted relative to the store's revision when the test starts: etcd's revision is
//! global to its cluster and does not start at 0. A harness must not let anything
//! else write to the cluster while a test runs (the tests check that revisions are
//! contiguous).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use crate::{Compare, EventKind, Op, Revision, StateError, Store, Watch, WatchEnd, WatchEvent};

/// A store under test and its engine's way to drop history.
pub struct Subject {
    pub store: Arc<dyn Store>,
    /// Forgets the watch history at and below the given revision (a watch from before
    /// it must then end with [`WatchEnd::Compacted`]).
    pub compact: Box<dyn Fn(Revision)>,
}

/// Makes the stores the tests run on.
pub trait Harness {
    /// A fresh, empty store (a namespace of its own) whose watchers are cancelled
    /// once more than `watch_buffer_events` events wait in their queue.
    fn subject(&self, watch_buffer_events: usize) -> Subject;
}

/// Queue bound of an ordinary test store.
const BUFFER: usize = 10_000;

/// One conformance test.
pub type Test = fn(&dyn Harness);

/// Every test, by name.
pub const TESTS: &[(&str, Test)] = &[
    ("put_get_list_delete", put_get_list_delete),
    ("compare_and_swap", compare_and_swap),
    ("txn_is_all_or_nothing", txn_is_all_or_nothing),
    ("same_key_twice_in_one_txn", same_key_twice_in_one_txn),
    (
        "list_with_revision_is_current",
        list_with_revision_is_current,
    ),
    (
        "large_listing_is_whole_and_ordered",
        large_listing_is_whole_and_ordered,
    ),
    (
        "watch_delivers_changes_under_prefix",
        watch_delivers_changes_under_prefix,
    ),
    (
        "watch_replays_from_a_past_revision",
        watch_replays_from_a_past_revision,
    ),
    (
        "watch_from_compacted_history_ends",
        watch_from_compacted_history_ends,
    ),
    (
        "list_then_watch_under_concurrent_writers",
        list_then_watch_under_concurrent_writers,
    ),
    (
        "slow_watcher_is_cancelled_not_waited_for",
        slow_watcher_is_cancelled_not_waited_for,
    ),
    (
        "dropped_watch_leaves_others_alone",
        dropped_watch_leaves_others_alone,
    ),
    (
        "closing_the_store_ends_watches",
        closing_the_store_ends_watches,
    ),
    ("async_watch_wakes_on_commit", async_watch_wakes_on_commit),
];

/// Runs every test in [`TESTS`] in turn, naming each on stderr.
pub fn run_all(h: &dyn Harness) {
    for (name, test) in TESTS {
        eprintln!("conformance: {name}");
        let started = Instant::now();
        test(h);
        eprintln!("conformance: {name} ok ({:?})", started.elapsed());
    }
}

/// A put op (for tests).
pub fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.into(),
        value: v.into(),
    }
}

/// A delete op (for tests).
pub fn del(k: &str) -> Op {
    Op::Delete { key: k.into() }
}

fn ev(w: &mut Watch) -> WatchEvent {
    w.recv_timeout(Duration::from_secs(10))
        .expect("an event within 10 s")
        .expect("a live watch")
}

/// Drives one future to completion on this thread (no runtime: the watch's async
/// receive only stores the waker).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_secs(5));
    }
}

/// Puts, gets, lists by prefix (in key order, nothing outside the prefix) and deletes,
/// with the revisions each write returned.
pub fn put_get_list_delete(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let base = s.revision();
    assert_eq!(s.put("a/2", "two".into()).unwrap(), base + 1);
    assert_eq!(s.put("a/1", "one".into()).unwrap(), base + 2);
    assert_eq!(s.put("ab", "not under a/".into()).unwrap(), base + 3);
    assert_eq!(s.revision(), base + 3);
    let e = s.get("a/2").unwrap();
    assert_eq!((e.value.as_str(), e.mod_revision), ("two", base + 1));
    assert!(s.get("a/3").is_none());
    let listed: Vec<_> = s
        .list("a/")
        .into_iter()
        .map(|(k, e)| (k, e.value, e.mod_revision))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("a/1".to_string(), "one".to_string(), base + 2),
            ("a/2".to_string(), "two".to_string(), base + 1),
        ]
    );
    assert_eq!(s.list("").len(), 3, "the empty prefix lists everything");
    assert_eq!(s.delete("a/1").unwrap(), base + 4);
    assert!(s.get("a/1").is_none());
    assert_eq!(s.list("a/").len(), 1);
}

/// A compare on a stale revision, or `absent` on a key that exists, refuses the whole
/// transaction, takes no revision, and names the key.
pub fn compare_and_swap(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let base = s.revision();
    let r = s.txn(&[Compare::absent("k")], vec![put("k", "1")]).unwrap();
    assert_eq!(r, base + 1);
    match s.txn(&[Compare::absent("k")], vec![put("k", "2")]) {
        Err(StateError::Conflict { key }) => assert_eq!(key, "k"),
        other => panic!("expected a conflict on k, got {other:?}"),
    }
    s.txn(
        &[Compare::at("k", r)],
        vec![put("k", "3"), put("other", "o")],
    )
    .unwrap();
    assert_eq!(s.get("k").unwrap().value, "3");
    assert!(matches!(
        s.txn(&[Compare::at("k", r)], vec![put("other", "x")]),
        Err(StateError::Conflict { .. })
    ));
    assert_eq!(s.get("other").unwrap().value, "o");
    assert_eq!(
        s.revision(),
        base + 2,
        "a refused transaction takes no revision"
    );
    // absent holds again once the key is deleted
    s.delete("k").unwrap();
    s.txn(&[Compare::absent("k")], vec![put("k", "4")]).unwrap();
}

/// All ops of a transaction land at one revision; when the second of two compares
/// fails nothing is written and the conflict names that key.
pub fn txn_is_all_or_nothing(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let base = s.revision();
    let r = s
        .txn(&[], vec![put("x", "1"), put("y", "1"), put("z", "1")])
        .unwrap();
    assert_eq!(r, base + 1);
    for k in ["x", "y", "z"] {
        assert_eq!(s.get(k).unwrap().mod_revision, r);
    }
    let err = s
        .txn(
            &[
                Compare::at("x", r),
                Compare::at("y", r - 1),
                Compare::absent("z"),
            ],
            vec![put("x", "2"), del("z")],
        )
        .unwrap_err();
    assert!(
        matches!(&err, StateError::Conflict { key } if key == "y"),
        "{err:?}"
    );
    assert_eq!(s.get("x").unwrap().value, "1");
    assert!(s.get("z").is_some());
    s.txn(
        &[
            Compare::at("x", r),
            Compare::at("y", r),
            Compare::at("z", r),
        ],
        vec![put("x", "2"), del("z"), del("never-there")],
    )
    .unwrap();
    assert_eq!(s.get("x").unwrap().value, "2");
    assert!(s.get("z").is_none());
}

/// Two ops on one key in a transaction: the last one decides.
pub fn same_key_twice_in_one_txn(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    s.txn(&[], vec![put("k", "1"), put("k", "2")]).unwrap();
    assert_eq!(s.get("k").unwrap().value, "2");
    s.txn(&[], vec![put("k", "3"), del("k")]).unwrap();
    assert!(s.get("k").is_none());
    s.txn(&[], vec![del("k"), put("k", "4")]).unwrap();
    assert_eq!(s.get("k").unwrap().value, "4");
}

/// A listing carries the revision it was read at: the store's current one.
pub fn list_with_revision_is_current(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    s.put("p/1", "a".into()).unwrap();
    let r = s.put("q/1", "b".into()).unwrap();
    let l = s.list_with_revision("p/");
    assert_eq!(l.revision, r);
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.entries[0].0, "p/1");
}

/// A listing larger than any page an engine reads at once is whole and in key order.
pub fn large_listing_is_whole_and_ordered(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let mut want = BTreeMap::new();
    for batch in 0..25 {
        let ops = (0..100)
            .map(|i| {
                let k = format!("big/{:03}-{i:02}", (batch * 37 + i * 11) % 1000);
                want.insert(k.clone(), format!("v{batch}-{i}"));
                put(&k, &format!("v{batch}-{i}"))
            })
            .collect();
        s.txn(&[], ops).unwrap();
    }
    s.put("bih", "after the prefix".into()).unwrap();
    let got: BTreeMap<String, String> = s
        .list("big/")
        .into_iter()
        .map(|(k, e)| (k, e.value))
        .collect();
    let keys: Vec<_> = s.list("big/").into_iter().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "in key order");
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

/// A watch sees puts and deletes under its prefix, in revision order, with values and
/// previous values; nothing outside the prefix, no event for deleting a missing key.
pub fn watch_delivers_changes_under_prefix(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    s.put("a/1", "old".into()).unwrap();
    let base = s.revision();
    let mut w = s.watch("a/", None);
    assert!(w.try_recv().is_none());
    s.txn(
        &[],
        vec![put("a/1", "new"), put("b/1", "x"), put("a/2", "y")],
    )
    .unwrap();
    s.put("b/2", "z".into()).unwrap();
    s.txn(&[], vec![del("a/1"), del("a/missing")]).unwrap();
    s.put("a/3", "last".into()).unwrap();
    let e = ev(&mut w);
    assert_eq!(
        e,
        WatchEvent {
            revision: base + 1,
            kind: EventKind::Put,
            key: "a/1".into(),
            value: Some("new".into()),
            prev_value: Some("old".into()),
        }
    );
    let e = ev(&mut w);
    assert_eq!(
        (e.revision, e.key.as_str(), e.prev_value),
        (base + 1, "a/2", None)
    );
    let e = ev(&mut w);
    assert_eq!(
        (e.revision, e.kind, e.key.as_str(), e.value, e.prev_value),
        (base + 3, EventKind::Delete, "a/1", None, Some("new".into()))
    );
    let e = ev(&mut w);
    assert_eq!((e.revision, e.key.as_str()), (base + 4, "a/3"));
    assert!(w.recv_timeout(Duration::from_millis(200)).is_none());
}

/// A watch from a past revision replays the changes after it, then goes on live.
pub fn watch_replays_from_a_past_revision(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let base = s.revision();
    for i in 1..=5 {
        s.put("k", i.to_string()).unwrap();
    }
    let mut w = s.watch("", Some(base + 2));
    for i in 3..=5 {
        let e = ev(&mut w);
        assert_eq!((e.revision, e.value), (base + i, Some(i.to_string())));
    }
    s.put("k", "6".into()).unwrap();
    assert_eq!(ev(&mut w).revision, base + 6);
}

/// A watch from before the kept history ends at once with `Compacted`, naming the
/// revision it asked for and the one history is compacted to; from the compacted
/// revision itself, everything after it is still there.
pub fn watch_from_compacted_history_ends(h: &dyn Harness) {
    let subject = h.subject(BUFFER);
    let s = subject.store;
    let base = s.revision();
    for i in 1..=20 {
        s.put("k", i.to_string()).unwrap();
    }
    (subject.compact)(base + 15);
    let mut old = s.watch("", Some(base + 3));
    let end = old
        .recv_timeout(Duration::from_secs(10))
        .expect("an end within 10 s")
        .unwrap_err();
    assert_eq!(
        end,
        WatchEnd::Compacted {
            from_revision: base + 3,
            compact_revision: base + 15,
        }
    );
    assert!(end.to_string().contains("re-list"));
    let mut edge = s.watch("", Some(base + 15));
    assert_eq!(ev(&mut edge).revision, base + 16);
}

/// List-then-watch from the listed revision misses nothing and repeats nothing, with
/// writers running concurrently: events arrive in contiguous revision order.
pub fn list_then_watch_under_concurrent_writers(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let base = s.revision();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.put(&format!("w/{t}"), i.to_string()).unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let listing = s.list_with_revision("w/");
    let mut w = s.watch("w/", Some(listing.revision));
    for t in writers {
        t.join().unwrap();
    }
    let end = s.revision();
    assert_eq!(end, base + 200);
    let mut next = listing.revision + 1;
    while next <= end {
        assert_eq!(ev(&mut w).revision, next);
        next += 1;
    }
    assert!(w.recv_timeout(Duration::from_millis(200)).is_none());
}

/// A watcher that never reads does not slow writers: once its bounded queue is full
/// it is cancelled with `Lagged`, after the events it did receive, and the end repeats.
pub fn slow_watcher_is_cancelled_not_waited_for(h: &dyn Harness) {
    let s = h.subject(8).store;
    let base = s.revision();
    let mut w = s.watch("", None);
    let started = Instant::now();
    for i in 1..=50 {
        s.put("k", i.to_string()).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    for i in 1..=8 {
        assert_eq!(ev(&mut w).revision, base + i);
    }
    let end = w
        .recv_timeout(Duration::from_secs(10))
        .expect("an end")
        .unwrap_err();
    assert_eq!(
        end,
        WatchEnd::Lagged {
            revision: base + 9,
            capacity: 8
        }
    );
    assert_eq!(w.recv().unwrap_err(), end, "the end repeats");
}

/// Dropping one watch leaves the others (and writes) working.
pub fn dropped_watch_leaves_others_alone(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let w = s.watch("", None);
    let mut kept = s.watch("", None);
    drop(w);
    let r = s.put("k", "v".into()).unwrap();
    assert_eq!(ev(&mut kept).revision, r);
}

/// Closing the store ends its watches with `Closed`.
pub fn closing_the_store_ends_watches(h: &dyn Harness) {
    let subject = h.subject(BUFFER);
    let mut w = subject.store.watch("", None);
    drop(subject);
    assert_eq!(
        w.recv_timeout(Duration::from_secs(10)),
        Some(Err(WatchEnd::Closed))
    );
}

/// The async receive wakes when another thread commits.
pub fn async_watch_wakes_on_commit(h: &dyn Harness) {
    let s = h.subject(BUFFER).store;
    let mut w = s.watch("jobs/", None);
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s.put("jobs/1", "go".into()).unwrap();
        })
    };
    let e = block_on(w.recv_async()).unwrap();
    assert_eq!((e.key.as_str(), e.value.as_deref()), ("jobs/1", Some("go")));
    writer.join().unwrap();
}
