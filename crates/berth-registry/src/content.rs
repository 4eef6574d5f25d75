//! The content store: content-addressed blobs on the filesystem.
//!
//! Layout under the store's root:
//! - `blobs/<alg>/<first two hex>/<hex>`: committed blobs, immutable;
//! - `uploads/<id>`: bytes of an upload in progress (id: 32 lowercase hex).
//!
//! A blob becomes visible only by `rename(2)` of a fully written, `fsync`ed and
//! digest-verified upload file, followed by an `fsync` of the directory, so a crash at
//! any point leaves either the whole blob or nothing. Two uploads of the same content
//! race harmlessly: both verify the same bytes and the second rename replaces the file
//! with identical content. Paths are only ever built from validated digests and
//! generated upload ids, never from client strings.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::names::Digest;

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
}

/// Is `id` one of ours (32 lowercase hex)? Anything else never reaches a path.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ContentStore {
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("blobs/sha512"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm())
            .join(&hex[..2])
            .join(hex)
    }

    /// Size of a committed blob, if present.
    pub fn stat(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    pub fn upload_path(&self, id: &str) -> Option<PathBuf> {
        valid_upload_id(id).then(|| self.root.join("uploads").join(id))
    }

    /// Creates an empty upload file and returns its id.
    pub fn new_upload(&self) -> io::Result<String> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).map_err(io::Error::other)?;
        let id = hex::encode(raw);
        File::create(self.root.join("uploads").join(&id))?;
        Ok(id)
    }

    /// Current length of an upload, or None if there is no such upload.
    pub fn upload_len(&self, id: &str) -> Option<u64> {
        self.upload_path(id)
            .and_then(|p| fs::metadata(p).ok())
            .map(|m| m.len())
    }

    pub fn cancel_upload(&self, id: &str) {
        if let Some(p) = self.upload_path(id) {
            let _ = fs::remove_file(p);
        }
    }

    /// Hashes an upload file from the start (used when the running hash was lost,
    /// e.g. after a restart in the middle of a chunked upload).
    pub fn hash_upload(&self, id: &str) -> io::Result<(Sha256, u64)> {
        let path = self
            .upload_path(id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut f = File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
        Ok((h, n_total))
    }

    /// Makes an upload visible as blob `d`, whose bytes were already verified to
    /// hash to `d`. Durable when this returns.
    pub fn commit_upload(&self, id: &str, d: &Digest) -> io::Result<u64> {
        let src = self
            .upload_path(id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let f = File::open(&src)?;
        f.sync_all()?;
        let len = f.metadata()?.len();
        let dst = self.blob_path(d);
        let dir = dst.parent().expect("blob path has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(&src, &dst)?;
        sync_dir(dir)?;
        Ok(len)
    }

    /// Stores small content (manifests) directly: temp file, fsync, rename.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        let d = Digest::sha256_of(bytes);
        if self.stat(&d) == Some(bytes.len() as u64) {
            return Ok(d);
        }
        let id = self.new_upload()?;
        let path = self.root.join("uploads").join(&id);
        let mut f = File::create(&path)?;
        f.write_all(bytes)?;
        drop(f);
        self.commit_upload(&id, &d)?;
        Ok(d)
    }

    pub fn read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.blob_path(d))
    }

    pub fn delete(&self, d: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every committed blob with its modification time (seconds since the epoch).
    pub fn list(&self) -> io::Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let base = self.root.join("blobs").join(alg);
            for shard in fs::read_dir(&base)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for blob in fs::read_dir(shard.path())? {
                    let blob = blob?;
                    let name = blob.file_name().to_string_lossy().to_string();
                    if let Ok(d) = Digest::parse(&format!("{alg}:{name}")) {
                        let mtime = blob
                            .metadata()?
                            .modified()?
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        out.push((d, mtime));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Upload files with their modification times, for expiring abandoned uploads.
    pub fn list_uploads(&self) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("uploads"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let mtime = e
                .metadata()?
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            out.push((name, mtime));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed upload is readable under its digest and the upload file is gone.
    #[test]
    fn commit_moves_upload_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let id = cs.new_upload().unwrap();
        fs::write(cs.upload_path(&id).unwrap(), b"hello").unwrap();
        let (h, n) = cs.hash_upload(&id).unwrap();
        assert_eq!(n, 5);
        let d = Digest::parse(&format!("sha256:{}", hex::encode(h.finalize()))).unwrap();
        assert_eq!(cs.commit_upload(&id, &d).unwrap(), 5);
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        assert_eq!(cs.upload_len(&id), None);
        assert_eq!(cs.list().unwrap().len(), 1);
    }

    /// Upload ids that are not ours never become paths.
    #[test]
    fn upload_ids_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        assert!(cs.upload_path("../../etc/passwd").is_none());
        assert!(cs.upload_path(&"A".repeat(32)).is_none());
        assert!(cs.upload_path(&"a".repeat(32)).is_some());
    }
}
