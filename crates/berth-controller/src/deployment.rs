//! Deployments: creating a service, UpdateService (a new PRIMARY), DeleteService
//! (draining), the rolling-update limits and when a task counts as healthy.

use std::collections::BTreeMap;

use crate::events;
use crate::model::{
    Deployment, DeploymentConfiguration, DeploymentStatus, DesiredStatus, HealthStatus,
    RolloutState, ServiceEvent, ServiceSpec, ServiceState, ServiceStatus, TargetHealth, TaskStatus,
    TaskView,
};

/// Without a load balancer and without a health check, a task counts toward the minimum
/// healthy percent 40 seconds after it reached RUNNING (ECS API reference,
/// `DeploymentConfiguration.minimumHealthyPercent`).
pub const NO_HEALTH_CHECK_SETTLE_MS: u64 = 40_000;

/// Why a deployment configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// ECS accepts 0 to 100.
    #[error("minimumHealthyPercent {0} is above 100")]
    MinimumAbove100(u32),
    /// A REPLICA service needs room for its desired count.
    #[error("maximumPercent {0} is below 100")]
    MaximumBelow100(u32),
    /// With these limits no old task can ever be replaced (berth's rule: ECS would let
    /// such a deployment stall).
    #[error("no room to replace a task: at least {min_healthy} healthy and at most {max_total} tasks for desired count {desired}")]
    NoRoomToReplace {
        /// Desired count.
        desired: u32,
        /// Minimum healthy tasks.
        min_healthy: u32,
        /// Maximum tasks.
        max_total: u32,
    },
}

/// Why UpdateService is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// DeleteService was called (ECS: `ServiceNotActiveException`).
    #[error("service {service} is not active ({status:?})")]
    ServiceNotActive {
        /// Service name.
        service: String,
        /// Its status.
        status: ServiceStatus,
    },
}

/// The rolling update's bounds for one desired count, in tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Desired count.
    pub desired: u32,
    /// `ceil(desired × minimumHealthyPercent / 100)`.
    pub min_healthy: u32,
    /// `floor(desired × maximumPercent / 100)`.
    pub max_total: u32,
}

impl Limits {
    /// The bounds for `desired` tasks under `config` (rounding as the ECS API reference
    /// says: minimum rounded up, maximum rounded down).
    pub fn new(desired: u32, config: &DeploymentConfiguration) -> Limits {
        let d = u64::from(desired);
        let min = (d * u64::from(config.minimum_healthy_percent)).div_ceil(100);
        let max = d * u64::from(config.maximum_percent) / 100;
        Limits {
            desired,
            min_healthy: u32::try_from(min).unwrap_or(u32::MAX),
            max_total: u32::try_from(max).unwrap_or(u32::MAX),
        }
    }
}

/// Checks the deployment configuration of `spec` (for CreateService/UpdateService).
pub fn validate(spec: &ServiceSpec) -> Result<(), ConfigError> {
    let config = &spec.deployment_configuration;
    if config.minimum_healthy_percent > 100 {
        return Err(ConfigError::MinimumAbove100(config.minimum_healthy_percent));
    }
    if config.maximum_percent < 100 {
        return Err(ConfigError::MaximumBelow100(config.maximum_percent));
    }
    let limits = Limits::new(spec.desired_count, config);
    if spec.desired_count > 0 && limits.max_total <= limits.min_healthy {
        return Err(ConfigError::NoRoomToReplace {
            desired: spec.desired_count,
            min_healthy: limits.min_healthy,
            max_total: limits.max_total,
        });
    }
    Ok(())
}

fn new_deployment(
    state: &mut ServiceState,
    task_definition: &str,
    desired: u32,
    now_ms: u64,
) -> Deployment {
    let id = state.next_deployment_id();
    Deployment {
        rollout_state_reason: events::reason_in_progress(&id),
        id,
        status: DeploymentStatus::Primary,
        task_definition: task_definition.to_string(),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        rollout_state: RolloutState::InProgress,
        created_at: now_ms,
        updated_at: now_ms,
    }
}

/// CreateService: the state of a new service, with one PRIMARY deployment of
/// `spec.task_definition`. `id_base` seeds the generated ids (pick it at random per
/// service so ids differ between services).
pub fn create(spec: &ServiceSpec, now_ms: u64, id_base: u64) -> ServiceState {
    let mut state = ServiceState {
        status: ServiceStatus::Active,
        deployments: Vec::new(),
        events: Vec::new(),
        backoff: BTreeMap::new(),
        tasks: BTreeMap::new(),
        steady: false,
        id_base,
        next_seq: 0,
    };
    let d = new_deployment(
        &mut state,
        &spec.task_definition,
        spec.desired_count,
        now_ms,
    );
    state.deployments.push(d);
    state
}

