//! The cluster as the scheduler sees it: container instances, what runs on them, and
//! what a task asks for. `ClusterState` keeps the remaining resources of every instance
//! as counters it updates with each placement (O(1) per task, plus the port set).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::hash::FastMap;
use std::fmt;

/// The attribute ECS sets to the instance's Availability Zone.
pub const ATTR_AVAILABILITY_ZONE: &str = "ecs.availability-zone";
/// The attribute ECS sets to the EC2 instance type.
pub const ATTR_INSTANCE_TYPE: &str = "ecs.instance-type";
/// The attribute ECS sets to the operating system (`linux`, `windows`).
pub const ATTR_OS_TYPE: &str = "ecs.os-type";

/// A container instance's id (EC2-style, `i-0abc…`); `ec2InstanceId` in queries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        InstanceId(s.to_owned())
    }
}

/// ECS container instance status as far as placement cares: DRAINING instances get no
/// new tasks (ECS "container instance draining").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    Active,
    Draining,
}

/// An amount of the three resources ECS schedules on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU units (1024 per vCPU).
    pub cpu_units: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Host ports that are *taken*: as ECS's `PORTS` resource, the registered set lists
    /// the ports reserved at registration (22, 2375, 51678, …) and the remaining set adds
    /// the static host ports of running tasks.
    pub ports: BTreeSet<u16>,
}

/// A task already running (or placed) on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTask {
    pub task_definition_family: String,
    /// The task group (`service:NAME` for a service's tasks, `family:NAME` by default
    /// for RunTask); spread and distinctInstance count tasks of the same group.
    pub group: String,
    pub service: Option<String>,
    /// CPU units reserved.
    pub cpu: u32,
    /// Memory reserved, MiB.
    pub memory: u32,
    /// Static host ports taken.
    pub host_ports: Vec<u16>,
}

/// A registered container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub arn: String,
    /// Attributes: `ecs.availability-zone`, `ecs.instance-type`, `ecs.os-type`, custom
    /// ones; an attribute may have no value (ECS allows that for custom attributes).
    pub attributes: BTreeMap<String, Option<String>>,
    pub registered: Resources,
    pub status: InstanceStatus,
    /// Whether the instance's agent is connected; tasks are never placed on a
    /// disconnected agent (failure reason `AGENT`).
    pub connected: bool,
    /// Registration time, seconds since the Unix epoch (UTC).
    pub registered_at: i64,
    pub running: Vec<PlacedTask>,
}

/// What one task of a RunTask/service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// CPU units.
    pub cpu: u32,
    /// Memory, MiB.
    pub memory: u32,
    /// Static host ports (`hostPort` ≠ 0 in bridge/host mode); dynamic ports need none.
    pub host_ports: Vec<u16>,
    pub family: String,
    /// The task group; see [`TaskRequest::new`] for the ECS default.
    pub group: String,
    /// The service the task belongs to (changes the default strategy).
    pub service: Option<String>,
    /// The task definition's `requiresAttributes`: name and optional value; an instance
    /// without them fails with `ATTRIBUTE`.
    pub requires_attributes: Vec<(String, Option<String>)>,
}

impl TaskRequest {
    /// A RunTask request with ECS's default group `family:FAMILY`.
    pub fn new(family: &str, cpu: u32, memory: u32) -> Self {
        TaskRequest {
            cpu,
            memory,
            host_ports: Vec::new(),
            family: family.to_owned(),
            group: format!("family:{family}"),
            service: None,
            requires_attributes: Vec::new(),
        }
    }

    /// The same request as a task of service `name` (group `service:NAME`).
    pub fn for_service(mut self, name: &str) -> Self {
        self.group = format!("service:{name}");
        self.service = Some(name.to_owned());
        self
    }

    fn to_placed(&self) -> PlacedTask {
        PlacedTask {
            task_definition_family: self.family.clone(),
            group: self.group.clone(),
            service: self.service.clone(),
            cpu: self.cpu,
            memory: self.memory,
            host_ports: self.host_ports.clone(),
        }
    }
}

/// An instance's remaining resources (registered minus what runs). Signed: an instance
/// registered smaller than what already runs on it shows a negative remainder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining<'a> {
    pub cpu_units: i64,
    pub memory_mib: i64,
    /// Taken ports (reserved ∪ used).
    pub ports: &'a BTreeSet<u16>,
}

