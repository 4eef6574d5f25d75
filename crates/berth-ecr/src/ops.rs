//! One function per ECR operation, and the dispatch table.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use berth_registry::manifest;
use berth_registry::registry::now_secs;
use berth_registry::{Digest, Reference, Registry, RepoName, Repository};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::EcrError;
use crate::lifecycle::{self, Policy};
use crate::Context;

/// ECR's largest page.
const MAX_RESULTS: usize = 1000;
/// ECR's default page for DescribeRepositories/ListImages/DescribeImages.
const DEFAULT_RESULTS: usize = 100;
/// ECR's limit of tags per resource.
const MAX_TAGS: usize = 50;

/// ECR-only repository settings, stored in [`Repository::meta`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    scan_on_push: bool,
    #[serde(default)]
    encryption_type: Option<String>,
    #[serde(default)]
    kms_key: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    lifecycle_policy: Option<String>,
    #[serde(default)]
    lifecycle_evaluated_at: Option<f64>,
    #[serde(default)]
    preview: Option<Preview>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Preview {
    text: String,
    results: Vec<Value>,
}

fn meta_of(r: &Repository) -> Meta {
    serde_json::from_value(r.meta.clone()).unwrap_or_default()
}

/// The ECR API over one registry.
pub struct Ecr {
    reg: Arc<Registry>,
}

impl std::fmt::Debug for Ecr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecr").finish()
    }
}

fn input<T: DeserializeOwned>(body: &[u8]) -> Result<T, EcrError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| EcrError::Serialization(format!("could not parse the request body: {e}")))
}

fn page_bounds(
    next_token: Option<&str>,
    max_results: Option<i64>,
) -> Result<(usize, usize), EcrError> {
    let max = match max_results {
        None => DEFAULT_RESULTS,
        Some(m) if (1..=MAX_RESULTS as i64).contains(&m) => m as usize,
        Some(m) => {
            return Err(EcrError::InvalidParameter(format!(
                "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and 1000' (got {m})"
            )))
        }
    };
    let start = match next_token {
        None => 0,
        Some(t) => base64::engine::general_purpose::STANDARD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| {
                EcrError::InvalidParameter(
                    "Invalid parameter at 'nextToken': the token is not one berth issued".into(),
                )
            })?,
    };
    Ok((start, max))
}

