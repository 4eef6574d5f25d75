//! Unit tests for every rule of the controller, simulations of whole deployments, and
//! property tests of the rolling-update invariants.

use proptest::prelude::*;

use crate::circuit_breaker::threshold;
use crate::events::MAX_EVENTS;
use crate::sim::Sim;
use crate::throttle;
use crate::*;

const TD1: &str = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1";
const TD2: &str = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2";
const T0: u64 = 1_700_000_000_000;

fn spec(desired: u32) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        desired_count: desired,
        task_definition: TD1.into(),
        deployment_configuration: DeploymentConfiguration::default(),
        health_check_grace_period_secs: 0,
        launch_type: LaunchType::Fargate,
        has_load_balancer: false,
    }
}

fn task(id: &str, deployment: &str, status: TaskStatus, created_at: u64) -> TaskView {
    TaskView {
        id: id.into(),
        deployment_id: deployment.into(),
        last_status: status,
        desired_status: DesiredStatus::Running,
        health_status: HealthStatus::Unknown,
        has_health_check: true,
        created_at,
        started_at: (status == TaskStatus::Running).then_some(created_at),
        stopped_at: None,
        stop_code: None,
        stopped_reason: None,
        on_draining_instance: false,
        target_health: None,
    }
}

fn healthy(id: &str, deployment: &str, created_at: u64) -> TaskView {
    TaskView {
        health_status: HealthStatus::Healthy,
        ..task(id, deployment, TaskStatus::Running, created_at)
    }
}

fn failed_to_start(id: &str, deployment: &str, at: u64) -> TaskView {
    TaskView {
        last_status: TaskStatus::Stopped,
        desired_status: DesiredStatus::Stopped,
        stopped_at: Some(at),
        stop_code: Some("TaskFailedToStart".into()),
        stopped_reason: Some("CannotPullContainerError: not found".into()),
        ..task(id, deployment, TaskStatus::Pending, at)
    }
}

fn primary_id(state: &ServiceState) -> String {
    state.primary().expect("primary").id.clone()
}

fn launched(out: &Reconciled) -> u32 {
    out.actions
        .iter()
        .map(|a| match a {
            Action::Launch { count, .. } => *count,
            Action::Stop { .. } => 0,
        })
        .sum()
}

fn stopped(out: &Reconciled) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { task_id, .. } => Some(task_id.clone()),
            Action::Launch { .. } => None,
        })
        .collect()
}

fn messages(out: &Reconciled) -> Vec<String> {
    out.events.iter().map(|e| e.message.clone()).collect()
}

/// A new service's state that already knows `tasks` (no "started" event, no streaks).
fn settled(spec: &ServiceSpec, tasks: &[TaskView], now: u64) -> ServiceState {
    let mut state = create(spec, T0, 7);
    for t in tasks {
        let memo = TaskMemo {
            seen_running: t.started_at.is_some(),
            seen_healthy: is_healthy(spec, t, now),
            ..TaskMemo::default()
        };
        state.tasks.insert(t.id.clone(), memo);
    }
    state
}

// ---- model and ids ----

/// A new service has one PRIMARY deployment IN_PROGRESS with an `ecs-svc/` + 19-digit id.
#[test]
fn create_makes_one_primary_in_progress() {
    let s = spec(2);
    let state = create(&s, T0, 42);
    assert_eq!(state.deployments.len(), 1);
    let p = state.primary().unwrap();
    assert_eq!(p.status, DeploymentStatus::Primary);
    assert_eq!(p.rollout_state, RolloutState::InProgress);
    assert_eq!(p.task_definition, TD1);
    assert_eq!(p.desired_count, 2);
    assert_eq!(p.id, "ecs-svc/0000000000000000042");
    assert_eq!(
        p.rollout_state_reason,
        "ECS deployment ecs-svc/0000000000000000042 in progress."
    );
}

/// Generated ids stay 19 digits even when the caller's base is near u64::MAX.
#[test]
fn deployment_ids_are_always_19_digits() {
    let state = create(&spec(1), T0, u64::MAX);
    let id = primary_id(&state);
    let digits = id.strip_prefix("ecs-svc/").unwrap();
    assert_eq!(digits.len(), 19);
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
}

/// The state survives a JSON round trip (the caller stores it) with ECS field names.
#[test]
fn state_round_trips_through_json() {
    let s = spec(2);
    let out = reconcile(&s, &create(&s, T0, 1), &[], T0);
    let json = serde_json::to_string(&out.state).unwrap();
    assert!(json.contains("\"rolloutState\":\"IN_PROGRESS\""));
    assert!(json.contains("\"taskDefinition\""));
    let back: ServiceState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out.state);
}

/// Actions serialize with camelCase names, tagged by kind.
#[test]
fn actions_serialize_camel_case() {
    let a = Action::Launch {
        deployment_id: "ecs-svc/1".into(),
        task_definition: TD1.into(),
        count: 2,
    };
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::json!({"action": "launch", "deploymentId": "ecs-svc/1", "taskDefinition": TD1, "count": 2})
    );
    let s = Action::Stop {
        task_id: "t".into(),
        reason: "r".into(),
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        serde_json::json!({"action": "stop", "taskId": "t", "reason": "r"})
    );
}

