//! The upload pipeline: the request task receives and hashes, a blocking thread writes,
//! so network, hashing and disk overlap ([`Pipeline`]).
//!
//! Bytes are written through the page cache, and every [`WRITE_BEHIND`] bytes the range
//! just written is handed to the kernel for write-back (sync_file_range(2),
//! `SYNC_FILE_RANGE_WRITE`, which starts it and does not wait). So the disk works while
//! the bytes still arrive, the fsync at commit ([`crate::content`]) finds little left to
//! write, and a blob just pushed is still in the page cache when it is pulled.
//! (`O_DIRECT` writes, used before, bypass the cache: the first pull of a fresh 200 MB
//! blob read it back from disk, at 0.38× the speed of docker-registry serving it from
//! its cache; see docs/registry.md.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::sys;

/// Bytes written between two write-back requests.
pub const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// Bytes per write(2). Not more: on the benchmark machine (Linux 6.18, ext4) the
/// kernel's copy into the page cache (`perf`: copy_folio_from_iter_atomic) grew with
/// the write size, at times to most of an upload's CPU: 200 MB uploads at 350–380 MB/s
/// with 256 KiB and 1 MiB writes against 570–630 MB/s with 32 KiB ones, same runs.
pub const WRITE_PIECE: usize = 32 * 1024;

/// Writes one request's worth of upload bytes, starting at `offset`.
pub struct UploadWriter {
    file: File,
    offset: u64,
    /// Start of the bytes not yet handed to write-back.
    queued: u64,
    /// Cleared when the filesystem does not do sync_file_range; fsync still does.
    write_behind: bool,
}

impl UploadWriter {
    pub fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(UploadWriter {
            file,
            offset,
            queued: offset,
            write_behind: true,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(WRITE_PIECE) {
            self.file.write_all_at(piece, self.offset)?;
            self.offset += piece.len() as u64;
        }
        if self.offset - self.queued >= WRITE_BEHIND {
            self.write_back()?;
        }
        Ok(())
    }

    /// Starts write-back of `queued..offset`.
    fn write_back(&mut self) -> io::Result<()> {
        if self.write_behind {
            let len = self.offset - self.queued;
            let flags = libc::SYNC_FILE_RANGE_WRITE;
            match sys::sync_file_range(self.file.as_fd(), self.queued, len, flags) {
                Ok(()) => {}
                // Not supported here: the fsync at commit does all the writing.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE)
                    ) =>
                {
                    self.write_behind = false
                }
                // Without SYNC_FILE_RANGE_WAIT_* an I/O error stays pending for the fsync
                // at commit too (errseq.c); failing now just fails sooner.
                Err(e) => return Err(e),
            }
        }
        self.queued = self.offset;
        Ok(())
    }

    /// The upload's new length. What is still dirty is written by the fsync at commit.
    pub fn finish(self) -> u64 {
        self.offset
    }
}

/// Bytes per block handed to the writer (fewer hand-offs and thread wake-ups: 1 MiB
/// blocks uploaded about 30% faster than 256 KiB ones side by side on the loaded
/// benchmark machine).
const BLOCK: usize = 1024 * 1024;
/// Blocks one upload owns at most (in the channel, being written, being filled). When
/// all are out, receiving waits for one to come back.
const BLOCKS: usize = 8;

