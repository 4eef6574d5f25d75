//! The task's next steps, decided from what its containers are doing (pure).
//!
//! ECS semantics (the task definition reference, "Container dependency" and
//! "essential"): a container starts when each of its `dependsOn` conditions holds —
//! START (the dependency has started), COMPLETE (it has exited), SUCCESS (it exited
//! 0), HEALTHY (its health check passes); a condition that can no longer hold fails
//! the container. When an essential container exits or cannot start, the task
//! stops: every running container gets SIGTERM, then SIGKILL once its `stopTimeout`
//! has passed. A task whose containers have all ended is STOPPED.

/// A `dependsOn` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Condition {
    Start,
    Complete,
    Success,
    Healthy,
}

impl Condition {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "START" => Some(Condition::Start),
            "COMPLETE" => Some(Condition::Complete),
            "SUCCESS" => Some(Condition::Success),
            "HEALTHY" => Some(Condition::Healthy),
            _ => None,
        }
    }
}

/// What the plan needs to know of a container definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDef {
    pub name: String,
    pub essential: bool,
    /// (index of the dependency in the task's containers, condition).
    pub depends_on: Vec<(usize, Condition)>,
    /// Milliseconds between SIGTERM and SIGKILL.
    pub stop_timeout_ms: u64,
}

/// A container's health as its health check reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Not started; waiting for its dependencies.
    Waiting,
    /// Started and not known to have exited.
    Running {
        /// When SIGTERM was sent (ms), if it was.
        term_sent_ms: Option<u64>,
        kill_sent: bool,
    },
    /// Ran and exited.
    Exited { exit_code: Option<i32> },
    /// Never ran: the reason says why.
    NotStarted { reason: String },
}

/// What the agent should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(usize),
    Term(usize),
    Kill(usize),
    /// The container will never start (a dependency cannot hold, or the task stops).
    Abandon(usize, String),
}

/// Why a task stops (ECS `stopCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
}

impl StopCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StopCode::TaskFailedToStart => "TaskFailedToStart",
            StopCode::EssentialContainerExited => "EssentialContainerExited",
            StopCode::UserInitiated => "UserInitiated",
        }
    }
}

/// The decision for one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The task must stop (set once; the caller records it).
    pub stop: Option<(StopCode, String)>,
    /// Every container has ended: the task is STOPPED.
    pub done: bool,
}

fn started(p: &Phase) -> bool {
    matches!(p, Phase::Running { .. } | Phase::Exited { .. })
}

fn ended(p: &Phase) -> bool {
    matches!(p, Phase::Exited { .. } | Phase::NotStarted { .. })
}

/// Whether `cond` on a dependency in `phase` with `health` holds now (`Some(true)`),
/// not yet (`Some(false)`), or never will (`None`).
fn condition_holds(cond: Condition, phase: &Phase, health: Health) -> Option<bool> {
    match (cond, phase) {
        (_, Phase::NotStarted { .. }) => None,
        (Condition::Start, p) => Some(started(p)),
        (Condition::Complete, p) => Some(matches!(p, Phase::Exited { .. })),
        (Condition::Success, Phase::Exited { exit_code }) => {
            (*exit_code == Some(0)).then_some(true)
        }
        (Condition::Success, _) => Some(false),
        (Condition::Healthy, Phase::Exited { .. }) => None,
        (Condition::Healthy, _) => Some(health == Health::Healthy),
    }
}

/// Decides what to do. `stopping` is the task's stop, if one was decided before
/// (desired status STOPPED, or an essential container ended).
pub fn plan(
    defs: &[ContainerDef],
    phases: &[Phase],
    health: &[Health],
    stopping: Option<StopCode>,
    now_ms: u64,
) -> Plan {
    let mut out = Plan::default();
    let mut stop = stopping;
    if stop.is_none() {
        for (i, d) in defs.iter().enumerate() {
            if !d.essential {
                continue;
            }
            match &phases[i] {
                Phase::Exited { .. } => {
                    let (code, reason) = (
                        StopCode::EssentialContainerExited,
                        "Essential container in task exited".to_string(),
                    );
                    out.stop = Some((code, reason));
                    stop = Some(code);
                    break;
                }
                Phase::NotStarted { reason } => {
                    out.stop = Some((StopCode::TaskFailedToStart, reason.clone()));
                    stop = Some(StopCode::TaskFailedToStart);
                    break;
                }
                _ => {}
            }
        }
    }
    if stop.is_some() {
        for (i, d) in defs.iter().enumerate() {
            match &phases[i] {
                Phase::Waiting => out.actions.push(Action::Abandon(
                    i,
                    "the task stopped before it started".into(),
                )),
                Phase::Running {
                    term_sent_ms: None, ..
                } => out.actions.push(Action::Term(i)),
                Phase::Running {
                    term_sent_ms: Some(t),
                    kill_sent: false,
                } if now_ms.saturating_sub(*t) >= d.stop_timeout_ms => {
                    out.actions.push(Action::Kill(i))
                }
                _ => {}
            }
        }
        out.done =
            phases.iter().all(ended) || (phases.iter().all(|p| ended(p) || *p == Phase::Waiting));
        return out;
    }
    for (i, d) in defs.iter().enumerate() {
        if phases[i] != Phase::Waiting {
            continue;
        }
        let mut ready = true;
        for &(dep, cond) in &d.depends_on {
            match condition_holds(cond, &phases[dep], health[dep]) {
                Some(true) => {}
                Some(false) => ready = false,
                None => {
                    let cond_name = format!("{cond:?}").to_uppercase();
                    out.actions.push(Action::Abandon(
                        i,
                        format!(
                            "DependencyConditionFailed: container {} cannot reach {cond_name}, which container {} depends on",
                            defs[dep].name, d.name
                        ),
                    ));
                    ready = false;
                    break;
                }
            }
        }
        if ready {
            out.actions.push(Action::Start(i));
        }
    }
    out.done = phases.iter().all(ended);
    out
}

/// The task's health (ECS: UNHEALTHY if an essential container is, HEALTHY when every
/// essential container with a health check is, else UNKNOWN).
pub fn task_health(defs: &[ContainerDef], health: &[Health], has_check: &[bool]) -> Health {
    let essentials: Vec<usize> = (0..defs.len())
        .filter(|&i| defs[i].essential && has_check[i])
        .collect();
    if essentials.iter().any(|&i| health[i] == Health::Unhealthy) {
        Health::Unhealthy
    } else if !essentials.is_empty() && essentials.iter().all(|&i| health[i] == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Unknown
    }
}

#[cfg(test)]
mod tests;
