//! The embedded engine: an in-memory map made durable by an append-only log.
//!
//! Files in the store's directory (nothing else reads or writes them):
//! - `snapshot.json`: the whole map at one revision, replaced atomically (written to
//!   `snapshot.json.tmp`, fsynced, renamed over, directory fsynced).
//! - `wal.log`: one line per transaction after the snapshot (`<crc32> <JSON>`), each
//!   `fdatasync`ed before `txn` returns. Lines at or below the snapshot's revision are leftovers of a
//!   compaction interrupted between the rename and the truncation, and are skipped.
//! - `LOCK`: `flock`ed for the store's lifetime, so one process owns the directory.
//!
//! Compaction folds the log into a new snapshot when the log outgrows
//! `max(Options::compact_log_bytes, size of the last snapshot)`: disk use stays below
//! about three times the live data plus that bound, whatever the number of writes, and
//! the cost of rewriting the snapshot is paid at most once per snapshot-sized run of log.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::watch::{self, EventKind, Watch, WatchEnd, WatchEvent, WatchSender};
use crate::{Compare, Entry, Listing, Op, Revision, StateError, Store};

/// Default for [`Options::compact_log_bytes`]: 64 MiB.
pub const COMPACT_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// Default for [`Options::history_revisions`]: revisions kept for watches to replay.
pub const HISTORY_REVISIONS: usize = 10_000;
/// Default for [`Options::history_bytes`]: 64 MiB of keys and values kept for replay.
pub const HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// Default for [`Options::watch_buffer_events`]: events queued per watcher.
pub const WATCH_BUFFER_EVENTS: usize = 10_000;

const SNAPSHOT: &str = "snapshot.json";
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";
const LOG: &str = "wal.log";

/// Tuning of the embedded engine; [`Options::default`] is what the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Fold the log into the snapshot once it holds this many bytes (or more bytes
    /// than the last snapshot, whichever is larger). Unit: bytes.
    pub compact_log_bytes: u64,
    /// Keep at most this many revisions of events in memory for watches to replay.
    /// Unit: revisions.
    pub history_revisions: usize,
    /// Keep at most this many bytes of keys and values in memory for replay. Unit: bytes.
    pub history_bytes: usize,
    /// A watcher whose queue would exceed this many events is cancelled
    /// ([`WatchEnd::Lagged`]). Unit: events.
    pub watch_buffer_events: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compact_log_bytes: COMPACT_LOG_BYTES,
            history_revisions: HISTORY_REVISIONS,
            history_bytes: HISTORY_BYTES,
            watch_buffer_events: WATCH_BUFFER_EVENTS,
        }
    }
}

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

/// Recent events kept so a watch can start in the past.
struct History {
    /// (revision, its events), oldest first; revisions without events are absent.
    revs: VecDeque<(Revision, Vec<Arc<WatchEvent>>)>,
    bytes: usize,
    /// Events at or below this revision are gone.
    compact_rev: Revision,
}

struct Inner {
    map: BTreeMap<String, Entry>,
    rev: Revision,
    log: File,
    /// Length of the log up to the last committed line.
    log_bytes: u64,
    /// Size of the last snapshot written.
    snapshot_bytes: u64,
    /// Compact when the log reaches this length.
    compact_at: u64,
    /// Set when a log write failed in a way that leaves the file's contents unknown
    /// (a failed fsync): no further write is accepted until the store is reopened.
    poisoned: bool,
    history: History,
    watchers: Vec<WatchSender>,
}

/// The default store: needs no setup, lives in one directory.
pub struct Embedded {
    dir: PathBuf,
    opts: Options,
    inner: Mutex<Inner>,
    /// Held (flock) for the store's lifetime: one process per data directory.
    _lock: File,
    /// Test hook: the next log fsync reports this failure.
    #[cfg(test)]
    fail_fsync: std::sync::atomic::AtomicBool,
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

fn corrupt(path: &Path, line: usize, reason: impl Into<String>) -> StateError {
    StateError::Corrupt {
        path: path.display().to_string(),
        line,
        reason: reason.into(),
    }
}

/// Crash points for the crash tests: a test child process whose
/// `BERTH_STATE_CRASH_AT` names the point kills itself with SIGKILL there.
#[cfg(test)]
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("BERTH_STATE_CRASH_AT").ok());
    if crash_tests::ARMED.load(std::sync::atomic::Ordering::SeqCst) && at.as_deref() == Some(name) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}

