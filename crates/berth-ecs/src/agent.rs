//! The control plane's side of the agent protocol: what an agent is told to run
//! ([`AssignedTask`], from [`Ecs::assigned_tasks`]) and what it reports back
//! ([`TaskReport`], to [`Ecs::report_task`]). The agent converges its host to the
//! assigned tasks and reports the truth; the control plane never guesses a task's state
//! except for a task no agent has touched yet (StopTask stops it on the spot).
//!
//! A task that leaves an agent's assignment without the agent having reported it
//! STOPPED (it was stopped before the agent's first report) must be torn down by the
//! agent all the same: the agent converges to the assigned set, not to its own history.
//! These calls block on the store; async callers use `spawn_blocking`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::EcsError;
use crate::instances::{self, InstanceRecord};
use crate::ops::{mark_stopped, now, TaskRecord};
use crate::{Context, Ecs};

/// A task an agent must converge to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignedTask {
    pub task_arn: String,
    pub task_id: String,
    pub cluster: String,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// The task definition JSON as registered, with the task's overrides applied to
    /// `containerDefinitions` and to the task `cpu`/`memory`.
    pub definition: Value,
    pub network_mode: String,
    pub launch_type: String,
    /// Task-level CPU units.
    pub cpu: Option<u32>,
    /// Task-level memory, MiB.
    pub memory: Option<u32>,
    /// Bumped on every change of the task.
    pub version: u64,
    /// Why the task is being stopped, once desired STOPPED.
    pub stop_reason: Option<String>,
}

/// One container's truth as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerReport {
    pub name: String,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub runtime_id: Option<String>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: Option<String>,
    /// ECS NetworkBinding objects (`bindIP`, `containerPort`, `hostPort`, `protocol`).
    pub network_bindings: Vec<Value>,
}

/// A task's truth as the agent sees it. Timestamps are epoch seconds; absent ones are
/// set by the control plane when the status first implies them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// PROVISIONING, PENDING, ACTIVATING, RUNNING, DEACTIVATING, STOPPING,
    /// DEPROVISIONING or STOPPED.
    pub last_status: String,
    pub containers: Vec<ContainerReport>,
    pub private_ipv4: Option<String>,
    /// TaskFailedToStart, EssentialContainerExited or UserInitiated.
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    pub health_status: Option<String>,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
}

const TASK_STATUSES: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

fn rank(status: &str) -> usize {
    TASK_STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

fn parse_task_arn(arn: &str) -> Option<(String, String)> {
    let (_, rest) = arn.split_once(":task/")?;
    let (cluster, id) = rest.split_once('/')?;
    (!cluster.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| (cluster.to_string(), id.to_string()))
}

impl Ecs {
    /// Tasks assigned to `agent` that are not STOPPED yet (the agent converges to these).
    pub fn assigned_tasks(&self, agent: &str) -> Vec<AssignedTask> {
        let t = now();
        let records: Vec<(String, TaskRecord, u64)> = match self.list("/ecs/tasks/") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list tasks for agent {agent}");
                return vec![];
            }
        };
        records
            .into_iter()
            .filter(|(_, r, _)| {
                r.agent.as_deref() == Some(agent) && r.task.last_status != "STOPPED"
            })
            .filter_map(|(_, r, _)| {
                let (cluster, task_id) = parse_task_arn(&r.task.task_arn)?;
                // Its targets still drain: the containers keep serving requests in flight.
                let draining = r.drain_until.is_some_and(|u| u > t);
                Some(AssignedTask {
                    task_arn: r.task.task_arn.clone(),
                    task_id,
                    cluster,
                    desired_status: if draining {
                        "RUNNING".into()
                    } else {
                        r.task.desired_status.clone()
                    },
                    network_mode: r.network_mode.clone(),
                    launch_type: r.task.launch_type.clone(),
                    cpu: r.task.cpu.as_deref().and_then(|c| c.parse().ok()),
                    memory: r.task.memory.as_deref().and_then(|m| m.parse().ok()),
                    version: r.task.version,
                    stop_reason: (r.task.desired_status == "STOPPED" && !draining)
                        .then(|| r.task.stopped_reason.clone())
                        .flatten(),
                    definition: r.definition,
                })
            })
            .collect()
    }

    /// The agent's report of a task's truth; timestamps set by the control plane when
    /// absent; version bumped.
    pub fn report_task(
        &self,
        agent: &str,
        task_arn: &str,
        report: TaskReport,
    ) -> Result<(), EcsError> {
        let not_found = || EcsError::InvalidParameter("The referenced task was not found.".into());
        let (cluster, id) = parse_task_arn(task_arn).ok_or_else(not_found)?;
        if !TASK_STATUSES.contains(&report.last_status.as_str()) {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid task status '{}' in the report of {task_arn}.",
                report.last_status
            )));
        }
        let key = format!("/ecs/tasks/{cluster}/{id}");
        self.update(&key, not_found, |r: &mut TaskRecord| {
            if r.agent.as_deref() != Some(agent) {
                return Err(EcsError::Client(format!(
                    "Task {task_arn} is not assigned to agent {agent}."
                )));
            }
            apply_report(r, &report, now());
            Ok(true)
        })?;
        self.notify();
        Ok(())
    }

    /// Wakes whoever waits whenever tasks change (RunTask, StopTask, reports).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Folds a report into the task record at time `t` (pure).
