//! The deployment circuit breaker's threshold.
//!
//! ECS API reference, `ServiceDeploymentCircuitBreaker.threshold`: "The deployment circuit
//! breaker has a minimum threshold of 3 and a maximum threshold of 200 and uses the values
//! in the following formula to determine the deployment failure: 0.5 * desired task count"
//! (the default `thresholdConfiguration`, BOUNDED_PERCENT with value 50). berth rounds
//! the half up.
//!
//! What counts (botocore `Deployment.failedTasks`): "A task is considered a failure if the
//! service scheduler can't launch the task, the task doesn't transition to a RUNNING state,
//! or if it fails any of its defined health checks and is stopped." The count resets when
//! a task of the deployment becomes healthy (`resetOnHealthyTask`, default true: the
//! "consecutive" model).

/// The smallest threshold.
pub const MIN_THRESHOLD: u32 = 3;
/// The largest threshold.
pub const MAX_THRESHOLD: u32 = 200;

/// Failed tasks at which a deployment of a service with `desired_count` tasks fails.
pub fn threshold(desired_count: u32) -> u32 {
    desired_count
        .div_ceil(2)
        .clamp(MIN_THRESHOLD, MAX_THRESHOLD)
}
