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
//!
//! Unsafe code: denied, not forbidden, because [`sys`] makes two libc calls that
//! neither std nor rustix wraps — `sync_file_range(2)` (upload write-back, see
//! [`writer`]) and `mallopt(3)` (pinning glibc's mmap/trim thresholds so the memory of
//! a burst of transfers goes back to the kernel). Each is one `#[allow(unsafe_code)]`
//! function with a `// SAFETY:` comment; the crate's `Cargo.toml` carries the
//! workspace lints with `unsafe_code = "deny"` (a workspace `forbid` cannot be relaxed
//! per item).
#![deny(unsafe_code)]

pub mod body;
pub mod content;
pub mod crypt;
pub mod error;
pub mod http;
pub mod manifest;
pub mod names;
pub mod registry;
pub mod sys;
pub mod writer;

#[cfg(test)]
mod proptests;

pub use body::Body;
pub use error::RegistryError;
pub use names::{Digest, Reference, RepoName};
pub use registry::{GcReport, Image, ManifestRecord, Registry, Repository};
