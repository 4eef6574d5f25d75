//! Placement strategies and constraints as the ECS API names them (botocore
//! `PlacementStrategy` {type, field} and `PlacementConstraint` {type, expression}),
//! parsed into typed values.

use std::fmt;

use crate::parse::{parse, ParseError};
use crate::query::Expr;

/// ECS accepts at most five strategies per task or service.
pub const MAX_STRATEGIES: usize = 5;
/// ECS accepts at most ten constraints per task or service.
pub const MAX_CONSTRAINTS: usize = 10;

/// The resource `binpack` packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackField {
    Cpu,
    Memory,
}

/// What `spread` balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadField {
    /// `instanceId` (or `host`).
    InstanceId,
    /// `attribute:NAME`, e.g. `attribute:ecs.availability-zone`.
    Attribute(String),
}

/// A task placement strategy ("Use strategies to define Amazon ECS task placement").
/// Strategies apply in order; each breaks the ties the previous one left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementStrategy {
    /// Least remaining of the resource first (that still fits the task).
    Binpack(BinpackField),
    /// Fewest tasks of the same group per value of the field first.
    Spread(SpreadField),
    /// Any candidate, chosen with the seeded generator.
    Random,
}

impl PlacementStrategy {
    /// `spread` over `attribute:ecs.availability-zone`.
    pub fn spread_zones() -> Self {
        PlacementStrategy::Spread(SpreadField::Attribute(
            crate::model::ATTR_AVAILABILITY_ZONE.to_owned(),
        ))
    }

    /// Parses the API shape: `type` is `random`, `spread` or `binpack`; `field` as the
    /// botocore documentation lists it.
    pub fn from_api(kind: &str, field: Option<&str>) -> Result<Self, StrategyError> {
        let bad_field = || StrategyError::InvalidField {
            kind: kind.to_owned(),
            field: field.unwrap_or("").to_owned(),
        };
        match kind {
            "random" => Ok(PlacementStrategy::Random),
            "binpack" => match field {
                Some(f) if f.eq_ignore_ascii_case("cpu") => {
                    Ok(PlacementStrategy::Binpack(BinpackField::Cpu))
                }
                Some(f) if f.eq_ignore_ascii_case("memory") => {
                    Ok(PlacementStrategy::Binpack(BinpackField::Memory))
                }
                _ => Err(bad_field()),
            },
            "spread" => match field {
                Some(f)
                    if f.eq_ignore_ascii_case("instanceId") || f.eq_ignore_ascii_case("host") =>
                {
                    Ok(PlacementStrategy::Spread(SpreadField::InstanceId))
                }
                Some(f) => match f.strip_prefix("attribute:") {
                    Some(name) if crate::parse::is_attribute_name(name) => Ok(
                        PlacementStrategy::Spread(SpreadField::Attribute(name.to_owned())),
                    ),
                    _ => Err(bad_field()),
                },
                None => Err(bad_field()),
            },
            other => Err(StrategyError::UnknownType(other.to_owned())),
        }
    }
}

impl fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementStrategy::Binpack(BinpackField::Cpu) => f.write_str("binpack(cpu)"),
            PlacementStrategy::Binpack(BinpackField::Memory) => f.write_str("binpack(memory)"),
            PlacementStrategy::Spread(SpreadField::InstanceId) => f.write_str("spread(instanceId)"),
            PlacementStrategy::Spread(SpreadField::Attribute(a)) => {
                write!(f, "spread(attribute:{a})")
            }
            PlacementStrategy::Random => f.write_str("random"),
        }
    }
}

/// A placement strategy from the API is not one ECS knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("unknown placement strategy type {0:?} (random, spread or binpack)")]
    UnknownType(String),
    #[error("invalid field {field:?} for placement strategy {kind} (binpack: cpu or memory; spread: instanceId, host or attribute:NAME)")]
    InvalidField { kind: String, field: String },
}

/// A task placement constraint ("Define which container instances Amazon ECS uses for
/// tasks"). Constraints bind: an instance that breaks one gets no task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementConstraint {
    /// No two tasks of the request's group on one instance.
    DistinctInstance,
    /// Only instances the cluster query matches.
    MemberOf(Expr),
}

impl PlacementConstraint {
    /// Parses the API shape: `type` is `distinctInstance` (no expression) or `memberOf`
    /// (a cluster query expression of at most 2000 characters).
    pub fn from_api(kind: &str, expression: Option<&str>) -> Result<Self, ConstraintError> {
        match (kind, expression) {
            ("distinctInstance", None) => Ok(PlacementConstraint::DistinctInstance),
            ("distinctInstance", Some(_)) => Err(ConstraintError::UnexpectedExpression),
            ("memberOf", Some(e)) => Ok(PlacementConstraint::MemberOf(parse(e)?)),
            ("memberOf", None) => Err(ConstraintError::MissingExpression),
            (other, _) => Err(ConstraintError::UnknownType(other.to_owned())),
        }
    }
}

/// A placement constraint from the API is not one ECS would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("unknown placement constraint type {0:?} (distinctInstance or memberOf)")]
    UnknownType(String),
    #[error("a distinctInstance constraint takes no expression")]
    UnexpectedExpression,
    #[error("a memberOf constraint needs an expression")]
    MissingExpression,
    #[error("memberOf expression: {0}")]
    Expression(#[from] ParseError),
}

/// Too many strategies or constraints for ECS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{0} placement strategies given; ECS allows {MAX_STRATEGIES}")]
    TooManyStrategies(usize),
    #[error("{0} placement constraints given; ECS allows {MAX_CONSTRAINTS}")]
    TooManyConstraints(usize),
}

/// Checks ECS's limits; the API layer calls this before [`crate::place`], which
/// ignores strategies past the fifth.
pub fn check_limits(
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
) -> Result<(), LimitError> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(LimitError::TooManyStrategies(strategies.len()));
    }
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(LimitError::TooManyConstraints(constraints.len()));
    }
    Ok(())
}

/// The strategies used when a request gives none. ECS documents the service default as
/// `spread(attribute:ecs.availability-zone)` ("Use strategies to define Amazon ECS task
/// placement"); it names none for standalone tasks (RunTask), for which we choose
/// `random`. In both cases the ties left are broken by fewest tasks of the group on the
/// instance, then by a seeded rank (see [`crate::place`]).
pub fn default_strategies(for_service: bool) -> Vec<PlacementStrategy> {
    if for_service {
        vec![PlacementStrategy::spread_zones()]
    } else {
        vec![PlacementStrategy::Random]
    }
}
