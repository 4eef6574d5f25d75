//! Pulling an image: manifest (or index → linux/amd64 manifest) → config → layers,
//! every byte checked against the digest that named it (OCI image-spec
//! `descriptor.md`, "Verification"), layers unpacked into [`Snapshots`].
//!
//! The registry is reached through [`ImageSource`], which the caller implements (HTTP
//! in the agent, in-memory in tests). A resolved image is recorded in
//! `images_dir/<manifest-hex>.json`, so pulling it again by digest needs no network.

mod manifest;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::digest::{self, sha256_hex, Mismatch, Shared, Verify};
use crate::snapshots::{SnapshotError, Snapshots};
use manifest::{Descriptor, Kind};
pub use manifest::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};

/// What an [`ImageSource`] fails with.
pub type SourceError = Box<dyn Error + Send + Sync>;

/// Largest manifest we read, in bytes (distribution's own limit: 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest image config we read, in bytes (8 MiB; real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// The platform this agent runs.
pub const PLATFORM_OS: &str = "linux";
/// The platform this agent runs.
pub const PLATFORM_ARCH: &str = "amd64";

/// Where images come from: a registry client (or a fake in tests).
pub trait ImageSource {
    /// The manifest `reference` (a tag or a digest) of `repo`: its media type (the
    /// response's `Content-Type`, may be empty) and bytes. A registry 404 should be
    /// returned as a boxed [`NotFound`].
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), SourceError>;
    /// The blob `digest` of `repo`, streamed. A registry 404 should be a boxed
    /// [`NotFound`].
    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send>, SourceError>;
}

/// The error an [`ImageSource`] returns (boxed) when the registry says the manifest
/// or blob does not exist, so `pull` can say "manifest unknown" instead of a
/// transport error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not found")]
pub struct NotFound;

/// A pulled image: what the runtime needs to start a container from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Digest of the manifest the reference named (the index's, for a multi-platform
    /// image): what `repo@digest` pins.
    pub manifest_digest: String,
    /// Digest of the linux/amd64 image manifest (equal to `manifest_digest` unless an
    /// index was resolved).
    pub platform_manifest_digest: String,
    /// Digest of the image config blob (the "image id").
    pub config_digest: String,
    /// The parts of the image config the runtime uses.
    pub config: ImageConfig,
    /// diff_ids of the layers, bottom to top.
    pub diff_ids: Vec<String>,
    /// Unpacked layer directories (overlayfs lower dirs), bottom to top.
    pub layers: Vec<PathBuf>,
}