/// The spec refuses unknown fields and fills ECS's defaults (100 %, 200 %, breaker off).
#[test]
fn spec_defaults_and_unknown_fields() {
    let s: ServiceSpec =
        serde_json::from_str(r#"{"name":"web","desiredCount":1,"taskDefinition":"td"}"#).unwrap();
    assert_eq!(s.deployment_configuration.minimum_healthy_percent, 100);
    assert_eq!(s.deployment_configuration.maximum_percent, 200);
    assert!(!s.deployment_configuration.deployment_circuit_breaker.enable);
    assert_eq!(s.launch_type, LaunchType::Ec2);
    let bad = serde_json::from_str::<ServiceSpec>(
        r#"{"name":"web","desiredCount":1,"taskDefinition":"td","bogus":1}"#,
    );
    assert!(bad.is_err());
}

/// Same inputs, same outputs: no clock, no randomness inside.
#[test]
fn reconcile_is_deterministic() {
    let s = spec(3);
    let state = create(&s, T0, 9);
    let tasks = [healthy("a", &primary_id(&state), T0)];
    assert_eq!(
        reconcile(&s, &state, &tasks, T0 + 5),
        reconcile(&s, &state, &tasks, T0 + 5)
    );
}

// ---- limits and validation ----

/// Minimum healthy rounds up and maximum rounds down, as the ECS API reference says.
#[test]
fn limits_round_like_ecs() {
    let cfg = DeploymentConfiguration {
        minimum_healthy_percent: 50,
        maximum_percent: 150,
        ..Default::default()
    };
    assert_eq!(
        Limits::new(3, &cfg),
        Limits {
            desired: 3,
            min_healthy: 2,
            max_total: 4
        }
    );
    assert_eq!(Limits::new(0, &cfg).max_total, 0);
}

/// validate refuses percents ECS refuses and limits that leave no room to replace a task.
#[test]
fn validate_refuses_bad_configurations() {
    let mut s = spec(1);
    assert_eq!(validate(&s), Ok(()));
    s.deployment_configuration.minimum_healthy_percent = 101;
    assert_eq!(validate(&s), Err(ConfigError::MinimumAbove100(101)));
    s.deployment_configuration.minimum_healthy_percent = 100;
    s.deployment_configuration.maximum_percent = 99;
    assert_eq!(validate(&s), Err(ConfigError::MaximumBelow100(99)));
    s.deployment_configuration.maximum_percent = 150;
    assert_eq!(
        validate(&s),
        Err(ConfigError::NoRoomToReplace {
            desired: 1,
            min_healthy: 1,
            max_total: 1
        })
    );
    s.desired_count = 0;
    assert_eq!(validate(&s), Ok(()));
}

// ---- desired count ----

/// An empty service launches its desired count for the PRIMARY deployment in one action.
#[test]
fn launches_desired_count() {
    let s = spec(3);
    let state = create(&s, T0, 1);
    let out = reconcile(&s, &state, &[], T0);
    assert_eq!(
        out.actions,
        vec![Action::Launch {
            deployment_id: primary_id(&state),
            task_definition: TD1.into(),
            count: 3
        }]
    );
}

/// Pending tasks count toward the desired count: no second launch while they start.
#[test]
fn pending_tasks_are_not_launched_twice() {
    let s = spec(2);
    let state = create(&s, T0, 1);
    let p = primary_id(&state);
    let tasks = [
        task("a", &p, TaskStatus::Provisioning, T0),
        task("b", &p, TaskStatus::Pending, T0),
    ];
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert!(out.actions.is_empty());
    let d = out.state.primary().unwrap();
    assert_eq!((d.pending_count, d.running_count), (2, 0));
}

/// A task that stopped is replaced, and its stop counts as a failed task.
#[test]
fn stopped_task_is_replaced() {
    let s = spec(2);
    let state = create(&s, T0, 1);
    let p = primary_id(&state);
    let mut crashed = healthy("b", &p, T0);
    crashed.last_status = TaskStatus::Stopped;
    crashed.desired_status = DesiredStatus::Stopped;
    crashed.stop_code = Some("EssentialContainerExited".into());
    let out = reconcile(&s, &state, &[healthy("a", &p, T0), crashed], T0 + 1);
    assert_eq!(launched(&out), 1);
    assert_eq!(out.state.primary().unwrap().failed_tasks, 1);
}

/// The "has started" event lists the new tasks in ECS's words, once.
#[test]
fn started_event_uses_ecs_text() {
    let s = spec(2);
    let state = create(&s, T0, 1);
    let p = primary_id(&state);
    let tasks = [
        task("1a2b", &p, TaskStatus::Pending, T0),
        task("3c4d", &p, TaskStatus::Pending, T0),
    ];
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(
        messages(&out),
        vec!["(service web) has started 2 tasks: (task 1a2b) (task 3c4d)."]
    );
    let again = reconcile(&s, &out.state, &tasks, T0 + 2);
    assert!(again.events.is_empty());
}

/// Reaching desired count with healthy tasks completes the rollout and says so, once.
#[test]
fn steady_state_completes_the_deployment_once() {
    let s = spec(2);
    let state = create(&s, T0, 1);
    let p = primary_id(&state);
    let tasks = [healthy("a", &p, T0), healthy("b", &p, T0)];
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    let d = out.state.primary().unwrap();
    assert_eq!(d.rollout_state, RolloutState::Completed);
    assert_eq!(
        d.rollout_state_reason,
        format!("ECS deployment {p} completed.")
    );
    assert_eq!(d.running_count, 2);
    assert!(messages(&out).contains(&"(service web) has reached a steady state.".to_string()));
    assert!(messages(&out).contains(&format!(
        "(service web) (deployment {p}) deployment completed."
    )));
    let again = reconcile(&s, &out.state, &tasks, T0 + 2);
    assert!(again.events.is_empty() && again.actions.is_empty());
}

/// Scaling up launches only the difference.
#[test]
fn scale_up_launches_the_difference() {
    let s = spec(2);
    let state = create(&s, T0, 1);
    let p = primary_id(&state);
    let tasks = [healthy("a", &p, T0), healthy("b", &p, T0)];
    let state = reconcile(&s, &state, &tasks, T0).state;
    let out = reconcile(&spec(5), &state, &tasks, T0 + 1);
    assert_eq!(launched(&out), 3);
}

/// Scaling down stops tasks not yet RUNNING first, then unhealthy-looking ones, then the
/// newest, with ECS's stopped-tasks event.
#[test]
fn scale_down_order_pending_then_not_healthy_then_newest() {
    let s = spec(5);
    let p = primary_id(&create(&s, T0, 7));
    let mut settling = healthy("settling", &p, T0 + 1);
    settling.health_status = HealthStatus::Unknown;
    let tasks = [
        healthy("old", &p, T0),
        healthy("mid", &p, T0 + 5),
        healthy("new", &p, T0 + 9),
        settling,
        task("pending", &p, TaskStatus::Pending, T0),
    ];
    let state = settled(&s, &tasks, T0 + 10);
    let out = reconcile(&spec(2), &state, &tasks, T0 + 20);
    assert_eq!(stopped(&out), vec!["pending", "settling", "new"]);
    assert!(messages(&out).contains(
        &"(service web) has stopped 3 running tasks: (task pending) (task settling) (task new)."
            .to_string()
    ));
}

/// Scale-in never goes below the minimum healthy count of the new desired count.
#[test]
fn scale_down_to_zero_stops_everything() {
    let s = spec(2);
    let p = primary_id(&create(&s, T0, 7));
    let tasks = [healthy("a", &p, T0), healthy("b", &p, T0)];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&spec(0), &state, &tasks, T0 + 2);
    assert_eq!(stopped(&out).len(), 2);
    assert_eq!(launched(&out), 0);
    let mut gone = tasks.clone();
    for t in &mut gone {
        t.last_status = TaskStatus::Stopped;
        t.desired_status = DesiredStatus::Stopped;
    }
    let out = reconcile(&spec(0), &out.state, &gone, T0 + 3);
    assert!(out.actions.is_empty());
    // Stops the controller asked for are not failures.
    assert_eq!(out.state.primary().unwrap().failed_tasks, 0);
    assert!(out.state.steady);
}

