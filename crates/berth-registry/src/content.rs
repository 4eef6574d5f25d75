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

use crate::crypt::{self, Decryptor, MasterKey};
use crate::names::Digest;

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    key: MasterKey,
}

/// Where a blob's bytes come from.
pub enum BlobSource {
    Plain { path: PathBuf, size: u64 },
    Encrypted(Box<Decryptor>),
}

impl BlobSource {
    pub fn size(&self) -> u64 {
        match self {
            BlobSource::Plain { size, .. } => *size,
            BlobSource::Encrypted(d) => d.len(),
        }
    }
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
        let key = MasterKey::load_or_create(&root.join("keys").join("master"))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
            key,
        })
    }

    /// Path of the encrypted form of blob `d`.
    pub fn enc_path(&self, d: &Digest) -> PathBuf {
        let mut p = self.blob_path(d).into_os_string();
        p.push(".enc");
        PathBuf::from(p)
    }

    /// Opens a blob for reading, plain or encrypted.
    pub fn source(&self, d: &Digest) -> Option<BlobSource> {
        let enc = self.enc_path(d);
        if enc.exists() {
            return Decryptor::open(&enc, self.key.cipher(d))
                .ok()
                .map(|d| BlobSource::Encrypted(Box::new(d)));
        }
        let path = self.blob_path(d);
        let size = fs::metadata(&path).ok()?.len();
        Some(BlobSource::Plain { path, size })
    }

    /// Makes sure blob `d` is stored encrypted (mounting into an encrypted repository).
    pub fn ensure_encrypted(&self, d: &Digest) -> io::Result<()> {
        let plain = self.blob_path(d);
        if self.enc_path(d).exists() || !plain.exists() {
            return Ok(());
        }
        self.encrypt_into_place(&plain, d)?;
        Ok(())
    }

    fn encrypt_into_place(&self, plain: &Path, d: &Digest) -> io::Result<u64> {
        let dst = self.enc_path(d);
        let dir = dst.parent().expect("blob path has a parent").to_path_buf();
        fs::create_dir_all(&dir)?;
        let tmp = self
            .root
            .join("uploads")
            .join(format!("{}.enc.tmp", d.hex()));
        let len = crypt::encrypt_file(plain, &tmp, &self.key.cipher(d))?;
        fs::rename(&tmp, &dst)?;
        // The plain copy goes only after the encrypted one is durable.
        match fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&dir)?;
        Ok(len)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm())
            .join(&hex[..2])
            .join(hex)
    }

    /// Size of a committed blob (its plaintext), if present.
    pub fn stat(&self, d: &Digest) -> Option<u64> {
        match crypt::plain_len(&self.enc_path(d)) {
            Ok(n) => Some(n),
            Err(_) => fs::metadata(self.blob_path(d)).ok().map(|m| m.len()),
        }
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
    /// hash to `d`; `encrypt` stores it encrypted. Durable when this returns.
    pub fn commit_upload(&self, id: &str, d: &Digest, encrypt: bool) -> io::Result<u64> {
        let src = self
            .upload_path(id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if encrypt || self.enc_path(d).exists() {
            let len = if self.enc_path(d).exists() {
                fs::metadata(&src)?.len()
            } else {
                self.encrypt_into_place(&src, d)?
            };
            fs::remove_file(&src)?;
            return Ok(len);
        }
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
    pub fn put_bytes(&self, bytes: &[u8], encrypt: bool) -> io::Result<Digest> {
        let d = Digest::sha256_of(bytes);
        if self.stat(&d) == Some(bytes.len() as u64) {
            if encrypt {
                self.ensure_encrypted(&d)?;
            }
            return Ok(d);
        }
        let id = self.new_upload()?;
        let path = self.root.join("uploads").join(&id);
        let mut f = File::create(&path)?;
        f.write_all(bytes)?;
        drop(f);
        self.commit_upload(&id, &d, encrypt)?;
        Ok(d)
    }

    pub fn read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        match self.source(d) {
            Some(BlobSource::Encrypted(dec)) => dec.read_all(),
            Some(BlobSource::Plain { path, .. }) => fs::read(path),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    pub fn delete(&self, d: &Digest) -> io::Result<()> {
        for p in [self.blob_path(d), self.enc_path(d)] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
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
                    let name = name.strip_suffix(".enc").unwrap_or(&name);
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
        assert_eq!(cs.commit_upload(&id, &d, false).unwrap(), 5);
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        assert_eq!(cs.upload_len(&id), None);
        assert_eq!(cs.list().unwrap().len(), 1);
    }

    /// Encrypted blobs read back as their plaintext; the file on disk does not hold it.
    #[test]
    fn encrypted_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = b"secret layer bytes, secret layer bytes".to_vec();
        let d = cs.put_bytes(&data, true).unwrap();
        assert_eq!(cs.read(&d).unwrap(), data);
        assert_eq!(cs.stat(&d), Some(data.len() as u64));
        assert!(!cs.blob_path(&d).exists());
        let raw = fs::read(cs.enc_path(&d)).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(cs.list().unwrap().len(), 1);
        // a plain blob converted by a mount into an encrypted repository
        let p = cs.put_bytes(b"plain", false).unwrap();
        assert!(cs.blob_path(&p).exists());
        cs.ensure_encrypted(&p).unwrap();
        assert!(!cs.blob_path(&p).exists());
        assert_eq!(cs.read(&p).unwrap(), b"plain");
        cs.delete(&p).unwrap();
        assert!(cs.source(&p).is_none());
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