/// Counters kept per instance so a placement is checked and recorded without walking
/// the instance's task list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    pub(crate) cpu: i64,
    pub(crate) memory: i64,
    pub(crate) ports: BTreeSet<u16>,
    /// Tasks per group (interned id, see `ClusterState::group_ids`) on this instance.
    pub(crate) groups: FastMap<u32, u32>,
    pub(crate) tasks: u32,
}

impl Live {
    pub(crate) fn group_count(&self, group: u32) -> u32 {
        self.groups.get(&group).copied().unwrap_or(0)
    }
}

/// Per instance, its value id for each of a list of attributes, and the partitions
/// (distinct value tuples) they form. Attributes never change after registration, so
/// this is cached per attribute list until an instance is added.
#[derive(Debug)]
pub(crate) struct Partitions {
    /// `instances × attributes`, row-major.
    pub(crate) inst_vals: Vec<u32>,
    pub(crate) inst_part: Vec<u32>,
    pub(crate) part_vals: Vec<Vec<u32>>,
    /// Per partition, its instances (indexes, ascending).
    pub(crate) members: Vec<Vec<u32>>,
    /// Number of distinct values per attribute.
    pub(crate) values: Vec<usize>,
}

/// How many memberOf masks (and, apart, partitionings) a state keeps before starting
/// over: expressions come from API callers, so the cache must not grow without bound.
const MAX_CACHED: usize = 64;

/// Building a [`ClusterState`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("container instance {0} is listed twice")]
    DuplicateInstance(InstanceId),
}

/// The cluster: instances and the counters derived from them. Changed only through its
/// methods so the counters never drift from the task lists.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub(crate) instances: Vec<Instance>,
    pub(crate) live: Vec<Live>,
    by_id: HashMap<InstanceId, usize>,
    group_ids: FastMap<String, u32>,
    /// Per interned group id, the instances (indexes) running at least one of its
    /// tasks, so a call sums a group's spread counts without a pass over every instance.
    group_members: Vec<Vec<u32>>,
    /// Results of task-independent `memberOf` expressions per instance, by expression
    /// text; valid until an instance is added (attributes, ids and registration times
    /// never change; status and agent connection are checked apart).
    static_masks: FastMap<String, Arc<Vec<bool>>>,
    partitions: FastMap<Vec<String>, Arc<Partitions>>,
}

impl ClusterState {
    /// Takes the instances with their running tasks and derives the remaining resources.
    pub fn new(instances: Vec<Instance>) -> Result<Self, StateError> {
        let mut state = ClusterState::default();
        for instance in instances {
            state.add_instance(instance)?;
        }
        Ok(state)
    }

    /// Registers one more instance.
    pub fn add_instance(&mut self, instance: Instance) -> Result<(), StateError> {
        if self.by_id.contains_key(&instance.id) {
            return Err(StateError::DuplicateInstance(instance.id));
        }
        let mut live = Live {
            cpu: i64::from(instance.registered.cpu_units),
            memory: i64::from(instance.registered.memory_mib),
            ports: instance.registered.ports.clone(),
            ..Live::default()
        };
        let i = self.instances.len() as u32;
        for task in &instance.running {
            let g = self.group_id(&task.group);
            if charge(&mut live, task, g) {
                self.group_members[g as usize].push(i);
            }
        }
        self.static_masks.clear();
        self.partitions.clear();
        self.by_id.insert(instance.id.clone(), self.instances.len());
        self.instances.push(instance);
        self.live.push(live);
        Ok(())
    }