// ---- health ----

/// Behind a load balancer a task is not healthy before the grace period has passed.
#[test]
fn grace_period_delays_healthy_with_load_balancer() {
    let mut s = spec(1);
    s.has_load_balancer = true;
    s.health_check_grace_period_secs = 30;
    let t = healthy("a", "d", T0);
    assert!(!is_healthy(&s, &t, T0 + 29_999));
    assert!(is_healthy(&s, &t, T0 + 30_000));
}

/// Behind a load balancer whose health is known, a task is healthy exactly when its
/// targets are (and its containers, if checked), grace period or not; an unhealthy
/// target gets the task replaced once the grace period is over.
#[test]
fn target_health_decides_behind_a_load_balancer() {
    let mut s = spec(1);
    s.has_load_balancer = true;
    s.health_check_grace_period_secs = 30;
    let mut t = healthy("a", "d", T0);
    t.target_health = Some(TargetHealth::Healthy);
    assert!(is_healthy(&s, &t, T0 + 1));
    t.target_health = Some(TargetHealth::Pending);
    assert!(!is_healthy(&s, &t, T0 + 60_000));
    assert!(
        !is_unhealthy(&s, &t, T0 + 60_000),
        "initial is not unhealthy"
    );
    t.target_health = Some(TargetHealth::Unhealthy);
    assert!(!is_healthy(&s, &t, T0 + 60_000));
    assert!(!is_unhealthy(&s, &t, T0 + 29_999));
    assert!(is_unhealthy(&s, &t, T0 + 30_000));
    t.target_health = Some(TargetHealth::Healthy);
    t.health_status = HealthStatus::Unknown;
    assert!(
        !is_healthy(&s, &t, T0 + 60_000),
        "containers not yet healthy"
    );
    t.has_health_check = false;
    assert!(is_healthy(&s, &t, T0 + 1));
}

/// Without load balancer or health check, a task counts as healthy 40 s after RUNNING.
#[test]
fn no_health_check_settles_after_40_seconds() {
    let s = spec(1);
    let mut t = task("a", "d", TaskStatus::Running, T0);
    t.has_health_check = false;
    assert!(!is_healthy(&s, &t, T0 + 39_999));
    assert!(is_healthy(&s, &t, T0 + 40_000));
}

/// UNHEALTHY is ignored during the grace period, then the task is unhealthy.
#[test]
fn unhealthy_is_ignored_during_grace_period() {
    let mut s = spec(1);
    s.health_check_grace_period_secs = 60;
    let mut t = task("a", "d", TaskStatus::Running, T0);
    t.health_status = HealthStatus::Unhealthy;
    assert!(!is_unhealthy(&s, &t, T0 + 59_000));
    assert!(is_unhealthy(&s, &t, T0 + 60_000));
}

