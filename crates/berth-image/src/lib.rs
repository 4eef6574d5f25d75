//! berth-image: the agent's image code, and the only place in berth that turns
//! registry layers into files on a host.
//!
//! The boundary: everything this crate reads from a registry (manifests, configs,
//! layer tars) is hostile. Digests are verified before anything is trusted, and a
//! layer is unpacked with every filesystem call made relative to a handle on the
//! layer's own directory, so no layer can write outside it, however its names,
//! links and headers are crafted (see `docs/image.md` for the promises and the tests
//! behind them). Above this crate, layers are only ever read-only overlayfs lower
//! directories; below it, nothing else unpacks tars.
//!
//! - [`unpack`]: one layer stream → one overlayfs lower directory.
//! - [`snapshots`]: unpacked layers by diff_id, unpacked once, verified, shared.
//! - [`mod@pull`]: manifest → config → layers from an [`pull::ImageSource`], verified.

#![forbid(unsafe_code)]

mod digest;
pub mod limits;
pub mod pull;
pub mod snapshots;
pub mod unpack;

#[cfg(test)]
mod testutil;

pub use limits::{Limit, Limits};
pub use pull::{cached, pull, Image, ImageConfig, ImageSource, PullError};
pub use snapshots::{SnapshotError, Snapshots};
pub use unpack::{unpack_layer, Compression, UnpackError, UnpackStats};
