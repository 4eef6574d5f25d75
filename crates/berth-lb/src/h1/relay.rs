//! Message bodies between the two connections: [`Body`] (pure) tells how many of
//! the bytes read belong to the body, whatever its framing — for chunked bodies
//! by following the chunk framing (RFC 9112 §7.1) without keeping any of it —
//! and [`copy`] relays the rest of a body, verbatim or (for HTTP/1.0 clients)
//! with the chunk framing taken off.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::parse::Framing;

/// How much is read at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// Why a body could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("read body")]
    Read(#[source] std::io::Error),
    #[error("write body")]
    Write(#[source] std::io::Error),
    #[error("body ended early (connection closed)")]
    Truncated,
    #[error("chunked body: {0}")]
    Framing(#[from] ChunkError),
}

/// A chunked body that breaks the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("bad chunk size")]
    Size,
    #[error("chunk size over 64 bits")]
    SizeOverflow,
    #[error("expected CRLF")]
    LineEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Hex digits of a chunk size.
    Size,
    /// A chunk extension, up to CR.
    Ext,
    /// The LF after a chunk-size line.
    SizeLf,
    /// Chunk data.
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or the final empty line.
    LineStart,
    /// Inside a trailer field line, up to LF.
    Trailer,
    /// The LF of the final empty line.
    FinalLf,
    Done,
}

/// Follows a chunked body's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    step: Step,
    /// Size digits so far (in `Size`), data left (in `Data`).
    size: u64,
    digits: u8,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            step: Step::Size,
            size: 0,
            digits: 0,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Reads on through `input`; returns how many of its bytes belong to the body
    /// (all of them unless the body ends inside), calling `data` with the ranges
    /// that are chunk data.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.step {
                Step::Size => match hex(b) {
                    Some(d) => {
                        if self.digits == 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = self.size << 4 | d;
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err(ChunkError::Size),
                    None => {
                        self.step = match b {
                            b';' | b' ' | b'\t' => Step::Ext,
                            b'\r' => Step::SizeLf,
                            _ => return Err(ChunkError::Size),
                        }
                    }
                },
                Step::Ext => {
                    if b == b'\r' {
                        self.step = Step::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                }
                Step::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.step = if self.size == 0 {
                        Step::LineStart
                    } else {
                        Step::Data
                    };
                }
                Step::Data => {
                    let n = self.size.min((input.len() - i) as u64) as usize;
                    data(i..i + n);
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.step = Step::DataCr;
                    }
                    i += n;
                    continue;
                }
                Step::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.step = Step::DataLf;
                }
                Step::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    *self = Chunked::default();
                }
                Step::LineStart => {
                    self.step = match b {
                        b'\r' => Step::FinalLf,
                        b'\n' => return Err(ChunkError::LineEnd),
                        _ => Step::Trailer,
                    }
                }
                Step::Trailer => {
                    if b == b'\n' {
                        self.step = Step::LineStart;
                    }
                }
                Step::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.step = Step::Done;
                    return Ok(i + 1);
                }
                Step::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Where a body stands: how much is left, by its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        match framing {
            Framing::Empty | Framing::Length(0) => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunked::default()),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }

    /// How many bytes at the start of `input` belong to the body; `data` gets the
    /// ranges that are payload (all of them, but for chunk framing).
    pub fn advance(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let used = match self {
            Body::Done => 0,
            Body::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                data(0..n);
                n
            }
            Body::UntilClose => {
                data(0..input.len());
                input.len()
            }
            Body::Chunked(c) => c.feed(input, data)?,
        };
        match self {
            Body::Length(0) => *self = Body::Done,
            Body::Chunked(c) if c.is_done() => *self = Body::Done,
            _ => {}
        }
        Ok(used)
    }

    /// The sender closed: the end of a body delimited by the close, else early.
    pub fn at_eof(&mut self) -> Result<(), RelayError> {
        match self {
            Body::Done => Ok(()),
            Body::UntilClose => {
                *self = Body::Done;
                Ok(())
            }
            _ => Err(RelayError::Truncated),
        }
    }
}

/// Takes the body's bytes from the front of `buf` and appends them to `out`
/// (`dechunk`: their payload only). Returns how many bytes of `buf` it took.
pub fn take_buffered(
    body: &mut Body,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    dechunk: bool,
) -> Result<usize, ChunkError> {
    let used = if dechunk {
        body.advance(buf, |r| out.extend_from_slice(&buf[r]))?
    } else {
        let used = body.advance(buf, |_| {})?;
        out.extend_from_slice(&buf[..used]);
        used
    };
    buf.advance(used);
    Ok(used)
}

/// Relays the rest of `body` from `src` to `dst`. `buf` must hold no unused body
/// bytes; what `src` sends after the body stays in it. `scratch` is the output
/// buffer when de-chunking.
pub async fn copy<R, W>(
    body: &mut Body,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    dechunk: bool,
    scratch: &mut Vec<u8>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while !body.is_done() {
        debug_assert!(buf.is_empty());
        buf.reserve(READ_CHUNK);
        if src.read_buf(buf).await.map_err(RelayError::Read)? == 0 {
            body.at_eof()?;
            break;
        }
        if dechunk {
            scratch.clear();
            take_buffered(body, buf, scratch, true)?;
            dst.write_all(scratch).await.map_err(RelayError::Write)?;
        } else {
            let used = body.advance(buf, |_| {})?;
            dst.write_all(&buf[..used])
                .await
                .map_err(RelayError::Write)?;
            buf.advance(used);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
