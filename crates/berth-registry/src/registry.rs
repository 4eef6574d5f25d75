//! The registry model: repositories, manifests, tags and per-repository blob links,
//! kept in the state store; blob bytes in the [`ContentStore`].
//!
//! State keys (`:` and `@` never occur in repository names, so one repository's
//! prefix never matches another's):
//! - `registry/repos/<name>` → [`Repository`]
//! - `registry/manifests/<name>@<digest>` → [`ManifestRecord`]
//! - `registry/tags/<name>:<tag>` → digest
//! - `registry/links/<name>@<digest>` → blob size (the blob is in the repository)
//! - `registry/uploads/<id>` → repository name of an upload in progress

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_state::{Op, Store};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::content::ContentStore;
use crate::error::RegistryError;
use crate::manifest::{self, Descriptor, Manifest};
use crate::names::{validate_tag, Digest, Reference, RepoName};

/// A repository and the settings the registry enforces; `meta` is owned by the API
/// layer above (ECR: encryption, scanning, resource tags, lifecycle policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    /// Seconds since the epoch (fractional).
    pub created_at: f64,
    pub immutable_tags: bool,
    /// Blobs pushed or mounted into the repository are encrypted at rest.
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// What the registry remembers about a stored manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    /// Bytes of the manifest itself.
    pub size: u64,
    /// Bytes of its config and layers (ECR's `imageSizeInBytes`).
    pub image_size: u64,
    /// Seconds since the epoch (fractional).
    pub pushed_at: f64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Digests of blobs and child manifests it references.
    #[serde(default)]
    pub references: Vec<String>,
}

/// One image of a repository: a manifest with the tags pointing at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub digest: Digest,
    pub record: ManifestRecord,
    pub tags: Vec<String>,
}

/// What a garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_kept: usize,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    pub uploads_removed: usize,
}

/// Running state of a chunked upload kept between requests.
struct UploadHash {
    hasher: Sha256,
    len: u64,
}

pub struct Registry {
    store: Arc<dyn Store>,
    content: ContentStore,
    /// Serialises metadata read-modify-write sequences.
    meta: Mutex<()>,
    /// Held shared by anything that makes a blob referenced; exclusively by GC.
    gc: RwLock<()>,
    hashes: Mutex<HashMap<String, UploadHash>>,
    /// Uploads a request is writing to right now: one writer per upload.
    writing: Arc<Mutex<HashSet<String>>>,
}

/// Marks an upload as being written by one request; released on drop.
pub struct WriteGuard {
    id: String,
    writing: Arc<Mutex<HashSet<String>>>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("content", &self.content)
            .finish()
    }
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn repo_key(name: &str) -> String {
    format!("registry/repos/{name}")
}
fn manifest_key(name: &str, d: &str) -> String {
    format!("registry/manifests/{name}@{d}")
}
fn tag_key(name: &str, tag: &str) -> String {
    format!("registry/tags/{name}:{tag}")
}
fn link_key(name: &str, d: &str) -> String {
    format!("registry/links/{name}@{d}")
}
fn upload_key(id: &str) -> String {
    format!("registry/uploads/{id}")
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("record serialises")
}

