//! Tests of the embedded engine: durability, compare-and-swap, fault cases on the log,
//! compaction bounds and watches. Crash tests with a killed child are in `crash_tests.rs`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::conformance::{self, del, put, Harness, Subject};

/// Fresh embedded stores in temporary directories (kept alive by the store's own
/// directory handle until the test ends: each directory is leaked into the closure).
struct EmbeddedHarness;

impl Harness for EmbeddedHarness {
    fn subject(&self, watch_buffer_events: usize) -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Embedded::open_with(
                dir.path(),
                Options {
                    watch_buffer_events,
                    ..Options::default()
                },
            )
            .unwrap(),
        );
        let weak = Arc::downgrade(&store);
        Subject {
            store,
            compact: Box::new(move |rev| {
                let _keep = &dir;
                if let Some(s) = weak.upgrade() {
                    s.forget_history_through(rev);
                }
            }),
        }
    }
}

/// The engine-independent behaviour (`conformance::TESTS`), one test each.
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(&EmbeddedHarness);
            }
        )*
        /// Every conformance test has its #[test] here.
        #[test]
        fn conformance_list_is_covered() {
            let here = [$(stringify!($name)),*];
            for (name, _) in conformance::TESTS {
                assert!(here.contains(name), "{name} has no #[test] for the embedded engine");
            }
        }
    };
}

conformance_tests!(
    put_get_list_delete,
    compare_and_swap,
    txn_is_all_or_nothing,
    same_key_twice_in_one_txn,
    list_with_revision_is_current,
    large_listing_is_whole_and_ordered,
    watch_delivers_changes_under_prefix,
    watch_replays_from_a_past_revision,
    watch_from_compacted_history_ends,
    list_then_watch_under_concurrent_writers,
    slow_watcher_is_cancelled_not_waited_for,
    dropped_watch_leaves_others_alone,
    closing_the_store_ends_watches,
    async_watch_wakes_on_commit,
);

fn small(compact_log_bytes: u64) -> Options {
    Options {
        compact_log_bytes,
        ..Options::default()
    }
}

/// Writes survive a reopen, with their revisions.
#[test]
fn reopen_replays_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(s.txn(&[], vec![put("a/1", "x")]).unwrap(), 1);
        assert_eq!(s.txn(&[], vec![put("a/2", "y"), put("b", "z")]).unwrap(), 2);
        s.delete("b").unwrap();
    }
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.revision(), 3);
    assert_eq!(s.get("a/2").unwrap().mod_revision, 2);
    assert!(s.get("b").is_none());
    let keys: Vec<_> = s.list("a/").into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["a/1", "a/2"]);
}

/// A torn final log line (crash mid-append) is dropped; earlier ones are kept.
#[test]
fn torn_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Embedded::open(dir.path()).unwrap();
        s.put("a", "1".into()).unwrap();
    }
    // the reopen folded the log into the snapshot; append fresh lines by hand
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG))
        .unwrap();
    f.write_all(
        b"{\"rev\":2,\"ops\":[{\"put\":{\"key\":\"b\",\"value\":\"2\"}}]}\n{\"rev\":3,\"op",
    )
    .unwrap();
    drop(f);
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.get("a").unwrap().value, "1");
    assert_eq!(s.get("b").unwrap().value, "2");
    assert_eq!(s.revision(), 2);
    // and the store goes on from there
    assert_eq!(s.put("c", "3".into()).unwrap(), 3);
}

/// A tail of zero bytes (a filesystem that extended the file but lost the data) is a
/// torn last line too.
#[test]
fn zeroed_tail_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    drop(Embedded::open(dir.path()).unwrap());
    fs::write(
        dir.path().join(LOG),
        b"{\"rev\":1,\"ops\":[{\"put\":{\"key\":\"b\",\"value\":\"2\"}}]}\n\0\0\0\0\0\0",
    )
    .unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.get("b").unwrap().value, "2");
}

