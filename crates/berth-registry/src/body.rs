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

impl Body {
    /// Streams `len` bytes of `path` from `start`: a blocking thread reads 256 KiB chunks
    /// ahead of the socket, so disk reads and network sends overlap (a cold blob —
    /// written with O_DIRECT, so not in the page cache — reads at disk speed).
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
            // (posix_fadvise(2)); a blob written with O_DIRECT is not in the page cache.
            if let Some(n) = std::num::NonZeroU64::new(len) {
                let _ = rustix::fs::fadvise(&f, start, Some(n), rustix::fs::Advice::Sequential);
                let _ = rustix::fs::fadvise(&f, start, Some(n), rustix::fs::Advice::WillNeed);
            }
            if let Err(e) = f.seek(std::io::SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match f.read(&mut buf[filled..]) {
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
                buf.truncate(filled);
                left -= filled as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
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
