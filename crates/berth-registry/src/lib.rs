//! berth's OCI registry: OCI Distribution Spec v1.1 over a content-addressed store.
//!
//! - [`names`] and [`manifest`]: pure parsing and validation of what clients send;
//! - [`content`]: blobs on disk (crash-safe writes, nothing outside the store's root);
//! - [`registry`]: repositories, manifests, tags and blob links in the state store,
//!   immutable tags, referrers, garbage collection;
//! - [`http`]: the `/v2/` surface — requests parsed into routes, errors rendered once
//!   in the spec's JSON shape.
//!
//! The boundary: callers authenticate requests before [`http::handle`]; the ECR API
//! (another crate) uses [`Registry`] directly.
#![forbid(unsafe_code)]

pub mod body;
pub mod content;
pub mod crypt;
pub mod error;
pub mod http;
pub mod manifest;
pub mod names;
pub mod registry;
pub mod writer;

#[cfg(test)]
mod proptests;

pub use body::Body;
pub use error::RegistryError;
pub use names::{Digest, Reference, RepoName};
pub use registry::{GcReport, Image, ManifestRecord, Registry, Repository};