fn next_token(start: usize, max: usize, total: usize) -> Option<String> {
    (start + max < total).then(|| {
        base64::engine::general_purpose::STANDARD.encode(format!("offset:{}", start + max))
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RepoInput {
    repository_name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<TagKv>>,
    image_tag_mutability: Option<String>,
    image_scanning_configuration: Option<ScanCfg>,
    encryption_configuration: Option<EncCfg>,
    force: Option<bool>,
    lifecycle_policy_text: Option<String>,
}

#[derive(Deserialize, Serialize, Clone)]
struct TagKv {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanCfg {
    #[serde(default)]
    scan_on_push: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncCfg {
    encryption_type: String,
    kms_key: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct ImageId {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl ImageId {
    fn to_json(&self) -> Value {
        let mut v = serde_json::Map::new();
        if let Some(d) = &self.image_digest {
            v.insert("imageDigest".into(), json!(d));
        }
        if let Some(t) = &self.image_tag {
            v.insert("imageTag".into(), json!(t));
        }
        Value::Object(v)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImagesInput {
    repository_name: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    filter: Option<TagFilter>,
    image_ids: Option<Vec<ImageId>>,
    image_manifest: Option<String>,
    image_manifest_media_type: Option<String>,
    image_tag: Option<String>,
    image_digest: Option<String>,
    accepted_media_types: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TagFilter {
    tag_status: Option<String>,
}

fn validate_tags(tags: &[TagKv]) -> Result<(), EcrError> {
    if tags.len() > MAX_TAGS {
        return Err(EcrError::TooManyTags(format!(
            "a resource can have at most {MAX_TAGS} tags, got {}",
            tags.len()
        )));
    }
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 || t.key.starts_with("aws:")
        {
            return Err(EcrError::InvalidTagParameter(format!(
                "tag key '{}' must be 1-128 characters not starting with 'aws:' and its value at most 256 characters",
                t.key
            )));
        }
    }
    Ok(())
}

fn mutability(s: Option<&str>) -> Result<bool, EcrError> {
    match s {
        None | Some("MUTABLE") => Ok(false),
        Some("IMMUTABLE") => Ok(true),
        Some(o) => Err(EcrError::InvalidParameter(format!(
            "Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum value set: [MUTABLE, IMMUTABLE]' (got '{o}')"
        ))),
    }
}

impl Ecr {
    pub fn new(reg: Arc<Registry>) -> Self {
        Ecr { reg }
    }

    /// Runs operation `op` (the part of X-Amz-Target after the dot) on `body`.
    pub fn call(&self, op: &str, body: &[u8], ctx: &Context) -> Result<Value, EcrError> {
        let span = tracing::info_span!("ecr", op);
        let _e = span.enter();
        match op {
            "CreateRepository" => self.create_repository(input(body)?, ctx),
            "DescribeRepositories" => self.describe_repositories(input(body)?, ctx),
            "DeleteRepository" => self.delete_repository(input(body)?, ctx),
            "ListImages" => self.list_images(input(body)?, ctx),
            "DescribeImages" => self.describe_images(input(body)?, ctx),
            "BatchGetImage" => self.batch_get_image(input(body)?, ctx),
            "BatchDeleteImage" => self.batch_delete_image(input(body)?, ctx),
            "PutImage" => self.put_image(input(body)?, ctx),
            "GetAuthorizationToken" => Ok(self.get_authorization_token(ctx)),
            "PutImageTagMutability" => self.put_image_tag_mutability(input(body)?, ctx),
            "PutImageScanningConfiguration" => self.put_scanning(input(body)?, ctx),
            "PutLifecyclePolicy" => self.put_lifecycle_policy(input(body)?, ctx),
            "GetLifecyclePolicy" => self.get_lifecycle_policy(input(body)?, ctx, false),
            "DeleteLifecyclePolicy" => self.get_lifecycle_policy(input(body)?, ctx, true),
            "StartLifecyclePolicyPreview" => self.start_preview(input(body)?, ctx),
            "GetLifecyclePolicyPreview" => self.get_preview(input(body)?, ctx),
            "TagResource" => self.tag_resource(input(body)?, ctx),
            "UntagResource" => self.untag_resource(input(body)?, ctx),
            "ListTagsForResource" => self.list_tags(input(body)?, ctx),
            other => Err(EcrError::UnknownOperation(format!(
                "operation {other} is not supported by berth's ECR API; see docs/aws-api.md for the supported operations"
            ))),
        }
    }

    fn reg_err(&self, ctx: &Context) -> impl Fn(berth_registry::RegistryError) -> EcrError + '_ {
        let account = ctx.account.clone();
        move |e| EcrError::from_registry(e, &account)
    }

    fn repo_name(&self, name: Option<String>) -> Result<String, EcrError> {
        let name = name.ok_or_else(|| {
            EcrError::InvalidParameter("Invalid parameter: 'repositoryName' is required".into())
        })?;
        RepoName::parse(&name).map_err(|e| {
            EcrError::InvalidParameter(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: {e}"
            ))
        })?;
        Ok(name)
    }

    fn repo(&self, name: Option<String>, ctx: &Context) -> Result<Repository, EcrError> {
        let name = self.repo_name(name)?;
        self.reg.repo(&name).map_err(self.reg_err(ctx))
    }

    fn arn(&self, ctx: &Context, name: &str) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            ctx.region, ctx.account
        )
    }

    fn repo_json(&self, r: &Repository, ctx: &Context) -> Value {
        let m = meta_of(r);
        let mut v = json!({
            "repositoryArn": self.arn(ctx, &r.name),
            "registryId": ctx.account,
            "repositoryName": r.name,
            "repositoryUri": format!("{}/{}", ctx.host, r.name),
            "createdAt": r.created_at,
            "imageTagMutability": if r.immutable_tags { "IMMUTABLE" } else { "MUTABLE" },
            "imageScanningConfiguration": {"scanOnPush": m.scan_on_push},
        });
        // Reported only when the repository's blobs really are encrypted at rest.
        if r.encrypted {
            let mut enc = json!({"encryptionType": m.encryption_type.clone().unwrap_or_else(|| "AES256".into())});
            if let Some(k) = &m.kms_key {
                enc["kmsKey"] = json!(k);
            }
            v["encryptionConfiguration"] = enc;
        }
        v
    }

    fn create_repository(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let immutable = mutability(i.image_tag_mutability.as_deref())?;
        let tags = i.tags.unwrap_or_default();
        validate_tags(&tags)?;
        let mut meta = Meta {
            scan_on_push: i
                .image_scanning_configuration
                .map(|s| s.scan_on_push)
                .unwrap_or(false),
            tags: tags.into_iter().map(|t| (t.key, t.value)).collect(),
            ..Meta::default()
        };
        if let Some(e) = i.encryption_configuration {
            match e.encryption_type.as_str() {
                "AES256" => {
                    if e.kms_key.is_some() {
                        return Err(EcrError::InvalidParameter(
                            "Invalid parameter: kmsKey can only be given with encryptionType KMS".into(),
                        ));
                    }
                }
                "KMS" | "KMS_DSSE" => {}
                o => {
                    return Err(EcrError::InvalidParameter(format!(
                        "Invalid parameter at 'encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]' (got '{o}')"
                    )))
                }
            }
            meta.encryption_type = Some(e.encryption_type);
            meta.kms_key = e.kms_key;
        }
        let repo = Repository {
            name,
            created_at: now_secs(),
            immutable_tags: immutable,
            encrypted: meta.encryption_type.is_some(),
            meta: serde_json::to_value(&meta).expect("meta serialises"),
        };
        let repo = self.reg.create_repo(repo).map_err(self.reg_err(ctx))?;
        tracing::info!(repository = %repo.name, "repository created");
        Ok(json!({"repository": self.repo_json(&repo, ctx)}))
    }

    fn describe_repositories(&self, i: Value, ctx: &Context) -> Result<Value, EcrError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct In {
            repository_names: Option<Vec<String>>,
            next_token: Option<String>,
            max_results: Option<i64>,
        }
        let i: In =
            serde_json::from_value(i).map_err(|e| EcrError::Serialization(e.to_string()))?;
        if let Some(names) = i.repository_names {
            if i.next_token.is_some() || i.max_results.is_some() {
                return Err(EcrError::InvalidParameter(
                    "Invalid parameter: maxResults and nextToken cannot be used with repositoryNames".into(),
                ));
            }
            let mut out = Vec::new();
            for n in names {
                let r = self.repo(Some(n), ctx)?;
                out.push(self.repo_json(&r, ctx));
            }
            return Ok(json!({"repositories": out}));
        }
        let all = self.reg.repos();
        let (start, max) = page_bounds(i.next_token.as_deref(), i.max_results)?;
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(max)
            .map(|r| self.repo_json(r, ctx))
            .collect();
        let mut out = json!({"repositories": page});
        if let Some(t) = next_token(start, max, all.len()) {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    fn delete_repository(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let repo = self
            .reg
            .delete_repo(&name, i.force.unwrap_or(false))
            .map_err(self.reg_err(ctx))?;
        tracing::info!(repository = %name, "repository deleted");
        Ok(json!({"repository": self.repo_json(&repo, ctx)}))
    }

    fn images(
        &self,
        name: &str,
        filter: Option<&TagFilter>,
        ctx: &Context,
    ) -> Result<Vec<berth_registry::Image>, EcrError> {
        let mut images = self.reg.images(name).map_err(self.reg_err(ctx))?;
        match filter.and_then(|f| f.tag_status.as_deref()) {
            None | Some("ANY") => {}
            Some("TAGGED") => images.retain(|i| !i.tags.is_empty()),
            Some("UNTAGGED") => images.retain(|i| i.tags.is_empty()),
            Some(o) => {
                return Err(EcrError::InvalidParameter(format!(
                    "Invalid parameter at 'filter.tagStatus' failed to satisfy constraint: 'Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]' (got '{o}')"
                )))
            }
        }
        Ok(images)
    }

    fn list_images(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let images = self.images(&name, i.filter.as_ref(), ctx)?;
        // One imageId per (digest, tag) pair, as ECR lists them.
        let mut ids = Vec::new();
        for img in &images {
            if img.tags.is_empty() {
                ids.push(json!({"imageDigest": img.digest.as_str()}));
            }
            for t in &img.tags {
                ids.push(json!({"imageDigest": img.digest.as_str(), "imageTag": t}));
            }
        }
        let (start, max) = page_bounds(i.next_token.as_deref(), i.max_results)?;
        let mut out = json!({"imageIds": ids.iter().skip(start).take(max).collect::<Vec<_>>()});
        if let Some(t) = next_token(start, max, ids.len()) {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    fn image_detail(&self, name: &str, img: &berth_registry::Image, ctx: &Context) -> Value {
        let mut v = json!({
            "registryId": ctx.account,
            "repositoryName": name,
            "imageDigest": img.digest.as_str(),
            "imageSizeInBytes": img.record.image_size,
            "imagePushedAt": img.record.pushed_at,
            "imageManifestMediaType": img.record.media_type,
            "imageStatus": "ACTIVE",
        });
        if !img.tags.is_empty() {
            v["imageTags"] = json!(img.tags);
        }
        if let Some(a) = &img.record.artifact_type {
            v["artifactMediaType"] = json!(a);
        }
        if let Some(s) = &img.record.subject {
            v["subjectManifestDigest"] = json!(s);
        }
        v
    }

    /// Finds the image an imageId names, or the failure ECR reports for it.
    fn find<'a>(
        &self,
        images: &'a [berth_registry::Image],
        id: &ImageId,
    ) -> Result<&'a berth_registry::Image, (&'static str, String)> {
        if id.image_digest.is_none() && id.image_tag.is_none() {
            return Err((
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null".into(),
            ));
        }
        if let Some(d) = &id.image_digest {
            if Digest::parse(d).is_err() {
                return Err(("InvalidImageDigest", format!("Invalid request parameters: image digest '{d}' should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")));
            }
        }
        if let Some(t) = &id.image_tag {
            if berth_registry::names::validate_tag(t).is_err() {
                return Err((
                    "InvalidImageTag",
                    format!("Invalid request parameters: image tag '{t}' is not a valid tag"),
                ));
            }
        }
        let found = images.iter().find(|img| {
            id.image_digest
                .as_deref()
                .is_none_or(|d| img.digest.as_str() == d)
                && id.image_tag.as_ref().is_none_or(|t| img.tags.contains(t))
        });
        match found {
            Some(f) => Ok(f),
            None => {
                if let (Some(_), Some(t)) = (&id.image_digest, &id.image_tag) {
                    if images.iter().any(|i| i.tags.contains(t)) {
                        return Err(("ImageTagDoesNotMatchDigest", "Invalid request parameters: the image tag does not match the image digest".into()));
                    }
                }
                Err(("ImageNotFound", "Requested image not found".into()))
            }
        }
    }

    fn describe_images(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let images = self.images(&name, i.filter.as_ref(), ctx)?;
        let details: Vec<Value> = match &i.image_ids {
            Some(ids) => {
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                for id in ids {
                    match self.find(&images, id) {
                        Ok(img) => {
                            if seen.insert(img.digest.clone()) {
                                out.push(self.image_detail(&name, img, ctx));
                            }
                        }
                        Err((_, _)) => {
                            return Err(EcrError::ImageNotFound(format!(
                                "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{}'",
                                id.to_json(),
                                ctx.account
                            )))
                        }
                    }
                }
                out
            }
            None => images
                .iter()
                .map(|img| self.image_detail(&name, img, ctx))
                .collect(),
        };
        let (start, max) = page_bounds(i.next_token.as_deref(), i.max_results)?;
        let mut out =
            json!({"imageDetails": details.iter().skip(start).take(max).collect::<Vec<_>>()});
        if let Some(t) = next_token(start, max, details.len()) {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    fn batch_get_image(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let images = self.images(&name, None, ctx)?;
        let ids = i.image_ids.unwrap_or_default();
        if ids.is_empty() || ids.len() > 100 {
            return Err(EcrError::InvalidParameter("Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length between 1 and 100'".into()));
        }
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for id in ids {
            match self.find(&images, &id) {
                Ok(img) => {
                    if let Some(accepted) = &i.accepted_media_types {
                        if !accepted.iter().any(|a| a == &img.record.media_type) {
                            failures.push(json!({"imageId": id.to_json(), "failureCode": "ImageNotFound", "failureReason": format!("The image's media type {} is not among acceptedMediaTypes", img.record.media_type)}));
                            continue;
                        }
                    }
                    let (_, d, bytes) = self
                        .reg
                        .get_manifest(&name, &Reference::Digest(img.digest.clone()))
                        .map_err(self.reg_err(ctx))?;
                    let mut image_id = json!({"imageDigest": d.as_str()});
                    if let Some(t) = &id.image_tag {
                        image_id["imageTag"] = json!(t);
                    }
                    out.push(json!({
                        "registryId": ctx.account,
                        "repositoryName": name,
                        "imageId": image_id,
                        "imageManifest": String::from_utf8_lossy(&bytes),
                        "imageManifestMediaType": img.record.media_type,
                    }));
                }
                Err((code, reason)) => failures.push(
                    json!({"imageId": id.to_json(), "failureCode": code, "failureReason": reason}),
                ),
            }
        }
        Ok(json!({"images": out, "failures": failures}))
    }

    fn batch_delete_image(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let ids = i.image_ids.unwrap_or_default();
        if ids.is_empty() || ids.len() > 100 {
            return Err(EcrError::InvalidParameter("Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length between 1 and 100'".into()));
        }
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for id in ids {
            let images = self.images(&name, None, ctx)?;
            let img = match self.find(&images, &id) {
                Ok(img) => img.clone(),
                Err((code, reason)) => {
                    failures.push(json!({"imageId": id.to_json(), "failureCode": code, "failureReason": reason}));
                    continue;
                }
            };
            match (&id.image_tag, &id.image_digest) {
                // A tag alone removes the tag; the image goes when its last tag does (ECR).
                (Some(t), None) if img.tags.len() > 1 => {
                    self.reg.delete_tag(&name, t).map_err(self.reg_err(ctx))?;
                    deleted.push(json!({"imageDigest": img.digest.as_str(), "imageTag": t}));
                }
                _ => {
                    let referenced = images.iter().any(|other| {
                        other.digest != img.digest
                            && other
                                .record
                                .references
                                .iter()
                                .any(|r| r == img.digest.as_str())
                    });
                    if referenced {
                        failures.push(json!({"imageId": id.to_json(), "failureCode": "ImageReferencedByManifestList", "failureReason": "Requested image is referenced by an image index; delete the index first"}));
                        continue;
                    }
                    self.reg
                        .delete_manifest(&name, &img.digest)
                        .map_err(self.reg_err(ctx))?;
                    if img.tags.is_empty() {
                        deleted.push(json!({"imageDigest": img.digest.as_str()}));
                    }
                    for t in &img.tags {
                        deleted.push(json!({"imageDigest": img.digest.as_str(), "imageTag": t}));
                    }
                }
            }
        }
        Ok(json!({"imageIds": deleted, "failures": failures}))
    }

    fn put_image(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let body = i.image_manifest.ok_or_else(|| {
            EcrError::InvalidParameter("Invalid parameter: 'imageManifest' is required".into())
        })?;
        let reference = match (&i.image_tag, &i.image_digest) {
            (Some(t), _) => Reference::parse(t).map_err(|e| {
                EcrError::InvalidParameter(format!("Invalid parameter at 'imageTag': {e}"))
            })?,
            (None, Some(d)) => Reference::parse(d).map_err(|e| {
                EcrError::InvalidParameter(format!("Invalid parameter at 'imageDigest': {e}"))
            })?,
            (None, None) => Reference::Digest(Digest::sha256_of(body.as_bytes())),
        };
        if let (Some(_), Some(want)) = (&i.image_tag, &i.image_digest) {
            let got = Digest::sha256_of(body.as_bytes());
            if got.as_str() != want {
                return Err(EcrError::ImageDigestDoesNotMatch(format!(
                    "Invalid parameter at 'imageDigest': {want} does not match the manifest's digest {got}"
                )));
            }
        }
        let digest = Digest::sha256_of(body.as_bytes());
        // ECR refuses a PutImage that changes nothing.
        let images = self.reg.images(&name).map_err(self.reg_err(ctx))?;
        if let Some(existing) = images.iter().find(|img| img.digest == digest) {
            let unchanged = match &i.image_tag {
                Some(t) => existing.tags.contains(t),
                None => true,
            };
            if unchanged {
                return Err(EcrError::ImageAlreadyExists(format!(
                    "Image with digest '{digest}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                    i.image_tag.as_deref().unwrap_or(""),
                    ctx.account
                )));
            }
        }
        let mt = i.image_manifest_media_type.as_deref();
        if let Some(m) = mt {
            if !manifest::SUPPORTED.contains(&m) {
                return Err(EcrError::InvalidParameter(format!("Invalid parameter at 'imageManifestMediaType': {m} is not a supported manifest media type")));
            }
        }
        let (d, parsed) = self
            .reg
            .put_manifest(&name, &reference, mt, body.as_bytes())
            .map_err(self.reg_err(ctx))?;
        let mut image_id = json!({"imageDigest": d.as_str()});
        if let Some(t) = &i.image_tag {
            image_id["imageTag"] = json!(t);
        }
        Ok(json!({"image": {
            "registryId": ctx.account,
            "repositoryName": name,
            "imageId": image_id,
            "imageManifest": body,
            "imageManifestMediaType": parsed.media_type,
        }}))
    }

    fn get_authorization_token(&self, ctx: &Context) -> Value {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("AWS:{}", ctx.registry_password));
        json!({"authorizationData": [{
            "authorizationToken": token,
            "expiresAt": ctx.password_expires_at,
            "proxyEndpoint": format!("http://{}", ctx.host),
        }]})
    }

    fn put_image_tag_mutability(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let m = i.image_tag_mutability.as_deref().ok_or_else(|| {
            EcrError::InvalidParameter("Invalid parameter: 'imageTagMutability' is required".into())
        })?;
        let immutable = mutability(Some(m))?;
        self.reg
            .update_repo(&name, |r| {
                r.immutable_tags = immutable;
                Ok(())
            })
            .map_err(self.reg_err(ctx))?;
        Ok(json!({"registryId": ctx.account, "repositoryName": name, "imageTagMutability": m}))
    }

    fn put_scanning(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let scan = i
            .image_scanning_configuration
            .map(|s| s.scan_on_push)
            .unwrap_or(false);
        self.update_meta(&name, ctx, |m| {
            m.scan_on_push = scan;
            Ok(())
        })?;
        Ok(
            json!({"registryId": ctx.account, "repositoryName": name, "imageScanningConfiguration": {"scanOnPush": scan}}),
        )
    }

    fn update_meta(
        &self,
        name: &str,
        ctx: &Context,
        f: impl FnOnce(&mut Meta) -> Result<(), EcrError>,
    ) -> Result<Meta, EcrError> {
        let mut failure = None;
        let repo = self.reg.update_repo(name, |r| {
            let mut m = meta_of(r);
            if let Err(e) = f(&mut m) {
                failure = Some(e);
                return Err(berth_registry::RegistryError::Unsupported("aborted".into()));
            }
            r.meta = serde_json::to_value(&m).expect("meta serialises");
            Ok(())
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let repo = repo.map_err(self.reg_err(ctx))?;
        Ok(meta_of(&repo))
    }

    fn parse_policy(text: &str) -> Result<Policy, EcrError> {
        if text.len() < 100 || text.len() > 30720 {
            return Err(EcrError::InvalidParameter(format!(
                "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Member must have length between 100 and 30720' (got {})",
                text.len()
            )));
        }
        Policy::parse(text).map_err(|e| {
            EcrError::InvalidParameter(format!(
                "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: '{e}'"
            ))
        })
    }

    fn put_lifecycle_policy(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let name = self.repo_name(i.repository_name)?;
        let text = i.lifecycle_policy_text.ok_or_else(|| {
            EcrError::InvalidParameter(
                "Invalid parameter: 'lifecyclePolicyText' is required".into(),
            )
        })?;
        Self::parse_policy(&text)?;
        let t2 = text.clone();
        self.update_meta(&name, ctx, |m| {
            m.lifecycle_policy = Some(t2);
            Ok(())
        })?;
        Ok(json!({"registryId": ctx.account, "repositoryName": name, "lifecyclePolicyText": text}))
    }

    fn get_lifecycle_policy(
        &self,
        i: RepoInput,
        ctx: &Context,
        delete: bool,
    ) -> Result<Value, EcrError> {
        let repo = self.repo(i.repository_name, ctx)?;
        let m = meta_of(&repo);
        let text = m
            .lifecycle_policy
            .clone()
            .ok_or_else(|| EcrError::LifecyclePolicyNotFound {
                name: repo.name.clone(),
                registry: ctx.account.clone(),
            })?;
        if delete {
            self.update_meta(&repo.name, ctx, |m| {
                m.lifecycle_policy = None;
                Ok(())
            })?;
        }
        let mut out = json!({"registryId": ctx.account, "repositoryName": repo.name, "lifecyclePolicyText": text});
        if let Some(t) = m.lifecycle_evaluated_at {
            out["lastEvaluatedAt"] = json!(t);
        }
        Ok(out)
    }

    fn start_preview(&self, i: RepoInput, ctx: &Context) -> Result<Value, EcrError> {
        let repo = self.repo(i.repository_name, ctx)?;
        let text = match i.lifecycle_policy_text {
            Some(t) => t,
            None => meta_of(&repo).lifecycle_policy.ok_or_else(|| {
                EcrError::LifecyclePolicyNotFound {
                    name: repo.name.clone(),
                    registry: ctx.account.clone(),
                }
            })?,
        };
        let policy = Self::parse_policy(&text)?;
        let images = lifecycle_images(&self.reg, &repo.name).map_err(self.reg_err(ctx))?;
        let results: Vec<Value> = policy
            .evaluate(&images, now_secs() as u64)
            .into_iter()
            .map(|x| {
                let mut v = json!({
                    "imageDigest": x.digest,
                    "imagePushedAt": x.pushed_at_unix,
                    "action": {"type": "EXPIRE"},
                    "appliedRulePriority": x.rule_priority,
                });
                if !x.tags.is_empty() {
                    v["imageTags"] = json!(x.tags);
                }
                v
            })
            .collect();
        let t2 = text.clone();
        self.update_meta(&repo.name, ctx, |m| {
            m.preview = Some(Preview { text: t2, results });
            Ok(())
        })?;
        Ok(
            json!({"registryId": ctx.account, "repositoryName": repo.name, "lifecyclePolicyText": text, "status": "COMPLETE"}),
        )
    }

    fn get_preview(&self, i: ImagesInput, ctx: &Context) -> Result<Value, EcrError> {
        let repo = self.repo(i.repository_name, ctx)?;
        let p = meta_of(&repo)
            .preview
            .ok_or_else(|| EcrError::LifecyclePolicyPreviewNotFound {
                name: repo.name.clone(),
                registry: ctx.account.clone(),
            })?;
        let (start, max) = page_bounds(i.next_token.as_deref(), i.max_results)?;
        let mut out = json!({
            "registryId": ctx.account,
            "repositoryName": repo.name,
            "lifecyclePolicyText": p.text,
            "status": "COMPLETE",
            "previewResults": p.results.iter().skip(start).take(max).collect::<Vec<_>>(),
            "summary": {"expiringImageTotalCount": p.results.len()},
        });
        if let Some(t) = next_token(start, max, p.results.len()) {
            out["nextToken"] = json!(t);
        }
        Ok(out)
    }

    fn repo_from_arn(&self, arn: Option<String>, ctx: &Context) -> Result<String, EcrError> {
        let arn = arn.ok_or_else(|| {
            EcrError::InvalidParameter("Invalid parameter: 'resourceArn' is required".into())
        })?;
        let name = arn
            .strip_prefix("arn:aws:ecr:")
            .and_then(|r| r.split_once(":repository/"))
            .map(|(_, n)| n.to_string())
            .ok_or_else(|| EcrError::InvalidParameter(format!("Invalid parameter at 'resourceArn': '{arn}' is not a repository ARN (arn:aws:ecr:REGION:ACCOUNT:repository/NAME)")))?;
        self.repo(Some(name.clone()), ctx)?;
        Ok(name)
    }

    fn tag_resource(&self, i: Value, ctx: &Context) -> Result<Value, EcrError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct In {
            resource_arn: Option<String>,
            tags: Vec<TagKv>,
        }
        let i: In =
            serde_json::from_value(i).map_err(|e| EcrError::Serialization(e.to_string()))?;
        let name = self.repo_from_arn(i.resource_arn, ctx)?;
        validate_tags(&i.tags)?;
        self.update_meta(&name, ctx, |m| {
            for t in i.tags {
                m.tags.insert(t.key, t.value);
            }
            if m.tags.len() > MAX_TAGS {
                return Err(EcrError::TooManyTags(format!(
                    "a resource can have at most {MAX_TAGS} tags"
                )));
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn untag_resource(&self, i: Value, ctx: &Context) -> Result<Value, EcrError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct In {
            resource_arn: Option<String>,
            tag_keys: Vec<String>,
        }
        let i: In =
            serde_json::from_value(i).map_err(|e| EcrError::Serialization(e.to_string()))?;
        let name = self.repo_from_arn(i.resource_arn, ctx)?;
        self.update_meta(&name, ctx, |m| {
            for k in i.tag_keys {
                m.tags.remove(&k);
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn list_tags(&self, i: Value, ctx: &Context) -> Result<Value, EcrError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct In {
            resource_arn: Option<String>,
        }
        let i: In =
            serde_json::from_value(i).map_err(|e| EcrError::Serialization(e.to_string()))?;
        let name = self.repo_from_arn(i.resource_arn, ctx)?;
        let m = meta_of(&self.reg.repo(&name).map_err(self.reg_err(ctx))?);
        let tags: Vec<Value> = m
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        Ok(json!({"tags": tags}))
    }
}

fn lifecycle_images(
    reg: &Registry,
    name: &str,
) -> Result<Vec<lifecycle::Image>, berth_registry::RegistryError> {
    Ok(reg
        .images(name)?
        .into_iter()
        .map(|i| lifecycle::Image {
            digest: i.digest.to_string(),
            tags: i.tags,
            pushed_at_unix: i.record.pushed_at as u64,
        })
        .collect())
}

/// Applies every repository's lifecycle policy now: expired images are deleted (their
/// blobs become garbage for the next GC). Returns how many images expired.
pub fn apply_lifecycle_policies(reg: &Registry, now_unix: u64) -> usize {
    let mut expired = 0;
    for repo in reg.repos() {
        let m = meta_of(&repo);
        let Some(text) = m.lifecycle_policy else {
            continue;
        };
        let Ok(policy) = Policy::parse(&text) else {
            continue;
        };
        let Ok(images) = lifecycle_images(reg, &repo.name) else {
            continue;
        };
        for x in policy.evaluate(&images, now_unix) {
            if let Ok(d) = Digest::parse(&x.digest) {
                match reg.delete_manifest(&repo.name, &d) {
                    Ok(()) => {
                        expired += 1;
                        tracing::info!(repository = %repo.name, digest = %d, rule = x.rule_priority, "lifecycle policy expired image");
                    }
                    Err(e) => {
                        tracing::warn!(repository = %repo.name, error = %e, "lifecycle expiry failed")
                    }
                }
            }
        }
        let _ = reg.update_repo(&repo.name, |r| {
            let mut m = meta_of(r);
            m.lifecycle_evaluated_at = Some(now_unix as f64);
            r.meta = serde_json::to_value(&m).expect("meta serialises");
            Ok(())
        });
    }
    expired
}
