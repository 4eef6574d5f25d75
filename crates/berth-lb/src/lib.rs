//! The Application Load Balancer's data plane.
//!
//! Its boundary: it is handed a [`config::LbConfig`] (what the ELBv2 API stored:
//! listeners, rules by priority, target groups and their registered targets) and makes
//! it true — listeners bound, requests routed, targets health-checked — and reports the
//! targets' health back ([`config::TargetHealth`]). It never reads the state store and
//! speaks no AWS protocol; `berth-elb` turns API calls into the configuration.
#![forbid(unsafe_code)]

pub mod config;
pub mod health;
pub mod rules;