/// An unhealthy task is replaced first (launch), then stopped once the replacement is
/// healthy; the stop is a failed task with ECS's health-check event.
#[test]
fn unhealthy_task_replaced_before_stop() {
    let s = spec(2);
    let p = primary_id(&create(&s, T0, 7));
    let mut sick = healthy("sick", &p, T0);
    sick.health_status = HealthStatus::Unhealthy;
    let tasks = vec![healthy("a", &p, T0), sick.clone()];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&s, &state, &tasks, T0 + 2);
    assert_eq!(launched(&out), 1);
    assert!(stopped(&out).is_empty());
    let mut tasks2 = tasks.clone();
    tasks2.push(healthy("fresh", &p, T0 + 3));
    let out = reconcile(&s, &out.state, &tasks2, T0 + 4);
    assert_eq!(stopped(&out), vec!["sick"]);
    assert!(out.actions.contains(&Action::Stop {
        task_id: "sick".into(),
        reason: "Task failed container health checks".into()
    }));
    assert!(messages(&out)
        .contains(&"(service web) (task sick) failed container health checks.".to_string()));
    let mut tasks3 = tasks2.clone();
    tasks3[1].last_status = TaskStatus::Stopped;
    tasks3[1].desired_status = DesiredStatus::Stopped;
    // The health-check stop counts toward the circuit breaker (ECS failedTasks); the
    // state's deployment is COMPLETED, so the count is not kept.
    let out = reconcile(&s, &out.state, &tasks3, T0 + 5);
    assert!(out.actions.is_empty());
}

/// With no room under maximumPercent an unhealthy task is stopped at once.
#[test]
fn unhealthy_task_stopped_at_once_without_room() {
    let mut s = spec(2);
    s.deployment_configuration.minimum_healthy_percent = 50;
    s.deployment_configuration.maximum_percent = 100;
    let p = primary_id(&create(&s, T0, 7));
    let mut sick = healthy("sick", &p, T0);
    sick.health_status = HealthStatus::Unhealthy;
    let tasks = vec![healthy("a", &p, T0), sick];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&s, &state, &tasks, T0 + 2);
    assert_eq!(stopped(&out), vec!["sick"]);
    assert_eq!(launched(&out), 0);
}

// ---- draining instances ----

/// A task on a draining instance gets its replacement first and is stopped once the
/// replacement is healthy.
#[test]
fn draining_instance_task_replaced_first() {
    let s = spec(2);
    let p = primary_id(&create(&s, T0, 7));
    let mut drained = healthy("drained", &p, T0);
    drained.on_draining_instance = true;
    let tasks = vec![healthy("a", &p, T0), drained];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&s, &state, &tasks, T0 + 2);
    assert_eq!(launched(&out), 1);
    assert!(stopped(&out).is_empty());
    let mut tasks2 = tasks.clone();
    tasks2.push(task("new", &p, TaskStatus::Pending, T0 + 2));
    let out = reconcile(&s, &out.state, &tasks2, T0 + 3);
    assert!(out.actions.is_empty(), "waits for the replacement");
    tasks2[2] = healthy("new", &p, T0 + 2);
    let out = reconcile(&s, &out.state, &tasks2, T0 + 4);
    assert_eq!(
        out.actions,
        vec![Action::Stop {
            task_id: "drained".into(),
            reason: "Container instance is draining".into()
        }]
    );
}

/// With maximumPercent 100 there is no room: the drained task is stopped first, within
/// the minimum healthy percent.
#[test]
fn draining_without_room_stops_within_minimum() {
    let mut s = spec(2);
    s.deployment_configuration.minimum_healthy_percent = 50;
    s.deployment_configuration.maximum_percent = 100;
    let p = primary_id(&create(&s, T0, 7));
    let mut d1 = healthy("d1", &p, T0);
    d1.on_draining_instance = true;
    let mut d2 = healthy("d2", &p, T0);
    d2.on_draining_instance = true;
    let tasks = vec![d1, d2];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&s, &state, &tasks, T0 + 2);
    assert_eq!(stopped(&out), vec!["d1"], "only one: 1 healthy must stay");
    assert_eq!(launched(&out), 0);
}

// ---- rolling deployments ----

/// UpdateService with the same task definition and no force changes nothing; with
/// force, or a new task definition, the old PRIMARY becomes ACTIVE.
#[test]
fn update_makes_new_primary_only_when_needed() {
    let s = spec(1);
    let state = create(&s, T0, 1);
    let same = update(&s, &state, Some(TD1), false, T0).unwrap();
    assert_eq!(same, state);
    let forced = update(&s, &state, None, true, T0).unwrap();
    assert_eq!(forced.deployments.len(), 2);
    assert_eq!(forced.primary().unwrap().task_definition, TD1);
    let new = update(&s, &state, Some(TD2), false, T0 + 1).unwrap();
    assert_eq!(new.deployments[0].status, DeploymentStatus::Primary);
    assert_eq!(new.deployments[0].task_definition, TD2);
    assert_eq!(new.deployments[1].status, DeploymentStatus::Active);
    assert_ne!(new.deployments[0].id, new.deployments[1].id);
}