impl Embedded {
    /// Opens (or creates) the store in `dir` with the default [`Options`], replaying
    /// its log.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (or creates) the store in `dir`, replaying its log, and folds the log
    /// into a fresh snapshot.
    pub fn open_with(dir: &Path, opts: Options) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(open_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(open_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StateError::Locked {
                path: dir.display().to_string(),
            });
        }
        // A leftover temporary snapshot is a compaction that never reached its rename.
        let tmp = dir.join(SNAPSHOT_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed unfinished snapshot"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(&tmp)(e)),
        }
        let snap_path = dir.join(SNAPSHOT);
        let snapshot: Snapshot = match fs::read(&snap_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(&snap_path, 1, format!("not a snapshot: {e}")))?,
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
        let mut history = History {
            revs: VecDeque::new(),
            bytes: 0,
            compact_rev: rev,
        };
        let log_path = dir.join(LOG);
        match fs::read(&log_path) {
            Ok(bytes) => {
                for line in replay(&log_path, &bytes, rev)? {
                    rev = line.rev;
                    let events = apply(&mut map, line.ops, rev);
                    history.push(rev, events, &opts);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(&log_path)(e)),
        }
        let snapshot_bytes = write_snapshot(dir, &map, rev)?;
        // The snapshot now holds everything: start an empty log. `append` makes every
        // write land at the end of the file, also after a truncation.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(open_err(&log_path))?;
        log.set_len(0).map_err(open_err(&log_path))?;
        log.sync_all().map_err(open_err(&log_path))?;
        // A log file created just now must survive a power loss as a name too, not
        // only as data (fsync(2): the directory entry needs an fsync of the directory).
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(open_err(dir))?;
        let compact_at = opts.compact_log_bytes.max(snapshot_bytes);
        Ok(Embedded {
            dir: dir.to_path_buf(),
            opts,
            inner: Mutex::new(Inner {
                map,
                rev,
                log,
                log_bytes: 0,
                snapshot_bytes,
                compact_at,
                poisoned: false,
                history,
                watchers: Vec::new(),
            }),
            _lock: lock,
            #[cfg(test)]
            fail_fsync: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The revision at or below which watch history is gone: a watch must start at
    /// or after it.
    pub fn compact_revision(&self) -> Revision {
        self.lock().history.compact_rev
    }

    /// Test hook: forgets the watch history at and below `rev`, as a compaction of
    /// etcd's history would.
    #[cfg(any(test, feature = "test-util"))]
    pub fn forget_history_through(&self, rev: Revision) {
        let mut inner = self.lock();
        let h = &mut inner.history;
        while h.revs.front().is_some_and(|(r, _)| *r <= rev) {
            if let Some((_, events)) = h.revs.pop_front() {
                h.bytes -= events.iter().map(|e| e.size()).sum::<usize>();
            }
        }
        h.compact_rev = h.compact_rev.max(rev);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-applied: `apply`
        // runs only after the log append succeeded, and it does not panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds the log into a new snapshot. Crash-safe at every step: until the rename
    /// the old snapshot and the whole log are intact; after it, the log's lines are at
    /// or below the snapshot's revision and are skipped when replayed.
    fn compact(&self, inner: &mut Inner) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let snapshot_bytes = write_snapshot(&self.dir, &inner.map, inner.rev)?;
        crash_point("compact:before-truncate");
        let log_path = self.dir.join(LOG);
        let write_err = |source| StateError::Write {
            path: log_path.display().to_string(),
            source,
        };
        inner.log.set_len(0).map_err(write_err)?;
        inner.log.sync_all().map_err(write_err)?;
        crash_point("compact:after-truncate");
        inner.log_bytes = 0;
        inner.snapshot_bytes = snapshot_bytes;
        inner.compact_at = self.opts.compact_log_bytes.max(snapshot_bytes);
        tracing::debug!(
            rev = inner.rev,
            snapshot_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state log folded into snapshot"
        );
        Ok(())
    }
}

/// CRC-32 (IEEE 802.3: the polynomial of zlib, and of etcd's WAL records) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One log record: `<crc32 of the JSON, 8 hex digits> <JSON>\n`. The checksum catches
/// damage that still parses (a flipped bit inside a value).
fn encode_line(line: &LogLine) -> Vec<u8> {
    let json = serde_json::to_vec(line).expect("log line serialises");
    let mut out = format!("{:08x} ", crc32(&json)).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Parses one log record (without its newline). Records written before checksums
/// (bare JSON, starting with `{`) are still read: they can only be in a log that this
/// version has not opened yet, since every open folds the log into the snapshot.
fn decode_line(raw: &[u8]) -> Result<LogLine, String> {
    let json = if raw.first() == Some(&b'{') {
        raw
    } else {
        let (crc, json) = match raw.split_at_checked(8) {
            Some((crc, rest)) if rest.first() == Some(&b' ') => (crc, &rest[1..]),
            _ => return Err("not a log record: no checksum".into()),
        };
        let crc = std::str::from_utf8(crc)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or("not a log record: bad checksum field")?;
        if crc32(json) != crc {
            return Err(format!(
                "checksum mismatch (recorded {crc:08x}, content {:08x})",
                crc32(json)
            ));
        }
        json
    };
    serde_json::from_slice(json).map_err(|e| format!("not a log record: {e}"))
}

/// The log's lines after `snap_rev`, checked: each must parse and follow the previous
/// revision by exactly one. A bad last line is a crash in the middle of an append —
/// a transaction that never returned — and is dropped; a bad line before it is
/// corruption and stops the open.
fn replay(path: &Path, bytes: &[u8], snap_rev: Revision) -> Result<Vec<LogLine>, StateError> {
    let mut out = Vec::new();
    let mut rev = snap_rev;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop(); // the file ends with a newline
    }
    let count = lines.len();
    for (i, raw) in lines.into_iter().enumerate() {
        let number = i + 1;
        let last = number == count;
        let parsed: LogLine = match decode_line(raw) {
            Ok(p) => p,
            Err(_) if last => {
                tracing::warn!(path = %path.display(), line = number, "dropping torn last line of state log");
                break;
            }
            Err(reason) => return Err(corrupt(path, number, reason)),
        };
        if parsed.rev <= snap_rev && out.is_empty() {
            continue; // folded into the snapshot before a crash cut the truncation short
        }
        if parsed.rev != rev + 1 {
            // A torn append does not parse; a whole line out of sequence is damage.
            return Err(corrupt(
                path,
                number,
                format!("revision {} does not follow {rev}", parsed.rev),
            ));
        }
        rev = parsed.rev;
        out.push(parsed);
    }
    Ok(out)
}

impl History {
    fn push(&mut self, rev: Revision, events: Vec<Arc<WatchEvent>>, opts: &Options) {
        if !events.is_empty() {
            self.bytes += events.iter().map(|e| e.size()).sum::<usize>();
            self.revs.push_back((rev, events));
        }
        while self.revs.len() > opts.history_revisions || self.bytes > opts.history_bytes {
            let Some((old, events)) = self.revs.pop_front() else {
                break;
            };
            self.bytes -= events.iter().map(|e| e.size()).sum::<usize>();
            self.compact_rev = old;
        }
    }
}

/// Applies `ops` at `rev`, returning the events they make (a delete of a missing key
/// makes none, as in etcd).
fn apply(map: &mut BTreeMap<String, Entry>, ops: Vec<Op>, rev: Revision) -> Vec<Arc<WatchEvent>> {
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                let prev = map.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        mod_revision: rev,
                    },
                );
                events.push(Arc::new(WatchEvent {
                    revision: rev,
                    kind: EventKind::Put,
                    key,
                    value: Some(value),
                    prev_value: prev.map(|e| e.value),
                }));
            }
            Op::Delete { key } => {
                if let Some(prev) = map.remove(&key) {
                    events.push(Arc::new(WatchEvent {
                        revision: rev,
                        kind: EventKind::Delete,
                        key,
                        value: None,
                        prev_value: Some(prev.value),
                    }));
                }
            }
        }
    }
    events
}

