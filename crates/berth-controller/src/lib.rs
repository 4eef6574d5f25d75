//! berth's ECS service controller, as pure functions.
//!
//! What it is for: deciding, round after round, which tasks a service launches and stops
//! so that it keeps its desired count, rolls out a new task definition within
//! `minimumHealthyPercent`/`maximumPercent`, replaces unhealthy tasks and tasks on
//! draining instances, throttles tasks that keep failing to start, and fails (and rolls
//! back) a deployment whose tasks fail — with ECS's deployments (`DescribeServices`
//! `deployments`) and ECS's event messages (`events`).
//!
//! Its boundary: no I/O, no clock, no randomness. The caller owns everything else: it
//! reads the service's tasks ([`TaskView`]), hands in the time in epoch milliseconds,
//! carries out the [`Action`]s (placing and launching through the scheduler, stopping
//! through the agents), and stores the returned [`ServiceState`] (for example with
//! compare-and-swap in the state store). Ids come from a counter in the state seeded by
//! the caller.
//!
//! ```text
//! create(spec, now, seed) ─▶ ServiceState ─┐
//! update(spec, state, td, force, now) ─────┤   tasks (DescribeTasks)   now
//! delete(state, now) ──────────────────────┤          │                 │
//!                                          ▼          ▼                 ▼
//!                                  reconcile(spec, state, tasks, now_ms)
//!                                          │
//!                     Reconciled { state, actions: [Launch | Stop], events }
//! ```

#![forbid(unsafe_code)]

pub mod circuit_breaker;
pub mod deployment;
pub mod events;
pub mod model;
mod reconcile;
#[cfg(any(test, feature = "test-util"))]
pub mod sim;
pub mod throttle;

#[cfg(test)]
mod tests;

pub use deployment::{
    create, delete, is_healthy, is_unhealthy, placement_failed, update, validate, ConfigError,
    Limits, UpdateError,
};
pub use model::{
    Action, Backoff, CircuitBreakerConfig, Deployment, DeploymentConfiguration, DeploymentStatus,
    DesiredStatus, HealthStatus, LaunchType, Reconciled, RolloutState, ServiceEvent, ServiceSpec,
    ServiceState, ServiceStatus, TargetHealth, TaskMemo, TaskStatus, TaskView,
};
pub use reconcile::reconcile;
