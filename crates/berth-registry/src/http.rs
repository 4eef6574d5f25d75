//! The `/v2/` HTTP surface (OCI Distribution Spec v1.1). Authentication happens
//! before this layer; here a request is parsed into a [`Route`], executed against the
//! [`Registry`], and every error is rendered once, as the spec's JSON error body.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest as _, Sha256};

use crate::body::Body;
use crate::content::BlobSource;
use crate::error::RegistryError;
use crate::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::names::{Digest, Reference, RepoName};
use crate::registry::Registry;
use crate::writer::{Pipeline, UploadWriter};

/// Default page size for tag and catalog listings without `n`.
const DEFAULT_PAGE: usize = 1000;

/// A parsed `/v2/` request path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
}

/// Splits a `/v2/...` path into a route. Repository names may contain `/`, so the
/// route is recognised from the end of the path.
pub fn parse_route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_string()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name.to_string()));
    }
    let (prefix, last) = rest.rsplit_once('/')?;
    if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload(name.to_string(), last.to_string()));
    }
    let (name, kind) = prefix.rsplit_once('/')?;
    let (name, last) = (name.to_string(), last.to_string());
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "referrers" => Some(Route::Referrers(name, last)),
        _ => None,
    }
}

/// Decoded `key=value` pairs of a query string.
pub fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Percent-decoding of a query component (`+` is a space in forms, but a literal in
/// the digests and tags used here, so it is kept).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The spec's error body for `e`.
pub fn error_response(e: &RegistryError) -> Response<Body> {
    let body = serde_json::json!({
        "errors": [{"code": e.code(), "message": e.to_string(), "detail": {}}]
    });
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, source = ?std::error::Error::source(e), "registry failure");
    } else {
        tracing::debug!(code = e.code(), error = %e, "registry request refused");
    }
    json_response(status, body.to_string())
}

