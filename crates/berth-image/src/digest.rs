//! `sha256:<hex>` digests (OCI image-spec `descriptor.md`, "Digests") and a reader
//! that verifies one while streaming.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// The only algorithm we accept: every registry and builder uses it, and accepting
/// more means trusting more hash code.
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn of(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// How a verified stream turned out to be wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The content hashes to this digest instead.
    Digest(String),
    /// The content is longer or shorter than the descriptor's size.
    Size { actual: u64 },
}

/// Hashes what is read through it; at end of stream, fails (and records why in the
/// shared cell) if the digest or size differs from what the descriptor promised.
/// A stream longer than promised fails as soon as the excess is read.
pub(crate) struct Verify<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
    size: u64,
    seen: u64,
    outcome: Rc<RefCell<Option<Mismatch>>>,
}

impl<R: Read> Verify<R> {
    pub(crate) fn new(
        inner: R,
        expected: &str,
        size: u64,
    ) -> (Self, Rc<RefCell<Option<Mismatch>>>) {
        let outcome = Rc::new(RefCell::new(None));
        let v = Verify {
            inner,
            hasher: Sha256::new(),
            expected: expected.to_string(),
            size,
            seen: 0,
            outcome: outcome.clone(),
        };
        (v, outcome)
    }

    fn fail(&self, m: Mismatch) -> io::Error {
        let msg = match &m {
            Mismatch::Digest(actual) => {
                format!("content digest is {actual}, expected {}", self.expected)
            }
            Mismatch::Size { actual } => {
                format!("content is {actual} bytes, expected {}", self.size)
            }
        };
        *self.outcome.borrow_mut() = Some(m);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(self.fail(Mismatch::Size { actual: self.seen }));
        }
        if n == 0 {
            if self.seen != self.size {
                return Err(self.fail(Mismatch::Size { actual: self.seen }));
            }
            let actual = format!(
                "{SHA256_PREFIX}{}",
                hex::encode(self.hasher.clone().finalize())
            );
            if actual != self.expected {
                return Err(self.fail(Mismatch::Digest(actual)));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A reader shared between the unpacker and the puller: when an unpack fails part way,
/// the puller reads the rest of the blob so a corrupt download is reported as a digest
/// mismatch, not as whatever parse error the corruption caused first.
pub(crate) struct Shared<R>(pub(crate) Rc<RefCell<R>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `sha256:` with exactly 64 lowercase hex digits is a digest.
    #[test]
    fn parses_sha256_only() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(sha256_hex(&good), Some(&good[7..]));
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex(&format!("sha512:{}", "a".repeat(128))), None);
        assert_eq!(sha256_hex("sha256:../../etc"), None);
    }

    /// The verifying reader passes matching content and fails at EOF otherwise.
    #[test]
    fn verify_reader() {
        let data = b"hello";
        let (mut ok, _) = Verify::new(&data[..], &of(data), 5);
        io::copy(&mut ok, &mut io::sink()).unwrap();
        let (mut bad, outcome) = Verify::new(&b"hellO"[..], &of(data), 5);
        assert!(io::copy(&mut bad, &mut io::sink()).is_err());
        assert!(matches!(*outcome.borrow(), Some(Mismatch::Digest(_))));
        let (mut long, outcome) = Verify::new(&b"hello!"[..], &of(data), 5);
        assert!(io::copy(&mut long, &mut io::sink()).is_err());
        assert_eq!(*outcome.borrow(), Some(Mismatch::Size { actual: 6 }));
    }
}