/// Replaces the snapshot atomically; returns its size in bytes.
fn write_snapshot(
    dir: &Path,
    map: &BTreeMap<String, Entry>,
    rev: Revision,
) -> Result<u64, StateError> {
    let snap = Snapshot {
        rev,
        entries: map
            .iter()
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.mod_revision)))
            .collect(),
    };
    let tmp = dir.join(SNAPSHOT_TMP);
    let write_err = |source| StateError::Write {
        path: tmp.display().to_string(),
        source,
    };
    let bytes = serde_json::to_vec(&snap).expect("snapshot serialises");
    let mut f = File::create(&tmp).map_err(write_err)?;
    f.write_all(&bytes).map_err(write_err)?;
    crash_point("snapshot:before-fsync");
    f.sync_all().map_err(write_err)?;
    crash_point("snapshot:before-rename");
    fs::rename(&tmp, dir.join(SNAPSHOT)).map_err(write_err)?;
    crash_point("snapshot:before-dir-fsync");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(bytes.len() as u64)
}

impl Store for Embedded {
    fn get(&self, key: &str) -> Option<Entry> {
        self.lock().map.get(key).cloned()
    }

    fn list(&self, prefix: &str) -> Vec<(String, Entry)> {
        self.list_with_revision(prefix).entries
    }

