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

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            Body::File { remaining, .. } => SizeHint::with_exact(*remaining),
            Body::Decrypt { pos, end, .. } => SizeHint::with_exact(end.saturating_sub(*pos)),
        }
    }
}