/// A filled block on its way to the writer; when the writer has dropped it, the buffer
/// goes back to the pipeline for the next bytes.
struct Block {
    buf: Vec<u8>,
    len: usize,
    home: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // The pipeline may be gone (upload over): then the buffer is just freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

/// Hashes received bytes in the request task and writes them on a blocking thread,
/// fed 1 MiB blocks.
///
/// Each network chunk is hashed and copied into one of a few recycled blocks while it
/// is in the CPU cache, then dropped at once: hyper can then reuse its read buffer in
/// place instead of allocating a fresh ~400 KiB one per read while earlier chunks wait
/// in a queue (fresh memory means page faults: with [`crate::sys::tune_allocator`]
/// returning freed buffers to the kernel, those were a sixth of an upload's CPU in
/// `perf`). Hashing here costs the task about 0.6 ms per MiB (SHA-NI).
pub struct Pipeline {
    hasher: Sha256,
    to_writer: tokio::sync::mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<io::Result<u64>>,
    home: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    returned: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    made: usize,
    /// The block being filled (empty when none) and how much of it is.
    cur: Vec<u8>,
    cur_len: usize,
}

impl Pipeline {
    /// Starts the writer thread; `hasher` holds the hash of the upload's bytes so far.
    pub fn start(writer: UploadWriter, hasher: Sha256) -> Self {
        let (to_writer, mut write_rx) = tokio::sync::mpsc::channel::<Bytes>(BLOCKS);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            while let Some(block) = write_rx.blocking_recv() {
                w.write(&block)?;
            }
            Ok(w.finish())
        });
        let (home, returned) = tokio::sync::mpsc::unbounded_channel();
        Pipeline {
            hasher,
            to_writer,
            writer,
            home,
            returned,
            made: 0,
            cur: Vec::new(),
            cur_len: 0,
        }
    }

    /// Takes received bytes; an error means the writer stopped (see `finish`).
    pub async fn send(&mut self, mut data: &[u8]) -> Result<(), ()> {
        while !data.is_empty() {
            if self.cur.is_empty() {
                self.cur = self.free_block().await;
            }
            let n = (BLOCK - self.cur_len).min(data.len());
            self.hasher.update(&data[..n]);
            self.cur[self.cur_len..self.cur_len + n].copy_from_slice(&data[..n]);
            self.cur_len += n;
            data = &data[n..];
            if self.cur_len == BLOCK {
                self.hand_over().await?;
            }
        }
        Ok(())
    }

    async fn free_block(&mut self) -> Vec<u8> {
        if let Ok(b) = self.returned.try_recv() {
            return b;
        }
        if self.made < BLOCKS {
            self.made += 1;
            return vec![0u8; BLOCK];
        }
        // Every block is out; each comes back once written (or dropped with a stopped
        // writer's queue). `self.home` keeps the channel open.
        self.returned
            .recv()
            .await
            .unwrap_or_else(|| vec![0u8; BLOCK])
    }

    /// Sends the block being filled to the writer.
    async fn hand_over(&mut self) -> Result<(), ()> {
        if self.cur_len == 0 {
            return Ok(());
        }
        let block = Bytes::from_owner(Block {
            buf: std::mem::take(&mut self.cur),
            len: std::mem::take(&mut self.cur_len),
            home: self.home.clone(),
        });
        self.to_writer.send(block).await.map_err(|_| ())
    }

    /// Hands over the last bytes and waits for the writer: the running hash and the
    /// upload's new length. The hash covers exactly the bytes the writer was given.
    pub async fn finish(mut self) -> io::Result<(Sha256, u64)> {
        let _ = self.hand_over().await; // a failed writer is reported just below
        drop(self.to_writer);
        let len = self
            .writer
            .await
            .map_err(|e| io::Error::other(format!("upload writer stopped: {e}")))??;
        Ok((self.hasher, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Whatever the chunking, and across write-back requests, the file equals the plain
    /// concatenation, also when a second request continues at an unaligned offset.
    #[test]
    fn writes_match_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        File::create(&path).unwrap();
        let data = sample(WRITE_BEHIND as usize * 2 + 12345);
        let mut w = UploadWriter::open(&path, 0).unwrap();
        for chunk in data.chunks(70_001) {
            w.write(chunk).unwrap();
        }
        let len = w.finish();
        assert_eq!(len, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let more = b"tail bytes".to_vec();
        let mut w = UploadWriter::open(&path, len).unwrap();
        w.write(&more).unwrap();
        assert_eq!(w.finish(), len + more.len() as u64);
        let mut all = data.clone();
        all.extend_from_slice(&more);
        assert_eq!(std::fs::read(&path).unwrap(), all);
    }

    /// The pipeline's hash and length are those of everything sent, continuing the
    /// hash it was started with.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_hashes_and_writes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let head = b"earlier request".to_vec();
        std::fs::write(&path, &head).unwrap();
        let mut h = Sha256::new();
        h.update(&head);
        let data = sample(BLOCK * BLOCKS * 2 + 999);
        let writer = UploadWriter::open(&path, head.len() as u64).unwrap();
        let mut p = Pipeline::start(writer, h);
        // more bytes than all blocks hold, so blocks must come back to be reused
        for chunk in data.chunks(65_521) {
            p.send(chunk).await.unwrap();
        }
        let (h, len) = p.finish().await.unwrap();
        let mut all = head.clone();
        all.extend_from_slice(&data);
        assert_eq!(len, all.len() as u64);
        assert_eq!(h.finalize().to_vec(), Sha256::digest(&all).to_vec());
        assert_eq!(std::fs::read(&path).unwrap(), all);
    }
}