/// The runtime part of an image config (image-spec `config.md`, "config").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Empty means `/`.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// `port/proto` (`80/tcp`), sorted.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Why a pull failed. `Display` names the step and what to do about it; use
/// [`PullError::reason`] for the whole chain (ECS's `CannotPullContainerError: ...`).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference is neither a tag nor a sha256 digest.
    #[error("invalid image reference {reference:?}: expected a tag or sha256:<64 hex>")]
    BadReference { reference: String },
    /// The registry has no such tag or manifest.
    #[error("manifest unknown: repository {repo} has no {} {reference}", if is_digest(reference) { "manifest" } else { "tag" })]
    ManifestUnknown { repo: String, reference: String },
    /// The registry has no such blob.
    #[error("blob unknown: repository {repo} has no blob {digest} (the {what})")]
    BlobUnknown {
        repo: String,
        digest: String,
        what: String,
    },
    /// The source failed (network, authentication, ...).
    #[error("fetching the {what} of {image} from the registry")]
    Fetch {
        image: String,
        what: String,
        #[source]
        source: SourceError,
    },
    /// Content did not hash to the digest that named it.
    #[error("{what} of {image} is corrupt: expected {expected}, the registry sent content with digest {actual}")]
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },
    /// Content is not the size its descriptor says.
    #[error("{what} of {image} is {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        image: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A manifest or config is over our bound.
    #[error("the {what} of {image} is larger than {max} bytes")]
    TooLarge {
        image: String,
        what: String,
        max: u64,
    },
    /// A media type we do not handle.
    #[error(
        "the {what} of {image} has unsupported media type {media_type:?}{}",
        manifest::hint(media_type)
    )]
    UnsupportedMediaType {
        image: String,
        what: String,
        media_type: String,
    },
    /// A descriptor names a digest we cannot verify.
    #[error("the {what} of {image} has unsupported digest {digest:?}: only sha256 is supported")]
    UnsupportedDigest {
        image: String,
        what: String,
        digest: String,
    },
    /// A manifest or index does not parse.
    #[error("invalid {what} for {image}")]
    InvalidManifest {
        image: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The index has no linux/amd64 entry.
    #[error("image {image} has no linux/amd64 variant (it has: {available})")]
    NoPlatform { image: String, available: String },
    /// The image config says another platform.
    #[error("image {image} is built for {platform}; this host runs linux/amd64")]
    WrongPlatform { image: String, platform: String },
    /// The config does not parse.
    #[error("invalid image config for {image}")]
    InvalidConfig {
        image: String,
        #[source]
        source: serde_json::Error,
    },
    /// Layers in the manifest and diff_ids in the config disagree.
    #[error("image {image} lists {layers} layers but its config has {diff_ids} diff_ids")]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    /// A layer could not be unpacked (or its diff_id did not match).
    #[error("layer {index} ({digest}) of {image} could not be unpacked")]
    Layer {
        image: String,
        index: usize,
        digest: String,
        #[source]
        source: Box<SnapshotError>,
    },
    /// Reading or writing the local image record failed.
    #[error("{step} {path}")]
    Cache {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PullError {
    /// The message and all its causes, `: `-separated: the text after ECS's
    /// `CannotPullContainerError: `.
    pub fn reason(&self) -> String {
        let mut out = self.to_string();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// `repo:tag` or `repo@digest`.
fn image_name(repo: &str, reference: &str) -> String {
    if is_digest(reference) {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

/// The image recorded for manifest `digest` in `images_dir`, if every one of its
/// layers is still unpacked. A missing or unreadable record is `None` (pull again).
pub fn cached(images_dir: &Path, digest: &str) -> Result<Option<Image>, PullError> {
    let Some(hex) = sha256_hex(digest) else {
        return Err(PullError::BadReference {
            reference: digest.to_string(),
        });
    };
    let path = images_dir.join(format!("{hex}.json"));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PullError::Cache {
                step: "reading the image record",
                path,
                source,
            })
        }
    };
    let image: Image = match serde_json::from_slice(&bytes) {
        Ok(i) => i,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable image record");
            return Ok(None);
        }
    };
    let complete = image
        .layers
        .iter()
        .all(|l| fs::symlink_metadata(l).is_ok_and(|m| m.is_dir()));
    Ok(complete.then_some(image))
}

/// Pulls `repo:reference` (tag or digest) from `source`, unpacking layers into
/// `snapshots` and recording the result in `images_dir`. A digest pulled before
/// returns from the record without touching `source`.
pub fn pull(
    source: &dyn ImageSource,
    repo: &str,
    reference: &str,
    snapshots: &Snapshots,
    images_dir: &Path,
) -> Result<Image, PullError> {
    let image = image_name(repo, reference);
    let by_digest = is_digest(reference);
    if by_digest {
        if sha256_hex(reference).is_none() {
            return Err(PullError::BadReference {
                reference: reference.to_string(),
            });
        }
        if let Some(img) = cached(images_dir, reference)? {
            tracing::debug!(%image, "image already pulled");
            return Ok(img);
        }
    }
    let p = Puller {
        source,
        repo,
        image: &image,
    };

    let (media_type, bytes) = p.manifest(reference, "manifest")?;
    let manifest_digest = digest::of(&bytes);
    if by_digest && manifest_digest != reference {
        return Err(PullError::DigestMismatch {
            image: image.clone(),
            what: "the manifest".into(),
            expected: reference.to_string(),
            actual: manifest_digest,
        });
    }
    if !by_digest {
        // The tag may point at an image pulled before: no config or layer fetches.
        if let Some(img) = cached(images_dir, &manifest_digest)? {
            tracing::debug!(%image, digest = %manifest_digest, "tag resolves to an image already pulled");
            return Ok(img);
        }
    }
    let (platform_manifest_digest, bytes) = match manifest::kind(&media_type, &bytes) {
        Kind::Index => {
            let index =
                manifest::parse_index(&bytes).map_err(|source| PullError::InvalidManifest {
                    image: image.clone(),
                    what: "image index",
                    source,
                })?;
            let entry = manifest::select_platform(&index, PLATFORM_OS, PLATFORM_ARCH).map_err(
                |available| PullError::NoPlatform {
                    image: image.clone(),
                    available,
                },
            )?;
            p.check_descriptor(&entry, "linux/amd64 manifest")?;
            let (child_type, child) = p.manifest(&entry.digest, "linux/amd64 manifest")?;
            p.check_bytes(&child, &entry, "the linux/amd64 manifest")?;
            let child_type = entry.media_type.clone().unwrap_or(child_type);
            if manifest::kind(&child_type, &child) != Kind::Manifest {
                return Err(p.unsupported("linux/amd64 manifest", &child_type));
            }
            (entry.digest.clone(), child)
        }
        Kind::Manifest => (manifest_digest.clone(), bytes),
        Kind::Other(mt) => return Err(p.unsupported("manifest", &mt)),
    };
    let m = manifest::parse_manifest(&bytes).map_err(|source| PullError::InvalidManifest {
        image: image.clone(),
        what: "image manifest",
        source,
    })?;

    // The config.
    p.check_descriptor(&m.config, "config")?;
    match m.config.media_type.as_deref() {
        Some(DOCKER_CONFIG) | Some(OCI_CONFIG) => {}
        other => return Err(p.unsupported("config", other.unwrap_or(""))),
    }
    let config_bytes = p.config(&m.config)?;
    let config =
        manifest::parse_config(&config_bytes).map_err(|source| PullError::InvalidConfig {
            image: image.clone(),
            source,
        })?;
    let (os, arch) = (
        config.os.as_deref().unwrap_or(""),
        config.architecture.as_deref().unwrap_or(""),
    );
    if (!os.is_empty() && os != PLATFORM_OS) || (!arch.is_empty() && arch != PLATFORM_ARCH) {
        return Err(PullError::WrongPlatform {
            image: image.clone(),
            platform: format!("{os}/{arch}"),
        });
    }
    let diff_ids = config.rootfs.diff_ids.clone();
    if diff_ids.len() != m.layers.len() {
        return Err(PullError::LayerCount {
            image: image.clone(),
            layers: m.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }

    // The layers, bottom to top.
    let mut layers = Vec::with_capacity(m.layers.len());
    for (index, (layer, diff_id)) in m.layers.iter().zip(&diff_ids).enumerate() {
        let what = format!("layer {index}");
        p.check_descriptor(layer, &what)?;
        let mt = layer.media_type.as_deref().unwrap_or("");
        if !manifest::is_layer(mt) {
            return Err(p.unsupported(&what, mt));
        }
        layers.push(p.layer(snapshots, index, layer, diff_id)?);
    }

    let pulled = Image {
        manifest_digest,
        platform_manifest_digest,
        config_digest: m.config.digest.clone(),
        config: config.runtime(),
        diff_ids,
        layers,
    };
    record(images_dir, &pulled)?;
    tracing::info!(%image, digest = %pulled.manifest_digest, "image pulled");
    Ok(pulled)
}

/// One pull's fetches, with the image name for messages.
struct Puller<'a> {
    source: &'a dyn ImageSource,
    repo: &'a str,
    image: &'a str,
}

impl Puller<'_> {
    fn unsupported(&self, what: &str, media_type: &str) -> PullError {
        PullError::UnsupportedMediaType {
            image: self.image.to_string(),
            what: what.to_string(),
            media_type: media_type.to_string(),
        }
    }

    fn fetch_err(&self, what: &str, digest: &str, e: SourceError) -> PullError {
        if e.downcast_ref::<NotFound>().is_some() {
            return PullError::BlobUnknown {
                repo: self.repo.to_string(),
                digest: digest.to_string(),
                what: what.to_string(),
            };
        }
        PullError::Fetch {
            image: self.image.to_string(),
            what: what.to_string(),
            source: e,
        }
    }

    fn manifest(&self, reference: &str, what: &str) -> Result<(String, Vec<u8>), PullError> {
        let (mt, bytes) = self.source.manifest(self.repo, reference).map_err(|e| {
            if e.downcast_ref::<NotFound>().is_some() {
                PullError::ManifestUnknown {
                    repo: self.repo.to_string(),
                    reference: reference.to_string(),
                }
            } else {
                PullError::Fetch {
                    image: self.image.to_string(),
                    what: what.to_string(),
                    source: e,
                }
            }
        })?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(PullError::TooLarge {
                image: self.image.to_string(),
                what: what.to_string(),
                max: MAX_MANIFEST_BYTES as u64,
            });
        }
        Ok((mt, bytes))
    }

    fn check_descriptor(&self, d: &Descriptor, what: &str) -> Result<(), PullError> {
        if sha256_hex(&d.digest).is_none() {
            return Err(PullError::UnsupportedDigest {
                image: self.image.to_string(),
                what: what.to_string(),
                digest: d.digest.clone(),
            });
        }
        Ok(())
    }

    fn check_bytes(&self, bytes: &[u8], d: &Descriptor, what: &str) -> Result<(), PullError> {
        let actual = digest::of(bytes);
        if actual != d.digest {
            return Err(PullError::DigestMismatch {
                image: self.image.to_string(),
                what: what.to_string(),
                expected: d.digest.clone(),
                actual,
            });
        }
        if bytes.len() as u64 != d.size {
            return Err(PullError::SizeMismatch {
                image: self.image.to_string(),
                what: what.to_string(),
                expected: d.size,
                actual: bytes.len() as u64,
            });
        }
        Ok(())
    }

    fn config(&self, d: &Descriptor) -> Result<Vec<u8>, PullError> {
        if d.size > MAX_CONFIG_BYTES {
            return Err(PullError::TooLarge {
                image: self.image.to_string(),
                what: "config".into(),
                max: MAX_CONFIG_BYTES,
            });
        }
        let r = self
            .source
            .blob(self.repo, &d.digest)
            .map_err(|e| self.fetch_err("config", &d.digest, e))?;
        let mut bytes = Vec::new();
        r.take(d.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fetch_err("config", &d.digest, e.into()))?;
        self.check_bytes(&bytes, d, "the config")?;
        Ok(bytes)
    }

    fn layer(
        &self,
        snapshots: &Snapshots,
        index: usize,
        d: &Descriptor,
        diff_id: &str,
    ) -> Result<PathBuf, PullError> {
        let mut verified = None;
        let result = snapshots.ensure(diff_id, || {
            let r = self.source.blob(self.repo, &d.digest)?;
            let (verify, outcome) = Verify::new(r, &d.digest, d.size);
            let shared = Rc::new(RefCell::new(verify));
            verified = Some((shared.clone(), outcome));
            Ok::<Box<dyn Read>, SourceError>(Box::new(Shared(shared)))
        });
        let outcome = verified.and_then(|(shared, outcome)| {
            if result.is_err() && outcome.borrow().is_none() {
                // Finish reading (bounded by the descriptor's size) to learn whether
                // the blob itself was corrupt; errors here are the answer, not news.
                let _ = io::copy(&mut Shared(shared), &mut io::sink());
            }
            outcome.take()
        });
        let what = format!("layer {index}");
        // A digest or size mismatch surfaces as an unpack error from deep inside the
        // decompressor; the verifying reader recorded the real reason.
        if let Some(m) = outcome {
            return Err(match m {
                Mismatch::Digest(actual) => PullError::DigestMismatch {
                    image: self.image.to_string(),
                    what,
                    expected: d.digest.clone(),
                    actual,
                },
                Mismatch::Size { actual } => PullError::SizeMismatch {
                    image: self.image.to_string(),
                    what,
                    expected: d.size,
                    actual,
                },
            });
        }
        result.map_err(|e| match e {
            SnapshotError::Open { source, .. } => self.fetch_err(&what, &d.digest, source),
            source => PullError::Layer {
                image: self.image.to_string(),
                index,
                digest: d.digest.clone(),
                source: Box::new(source),
            },
        })
    }
}

/// Writes the image record under both of its manifest digests (temp, fsync, rename).
fn record(images_dir: &Path, image: &Image) -> Result<(), PullError> {
    let cache_err = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| PullError::Cache { step, path, source }
    };
    fs::create_dir_all(images_dir).map_err(cache_err("creating", images_dir))?;
    let json = serde_json::to_vec_pretty(image).expect("an image serializes");
    let mut digests = vec![&image.manifest_digest];
    if image.platform_manifest_digest != image.manifest_digest {
        digests.push(&image.platform_manifest_digest);
    }
    for d in digests {
        let hex = sha256_hex(d).expect("digests were verified");
        let path = images_dir.join(format!("{hex}.json"));
        let tmp = images_dir.join(format!("{hex}.json.tmp-{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(cache_err("recording the image in", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
