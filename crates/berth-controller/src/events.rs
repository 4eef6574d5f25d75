//! Service events: ECS's message texts and the bounded, newest-first list.
//!
//! Texts follow what ECS writes into `DescribeServices` `events` (the Amazon ECS Developer
//! Guide, "Amazon ECS service event messages"), with the task id where ECS shows it.

use crate::model::{ServiceEvent, ServiceState};

/// How many events a service keeps: DescribeServices shows the 100 most recent.
pub const MAX_EVENTS: usize = 100;

/// Adds an event at the front of the state's list (trimming it) and to `out`.
pub(crate) fn push(
    state: &mut ServiceState,
    out: &mut Vec<ServiceEvent>,
    now_ms: u64,
    message: String,
) {
    let event = ServiceEvent {
        id: state.next_event_id(),
        created_at: now_ms,
        message,
    };
    state.events.insert(0, event.clone());
    state.events.truncate(MAX_EVENTS);
    out.push(event);
}

fn task_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(service web) has started 2 tasks: (task 1a2b) (task 3c4d).`
pub fn started_tasks(service: &str, ids: &[&str]) -> String {
    format!(
        "(service {service}) has started {} tasks: {}.",
        ids.len(),
        task_list(ids)
    )
}

/// `(service web) has stopped 2 running tasks: (task 1a2b) (task 3c4d).`
pub fn stopped_tasks(service: &str, ids: &[&str]) -> String {
    format!(
        "(service {service}) has stopped {} running tasks: {}.",
        ids.len(),
        task_list(ids)
    )
}

/// `(service web) has reached a steady state.`
pub fn steady_state(service: &str) -> String {
    format!("(service {service}) has reached a steady state.")
}

/// The placement failure message; `explanation` is ECS's sentence saying why, e.g.
/// `Reason: No Container Instances were found in your cluster.` or `The closest
/// matching container-instance 1a2b has insufficient memory available.`
pub fn unable_to_place(service: &str, explanation: &str) -> String {
    format!(
        "(service {service}) was unable to place a task because no container instance met all of its requirements. {explanation} For more information, see the Troubleshooting section."
    )
}

/// ECS writes the same placement failure event at most this often.
pub const UNPLACED_EVENT_INTERVAL_MS: u64 = 60_000;

/// The service throttle's message (ECS Developer Guide, "service throttle logic").
pub fn unable_to_start_consistently(service: &str) -> String {
    format!("(service {service}) is unable to consistently start tasks successfully.")
}

/// `(service web) (deployment ecs-svc/...) deployment completed.`
pub fn deployment_completed(service: &str, deployment: &str) -> String {
    format!("(service {service}) (deployment {deployment}) deployment completed.")
}

/// The circuit breaker tripped.
pub fn deployment_failed(service: &str, deployment: &str) -> String {
    format!(
        "(service {service}) (deployment {deployment}) deployment failed: tasks failed to start."
    )
}

/// The circuit breaker rolls back.
pub fn rolling_back(service: &str, failed: &str, target: &str) -> String {
    format!("(service {service}) (deployment {failed}) rolling back to deployment {target}.")
}

/// A task stopped for failing its health checks.
pub fn failed_health_checks(service: &str, task: &str) -> String {
    format!("(service {service}) (task {task}) failed container health checks.")
}

/// The rollout reason of a new deployment.
pub fn reason_in_progress(deployment: &str) -> String {
    format!("ECS deployment {deployment} in progress.")
}

/// The rollout reason of a completed deployment.
pub fn reason_completed(deployment: &str) -> String {
    format!("ECS deployment {deployment} completed.")
}

/// The rollout reason of a deployment the circuit breaker failed.
pub const REASON_CIRCUIT_BREAKER: &str = "ECS deployment circuit breaker: task failed to start.";

/// The rollout reason of the deployment a rollback goes back to.
pub fn reason_rolling_back(target: &str) -> String {
    format!("ECS deployment circuit breaker: rolling back to deploymentId {target}.")
}
