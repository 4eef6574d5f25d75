//! The service throttle: launches of a deployment whose tasks keep failing to start are
//! spaced out exponentially.
//!
//! ECS Developer Guide, "Amazon ECS service throttle logic": when tasks repeatedly fail to
//! enter RUNNING (PENDING straight to STOPPED), the time between restart attempts grows,
//! up to a maximum of 27 minutes (earlier versions of the page said 15); the event
//! `(service name) is unable to consistently start tasks successfully.` is sent; tasks that
//! stop after reaching RUNNING do not count; a new task definition (a new deployment)
//! returns the service to the non-throttled state. ECS does not publish the steps, so
//! berth chooses them: the first failure is retried at once, then the wait doubles from
//! [`BASE_DELAY_MS`] to at most [`MAX_DELAY_MS`]. A task of the deployment reaching
//! RUNNING ends the streak.

use crate::model::Backoff;

/// The wait after the second consecutive failure (10 s).
pub const BASE_DELAY_MS: u64 = 10_000;
/// The longest wait between attempts (27 min, the current ECS documentation).
pub const MAX_DELAY_MS: u64 = 27 * 60 * 1000;
/// Consecutive failures from which launches are delayed (and the event is sent).
pub const THROTTLE_AFTER: u32 = 2;

/// The wait before the next launch after `failures` consecutive start failures.
pub fn delay_ms(failures: u32) -> u64 {
    if failures < THROTTLE_AFTER {
        return 0;
    }
    let doublings = (failures - THROTTLE_AFTER).min(20);
    BASE_DELAY_MS
        .saturating_mul(1u64 << doublings)
        .min(MAX_DELAY_MS)
}

/// Records one more failure to start; returns true when the throttle engages for this
/// streak (the moment to send the event).
pub(crate) fn record_failure(backoff: &mut Backoff, now_ms: u64) -> bool {
    backoff.consecutive_start_failures = backoff.consecutive_start_failures.saturating_add(1);
    let delay = delay_ms(backoff.consecutive_start_failures);
    backoff.not_before_ms = now_ms.saturating_add(delay);
    if delay > 0 && !backoff.reported {
        backoff.reported = true;
        return true;
    }
    false
}

/// A task reached RUNNING: the streak is over.
pub(crate) fn record_success(backoff: &mut Backoff) {
    *backoff = Backoff::default();
}

/// Whether launches wait at `now_ms`.
pub fn is_throttled(backoff: Option<&Backoff>, now_ms: u64) -> bool {
    backoff.is_some_and(|b| b.not_before_ms > now_ms)
}
