//! One round of the service scheduler: observe the tasks, trip the circuit breaker, decide
//! launches and stops, update the deployments.
//!
//! The rules, each from the ECS documentation:
//! - The PRIMARY deployment keeps `desiredCount` tasks; stopped ones are replaced.
//! - Tasks of older deployments are stopped as new ones become healthy, never letting
//!   the healthy tasks fall below `ceil(desired × minimumHealthyPercent / 100)` and never
//!   launching past `floor(desired × maximumPercent / 100)` tasks (RUNNING + PENDING;
//!   berth also counts tasks still stopping, so the bound holds whatever the agent's pace).
//! - Unhealthy tasks and tasks on a DRAINING container instance are replaced first and
//!   stopped once their replacements are healthy, or at once when `maximumPercent` leaves
//!   no room for a replacement (API reference, `maximumPercent`: "starting replacement
//!   tasks first and then stopping the unhealthy tasks").
//! - Scale-in: ECS balances Availability Zones and then follows the placement strategy
//!   (Developer Guide, "Amazon ECS services"); the controller sees neither, so among the
//!   surplus it stops tasks not yet RUNNING first, then RUNNING but not healthy ones,
//!   then the newest (largest `created_at`). The caller's placement layer may reorder.
//! - A deployment that reached a steady state is COMPLETED; older deployments without
//!   tasks become INACTIVE.
//!
//! Contract with the caller: it applies every [`Action`] (creating the launched tasks'
//! records, setting stopped tasks' desired status) before the next round, and reports all
//! tasks of the service, STOPPED ones included for as long as it keeps them.

use std::collections::BTreeSet;

use crate::circuit_breaker;
use crate::deployment::{is_healthy, is_unhealthy, Limits};
use crate::events;
use crate::model::{
    Action, DeploymentStatus, DesiredStatus, Reconciled, RolloutState, ServiceEvent, ServiceSpec,
    ServiceState, ServiceStatus, TaskStatus, TaskView,
};
use crate::throttle;

/// Why the controller stops a task; becomes the task's `stoppedReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// Replaced by a newer deployment.
    Replaced,
    /// Failed its health checks.
    Unhealthy,
    /// Its instance is draining.
    Draining,
    /// More tasks than desired.
    ScaleIn,
}

fn stop_reason(kind: StopKind, deployment: &str) -> String {
    match kind {
        StopKind::Replaced | StopKind::ScaleIn => {
            format!("Scaling activity initiated by (deployment {deployment})")
        }
        StopKind::Unhealthy => "Task failed container health checks".to_string(),
        StopKind::Draining => "Container instance is draining".to_string(),
    }
}

/// One round: given the last state, the service's tasks and the time, what to launch and
/// stop, and the next state. Pure: the same inputs give the same outputs.
pub fn reconcile(
    spec: &ServiceSpec,
    state: &ServiceState,
    tasks: &[TaskView],
    now_ms: u64,
) -> Reconciled {
    let mut st = state.clone();
    let mut ev = Vec::new();
    let mut actions = Vec::new();
    if st.status == ServiceStatus::Inactive {
        return Reconciled {
            state: st,
            actions,
            events: ev,
        };
    }
    let desired = if st.status == ServiceStatus::Draining {
        0
    } else {
        spec.desired_count
    };
    let limits = Limits::new(desired, &spec.deployment_configuration);

    observe(spec, &mut st, tasks, now_ms, &mut ev);
    trip_circuit_breaker(spec, &mut st, desired, now_ms, &mut ev);
    let plan = plan(spec, &st, tasks, limits, now_ms);

    let primary = st.primary().cloned();
    if let (Some(p), true) = (&primary, plan.launch > 0) {
        actions.push(Action::Launch {
            deployment_id: p.id.clone(),
            task_definition: p.task_definition.clone(),
            count: plan.launch,
        });
    }
    let primary_id = primary.as_ref().map(|p| p.id.clone()).unwrap_or_default();
    let mut stopped = Vec::new();
    for (id, kind) in &plan.stops {
        let memo = st.tasks.entry(id.clone()).or_default();
        // A health-check stop is the task's failure (circuit breaker); the others are ours.
        memo.stop_requested = *kind != StopKind::Unhealthy;
        actions.push(Action::Stop {
            task_id: id.clone(),
            reason: stop_reason(*kind, &primary_id),
        });
        if *kind == StopKind::Unhealthy {
            events::push(
                &mut st,
                &mut ev,
                now_ms,
                events::failed_health_checks(&spec.name, id),
            );
        } else {
            stopped.push(id.as_str());
        }
    }
    if !stopped.is_empty() {
        events::push(
            &mut st,
            &mut ev,
            now_ms,
            events::stopped_tasks(&spec.name, &stopped),
        );
    }

    let stop_ids: BTreeSet<&str> = plan.stops.iter().map(|(id, _)| id.as_str()).collect();
    update_deployments(&mut st, tasks, &stop_ids, desired, now_ms);

    let steady = st.status == ServiceStatus::Active
        && primary
            .as_ref()
            .is_some_and(|p| p.rollout_state != RolloutState::Failed)
        && plan.launch == 0
        && plan.stops.is_empty()
        && plan.live == desired
        && plan.keep == desired
        && plan.keep_healthy == desired
        && plan.others == 0;
    if steady {
        let name = spec.name.clone();
        let mut completed = None;
        if let Some(p) = st.primary_mut() {
            if p.rollout_state == RolloutState::InProgress {
                p.rollout_state = RolloutState::Completed;
                p.rollout_state_reason = events::reason_completed(&p.id);
                p.updated_at = now_ms;
                completed = Some(p.id.clone());
            }
        }
        if let Some(id) = completed {
            events::push(
                &mut st,
                &mut ev,
                now_ms,
                events::deployment_completed(&name, &id),
            );
        }
        if !st.steady {
            events::push(&mut st, &mut ev, now_ms, events::steady_state(&name));
        }
    }
    st.steady = steady;

    if st.status == ServiceStatus::Draining && plan.live == 0 {
        st.status = ServiceStatus::Inactive;
        for d in &mut st.deployments {
            d.status = DeploymentStatus::Inactive;
            d.updated_at = now_ms;
        }
    }
    prune_inactive(&mut st);

    Reconciled {
        state: st,
        actions,
        events: ev,
    }
}

