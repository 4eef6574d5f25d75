//! The embedded engine: an in-memory map made durable by an append-only log.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Compare, Entry, Op, Revision, StateError, Store};

/// Fold the log into a new snapshot once it holds this many transactions.
const COMPACT_AFTER_TXNS: usize = 20_000;

const SNAPSHOT: &str = "snapshot.json";
const LOG: &str = "wal.log";

#[derive(Serialize, Deserialize)]
struct LogLine {
    rev: Revision,
    ops: Vec<Op>,
}

#[derive(Serialize, Deserialize, Default)]
struct Snapshot {
    rev: Revision,
    /// key → (value, mod_revision)
    entries: BTreeMap<String, (String, Revision)>,
}

struct Inner {
    map: BTreeMap<String, Entry>,
    rev: Revision,
    log: File,
    log_txns: usize,
}

/// The default store: needs no setup, lives in one directory.
pub struct Embedded {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held (flock) for the store's lifetime: one process per data directory.
    _lock: File,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("dir", &self.dir).finish()
    }
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Open {
        path: path.display().to_string(),
        source,
    }
}

impl Embedded {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(open_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(open_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StateError::Locked {
                path: dir.display().to_string(),
            });
        }
        let snap_path = dir.join(SNAPSHOT);
        let snapshot: Snapshot = match fs::read(&snap_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| StateError::Corrupt {
                path: snap_path.display().to_string(),
                line: 1,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(open_err(&snap_path)(e)),
        };
        let mut map: BTreeMap<String, Entry> = snapshot
            .entries
            .into_iter()
            .map(|(k, (value, mod_revision))| {
                (
                    k,
                    Entry {
                        value,
                        mod_revision,
                    },
                )
            })
            .collect();
        let mut rev = snapshot.rev;
        let log_path = dir.join(LOG);
        if let Ok(file) = File::open(&log_path) {
            let lines: Vec<String> = BufReader::new(file)
                .lines()
                .collect::<Result<_, _>>()
                .map_err(open_err(&log_path))?;
            let count = lines.len();
            for (i, line) in lines.iter().enumerate() {
                let parsed: LogLine = match serde_json::from_str(line) {
                    Ok(p) => p,
                    // A torn final line is a transaction whose append never finished:
                    // it was never acknowledged, so dropping it loses nothing.
                    Err(_) if i + 1 == count => {
                        tracing::warn!(path = %log_path.display(), "dropping torn last line of state log");
                        break;
                    }
                    Err(_) => {
                        return Err(StateError::Corrupt {
                            path: log_path.display().to_string(),
                            line: i + 1,
                        })
                    }
                };
                if parsed.rev <= rev {
                    continue; // already folded into the snapshot
                }
                rev = parsed.rev;
                apply(&mut map, parsed.ops, rev);
            }
        }
        write_snapshot(dir, &map, rev)?;
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log_path)
            .map_err(open_err(&log_path))?;
        Ok(Embedded {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                map,
                rev,
                log,
                log_txns: 0,
            }),
            _lock: lock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-applied: `apply`
        // runs only after the log append succeeded, and it does not panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(map: &mut BTreeMap<String, Entry>, ops: Vec<Op>, rev: Revision) {
    for op in ops {
        match op {
            Op::Put { key, value } => {
                map.insert(
                    key,
                    Entry {
                        value,
                        mod_revision: rev,
                    },
                );
            }
            Op::Delete { key } => {
                map.remove(&key);
            }
        }
    }
}

fn write_snapshot(
    dir: &Path,
    map: &BTreeMap<String, Entry>,
    rev: Revision,
) -> Result<(), StateError> {
    let snap = Snapshot {
        rev,
        entries: map
            .iter()
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.mod_revision)))
            .collect(),
    };
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let write_err = |source| StateError::Write {
        path: tmp.display().to_string(),
        source,
    };
    let bytes = serde_json::to_vec(&snap).expect("snapshot serialises");
    let mut f = File::create(&tmp).map_err(write_err)?;
    f.write_all(&bytes).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    fs::rename(&tmp, dir.join(SNAPSHOT)).map_err(write_err)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

impl Store for Embedded {
    fn get(&self, key: &str) -> Option<Entry> {
        self.lock().map.get(key).cloned()
    }

    fn list(&self, prefix: &str) -> Vec<(String, Entry)> {
        let inner = self.lock();
        inner
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    fn txn(&self, compares: &[Compare], ops: Vec<Op>) -> Result<Revision, StateError> {
        let mut inner = self.lock();
        for c in compares {
            let current = inner.map.get(&c.key).map(|e| e.mod_revision);
            if current != c.mod_revision {
                return Err(StateError::Conflict { key: c.key.clone() });
            }
        }
        let rev = inner.rev + 1;
        let mut line = serde_json::to_vec(&LogLine {
            rev,
            ops: ops.clone(),
        })
        .expect("log line serialises");
        line.push(b'\n');
        let log_path = self.dir.join(LOG);
        let write_err = |source| StateError::Write {
            path: log_path.display().to_string(),
            source,
        };
        inner.log.write_all(&line).map_err(write_err)?;
        inner.log.sync_data().map_err(write_err)?;
        apply(&mut inner.map, ops, rev);
        inner.rev = rev;
        inner.log_txns += 1;
        if inner.log_txns >= COMPACT_AFTER_TXNS {
            write_snapshot(&self.dir, &inner.map, rev)?;
            inner.log.set_len(0).map_err(write_err)?;
            inner.log_txns = 0;
        }
        Ok(rev)
    }

    fn revision(&self) -> Revision {
        self.lock().rev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
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

    /// A compare on a stale revision refuses the whole transaction.
    #[test]
    fn compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        let r = s.txn(&[Compare::absent("k")], vec![put("k", "1")]).unwrap();
        assert!(matches!(
            s.txn(&[Compare::absent("k")], vec![put("k", "2")]),
            Err(StateError::Conflict { .. })
        ));
        s.txn(
            &[Compare::at("k", r)],
            vec![put("k", "3"), put("other", "o")],
        )
        .unwrap();
        assert_eq!(s.get("k").unwrap().value, "3");
        assert!(s
            .txn(&[Compare::at("k", r)], vec![put("other", "x")])
            .is_err());
        assert_eq!(s.get("other").unwrap().value, "o");
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

    /// Corruption in the middle of the log is reported, not silently skipped.
    #[test]
    fn corrupt_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOG), "garbage\n{\"rev\":1,\"ops\":[]}\n").unwrap();
        assert!(matches!(
            Embedded::open(dir.path()),
            Err(StateError::Corrupt { line: 1, .. })
        ));
    }
}
