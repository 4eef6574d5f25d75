//! Registry errors, each mapped once to the OCI Distribution Spec's error code and
//! HTTP status ("Error Codes" table of the spec).

use crate::manifest::ManifestError;
use crate::names::NameError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("repository '{0}' does not exist; create it first (aws ecr create-repository --repository-name {0})")]
    NameUnknown(String),
    #[error("repository '{0}' already exists")]
    RepoExists(String),
    #[error("repository '{name}' still holds {images} image(s); delete them first or use force")]
    RepoNotEmpty { name: String, images: usize },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("blob {0} is not in this repository")]
    BlobUnknown(String),
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(String),
    #[error("manifest references {0}, which is not in this repository; push it first")]
    ManifestBlobUnknown(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("upload {0} is unknown or was cancelled; start a new upload")]
    UploadUnknown(String),
    #[error("{0}")]
    UploadInvalid(String),
    #[error("content does not match digest {expected}: computed {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("chunk starts at byte {got} but the upload holds {have} bytes; send from byte {have}")]
    RangeInvalid { got: u64, have: u64 },
    #[error("{0}")]
    SizeInvalid(String),
    #[error("tag '{tag}' in repository '{repo}' is immutable and already points to {current}")]
    TagImmutable {
        repo: String,
        tag: String,
        current: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    PaginationInvalid(String),
    #[error("storage failure during {step}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("state store failure")]
    State(#[from] berth_state::StateError),
}

impl RegistryError {
    pub(crate) fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> RegistryError {
        move |source| RegistryError::Io { step, source }
    }

    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            NameUnknown(_) => "NAME_UNKNOWN",
            RepoExists(_) | RepoNotEmpty { .. } => "DENIED",
            Name(NameError::Digest(_)) | DigestInvalid(_) | DigestMismatch { .. } => {
                "DIGEST_INVALID"
            }
            Name(NameError::Tag(_)) => "TAG_INVALID",
            Name(_) => "NAME_INVALID",
            BlobUnknown(_) => "BLOB_UNKNOWN",
            ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(ManifestError::Unsupported(_)) => "MANIFEST_INVALID",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            UploadInvalid(_) | RangeInvalid { .. } => "BLOB_UPLOAD_INVALID",
            SizeInvalid(_) => "SIZE_INVALID",
            TagImmutable { .. } => "TAG_INVALID",
            Unsupported(_) => "UNSUPPORTED",
            PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            Io { .. } | State(_) => "UNKNOWN",
        }
    }

    /// The HTTP status the spec gives the code.
    pub fn status(&self) -> u16 {
        use RegistryError::*;
        match self {
            NameUnknown(_) | BlobUnknown(_) | ManifestUnknown(_) | UploadUnknown(_) => 404,
            RepoExists(_) | RepoNotEmpty { .. } => 409,
            RangeInvalid { .. } => 416,
            Unsupported(_) => 405,
            Io { .. } | State(_) => 500,
            _ => 400,
        }
    }
}