impl Registry {
    /// Opens the registry whose blobs live under `root`.
    pub fn open(root: &Path, store: Arc<dyn Store>) -> Result<Self, RegistryError> {
        let content =
            ContentStore::open(root).map_err(RegistryError::io("opening content store"))?;
        Ok(Registry {
            store,
            content,
            meta: Mutex::new(()),
            gc: RwLock::new(()),
            hashes: Mutex::new(HashMap::new()),
            writing: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn lock_meta(&self) -> std::sync::MutexGuard<'_, ()> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- repositories -------------------------------------------------------

    pub fn create_repo(&self, repo: Repository) -> Result<Repository, RegistryError> {
        RepoName::parse(&repo.name)?;
        let _g = self.lock_meta();
        let key = repo_key(&repo.name);
        if self.store.get(&key).is_some() {
            return Err(RegistryError::RepoExists(repo.name));
        }
        self.store.put(&key, to_json(&repo))?;
        Ok(repo)
    }

    pub fn repo(&self, name: &str) -> Result<Repository, RegistryError> {
        RepoName::parse(name)?;
        self.store
            .get(&repo_key(name))
            .and_then(|e| serde_json::from_str(&e.value).ok())
            .ok_or_else(|| RegistryError::NameUnknown(name.to_string()))
    }

    pub fn repos(&self) -> Vec<Repository> {
        self.store
            .list("registry/repos/")
            .into_iter()
            .filter_map(|(_, e)| serde_json::from_str(&e.value).ok())
            .collect()
    }

    /// Applies `f` to a repository's record and stores the result.
    pub fn update_repo(
        &self,
        name: &str,
        f: impl FnOnce(&mut Repository) -> Result<(), RegistryError>,
    ) -> Result<Repository, RegistryError> {
        let _g = self.lock_meta();
        let mut repo = self.repo(name)?;
        f(&mut repo)?;
        self.store.put(&repo_key(name), to_json(&repo))?;
        Ok(repo)
    }

    /// Deletes a repository; with `force`, also its images.
    pub fn delete_repo(&self, name: &str, force: bool) -> Result<Repository, RegistryError> {
        let _g = self.lock_meta();
        let repo = self.repo(name)?;
        let manifests = self.store.list(&format!("registry/manifests/{name}@"));
        if !manifests.is_empty() && !force {
            return Err(RegistryError::RepoNotEmpty {
                name: name.to_string(),
                images: manifests.len(),
            });
        }
        let mut ops = vec![Op::Delete {
            key: repo_key(name),
        }];
        for prefix in [
            format!("registry/manifests/{name}@"),
            format!("registry/tags/{name}:"),
            format!("registry/links/{name}@"),
        ] {
            for (key, _) in self.store.list(&prefix) {
                ops.push(Op::Delete { key });
            }
        }
        self.store.txn(&[], ops)?;
        Ok(repo)
    }

    // ---- manifests ----------------------------------------------------------

    fn resolve(&self, repo: &str, reference: &Reference) -> Result<Digest, RegistryError> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => self
                .store
                .get(&tag_key(repo, t))
                .and_then(|e| Digest::parse(&e.value).ok())
                .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{t}"))),
        }
    }

    pub fn manifest_record(&self, repo: &str, d: &Digest) -> Option<ManifestRecord> {
        self.store
            .get(&manifest_key(repo, d.as_str()))
            .and_then(|e| serde_json::from_str(&e.value).ok())
    }

    /// A manifest's record, digest and bytes.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<(ManifestRecord, Digest, Vec<u8>), RegistryError> {
        self.repo(repo)?;
        let d = self.resolve(repo, reference)?;
        let rec = self
            .manifest_record(repo, &d)
            .ok_or_else(|| RegistryError::ManifestUnknown(d.to_string()))?;
        let bytes = self
            .content
            .read(&d)
            .map_err(RegistryError::io("reading manifest"))?;
        Ok((rec, d, bytes))
    }