pub(crate) fn apply_report(r: &mut TaskRecord, rep: &TaskReport, t: f64) {
    let task = &mut r.task;
    r.reported = true;
    if task.connectivity.is_none() {
        task.connectivity = Some("CONNECTED".into());
        task.connectivity_at = Some(t);
    }
    // A STOPPED task stays STOPPED: late reports only fill in details.
    let was_stopped = task.last_status == "STOPPED";
    if !was_stopped {
        task.last_status = rep.last_status.clone();
    }
    let rk = rank(&task.last_status);
    if let Some(v) = rep.pull_started_at {
        task.pull_started_at.get_or_insert(v);
    }
    if let Some(v) = rep.pull_stopped_at {
        task.pull_stopped_at.get_or_insert(v);
    }
    if let Some(v) = rep.started_at {
        task.started_at.get_or_insert(v);
    }
    if rk >= rank("PENDING") && rk < rank("STOPPED") {
        task.pull_started_at.get_or_insert(t);
    }
    if rk >= rank("RUNNING") && rk < rank("STOPPED") {
        task.pull_stopped_at.get_or_insert(t);
        task.started_at.get_or_insert(t);
    }
    if rk >= rank("DEACTIVATING") {
        task.stopping_at.get_or_insert(t);
    }
    if let Some(h) = &rep.health_status {
        task.health_status = h.clone();
    }
    if task.stop_code.is_none() {
        task.stop_code = rep.stop_code.clone();
    }
    if task.stopped_reason.is_none() {
        task.stopped_reason = rep.stopped_reason.clone();
    }

    let attachment_id = task
        .attachments
        .first()
        .and_then(|a| a["id"].as_str())
        .map(String::from);
    if let Some(ip) = &rep.private_ipv4 {
        if let Some(a) = task.attachments.first_mut() {
            a["status"] = json!("ATTACHED");
            if let Some(details) = a["details"].as_array_mut() {
                details.retain(|d| d["name"] != "privateIPv4Address");
                details.push(json!({"name": "privateIPv4Address", "value": ip}));
            }
        }
    }
    for cr in &rep.containers {
        let Some(c) = task.containers.iter_mut().find(|c| c.name == cr.name) else {
            continue;
        };
        if c.last_status != "STOPPED" {
            c.last_status = cr.last_status.clone();
        }
        if cr.exit_code.is_some() {
            c.exit_code = cr.exit_code;
        }
        if cr.reason.is_some() {
            c.reason = cr.reason.clone();
        }
        if cr.runtime_id.is_some() {
            c.runtime_id = cr.runtime_id.clone();
        }
        if let Some(h) = &cr.health_status {
            c.health_status = h.clone();
        }
        if !cr.network_bindings.is_empty() || cr.last_status == "STOPPED" {
            c.network_bindings = cr.network_bindings.clone();
        }
        if let (Some(ip), Some(aid)) = (&rep.private_ipv4, &attachment_id) {
            c.network_interfaces = vec![json!({"attachmentId": aid, "privateIpv4Address": ip})];
        }
    }
    if task.last_status == "STOPPED" && !was_stopped {
        let stopped = rep.stopped_at.unwrap_or(t);
        mark_stopped(task, stopped);
    }
    task.version += 1;
}