/// An error response with an explicit code (used for auth and routing errors).
pub fn error_code_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": {}}]});
    json_response(status, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn empty(status: StatusCode, headers: &[(&'static str, String)]) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().insert(*k, hv(v));
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn upload_range(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Handles one authenticated `/v2/` request.
pub async fn handle<B>(reg: Arc<Registry>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let Some(route) = parse_route(req.uri().path()) else {
        return error_code_response(
            StatusCode::NOT_FOUND,
            "NAME_INVALID",
            "no such registry endpoint",
        );
    };
    match dispatch(reg, route, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn unsupported(method: &Method) -> RegistryError {
    RegistryError::Unsupported(format!("method {method} is not supported on this endpoint"))
}

async fn dispatch<B>(
    reg: Arc<Registry>,
    route: Route,
    req: Request<B>,
) -> Result<Response<Body>, RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let method = req.method().clone();
    let params = query_params(req.uri().query());
    match route {
        Route::Base => Ok(json_response(StatusCode::OK, "{}".into())),
        Route::Catalog => {
            if method != Method::GET {
                return Err(unsupported(&method));
            }
            let mut names: Vec<String> = reg.repos().into_iter().map(|r| r.name).collect();
            names.sort();
            let (page, link) = paginate(names, &params, "/v2/_catalog")?;
            let mut r = json_response(
                StatusCode::OK,
                serde_json::json!({ "repositories": page }).to_string(),
            );
            if let Some(l) = link {
                r.headers_mut().insert(header::LINK, hv(&l));
            }
            Ok(r)
        }
        Route::Tags(name) => {
            RepoName::parse(&name)?;
            if method != Method::GET {
                return Err(unsupported(&method));
            }
            let tags = reg.tags(&name)?;
            let (page, link) = paginate(tags, &params, &format!("/v2/{name}/tags/list"))?;
            let mut r = json_response(
                StatusCode::OK,
                serde_json::json!({ "name": name, "tags": page }).to_string(),
            );
            if let Some(l) = link {
                r.headers_mut().insert(header::LINK, hv(&l));
            }
            Ok(r)
        }
        Route::Manifest(name, reference) => {
            RepoName::parse(&name)?;
            let reference = Reference::parse(&reference)?;
            manifest(reg, method, name, reference, req).await
        }
        Route::Blob(name, digest) => {
            RepoName::parse(&name)?;
            let d = Digest::parse(&digest)?;
            blob(reg, method, name, d, req.headers()).await
        }
        Route::Referrers(name, digest) => {
            RepoName::parse(&name)?;
            let d = Digest::parse(&digest)?;
            if method != Method::GET {
                return Err(unsupported(&method));
            }
            let filter = param(&params, "artifactType");
            let list = reg.referrers(&name, &d, filter)?;
            let body =
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list});
            let mut r = json_response(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
            if filter.is_some() {
                r.headers_mut().insert(
                    "OCI-Filters-Applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok(r)
        }
        Route::Uploads(name) => {
            RepoName::parse(&name)?;
            if method != Method::POST {
                return Err(unsupported(&method));
            }
            start_upload(reg, name, &params, req).await
        }
        Route::Upload(name, id) => {
            RepoName::parse(&name)?;
            upload(reg, method, name, id, &params, req).await
        }
    }
}

fn paginate(
    items: Vec<String>,
    params: &[(String, String)],
    path: &str,
) -> Result<(Vec<String>, Option<String>), RegistryError> {
    let n = match param(params, "n") {
        Some(s) => s.parse::<usize>().map_err(|_| {
            RegistryError::PaginationInvalid(format!(
                "query parameter n must be a non-negative integer, got '{s}'"
            ))
        })?,
        None => DEFAULT_PAGE,
    };
    let last = param(params, "last");
    let rest: Vec<String> = items
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    let more = rest.len() > n;
    let page: Vec<String> = rest.into_iter().take(n).collect();
    let link = match (more, page.last()) {
        (true, Some(l)) => Some(format!("<{path}?n={n}&last={l}>; rel=\"next\"")),
        _ => None,
    };
    Ok((page, link))
}

async fn read_limited<B>(body: B, limit: usize) -> Result<Vec<u8>, RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| RegistryError::UploadInvalid(format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(RegistryError::SizeInvalid(format!(
                    "body is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

async fn manifest<B>(
    reg: Arc<Registry>,
    method: Method,
    name: String,
    reference: Reference,
    req: Request<B>,
) -> Result<Response<Body>, RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    match method {
        Method::GET | Method::HEAD => {
            let (rec, d, bytes) = reg.get_manifest(&name, &reference)?;
            let len = bytes.len();
            let mut r = Response::new(if method == Method::GET {
                Body::full(bytes)
            } else {
                Body::empty()
            });
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, hv(&rec.media_type));
            h.insert("Docker-Content-Digest", hv(d.as_str()));
            h.insert(header::ETAG, hv(&format!("\"{d}\"")));
            h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
            Ok(r)
        }
        Method::PUT => {
            let ct = header_str(req.headers(), "content-type").map(str::to_string);
            let bytes = read_limited(req.into_body(), MAX_MANIFEST_BYTES).await?;
            let reg2 = reg.clone();
            let (d, parsed) = tokio::task::spawn_blocking(move || {
                reg2.put_manifest(&name.clone(), &reference, ct.as_deref(), &bytes)
                    .map(|(d, m)| (d, m, name))
            })
            .await
            .map_err(|e| RegistryError::UploadInvalid(format!("manifest write aborted: {e}")))?
            .map(|(d, m, name)| ((d, name), m))?;
            let (d, name) = d;
            let mut headers = vec![
                ("Location", format!("/v2/{name}/manifests/{d}")),
                ("Docker-Content-Digest", d.to_string()),
            ];
            if let Some(s) = &parsed.subject {
                headers.push(("OCI-Subject", s.digest.clone()));
            }
            Ok(empty(StatusCode::CREATED, &headers))
        }
        Method::DELETE => {
            match reference {
                Reference::Digest(d) => reg.delete_manifest(&name, &d)?,
                Reference::Tag(t) => {
                    reg.delete_tag(&name, &t)?;
                }
            }
            Ok(empty(StatusCode::ACCEPTED, &[]))
        }
        m => Err(unsupported(&m)),
    }
}

/// Parses `Range: bytes=a-b` (a single range) against a blob of `size` bytes.
pub fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (size.saturating_sub(suffix), size.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && end < size).then_some((start, end))
}

async fn blob(
    reg: Arc<Registry>,
    method: Method,
    name: String,
    d: Digest,
    headers: &HeaderMap,
) -> Result<Response<Body>, RegistryError> {
    match method {
        Method::GET | Method::HEAD => {
            let source = reg.blob(&name, &d)?;
            let size = source.size();
            let range = match header_str(headers, "range") {
                Some(v) => match parse_range(v, size) {
                    Some(r) => Some(r),
                    None => {
                        let mut r = empty(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            &[("Content-Range", format!("bytes */{size}"))],
                        );
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/octet-stream"),
                        );
                        return Ok(r);
                    }
                },
                None => None,
            };
            let (start, len, status) = match range {
                Some((s, e)) => (s, e - s + 1, StatusCode::PARTIAL_CONTENT),
                None => (0, size, StatusCode::OK),
            };
            let body = if method != Method::GET || len == 0 {
                Body::empty()
            } else {
                match source {
                    BlobSource::Encrypted(dec) => Body::Decrypt {
                        dec,
                        pos: start,
                        end: start + len,
                    },
                    BlobSource::Plain { path, .. } => Body::file_range(path, start, len),
                }
            };
            let mut r = Response::new(body);
            *r.status_mut() = status;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
            h.insert("Docker-Content-Digest", hv(d.as_str()));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::ETAG, hv(&format!("\"{d}\"")));
            if status == StatusCode::PARTIAL_CONTENT {
                h.insert(
                    header::CONTENT_RANGE,
                    hv(&format!("bytes {start}-{}/{size}", start + len - 1)),
                );
            }
            Ok(r)
        }
        Method::DELETE => {
            reg.delete_blob(&name, &d)?;
            Ok(empty(
                StatusCode::ACCEPTED,
                &[("Docker-Content-Digest", d.to_string())],
            ))
        }
        m => Err(unsupported(&m)),
    }
}

fn upload_headers(name: &str, id: &str, len: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("Range", upload_range(len)),
        ("Docker-Upload-UUID", id.to_string()),
    ]
}

async fn start_upload<B>(
    reg: Arc<Registry>,
    name: String,
    params: &[(String, String)],
    req: Request<B>,
) -> Result<Response<Body>, RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if let (Some(mount), Some(from)) = (param(params, "mount"), param(params, "from")) {
        let d = Digest::parse(mount)?;
        if RepoName::parse(from).is_ok() && reg.mount(&name, from, &d)? {
            return Ok(empty(
                StatusCode::CREATED,
                &[
                    ("Location", format!("/v2/{name}/blobs/{d}")),
                    ("Docker-Content-Digest", d.to_string()),
                ],
            ));
        }
        // Spec: when the mount cannot be done, fall back to starting an upload.
    }
    let want = param(params, "digest").map(Digest::parse).transpose()?;
    let id = reg.start_upload(&name)?;
    match want {
        None => Ok(empty(StatusCode::ACCEPTED, &upload_headers(&name, &id, 0))),
        Some(d) => {
            let _writer = reg.begin_write(&id)?;
            let (path, len) = reg.upload(&name, &id)?;
            let (hasher, len) = append(&reg, &id, &path, len, req.into_body()).await?;
            finish(&reg, &name, &id, &d, hasher, len).await
        }
    }
}

async fn finish(
    reg: &Arc<Registry>,
    name: &str,
    id: &str,
    d: &Digest,
    hasher: Sha256,
    _len: u64,
) -> Result<Response<Body>, RegistryError> {
    let actual = hex::encode(hasher.finalize());
    let (reg2, name2, id2, d2) = (reg.clone(), name.to_string(), id.to_string(), d.clone());
    tokio::task::spawn_blocking(move || reg2.finish_upload(&name2, &id2, &d2, &actual))
        .await
        .map_err(|e| RegistryError::UploadInvalid(format!("upload commit aborted: {e}")))??;
    Ok(empty(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{d}")),
            ("Docker-Content-Digest", d.to_string()),
        ],
    ))
}

/// Appends a request body to an upload, hashing as it goes (see [`crate::writer`]).
async fn append<B>(
    reg: &Arc<Registry>,
    id: &str,
    path: &std::path::Path,
    len: u64,
    body: B,
) -> Result<(Sha256, u64), RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let hasher = {
        let (reg, id) = (reg.clone(), id.to_string());
        tokio::task::spawn_blocking(move || reg.take_hash(&id, len))
            .await
            .map_err(|e| RegistryError::UploadInvalid(format!("upload aborted: {e}")))??
    };
    let writer = UploadWriter::open(path, len).map_err(RegistryError::io("opening upload"))?;
    let mut pipeline = Pipeline::start(writer, hasher);
    let mut body = body;
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if pipeline.send(&data).await.is_err() {
                        break; // the writer failed; finish() reports why
                    }
                }
            }
            Err(e) => {
                failure = Some(RegistryError::UploadInvalid(format!(
                    "upload body ended early: {e}"
                )));
                break;
            }
        }
    }
    let (hasher, total) = pipeline
        .finish()
        .await
        .map_err(RegistryError::io("writing upload"))?;
    if let Some(e) = failure {
        // The bytes that arrived are kept: the upload can be resumed from them.
        reg.keep_hash(id, hasher, total);
        return Err(e);
    }
    Ok((hasher, total))
}

