//! Encryption at rest for blobs of repositories created with an
//! `encryptionConfiguration` (ECR's `AES256`, or `KMS`, served by berth's own key).
//!
//! Format of an encrypted blob file (`<hex>.enc` beside where the plain blob would be):
//! a 16-byte header (`BRTHENC1` + plaintext length, u64 little-endian), then the
//! plaintext in 64 KiB segments, each sealed with AES-256-GCM (16-byte tag) under the
//! nonce `0u32 ‖ segment index (u64 big-endian)`. The key of a blob is
//! HMAC-SHA256(master key, "berth-blob-key:" ‖ digest): one key per content, so a
//! (key, nonce) pair only ever seals the same plaintext segment, the same content
//! pushed to two encrypted repositories is stored once, and any segment can be read
//! on its own (HTTP `Range`). The master key is 32 random bytes in
//! `DATA_DIR/registry/keys/master` (mode 0600), created on first use.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::names::Digest;

const MAGIC: &[u8; 8] = b"BRTHENC1";
pub const HEADER: u64 = 16;
/// Plaintext bytes per sealed segment.
pub const SEGMENT: u64 = 64 * 1024;
const TAG: u64 = 16;

/// The server's master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Loads the key at `path`, creating it (0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        match fs::read(path) {
            Ok(b) if b.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b);
                return Ok(MasterKey(k));
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("master key {} is not 32 bytes", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k).map_err(io::Error::other)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&k)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(MasterKey(k))
    }

    /// The cipher for one blob.
    pub fn cipher(&self, d: &Digest) -> Aes256Gcm {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("hmac takes any key");
        m.update(b"berth-blob-key:");
        m.update(d.as_str().as_bytes());
        let key = m.finalize().into_bytes();
        Aes256Gcm::new_from_slice(&key).expect("32-byte key")
    }
}

fn nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

fn crypt_err(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Encrypts the plain file `src` into `dst` (created, fsynced).
pub fn encrypt_file(src: &Path, dst: &Path, cipher: &Aes256Gcm) -> io::Result<u64> {
    let mut input = File::open(src)?;
    let plain_len = input.metadata()?.len();
    let mut out = File::create(dst)?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&plain_len.to_le_bytes());
    out.write_all(&header)?;
    let mut buf = vec![0u8; SEGMENT as usize];
    let mut index = 0u64;
    let mut out_buf = Vec::with_capacity(4 << 20);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce(index)), &buf[..filled])
            .map_err(|_| crypt_err("encryption failed"))?;
        out_buf.extend_from_slice(&sealed);
        if out_buf.len() >= 4 << 20 {
            out.write_all(&out_buf)?;
            out_buf.clear();
        }
        index += 1;
        if filled < buf.len() {
            break;
        }
    }
    out.write_all(&out_buf)?;
    out.sync_all()?;
    Ok(plain_len)
}

/// Plaintext length of an encrypted blob file.
pub fn plain_len(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut header = [0u8; HEADER as usize];
    f.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(crypt_err("not an encrypted blob"));
    }
    Ok(u64::from_le_bytes(header[8..].try_into().expect("8 bytes")))
}

/// Random access to the plaintext of an encrypted blob.
pub struct Decryptor {
    file: File,
    cipher: Aes256Gcm,
    len: u64,
}

impl Decryptor {
    pub fn open(path: &Path, cipher: Aes256Gcm) -> io::Result<Self> {
        let len = plain_len(path)?;
        Ok(Decryptor {
            file: File::open(path)?,
            cipher,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Plaintext from `pos` to the end of its segment (at most `max` bytes).
    pub fn read_at(&self, pos: u64, max: u64) -> io::Result<Vec<u8>> {
        if pos >= self.len {
            return Ok(Vec::new());
        }
        let index = pos / SEGMENT;
        let seg_start = index * SEGMENT;
        let seg_plain = (self.len - seg_start).min(SEGMENT);
        let mut sealed = vec![0u8; (seg_plain + TAG) as usize];
        self.file
            .read_exact_at(&mut sealed, HEADER + index * (SEGMENT + TAG))?;
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce(index)), sealed.as_slice())
            .map_err(|_| {
                crypt_err("encrypted blob failed authentication (corrupt or wrong key)")
            })?;
        let from = (pos - seg_start) as usize;
        let to = plain.len().min(from + max as usize);
        Ok(plain[from..to].to_vec())
    }

    /// The whole plaintext.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        while (out.len() as u64) < self.len {
            let chunk = self.read_at(out.len() as u64, SEGMENT)?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encrypted files decrypt to the original at any offset; tampering is detected.
    #[test]
    fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(&dir.path().join("keys/master")).unwrap();
        let again = MasterKey::load_or_create(&dir.path().join("keys/master")).unwrap();
        assert_eq!(key.0, again.0);
        for size in [0usize, 1, 65536, 65537, 200_000] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let d = Digest::sha256_of(&data);
            let (src, dst) = (dir.path().join("p"), dir.path().join("e"));
            fs::write(&src, &data).unwrap();
            assert_eq!(
                encrypt_file(&src, &dst, &key.cipher(&d)).unwrap(),
                size as u64
            );
            let enc = fs::read(&dst).unwrap();
            if size > 16 {
                assert!(
                    !enc.windows(16).any(|w| w == &data[..16]),
                    "plaintext visible"
                );
            }
            let dec = Decryptor::open(&dst, key.cipher(&d)).unwrap();
            assert_eq!(dec.len(), size as u64);
            assert_eq!(dec.read_all().unwrap(), data);
            if size > 70_000 {
                assert_eq!(
                    dec.read_at(65_530, 10).unwrap(),
                    data[65_530..65_536].to_vec()
                );
                assert_eq!(
                    dec.read_at(70_000, 5).unwrap(),
                    data[70_000..70_005].to_vec()
                );
                let mut bad = enc.clone();
                bad[100] ^= 1;
                fs::write(&dst, &bad).unwrap();
                assert!(Decryptor::open(&dst, key.cipher(&d))
                    .unwrap()
                    .read_all()
                    .is_err());
            }
        }
    }
}
