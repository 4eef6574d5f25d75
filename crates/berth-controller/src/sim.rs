//! A small simulated cluster for tests: runs [`reconcile`] in a loop over a fake task
//! list and checks the rolling-update invariants at every step.
//!
//! Each step: tasks move one stage (PENDING → RUNNING, RUNNING → HEALTHY, asked to
//! stop → STOPPED; tasks of a "broken" task definition go PENDING → STOPPED with
//! `CannotPullContainerError`), time advances by `step_ms`, `reconcile` runs, the
//! invariants are checked against the task list it saw, and its actions are applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::deployment::Limits;
use crate::model::{
    Action, DesiredStatus, HealthStatus, Reconciled, RolloutState, ServiceEvent, ServiceSpec,
    ServiceState, ServiceStatus, TaskStatus, TaskView,
};
use crate::reconcile;

/// A broken rolling-update promise, with the step it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Step number.
    pub step: usize,
    /// What was broken.
    pub what: String,
}

/// The simulated service and its tasks.
#[derive(Debug, Clone)]
pub struct Sim {
    /// The spec handed to every round (change it to scale).
    pub spec: ServiceSpec,
    /// The controller's state.
    pub state: ServiceState,
    /// Every task, STOPPED ones kept for `keep_stopped_ms`.
    pub tasks: Vec<TaskView>,
    /// The clock (epoch ms).
    pub now_ms: u64,
    /// Time per step.
    pub step_ms: u64,
    /// Task definitions whose tasks never reach RUNNING.
    pub broken: BTreeSet<String>,
    /// Task definitions whose tasks run but report UNHEALTHY.
    pub unhealthy: BTreeSet<String>,
    /// The next this many launched tasks fail to start, whatever their task definition.
    pub fail_next: u32,
    /// Whether launched tasks have a container health check.
    pub health_check: bool,
    /// How long STOPPED tasks stay in the list.
    pub keep_stopped_ms: u64,
    /// Every event so far, oldest first.
    pub events: Vec<ServiceEvent>,
    /// Steps taken.
    pub steps: usize,
    next_task: u64,
    fates: BTreeMap<String, Fate>,
}

/// What becomes of a launched task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Healthy,
    FailsToStart,
    Unhealthy,
}

impl Sim {
    /// A new service at time `now_ms`, 10 s per step, with health checks.
    pub fn new(spec: ServiceSpec, now_ms: u64) -> Sim {
        let state = crate::create(&spec, now_ms, 1_000_000_000_000_000_000);
        Sim {
            spec,
            state,
            tasks: Vec::new(),
            now_ms,
            step_ms: 10_000,
            broken: BTreeSet::new(),
            unhealthy: BTreeSet::new(),
            fail_next: 0,
            health_check: true,
            keep_stopped_ms: 60_000,
            events: Vec::new(),
            steps: 0,
            next_task: 0,
            fates: BTreeMap::new(),
        }
    }

    /// Moves every task one stage along its life.
    fn advance_tasks(&mut self) {
        let now = self.now_ms;
        for t in &mut self.tasks {
            let fate = self.fates.get(&t.id).copied().unwrap_or(Fate::Healthy);
            match t.last_status {
                TaskStatus::Stopped => {}
                _ if t.desired_status == DesiredStatus::Stopped => {
                    t.last_status = TaskStatus::Stopped;
                    t.stopped_at = Some(now);
                    t.stop_code = Some("ServiceSchedulerInitiated".into());
                }
                TaskStatus::Provisioning | TaskStatus::Pending | TaskStatus::Activating => {
                    if fate == Fate::FailsToStart {
                        t.last_status = TaskStatus::Stopped;
                        t.desired_status = DesiredStatus::Stopped;
                        t.stopped_at = Some(now);
                        t.stop_code = Some("TaskFailedToStart".into());
                        t.stopped_reason =
                            Some("CannotPullContainerError: pull image manifest: not found".into());
                    } else {
                        t.last_status = TaskStatus::Running;
                        t.started_at = Some(now);
                    }
                }
                TaskStatus::Running
                    if t.has_health_check && t.health_status == HealthStatus::Unknown =>
                {
                    t.health_status = if fate == Fate::Unhealthy {
                        HealthStatus::Unhealthy
                    } else {
                        HealthStatus::Healthy
                    };
                }
                _ => {}
            }
        }
        let keep = self.keep_stopped_ms;
        self.tasks.retain(|t| {
            t.last_status != TaskStatus::Stopped
                || t.stopped_at.is_some_and(|s| now < s.saturating_add(keep))
        });
    }

    fn limits(&self) -> Limits {
        let desired = if self.state.status == ServiceStatus::Active {
            self.spec.desired_count
        } else {
            0
        };
        Limits::new(desired, &self.spec.deployment_configuration)
    }

    /// One step; checks the invariants of the round.
    pub fn step(&mut self) -> Result<Reconciled, Violation> {
        self.steps += 1;
        self.now_ms += self.step_ms;
        self.advance_tasks();
        let out = reconcile(&self.spec, &self.state, &self.tasks, self.now_ms);
        self.check(&out)?;
        self.apply(&out);
        self.state = out.state.clone();
        self.events.extend(out.events.iter().cloned());
        Ok(out)
    }

    /// The sim's own notion of healthy (kept apart from the controller's on purpose).
    fn healthy(&self, t: &TaskView) -> bool {
        if t.last_status != TaskStatus::Running || t.desired_status != DesiredStatus::Running {
            return false;
        }
        let started = t.started_at.unwrap_or(t.created_at);
        let grace = u64::from(self.spec.health_check_grace_period_secs) * 1000;
        if self.spec.has_load_balancer && self.now_ms < started + grace {
            return false;
        }
        if t.has_health_check {
            t.health_status == HealthStatus::Healthy
        } else {
            self.spec.has_load_balancer || self.now_ms >= started + 40_000
        }
    }

