//! The layer byte stream: compression sniffed from magic bytes, the uncompressed
//! stream hashed (the layer's diff_id) and both ends held to a byte bound.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::limits::Limit;

/// gzip member magic (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd frame magic (RFC 8878 §3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob was compressed, as detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

/// Reads up to 4 bytes from `r` and says which compression they announce.
/// The bytes read are returned so the caller can put them back in front.
pub(crate) fn sniff(r: &mut impl Read) -> io::Result<(Compression, Vec<u8>)> {
    let mut prefix = Vec::with_capacity(4);
    let mut buf = [0u8; 4];
    while prefix.len() < 4 {
        match r.read(&mut buf[..4 - prefix.len()]) {
            Ok(0) => break,
            Ok(n) => prefix.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = if prefix.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if prefix.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok((kind, prefix))
}

/// Records which limit tripped, so an `io::Error` surfacing from deep inside the
/// tar or decompression code can be turned back into a typed limit error.
#[derive(Clone, Default)]
pub(crate) struct Tripwire(Rc<Cell<Option<Limit>>>);

impl Tripwire {
    pub(crate) fn trip(&self, limit: Limit) -> io::Error {
        self.0.set(Some(limit));
        io::Error::other(format!("layer exceeds the {limit} limit"))
    }
    pub(crate) fn tripped(&self) -> Option<Limit> {
        self.0.get()
    }
}

/// Counts bytes read and fails once more than `max` have been read.
pub(crate) struct Bounded<R> {
    pub(crate) inner: R,
    pub(crate) bytes: u64,
    max: u64,
    wire: Tripwire,
}

impl<R: Read> Bounded<R> {
    pub(crate) fn new(inner: R, max: u64, wire: Tripwire) -> Self {
        Bounded {
            inner,
            bytes: 0,
            max,
            wire,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.max {
            return Err(self.wire.trip(Limit::UncompressedBytes));
        }
        Ok(n)
    }
}

/// Hashes (sha256) and counts everything read through it, failing past `max` bytes.
pub(crate) struct Tally<R> {
    inner: Bounded<R>,
    hasher: Sha256,
}

impl<R: Read> Tally<R> {
    pub(crate) fn new(inner: R, max: u64, wire: Tripwire) -> Self {
        Tally {
            inner: Bounded::new(inner, max, wire),
            hasher: Sha256::new(),
        }
    }

    /// `("sha256:<hex>", bytes)` of everything read so far.
    pub(crate) fn finish(self) -> (String, u64) {
        let hex = hex::encode(self.hasher.finalize());
        (format!("sha256:{hex}"), self.inner.bytes)
    }
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The decompressor for `kind` over `input` (whose first bytes are `prefix`).
pub(crate) fn decoder<'a, R: Read + 'a>(
    kind: Compression,
    prefix: Vec<u8>,
    input: R,
) -> io::Result<Box<dyn Read + 'a>> {
    let whole = io::Cursor::new(prefix).chain(input);
    Ok(match kind {
        // Multi-member, as Go's compress/gzip (and so docker/containerd) reads by default.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::None => Box::new(whole),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Magic bytes select the decoder; short or unknown input is plain tar.
    #[test]
    fn sniff_by_magic() {
        let cases: [(&[u8], Compression); 5] = [
            (&[0x1f, 0x8b, 8, 0, 1], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
            (b"usr/", Compression::None),
            (&[0x1f], Compression::None),
            (b"", Compression::None),
        ];
        for (bytes, want) in cases {
            let (got, prefix) = sniff(&mut &bytes[..]).unwrap();
            assert_eq!(got, want, "{bytes:?}");
            assert_eq!(prefix, bytes[..bytes.len().min(4)]);
        }
    }

    /// Reading past the bound fails and records which limit tripped.
    #[test]
    fn bounded_trips() {
        let wire = Tripwire::default();
        let mut r = Bounded::new(&[0u8; 10][..], 9, wire.clone());
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        assert_eq!(wire.tripped(), Some(Limit::UncompressedBytes));
        let wire = Tripwire::default();
        let mut r = Bounded::new(&[0u8; 10][..], 10, wire.clone());
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 10);
        assert_eq!(wire.tripped(), None);
    }
}