impl Ecs {
    /// Removes the records of tasks STOPPED more than `retention_secs` ago (ECS keeps a
    /// stopped task visible for about an hour), so that the store does not grow with
    /// every task ever run. Returns how many went. A record that changed since it was
    /// read is left for the next round.
    pub fn gc_stopped_tasks(&self, retention_secs: f64) -> Result<usize, EcsError> {
        let cutoff = now() - retention_secs;
        let mut removed = 0;
        for (key, rec, rev) in self.list::<TaskRecord>("/ecs/tasks/")? {
            let old = rec.task.last_status == "STOPPED"
                && rec.task.stopped_at.is_some_and(|t| t < cutoff);
            if !old {
                continue;
            }
            match self.store.txn(
                &[berth_state::Compare::at(&key, rev)],
                vec![berth_state::Op::Delete { key: key.clone() }],
            ) {
                Ok(_) => removed += 1,
                Err(berth_state::StateError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}

/// What an agent tells the control plane about its host when it (re)connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Cluster name or ARN; "default" is created on first use like RunTask does.
    pub cluster: String,
    /// Stable id of the agent (hex chars, derived from its data dir): registering again
    /// with the same id returns the same container instance.
    pub agent_id: String,
    /// Becomes attribute `ecs.availability-zone`.
    pub zone: String,
    /// Becomes attribute `ecs.instance-type`.
    pub instance_type: String,
    /// CPU units, 1024 per core.
    pub cpu: u32,
    /// MiB.
    pub memory_mib: u32,
    /// Host ports the host itself uses (ECS's default reserved: 22, 2375, 2376, 51678,
    /// 51679, [`instances::DEFAULT_RESERVED_PORTS`]).
    pub reserved_ports: Vec<u16>,
    /// Custom attributes (name, optional value).
    pub attributes: Vec<(String, Option<String>)>,
    /// The host's address as the server reaches it (load balancer targets of type
    /// `instance` are sent there).
    pub address: Option<String>,
    pub agent_version: String,
}

/// The longest agent id accepted (it becomes a store key).
const MAX_AGENT_ID: usize = 64;

impl Ecs {
    /// Registers (or re-registers) the agent's host as a container instance; returns
    /// its containerInstanceArn. Sets agentConnected, status ACTIVE (DRAINING stays
    /// DRAINING), registeredAt on first registration, the `ecs.*` attributes and the
    /// custom ones (custom attributes put through the API since are kept).
    pub fn register_instance(
        &self,
        info: &InstanceInfo,
        ctx: &Context,
    ) -> Result<String, EcsError> {
        if info.agent_id.is_empty()
            || info.agent_id.len() > MAX_AGENT_ID
            || !info.agent_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid agent id '{}': 1 to {MAX_AGENT_ID} hex characters.",
                info.agent_id
            )));
        }
        let mut attributes = std::collections::BTreeMap::new();
        for (k, v) in &info.attributes {
            instances::validate_attribute(k, v.as_deref())?;
            attributes.insert(k.clone(), v.clone());
        }
        attributes.extend(instances::ecs_attributes(&info.zone, &info.instance_type));
        let t = now();
        let rec = self.write_instance(
            &info.cluster,
            Some(&info.agent_id),
            None,
            ctx,
            |old, ident| {
                let mut attrs = old.map(|o| o.attributes.clone()).unwrap_or_default();
                attrs.extend(attributes.clone());
                InstanceRecord {
                    ec2_instance_id: ident.ec2_instance_id(),
                    address: info.address.clone(),
                    id: ident.id.clone(),
                    arn: ident.arn.clone(),
                    cluster: ident.cluster.clone(),
                    cluster_arn: ident.cluster_arn.clone(),
                    agent_id: Some(info.agent_id.clone()),
                    status: match old {
                        Some(o) if o.status == "DRAINING" => "DRAINING".into(),
                        _ => "ACTIVE".into(),
                    },
                    status_reason: None,
                    agent_connected: true,
                    registered_at: old.map_or(t, |o| o.registered_at),
                    last_heartbeat: Some(t),
                    cpu: info.cpu,
                    memory_mib: info.memory_mib,
                    reserved_ports: info.reserved_ports.clone(),
                    reserved_udp_ports: old.map(|o| o.reserved_udp_ports.clone()).unwrap_or_default(),
                    attributes: attrs,
                    version_info: json!({"agentVersion": info.agent_version, "agentHash": "", "dockerVersion": ""}),
                    tags: old.map(|o| o.tags.clone()).unwrap_or_default(),
                    version: old.map_or(1, |o| o.version + 1),
                }
            },
        )?;
        Ok(rec.arn)
    }

    /// The address of every container instance that has one, by `ec2InstanceId` (where
    /// a load balancer's `instance` targets are sent); instances registered through the
    /// API, with no agent behind them, have none. One read of the store.
    pub fn instance_addresses(&self) -> std::collections::HashMap<String, String> {
        self.list::<InstanceRecord>("/ecs/instances/")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, r, _)| Some((r.ec2_instance_id, r.address?)))
            .chain(
                self.builtin_host()
                    .and_then(|h| Some((h.ec2_id, h.address?))),
            )
            .collect()
    }

    /// Records a heartbeat (lastHeartbeat time, agentConnected=true).
    pub fn instance_heartbeat(&self, instance_arn: &str) -> Result<(), EcsError> {
        let t = now();
        self.update_instance(instance_arn, |r| {
            r.last_heartbeat = Some(t);
            let was = r.agent_connected;
            r.agent_connected = true;
            if !was {
                r.version += 1;
            }
            Ok(true)
        })
    }

    /// Records that the agent's stream is up or down (agentConnected). Going down
    /// counts as the last sign of life.
    pub fn set_instance_connected(
        &self,
        instance_arn: &str,
        connected: bool,
    ) -> Result<(), EcsError> {
        let t = now();
        self.update_instance(instance_arn, |r| {
            if r.agent_connected == connected {
                return Ok(false);
            }
            r.agent_connected = connected;
            r.last_heartbeat = Some(t);
            r.version += 1;
            Ok(true)
        })
    }

    fn update_instance(
        &self,
        instance_arn: &str,
        f: impl FnMut(&mut InstanceRecord) -> Result<bool, EcsError>,
    ) -> Result<(), EcsError> {
        let not_found =
            || EcsError::InvalidParameter(format!("Container instance {instance_arn} not found."));
        let Some((Some(cluster), id)) = instances::instance_ref(instance_arn) else {
            return Err(not_found());
        };
        self.update(&instances::instance_key(&cluster, &id), not_found, f)?;
        Ok(())
    }

    /// At server start nobody is connected yet: every instance whose agent the records
    /// still call connected (the server stopped without closing its streams) is marked
    /// disconnected as of now, so that its agent gets the full liveness timeout to dial
    /// back in before its tasks are given up. Returns how many were marked.
    pub fn agents_disconnected_at_start(&self) -> Result<usize, EcsError> {
        let mut n = 0;
        for (_, r, _) in self.list::<InstanceRecord>("/ecs/instances/")? {
            if r.agent_connected && r.agent_id.is_some() {
                self.set_instance_connected(&r.arn, false)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Node liveness: every ACTIVE/DRAINING instance whose agent is not connected and
    /// whose last heartbeat is older than `timeout_secs` before `now` has its
    /// non-STOPPED tasks marked STOPPED (stopCode `TerminationNotice`, the closest of
    /// ECS's TaskStopCode values to "the host went away"), containers too. Returns how
    /// many tasks it stopped; the service controller then replaces them elsewhere.
    pub fn reap_lost_instances(&self, now: f64, timeout_secs: f64) -> Result<usize, EcsError> {
        let recs: Vec<InstanceRecord> = self
            .list::<InstanceRecord>("/ecs/instances/")?
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        let lost = instances::lost_instances(&recs, now, timeout_secs);
        if lost.is_empty() {
            return Ok(0);
        }
        let mut stopped = 0;
        for (key, rec, _) in self.list::<TaskRecord>("/ecs/tasks/")? {
            let Some(l) = lost
                .iter()
                .find(|l| rec.agent.as_deref() == Some(l.arn.as_str()))
            else {
                continue;
            };
            if rec.task.last_status == "STOPPED" {
                continue;
            }
            let reason = instances::lost_reason(l);
            let mut did = false;
            self.update(
                &key,
                || EcsError::Server(format!("{key} vanished")),
                |r: &mut TaskRecord| {
                    did = false;
                    if r.task.last_status == "STOPPED" || r.agent.as_deref() != Some(l.arn.as_str())
                    {
                        return Ok(false);
                    }
                    r.task
                        .stop_code
                        .get_or_insert_with(|| "TerminationNotice".into());
                    r.task.stopped_reason.get_or_insert_with(|| reason.clone());
                    mark_stopped(&mut r.task, now);
                    r.task.version += 1;
                    did = true;
                    Ok(true)
                },
            )?;
            stopped += usize::from(did);
        }
        if stopped > 0 {
            tracing::warn!(
                stopped,
                instances = lost.len(),
                "stopped the tasks of container instances whose agent is lost"
            );
            self.notify();
        }
        Ok(stopped)
    }
}
