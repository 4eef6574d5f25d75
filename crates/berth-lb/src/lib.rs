//! The Application Load Balancer's data plane.
//!
//! Its boundary: it is handed a [`config::LbConfig`] (what the ELBv2 API stored:
//! listeners, rules by priority, target groups and their registered targets) and makes
//! it true — listeners bound, requests routed, targets health-checked — and reports the
//! targets' health back ([`config::TargetHealth`]). It never reads the state store and
//! speaks no AWS protocol; `berth-elb` turns API calls into the configuration.
//!
//! Pure parts: [`rules`] (conditions, weighted choice, redirects), the state
//! machine in [`health`], and the HTTP/1 heads and body framing in [`h1::parse`],
//! [`h1::rewrite`] and [`h1::relay`]. The rest is I/O: [`DataPlane`] (runtime,
//! listeners, checkers, `apply`), [`conn`] (one client connection: the HTTP/1.1
//! fast path in [`h1`], hyper's server for HTTP/2, upgrades and the rest),
//! [`proxy`] (the rule and target decision both paths share, and hyper's path),
//! [`balance`] (group and target choice), [`io`] (the idle timeout), [`error`]
//! (where errors come from and their status). See `docs/lb.md`.
#![forbid(unsafe_code)]

pub mod balance;
pub mod config;
pub mod conn;
pub mod dataplane;
pub mod error;
pub mod h1;
pub mod health;
pub mod io;
pub mod prefixed;
pub mod proxy;
pub mod rules;
pub mod runtime;

pub use dataplane::{ApplyError, DataPlane};