    fn list_with_revision(&self, prefix: &str) -> Listing {
        let inner = self.lock();
        let entries = inner
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        Listing {
            revision: inner.rev,
            entries,
        }
    }

    fn txn(&self, compares: &[Compare], ops: Vec<Op>) -> Result<Revision, StateError> {
        let mut inner = self.lock();
        let log_path = self.dir.join(LOG);
        if inner.poisoned {
            return Err(StateError::Poisoned {
                path: log_path.display().to_string(),
            });
        }
        for c in compares {
            let current = inner.map.get(&c.key).map(|e| e.mod_revision);
            if current != c.mod_revision {
                return Err(StateError::Conflict { key: c.key.clone() });
            }
        }
        let rev = inner.rev + 1;
        let line = encode_line(&LogLine {
            rev,
            ops: ops.clone(),
        });
        let write_err = |source| StateError::Write {
            path: log_path.display().to_string(),
            source,
        };
        if let Err(e) = inner.log.write_all(&line) {
            // Cut off whatever part of the line reached the file, so the next append
            // does not follow a broken line; if even that fails, stop writing.
            let good = inner.log_bytes;
            if inner.log.set_len(good).is_err() {
                inner.poisoned = true;
            }
            return Err(write_err(e));
        }
        crash_point("txn:before-fsync");
        let synced = inner.log.sync_data();
        #[cfg(test)]
        let synced = match self
            .fail_fsync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            true => Err(std::io::Error::other("injected fsync failure")),
            false => synced,
        };
        if let Err(e) = synced {
            // After a failed fsync the kernel may have dropped the dirty pages: what a
            // restart would read is unknown, so accept nothing more (as etcd does).
            inner.poisoned = true;
            return Err(write_err(e));
        }
        crash_point("txn:after-fsync");
        let events = apply(&mut inner.map, ops, rev);
        inner.rev = rev;
        inner.log_bytes += line.len() as u64;
        inner.watchers.retain(|w| w.send(rev, &events));
        let Inner { history, .. } = &mut *inner;
        history.push(rev, events, &self.opts);
        if inner.log_bytes >= inner.compact_at {
            // The transaction is committed whatever happens here: a failed compaction
            // is logged and tried again after another run of log, never reported as a
            // failed write.
            if let Err(e) = self.compact(&mut inner) {
                tracing::warn!(error = %e, "state log compaction failed; will retry");
                inner.compact_at =
                    inner.log_bytes + self.opts.compact_log_bytes.max(inner.snapshot_bytes);
            }
        }
        Ok(rev)
    }

    fn revision(&self) -> Revision {
        self.lock().rev
    }

    fn watch(&self, prefix: &str, from_revision: Option<Revision>) -> Watch {
        let mut inner = self.lock();
        let from = from_revision.unwrap_or(inner.rev);
        inner.watchers.retain(WatchSender::is_live);
        let (tx, rx) = watch::channel(prefix, self.opts.watch_buffer_events);
        if from < inner.history.compact_rev {
            tx.close(WatchEnd::Compacted {
                from_revision: from,
                compact_revision: inner.history.compact_rev,
            });
            return rx;
        }
        let mut live = true;
        for (rev, events) in inner.history.revs.iter().filter(|(r, _)| *r > from) {
            if !tx.send(*rev, events) {
                live = false;
                break;
            }
        }
        if live {
            inner.watchers.push(tx);
        }
        rx
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        for w in self.lock().watchers.drain(..) {
            w.close(WatchEnd::Closed);
        }
    }
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