/// Every prefix of a log (a crash after any byte of any append) opens into the state
/// after a whole number of transactions: the complete lines, never part of one.
#[test]
fn every_cut_of_the_log_opens_to_a_committed_state() {
    let src = tempfile::tempdir().unwrap();
    let mut expect: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    {
        let s = Embedded::open(src.path()).unwrap();
        for i in 1..=6u64 {
            let ops = vec![
                put(&format!("k{}", i % 3), &format!("v{i}")),
                put("last", &i.to_string()),
            ];
            let mut m = expect.last().unwrap().clone();
            if i == 4 {
                s.txn(&[], vec![del("k1")]).unwrap();
                m.remove("k1");
            } else {
                s.txn(&[], ops).unwrap();
                m.insert(format!("k{}", i % 3), format!("v{i}"));
                m.insert("last".into(), i.to_string());
            }
            expect.push(m);
        }
    }
    let snapshot = fs::read(src.path().join(SNAPSHOT)).unwrap();
    let log = fs::read(src.path().join(LOG)).unwrap();
    for cut in 0..=log.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SNAPSHOT), &snapshot).unwrap();
        fs::write(dir.path().join(LOG), &log[..cut]).unwrap();
        let s = Embedded::open(dir.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let whole = log[..cut].iter().filter(|&&b| b == b'\n').count() as u64;
        let rev = s.revision();
        // one extra only if the cut removed nothing but the final newline
        assert!(rev == whole || rev == whole + 1, "cut {cut}: rev {rev}");
        let got: BTreeMap<String, String> =
            s.list("").into_iter().map(|(k, e)| (k, e.value)).collect();
        assert_eq!(got, expect[rev as usize], "cut {cut}");
    }
}

/// A second open of the same directory is refused while the first is alive.
#[test]
fn one_process_per_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = Embedded::open(dir.path()).unwrap();
    assert!(matches!(
        Embedded::open(dir.path()),
        Err(StateError::Locked { .. })
    ));
    drop(first);
    Embedded::open(dir.path()).unwrap();
}

/// Corruption in the middle of the log is a clear error naming the line, not a panic
/// and not a silent skip.
#[test]
fn corrupt_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(LOG),
        "{\"rev\":1,\"ops\":[]}\ngarbage\n{\"rev\":2,\"ops\":[]}\n",
    )
    .unwrap();
    let err = Embedded::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { line: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("wal.log is corrupt at line 2"), "{msg}");
}

/// A whole line out of sequence (a lost or repeated revision) is corruption too.
#[test]
fn revision_gap_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(LOG),
        "{\"rev\":1,\"ops\":[]}\n{\"rev\":3,\"ops\":[]}\n",
    )
    .unwrap();
    let err = Embedded::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { line: 2, ref reason, .. } if reason.contains("does not follow 1")),
        "{err:?}"
    );
}

/// A damaged snapshot is reported as corrupt, not replaced by an empty store.
#[test]
fn corrupt_snapshot_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(SNAPSHOT), "{\"rev\":4,\"entr").unwrap();
    assert!(matches!(
        Embedded::open(dir.path()),
        Err(StateError::Corrupt { line: 1, .. })
    ));
}

