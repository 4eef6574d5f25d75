//! The data the controller works on: what the user asked for ([`ServiceSpec`]), what the
//! controller remembers between rounds ([`ServiceState`]), what the caller observed
//! ([`TaskView`]) and what the controller decided ([`Action`], [`ServiceEvent`]).
//!
//! Names and JSON field names follow the ECS shapes in botocore's
//! `ecs/2014-11-13/service-2.json` (`Service`, `Deployment`, `DeploymentConfiguration`,
//! `DeploymentCircuitBreaker`, `ServiceEvent`). Times are epoch milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `minimumHealthyPercent` when the user gives none (ECS's default for REPLICA services).
pub const DEFAULT_MINIMUM_HEALTHY_PERCENT: u32 = 100;
/// `maximumPercent` when the user gives none (ECS's default for REPLICA services).
pub const DEFAULT_MAXIMUM_PERCENT: u32 = 200;

/// What the user asked for: the parts of CreateService/UpdateService the controller needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service name, as it appears in event messages (`(service web) ...`).
    pub name: String,
    /// How many tasks of the PRIMARY deployment should run (tasks).
    pub desired_count: u32,
    /// The task definition ARN of the first deployment ([`crate::create`]); later ones
    /// come from [`crate::update`] and rollbacks, so read
    /// [`ServiceState::primary`] for the current one.
    pub task_definition: String,
    /// Rolling-update limits and the circuit breaker.
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,
    /// How long after a task started its health checks are ignored (seconds); with a
    /// load balancer also the earliest a new task counts as healthy.
    #[serde(default)]
    pub health_check_grace_period_secs: u32,
    /// EC2 or FARGATE; carried for the caller's placement, the controller treats both alike.
    #[serde(default)]
    pub launch_type: LaunchType,
    /// Whether the service is behind a load balancer (target group).
    #[serde(default)]
    pub has_load_balancer: bool,
}

/// ECS `DeploymentConfiguration` (rolling update, the `ECS` deployment controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentConfiguration {
    /// Lower bound on healthy tasks during a deployment, percent of desired count,
    /// rounded up (ECS API reference, `minimumHealthyPercent`).
    #[serde(default = "default_min")]
    pub minimum_healthy_percent: u32,
    /// Upper bound on RUNNING + PENDING tasks, percent of desired count, rounded down
    /// (ECS API reference, `maximumPercent`).
    #[serde(default = "default_max")]
    pub maximum_percent: u32,
    /// ECS `DeploymentCircuitBreaker`.
    #[serde(default)]
    pub deployment_circuit_breaker: CircuitBreakerConfig,
}

fn default_min() -> u32 {
    DEFAULT_MINIMUM_HEALTHY_PERCENT
}

fn default_max() -> u32 {
    DEFAULT_MAXIMUM_PERCENT
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration {
            minimum_healthy_percent: DEFAULT_MINIMUM_HEALTHY_PERCENT,
            maximum_percent: DEFAULT_MAXIMUM_PERCENT,
            deployment_circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

/// ECS `DeploymentCircuitBreaker`: both off by default, as in ECS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Mark a deployment FAILED when too many of its tasks fail.
    pub enable: bool,
    /// On failure, go back to the last COMPLETED deployment.
    pub rollback: bool,
}

/// ECS `launchType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LaunchType {
    /// Tasks on registered container instances.
    #[default]
    #[serde(rename = "EC2")]
    Ec2,
    /// Tasks on capacity the platform owns.
    Fargate,
}

/// ECS `Deployment.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The newest deployment: the one that launches tasks.
    Primary,
    /// An older deployment that still has tasks.
    Active,
    /// A deployment with no tasks left.
    Inactive,
}

/// ECS `Deployment.rolloutState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    /// Started, not yet steady.
    InProgress,
    /// Reached a steady state.
    Completed,
    /// The circuit breaker tripped; launches nothing more.
    Failed,
}

/// ECS `Deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/` and 19 digits.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: DeploymentStatus,
    /// Task definition ARN.
    pub task_definition: String,
    /// Tasks this deployment should have (the service's for the PRIMARY; what is left
    /// for an ACTIVE one).
    pub desired_count: u32,
    /// Tasks in PROVISIONING/PENDING/ACTIVATING.
    pub pending_count: u32,
    /// Tasks in RUNNING.
    pub running_count: u32,
    /// Consecutively failed tasks (reset when a task becomes healthy).
    pub failed_tasks: u32,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: RolloutState,
    /// Why the rollout is in its state, in ECS's words.
    pub rollout_state_reason: String,
    /// Epoch milliseconds.
    pub created_at: u64,
    /// Epoch milliseconds.
    pub updated_at: u64,
}

/// ECS task `lastStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Resources being prepared (network interface, ...).
    Provisioning,
    /// Image pull, containers being created.
    Pending,
    /// Registering with load balancers / service discovery.
    Activating,
    /// Essential containers running.
    Running,
    /// Deregistering.
    Deactivating,
    /// Containers being stopped.
    Stopping,
    /// Resources being released.
    Deprovisioning,
    /// Gone.
    Stopped,
}

impl TaskStatus {
    /// Not yet RUNNING (counts as `pendingCount`).
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            TaskStatus::Provisioning | TaskStatus::Pending | TaskStatus::Activating
        )
    }
}

/// ECS task `desiredStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    /// Should run.
    Running,
    /// Asked to stop.
    Stopped,
}

/// ECS task `healthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// All essential containers pass their health checks.
    Healthy,
    /// An essential container fails its health check.
    Unhealthy,
    /// Not evaluated yet, or no health check.
    Unknown,
}

