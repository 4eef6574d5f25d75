//! The built-in agent's image source: the registry in this process, read directly
//! (no HTTP round trip, no credentials: the agent and the registry are one program).

use std::io::Read;
use std::sync::Arc;

use berth_image::pull::{ImageSource, NotFound, SourceError};
use berth_registry::content::BlobSource;
use berth_registry::{Digest, Reference, Registry, RegistryError};

/// [`ImageSource`] over the local registry.
pub struct LocalImages {
    pub registry: Arc<Registry>,
}

impl std::fmt::Debug for LocalImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalImages").finish()
    }
}

fn source_error(e: RegistryError) -> SourceError {
    match e {
        RegistryError::NameUnknown(_)
        | RegistryError::ManifestUnknown(_)
        | RegistryError::BlobUnknown(_) => Box::new(NotFound),
        other => Box::new(other),
    }
}

/// Plaintext of an encrypted blob as a reader.
struct DecryptReader {
    dec: Box<berth_registry::crypt::Decryptor>,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for DecryptReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            self.buf = self.dec.read_at(self.pos, 1 << 20)?;
            self.at = 0;
            self.pos += self.buf.len() as u64;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl ImageSource for LocalImages {
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), SourceError> {
        let r = Reference::parse(reference).map_err(|e| Box::new(e) as SourceError)?;
        let (rec, _, bytes) = self.registry.get_manifest(repo, &r).map_err(source_error)?;
        Ok((rec.media_type, bytes))
    }

    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        let d = Digest::parse(digest).map_err(|e| Box::new(e) as SourceError)?;
        match self.registry.blob(repo, &d).map_err(source_error)? {
            BlobSource::Plain { path, .. } => Ok(Box::new(std::fs::File::open(path)?)),
            BlobSource::Encrypted(dec) => Ok(Box::new(DecryptReader {
                dec,
                pos: 0,
                buf: Vec::new(),
                at: 0,
            })),
        }
    }
}