    /// Stores a manifest under `reference` (a tag, or the digest it must have).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<(Digest, Manifest), RegistryError> {
        let repository = self.repo(repo)?;
        let parsed = manifest::parse(content_type, bytes)?;
        let digest = match reference {
            Reference::Digest(want) => {
                let got = match want.algorithm() {
                    "sha256" => Digest::sha256_of(bytes),
                    _ => {
                        return Err(RegistryError::DigestInvalid(format!(
                            "manifests must be addressed by sha256, got {want}"
                        )))
                    }
                };
                if &got != want {
                    return Err(RegistryError::DigestMismatch {
                        expected: want.to_string(),
                        actual: got.to_string(),
                    });
                }
                got
            }
            Reference::Tag(_) => Digest::sha256_of(bytes),
        };
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        for b in &parsed.blobs {
            let present = Digest::parse(&b.digest)
                .ok()
                .and_then(|d| self.content.stat(&d))
                .is_some();
            if !present || self.store.get(&link_key(repo, &b.digest)).is_none() {
                return Err(RegistryError::ManifestBlobUnknown(b.digest.clone()));
            }
        }
        for c in &parsed.children {
            if self.store.get(&manifest_key(repo, &c.digest)).is_none() {
                return Err(RegistryError::ManifestBlobUnknown(c.digest.clone()));
            }
        }
        self.content
            .put_bytes(bytes, repository.encrypted)
            .map_err(RegistryError::io("writing manifest"))?;
        let _g = self.lock_meta();
        let mut ops = Vec::new();
        if let Reference::Tag(tag) = reference {
            if let Some(current) = self.store.get(&tag_key(repo, tag)) {
                if repository.immutable_tags && current.value != digest.as_str() {
                    return Err(RegistryError::TagImmutable {
                        repo: repo.to_string(),
                        tag: tag.clone(),
                        current: current.value,
                    });
                }
            }
            ops.push(Op::Put {
                key: tag_key(repo, tag),
                value: digest.to_string(),
            });
        }
        let existing = self.manifest_record(repo, &digest);
        let record = ManifestRecord {
            media_type: parsed.media_type.clone(),
            size: bytes.len() as u64,
            image_size: parsed.blob_bytes() + bytes.len() as u64,
            pushed_at: existing
                .as_ref()
                .map(|r| r.pushed_at)
                .unwrap_or_else(now_secs),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed.annotations.clone(),
            references: parsed
                .blobs
                .iter()
                .chain(parsed.children.iter())
                .map(|d| d.digest.clone())
                .collect(),
        };
        ops.push(Op::Put {
            key: manifest_key(repo, digest.as_str()),
            value: to_json(&record),
        });
        self.store.txn(&[], ops)?;
        Ok((digest, parsed))
    }

    /// Tags of a repository, sorted.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        self.repo(repo)?;
        let prefix = format!("registry/tags/{repo}:");
        Ok(self
            .store
            .list(&prefix)
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect())
    }

    /// Every image (manifest) of a repository with its tags, ordered by digest.
    pub fn images(&self, repo: &str) -> Result<Vec<Image>, RegistryError> {
        self.repo(repo)?;
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        let tprefix = format!("registry/tags/{repo}:");
        for (k, e) in self.store.list(&tprefix) {
            tags.entry(e.value)
                .or_default()
                .push(k[tprefix.len()..].to_string());
        }
        let mprefix = format!("registry/manifests/{repo}@");
        Ok(self
            .store
            .list(&mprefix)
            .into_iter()
            .filter_map(|(k, e)| {
                let digest = Digest::parse(&k[mprefix.len()..]).ok()?;
                let record: ManifestRecord = serde_json::from_str(&e.value).ok()?;
                let tags = tags.remove(digest.as_str()).unwrap_or_default();
                Some(Image {
                    digest,
                    record,
                    tags,
                })
            })
            .collect())
    }

    /// Deletes a manifest and every tag that points at it.
    pub fn delete_manifest(&self, repo: &str, d: &Digest) -> Result<(), RegistryError> {
        self.repo(repo)?;
        let _g = self.lock_meta();
        if self.manifest_record(repo, d).is_none() {
            return Err(RegistryError::ManifestUnknown(d.to_string()));
        }
        let mut ops = vec![Op::Delete {
            key: manifest_key(repo, d.as_str()),
        }];
        for (k, e) in self.store.list(&format!("registry/tags/{repo}:")) {
            if e.value == d.as_str() {
                ops.push(Op::Delete { key: k });
            }
        }
        self.store.txn(&[], ops)?;
        Ok(())
    }

    /// Removes one tag; the manifest stays.
    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<Digest, RegistryError> {
        self.repo(repo)?;
        validate_tag(tag)?;
        let _g = self.lock_meta();
        let key = tag_key(repo, tag);
        let e = self
            .store
            .get(&key)
            .ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{tag}")))?;
        self.store.delete(&key)?;
        Digest::parse(&e.value).map_err(RegistryError::from)
    }

    /// Manifests whose `subject` is `d`, as descriptors, optionally filtered by artifact type.
    pub fn referrers(
        &self,
        repo: &str,
        d: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        Ok(self
            .images(repo)?
            .into_iter()
            .filter(|i| i.record.subject.as_deref() == Some(d.as_str()))
            .filter(|i| {
                artifact_type.is_none() || i.record.artifact_type.as_deref() == artifact_type
            })
            .map(|i| Descriptor {
                media_type: i.record.media_type,
                digest: i.digest.to_string(),
                size: i.record.size as i64,
                artifact_type: i.record.artifact_type,
                annotations: i.record.annotations,
                platform: None,
            })
            .collect())
    }

    // ---- blobs --------------------------------------------------------------

    /// A blob that is in `repo`, ready to be read.
    pub fn blob(
        &self,
        repo: &str,
        d: &Digest,
    ) -> Result<crate::content::BlobSource, RegistryError> {
        self.repo(repo)?;
        let linked = self.store.get(&link_key(repo, d.as_str())).is_some()
            || self.manifest_record(repo, d).is_some();
        match (linked, self.content.source(d)) {
            (true, Some(src)) => Ok(src),
            _ => Err(RegistryError::BlobUnknown(d.to_string())),
        }
    }

    /// Unlinks a blob from a repository (GC reclaims the bytes when nothing refers to it).
    pub fn delete_blob(&self, repo: &str, d: &Digest) -> Result<(), RegistryError> {
        self.repo(repo)?;
        let key = link_key(repo, d.as_str());
        if self.store.get(&key).is_none() {
            return Err(RegistryError::BlobUnknown(d.to_string()));
        }
        self.store.delete(&key)?;
        Ok(())
    }

    /// Cross-repository mount: links `d` into `repo` if `from` holds it.
    pub fn mount(&self, repo: &str, from: &str, d: &Digest) -> Result<bool, RegistryError> {
        let target = self.repo(repo)?;
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let Ok(size) = self.blob(from, d).map(|s| s.size()) else {
            return Ok(false);
        };
        if target.encrypted {
            self.content
                .ensure_encrypted(d)
                .map_err(RegistryError::io("encrypting mounted blob"))?;
        }
        self.store
            .put(&link_key(repo, d.as_str()), size.to_string())?;
        Ok(true)
    }

    // ---- uploads ------------------------------------------------------------

    pub fn start_upload(&self, repo: &str) -> Result<String, RegistryError> {
        self.repo(repo)?;
        let id = self
            .content
            .new_upload()
            .map_err(RegistryError::io("creating upload"))?;
        self.store.put(&upload_key(&id), repo.to_string())?;
        Ok(id)
    }

    /// Checks that upload `id` belongs to `repo`; returns its file and length.
    pub fn upload(&self, repo: &str, id: &str) -> Result<(PathBuf, u64), RegistryError> {
        let unknown = || RegistryError::UploadUnknown(id.to_string());
        let path = self.content.upload_path(id).ok_or_else(unknown)?;
        match self.store.get(&upload_key(id)) {
            Some(e) if e.value == repo => {}
            _ => return Err(unknown()),
        }
        let len = self.content.upload_len(id).ok_or_else(unknown)?;
        Ok((path, len))
    }

    /// Claims upload `id` for one writing request; a second concurrent writer is refused.
    pub fn begin_write(&self, id: &str) -> Result<WriteGuard, RegistryError> {
        let mut w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if !w.insert(id.to_string()) {
            return Err(RegistryError::UploadInvalid(format!(
                "upload {id} is being written by another request; send chunks one at a time"
            )));
        }
        Ok(WriteGuard {
            id: id.to_string(),
            writing: self.writing.clone(),
        })
    }

    /// Takes the running hash of an upload (rebuilt from the file if it was lost).
    pub fn take_hash(&self, id: &str, len: u64) -> Result<Sha256, RegistryError> {
        let cached = self
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match cached {
            Some(h) if h.len == len => Ok(h.hasher),
            _ => {
                let (h, n) = self
                    .content
                    .hash_upload(id)
                    .map_err(RegistryError::io("rehashing upload"))?;
                if n != len {
                    return Err(RegistryError::UploadInvalid(format!(
                        "upload {id} changed while it was being hashed"
                    )));
                }
                Ok(h)
            }
        }
    }

    /// Keeps the running hash of an upload for its next chunk.
    pub fn keep_hash(&self, id: &str, hasher: Sha256, len: u64) {
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), UploadHash { hasher, len });
    }

    /// Finishes an upload whose bytes hash to `actual`: verified against `want`,
    /// committed and linked into the repository.
    pub fn finish_upload(
        &self,
        repo: &str,
        id: &str,
        want: &Digest,
        actual_hex: &str,
    ) -> Result<u64, RegistryError> {
        if want.algorithm() != "sha256" || want.hex() != actual_hex {
            self.cancel_upload(id);
            return Err(RegistryError::DigestMismatch {
                expected: want.to_string(),
                actual: format!("sha256:{actual_hex}"),
            });
        }
        let encrypted = self.repo(repo)?.encrypted;
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let size = self
            .content
            .commit_upload(id, want, encrypted)
            .map_err(RegistryError::io("committing upload"))?;
        self.store.txn(
            &[],
            vec![
                Op::Put {
                    key: link_key(repo, want.as_str()),
                    value: size.to_string(),
                },
                Op::Delete {
                    key: upload_key(id),
                },
            ],
        )?;
        Ok(size)
    }

    pub fn cancel_upload(&self, id: &str) {
        self.content.cancel_upload(id);
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let _ = self.store.delete(&upload_key(id));
    }

    // ---- garbage collection ------------------------------------------------

    /// Removes blobs no manifest references and that are older than `grace_secs`
    /// (blobs of pushes still in flight are young, so they survive), and uploads
    /// abandoned for longer than `upload_ttl_secs`.
    pub fn gc(&self, grace_secs: u64, upload_ttl_secs: u64) -> Result<GcReport, RegistryError> {
        let _gc = self.gc.write().unwrap_or_else(|p| p.into_inner());
        let mut marked: HashSet<String> = HashSet::new();
        for (k, e) in self.store.list("registry/manifests/") {
            if let Some((_, d)) = k.rsplit_once('@') {
                marked.insert(d.to_string());
            }
            if let Ok(rec) = serde_json::from_str::<ManifestRecord>(&e.value) {
                marked.extend(rec.references);
            }
        }
        let now = now_secs() as u64;
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for (d, mtime) in self
            .content
            .list()
            .map_err(RegistryError::io("listing blobs"))?
        {
            if marked.contains(d.as_str()) || now.saturating_sub(mtime) < grace_secs {
                report.blobs_kept += 1;
            } else {
                doomed.push(d);
            }
        }
        // Links go first, in one transaction, then the files: a crash in between
        // leaves orphan files (removed by the next GC), never a link to nothing.
        let doomed_set: HashSet<&str> = doomed.iter().map(|d| d.as_str()).collect();
        let mut ops: Vec<Op> = self
            .store
            .list("registry/links/")
            .into_iter()
            .filter(|(k, _)| {
                k.rsplit_once('@')
                    .is_some_and(|(_, d)| doomed_set.contains(d))
            })
            .map(|(key, _)| Op::Delete { key })
            .collect();
        if !ops.is_empty() {
            self.store.txn(&[], std::mem::take(&mut ops))?;
        }
        for d in &doomed {
            report.bytes_removed += self.content.stat(d).unwrap_or(0);
            self.content
                .delete(d)
                .map_err(RegistryError::io("deleting blob"))?;
            report.blobs_removed += 1;
        }
        for (id, mtime) in self
            .content
            .list_uploads()
            .map_err(RegistryError::io("listing uploads"))?
        {
            if now.saturating_sub(mtime) >= upload_ttl_secs {
                self.content.cancel_upload(&id);
                ops.push(Op::Delete {
                    key: upload_key(&id),
                });
                report.uploads_removed += 1;
            }
        }
        if !ops.is_empty() {
            self.store.txn(&[], ops)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(berth_state::Embedded::open(&dir.path().join("state")).unwrap());
        let reg = Registry::open(&dir.path().join("registry"), store).unwrap();
        reg.create_repo(Repository {
            name: "app".into(),
            created_at: 0.0,
            immutable_tags: false,
            encrypted: false,
            meta: serde_json::Value::Null,
        })
        .unwrap();
        (dir, reg)
    }

    fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> Digest {
        let id = reg.start_upload(repo).unwrap();
        let (path, len) = reg.upload(repo, &id).unwrap();
        assert_eq!(len, 0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(data)
            .unwrap();
        let d = Digest::sha256_of(data);
        let mut h = reg.take_hash(&id, data.len() as u64).unwrap();
        use sha2::Digest as _;
        h.update([]);
        reg.finish_upload(repo, &id, &d, &hex::encode(h.finalize()))
            .unwrap();
        d
    }

    fn image_manifest(config: &Digest, layer: &Digest, clen: usize, llen: usize) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{clen}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{llen}}}]}}"#,
            manifest::OCI_MANIFEST
        )
        .into_bytes()
    }

    /// A manifest is accepted only when its blobs are in the repository, and tags resolve to it.
    #[test]
    fn manifest_needs_its_blobs() {
        let (_d, reg) = registry();
        let config = Digest::sha256_of(b"{}");
        let layer = push_blob(&reg, "app", b"layer");
        let m = image_manifest(&config, &layer, 2, 5);
        let tag = Reference::Tag("v1".into());
        assert!(matches!(
            reg.put_manifest("app", &tag, None, &m),
            Err(RegistryError::ManifestBlobUnknown(_))
        ));
        push_blob(&reg, "app", b"{}");
        let (d, _) = reg.put_manifest("app", &tag, None, &m).unwrap();
        let (rec, got, bytes) = reg.get_manifest("app", &tag).unwrap();
        assert_eq!((got, bytes), (d.clone(), m.clone()));
        assert_eq!(rec.image_size, 7 + m.len() as u64);
        assert_eq!(reg.tags("app").unwrap(), vec!["v1"]);
    }

    /// Immutable tags refuse a new digest but accept the same one again.
    #[test]
    fn immutable_tags() {
        let (_d, reg) = registry();
        reg.update_repo("app", |r| {
            r.immutable_tags = true;
            Ok(())
        })
        .unwrap();
        let c = push_blob(&reg, "app", b"{}");
        let l1 = push_blob(&reg, "app", b"one");
        let l2 = push_blob(&reg, "app", b"two");
        let tag = Reference::Tag("v1".into());
        let m1 = image_manifest(&c, &l1, 2, 3);
        reg.put_manifest("app", &tag, None, &m1).unwrap();
        reg.put_manifest("app", &tag, None, &m1).unwrap();
        assert!(matches!(
            reg.put_manifest("app", &tag, None, &image_manifest(&c, &l2, 2, 3)),
            Err(RegistryError::TagImmutable { .. })
        ));
    }

    /// GC removes exactly the blobs no manifest references, and unlinks them.
    #[test]
    fn gc_removes_only_unreferenced() {
        let (_d, reg) = registry();
        let c = push_blob(&reg, "app", b"{}");
        let keep = push_blob(&reg, "app", b"keep");
        let drop_me = push_blob(&reg, "app", b"drop");
        let (m, _) = reg
            .put_manifest(
                "app",
                &Reference::Tag("v1".into()),
                None,
                &image_manifest(&c, &keep, 2, 4),
            )
            .unwrap();
        // young blobs survive a GC with a grace period
        assert_eq!(reg.gc(3600, 3600).unwrap().blobs_removed, 0);
        let r = reg.gc(0, 3600).unwrap();
        assert_eq!(r.blobs_removed, 1);
        assert_eq!(r.blobs_kept, 3); // config, layer, manifest
        assert!(reg.blob("app", &drop_me).is_err());
        assert!(reg.blob("app", &keep).is_ok());
        assert!(reg.blob("app", &m).is_ok());
    }

    /// Cross-repository mounts need the blob in the source repository.
    #[test]
    fn mount_between_repositories() {
        let (_d, reg) = registry();
        reg.create_repo(Repository {
            name: "other".into(),
            created_at: 0.0,
            immutable_tags: false,
            encrypted: false,
            meta: serde_json::Value::Null,
        })
        .unwrap();
        let d = push_blob(&reg, "app", b"shared");
        assert!(reg.blob("other", &d).is_err());
        assert!(!reg
            .mount("other", "app", &Digest::sha256_of(b"nope"))
            .unwrap());
        assert!(reg.mount("other", "app", &d).unwrap());
        assert!(reg.blob("other", &d).is_ok());
    }

    /// Deleting a repository needs force while it holds images, and removes its tags.
    #[test]
    fn delete_repository() {
        let (_d, reg) = registry();
        let c = push_blob(&reg, "app", b"{}");
        let l = push_blob(&reg, "app", b"l");
        reg.put_manifest(
            "app",
            &Reference::Tag("v1".into()),
            None,
            &image_manifest(&c, &l, 2, 1),
        )
        .unwrap();
        assert!(matches!(
            reg.delete_repo("app", false),
            Err(RegistryError::RepoNotEmpty { images: 1, .. })
        ));
        reg.delete_repo("app", true).unwrap();
        assert!(matches!(
            reg.repo("app"),
            Err(RegistryError::NameUnknown(_))
        ));
        assert!(reg.store.list("registry/tags/app:").is_empty());
    }

    /// A digest mismatch at the end of an upload stores nothing.
    #[test]
    fn digest_mismatch_stores_nothing() {
        let (_d, reg) = registry();
        let id = reg.start_upload("app").unwrap();
        let wrong = Digest::sha256_of(b"other");
        assert!(matches!(
            reg.finish_upload("app", &id, &wrong, &hex::encode([0u8; 32])),
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(reg.blob("app", &wrong).is_err());
        assert!(reg.upload("app", &id).is_err());
    }
}
