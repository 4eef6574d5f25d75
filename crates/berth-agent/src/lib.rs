//! The agent: the only component that touches a host. It converges the host to the
//! tasks the control plane assigned it — network, images, containers — supervises
//! them (dependencies, health checks, stop timeouts, exits, OOM kills) and reports
//! what is true. Its decisions are pure ([`plan`], [`containers`]); the rest is a
//! thin shell over `berth-image`, `berth-net` and `berth-runtime`.
//!
//! Restart safety: every container runs under its own shim (see
//! `berth_runtime::shim`), and every step is recorded in `tasks/<id>/task.json`
//! before it is taken, so an agent that restarts re-adopts what runs ([`agent`]) and
//! removes what belongs to no task ([`cleanup`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod cleanup;
pub mod containers;
pub mod control;
pub mod health;
pub mod metadata;
pub mod plan;
pub mod record;
pub mod worker;

pub use agent::{Agent, AgentConfig, AgentError};
pub use control::{ControlPlane, LocalControlPlane};

/// Whether anything is mounted at or below `dir` (a task directory is never removed
/// through a mount).
pub(crate) fn rootfs_mounted_under(dir: &std::path::Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let prefix = dir.display().to_string();
    let found = berth_runtime::rootfs::mount_points(&info).any(|m| m.starts_with(&prefix));
    found
}
