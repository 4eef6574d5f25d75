//! Cloud Map's error types, named and coded as in botocore's `servicediscovery` model
//! (the exception shapes' `httpStatusCode`); rendered once, by the front door.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscoveryError {
    /// The request is wrong in a way the caller can fix.
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NamespaceNotFound(String),
    #[error("{0}")]
    ServiceNotFound(String),
    #[error("{0}")]
    InstanceNotFound(String),
    #[error("{0}")]
    OperationNotFound(String),
    #[error("{0}")]
    CustomHealthNotFound(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{message}")]
    NamespaceAlreadyExists {
        message: String,
        namespace_id: String,
        creator_request_id: Option<String>,
    },
    #[error("{message}")]
    ServiceAlreadyExists {
        message: String,
        service_id: String,
        service_arn: String,
        creator_request_id: Option<String>,
    },
    /// The resource still has children (a namespace its services, a service its instances).
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("{0}")]
    UnknownOperation(String),
    /// The body could not be decoded.
    #[error("{0}")]
    Serialization(String),
    /// The state store refused or failed: nothing the caller can fix; a retry may help.
    #[error("internal error: {0}")]
    Server(String),
}

impl DiscoveryError {
    /// The error's type name (`__type`, the model's exception shape name).
    pub fn type_name(&self) -> &'static str {
        use DiscoveryError::*;
        match self {
            InvalidInput(_) => "InvalidInput",
            NamespaceNotFound(_) => "NamespaceNotFound",
            ServiceNotFound(_) => "ServiceNotFound",
            InstanceNotFound(_) => "InstanceNotFound",
            OperationNotFound(_) => "OperationNotFound",
            CustomHealthNotFound(_) => "CustomHealthNotFound",
            ResourceNotFound(_) => "ResourceNotFoundException",
            NamespaceAlreadyExists { .. } => "NamespaceAlreadyExists",
            ServiceAlreadyExists { .. } => "ServiceAlreadyExists",
            ResourceInUse(_) => "ResourceInUse",
            TooManyTags(_) => "TooManyTagsException",
            UnknownOperation(_) => "UnknownOperationException",
            Serialization(_) => "SerializationException",
            Server(_) => "ServiceUnavailable",
        }
    }

    /// The HTTP status the model gives the error.
    pub fn status(&self) -> u16 {
        use DiscoveryError::*;
        match self {
            NamespaceNotFound(_)
            | ServiceNotFound(_)
            | InstanceNotFound(_)
            | OperationNotFound(_)
            | CustomHealthNotFound(_)
            | ResourceNotFound(_) => 404,
            ResourceInUse(_) => 409,
            Server(_) => 500,
            _ => 400,
        }
    }

    /// The modeled members besides `Message` (e.g. `NamespaceId` of NamespaceAlreadyExists).
    pub fn members(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            DiscoveryError::NamespaceAlreadyExists {
                namespace_id,
                creator_request_id,
                ..
            } => {
                m.insert("NamespaceId".into(), namespace_id.clone().into());
                if let Some(c) = creator_request_id {
                    m.insert("CreatorRequestId".into(), c.clone().into());
                }
            }
            DiscoveryError::ServiceAlreadyExists {
                service_id,
                service_arn,
                creator_request_id,
                ..
            } => {
                m.insert("ServiceId".into(), service_id.clone().into());
                m.insert("ServiceArn".into(), service_arn.clone().into());
                if let Some(c) = creator_request_id {
                    m.insert("CreatorRequestId".into(), c.clone().into());
                }
            }
            _ => {}
        }
        m
    }
}

impl From<berth_state::StateError> for DiscoveryError {
    fn from(e: berth_state::StateError) -> Self {
        DiscoveryError::Server(e.to_string())
    }
}
