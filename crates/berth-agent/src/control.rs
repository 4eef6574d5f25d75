//! What the agent needs from the control plane: the tasks assigned to it, a way to
//! report their truth, and a signal when something changed. The all-in-one server
//! implements it in-process over `berth_ecs::Ecs`; a remote agent will implement it
//! over the agent protocol.

pub use berth_ecs::agent::{AssignedTask, ContainerReport, TaskReport};

/// The control plane as the agent sees it.
pub trait ControlPlane: Send + Sync + 'static {
    /// Tasks assigned to this agent that are not STOPPED yet.
    fn assigned_tasks(&self) -> Vec<AssignedTask>;
    /// Reports a task's truth; an error is logged and the report retried later.
    fn report(&self, task_arn: &str, report: TaskReport) -> Result<(), String>;
    /// Bumped whenever tasks change.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The in-process control plane of the all-in-one server.
#[derive(Debug)]
pub struct LocalControlPlane {
    pub ecs: std::sync::Arc<berth_ecs::Ecs>,
    pub agent: String,
}

impl ControlPlane for LocalControlPlane {
    fn assigned_tasks(&self) -> Vec<AssignedTask> {
        self.ecs.assigned_tasks(&self.agent)
    }
    fn report(&self, task_arn: &str, report: TaskReport) -> Result<(), String> {
        self.ecs
            .report_task(&self.agent, task_arn, report)
            .map_err(|e| e.to_string())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ecs.changes()
    }
}
