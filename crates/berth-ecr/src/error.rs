//! ECR's error types, named as in botocore's `ecr` model; rendered to AWS JSON by the
//! API front door.

use berth_registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Validation(String),
    #[error(
        "The repository with name '{name}' already exists in the registry with id '{registry}'"
    )]
    RepositoryAlreadyExists { name: String, registry: String },
    #[error(
        "The repository with name '{name}' does not exist in the registry with id '{registry}'"
    )]
    RepositoryNotFound { name: String, registry: String },
    #[error("The repository with name '{name}' in registry with id '{registry}' cannot be deleted because it still contains images")]
    RepositoryNotEmpty { name: String, registry: String },
    #[error("{0}")]
    ImageNotFound(String),
    #[error("{0}")]
    ImageAlreadyExists(String),
    #[error("{0}")]
    ImageTagAlreadyExists(String),
    #[error("{0}")]
    ImageDigestDoesNotMatch(String),
    #[error("{0}")]
    LayersNotFound(String),
    #[error("{0}")]
    ReferencedImagesNotFound(String),
    #[error("Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{registry}'")]
    LifecyclePolicyNotFound { name: String, registry: String },
    #[error("There is no lifecycle policy preview for the repository with name '{name}' in the registry with id '{registry}'")]
    LifecyclePolicyPreviewNotFound { name: String, registry: String },
    #[error("{0}")]
    InvalidTagParameter(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    Serialization(String),
    #[error("internal error: {0}")]
    Server(String),
}

impl EcrError {
    /// The `__type` of the AWS JSON error body.
    pub fn type_name(&self) -> &'static str {
        use EcrError::*;
        match self {
            InvalidParameter(_) => "InvalidParameterException",
            Validation(_) => "ValidationException",
            RepositoryAlreadyExists { .. } => "RepositoryAlreadyExistsException",
            RepositoryNotFound { .. } => "RepositoryNotFoundException",
            RepositoryNotEmpty { .. } => "RepositoryNotEmptyException",
            ImageNotFound(_) => "ImageNotFoundException",
            ImageAlreadyExists(_) => "ImageAlreadyExistsException",
            ImageTagAlreadyExists(_) => "ImageTagAlreadyExistsException",
            ImageDigestDoesNotMatch(_) => "ImageDigestDoesNotMatchException",
            LayersNotFound(_) => "LayersNotFoundException",
            ReferencedImagesNotFound(_) => "ReferencedImagesNotFoundException",
            LifecyclePolicyNotFound { .. } => "LifecyclePolicyNotFoundException",
            LifecyclePolicyPreviewNotFound { .. } => "LifecyclePolicyPreviewNotFoundException",
            InvalidTagParameter(_) => "InvalidTagParameterException",
            TooManyTags(_) => "TooManyTagsException",
            UnknownOperation(_) => "UnknownOperationException",
            Serialization(_) => "SerializationException",
            Server(_) => "ServerException",
        }
    }

    /// HTTP status: 500 for server faults, 400 for everything the caller can fix.
    pub fn status(&self) -> u16 {
        match self {
            EcrError::Server(_) => 500,
            _ => 400,
        }
    }

    pub(crate) fn from_registry(e: RegistryError, registry: &str) -> Self {
        use berth_registry::RegistryError as R;
        match e {
            R::NameUnknown(name) => EcrError::RepositoryNotFound {
                name,
                registry: registry.into(),
            },
            R::RepoExists(name) => EcrError::RepositoryAlreadyExists {
                name,
                registry: registry.into(),
            },
            R::RepoNotEmpty { name, .. } => EcrError::RepositoryNotEmpty {
                name,
                registry: registry.into(),
            },
            R::Name(n) => EcrError::InvalidParameter(format!("Invalid parameter: {n}")),
            R::ManifestUnknown(m) => EcrError::ImageNotFound(format!("The image with imageId {m} does not exist within the repository")),
            R::ManifestBlobUnknown(d) => EcrError::LayersNotFound(format!(
                "Layer {d} referenced by the manifest does not exist in the repository; push it first"
            )),
            R::ManifestInvalid(m) => EcrError::InvalidParameter(format!("Invalid parameter at 'imageManifest': {m}")),
            R::DigestMismatch { expected, actual } => EcrError::ImageDigestDoesNotMatch(format!(
                "The imageDigest {expected} does not match the digest of the manifest, {actual}"
            )),
            R::DigestInvalid(m) => EcrError::InvalidParameter(m),
            R::TagImmutable { repo, tag, current } => EcrError::ImageTagAlreadyExists(format!(
                "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the tag is immutable (it points to {current})"
            )),
            other @ (R::Io { .. } | R::State(_)) => EcrError::Server(other.to_string()),
            other => EcrError::InvalidParameter(other.to_string()),
        }
    }
}