    fn check(&self, out: &Reconciled) -> Result<(), Violation> {
        let fail = |what: String| {
            Err(Violation {
                step: self.steps,
                what,
            })
        };
        let limits = self.limits();
        let live: Vec<&TaskView> = self
            .tasks
            .iter()
            .filter(|t| t.last_status != TaskStatus::Stopped)
            .collect();
        let healthy_before = live.iter().filter(|t| self.healthy(t)).count();
        let mut launched = 0usize;
        let mut stopped_healthy = 0usize;
        let mut seen = BTreeSet::new();
        let primary = out.state.primary().map(|p| p.id.clone());
        for a in &out.actions {
            match a {
                Action::Launch {
                    deployment_id,
                    count,
                    ..
                } => {
                    if Some(deployment_id) != primary.as_ref() {
                        return fail(format!("launch for non-primary {deployment_id}"));
                    }
                    if *count == 0 {
                        return fail("launch of 0 tasks".into());
                    }
                    launched += *count as usize;
                }
                Action::Stop { task_id, .. } => {
                    let Some(t) = live.iter().find(|t| &t.id == task_id) else {
                        return fail(format!("stop of unknown or stopped task {task_id}"));
                    };
                    if t.desired_status == DesiredStatus::Stopped {
                        return fail(format!("second stop of {task_id}"));
                    }
                    if !seen.insert(task_id.clone()) {
                        return fail(format!("duplicate stop of {task_id}"));
                    }
                    if self.healthy(t) {
                        stopped_healthy += 1;
                    }
                }
            }
        }
        if launched > 0 && live.len() + launched > limits.max_total as usize {
            return fail(format!(
                "{} live + {launched} launched > max {}",
                live.len(),
                limits.max_total
            ));
        }
        let healthy_after = healthy_before - stopped_healthy;
        if stopped_healthy > 0 && healthy_after < (limits.min_healthy as usize).min(healthy_before)
        {
            return fail(format!(
                "healthy {healthy_before} -> {healthy_after} below min {}",
                limits.min_healthy
            ));
        }
        Ok(())
    }

    fn apply(&mut self, out: &Reconciled) {
        for a in &out.actions {
            match a {
                Action::Launch {
                    deployment_id,
                    task_definition,
                    count,
                } => {
                    for _ in 0..*count {
                        self.next_task += 1;
                        let fate = if self.fail_next > 0 {
                            self.fail_next -= 1;
                            Fate::FailsToStart
                        } else if self.broken.contains(task_definition) {
                            Fate::FailsToStart
                        } else if self.unhealthy.contains(task_definition) {
                            Fate::Unhealthy
                        } else {
                            Fate::Healthy
                        };
                        let id = format!("t{:04}", self.next_task);
                        self.fates.insert(id.clone(), fate);
                        self.tasks.push(TaskView {
                            id,
                            deployment_id: deployment_id.clone(),
                            last_status: TaskStatus::Pending,
                            desired_status: DesiredStatus::Running,
                            health_status: HealthStatus::Unknown,
                            has_health_check: self.health_check,
                            created_at: self.now_ms,
                            started_at: None,
                            stopped_at: None,
                            stop_code: None,
                            stopped_reason: None,
                            on_draining_instance: false,
                            target_health: None,
                        });
                    }
                }
                Action::Stop { task_id, reason } => {
                    if let Some(t) = self.tasks.iter_mut().find(|t| &t.id == task_id) {
                        t.desired_status = DesiredStatus::Stopped;
                        t.stopped_reason = Some(reason.clone());
                    }
                }
            }
        }
    }

    /// Steps until nothing happens for 3 steps running with no task in transition (the
    /// number of steps taken), or a violation, or `max_steps` without settling.
    pub fn run(&mut self, max_steps: usize) -> Result<usize, Violation> {
        let mut quiet = 0;
        for _ in 0..max_steps {
            let out = self.step()?;
            // Anything live and not (yet) healthy is still on its way somewhere.
            let moving = self
                .tasks
                .iter()
                .any(|t| t.last_status != TaskStatus::Stopped && !self.healthy(t));
            if out.actions.is_empty() && !moving {
                quiet += 1;
                if quiet >= 3 && !self.throttled() {
                    return Ok(self.steps);
                }
            } else {
                quiet = 0;
            }
        }
        Err(Violation {
            step: self.steps,
            what: "did not settle".into(),
        })
    }

    fn throttled(&self) -> bool {
        self.state
            .backoff
            .values()
            .any(|b| b.not_before_ms > self.now_ms)
    }

    /// Live tasks (not STOPPED).
    pub fn live(&self) -> Vec<&TaskView> {
        self.tasks
            .iter()
            .filter(|t| t.last_status != TaskStatus::Stopped)
            .collect()
    }

    /// The service is steady on its PRIMARY: desired count tasks, all healthy, all of
    /// the PRIMARY, rollout COMPLETED.
    pub fn is_steady(&self) -> bool {
        let Some(p) = self.state.primary() else {
            return self.live().is_empty();
        };
        let live = self.live();
        p.rollout_state == RolloutState::Completed
            && live.len() == self.spec.desired_count as usize
            && live
                .iter()
                .all(|t| t.deployment_id == p.id && self.healthy(t))
    }

    /// Whether some event's message contains `text`.
    pub fn saw_event(&self, text: &str) -> bool {
        self.events.iter().any(|e| e.message.contains(text))
    }
}
