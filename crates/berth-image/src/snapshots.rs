//! Unpacked layers, one directory per diff_id: each unpacked once, verified, then
//! shared by every container as a read-only overlayfs lower directory.
//!
//! ```text
//! DIR/<hex>                  a verified layer (hex of its diff_id)
//! DIR/<hex>.tmp-<pid>-<rnd>  an unpack in progress (or left by a crash)
//! ```
//! A layer is unpacked into a temporary directory, its diff_id checked, the whole
//! filesystem synced, and only then renamed to its name: a directory named by a
//! diff_id always holds exactly that layer. Nothing writes into a snapshot after the
//! rename; overlayfs only reads lower directories, so they are read-only in use.

use std::collections::HashMap;
use std::error::Error;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::digest::sha256_hex;
use crate::limits::Limits;
use crate::unpack::{unpack_layer, UnpackError};

/// Marks a temporary unpack directory.
const TMP_MARK: &str = ".tmp-";

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The diff_id is not `sha256:<64 lowercase hex>`.
    #[error("invalid diff_id {0:?}: expected sha256:<64 lowercase hex>")]
    BadDiffId(String),
    /// The caller's `open_layer` failed.
    #[error("opening layer {diff_id}")]
    Open {
        diff_id: String,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// Unpacking failed; the temporary directory was removed.
    #[error("unpacking layer {diff_id}")]
    Unpack {
        diff_id: String,
        #[source]
        source: UnpackError,
    },
    /// The layer unpacked to a different diff_id; the temporary directory was removed.
    #[error(
        "layer content does not match diff_id {expected}: the uncompressed stream is {actual}"
    )]
    DiffIdMismatch { expected: String, actual: String },
    /// A filesystem step on the snapshot directory failed.
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// The snapshot directory.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    limits: Limits,
}

/// One lock per snapshot path for this process, so concurrent `ensure`s of one layer
/// unpack it once; other processes are handled by the rename losing gracefully.
fn lock_for(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // Drop locks nobody holds, so the map stays as small as the work in flight.
    map.retain(|_, l| Arc::strong_count(l) > 1);
    map.entry(path.to_path_buf()).or_default().clone()
}

