//! The upload writer: hashes and writes an upload's bytes on a blocking thread while
//! the request task keeps receiving, so network, hashing and disk overlap.
//!
//! Full 4 MiB blocks at block-aligned file offsets are written with `O_DIRECT`
//! (open(2): the page-cache copy is what limits buffered writes on small machines, and
//! the blob is `fsync`ed before it becomes visible anyway); the unaligned tail, and any
//! upload on a filesystem that refuses `O_DIRECT` (tmpfs), goes through an ordinary
//! buffered descriptor. Both land in the same file, so the result is byte-identical.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Size of one direct write; a multiple of every block size in use.
const BLOCK: usize = 4 * 1024 * 1024;
/// Direct I/O needs buffers and offsets aligned to the logical block size.
const ALIGN: usize = 4096;

/// A 4 MiB buffer whose start is 4096-aligned, carved out of a larger Vec (safe code:
/// `align_offset` finds the aligned start).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len: 0 }
    }
    fn space(&self) -> usize {
        BLOCK - self.len
    }
    fn push(&mut self, data: &[u8]) {
        let s = self.start + self.len;
        self.raw[s..s + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// Writes one request's worth of upload bytes, starting at `offset`.
pub struct UploadWriter {
    direct: Option<File>,
    buffered: File,
    offset: u64,
    buf: AlignedBuf,
    hasher: Sha256,
}

impl UploadWriter {
    pub fn open(path: &Path, offset: u64, hasher: Sha256) -> io::Result<Self> {
        let buffered = OpenOptions::new().write(true).open(path)?;
        let direct = if offset.is_multiple_of(ALIGN as u64) {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        Ok(UploadWriter {
            direct,
            buffered,
            offset,
            buf: AlignedBuf::new(),
            hasher,
        })
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        while !data.is_empty() {
            let n = data.len().min(self.buf.space());
            self.buf.push(&data[..n]);
            data = &data[n..];
            if self.buf.space() == 0 {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        let block = self.buf.filled();
        let mut written = false;
        if let Some(d) = &self.direct {
            match d.write_all_at(block, self.offset) {
                Ok(()) => written = true,
                // EINVAL: this filesystem does not do direct I/O after all.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        if !written {
            self.buffered.write_all_at(block, self.offset)?;
        }
        self.offset += block.len() as u64;
        self.buf.len = 0;
        Ok(())
    }

    /// Writes the tail and returns the running hash and the upload's new length.
    pub fn finish(mut self) -> io::Result<(Sha256, u64)> {
        let tail = self.buf.filled();
        if !tail.is_empty() {
            self.buffered.write_all_at(tail, self.offset)?;
            self.offset += tail.len() as u64;
        }
        Ok((self.hasher, self.offset))
    }
}

/// Runs a writer on a blocking thread, fed chunk by chunk over a channel.
pub struct Pipeline {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<io::Result<(Sha256, u64)>>,
}

/// Chunks in flight between the receiving task and the writer thread.
const PIPELINE_DEPTH: usize = 64;

impl Pipeline {
    pub fn start(writer: UploadWriter) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            while let Some(chunk) = rx.blocking_recv() {
                w.write(&chunk)?;
            }
            w.finish()
        });
        Pipeline { tx, task }
    }

    /// Hands a chunk to the writer; an error means the writer stopped (see `finish`).
    pub async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    pub async fn finish(self) -> io::Result<(Sha256, u64)> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| io::Error::other(format!("upload writer stopped: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the chunking, the file and hash equal the plain concatenation.
    #[test]
    fn writes_match_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        File::create(&path).unwrap();
        let data: Vec<u8> = (0..(BLOCK * 2 + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut w = UploadWriter::open(&path, 0, Sha256::new()).unwrap();
        for chunk in data.chunks(70_001) {
            w.write(chunk).unwrap();
        }
        let (h, len) = w.finish().unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(h.finalize().to_vec(), Sha256::digest(&data).to_vec());
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // a second request continuing at an unaligned offset
        let more = b"tail bytes".to_vec();
        let mut h2 = Sha256::new();
        h2.update(&data);
        let mut w = UploadWriter::open(&path, len, h2).unwrap();
        w.write(&more).unwrap();
        let (_, len2) = w.finish().unwrap();
        assert_eq!(len2, len + more.len() as u64);
        let mut all = data.clone();
        all.extend_from_slice(&more);
        assert_eq!(std::fs::read(&path).unwrap(), all);
    }
}
