//! The Amazon ECR API (`AmazonEC2ContainerRegistry_V20150921.*`) over berth's
//! registry. Shapes, field names and error types follow botocore's `ecr` model.
//!
//! The boundary: the front door hands in an authenticated operation name, its JSON
//! body and a [`Context`]; this crate returns the JSON output or a typed
//! [`EcrError`]. Repository data lives in the registry's records ([`Repository::meta`]
//! holds the ECR-only settings); [`lifecycle`] is the pure policy evaluator.
#![forbid(unsafe_code)]

pub mod error;
pub mod lifecycle;
mod ops;

pub use error::EcrError;
pub use ops::{apply_lifecycle_policies, Ecr};

/// Per-call facts the API layer knows and this crate needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// `host:port` the client used to reach berth: the registry's address.
    pub host: String,
    pub region: String,
    /// The 12-digit account (registry) id.
    pub account: String,
    /// Registry password minted for the caller and when it expires (epoch seconds).
    pub registry_password: String,
    pub password_expires_at: f64,
}
