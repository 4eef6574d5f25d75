//! Manifest parsing: OCI image manifests and indexes, Docker v2 schema 2 manifests and
//! manifest lists. Pure: bytes in, the descriptors the registry must check out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media types this registry stores as manifests.
pub const SUPPORTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Largest manifest accepted (ECR's limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A content descriptor (OCI image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    /// Config and layers (image manifests) — blobs that must exist in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (indexes) — manifests that must exist in the repository.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or the config's media type for image manifests (spec: referrers).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub config_media_type: Option<String>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
    /// Bytes of the config and layers: what ECR reports as the image size.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|d| d.size.max(0) as u64).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest media type '{0}' is not supported (supported: OCI image manifest and index, Docker v2 schema 2 manifest and manifest list)")]
    Unsupported(String),
    #[error("Content-Type '{header}' does not match the manifest's mediaType '{body}'")]
    MediaTypeMismatch { header: String, body: String },
    #[error("{0}")]
    Invalid(String),
}

/// Parses manifest bytes sent with `content_type` (the request's Content-Type, if any).
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch {
                header: h.to_string(),
                body: b.to_string(),
            })
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if !SUPPORTED.contains(&media_type.as_str()) {
        return Err(ManifestError::Unsupported(media_type));
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let check = |d: &Descriptor, what: &str| -> Result<(), ManifestError> {
        Digest::parse(&d.digest).map_err(|e| ManifestError::Invalid(format!("{what}: {e}")))?;
        if d.size < 0 {
            return Err(ManifestError::Invalid(format!(
                "{what}: size must not be negative"
            )));
        }
        Ok(())
    };
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut config_media_type = None;
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| ManifestError::Invalid("an index requires 'manifests'".into()))?;
        for (i, m) in manifests.iter().enumerate() {
            check(m, &format!("manifests[{i}]"))?;
        }
        children = manifests;
    } else {
        let config = raw
            .config
            .ok_or_else(|| ManifestError::Invalid("an image manifest requires 'config'".into()))?;
        check(&config, "config")?;
        let layers = raw.layers.unwrap_or_default();
        if layers.is_empty() && media_type == DOCKER_MANIFEST {
            return Err(ManifestError::Invalid(
                "a Docker image manifest requires at least one layer".into(),
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            check(l, &format!("layers[{i}]"))?;
        }
        config_media_type = Some(config.media_type.clone());
        blobs.push(config);
        blobs.extend(layers);
    }
    if let Some(s) = &raw.subject {
        check(s, "subject")?;
    }
    let artifact_type = raw.artifact_type.or_else(|| {
        if is_index {
            None
        } else {
            config_media_type.clone()
        }
    });
    Ok(Manifest {
        media_type,
        blobs,
        children,
        subject: raw.subject,
        artifact_type,
        annotations: raw.annotations,
        config_media_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[{{"mediaType":"x","digest":"{D}","size":5}}]}}"#
        )
    }

    /// Image manifests list config then layers as the blobs to check; size is their sum.
    #[test]
    fn image_manifest() {
        let m = parse(Some(OCI_MANIFEST), image(OCI_MANIFEST).as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.blob_bytes(), 7);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let d = parse(None, image(DOCKER_MANIFEST).as_bytes()).unwrap();
        assert_eq!(d.media_type, DOCKER_MANIFEST);
    }

    /// Indexes list child manifests; a header/body media type mismatch is refused.
    #[test]
    fn index_and_mismatch() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":9}}]}}"#
        );
        let m = parse(Some(OCI_INDEX), idx.as_bytes()).unwrap();
        assert!(m.is_index());
        assert_eq!(m.children.len(), 1);
        assert!(matches!(
            parse(Some(OCI_MANIFEST), idx.as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
    }

    /// Malformed manifests get a precise error.
    #[test]
    fn errors() {
        assert!(matches!(parse(None, b"{"), Err(ManifestError::Json(_))));
        assert_eq!(
            parse(
                None,
                br#"{"schemaVersion":1,"config":{"digest":"x","size":1}}"#
            ),
            Err(ManifestError::SchemaVersion)
        );
        assert!(matches!(
            parse(Some("text/plain"), image(OCI_MANIFEST).as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let bad = image(OCI_MANIFEST).replace(&D[10..], "zz");
        assert!(matches!(
            parse(None, bad.as_bytes()),
            Err(ManifestError::Invalid(_))
        ));
    }
}
