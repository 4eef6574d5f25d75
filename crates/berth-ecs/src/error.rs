//! ECS's error types, named as in botocore's `ecs` model; rendered to AWS JSON by the
//! API front door (`berth-api`'s `aws.rs`), which asks [`EcsError::type_name`] and
//! [`EcsError::status`].

use crate::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// The caller's request is wrong in a way ECS reports as `ClientException`.
    #[error("{0}")]
    Client(String),
    /// A task definition failed validation (`ClientException`).
    #[error(transparent)]
    InvalidTaskDefinition(#[from] ValidationError),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("Cluster not found.")]
    ClusterNotFound,
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    #[error("Service not found.")]
    ServiceNotFound,
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ServiceNotActive(String),
    #[error("{0}")]
    UnknownOperation(String),
    /// An attribute call names a container instance that does not exist.
    #[error("{0}")]
    TargetNotFound(String),
    /// A container instance would have more custom attributes than ECS allows.
    #[error("{0}")]
    AttributeLimitExceeded(String),
    #[error("{0}")]
    Serialization(String),
    /// The state store refused or failed: nothing the caller can fix; a retry may help.
    #[error("internal error: {0}")]
    Server(String),
}

impl EcsError {
    /// The `__type` of the AWS JSON error body.
    pub fn type_name(&self) -> &'static str {
        use EcsError::*;
        match self {
            Client(_) | InvalidTaskDefinition(_) => "ClientException",
            InvalidParameter(_) => "InvalidParameterException",
            ClusterNotFound => "ClusterNotFoundException",
            ClusterContainsTasks => "ClusterContainsTasksException",
            ServiceNotFound => "ServiceNotFoundException",
            ResourceNotFound(_) => "ResourceNotFoundException",
            ServiceNotActive(_) => "ServiceNotActiveException",
            UnknownOperation(_) => "UnknownOperationException",
            TargetNotFound(_) => "TargetNotFoundException",
            AttributeLimitExceeded(_) => "AttributeLimitExceededException",
            Serialization(_) => "SerializationException",
            Server(_) => "ServerException",
        }
    }

    /// HTTP status: 500 for server faults, 400 for everything the caller can fix.
    pub fn status(&self) -> u16 {
        match self {
            EcsError::Server(_) => 500,
            _ => 400,
        }
    }
}

impl From<berth_state::StateError> for EcsError {
    fn from(e: berth_state::StateError) -> Self {
        EcsError::Server(e.to_string())
    }
}