/// One more failure of a task of `deployment_id` for the circuit breaker (ECS
/// `failedTasks`), counted while the deployment rolls out.
pub(crate) fn count_failed_task(st: &mut ServiceState, deployment_id: &str, now_ms: u64) {
    if let Some(d) = st.deployment_mut(deployment_id) {
        if d.rollout_state == RolloutState::InProgress {
            d.failed_tasks = d.failed_tasks.saturating_add(1);
            d.updated_at = now_ms;
        }
    }
}

/// A task of `deployment_id` never reached RUNNING (or could not be placed): the
/// throttle's streak grows, with an event when it engages.
pub(crate) fn record_start_failure(
    spec: &ServiceSpec,
    st: &mut ServiceState,
    deployment_id: &str,
    now_ms: u64,
    ev: &mut Vec<ServiceEvent>,
) {
    let backoff = st.backoff.entry(deployment_id.to_string()).or_default();
    if throttle::record_failure(backoff, now_ms) {
        events::push(
            st,
            ev,
            now_ms,
            events::unable_to_start_consistently(&spec.name),
        );
    }
}

/// Learns from the tasks: new ones (event), first RUNNING (throttle reset), first healthy
/// (failure count reset), stops the controller did not ask for (failures).
fn observe(
    spec: &ServiceSpec,
    st: &mut ServiceState,
    tasks: &[TaskView],
    now_ms: u64,
    ev: &mut Vec<ServiceEvent>,
) {
    let present: BTreeSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    st.tasks.retain(|id, _| present.contains(id.as_str()));
    let mut started = Vec::new();
    for t in tasks {
        let known = st.tasks.get(&t.id).cloned();
        if known.is_none() {
            started.push(t.id.as_str());
        }
        let mut memo = known.unwrap_or_default();
        if t.started_at.is_some() && !memo.seen_running {
            memo.seen_running = true;
            if let Some(b) = st.backoff.get_mut(&t.deployment_id) {
                throttle::record_success(b);
            }
        }
        if !memo.seen_healthy && is_healthy(spec, t, now_ms) {
            memo.seen_healthy = true;
            if let Some(d) = st.deployment_mut(&t.deployment_id) {
                // resetOnHealthyTask (default true): the consecutive-failure model.
                if d.failed_tasks != 0 {
                    d.failed_tasks = 0;
                    d.updated_at = now_ms;
                }
            }
        }
        if t.last_status == TaskStatus::Stopped && !memo.accounted {
            memo.accounted = true;
            if !memo.stop_requested {
                count_failed_task(st, &t.deployment_id, now_ms);
                if t.started_at.is_none() {
                    record_start_failure(spec, st, &t.deployment_id, now_ms, ev);
                }
            }
        }
        st.tasks.insert(t.id.clone(), memo);
    }
    if !started.is_empty() {
        events::push(st, ev, now_ms, events::started_tasks(&spec.name, &started));
    }
}

