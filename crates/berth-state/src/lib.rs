//! Control-plane state: one revisioned key-value interface (the etcd model) and its
//! embedded engine.
//!
//! Every component keeps its durable records here and nowhere else. Keys are
//! `/`-separated paths; values are JSON documents. Each committed transaction bumps
//! one global revision, and every entry remembers the revision that last wrote it, so
//! callers can do compare-and-swap exactly as with etcd's `Txn`. The embedded engine
//! ([`Embedded`]) keeps the whole map in memory and makes every transaction durable in an
//! append-only log (one JSON line per transaction, `fdatasync`ed before the call returns),
//! folded into a snapshot on open and when the log grows. A torn last line — a crash in
//! the middle of an append — is a transaction that never committed and is dropped.
//!
//! The boundary: no component above this crate touches the files it writes. etcd
//! becomes a second implementation of [`Store`] when berth runs more than one
//! control-plane machine.
#![forbid(unsafe_code)]

mod embedded;

pub use embedded::Embedded;

/// A global revision: bumped by one for every committed transaction.
pub type Revision = u64;

/// One stored value with the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub mod_revision: Revision,
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
    #[error("state log {path} is corrupt at line {line}")]
    Corrupt { path: String, line: usize },
    #[error("cannot write state log {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
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
