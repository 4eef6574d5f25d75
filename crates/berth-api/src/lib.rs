//! berth's front door: one HTTP listener for the registry (`/v2/`) and the AWS APIs
//! (`POST /`, routed on `X-Amz-Target`).
//!
//! - [`identity`]: access keys, the account id, registry passwords;
//! - [`aws`]: target parsing and AWS JSON error rendering (the only place errors
//!   become HTTP);
//! - [`images`]: the built-in agent's image source (the registry in this process);
//! - [`logs`]: the CloudWatch Logs API over the node's container logs;
//! - [`server`]: the listener, authentication (SigV4; registry Basic/Bearer), request
//!   spans, background jobs.
//!
//! The boundary: nothing reaches a service crate unauthenticated.
#![forbid(unsafe_code)]

pub mod agents;
pub mod aws;
pub mod hosts;
pub mod identity;
pub mod images;
pub mod links;
pub mod logs;
pub mod server;
pub mod store;

pub use server::{open_registry, run, serve, App, ServerConfig, ServerError};
pub use store::{StoreConfig, StoreError};