/// Parses `Content-Range: <start>-<end>` (the spec's form; `bytes ` prefix tolerated).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

async fn upload<B>(
    reg: Arc<Registry>,
    method: Method,
    name: String,
    id: String,
    params: &[(String, String)],
    req: Request<B>,
) -> Result<Response<Body>, RegistryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (_, len) = reg.upload(&name, &id)?;
    match method {
        Method::GET => Ok(empty(
            StatusCode::NO_CONTENT,
            &upload_headers(&name, &id, len),
        )),
        Method::DELETE => {
            reg.cancel_upload(&id);
            Ok(empty(StatusCode::NO_CONTENT, &[]))
        }
        Method::PATCH | Method::PUT => {
            let _writer = reg.begin_write(&id)?;
            let (path, len) = reg.upload(&name, &id)?;
            let want = if method == Method::PUT {
                let d = param(params, "digest").ok_or_else(|| {
                    RegistryError::DigestInvalid(
                        "PUT to finish an upload requires ?digest=<digest>".into(),
                    )
                })?;
                Some(Digest::parse(d)?)
            } else {
                None
            };
            let declared_len =
                header_str(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
            if let Some(cr) = header_str(req.headers(), "content-range") {
                let (start, end) = parse_content_range(cr).ok_or_else(|| {
                    RegistryError::UploadInvalid(format!(
                        "Content-Range '{cr}' must be <start>-<end>"
                    ))
                })?;
                if start != len {
                    return Ok(range_error(&name, &id, len, start));
                }
                if end < start {
                    return Err(RegistryError::UploadInvalid(format!(
                        "Content-Range '{cr}' ends before it starts"
                    )));
                }
                if let Some(cl) = declared_len {
                    if cl != end - start + 1 {
                        return Err(RegistryError::SizeInvalid(format!(
                            "Content-Length {cl} does not match Content-Range {start}-{end}"
                        )));
                    }
                }
            }
            let (hasher, new_len) = append(&reg, &id, &path, len, req.into_body()).await?;
            if let Some(cl) = declared_len {
                if new_len - len != cl {
                    reg.keep_hash(&id, hasher, new_len);
                    return Err(RegistryError::SizeInvalid(format!(
                        "received {} bytes but Content-Length said {cl}",
                        new_len - len
                    )));
                }
            }
            match want {
                None => {
                    reg.keep_hash(&id, hasher, new_len);
                    Ok(empty(
                        StatusCode::ACCEPTED,
                        &upload_headers(&name, &id, new_len),
                    ))
                }
                Some(d) => finish(&reg, &name, &id, &d, hasher, new_len).await,
            }
        }
        m => Err(unsupported(&m)),
    }
}