/// Log lines already folded into the snapshot (a crash between the snapshot's rename
/// and the log's truncation) are skipped, and a leftover temporary snapshot is removed.
#[test]
fn interrupted_compaction_leftovers_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Embedded::open(dir.path()).unwrap();
        s.put("a", "1".into()).unwrap();
        s.put("a", "2".into()).unwrap();
    }
    // the open folded revs 1-2 into the snapshot; put the old lines back plus rev 3
    fs::write(
        dir.path().join(LOG),
        "{\"rev\":1,\"ops\":[{\"put\":{\"key\":\"a\",\"value\":\"1\"}}]}\n\
         {\"rev\":2,\"ops\":[{\"put\":{\"key\":\"a\",\"value\":\"2\"}}]}\n\
         {\"rev\":3,\"ops\":[{\"put\":{\"key\":\"b\",\"value\":\"3\"}}]}\n",
    )
    .unwrap();
    fs::write(dir.path().join(SNAPSHOT_TMP), "{\"rev\":9,").unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.revision(), 3);
    assert_eq!(s.get("a").unwrap().value, "2");
    assert_eq!(s.get("a").unwrap().mod_revision, 2);
    assert_eq!(s.get("b").unwrap().value, "3");
    assert!(!dir.path().join(SNAPSHOT_TMP).exists());
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Many revisions of a few keys: the log is folded as it grows, the files stay under
/// a bound (log threshold + one line + the live data twice), and the data survives.
#[test]
fn compaction_bounds_disk_use() {
    const LOG_BOUND: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open_with(dir.path(), small(LOG_BOUND)).unwrap();
    let value = "x".repeat(100);
    let mut max_seen = 0;
    let mut compactions = 0;
    let mut last_log = 0;
    for i in 0..3000u64 {
        s.txn(
            &[],
            vec![put(&format!("key/{}", i % 4), &format!("{i}{value}"))],
        )
        .unwrap();
        let log = fs::metadata(dir.path().join(LOG)).unwrap().len();
        if log < last_log {
            compactions += 1;
        }
        last_log = log;
        max_seen = max_seen.max(dir_bytes(dir.path()));
    }
    let live = fs::metadata(dir.path().join(SNAPSHOT)).unwrap().len();
    let line = 200;
    let bound = LOG_BOUND + line + 2 * (live + 64);
    assert!(compactions >= 50, "only {compactions} compactions");
    assert!(max_seen <= bound, "files grew to {max_seen} > {bound}");
    drop(s);
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.revision(), 3000);
    assert_eq!(s.get("key/3").unwrap().value, format!("2999{value}"));
    assert_eq!(s.get("key/3").unwrap().mod_revision, 3000);
}

/// After a compaction, appends start at the beginning of the emptied log (no hole of
/// zero bytes that would read as a corrupt line).
#[test]
fn appends_after_compaction_start_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open_with(dir.path(), small(300)).unwrap();
    for i in 0..20 {
        s.put("k", format!("value-{i:040}")).unwrap();
    }
    let log = fs::read(dir.path().join(LOG)).unwrap();
    assert!(!log.contains(&0), "hole in the log: {log:?}");
    drop(s);
    assert_eq!(Embedded::open(dir.path()).unwrap().revision(), 20);
}

fn ev(w: &mut Watch) -> WatchEvent {
    w.recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
        .expect("a live watch")
}

/// A watch from a past revision replays the history first; one from before the kept
/// history ends with `Compacted`, naming the revision to re-list from.
#[test]
fn watch_replays_history_and_reports_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        history_revisions: 5,
        ..Options::default()
    };
    let s = Embedded::open_with(dir.path(), opts).unwrap();
    for i in 1..=20 {
        s.put("k", i.to_string()).unwrap();
    }
    assert_eq!(s.compact_revision(), 15);
    let mut w = s.watch("", Some(17));
    assert_eq!(ev(&mut w).revision, 18);
    assert_eq!(ev(&mut w).revision, 19);
    assert_eq!(ev(&mut w).revision, 20);
    s.put("k", "21".into()).unwrap();
    assert_eq!(ev(&mut w).revision, 21);

    let mut old = s.watch("", Some(3));
    let end = old.recv().unwrap_err();
    assert_eq!(
        end,
        WatchEnd::Compacted {
            from_revision: 3,
            compact_revision: 16
        }
    );
    assert!(end.to_string().contains("re-list"));
    // the edge: from the compact revision itself everything after it is still there
    let mut edge = s.watch("", Some(16));
    assert_eq!(ev(&mut edge).revision, 17);
}

/// The history survives a restart as far as the log reaches: a watcher that
/// reconnects after a server restart resumes without re-listing.
#[test]
fn watch_history_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Embedded::open(dir.path()).unwrap();
        for i in 1..=3 {
            s.put("k", i.to_string()).unwrap();
        }
    }
    let s = Embedded::open(dir.path()).unwrap();
    let mut w = s.watch("", Some(1));
    assert_eq!(ev(&mut w).value.as_deref(), Some("2"));
    assert_eq!(ev(&mut w).value.as_deref(), Some("3"));
    drop(s);
    // the second open folded the log: the history starts at the snapshot now
    let s = Embedded::open(dir.path()).unwrap();
    assert!(matches!(
        s.watch("", Some(1)).recv(),
        Err(WatchEnd::Compacted {
            compact_revision: 3,
            ..
        })
    ));
}