/// One task of the service as the caller sees it (DescribeTasks, plus the instance flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// The task id (the last part of the ARN); used in event messages.
    pub id: String,
    /// The deployment that launched it (`startedBy`).
    pub deployment_id: String,
    /// ECS `lastStatus`.
    pub last_status: TaskStatus,
    /// ECS `desiredStatus`.
    pub desired_status: DesiredStatus,
    /// ECS `healthStatus`.
    pub health_status: HealthStatus,
    /// Whether an essential container has a health check.
    pub has_health_check: bool,
    /// When the task was created (epoch ms): "newest" means the largest.
    pub created_at: u64,
    /// When it reached RUNNING (epoch ms).
    pub started_at: Option<u64>,
    /// When it reached STOPPED (epoch ms).
    pub stopped_at: Option<u64>,
    /// ECS `stopCode` (`TaskFailedToStart`, `EssentialContainerExited`, ...).
    pub stop_code: Option<String>,
    /// ECS `stoppedReason`.
    pub stopped_reason: Option<String>,
    /// Its container instance is DRAINING: replace it.
    #[serde(default)]
    pub on_draining_instance: bool,
    /// Behind a load balancer: its targets' health (`None`: berth cannot see it, no
    /// data plane; the grace period stands in for it).
    #[serde(default)]
    pub target_health: Option<TargetHealth>,
}

/// A task's load balancer targets, together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetHealth {
    /// Not all checked yet (ELB's `initial`), none unhealthy.
    Pending,
    /// Every target healthy.
    Healthy,
    /// A target unhealthy.
    Unhealthy,
}

/// ECS `Service.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    /// Running normally.
    Active,
    /// Deleted; its tasks are being stopped.
    Draining,
    /// Deleted and without tasks.
    Inactive,
}

/// ECS `ServiceEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// UUID-shaped, derived from the state's counter (no RNG).
    pub id: String,
    /// Epoch milliseconds.
    pub created_at: u64,
    /// ECS's message text, e.g. `(service web) has reached a steady state.`
    pub message: String,
}

/// The service throttle's memory for one deployment (see [`crate::throttle`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Tasks in a row that stopped without reaching RUNNING (or could not be placed).
    pub consecutive_start_failures: u32,
    /// No launch for this deployment before this time (epoch ms).
    pub not_before_ms: u64,
    /// The "unable to consistently start tasks" event was sent for this streak.
    pub reported: bool,
}

/// What the controller remembers about one task it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMemo {
    /// Seen in RUNNING at least once.
    pub seen_running: bool,
    /// Seen healthy at least once.
    pub seen_healthy: bool,
    /// The controller asked for it to stop (so its stop is not a failure).
    pub stop_requested: bool,
    /// Its STOPPED state was already counted.
    pub accounted: bool,
}

/// Everything the controller carries from one round to the next; the caller stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: ServiceStatus,
    /// PRIMARY first, then the others newest first. INACTIVE deployments are dropped,
    /// except the newest COMPLETED one, kept as the circuit breaker's rollback target.
    pub deployments: Vec<Deployment>,
    /// Newest first, at most [`crate::events::MAX_EVENTS`].
    pub events: Vec<ServiceEvent>,
    /// The service throttle, per deployment id.
    pub backoff: BTreeMap<String, Backoff>,
    /// Per task id, for tasks the caller still reports.
    pub tasks: BTreeMap<String, TaskMemo>,
    /// The last round ended in a steady state.
    pub steady: bool,
    /// Base of generated deployment ids (the caller picks it, e.g. from its own RNG).
    pub id_base: u64,
    /// Counter for generated ids.
    pub next_seq: u64,
}

impl ServiceState {
    /// The PRIMARY deployment (absent only once the service is INACTIVE).
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// The deployments DescribeServices shows: PRIMARY and ACTIVE.
    pub fn visible_deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments
            .iter()
            .filter(|d| d.status != DeploymentStatus::Inactive)
    }

    pub(crate) fn primary_mut(&mut self) -> Option<&mut Deployment> {
        self.deployments
            .iter_mut()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    pub(crate) fn deployment_mut(&mut self, id: &str) -> Option<&mut Deployment> {
        self.deployments.iter_mut().find(|d| d.id == id)
    }

    /// `ecs-svc/` and 19 digits, from the caller's base and the state's counter.
    pub(crate) fn next_deployment_id(&mut self) -> String {
        let n = self.id_base.wrapping_add(self.next_seq) % 10_000_000_000_000_000_000;
        self.next_seq += 1;
        format!("ecs-svc/{n:019}")
    }

    /// A UUID-shaped event id from the same counter.
    pub(crate) fn next_event_id(&mut self) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        let base = self.id_base;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (base >> 32) as u32,
            (base >> 16) as u16,
            base & 0xfff,
            (seq >> 48) & 0xfff,
            seq & 0xffff_ffff_ffff
        )
    }
}

/// What the caller must do after a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "action"
)]
pub enum Action {
    /// Place and start `count` tasks of `task_definition`, started by `deployment_id`.
    Launch {
        /// Goes into the tasks' `startedBy`/[`TaskView::deployment_id`].
        deployment_id: String,
        /// Task definition ARN.
        task_definition: String,
        /// How many tasks.
        count: u32,
    },
    /// Set the task's desired status to STOPPED.
    Stop {
        /// [`TaskView::id`].
        task_id: String,
        /// ECS `stoppedReason`.
        reason: String,
    },
}

/// The outcome of [`crate::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The new state, to store.
    pub state: ServiceState,
    /// What to do, in order (launches before stops).
    pub actions: Vec<Action>,
    /// The events this round added (also at the front of `state.events`).
    pub events: Vec<ServiceEvent>,
}
