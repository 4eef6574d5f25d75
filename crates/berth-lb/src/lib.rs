//! The Application Load Balancer's data plane.
//!
//! Its boundary: it is handed a [`config::LbConfig`] (what the ELBv2 API stored:
//! listeners, rules by priority, target groups and their registered targets) and makes
//! it true — listeners bound, requests routed, targets health-checked — and reports the
//! targets' health back ([`config::TargetHealth`]). It never reads the state store and
//! speaks no AWS protocol; `berth-elb` turns API calls into the configuration.
//!
//! Pure parts: [`rules`] (conditions, weighted choice, redirects) and the state
//! machine in [`health`]. The rest is I/O: [`DataPlane`] (runtime, listeners,
//! checkers, `apply`), [`proxy`] (one request's stages), [`balance`] (group and
//! target choice), [`io`] (the idle timeout), [`error`] (where errors come from and
//! their status). See `docs/lb.md`.
#![forbid(unsafe_code)]

pub mod balance;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod health;
pub mod io;
pub mod proxy;
pub mod rules;

pub use dataplane::{ApplyError, DataPlane};
