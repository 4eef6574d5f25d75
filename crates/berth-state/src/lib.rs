//! Control-plane state: one revisioned key-value interface (the etcd model) and its
//! two engines, embedded and etcd.
//!
//! Every component keeps its durable records here and nowhere else. Keys are
//! `/`-separated paths; values are JSON documents. Each committed transaction bumps
//! one global revision, and every entry remembers the revision that last wrote it, so
//! callers can do compare-and-swap exactly as with etcd's `Txn`.
//!
//! Changes are observed with [`Store::watch`]: the events under a prefix, in revision
//! order, starting after a revision the caller read at ([`Store::list_with_revision`]).
//! Recent history is kept in memory (bounded) so a watch can start in the past; a watch
//! from before that history ends with [`WatchEnd::Compacted`] and a watcher that falls
//! behind with [`WatchEnd::Lagged`] — the caller re-lists and watches again, as with
//! etcd. A slow watcher never slows a writer.
//!
//! The embedded engine ([`Embedded`]) keeps the whole map in memory and makes every
//! transaction durable in an append-only log (one checksummed JSON line per
//! transaction, `fdatasync`ed before the call returns), folded atomically into a snapshot on open and
//! whenever the log outgrows a bound, so disk use stays bounded under any number of
//! writes. After a crash at any point (kill -9, including mid-compaction) it reopens
//! into exactly the committed transactions: a torn last line — a crash in the middle of
//! an append, a transaction that never returned — is dropped; damage anywhere else is a
//! [`StateError::Corrupt`] naming the line. `docs/state.md` lists the promises and the
//! tests that prove each.
//!
//! ```
//! use berth_state::{Embedded, Store, WatchEnd};
//! # let tmp = tempfile::tempdir().unwrap();
//! let store = Embedded::open(tmp.path()).unwrap();
//! store.put("tasks/a", "{}".into()).unwrap();
//! // list, then watch from the listed revision: nothing is missed or seen twice
//! let listing = store.list_with_revision("tasks/");
//! let mut watch = store.watch("tasks/", Some(listing.revision));
//! store.put("tasks/b", "{}".into()).unwrap();
//! match watch.recv() {
//!     Ok(event) => assert_eq!((event.key.as_str(), event.revision), ("tasks/b", 2)),
//!     Err(WatchEnd::Compacted { .. } | WatchEnd::Lagged { .. } | WatchEnd::Disconnected { .. }) => {
//!         /* list again */
//!     }
//!     Err(WatchEnd::Closed) => {}
//! }
//! ```
//!
//! The second engine, [`Etcd`], keeps the same interface in an etcd cluster (through
//! etcd's v3 JSON gateway) for more than one control-plane machine. Both pass the same
//! behavioural tests (`conformance`, behind the `test-util` feature).
//!
//! The boundary: no component above this crate touches the files it writes or the
//! etcd keys it owns.
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod embedded;
mod etcd;
mod watch;

pub use embedded::{
    Embedded, Options, COMPACT_LOG_BYTES, HISTORY_BYTES, HISTORY_REVISIONS, WATCH_BUFFER_EVENTS,
};
pub use etcd::{
    Etcd, EtcdOptions, ETCD_NAMESPACE, ETCD_PAGE_KEYS, ETCD_REQUEST_TIMEOUT, ETCD_RETRY_FOR,
};
pub use watch::{EventKind, Watch, WatchEnd, WatchEvent};

/// A global revision: bumped by one for every committed transaction.
pub type Revision = u64;

/// One stored value with the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub mod_revision: Revision,
}

/// The entries under a prefix and the revision they were read at: watch from
/// `revision` to see every change after the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub revision: Revision,
    pub entries: Vec<(String, Entry)>,
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Put { key: String, value: String },
    Delete { key: String },
}

/// A guard a transaction checks before it applies: the key's current
/// `mod_revision`, where `None` means "the key must not exist".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Option<Revision>,
}

impl Compare {
    /// The key must not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare {
            key: key.into(),
            mod_revision: None,
        }
    }
    /// The key must still be at `rev`.
    pub fn at(key: impl Into<String>, rev: Revision) -> Self {
        Compare {
            key: key.into(),
            mod_revision: Some(rev),
        }
    }
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state conflict: {key} changed since it was read")]
    Conflict { key: String },
    #[error("state in {path} is in use by another berth process; stop it first")]
    Locked { path: String },
    #[error("cannot open state in {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot write state log {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state log {path} refuses writes after a failed fsync left its contents unknown; \
         restart berth to recover from the log"
    )]
    Poisoned { path: String },
    /// No answer from etcd (connection refused, broken, timed out); for a write, its
    /// outcome is unknown unless the connection could not be made at all.
    #[error("etcd at {endpoint} is unreachable: {reason}")]
    EtcdUnreachable { endpoint: String, reason: String },
    /// etcd answered with an error (e.g. a transaction over its `--max-txn-ops`).
    #[error("etcd at {endpoint} answered {status}: {message}")]
    EtcdRefused {
        endpoint: String,
        status: u16,
        message: String,
    },
}

/// The store interface every component uses.
pub trait Store: Send + Sync + 'static {
    /// The entry at `key`, if any.
    fn get(&self, key: &str) -> Option<Entry>;
    /// All entries whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Vec<(String, Entry)>;
    /// Applies `ops` atomically if every compare holds; returns the new revision.
    fn txn(&self, compares: &[Compare], ops: Vec<Op>) -> Result<Revision, StateError>;
    /// The current revision.
    fn revision(&self) -> Revision;
    /// As [`Store::list`], with the revision the entries were read at (atomically).
    fn list_with_revision(&self, prefix: &str) -> Listing;
    /// The changes to keys under `prefix` committed after `from_revision` (`None`: after
    /// the current revision), in revision order. Events still in the history are
    /// replayed first; if `from_revision` is older than the history, the watch ends at
    /// once with [`WatchEnd::Compacted`]. The watch is cancelled with
    /// [`WatchEnd::Lagged`] if its reader falls too far behind; it never blocks a writer.
    fn watch(&self, prefix: &str, from_revision: Option<Revision>) -> Watch;

    /// Convenience: an unconditional put.
    fn put(&self, key: &str, value: String) -> Result<Revision, StateError> {
        self.txn(
            &[],
            vec![Op::Put {
                key: key.to_string(),
                value,
            }],
        )
    }
    /// Convenience: an unconditional delete.
    fn delete(&self, key: &str) -> Result<Revision, StateError> {
        self.txn(
            &[],
            vec![Op::Delete {
                key: key.to_string(),
            }],
        )
    }
}
