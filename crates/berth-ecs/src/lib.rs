//! The Amazon ECS API (`AmazonEC2ContainerServiceV20141113.*`): clusters, task
//! definitions and tasks, kept in the state store. Shapes, field names, enums and error
//! types follow botocore's `ecs` model.
//!
//! The boundary: the front door hands in an authenticated operation name, its JSON body
//! and a [`Context`]; this crate returns the JSON output or a typed [`EcsError`]. It
//! decides (which agent runs a task, what the task should be) and records what agents
//! report through [`agent`]; it never touches a host. [`validate`] is the pure task
//! definition validator.
//!
//! State (all JSON documents in [`berth_state::Store`], written with compare-and-swap):
//! - `/ecs/clusters/<name>`: a cluster;
//! - `/ecs/families/<family>`: the family's last revision number (never reused);
//! - `/ecs/taskdefs/<family>/<revision, 10 digits>`: a task definition and its tags;
//! - `/ecs/tasks/<cluster>/<id>`: a task, the agent it is assigned to and the effective
//!   definition (overrides applied) the agent runs;
//! - `/ecs/instances/<cluster>/<id>`: a container instance (id: 32 hex chars) —
//!   registered resources, attributes, status, agent connection and last heartbeat;
//! - `/ecs/instance-agents/<cluster>/<agent id>`: which instance an agent registered as;
//! - `/ecs/services/<cluster>/<name>`: a service: its ECS fields, the controller's spec
//!   and state (deployments, events); [`Ecs::reconcile_services`] drives it with the
//!   pure controller in `berth-controller`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod error;
pub mod instances;
pub mod links;
mod ops;
mod placement;
mod services;
mod tags;
pub mod validate;

pub use error::EcsError;
pub use ops::Ecs;
pub use services::BUILTIN_INSTANCE_ID;

/// Per-call facts the API layer knows and this crate needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The region of the call's SigV4 credential scope (goes into ARNs).
    pub region: String,
    /// The 12-digit account id (goes into ARNs).
    pub account: String,
}
