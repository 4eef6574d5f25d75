//! The container runtime of a node: everything between "run this container from
//! these snapshots" and the kernel, driven through the real OCI runtime (`runc`).
//!
//! - [`spec`]: the OCI runtime spec (`config.json`) with Docker's default privileges
//!   and ECS's resource units (pure).
//! - [`seccomp`]: the default seccomp filter (pure).
//! - [`rootfs`]: the overlayfs root of a container.
//! - [`runc`]: the runc driver.
//! - [`shim`]: the per-container process that owns a container's life and output.
//! - [`cgroup`]: reading memory, OOM and CPU figures (v1 and v2).
//! - [`logs`]: the rotated JSON-lines container log.
//!
//! The boundary: this crate knows containers, not tasks; the agent composes tasks.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod logs;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod shim;
pub mod spec;