/// With 100 %/200 % old tasks stay until new ones are healthy; new ones launch at once.
#[test]
fn rolling_keeps_old_tasks_until_new_are_healthy() {
    let s = spec(2);
    let state = create(&s, T0, 7);
    let old = primary_id(&state);
    let tasks = vec![healthy("o1", &old, T0), healthy("o2", &old, T0)];
    let state = reconcile(&s, &state, &tasks, T0 + 1).state;
    let state = update(&s, &state, Some(TD2), false, T0 + 2).unwrap();
    let new = primary_id(&state);
    let out = reconcile(&s, &state, &tasks, T0 + 3);
    assert_eq!(launched(&out), 2);
    assert!(stopped(&out).is_empty());
    let mut tasks2 = tasks.clone();
    tasks2.push(healthy("n1", &new, T0 + 4));
    tasks2.push(task("n2", &new, TaskStatus::Running, T0 + 4));
    let out = reconcile(&s, &out.state, &tasks2, T0 + 5);
    assert_eq!(stopped(&out), vec!["o1"], "one new healthy: one old may go");
    assert!(out.actions.contains(&Action::Stop {
        task_id: "o1".into(),
        reason: format!("Scaling activity initiated by (deployment {new})")
    }));
}

/// When the old deployment has no tasks left it becomes INACTIVE (kept as the rollback
/// target) and the PRIMARY completes.
#[test]
fn old_deployment_goes_inactive_and_primary_completes() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let old = primary_id(&state);
    let state = reconcile(&s, &state, &[healthy("o", &old, T0)], T0 + 1).state;
    let state = update(&s, &state, Some(TD2), false, T0 + 2).unwrap();
    let new = primary_id(&state);
    let mut o = healthy("o", &old, T0);
    o.last_status = TaskStatus::Stopped;
    o.desired_status = DesiredStatus::Stopped;
    let out = reconcile(&s, &state, &[o, healthy("n", &new, T0 + 3)], T0 + 4);
    let p = out.state.primary().unwrap();
    assert_eq!(p.rollout_state, RolloutState::Completed);
    assert_eq!(out.state.deployments[1].status, DeploymentStatus::Inactive);
    assert_eq!(out.state.visible_deployments().count(), 1);
    assert!(messages(&out).contains(&"(service web) has reached a steady state.".to_string()));
}

/// A rolling deployment of 3 tasks at 100 %/200 % finishes, never below 3 healthy and
/// never above 6 tasks.
#[test]
fn sim_rolling_deployment_3_tasks_finishes() {
    let mut sim = Sim::new(spec(3), T0);
    sim.run(100).unwrap();
    assert!(sim.is_steady());
    let first = primary_id(&sim.state);
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    sim.run(100).unwrap();
    assert!(sim.is_steady());
    let p = sim.state.primary().unwrap();
    assert_eq!(p.task_definition, TD2);
    assert_ne!(p.id, first);
    assert!(sim.live().iter().all(|t| t.deployment_id == p.id));
    assert_eq!(sim.state.visible_deployments().count(), 1);
}

/// Rolling with 50 %/100 % (no extra capacity) stops old tasks first and finishes.
#[test]
fn sim_rolling_without_extra_capacity() {
    let mut s = spec(4);
    s.deployment_configuration.minimum_healthy_percent = 50;
    s.deployment_configuration.maximum_percent = 100;
    let mut sim = Sim::new(s, T0);
    sim.run(100).unwrap();
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    sim.run(100).unwrap();
    assert!(sim.is_steady());
    assert_eq!(sim.state.primary().unwrap().task_definition, TD2);
}

/// Behind a load balancer with a grace period, the deployment still finishes.
#[test]
fn sim_rolling_with_load_balancer_grace() {
    let mut s = spec(2);
    s.has_load_balancer = true;
    s.health_check_grace_period_secs = 45;
    let mut sim = Sim::new(s, T0);
    sim.run(100).unwrap();
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    sim.run(100).unwrap();
    assert!(sim.is_steady());
}

// ---- circuit breaker ----

/// The threshold is 0.5 × desired count (rounded up), at least 3 and at most 200.
#[test]
fn circuit_breaker_threshold_bounds() {
    assert_eq!(threshold(0), 3);
    assert_eq!(threshold(1), 3);
    assert_eq!(threshold(6), 3);
    assert_eq!(threshold(7), 4);
    assert_eq!(threshold(10), 5);
    assert_eq!(threshold(400), 200);
    assert_eq!(threshold(u32::MAX), 200);
}

fn breaker(rollback: bool) -> ServiceSpec {
    let mut s = spec(3);
    s.deployment_configuration.deployment_circuit_breaker = CircuitBreakerConfig {
        enable: true,
        rollback,
    };
    s
}

/// A broken image trips the breaker and rolls back to the last COMPLETED deployment,
/// which becomes PRIMARY again and completes; invariants hold throughout.
#[test]
fn sim_broken_image_trips_breaker_and_rolls_back() {
    let mut sim = Sim::new(breaker(true), T0);
    sim.run(100).unwrap();
    let good = primary_id(&sim.state);
    sim.broken.insert(TD2.into());
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    let bad = primary_id(&sim.state);
    sim.run(200).unwrap();
    assert!(sim.is_steady());
    let p = sim.state.primary().unwrap();
    assert_eq!(p.id, good);
    assert_eq!(p.task_definition, TD1);
    assert_eq!(p.rollout_state, RolloutState::Completed);
    assert!(sim.saw_event(&format!(
        "(service web) (deployment {bad}) deployment failed: tasks failed to start."
    )));
    assert!(sim.saw_event(&format!("rolling back to deployment {good}")));
}

