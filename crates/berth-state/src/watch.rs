//! Watches: a bounded, per-watcher queue of committed changes under a key prefix.
//!
//! The store pushes the events of each committed revision into every matching
//! watcher's queue while it still holds its write lock, so events arrive in revision
//! order and a watch registered at revision `r` sees exactly the revisions after `r`.
//! Pushing never waits for a reader: a queue that would exceed its capacity is ended
//! with [`WatchEnd::Lagged`] instead (memory stays bounded; the reader re-lists), the
//! same contract as an etcd watch cancelled for being too slow.
//!
//! A [`Watch`] is read either blocking ([`Watch::recv`], [`Watch::recv_timeout`]) or
//! from async code ([`Watch::recv_async`], runtime-agnostic: it stores the task's
//! waker, no executor is assumed).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::Revision;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, committed at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the transaction that made the change (several events of one
    /// transaction share it, in the order of its ops).
    pub revision: Revision,
    pub kind: EventKind,
    pub key: String,
    /// The value written; `None` for a delete.
    pub value: Option<String>,
    /// The value the key held before this revision; `None` if it did not exist.
    pub prev_value: Option<String>,
}

impl WatchEvent {
    /// Bytes this event holds, for the history bound.
    pub(crate) fn size(&self) -> usize {
        self.key.len()
            + self.value.as_ref().map_or(0, String::len)
            + self.prev_value.as_ref().map_or(0, String::len)
            + std::mem::size_of::<Self>()
    }
}

/// Why a watch ended. After the end, every further receive returns the same value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchEnd {
    /// The events after `from_revision` are no longer in the store's history.
    #[error(
        "watch from revision {from_revision} is too old: history up to revision \
         {compact_revision} is compacted; re-list and watch from the listed revision"
    )]
    Compacted {
        from_revision: Revision,
        compact_revision: Revision,
    },
    /// The watcher did not keep up: its queue would have held more than `capacity`
    /// events at `revision`. Events before `revision` were delivered.
    #[error(
        "watch cancelled at revision {revision}: the watcher fell more than {capacity} \
         events behind; re-list and watch again"
    )]
    Lagged { revision: Revision, capacity: usize },
    /// The engine lost its server (etcd) and could not reach it again in time; the
    /// events up to and including `revision` were delivered.
    #[error("watch ended after revision {revision}: {reason}; re-list and watch again")]
    Disconnected { revision: Revision, reason: String },
    /// The store was closed.
    #[error("watch closed: the state store was closed")]
    Closed,
}

struct Slot {
    queue: VecDeque<Arc<WatchEvent>>,
    end: Option<WatchEnd>,
    waker: Option<Waker>,
    /// The reader dropped its [`Watch`]; the store forgets the sender at its next commit.
    dropped: bool,
}

/// Run once when the reader drops its [`Watch`] (an engine's way to stop the work
/// that feeds it, e.g. close the connection an etcd watch streams over).
type OnDrop = Box<dyn FnOnce() + Send>;

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    on_drop: Mutex<Option<OnDrop>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Nothing panics while holding this lock; a poisoned one holds a consistent queue.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store's end of a watch.
pub(crate) struct WatchSender {
    shared: Arc<Shared>,
    prefix: String,
    capacity: usize,
}

/// A stream of [`WatchEvent`]s under one prefix; see [`crate::Store::watch`].
pub struct Watch {
    shared: Arc<Shared>,
    prefix: String,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A new watch on `prefix` whose queue holds at most `capacity` events.
pub(crate) fn channel(prefix: &str, capacity: usize) -> (WatchSender, Watch) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            queue: VecDeque::new(),
            end: None,
            waker: None,
            dropped: false,
        }),
        ready: Condvar::new(),
        on_drop: Mutex::new(None),
    });
    (
        WatchSender {
            shared: shared.clone(),
            prefix: prefix.to_string(),
            capacity,
        },
        Watch {
            shared,
            prefix: prefix.to_string(),
        },
    )
}

fn wake(slot: &mut Slot, shared: &Shared) {
    if let Some(w) = slot.waker.take() {
        w.wake();
    }
    shared.ready.notify_all();
}

impl WatchSender {
    /// Queues the events of one revision that fall under the prefix, all or none.
    /// Returns false once the watch is over (dropped by its reader, or ended now
    /// because it fell behind): the store then forgets this sender.
    pub(crate) fn send(&self, revision: Revision, events: &[Arc<WatchEvent>]) -> bool {
        let matching = events.iter().filter(|e| e.key.starts_with(&self.prefix));
        let n = matching.clone().count();
        let mut slot = self.shared.lock();
        if slot.dropped || slot.end.is_some() {
            return false;
        }
        if n == 0 {
            return true;
        }
        if slot.queue.len() + n > self.capacity {
            slot.end = Some(WatchEnd::Lagged {
                revision,
                capacity: self.capacity,
            });
            wake(&mut slot, &self.shared);
            return false;
        }
        slot.queue.extend(matching.cloned());
        wake(&mut slot, &self.shared);
        true
    }

    /// Runs `f` when the reader drops its [`Watch`] (at once if it already has).
    pub(crate) fn on_drop(&self, f: impl FnOnce() + Send + 'static) {
        let mut hook = self
            .shared
            .on_drop
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.shared.lock().dropped {
            drop(hook);
            f();
            return;
        }
        *hook = Some(Box::new(f));
    }

    /// False once the reader dropped the watch or it ended.
    pub(crate) fn is_live(&self) -> bool {
        let slot = self.shared.lock();
        !slot.dropped && slot.end.is_none()
    }

    /// Ends the watch with `end` after the events already queued.
    pub(crate) fn close(&self, end: WatchEnd) {
        let mut slot = self.shared.lock();
        if slot.end.is_none() {
            slot.end = Some(end);
        }
        wake(&mut slot, &self.shared);
    }
}

impl Watch {
    /// The prefix this watch covers.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn take(slot: &mut Slot) -> Option<Result<WatchEvent, WatchEnd>> {
        if let Some(ev) = slot.queue.pop_front() {
            return Some(Ok(Arc::unwrap_or_clone(ev)));
        }
        slot.end.clone().map(Err)
    }

    /// The next event, or why the watch ended; returns at once.
    /// `None`: nothing is queued yet.
    pub fn try_recv(&mut self) -> Option<Result<WatchEvent, WatchEnd>> {
        Self::take(&mut self.shared.lock())
    }

    /// The next event, blocking until one is committed, or why the watch ended.
    pub fn recv(&mut self) -> Result<WatchEvent, WatchEnd> {
        let mut slot = self.shared.lock();
        loop {
            if let Some(r) = Self::take(&mut slot) {
                return r;
            }
            slot = self
                .shared
                .ready
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// As [`Watch::recv`], giving up after `timeout` (`None`: nothing arrived).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Result<WatchEvent, WatchEnd>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.shared.lock();
        loop {
            if let Some(r) = Self::take(&mut slot) {
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = self
                .shared
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next event, or why the watch ended, for async code (any executor).
    pub async fn recv_async(&mut self) -> Result<WatchEvent, WatchEnd> {
        poll_fn(|cx| {
            let mut slot = self.shared.lock();
            match Self::take(&mut slot) {
                Some(r) => Poll::Ready(r),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        {
            let mut hook = self
                .shared
                .on_drop
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut slot = self.shared.lock();
            slot.dropped = true;
            slot.queue.clear();
            drop(slot);
            if let Some(f) = hook.take() {
                drop(hook);
                f();
            }
        }
    }
}