impl Snapshots {
    /// Opens (creating if needed) the snapshot directory `dir` and removes temporary
    /// directories left by other (dead) processes.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Snapshots, SnapshotError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("creating snapshot directory", &dir))?;
        let snapshots = Snapshots {
            dir,
            limits: Limits::default(),
        };
        snapshots.remove_stale()?;
        Ok(snapshots)
    }

    /// The same directory with other unpack limits.
    pub fn with_limits(mut self, limits: Limits) -> Snapshots {
        self.limits = limits;
        self
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, diff_id: &str) -> Result<PathBuf, SnapshotError> {
        let hex =
            sha256_hex(diff_id).ok_or_else(|| SnapshotError::BadDiffId(diff_id.to_string()))?;
        Ok(self.dir.join(hex))
    }

    /// The directory of layer `diff_id`, if it is unpacked.
    pub fn get(&self, diff_id: &str) -> Result<Option<PathBuf>, SnapshotError> {
        let path = self.path_of(diff_id)?;
        Ok(is_dir(&path).then_some(path))
    }

    /// The directory of layer `diff_id`, unpacking it from `open_layer()` first if it
    /// is not there yet. `open_layer` is not called when the layer is already present.
    pub fn ensure<E>(
        &self,
        diff_id: &str,
        open_layer: impl FnOnce() -> Result<Box<dyn Read>, E>,
    ) -> Result<PathBuf, SnapshotError>
    where
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let path = self.path_of(diff_id)?;
        if is_dir(&path) {
            return Ok(path);
        }
        let lock = lock_for(&path);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        if is_dir(&path) {
            return Ok(path); // another thread finished it while we waited
        }
        let reader = open_layer().map_err(|e| SnapshotError::Open {
            diff_id: diff_id.to_string(),
            source: e.into(),
        })?;
        let tmp = self.tmp_path(&path)?;
        fs::create_dir(&tmp)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
            .map_err(io_err("creating", &tmp))?;
        let result = self.fill(reader, diff_id, &tmp);
        if let Err(e) = result {
            remove_quietly(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &path) {
            Ok(()) => {}
            // Another process renamed its copy first: same diff_id, same content.
            Err(_) if is_dir(&path) => remove_quietly(&tmp),
            Err(e) => {
                remove_quietly(&tmp);
                return Err(io_err("renaming into place", &path)(e));
            }
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &self.dir))?;
        tracing::info!(diff_id, path = %path.display(), "layer unpacked");
        Ok(path)
    }

    fn fill(&self, reader: Box<dyn Read>, diff_id: &str, tmp: &Path) -> Result<(), SnapshotError> {
        let stats =
            unpack_layer(reader, tmp, &self.limits).map_err(|source| SnapshotError::Unpack {
                diff_id: diff_id.to_string(),
                source,
            })?;
        if stats.diff_id != diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                expected: diff_id.to_string(),
                actual: stats.diff_id,
            });
        }
        // One syncfs(2) instead of an fsync per file: after the rename, a crash must
        // not leave a snapshot name over half-written files.
        let dir = fs::File::open(tmp).map_err(io_err("opening", tmp))?;
        rustix::fs::syncfs(&dir).map_err(|e| io_err("syncing", tmp)(e.into()))?;
        Ok(())
    }

    fn tmp_path(&self, path: &Path) -> Result<PathBuf, SnapshotError> {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd)
            .map_err(|e| io_err("choosing a temporary name for", path)(io::Error::other(e)))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        Ok(self.dir.join(format!(
            "{name}{TMP_MARK}{}-{}",
            std::process::id(),
            hex::encode(rnd)
        )))
    }

    /// The diff_ids of all unpacked layers, sorted.
    pub fn list(&self) -> Result<Vec<String>, SnapshotError> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let ent = ent.map_err(io_err("listing", &self.dir))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let diff_id = format!("sha256:{name}");
            if sha256_hex(&diff_id).is_some() && is_dir(&ent.path()) {
                out.push(diff_id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes layer `diff_id`; `false` if it was not there. The caller makes sure no
    /// container still uses it. It is renamed away first, so a half-removed tree is
    /// never visible under the layer's name (and `open` finishes it after a crash).
    pub fn remove(&self, diff_id: &str) -> Result<bool, SnapshotError> {
        let path = self.path_of(diff_id)?;
        let lock = lock_for(&path);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        if !is_dir(&path) {
            return Ok(false);
        }
        let doomed = self.tmp_path(&path)?;
        fs::rename(&path, &doomed).map_err(io_err("renaming away", &path))?;
        // std's remove_dir_all works relative to directory handles and does not
        // follow symlinks (CVE-2022-21658), which matters for a layer's own tree.
        fs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))?;
        Ok(true)
    }

    /// Removes `*.tmp-<pid>-*` directories whose pid is not ours: they were left by
    /// a process that crashed mid-unpack (or mid-remove).
    fn remove_stale(&self) -> Result<(), SnapshotError> {
        let ours = std::process::id().to_string();
        for ent in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let ent = ent.map_err(io_err("listing", &self.dir))?;
            let name = ent.file_name();
            let Some((_, rest)) = name.to_str().and_then(|n| n.split_once(TMP_MARK)) else {
                continue;
            };
            if rest.split('-').next() == Some(ours.as_str()) {
                continue; // another Snapshots in this process may be using it
            }
            tracing::info!(path = %ent.path().display(), "removing a stale layer unpack");
            fs::remove_dir_all(ent.path()).map_err(io_err("removing stale", &ent.path()))?;
        }
        Ok(())
    }
}

/// A real directory (not a symlink to one).
fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "could not remove a temporary layer directory");
    }
}

#[cfg(test)]
mod tests;