/// The circuit breaker: the PRIMARY fails once its failed tasks reach the threshold, and
/// with `rollback` the newest COMPLETED deployment becomes PRIMARY again. The Developer
/// Guide ("How the Amazon ECS deployment circuit breaker detects failures"): the rollback
/// target is "the most recent deployment that is in a COMPLETED state", which goes from
/// COMPLETED to IN_PROGRESS; without one the deployment stalls and launches nothing.
fn trip_circuit_breaker(
    spec: &ServiceSpec,
    st: &mut ServiceState,
    desired: u32,
    now_ms: u64,
    ev: &mut Vec<ServiceEvent>,
) {
    let config = spec.deployment_configuration.deployment_circuit_breaker;
    if !config.enable || st.status != ServiceStatus::Active {
        return;
    }
    let Some(p) = st.primary() else { return };
    if p.rollout_state != RolloutState::InProgress
        || p.failed_tasks < circuit_breaker::threshold(desired)
    {
        return;
    }
    let failed_id = p.id.clone();
    let target = if config.rollback {
        st.deployments
            .iter()
            .find(|d| d.id != failed_id && d.rollout_state == RolloutState::Completed)
            .map(|d| d.id.clone())
    } else {
        None
    };
    if let Some(p) = st.primary_mut() {
        p.rollout_state = RolloutState::Failed;
        p.rollout_state_reason = events::REASON_CIRCUIT_BREAKER.to_string();
        p.updated_at = now_ms;
    }
    events::push(
        st,
        ev,
        now_ms,
        events::deployment_failed(&spec.name, &failed_id),
    );
    let Some(target) = target else { return };
    if let Some(p) = st.primary_mut() {
        p.status = DeploymentStatus::Active;
    }
    if let Some(pos) = st.deployments.iter().position(|d| d.id == target) {
        let mut t = st.deployments.remove(pos);
        t.status = DeploymentStatus::Primary;
        t.rollout_state = RolloutState::InProgress;
        t.rollout_state_reason = events::reason_rolling_back(&target);
        t.failed_tasks = 0;
        t.desired_count = desired;
        t.updated_at = now_ms;
        st.deployments.insert(0, t);
    }
    st.backoff.remove(&target);
    st.steady = false;
    events::push(
        st,
        ev,
        now_ms,
        events::rolling_back(&spec.name, &failed_id, &target),
    );
}

/// What one round decides, with the counts the steady-state check needs.
#[derive(Debug, Default)]
struct Plan {
    launch: u32,
    stops: Vec<(String, StopKind)>,
    /// Tasks not STOPPED (including those asked to stop).
    live: u32,
    /// PRIMARY tasks that stay.
    keep: u32,
    /// Of those, healthy.
    keep_healthy: u32,
    /// Live tasks that are not kept (older deployments, replaced, stopping).
    others: u32,
}