/// On trip the failed deployment is FAILED with ECS's reason, and the rollback target
/// is IN_PROGRESS with the rolling-back reason.
#[test]
fn breaker_trip_sets_failed_and_reasons() {
    let s = breaker(true);
    let state = create(&s, T0, 7);
    let good = primary_id(&state);
    let olds: Vec<TaskView> = (0..3)
        .map(|i| healthy(&format!("o{i}"), &good, T0))
        .collect();
    let state = reconcile(&s, &state, &olds, T0 + 1).state;
    let state = update(&s, &state, Some(TD2), false, T0 + 2).unwrap();
    let bad = primary_id(&state);
    let mut tasks = olds.clone();
    tasks.extend((0..3).map(|i| failed_to_start(&format!("b{i}"), &bad, T0 + 3)));
    tasks.push(task("b3", &bad, TaskStatus::Pending, T0 + 3));
    let out = reconcile(&s, &state, &tasks, T0 + 4);
    let failed = out.state.deployments.iter().find(|d| d.id == bad).unwrap();
    assert_eq!(failed.status, DeploymentStatus::Active);
    assert_eq!(
        stopped(&out),
        vec!["b3"],
        "the failed deployment's tasks go"
    );
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert_eq!(
        failed.rollout_state_reason,
        "ECS deployment circuit breaker: task failed to start."
    );
    let p = out.state.primary().unwrap();
    assert_eq!(p.id, good);
    assert_eq!(p.rollout_state, RolloutState::InProgress);
    assert_eq!(
        p.rollout_state_reason,
        format!("ECS deployment circuit breaker: rolling back to deploymentId {good}.")
    );
    assert!(out.events.iter().any(|e| e.message
        == format!("(service web) (deployment {bad}) deployment failed: tasks failed to start.")));
}

/// Tasks that run but fail their health checks trip the breaker too (they are stopped
/// as failures) and the service rolls back.
#[test]
fn sim_unhealthy_image_trips_breaker_and_rolls_back() {
    let mut sim = Sim::new(breaker(true), T0);
    sim.run(100).unwrap();
    let good = primary_id(&sim.state);
    sim.unhealthy.insert(TD2.into());
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    sim.run(200).unwrap();
    assert!(sim.is_steady());
    assert_eq!(primary_id(&sim.state), good);
    assert!(sim.saw_event("failed container health checks."));
    assert!(sim.saw_event("deployment failed: tasks failed to start."));
}

/// Without rollback, a tripped deployment launches nothing more and old tasks keep serving.
#[test]
fn sim_breaker_without_rollback_stalls_with_old_tasks() {
    let mut sim = Sim::new(breaker(false), T0);
    sim.run(100).unwrap();
    let good = primary_id(&sim.state);
    sim.broken.insert(TD2.into());
    sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
    sim.run(200).unwrap();
    let p = sim.state.primary().unwrap();
    assert_eq!(p.task_definition, TD2);
    assert_eq!(p.rollout_state, RolloutState::Failed);
    let live = sim.live();
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|t| t.deployment_id == good));
}

/// Failures below the threshold followed by a healthy task reset the count.
#[test]
fn breaker_count_resets_on_healthy_task() {
    let s = breaker(true);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks = vec![failed_to_start("f1", &p, T0), failed_to_start("f2", &p, T0)];
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(out.state.primary().unwrap().failed_tasks, 2);
    let mut tasks2 = tasks.clone();
    tasks2.push(healthy("ok", &p, T0 + 2));
    let out = reconcile(&s, &out.state, &tasks2, T0 + 3);
    assert_eq!(out.state.primary().unwrap().failed_tasks, 0);
    assert_eq!(
        out.state.primary().unwrap().rollout_state,
        RolloutState::InProgress
    );
}

/// With the breaker off, failures never fail the deployment.
#[test]
fn breaker_disabled_never_fails() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks: Vec<TaskView> = (0..10)
        .map(|i| failed_to_start(&format!("f{i}"), &p, T0))
        .collect();
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(out.state.primary().unwrap().failed_tasks, 10);
    assert_eq!(
        out.state.primary().unwrap().rollout_state,
        RolloutState::InProgress
    );
}

/// With no COMPLETED deployment to go back to, a tripped first deployment stalls.
#[test]
fn breaker_without_completed_target_stalls() {
    let s = breaker(true);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks: Vec<TaskView> = (0..3)
        .map(|i| failed_to_start(&format!("f{i}"), &p, T0))
        .collect();
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(
        out.state.primary().unwrap().rollout_state,
        RolloutState::Failed
    );
    assert!(out.actions.is_empty());
}

// ---- service throttle ----

/// The documented throttle steps: immediate retry, then 10 s doubling, capped at 27 min.
#[test]
fn throttle_delays() {
    assert_eq!(throttle::delay_ms(0), 0);
    assert_eq!(throttle::delay_ms(1), 0);
    assert_eq!(throttle::delay_ms(2), 10_000);
    assert_eq!(throttle::delay_ms(3), 20_000);
    assert_eq!(throttle::delay_ms(5), 80_000);
    assert_eq!(throttle::delay_ms(30), 27 * 60 * 1000);
    assert_eq!(throttle::delay_ms(u32::MAX), 27 * 60 * 1000);
}

