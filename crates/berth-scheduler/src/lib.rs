//! ECS task placement as pure functions.
//!
//! Given the cluster (container instances, their attributes, registered resources and
//! the tasks already on them), a task request, placement strategies, placement
//! constraints and a seed, [`place`] decides which instance each task goes to and,
//! when one cannot go anywhere, returns ECS's failure reasons with a detail a person can
//! act on. It also holds the cluster query language ([`parse`], [`Expr`]) used by
//! `memberOf` constraints and `ListContainerInstances --filter`.
//!
//! Boundary: no I/O, no clocks, no global randomness. The caller (the ECS API in
//! `berth-ecs`, a service controller, a simulation) loads the state, calls [`place`],
//! and persists what it decided; randomness comes from the seed it hands in, so the
//! same inputs always give the same placement. Follows the ECS developer guide pages
//! "Amazon ECS task placement", "task placement strategies", "task placement
//! constraints", "cluster query language" and "API failure reasons".
#![forbid(unsafe_code)]

mod eval;
mod hash;
mod model;
mod parse;
mod place;
mod query;
mod rng;
mod strategy;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

#[cfg(test)]
mod tests;

pub use eval::wildcard;
pub use model::{
    ClusterState, Instance, InstanceId, InstanceStatus, PlacedTask, Remaining, Resources,
    StateError, TaskRequest, ATTR_AVAILABILITY_ZONE, ATTR_INSTANCE_TYPE, ATTR_OS_TYPE,
};
pub use parse::{parse, parse_date, ParseError, MAX_DEPTH, MAX_EXPRESSION_LEN};
pub use place::{place, Failure, FailureReason, Placement};
pub use query::{Arg, Expr, Op, Subject};
pub use rng::Rng;
pub use strategy::{
    check_limits, default_strategies, BinpackField, ConstraintError, LimitError,
    PlacementConstraint, PlacementStrategy, SpreadField, StrategyError, MAX_CONSTRAINTS,
    MAX_STRATEGIES,
};
