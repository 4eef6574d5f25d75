//! The JSON a pull reads: OCI / Docker schema 2 manifests, indexes (manifest lists)
//! and image configs. Pure. Unknown fields are ignored, as image-spec requires
//! ("implementations MUST NOT generate an error if they encounter an unknown property").

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ImageConfig;

/// OCI image manifest (image-spec `manifest.md`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (image-spec `image-index.md`).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config (image-spec `config.md`).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list, schema 2.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types we unpack; compression is detected from the bytes anyway.
const LAYER_TYPES: [&str; 9] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Whether `media_type` is a layer we can unpack.
pub(crate) fn is_layer(media_type: &str) -> bool {
    LAYER_TYPES.contains(&media_type)
}

/// An extra sentence for media types people actually hit.
pub(crate) fn hint(media_type: &str) -> &'static str {
    if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        "; docker schema 1 images are not supported: push the image again with a current docker"
    } else {
        ""
    }
}

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: Option<String>,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    pub(crate) manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// The probe used when the media type is missing or generic.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// What a manifest response is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Index,
    Manifest,
    /// Anything else, with the media type to report.
    Other(String),
}

/// Classifies by the response's media type, falling back to the body's `mediaType`
/// and then its shape when the registry sent none (or `application/json`).
pub(crate) fn kind(content_type: &str, bytes: &[u8]) -> Kind {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        OCI_INDEX | DOCKER_MANIFEST_LIST => return Kind::Index,
        OCI_MANIFEST | DOCKER_MANIFEST => return Kind::Manifest,
        "" | "application/json" | "text/plain" | "application/octet-stream" => {}
        other => return Kind::Other(other.to_string()),
    }
    let Ok(probe) = serde_json::from_slice::<Probe>(bytes) else {
        return Kind::Other(ct.to_string());
    };
    match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => return Kind::Index,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => return Kind::Manifest,
        Some(other) => return Kind::Other(other.to_string()),
        None => {}
    }
    if probe.schema_version == Some(1) {
        return Kind::Other("application/vnd.docker.distribution.manifest.v1+json".into());
    }
    if probe.manifests.is_some() {
        Kind::Index
    } else if probe.config.is_some() {
        Kind::Manifest
    } else {
        Kind::Other(ct.to_string())
    }
}

pub(crate) fn parse_index(bytes: &[u8]) -> Result<Index, serde_json::Error> {
    serde_json::from_slice(bytes)
}

pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The first image manifest for `os/arch` in `index`; otherwise the platforms it has
/// (for the error message). Entries without a platform (attestations) are skipped.
pub(crate) fn select_platform(index: &Index, os: &str, arch: &str) -> Result<Descriptor, String> {
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
            && d.media_type
                .as_deref()
                .is_none_or(|mt| mt == OCI_MANIFEST || mt == DOCKER_MANIFEST)
    });
    if let Some(d) = found {
        return Ok(d.clone());
    }
    let mut available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    available.dedup();
    Err(if available.is_empty() {
        "no platforms".to_string()
    } else {
        available.join(", ")
    })
}

/// An image config (image-spec `config.md`); Docker writes the same shape.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    pub(crate) architecture: Option<String>,
    pub(crate) os: Option<String>,
    #[serde(default)]
    config: Option<RuntimeConfig>,
    pub(crate) rootfs: RootFs,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    pub(crate) diff_ids: Vec<String>,
}

pub(crate) fn parse_config(bytes: &[u8]) -> Result<ConfigFile, serde_json::Error> {
    serde_json::from_slice(bytes)
}

impl ConfigFile {
    /// The runtime part, with absent fields as empty values.
    pub(crate) fn runtime(&self) -> ImageConfig {
        let c = self.config.as_ref();
        let c = match c {
            Some(c) => c,
            None => return ImageConfig::default(),
        };
        ImageConfig {
            env: c.env.clone().unwrap_or_default(),
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The media type wins; without one the body's mediaType, then its shape decides.
    #[test]
    fn classifies_manifests() {
        assert_eq!(kind(OCI_INDEX, b"{}"), Kind::Index);
        assert_eq!(
            kind(&format!("{DOCKER_MANIFEST}; charset=utf-8"), b"{}"),
            Kind::Manifest
        );
        assert_eq!(
            kind(
                "",
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            ),
            Kind::Index
        );
        assert_eq!(
            kind("application/json", br#"{"schemaVersion":2,"config":{}}"#),
            Kind::Manifest
        );
        assert!(
            matches!(kind("", br#"{"schemaVersion":1,"fsLayers":[]}"#), Kind::Other(m) if !hint(&m).is_empty())
        );
        assert_eq!(
            kind("text/html", b"<html>"),
            Kind::Other("text/html".into())
        );
    }

    /// linux/amd64 is picked; without it the error lists what the index has.
    #[test]
    fn selects_platform() {
        let index: Index = serde_json::from_str(
            r#"{"manifests":[
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"amd64"}},
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            select_platform(&index, "linux", "amd64").unwrap().digest,
            "sha256:b"
        );
        assert_eq!(
            select_platform(&index, "linux", "s390x").unwrap_err(),
            "linux/arm64/v8, linux/amd64"
        );
    }

    /// Config nulls become empty values; exposed ports are listed by key.
    #[test]
    fn reads_runtime_config() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Entrypoint":null,"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"Labels":null},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let r = c.runtime();
        assert_eq!(r.env, vec!["A=1"]);
        assert!(r.entrypoint.is_empty());
        assert_eq!(r.cmd, vec!["sh"]);
        assert_eq!(r.exposed_ports, vec!["80/tcp"]);
    }
}
