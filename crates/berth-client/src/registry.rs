//! OCI Distribution client: pushes and pulls with Basic auth from ECR's
//! GetAuthorizationToken, digests verified on the way in.

use std::io::{Read, Write};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::{ApiClient, ApiError};

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot log in to the registry: {0}")]
    Login(#[source] ApiError),
    #[error("{code}: {message}")]
    Oci { code: String, message: String },
    #[error("registry answered HTTP {status} to {what}")]
    Status { status: u16, what: String },
    #[error("cannot reach the registry for {what}: {message}")]
    Transport { what: String, message: String },
    #[error("{what}: content does not match digest {expected} (got {actual})")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot write {what}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

/// A reader that reports how many bytes went through it.
struct Progress<'a, R> {
    inner: R,
    report: &'a dyn Fn(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.report)(n as u64);
        Ok(n)
    }
}

fn oci_error(resp: ureq::Response, what: &str) -> RegistryError {
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
            return RegistryError::Oci {
                code: e
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
        }
    }
    RegistryError::Status {
        status,
        what: what.to_string(),
    }
}

impl RegistryClient {
    /// Logs in with a password from GetAuthorizationToken.
    pub fn login(api: &ApiClient) -> Result<Self, RegistryError> {
        let out = api
            .ecr("GetAuthorizationToken", &json!({}))
            .map_err(RegistryError::Login)?;
        let token = out
            .pointer("/authorizationData/0/authorizationToken")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(RegistryClient {
            base: api.endpoint().to_string(),
            auth: format!("Basic {token}"),
            agent: ureq::AgentBuilder::new().redirects(0).build(),
        })
    }

    /// A client with an explicit password (user `AWS`).
    pub fn with_password(base: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        RegistryClient {
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Basic {token}"),
            agent: ureq::AgentBuilder::new().redirects(0).build(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn send(
        &self,
        r: ureq::Request,
        what: &str,
        body: Option<&mut dyn Read>,
    ) -> Result<ureq::Response, RegistryError> {
        let r = r.set("authorization", &self.auth);
        let resp = match body {
            Some(b) => r.send(b),
            None => r.call(),
        };
        match resp {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(_, resp)) => Err(oci_error(resp, what)),
            Err(e) => Err(RegistryError::Transport {
                what: what.to_string(),
                message: e.to_string(),
            }),
        }
    }

    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {digest}");
        match self.send(
            self.agent
                .head(&self.url(&format!("/v2/{repo}/blobs/{digest}"))),
            &what,
            None,
        ) {
            Ok(_) => Ok(true),
            Err(RegistryError::Status { status: 404, .. }) | Err(RegistryError::Oci { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Cross-repository mount; false when the registry started an upload instead.
    pub fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<bool, RegistryError> {
        let what = format!("mount {digest} from {from}");
        let r = self.agent.post(&self.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
        )));
        let resp = self.send(r, &what, None)?;
        if resp.status() == 201 {
            return Ok(true);
        }
        if let Some(loc) = resp.header("location") {
            let _ = self.send(self.agent.delete(&self.url(loc)), "cancel upload", None);
        }
        Ok(false)
    }

    /// Uploads a blob (POST, then one PUT with the whole body) unless it exists.
    pub fn push_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        data: &mut dyn Read,
        progress: &dyn Fn(u64),
    ) -> Result<bool, RegistryError> {
        if self.blob_exists(repo, digest)? {
            progress(size);
            return Ok(false);
        }
        let what = format!("upload of {digest}");
        let resp = self.send(
            self.agent
                .post(&self.url(&format!("/v2/{repo}/blobs/uploads/"))),
            &what,
            None,
        )?;
        let loc = resp.header("location").unwrap_or_default().to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .agent
            .put(&self.url(&format!("{loc}{sep}digest={digest}")))
            .set("content-type", "application/octet-stream")
            .set("content-length", &size.to_string());
        let mut reader = Progress {
            inner: data,
            report: progress,
        };
        self.send(put, &what, Some(&mut reader))?;
        Ok(true)
    }

    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let r = self
            .agent
            .put(&self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .set("content-type", media_type);
        let resp = self.send(r, &what, Some(&mut &bytes[..]))?;
        Ok(resp
            .header("docker-content-digest")
            .map(str::to_string)
            .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(bytes)))))
    }

    /// (media type, bytes, digest) of a manifest; the digest is checked when asked by digest.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Vec<u8>, String), RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let r = self
            .agent
            .get(&self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .set("accept", ACCEPT_MANIFESTS);
        let resp = self.send(r, &what, None)?;
        let mt = resp.header("content-type").unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(8 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Transport {
                what: what.clone(),
                message: e.to_string(),
            })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: reference.into(),
                actual: digest,
            });
        }
        Ok((mt, bytes, digest))
    }

    /// Streams a blob into `out`, verifying its sha256.
    pub fn get_blob(
        &self,
        repo: &str,
        digest: &str,
        out: &mut dyn Write,
        progress: &dyn Fn(u64),
    ) -> Result<u64, RegistryError> {
        let what = format!("blob {digest}");
        let resp = self.send(
            self.agent
                .get(&self.url(&format!("/v2/{repo}/blobs/{digest}"))),
            &what,
            None,
        )?;
        let mut reader = resp.into_reader();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| RegistryError::Transport {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|source| RegistryError::Write {
                    what: what.clone(),
                    source,
                })?;
            total += n as u64;
            progress(n as u64);
        }
        let actual = format!("sha256:{}", hex::encode(h.finalize()));
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.into(),
                actual,
            });
        }
        Ok(total)
    }
}