fn plan(
    spec: &ServiceSpec,
    st: &ServiceState,
    tasks: &[TaskView],
    limits: Limits,
    now_ms: u64,
) -> Plan {
    let primary = st.primary();
    let primary_id = primary.map_or("", |p| p.id.as_str());
    let primary_failed = primary.is_none_or(|p| p.rollout_state == RolloutState::Failed);
    let stopping = |t: &TaskView| {
        t.desired_status == DesiredStatus::Stopped
            || st.tasks.get(&t.id).is_some_and(|m| m.stop_requested)
    };
    let healthy = |t: &TaskView| !stopping(t) && is_healthy(spec, t, now_ms);

    let live: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.last_status != TaskStatus::Stopped)
        .collect();
    let total = count(live.len());
    let healthy_count = count(live.iter().filter(|t| healthy(t)).count());

    let mut keep = Vec::new();
    let mut replace = Vec::new();
    let mut old = Vec::new();
    for t in live.iter().copied().filter(|t| !stopping(t)) {
        if t.deployment_id != primary_id {
            old.push(t);
        } else if t.on_draining_instance || is_unhealthy(spec, t, now_ms) {
            replace.push(t);
        } else {
            keep.push(t);
        }
    }
    let keep_healthy = count(keep.iter().filter(|t| healthy(t)).count());

    let need = limits.desired.saturating_sub(count(keep.len()));
    let room = limits.max_total.saturating_sub(total);
    let throttled = throttle::is_throttled(st.backoff.get(primary_id), now_ms);
    let launch = if primary_failed || throttled || st.status != ServiceStatus::Active {
        0
    } else {
        need.min(room)
    };

    // Healthy tasks that may still be stopped without going below the minimum.
    let mut budget = healthy_count.saturating_sub(limits.min_healthy);
    let mut stops = Vec::new();
    let mut try_stop = |t: &TaskView, kind: StopKind, budget: &mut u32| {
        if healthy(t) {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
        }
        stops.push((t.id.clone(), kind));
        true
    };

    // Replace first: stop once the replacements are healthy, or when there is no room
    // to launch one (or none will come).
    let replacements_ready = keep_healthy >= limits.desired;
    if replacements_ready || room == 0 || primary_failed {
        for t in &replace {
            let kind = if is_unhealthy(spec, t, now_ms) {
                StopKind::Unhealthy
            } else {
                StopKind::Draining
            };
            try_stop(t, kind, &mut budget);
        }
    }

    // Older deployments: oldest deployment first; tasks of unknown deployments first of
    // all. A FAILED primary without rollback keeps the old tasks serving.
    let rank = |t: &TaskView| {
        st.deployments
            .iter()
            .position(|d| d.id == t.deployment_id)
            .unwrap_or(usize::MAX)
    };
    old.sort_by(|a, b| {
        rank(b)
            .cmp(&rank(a))
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
    for t in &old {
        if primary_failed && rank(t) != usize::MAX && st.status == ServiceStatus::Active {
            continue;
        }
        try_stop(t, StopKind::Replaced, &mut budget);
    }

    // Scale-in: not RUNNING first, then not healthy, then newest.
    if count(keep.len()) > limits.desired {
        let mut surplus = keep.clone();
        surplus.sort_by(|a, b| {
            let class = |t: &TaskView| {
                if t.last_status != TaskStatus::Running {
                    0
                } else if !healthy(t) {
                    1
                } else {
                    2
                }
            };
            class(a)
                .cmp(&class(b))
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        let mut excess = count(keep.len()) - limits.desired;
        for t in surplus {
            if excess == 0 {
                break;
            }
            if try_stop(t, StopKind::ScaleIn, &mut budget) {
                excess -= 1;
            }
        }
    }

    Plan {
        launch,
        stops,
        live: total,
        keep: count(keep.len()),
        keep_healthy,
        others: total - count(keep.len()),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Counts per deployment; older deployments without tasks become INACTIVE.
fn update_deployments(
    st: &mut ServiceState,
    tasks: &[TaskView],
    stops: &BTreeSet<&str>,
    desired: u32,
    now_ms: u64,
) {
    let memo = st.tasks.clone();
    for d in &mut st.deployments {
        let mine: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| t.deployment_id == d.id && t.last_status != TaskStatus::Stopped)
            .collect();
        let active: Vec<&&TaskView> = mine
            .iter()
            .filter(|t| {
                t.desired_status == DesiredStatus::Running
                    && !stops.contains(t.id.as_str())
                    && !memo.get(&t.id).is_some_and(|m| m.stop_requested)
            })
            .collect();
        let pending = count(active.iter().filter(|t| t.last_status.is_pending()).count());
        let running = count(
            active
                .iter()
                .filter(|t| t.last_status == TaskStatus::Running)
                .count(),
        );
        let want = if d.status == DeploymentStatus::Primary {
            desired
        } else {
            count(active.len())
        };
        let status = if d.status == DeploymentStatus::Active && mine.is_empty() {
            DeploymentStatus::Inactive
        } else {
            d.status
        };
        if (d.pending_count, d.running_count, d.desired_count, d.status)
            != (pending, running, want, status)
        {
            d.pending_count = pending;
            d.running_count = running;
            d.desired_count = want;
            d.status = status;
            d.updated_at = now_ms;
        }
    }
}

/// INACTIVE deployments leave the list, except the newest COMPLETED one: the circuit
/// breaker's rollback target.
fn prune_inactive(st: &mut ServiceState) {
    if st.status == ServiceStatus::Inactive {
        return;
    }
    let mut kept_target = false;
    st.deployments.retain(|d| {
        if d.status != DeploymentStatus::Inactive {
            return true;
        }
        if d.rollout_state == RolloutState::Completed && !kept_target {
            kept_target = true;
            return true;
        }
        false
    });
    let ids: BTreeSet<String> = st.deployments.iter().map(|d| d.id.clone()).collect();
    st.backoff.retain(|id, _| ids.contains(id));
}
