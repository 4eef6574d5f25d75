//! OCI image layouts (image-spec `image-layout.md`): `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>` — in a directory, or in a tar of one (what `docker save` of
//! Docker 25+ writes).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Where layout files come from.
enum Source {
    Dir(PathBuf),
    Tar(HashMap<String, Vec<u8>>),
}

impl Source {
    fn read(&self, rel: &str) -> Result<Vec<u8>, LayoutError> {
        match self {
            Source::Dir(d) => fs::read(d.join(rel)).map_err(|source| LayoutError::Read {
                path: d.join(rel).display().to_string(),
                source,
            }),
            Source::Tar(m) => m
                .get(rel)
                .cloned()
                .ok_or_else(|| LayoutError::Invalid(format!("{rel} is missing from the archive"))),
        }
    }
}

/// An image read from a layout, ready to push.
pub struct LayoutImage {
    source: Source,
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    /// (digest, size) of the config and layers.
    pub blobs: Vec<(String, u64)>,
}

impl std::fmt::Debug for LayoutImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutImage")
            .field("digest", &self.digest)
            .finish()
    }
}

fn blob_rel(digest: &str) -> Result<String, LayoutError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| LayoutError::Invalid(format!("bad digest {digest}")))?;
    if !matches!(alg, "sha256" | "sha512")
        || hex.is_empty()
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(LayoutError::Invalid(format!("bad digest {digest}")));
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

impl LayoutImage {
    /// Reads the image named `tag` (annotation `org.opencontainers.image.ref.name`), or
    /// the only/first one; an index is resolved to its linux/amd64 (or first) manifest.
    pub fn open(path: &Path, tag: Option<&str>) -> Result<Self, LayoutError> {
        let source = if path.is_dir() {
            Source::Dir(path.to_path_buf())
        } else {
            let f = fs::File::open(path).map_err(|source| LayoutError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let mut ar = tar::Archive::new(f);
            let mut files = HashMap::new();
            let bad = |e: std::io::Error| LayoutError::Read {
                path: path.display().to_string(),
                source: e,
            };
            for e in ar.entries().map_err(bad)? {
                let mut e = e.map_err(bad)?;
                let name = e
                    .path()
                    .map_err(bad)?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(bad)?;
                files.insert(name, data);
            }
            Source::Tar(files)
        };
        let index: Value = serde_json::from_slice(&source.read("index.json")?)
            .map_err(|e| LayoutError::Invalid(format!("index.json is not valid JSON: {e}")))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = match tag {
            Some(t) => manifests
                .iter()
                .find(|m| {
                    m.pointer("/annotations/org.opencontainers.image.ref.name")
                        .and_then(Value::as_str)
                        == Some(t)
                })
                .or(manifests.first()),
            None => manifests.first(),
        }
        .ok_or_else(|| LayoutError::Invalid("index.json lists no manifests".into()))?
        .clone();
        let mut desc = chosen;
        loop {
            let digest = desc["digest"].as_str().unwrap_or_default().to_string();
            let bytes = source.read(&blob_rel(&digest)?)?;
            let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            if actual != digest {
                return Err(LayoutError::Invalid(format!(
                    "blob {digest} in the layout does not match its digest"
                )));
            }
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| LayoutError::Invalid(format!("manifest {digest}: {e}")))?;
            let mt = desc["mediaType"]
                .as_str()
                .or(v["mediaType"].as_str())
                .unwrap_or("")
                .to_string();
            if mt == OCI_INDEX || mt == DOCKER_LIST || v.get("manifests").is_some() {
                let ms = v["manifests"].as_array().cloned().unwrap_or_default();
                desc = ms
                    .iter()
                    .find(|m| {
                        m.pointer("/platform/os") == Some(&json!("linux"))
                            && m.pointer("/platform/architecture") == Some(&json!("amd64"))
                    })
                    .or(ms.first())
                    .ok_or_else(|| {
                        LayoutError::Invalid(format!("index {digest} lists no manifests"))
                    })?
                    .clone();
                continue;
            }
            let mut blobs = Vec::new();
            for d in
                std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten())
            {
                let dg = d["digest"].as_str().ok_or_else(|| {
                    LayoutError::Invalid(format!(
                        "manifest {digest} has a descriptor without digest"
                    ))
                })?;
                blobs.push((dg.to_string(), d["size"].as_u64().unwrap_or(0)));
            }
            return Ok(LayoutImage {
                source,
                media_type: mt,
                manifest: bytes,
                digest,
                blobs,
            });
        }
    }

    /// The bytes of one of the image's blobs.
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>, LayoutError> {
        self.source.read(&blob_rel(digest)?)
    }
}

/// Writes layouts.
#[derive(Debug)]
pub struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    pub fn create(dir: &Path) -> Result<Self, LayoutError> {
        let w = |source, p: &Path| LayoutError::Write {
            path: p.display().to_string(),
            source,
        };
        fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| w(e, dir))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(|e| w(e, dir))?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
        })
    }

    /// Path where blob `digest` goes (validated).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.dir.join(blob_rel(digest)?))
    }

    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        let p = self.blob_path(digest)?;
        fs::write(&p, bytes).map_err(|source| LayoutError::Write {
            path: p.display().to_string(),
            source,
        })
    }

    /// Writes index.json naming one manifest, tagged `tag`.
    pub fn write_index(
        &self,
        digest: &str,
        media_type: &str,
        size: u64,
        tag: &str,
    ) -> Result<(), LayoutError> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
                           "annotations": {"org.opencontainers.image.ref.name": tag}}],
        });
        let p = self.dir.join("index.json");
        fs::write(&p, serde_json::to_vec_pretty(&index).expect("json")).map_err(|source| {
            LayoutError::Write {
                path: p.display().to_string(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout written by LayoutWriter reads back as the same image.
    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(dir.path()).unwrap();
        let dg = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
        let (config, layer) = (b"{}".to_vec(), b"layer".to_vec());
        let manifest = serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":dg(&config),"size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":dg(&layer),"size":5}]})).unwrap();
        for b in [&config, &layer, &manifest] {
            w.write_blob(&dg(b), b).unwrap();
        }
        w.write_index(
            &dg(&manifest),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.len() as u64,
            "v1",
        )
        .unwrap();
        let img = LayoutImage::open(dir.path(), Some("v1")).unwrap();
        assert_eq!(img.digest, dg(&manifest));
        assert_eq!(img.blobs, vec![(dg(&config), 2), (dg(&layer), 5)]);
        assert_eq!(img.blob(&dg(&layer)).unwrap(), layer);
        assert!(w.blob_path("sha256:../../x").is_err());
    }
}