    /// All instances, in registration order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn instance(&self, id: &InstanceId) -> Option<&Instance> {
        self.by_id.get(id).map(|&i| &self.instances[i])
    }

    /// Registered minus running for instance `id`.
    pub fn remaining(&self, id: &InstanceId) -> Option<Remaining<'_>> {
        self.by_id.get(id).map(|&i| self.remaining_at(i))
    }

    pub(crate) fn remaining_at(&self, i: usize) -> Remaining<'_> {
        let live = &self.live[i];
        Remaining {
            cpu_units: live.cpu,
            memory_mib: live.memory,
            ports: &live.ports,
        }
    }

    /// Sets ACTIVE/DRAINING; false when there is no such instance.
    pub fn set_status(&mut self, id: &InstanceId, status: InstanceStatus) -> bool {
        self.by_id
            .get(id)
            .map(|&i| self.instances[i].status = status)
            .is_some()
    }

    /// Marks the agent connected or not; false when there is no such instance.
    pub fn set_connected(&mut self, id: &InstanceId, connected: bool) -> bool {
        self.by_id
            .get(id)
            .map(|&i| self.instances[i].connected = connected)
            .is_some()
    }

    /// Whether instance `id` satisfies a cluster query (for `ListContainerInstances
    /// --filter`); None when there is no such instance.
    pub fn matches(&self, id: &InstanceId, expr: &crate::query::Expr) -> Option<bool> {
        self.by_id
            .get(id)
            .map(|&i| crate::eval::eval(expr, self, i))
    }

    /// Records a task of group id `group` placed on instance index `i`.
    pub(crate) fn record(&mut self, i: usize, req: &TaskRequest, group: u32) {
        let task = req.to_placed();
        if charge(&mut self.live[i], &task, group) {
            self.group_members[group as usize].push(i as u32);
        }
        self.instances[i].running.push(task);
    }

    /// The interned id of a group name, interning it if new.
    pub(crate) fn group_id(&mut self, name: &str) -> u32 {
        if let Some(&g) = self.group_ids.get(name) {
            return g;
        }
        let g = self.group_ids.len() as u32;
        self.group_ids.insert(name.to_owned(), g);
        self.group_members.push(Vec::new());
        g
    }

    /// The instances (indexes) running at least one task of group id `group`.
    pub(crate) fn group_members(&self, group: u32) -> &[u32] {
        self.group_members
            .get(group as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Tasks of group `name` on instance `i`.
    pub(crate) fn group_count(&self, i: usize, name: &str) -> u32 {
        self.group_ids
            .get(name)
            .map_or(0, |&g| self.live[i].group_count(g))
    }

    /// The names of the groups with tasks on instance `i`.
    pub(crate) fn groups_on(&self, i: usize) -> impl Iterator<Item = &str> {
        let live = &self.live[i];
        self.group_ids
            .iter()
            .filter(move |(_, g)| live.group_count(**g) > 0)
            .map(|(name, _)| name.as_str())
    }

    /// `expr` (one that does not [`vary`](crate::Expr::varies)) evaluated on every instance, cached.
    pub(crate) fn static_mask(&mut self, expr: &crate::query::Expr) -> Arc<Vec<bool>> {
        let text = expr.to_string();
        if let Some(m) = self.static_masks.get(&text) {
            return Arc::clone(m);
        }
        let mask: Arc<Vec<bool>> = Arc::new(
            (0..self.instances.len())
                .map(|i| crate::eval::eval(expr, self, i))
                .collect(),
        );
        if self.static_masks.len() >= MAX_CACHED {
            self.static_masks.clear();
        }
        self.static_masks.insert(text, Arc::clone(&mask));
        mask
    }

    /// The partitions of the instances by the values of `names`, cached.
    pub(crate) fn partitions(&mut self, names: &[String]) -> Arc<Partitions> {
        if let Some(p) = self.partitions.get(names) {
            return Arc::clone(p);
        }
        let k = names.len();
        let n = self.instances.len();
        let mut ids: Vec<FastMap<Option<&str>, u32>> = vec![FastMap::default(); k];
        let mut inst_vals = Vec::with_capacity(n * k);
        for inst in &self.instances {
            for (s, name) in names.iter().enumerate() {
                let value = inst.attributes.get(name).and_then(|v| v.as_deref());
                let next = ids[s].len() as u32;
                inst_vals.push(*ids[s].entry(value).or_insert(next));
            }
        }
        let mut parts: FastMap<&[u32], u32> = FastMap::default();
        let mut part_vals = Vec::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut inst_part = Vec::with_capacity(n);
        for i in 0..n {
            let vals = &inst_vals[i * k..(i + 1) * k];
            let next = part_vals.len() as u32;
            let p = *parts.entry(vals).or_insert(next);
            if p == next {
                part_vals.push(vals.to_vec());
                members.push(Vec::new());
            }
            members[p as usize].push(i as u32);
            inst_part.push(p);
        }
        let values = ids.iter().map(FastMap::len).collect();
        drop(parts);
        let p = Arc::new(Partitions {
            inst_vals,
            inst_part,
            part_vals,
            members,
            values,
        });
        if self.partitions.len() >= MAX_CACHED {
            self.partitions.clear();
        }
        self.partitions.insert(names.to_vec(), Arc::clone(&p));
        p
    }
}

/// Charges `task` to `live`; true when it is the instance's first task of `group`.
fn charge(live: &mut Live, task: &PlacedTask, group: u32) -> bool {
    live.cpu -= i64::from(task.cpu);
    live.memory -= i64::from(task.memory);
    live.ports.extend(task.host_ports.iter().copied());
    let n = live.groups.entry(group).or_insert(0);
    *n += 1;
    live.tasks += 1;
    *n == 1
}
