//! The ELBv2 API (Elastic Load Balancing version 2015-12-01, the AWS Query protocol):
//! application load balancers, target groups and their targets, listeners, rules and
//! tags, kept in the state store. Shapes, member names, enums and error codes follow
//! botocore's `elbv2` model.
//!
//! The boundary: the front door hands in an authenticated form body and a [`Context`];
//! [`query`] parses it into an operation and a parameter tree, [`Elb::call`] runs it and
//! returns the result as JSON (the model's member names), [`xml`] renders that or an
//! [`ElbError`]. The data plane (`berth-lb`) is handed [`Elb::config`] after every
//! change ([`Elb::changes`]) and reports target health back through a
//! [`berth_lb::config::HealthSource`] ([`Elb::set_health_source`]); this crate never
//! binds a port or opens a connection.
//!
//! State (JSON documents in [`berth_state::Store`]; every write is one transaction that
//! compare-and-swaps `/elb/serial`, so ELB writes are serialized and each sees the
//! state it validated against — port uniqueness, priorities, names, references):
//! - `/elb/serial`: a counter bumped by every ELB write;
//! - `/elb/loadbalancers/<name>`: a load balancer, its attributes and tags;
//! - `/elb/targetgroups/<name>`: a target group, its health check, attributes, tags
//!   and targets (deregistered ones with the time they began draining);
//! - `/elb/listeners/<id>`: a listener and its default actions (its default rule);
//! - `/elb/rules/<id>`: a listener rule (priority, conditions, actions).
#![forbid(unsafe_code)]

pub mod convert;
pub mod error;
pub mod model;
mod ops;
pub mod query;
pub mod validate;
pub mod xml;

pub use error::ElbError;
pub use ops::{Elb, InstanceDirectory};

/// Per-call facts the API layer knows and this crate needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The region of the call's SigV4 credential scope (goes into ARNs and DNS names).
    pub region: String,
    /// The 12-digit account id (goes into ARNs).
    pub account: String,
}