/// Repeated failures to start hold launches back, with ECS's throttle event, until the
/// delay has passed.
#[test]
fn repeated_start_failures_back_off() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let out = reconcile(&s, &state, &[failed_to_start("f1", &p, T0)], T0 + 1);
    assert_eq!(launched(&out), 1, "first failure: retried at once");
    let tasks = [
        failed_to_start("f1", &p, T0),
        failed_to_start("f2", &p, T0 + 1),
    ];
    let out = reconcile(&s, &out.state, &tasks, T0 + 2);
    assert_eq!(launched(&out), 0, "second failure: throttled");
    assert!(messages(&out).contains(
        &"(service web) is unable to consistently start tasks successfully.".to_string()
    ));
    let out = reconcile(&s, &out.state, &tasks, T0 + 2 + 9_999);
    assert_eq!(launched(&out), 0);
    let out = reconcile(&s, &out.state, &tasks, T0 + 2 + 10_000);
    assert_eq!(launched(&out), 1);
    assert!(
        out.events.is_empty(),
        "the throttle event is sent once per streak"
    );
}

/// Tasks that stop after reaching RUNNING do not trigger the throttle.
#[test]
fn stops_after_running_do_not_throttle() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut t = healthy(&format!("c{i}"), &p, T0);
        t.last_status = TaskStatus::Stopped;
        t.desired_status = DesiredStatus::Stopped;
        t.stop_code = Some("EssentialContainerExited".into());
        tasks.push(t);
    }
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(launched(&out), 1);
    assert!(
        out.state.backoff.is_empty() || !throttle::is_throttled(out.state.backoff.get(&p), T0 + 1)
    );
}

/// A new deployment is not throttled by the old one's failures.
#[test]
fn new_deployment_resets_the_throttle() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks: Vec<TaskView> = (0..4)
        .map(|i| failed_to_start(&format!("f{i}"), &p, T0))
        .collect();
    let out = reconcile(&s, &state, &tasks, T0 + 1);
    assert_eq!(launched(&out), 0);
    let state = update(&s, &out.state, Some(TD2), false, T0 + 2).unwrap();
    let out = reconcile(&s, &state, &tasks, T0 + 3);
    assert_eq!(launched(&out), 1);
}

/// A placement failure is reported in ECS's words and counts for throttle and breaker.
#[test]
fn placement_failure_event_and_counts() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let (state, ev) = placement_failed(
        &s,
        &state,
        &p,
        "Reason: No Container Instances were found in your cluster.",
        T0,
    );
    assert_eq!(
        ev[0].message,
        "(service web) was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster. For more information, see the Troubleshooting section."
    );
    assert_eq!(state.primary().unwrap().failed_tasks, 1);
    let (same, ev) = placement_failed(
        &s,
        &state,
        &p,
        "Reason: No Container Instances were found in your cluster.",
        T0 + 1,
    );
    assert!(
        !ev.iter().any(|e| e.message.contains("unable to place")),
        "the same placement event is not repeated within a minute"
    );
    assert_eq!(
        same.events
            .iter()
            .filter(|e| e.message.contains("unable to place"))
            .count(),
        1
    );
    let (state, ev) = placement_failed(&s, &state, &p, "x", T0 + 1);
    assert_eq!(ev.len(), 2, "the second failure engages the throttle");
    assert_eq!(launched(&reconcile(&s, &state, &[], T0 + 2)), 0);
}

// ---- events ----

/// Events are newest first and bounded to the 100 DescribeServices shows.
#[test]
fn events_are_bounded_newest_first() {
    let s = spec(1);
    let mut state = create(&s, T0, 7);
    let p = primary_id(&state);
    for i in 0..150u64 {
        state = placement_failed(&s, &state, &p, &format!("r{i}"), T0 + i).0;
    }
    assert_eq!(state.events.len(), MAX_EVENTS);
    assert!(state.events[0].message.contains(" r149 "));
    assert!(state
        .events
        .windows(2)
        .all(|w| w[0].created_at >= w[1].created_at));
    let ids: std::collections::BTreeSet<_> = state.events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), MAX_EVENTS, "event ids are unique");
}

// ---- deletion ----

/// DeleteService drains every task, goes INACTIVE when none is left, and refuses updates.
#[test]
fn delete_drains_then_inactive() {
    let s = spec(2);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks = vec![healthy("a", &p, T0), healthy("b", &p, T0)];
    let state = reconcile(&s, &state, &tasks, T0 + 1).state;
    let state = delete(&state, T0 + 2);
    assert_eq!(state.status, ServiceStatus::Draining);
    assert_eq!(
        update(&s, &state, Some(TD2), false, T0 + 2),
        Err(UpdateError::ServiceNotActive {
            service: "web".into(),
            status: ServiceStatus::Draining
        })
    );
    let out = reconcile(&s, &state, &tasks, T0 + 3);
    assert_eq!(stopped(&out).len(), 2);
    assert_eq!(launched(&out), 0);
    let gone: Vec<TaskView> = tasks
        .iter()
        .map(|t| TaskView {
            last_status: TaskStatus::Stopped,
            desired_status: DesiredStatus::Stopped,
            ..t.clone()
        })
        .collect();
    let out = reconcile(&s, &out.state, &gone, T0 + 4);
    assert_eq!(out.state.status, ServiceStatus::Inactive);
    assert!(out.state.primary().is_none());
    assert!(reconcile(&s, &out.state, &[], T0 + 5).actions.is_empty());
}

/// A deleted service in the simulation ends INACTIVE with no task left.
#[test]
fn sim_delete_drains_everything() {
    let mut sim = Sim::new(spec(3), T0);
    sim.run(100).unwrap();
    sim.state = delete(&sim.state, sim.now_ms);
    sim.run(100).unwrap();
    assert_eq!(sim.state.status, ServiceStatus::Inactive);
    assert!(sim.live().is_empty());
}