/// A watcher that never reads does not slow writers: once its bounded queue is full
/// it is cancelled with `Lagged` (after the events it did receive) and forgotten.
#[test]
fn lagging_watcher_is_forgotten_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        watch_buffer_events: 8,
        ..Options::default()
    };
    let s = Embedded::open_with(dir.path(), opts).unwrap();
    let mut w = s.watch("", None);
    let started = Instant::now();
    for i in 1..=50 {
        s.put("k", i.to_string()).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        s.lock().watchers.len(),
        0,
        "the lagging watcher is forgotten"
    );
    for i in 1..=8 {
        assert_eq!(ev(&mut w).revision, i);
    }
    let end = w.recv().unwrap_err();
    assert_eq!(
        end,
        WatchEnd::Lagged {
            revision: 9,
            capacity: 8
        }
    );
    assert_eq!(w.recv().unwrap_err(), end, "the end repeats");
}

/// A dropped watch is forgotten by the store at its next commit.
#[test]
fn dropped_watch_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    let w = s.watch("", None);
    let _kept = s.watch("", None);
    drop(w);
    s.put("k", "v".into()).unwrap();
    assert_eq!(s.lock().watchers.len(), 1);
    // also when no write comes: the next watch call prunes
    drop(_kept);
    let _third = s.watch("", None);
    assert_eq!(s.lock().watchers.len(), 1);
}

/// A failed fsync stops the store from accepting writes (what a restart would read is
/// unknown, so memory must not run ahead of it); reads go on, and a reopen recovers
/// from whatever the log holds.
#[test]
fn failed_fsync_poisons_writes_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    s.put("a", "1".into()).unwrap();
    s.fail_fsync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        s.put("a", "2".into()),
        Err(StateError::Write { .. })
    ));
    let err = s.put("b", "3".into()).unwrap_err();
    assert!(matches!(err, StateError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("restart"), "{err}");
    assert_eq!(s.get("a").unwrap().value, "1", "memory did not run ahead");
    assert_eq!(s.revision(), 1);
    drop(s);
    // here the kernel kept the page, so the append is on disk: the outcome of a
    // transaction whose fsync failed is unknown to its caller, as with etcd
    let s = Embedded::open(dir.path()).unwrap();
    assert!(s.revision() == 1 || s.revision() == 2);
    assert_eq!(s.put("b", "3".into()).unwrap(), s.revision());
}

/// The checksum is CRC-32/IEEE (the standard check value).
#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// A flipped bit inside a value still parses as JSON; the line's checksum catches it
/// and the open names the line.
#[test]
fn bit_flip_in_a_value_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Vec::new();
    for rev in 1..=3 {
        log.extend(encode_line(&LogLine {
            rev,
            ops: vec![put("k", "payload")],
        }));
    }
    let at = log
        .windows(7)
        .enumerate()
        .filter(|(_, w)| w == b"payload")
        .nth(1)
        .unwrap()
        .0;
    log[at] ^= 0x01; // "payload" -> "qayload": still valid JSON
    fs::write(dir.path().join(LOG), &log).unwrap();
    let err = Embedded::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { line: 2, ref reason, .. } if reason.contains("checksum mismatch")),
        "{err:?}"
    );
}

/// Logs written before checksums (bare JSON lines) still open, and every new line
/// carries a checksum.
#[test]
fn log_without_checksums_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(LOG),
        "{\"rev\":1,\"ops\":[{\"put\":{\"key\":\"a\",\"value\":\"1\"}}]}\n",
    )
    .unwrap();
    let s = Embedded::open(dir.path()).unwrap();
    assert_eq!(s.get("a").unwrap().value, "1");
    s.put("b", "2".into()).unwrap();
    let log = fs::read_to_string(dir.path().join(LOG)).unwrap();
    let (crc, json) = log.trim_end().split_once(' ').unwrap();
    assert_eq!(
        u32::from_str_radix(crc, 16).unwrap(),
        crc32(json.as_bytes())
    );
}