/// UpdateService with a task definition: a new PRIMARY deployment when the task
/// definition differs from the PRIMARY's or `force_new_deployment` is set; the old
/// PRIMARY becomes ACTIVE and is replaced by [`crate::reconcile`]. Without either, the
/// state is unchanged (a desired-count change needs no deployment: hand the new spec to
/// `reconcile`).
pub fn update(
    spec: &ServiceSpec,
    state: &ServiceState,
    new_task_definition: Option<&str>,
    force_new_deployment: bool,
    now_ms: u64,
) -> Result<ServiceState, UpdateError> {
    if state.status != ServiceStatus::Active {
        return Err(UpdateError::ServiceNotActive {
            service: spec.name.clone(),
            status: state.status,
        });
    }
    let mut next = state.clone();
    let current = next.primary().map(|p| p.task_definition.clone());
    let task_definition = match (new_task_definition, current) {
        (Some(td), Some(cur)) if td == cur && !force_new_deployment => return Ok(next),
        (Some(td), _) => td.to_string(),
        (None, Some(cur)) if force_new_deployment => cur,
        (None, Some(_)) => return Ok(next),
        (None, None) => spec.task_definition.clone(),
    };
    if let Some(old) = next.primary_mut() {
        old.status = DeploymentStatus::Active;
        old.updated_at = now_ms;
    }
    let d = new_deployment(&mut next, &task_definition, spec.desired_count, now_ms);
    next.deployments.insert(0, d);
    next.steady = false;
    Ok(next)
}

/// DeleteService: the service goes DRAINING; `reconcile` stops every task (desired 0)
/// and makes it INACTIVE once none is left.
pub fn delete(state: &ServiceState, now_ms: u64) -> ServiceState {
    let mut next = state.clone();
    if next.status == ServiceStatus::Active {
        next.status = ServiceStatus::Draining;
        next.steady = false;
        for d in &mut next.deployments {
            d.updated_at = now_ms;
        }
    }
    next
}

/// Records that the caller could not place a task of `deployment_id` (no instance met
/// its requirements): an event in ECS's words (`reason` is the sentence saying why, see
/// [`events::unable_to_place`]; the same event at most once a minute), one start
/// failure for the throttle and one failed task for the circuit breaker.
pub fn placement_failed(
    spec: &ServiceSpec,
    state: &ServiceState,
    deployment_id: &str,
    reason: &str,
    now_ms: u64,
) -> (ServiceState, Vec<ServiceEvent>) {
    let mut next = state.clone();
    let mut out = Vec::new();
    let message = events::unable_to_place(&spec.name, reason);
    // Like ECS, one event per reason per interval, however often placement fails.
    let recent = state.events.iter().any(|e| {
        e.message == message
            && now_ms.saturating_sub(e.created_at) < events::UNPLACED_EVENT_INTERVAL_MS
    });
    if !recent {
        events::push(&mut next, &mut out, now_ms, message);
    }
    crate::reconcile::count_failed_task(&mut next, deployment_id, now_ms);
    crate::reconcile::record_start_failure(spec, &mut next, deployment_id, now_ms, &mut out);
    (next, out)
}

fn started_ms(task: &TaskView) -> u64 {
    task.started_at.unwrap_or(task.created_at)
}

/// Whether `task` counts toward the minimum healthy percent at `now_ms`: RUNNING, not
/// asked to stop, and
/// - with a health check: HEALTHY;
/// - behind a load balancer: its targets healthy (ELB's health checks); when their
///   health is not known, past the health check grace period since it started;
/// - neither: 40 seconds after RUNNING ([`NO_HEALTH_CHECK_SETTLE_MS`]).
pub fn is_healthy(spec: &ServiceSpec, task: &TaskView, now_ms: u64) -> bool {
    if task.last_status != TaskStatus::Running || task.desired_status != DesiredStatus::Running {
        return false;
    }
    let started = started_ms(task);
    if spec.has_load_balancer {
        let containers_ok = !task.has_health_check || task.health_status == HealthStatus::Healthy;
        return match task.target_health {
            Some(h) => h == TargetHealth::Healthy && containers_ok,
            None => {
                let grace = u64::from(spec.health_check_grace_period_secs) * 1000;
                now_ms >= started.saturating_add(grace) && containers_ok
            }
        };
    }
    if task.has_health_check {
        return task.health_status == HealthStatus::Healthy;
    }
    now_ms >= started.saturating_add(NO_HEALTH_CHECK_SETTLE_MS)
}

/// Whether `task` failed its health checks and must be replaced: RUNNING, UNHEALTHY
/// (its containers' checks, or its load balancer targets'), and past the grace period,
/// during which ECS ignores unhealthy checks (API reference,
/// `healthCheckGracePeriodSeconds`).
pub fn is_unhealthy(spec: &ServiceSpec, task: &TaskView, now_ms: u64) -> bool {
    let grace = u64::from(spec.health_check_grace_period_secs) * 1000;
    let failing = (task.has_health_check && task.health_status == HealthStatus::Unhealthy)
        || (spec.has_load_balancer && task.target_health == Some(TargetHealth::Unhealthy));
    task.last_status == TaskStatus::Running
        && failing
        && now_ms >= started_ms(task).saturating_add(grace)
}