/// Tasks of unknown deployments (e.g. an INACTIVE one's stragglers) are stopped.
#[test]
fn tasks_of_unknown_deployments_are_stopped() {
    let s = spec(1);
    let state = create(&s, T0, 7);
    let p = primary_id(&state);
    let tasks = [healthy("a", &p, T0), healthy("stray", "ecs-svc/9", T0)];
    let state = settled(&s, &tasks, T0 + 1);
    let out = reconcile(&s, &state, &tasks, T0 + 2);
    assert_eq!(stopped(&out), vec!["stray"]);
}

// ---- properties ----

#[derive(Debug, Clone)]
struct Scenario {
    desired: u32,
    min: u32,
    max: u32,
    fail_first: u32,
    breaker: bool,
    rollback: bool,
    /// 0: a good update; 1: its image fails to start; 2: its tasks run but fail
    /// their health checks.
    bad_update: u8,
    scale_to: u32,
    drain: usize,
    health_check: bool,
    lb_grace: Option<u32>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (0u32..7, 0u32..=100, 100u32..=200, 0u32..6),
        (any::<bool>(), any::<bool>(), 0u8..3, 0u32..7),
        (0usize..3, any::<bool>(), proptest::option::of(0u32..60)),
    )
        .prop_map(
            |(
                (desired, min, max, fail_first),
                (breaker, rollback, bad_update, scale_to),
                (drain, health_check, lb_grace),
            )| Scenario {
                desired,
                min,
                max,
                fail_first,
                breaker,
                rollback,
                bad_update,
                scale_to,
                drain,
                health_check,
                lb_grace,
            },
        )
}

fn settles_ok(sim: &Sim) -> bool {
    sim.is_steady()
        || sim
            .state
            .primary()
            .is_some_and(|p| p.rollout_state == RolloutState::Failed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// For any valid limits and failure pattern: the invariants hold at every step (never
    /// below min healthy by a stop, never above max percent by a launch) and the loop
    /// converges — to a steady PRIMARY, or to a FAILED one when the breaker tripped.
    #[test]
    fn invariants_hold_and_loop_converges(sc in scenario()) {
        let mut s = spec(sc.desired);
        s.deployment_configuration.minimum_healthy_percent = sc.min;
        s.deployment_configuration.maximum_percent = sc.max;
        s.deployment_configuration.deployment_circuit_breaker = CircuitBreakerConfig {
            enable: sc.breaker,
            rollback: sc.rollback,
        };
        if let Some(grace) = sc.lb_grace {
            s.has_load_balancer = true;
            s.health_check_grace_period_secs = grace;
        }
        prop_assume!(validate(&s).is_ok());
        let mut sim = Sim::new(s, T0);
        sim.health_check = sc.health_check;
        sim.fail_next = sc.fail_first;
        sim.run(800).map_err(|v| TestCaseError::fail(format!("create: {v:?}")))?;
        prop_assert!(settles_ok(&sim), "create: {:?}", sim.state.primary());

        // A new task definition, broken only where the breaker can end it (with desired
        // 0 a broken deployment completes at once, as in ECS, and fails only on scale-up).
        // (Failing health checks need a health check to be seen.)
        let broken = sc.breaker
            && sc.desired > 0
            && (sc.bad_update == 1 || (sc.bad_update == 2 && sc.health_check));
        if broken && sc.bad_update == 1 {
            sim.broken.insert(TD2.into());
        } else if broken {
            sim.unhealthy.insert(TD2.into());
        }
        sim.state = update(&sim.spec, &sim.state, Some(TD2), false, sim.now_ms).unwrap();
        sim.run(800).map_err(|v| TestCaseError::fail(format!("update: {v:?}")))?;
        prop_assert!(settles_ok(&sim), "update: {:?}", sim.state.deployments);
        if broken && sc.rollback {
            // Rolled back to a completed deployment if there was one; never on TD2.
            let p = sim.state.primary().unwrap();
            prop_assert!(p.task_definition != TD2 || p.rollout_state == RolloutState::Failed);
        }

        // Drain some instances' tasks.
        let drained: Vec<String> = sim.live().iter().take(sc.drain).map(|t| t.id.clone()).collect();
        for t in &mut sim.tasks {
            if drained.contains(&t.id) {
                t.on_draining_instance = true;
            }
        }
        sim.run(800).map_err(|v| TestCaseError::fail(format!("drain: {v:?}")))?;
        prop_assert!(settles_ok(&sim));
        if sim.is_steady() {
            prop_assert!(sim.live().iter().all(|t| !t.on_draining_instance));
        }

        // Scale.
        let mut scaled = sim.spec.clone();
        scaled.desired_count = sc.scale_to;
        if validate(&scaled).is_ok() {
            sim.spec = scaled;
            sim.run(800).map_err(|v| TestCaseError::fail(format!("scale: {v:?}")))?;
            prop_assert!(settles_ok(&sim));
        }

        // Delete.
        sim.state = delete(&sim.state, sim.now_ms);
        sim.run(800).map_err(|v| TestCaseError::fail(format!("delete: {v:?}")))?;
        prop_assert!(sim.live().is_empty());
        prop_assert_eq!(sim.state.status, ServiceStatus::Inactive);
    }
}
