//! Pulls against an in-memory registry: resolution, verification, messages, cache.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Cursor;

use serde_json::json;

use super::*;
use crate::testutil::{gzip, sha256, zstd, Layer};

/// An in-memory registry; `offline` makes every fetch fail.
#[derive(Default)]
struct Mem {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    fetches: Cell<usize>,
    offline: Cell<bool>,
    fetched: RefCell<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Down;

impl ImageSource for Mem {
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), SourceError> {
        self.fetches.set(self.fetches.get() + 1);
        if self.offline.get() {
            return Err(Box::new(Down));
        }
        assert_eq!(repo, "web");
        self.manifests
            .get(reference)
            .cloned()
            .ok_or_else(|| Box::new(NotFound) as SourceError)
    }

    fn blob(&self, repo: &str, digest: &str) -> Result<Box<dyn Read + Send>, SourceError> {
        self.fetches.set(self.fetches.get() + 1);
        self.fetched.borrow_mut().push(digest.to_string());
        if self.offline.get() {
            return Err(Box::new(Down));
        }
        assert_eq!(repo, "web");
        let b = self
            .blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| Box::new(NotFound) as SourceError)?;
        Ok(Box::new(Cursor::new(b)))
    }
}

struct Built {
    manifest: Vec<u8>,
    digest: String,
    layer_digests: Vec<String>,
}

impl Mem {
    fn blob_of(&mut self, bytes: Vec<u8>) -> (String, u64) {
        let d = sha256(&bytes);
        let n = bytes.len() as u64;
        self.blobs.insert(d.clone(), bytes);
        (d, n)
    }