fn range_error(name: &str, id: &str, have: u64, got: u64) -> Response<Body> {
    let e = RegistryError::RangeInvalid { got, have };
    let mut r = error_response(&e);
    for (k, v) in upload_headers(name, id, have) {
        r.headers_mut().insert(k, hv(&v));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes are recognised from the end, so names with slashes and keywords work.
    #[test]
    fn routes() {
        assert_eq!(parse_route("/v2/"), Some(Route::Base));
        assert_eq!(parse_route("/v2"), Some(Route::Base));
        assert_eq!(parse_route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse_route("/v2/a/b/tags/list"),
            Some(Route::Tags("a/b".into()))
        );
        assert_eq!(
            parse_route("/v2/x/manifests/y/manifests/latest"),
            Some(Route::Manifest("x/manifests/y".into(), "latest".into()))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(Route::Uploads("a".into()))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/abc"),
            Some(Route::Upload("a".into(), "abc".into()))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/sha256:x"),
            Some(Route::Blob("a".into(), "sha256:x".into()))
        );
        assert_eq!(
            parse_route("/v2/a/referrers/d"),
            Some(Route::Referrers("a".into(), "d".into()))
        );
        assert_eq!(parse_route("/v2/a/unknown/x"), None);
        assert_eq!(parse_route("/v3/"), None);
    }

    /// Range headers: single ranges, suffixes, open ends; unsatisfiable ones refused.
    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    /// Pagination returns n items after `last` and a Link only when more remain.
    #[test]
    fn pagination() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = |q: &str| query_params(Some(q));
        let (page, link) = paginate(items.clone(), &p("n=2"), "/x").unwrap();
        assert_eq!(page, vec!["a", "b"]);
        assert_eq!(link.as_deref(), Some("</x?n=2&last=b>; rel=\"next\""));
        let (page, link) = paginate(items.clone(), &p("n=2&last=b"), "/x").unwrap();
        assert_eq!(page, vec!["c", "d"]);
        assert_eq!(link, None);
        assert!(paginate(items, &p("n=x"), "/x").is_err());
    }

    /// Percent-decoding never panics on multi-byte characters or truncated escapes.
    #[test]
    fn percent_decoding() {
        assert_eq!(pct_decode("a%2Fb"), "a/b");
        assert_eq!(pct_decode("%"), "%");
        assert_eq!(pct_decode("%4"), "%4");
        assert_eq!(pct_decode("%é1"), "%é1");
        assert_eq!(pct_decode("x%zz"), "x%zz");
    }

    /// Content-Range is parsed in the spec's form.
    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9)));
        assert_eq!(parse_content_range("x"), None);
    }
}
