//! ELBv2's errors, named by the codes of botocore's `elbv2` model (each exception
//! shape's `error.code`); rendered to the Query protocol's XML error document by the
//! front door, which asks [`ElbError::code`] and [`ElbError::status`].

use crate::query::QueryError;

/// An ELBv2 error; the message says which input was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElbError {
    /// A parameter fails the model's constraints (`ValidationError`).
    #[error("{0}")]
    Validation(String),
    /// The request is not a Query request berth can read (`MalformedQueryString`).
    #[error(transparent)]
    Malformed(#[from] QueryError),
    #[error("{0}")]
    InvalidAction(String),
    #[error("{0}")]
    LoadBalancerNotFound(String),
    #[error("{0}")]
    TargetGroupNotFound(String),
    #[error("{0}")]
    ListenerNotFound(String),
    #[error("{0}")]
    RuleNotFound(String),
    #[error("{0}")]
    DuplicateLoadBalancerName(String),
    #[error("{0}")]
    DuplicateTargetGroupName(String),
    #[error("{0}")]
    DuplicateListener(String),
    #[error("{0}")]
    DuplicateTagKeys(String),
    #[error("{0}")]
    PriorityInUse(String),
    #[error("{0}")]
    InvalidConfigurationRequest(String),
    #[error("{0}")]
    InvalidLoadBalancerAction(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    TooManyTargets(String),
    #[error("{0}")]
    TooManyRules(String),
    #[error("{0}")]
    TooManyListeners(String),
    #[error("{0}")]
    TooManyLoadBalancers(String),
    #[error("{0}")]
    TooManyTargetGroups(String),
    #[error("{0}")]
    TooManyTags(String),
    #[error("{0}")]
    TooManyActions(String),
    #[error("{0}")]
    TargetGroupAssociationLimit(String),
    #[error("{0}")]
    UnsupportedProtocol(String),
    #[error("{0}")]
    CertificateNotFound(String),
    #[error("{0}")]
    OperationNotPermitted(String),
    /// The state store refused or failed: nothing the caller can fix; a retry may help.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ElbError {
    /// The error code of the XML error document (the model's `error.code`).
    pub fn code(&self) -> &'static str {
        use ElbError::*;
        match self {
            Validation(_) => "ValidationError",
            Malformed(_) => "MalformedQueryString",
            InvalidAction(_) => "InvalidAction",
            LoadBalancerNotFound(_) => "LoadBalancerNotFound",
            TargetGroupNotFound(_) => "TargetGroupNotFound",
            ListenerNotFound(_) => "ListenerNotFound",
            RuleNotFound(_) => "RuleNotFound",
            DuplicateLoadBalancerName(_) => "DuplicateLoadBalancerName",
            DuplicateTargetGroupName(_) => "DuplicateTargetGroupName",
            DuplicateListener(_) => "DuplicateListener",
            DuplicateTagKeys(_) => "DuplicateTagKeys",
            PriorityInUse(_) => "PriorityInUse",
            InvalidConfigurationRequest(_) => "InvalidConfigurationRequest",
            InvalidLoadBalancerAction(_) => "InvalidLoadBalancerAction",
            ResourceInUse(_) => "ResourceInUse",
            InvalidTarget(_) => "InvalidTarget",
            TooManyTargets(_) => "TooManyTargets",
            TooManyRules(_) => "TooManyRules",
            TooManyListeners(_) => "TooManyListeners",
            TooManyLoadBalancers(_) => "TooManyLoadBalancers",
            TooManyTargetGroups(_) => "TooManyTargetGroups",
            TooManyTags(_) => "TooManyTags",
            TooManyActions(_) => "TooManyActions",
            TargetGroupAssociationLimit(_) => "TargetGroupAssociationLimit",
            UnsupportedProtocol(_) => "UnsupportedProtocol",
            CertificateNotFound(_) => "CertificateNotFound",
            OperationNotPermitted(_) => "OperationNotPermitted",
            Internal(_) => "InternalFailure",
        }
    }

    /// HTTP status: 500 for server faults, 400 for everything the caller can fix (every
    /// exception above is `httpStatusCode: 400` in the model).
    pub fn status(&self) -> u16 {
        match self {
            ElbError::Internal(_) => 500,
            _ => 400,
        }
    }

    /// Whether the caller is at fault (the error document's `Type`: Sender/Receiver).
    pub fn sender(&self) -> bool {
        !matches!(self, ElbError::Internal(_))
    }
}

impl From<berth_state::StateError> for ElbError {
    fn from(e: berth_state::StateError) -> Self {
        ElbError::Internal(e.to_string())
    }
}