    /// An image of `tars` (layer i compressed by `compress[i % 3]`), tagged `tag`.
    fn image(&mut self, tag: &str, tars: &[Vec<u8>], docker: bool, arch: &str) -> Built {
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/web"], "Cmd": ["--port", "80"],
                       "WorkingDir": "/srv", "User": "100:101", "ExposedPorts": {"80/tcp": {}},
                       "Labels": {"team": "edge"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let (cfg_digest, cfg_size) = self.blob_of(config);
        let mut layers = Vec::new();
        let mut layer_digests = Vec::new();
        for (i, t) in tars.iter().enumerate() {
            let (bytes, mt) = match i % 3 {
                0 => (
                    gzip(t),
                    if docker {
                        "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    },
                ),
                1 => (zstd(t), "application/vnd.oci.image.layer.v1.tar+zstd"),
                _ => (t.clone(), "application/vnd.oci.image.layer.v1.tar"),
            };
            let (d, n) = self.blob_of(bytes);
            layer_digests.push(d.clone());
            layers.push(json!({"mediaType": mt, "digest": d, "size": n}));
        }
        let (mt, cfg_mt) = if docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cfg_mt, "digest": cfg_digest, "size": cfg_size},
            "layers": layers,
        }))
        .unwrap();
        let digest = sha256(&manifest);
        self.manifests
            .insert(tag.to_string(), (mt.to_string(), manifest.clone()));
        self.manifests
            .insert(digest.clone(), (mt.to_string(), manifest.clone()));
        Built {
            manifest,
            digest,
            layer_digests,
        }
    }

    /// An index over `(platform, image)` entries, tagged `tag`.
    fn index(&mut self, tag: &str, entries: &[(&str, &Built)], mt: &str) -> String {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(arch, b)| {
                json!({"mediaType": DOCKER_MANIFEST, "digest": b.digest, "size": b.manifest.len(),
                       "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let bytes =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let d = sha256(&bytes);
        self.manifests
            .insert(tag.to_string(), (mt.to_string(), bytes.clone()));
        self.manifests.insert(d.clone(), (mt.to_string(), bytes));
        d
    }
}

fn tars() -> Vec<Vec<u8>> {
    vec![
        Layer::new()
            .dir("bin/")
            .file("bin/web", b"v1")
            .file("etc/motd", b"hi")
            .tar(),
        Layer::new()
            .file("bin/web", b"v2")
            .file("etc/.wh.motd", b"")
            .tar(),
        Layer::new().file("srv/index.html", b"<h1>").tar(),
    ]
}

struct Dirs {
    _tmp: tempfile::TempDir,
    snaps: Snapshots,
    images: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(tmp.path().join("snapshots")).unwrap();
    let images = tmp.path().join("images");
    Dirs {
        _tmp: tmp,
        snaps,
        images,
    }
}

/// A tag pull unpacks every layer bottom to top (gzip, zstd, plain), returns the
/// runtime config; pulling the tag again fetches only the manifest, and a pull by
/// digest is served from the record offline.
#[test]
fn pull_by_tag_then_by_digest_offline() {
    let mut reg = Mem::default();
    let built = reg.image("v1", &tars(), false, "amd64");
    let d = dirs();
    let img = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap();
    assert_eq!(img.manifest_digest, built.digest);
    assert_eq!(img.platform_manifest_digest, built.digest);
    assert_eq!(img.layers.len(), 3);
    assert_eq!(fs::read(img.layers[0].join("bin/web")).unwrap(), b"v1");
    assert_eq!(fs::read(img.layers[1].join("bin/web")).unwrap(), b"v2");
    assert!(img.layers[2].join("srv/index.html").is_file());
    assert_eq!(
        img.diff_ids,
        tars().iter().map(|t| sha256(t)).collect::<Vec<_>>()
    );
    let c = &img.config;
    assert_eq!(c.entrypoint, vec!["/bin/web"]);
    assert_eq!(c.cmd, vec!["--port", "80"]);
    assert_eq!(
        (c.working_dir.as_str(), c.user.as_str()),
        ("/srv", "100:101")
    );
    assert_eq!(c.exposed_ports, vec!["80/tcp"]);
    assert_eq!(c.labels.get("team").map(String::as_str), Some("edge"));

    let before = reg.fetches.get();
    assert_eq!(pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap(), img);
    assert_eq!(
        reg.fetches.get(),
        before + 1,
        "a tag pull of a known image fetches only the manifest"
    );

    reg.offline.set(true);
    let before = reg.fetches.get();
    let again = pull(&reg, "web", &built.digest, &d.snaps, &d.images).unwrap();
    assert_eq!(again, img);
    assert_eq!(
        reg.fetches.get(),
        before,
        "a cached digest pull touched the source"
    );
    assert_eq!(cached(&d.images, &built.digest).unwrap(), Some(img));
}

/// Layers already unpacked are not fetched again by another image sharing them.
#[test]
fn shared_layers_are_not_fetched_twice() {
    let mut reg = Mem::default();
    let a = reg.image("a", &tars()[..2], false, "amd64");
    reg.image("b", &tars(), true, "amd64");
    let d = dirs();
    pull(&reg, "web", "a", &d.snaps, &d.images).unwrap();
    reg.fetched.borrow_mut().clear();
    pull(&reg, "web", "b", &d.snaps, &d.images).unwrap();
    let fetched = reg.fetched.borrow();
    assert!(!fetched.contains(&a.layer_digests[0]), "{fetched:?}");
    assert_eq!(
        fetched.len(),
        2,
        "config and the one new layer: {fetched:?}"
    );
}

/// An index (OCI or Docker manifest list) resolves to its linux/amd64 manifest.
#[test]
fn index_resolves_to_linux_amd64() {
    for mt in [OCI_INDEX, DOCKER_MANIFEST_LIST, ""] {
        let mut reg = Mem::default();
        let arm = reg.image("arm", &tars()[2..], true, "arm64");
        let amd = reg.image("amd", &tars()[..1], true, "amd64");
        let idx = reg.index("multi", &[("arm64", &arm), ("amd64", &amd)], mt);
        let d = dirs();
        let img = pull(&reg, "web", "multi", &d.snaps, &d.images).unwrap();
        assert_eq!(img.manifest_digest, idx);
        assert_eq!(img.platform_manifest_digest, amd.digest);
        assert_eq!(img.layers.len(), 1);
        // Recorded under both digests.
        assert!(cached(&d.images, &idx).unwrap().is_some());
        assert!(cached(&d.images, &amd.digest).unwrap().is_some());
    }
}

/// An index without linux/amd64 says which platforms it has.
#[test]
fn index_without_amd64_names_what_it_has() {
    let mut reg = Mem::default();
    let arm = reg.image("arm", &tars()[..1], false, "arm64");
    reg.index("multi", &[("arm64", &arm)], OCI_INDEX);
    let d = dirs();
    let err = pull(&reg, "web", "multi", &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image web:multi has no linux/amd64 variant (it has: linux/arm64)"
    );
}

/// A single-platform image for another architecture is refused before any layer.
#[test]
fn wrong_platform_is_refused() {
    let mut reg = Mem::default();
    reg.image("arm", &tars()[..1], false, "arm64");
    let d = dirs();
    let err = pull(&reg, "web", "arm", &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image web:arm is built for linux/arm64; this host runs linux/amd64"
    );
}

/// A layer blob whose bytes do not match its digest is an error naming the layer,
/// and no snapshot is kept for it.
#[test]
fn layer_digest_mismatch_is_an_error() {
    let mut reg = Mem::default();
    let built = reg.image("v1", &tars(), false, "amd64");
    let victim = &built.layer_digests[1];
    let mut bytes = reg.blobs[victim].clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // zstd checksum/trailer region: still the right length
    reg.blobs.insert(victim.clone(), bytes);
    let d = dirs();
    let err = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap_err();
    assert!(
        matches!(&err, PullError::DigestMismatch { what, expected, .. } if what == "layer 1" && expected == victim),
        "{}",
        err.reason()
    );
    assert!(err
        .to_string()
        .starts_with("layer 1 of web:v1 is corrupt: expected sha256:"));
    assert_eq!(
        d.snaps.list().unwrap().len(),
        1,
        "only layer 0 was unpacked"
    );
}

/// A config whose diff_ids do not match the layers' content is refused.
#[test]
fn diff_id_mismatch_is_an_error() {
    let mut reg = Mem::default();
    reg.image("v1", &tars(), false, "amd64");
    // Same manifest, but layer 2 swapped for other content under its own valid digest.
    let (_, bytes) = reg.manifests["v1"].clone();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let (digest, size) = reg.blob_of(Layer::new().file("other", b"").tar());
    v["layers"][2] = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size});
    reg.manifests.insert(
        "v1".into(),
        (OCI_MANIFEST.into(), serde_json::to_vec(&v).unwrap()),
    );
    let d = dirs();
    let err = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap_err();
    assert!(
        matches!(&err, PullError::Layer { index: 2, source, .. } if matches!(**source, SnapshotError::DiffIdMismatch { .. })),
        "{}",
        err.reason()
    );
}

