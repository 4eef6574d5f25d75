//! The response body type shared by the registry and the API front door: a whole
//! buffer, or a byte range of a file streamed in 256 KiB frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

const FILE_FRAME: usize = 256 * 1024;

pub enum Body {
    Full(Option<Bytes>),
    File {
        file: tokio::fs::File,
        remaining: u64,
    },
    /// Chunks produced by a reader thread ([`Body::file_range`]).
    Channel {
        rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
        remaining: u64,
    },
    /// Plaintext of an encrypted blob from `pos` to `end` (exclusive), decrypted one
    /// 64 KiB segment per frame (a page-cache read and an AES-GCM open: microseconds).
    Decrypt {
        dec: Box<crate::crypt::Decryptor>,
        pos: u64,
        end: u64,
    },
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(b))
        }
    }
}

/// Bytes per read of the file reader thread.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the socket.
const READ_AHEAD: usize = 4;
/// Buffers one download owns at most: those read ahead, those in hyper's write queue
/// (at most two 256 KiB chunks: it stops taking frames at ~400 KiB) and the one being
/// filled. When all are out, the reader waits for one to come back.
const READ_BUFS: usize = READ_AHEAD + 4;

/// A filled read buffer on its way to the socket; dropping it (hyper has written it)
/// sends the buffer back to its reader, so a download reuses a few buffers instead of
/// allocating (and zeroing, and returning to the kernel) one per 256 KiB.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    home: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The reader may be gone (download over): then the buffer is just freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

impl Body {
    /// Streams `len` bytes of `path` from `start`: a blocking thread reads 256 KiB chunks
    /// ahead of the socket into at most `READ_BUFS` recycled buffers, so disk reads and
    /// network sends overlap. A recently pushed blob is in the page cache (see
    /// [`crate::writer`]); after a restart or eviction it is read from disk.
    pub fn file_range(path: std::path::PathBuf, start: u64, len: u64) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            // Sequential whole-range read: ask the kernel to read it all ahead now
            // (posix_fadvise(2)); a no-op for pages already cached.
            if let Some(n) = std::num::NonZeroU64::new(len) {
                let _ = rustix::fs::fadvise(&f, start, Some(n), rustix::fs::Advice::Sequential);
                let _ = rustix::fs::fadvise(&f, start, Some(n), rustix::fs::Advice::WillNeed);
            }
            if let Err(e) = f.seek(std::io::SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let buf_len = len.min(READ_CHUNK as u64) as usize;
            let (home, returned) = std::sync::mpsc::channel::<Vec<u8>>();
            let mut made = 0;
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = match returned.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < READ_BUFS => {
                        made += 1;
                        vec![0u8; buf_len]
                    }
                    // Every buffer is out; each comes back when hyper has written it
                    // or drops it with the connection. `home` keeps this open.
                    Err(_) => match returned.recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    },
                };
                let mut filled = 0;
                while filled < want {
                    match f.read(&mut buf[filled..want]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob shorter than its recorded size",
                    )));
                    return;
                }
                left -= filled as u64;
                let chunk = Chunk {
                    buf,
                    len: filled,
                    home: home.clone(),
                };
                if tx.blocking_send(Ok(Bytes::from_owner(chunk))).is_err() {
                    return; // the client went away
                }
            }
        });
        Body::Channel { rx, remaining: len }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel { rx, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(b))) => {
                        *remaining = remaining.saturating_sub(b.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob reader stopped early",
                    )))),
                }
            }
            Body::Decrypt { dec, pos, end } => {
                if *pos >= *end {
                    return Poll::Ready(None);
                }
                match dec.read_at(*pos, *end - *pos) {
                    Ok(chunk) if chunk.is_empty() => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "encrypted blob shorter than its header says",
                    )))),
                    Ok(chunk) => {
                        *pos += chunk.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
                    }
                    Err(e) => Poll::Ready(Some(Err(e))),
                }
            }
            Body::File { file, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(FILE_FRAME as u64) as usize;
                let mut storage = vec![0u8; want];
                let mut buf = ReadBuf::new(&mut storage);
                match Pin::new(file).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n == 0 {
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "blob shorter than its recorded size",
                            ))));
                        }
                        *remaining -= n as u64;
                        storage.truncate(n);
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from(storage)))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::File { remaining, .. } => *remaining == 0,
            Body::Decrypt { pos, end, .. } => pos >= end,
            Body::Channel { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            Body::File { remaining, .. } => SizeHint::with_exact(*remaining),
            Body::Decrypt { pos, end, .. } => SizeHint::with_exact(end.saturating_sub(*pos)),
            Body::Channel { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
