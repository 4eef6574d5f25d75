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
pub mod dns;
pub mod health;
pub mod join;
pub mod metadata;
pub mod plan;
pub mod protocol;
pub mod record;
pub mod remote;
pub mod worker;

pub use agent::{Agent, AgentConfig, AgentError, EndpointError};
pub use control::{ControlPlane, LocalControlPlane};