/// By digest, the manifest's own digest is checked.
#[test]
fn manifest_digest_is_verified() {
    let mut reg = Mem::default();
    let built = reg.image("v1", &tars(), false, "amd64");
    let other = reg.image("v2", &tars()[..1], false, "amd64");
    reg.manifests
        .insert(built.digest.clone(), (OCI_MANIFEST.into(), other.manifest));
    let d = dirs();
    let err = pull(&reg, "web", &built.digest, &d.snaps, &d.images).unwrap_err();
    assert!(
        matches!(err, PullError::DigestMismatch { ref what, .. } if what == "the manifest"),
        "{err}"
    );
}

/// A config blob that does not match its digest is refused.
#[test]
fn config_digest_is_verified() {
    let mut reg = Mem::default();
    reg.image("v1", &tars(), false, "amd64");
    let (_, bytes) = reg.manifests["v1"].clone();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let cfg = v["config"]["digest"].as_str().unwrap().to_string();
    let mut body = reg.blobs[&cfg].clone();
    body[0] = b' ';
    reg.blobs.insert(cfg, body);
    let d = dirs();
    let err = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the config of web:v1 is corrupt"),
        "{err}"
    );
}

/// Unknown tags and blobs read as something a person can act on.
#[test]
fn unknown_things_have_actionable_messages() {
    let mut reg = Mem::default();
    let built = reg.image("v1", &tars(), false, "amd64");
    let d = dirs();
    let err = pull(&reg, "web", "v2", &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest unknown: repository web has no tag v2"
    );
    let missing = format!("sha256:{}", "f".repeat(64));
    let err = pull(&reg, "web", &missing, &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest unknown: repository web has no manifest {missing}")
    );
    reg.blobs.remove(&built.layer_digests[0]);
    let err = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob unknown: repository web has no blob {} (the layer 0)",
            built.layer_digests[0]
        )
    );
    reg.offline.set(true);
    let err = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap_err();
    assert_eq!(
        err.reason(),
        "fetching the manifest of web:v1 from the registry: connection refused"
    );
    let err = pull(&reg, "web", "sha256:nope", &d.snaps, &d.images).unwrap_err();
    assert!(matches!(err, PullError::BadReference { .. }));
}

/// Docker schema 1 manifests are refused with a hint.
#[test]
fn schema1_is_refused_with_a_hint() {
    let mut reg = Mem::default();
    reg.manifests.insert(
        "old".into(),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            b"{}".to_vec(),
        ),
    );
    let d = dirs();
    let err = pull(&reg, "web", "old", &d.snaps, &d.images).unwrap_err();
    assert!(
        err.to_string()
            .contains("docker schema 1 images are not supported"),
        "{err}"
    );
}

/// A record whose layers were removed is not served from cache.
#[test]
fn cache_requires_layers_present() {
    let mut reg = Mem::default();
    let built = reg.image("v1", &tars()[..1], false, "amd64");
    let d = dirs();
    let img = pull(&reg, "web", "v1", &d.snaps, &d.images).unwrap();
    d.snaps.remove(&img.diff_ids[0]).unwrap();
    assert_eq!(cached(&d.images, &built.digest).unwrap(), None);
    let again = pull(&reg, "web", &built.digest, &d.snaps, &d.images).unwrap();
    assert!(again.layers[0].is_dir());
}
