//! The berth CLI's client: SigV4-signed AWS JSON calls ([`ApiClient`]), OCI pushes and
//! pulls ([`RegistryClient`]), image references and OCI image layouts on disk.
//!
//! Blocking (the CLI does one thing at a time); errors are typed per operation and
//! carry the server's own message (AWS `__type: message`, OCI `CODE: message`).
#![forbid(unsafe_code)]

mod api;
mod creds;
pub mod layout;
pub mod query;
mod reference;
mod registry;

pub use api::{ApiClient, ApiError};
pub use creds::{CredentialError, Credentials};
pub use reference::{ImageRef, RefError};
pub use registry::{RegistryClient, RegistryError};

/// The ECR target prefix.
pub const ECR: &str = "AmazonEC2ContainerRegistry_V20150921";
/// The ECS target prefix.
pub const ECS: &str = "AmazonEC2ContainerServiceV20141113";
/// The CloudWatch Logs target prefix.
pub const LOGS: &str = "Logs_20140328";
/// The X-Amz-Target prefix of Cloud Map (ServiceDiscovery).
pub const DISCOVERY: &str = "Route53AutoNaming_v20170314";
