//! One function per ECS operation, and the dispatch table ([`Ecs::call`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_state::{Compare, Op, Revision, StateError, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::EcsError;
use crate::instances::{self, InstanceRecord};
use crate::placement::{self, Target};
use crate::validate::{self, TaskDefInput};
use crate::Context;

/// ECS's largest (and default) page for the List* operations.
pub(crate) const MAX_RESULTS: usize = 100;
/// RunTask starts at most this many tasks per call.
const MAX_RUN_COUNT: i64 = 10;
/// DescribeTasks and DescribeClusters take at most this many names.
pub(crate) const MAX_DESCRIBE: usize = 100;
/// DeleteTaskDefinitions takes at most this many definitions.
const MAX_DELETE_TASKDEFS: usize = 10;
/// ECS's limit of tags per resource.
pub(crate) const MAX_TAGS: usize = 50;
/// How often a compare-and-swap update is retried when another writer got there first.
pub(crate) const CAS_RETRIES: usize = 32;
/// The cluster ECS uses when a call names none.
pub(crate) const DEFAULT_CLUSTER: &str = "default";
/// Fargate platform version and family berth reports for FARGATE tasks.
const PLATFORM_VERSION: &str = "1.4.0";
const PLATFORM_FAMILY: &str = "Linux";
/// ECS's reason when an EC2 task finds no container instance (the API failure reasons page).
pub(crate) const NO_INSTANCES: &str = "No Container Instances were found in your cluster.";

pub(crate) fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, EcsError> {
    let mut raw = vec![0u8; bytes];
    getrandom::getrandom(&mut raw).map_err(|e| EcsError::Server(format!("no randomness: {e}")))?;
    Ok(hex::encode(raw))
}

fn random_uuid() -> Result<String, EcsError> {
    let h = random_hex(16)?;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

pub(crate) fn input<T: DeserializeOwned>(body: &[u8]) -> Result<T, EcsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| EcsError::Serialization(format!("could not parse the request body: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, value: &str) -> Result<T, EcsError> {
    serde_json::from_str(value)
        .map_err(|e| EcsError::Server(format!("stored record {key} is unreadable: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `(start, max)` of a page from `nextToken` (hex of `offset:N`) and `maxResults`.
pub(crate) fn page_bounds(
    next_token: Option<&str>,
    max_results: Option<i64>,
) -> Result<(usize, usize), EcsError> {
    let max = match max_results {
        None => MAX_RESULTS,
        Some(m) if (1..=MAX_RESULTS as i64).contains(&m) => m as usize,
        Some(m) => {
            return Err(EcsError::InvalidParameter(format!(
                "maxResults must be between 1 and {MAX_RESULTS}, got {m}."
            )))
        }
    };
    let start = match next_token {
        None | Some("") => 0,
        Some(t) => hex::decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| {
                EcsError::InvalidParameter("Invalid nextToken: it is not one berth issued.".into())
            })?,
    };
    Ok((start, max))
}

/// One page of `items` and the token for the next, if any.
pub(crate) fn paginate<T: Clone>(
    items: &[T],
    next_token: Option<&str>,
    max_results: Option<i64>,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    let (start, max) = page_bounds(next_token, max_results)?;
    let page = items.iter().skip(start).take(max).cloned().collect();
    let next = (start + max < items.len()).then(|| hex::encode(format!("offset:{}", start + max)));
    Ok((page, next))
}

pub(crate) fn arn(ctx: &Context, resource: &str) -> String {
    format!("arn:aws:ecs:{}:{}:{resource}", ctx.region, ctx.account)
}

/// A cluster name from a name or a cluster ARN.
pub(crate) fn cluster_name(s: &str) -> String {
    match s.split_once(":cluster/") {
        Some((prefix, name)) if prefix.starts_with("arn:") => name.to_string(),
        _ => s.to_string(),
    }
}

/// `(cluster named in the ARN, task id)` from a task id or ARN
/// (`task/<cluster>/<id>`, or the old `task/<id>`).
fn task_ref(s: &str) -> (Option<String>, String) {
    match s.split_once(":task/") {
        Some((prefix, rest)) if prefix.starts_with("arn:") => match rest.split_once('/') {
            Some((c, id)) => (Some(c.to_string()), id.to_string()),
            None => (None, rest.to_string()),
        },
        _ => (None, s.to_string()),
    }
}

/// `(family, revision)` from `family`, `family:rev` or a task definition ARN.
pub(crate) fn taskdef_ref(s: &str) -> Result<(String, Option<u32>), EcsError> {
    let bare = match s.split_once(":task-definition/") {
        Some((prefix, rest)) if prefix.starts_with("arn:") => rest,
        _ => s,
    };
    let (family, rev) = match bare.rsplit_once(':') {
        Some((f, r)) => {
            let rev: u32 =
                r.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    EcsError::Client(format!("Invalid revision number. Number: {r}"))
                })?;
            (f, Some(rev))
        }
        None => (bare, None),
    };
    Ok((family.to_string(), rev))
}

pub(crate) fn cluster_key(name: &str) -> String {
    format!("/ecs/clusters/{name}")
}
fn family_key(family: &str) -> String {
    format!("/ecs/families/{family}")
}
pub(crate) fn taskdef_key(family: &str, rev: u32) -> String {
    format!("/ecs/taskdefs/{family}/{rev:010}")
}
pub(crate) fn task_key(cluster: &str, id: &str) -> String {
    format!("/ecs/tasks/{cluster}/{id}")
}

pub(crate) fn validate_tags(tags: &[Tag]) -> Result<(), EcsError> {
    if tags.len() > MAX_TAGS {
        return Err(EcsError::InvalidParameter(format!(
            "A resource can have at most {MAX_TAGS} tags, got {}.",
            tags.len()
        )));
    }
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid tag '{}': keys are 1-128 characters and values at most 256.",
                t.key
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Tag {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterRecord {
    pub cluster_name: String,
    pub cluster_arn: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub settings: Vec<Value>,
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    #[serde(default)]
    pub default_capacity_provider_strategy: Vec<Value>,
    #[serde(default)]
    pub service_connect_defaults: Option<Value>,
    pub created_at: f64,
    /// Bumped by every RunTask, so a RunTask and a DeleteCluster that race conflict.
    #[serde(default)]
    pub tasks_started: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FamilyRecord {
    latest: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskDefRecord {
    /// ECS's TaskDefinition shape, as registered (with ECS's defaults filled in).
    pub(crate) task_definition: Value,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
}

/// ECS's Container shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    pub image: String,
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<Value>,
    #[serde(default)]
    pub network_interfaces: Vec<Value>,
    pub health_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
}

/// ECS's Task shape (the fields berth knows).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Task {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    pub containers: Vec<Container>,
    pub last_status: String,
    pub desired_status: String,
    pub launch_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    pub created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub group: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_at: Option<f64>,
    pub health_status: String,
    #[serde(default)]
    pub attachments: Vec<Value>,
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub overrides: Value,
    #[serde(default)]
    pub enable_execute_command: bool,
}

/// A task as stored: ECS's shape plus what only the control plane and agents see.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskRecord {
    pub task: Task,
    /// The agent the task is assigned to (`None`: placed nowhere).
    pub agent: Option<String>,
    /// The definition the agent runs: as registered, overrides applied.
    pub definition: Value,
    pub network_mode: String,
    /// Whether an agent has reported on the task yet.
    #[serde(default)]
    pub reported: bool,
    /// Epoch seconds until which a stopped task's targets drain (deregistration delay):
    /// its agent is told to stop it only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<f64>,
}

impl TaskRecord {
    pub(crate) fn family(&self) -> &str {
        self.definition
            .get("family")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

fn render_task(t: &Task, include_tags: bool) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        if !include_tags {
            o.remove("tags");
        }
        if t.overrides.is_null() {
            o.insert("overrides".into(), json!({"containerOverrides": []}));
        }
    }
    v
}

fn wants_tags(include: &Option<Vec<String>>) -> bool {
    include
        .as_ref()
        .is_some_and(|i| i.iter().any(|f| f == "TAGS"))
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateClusterInput {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    settings: Vec<Value>,
    configuration: Option<Value>,
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    default_capacity_provider_strategy: Vec<Value>,
    service_connect_defaults: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClustersInput {
    clusters: Option<Vec<String>>,
    include: Option<Vec<String>>,
    cluster: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TaskDefsInput {
    task_definition: Option<String>,
    task_definitions: Option<Vec<String>>,
    include: Option<Vec<String>>,
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct ContainerOverride {
    name: Option<String>,
    command: Option<Vec<String>>,
    environment: Option<Vec<Value>>,
    cpu: Option<i64>,
    memory: Option<i64>,
    memory_reservation: Option<i64>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct TaskOverride {
    #[serde(default)]
    container_overrides: Vec<ContainerOverride>,
    cpu: Option<String>,
    memory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunTaskInput {
    pub(crate) cluster: Option<String>,
    pub(crate) task_definition: Option<String>,
    pub(crate) count: Option<i64>,
    pub(crate) launch_type: Option<String>,
    #[serde(default)]
    pub(crate) capacity_provider_strategy: Vec<CapacityProviderItem>,
    pub(crate) overrides: Option<Value>,
    pub(crate) started_by: Option<String>,
    pub(crate) group: Option<String>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
    pub(crate) network_configuration: Option<Value>,
    pub(crate) platform_version: Option<String>,
    #[serde(default)]
    pub(crate) enable_execute_command: bool,
    #[serde(default)]
    pub(crate) placement_strategy: Vec<Value>,
    #[serde(default)]
    pub(crate) placement_constraints: Vec<Value>,
    /// StartTask's instances (RunTask has none: the scheduler chooses).
    #[serde(default)]
    pub(crate) container_instances: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CapacityProviderItem {
    capacity_provider: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TasksInput {
    pub(crate) cluster: Option<String>,
    pub(crate) tasks: Option<Vec<String>>,
    pub(crate) task: Option<String>,
    pub(crate) include: Option<Vec<String>>,
    pub(crate) reason: Option<String>,
    pub(crate) container_instance: Option<String>,
    pub(crate) family: Option<String>,
    pub(crate) started_by: Option<String>,
    /// ListTasks: the tasks of this service (a name or an ARN).
    pub(crate) service_name: Option<String>,
    pub(crate) desired_status: Option<String>,
    pub(crate) launch_type: Option<String>,
    pub(crate) next_token: Option<String>,
    pub(crate) max_results: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------

/// The ECS API over the state store.
pub struct Ecs {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) builtin_agent: Option<String>,
    /// EC2 tasks also run on the built-in agent: the server's own host is the
    /// cluster's instance (one machine, before container instances register).
    pub(crate) ec2_on_builtin: bool,
    /// Where the built-in node's bridge- and host-mode tasks are reached (its bridge
    /// gateway: the host ports are bound on every address of the machine).
    pub(crate) builtin_address: std::sync::OnceLock<String>,
    /// Throttles the links' warnings.
    pub(crate) link_log: crate::services::LinkLog,
    pub(crate) changes: watch::Sender<u64>,
    /// The services' load balancers and registries (set by the server).
    pub(crate) links: std::sync::RwLock<Option<Arc<dyn crate::links::ServiceLinks>>>,
}

impl std::fmt::Debug for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecs")
            .field("builtin_agent", &self.builtin_agent)
            .finish()
    }
}

impl Ecs {
    /// `builtin_agent`: the agent that runs FARGATE tasks (the platform's own capacity);
    /// `None` leaves FARGATE tasks unplaced (reported in RunTask's `failures`).
    pub fn new(store: Arc<dyn Store>, builtin_agent: Option<String>) -> Self {
        let (changes, _) = watch::channel(0);
        Ecs {
            store,
            builtin_agent,
            ec2_on_builtin: false,
            builtin_address: std::sync::OnceLock::new(),
            link_log: Default::default(),
            changes,
            links: std::sync::RwLock::new(None),
        }
    }

    /// Hands in the load balancers and service registries that services' tasks are
    /// registered with (see [`crate::links`]).
    pub fn set_links(&self, links: Arc<dyn crate::links::ServiceLinks>) {
        *self.links.write().unwrap_or_else(|p| p.into_inner()) = Some(links);
    }

    pub(crate) fn links(&self) -> Option<Arc<dyn crate::links::ServiceLinks>> {
        self.links.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets EC2 tasks run on the built-in agent (when it runs): the machine berth
    /// runs on is the one instance of every cluster.
    pub fn with_builtin_ec2(mut self, on: bool) -> Self {
        self.ec2_on_builtin = on && self.builtin_agent.is_some();
        self
    }

    /// Where the built-in node's bridge- and host-mode tasks are reached (set once the
    /// built-in agent has its bridge). With it, such tasks on a cluster without
    /// container instances can be load-balancer targets ([`BUILTIN_INSTANCE_ID`] and
    /// the host port) and Cloud Map instances (this address and the host port).
    pub fn set_builtin_address(&self, address: String) {
        let _ = self.builtin_address.set(address);
    }

    /// Runs operation `op` with its JSON `body`. Blocking (the store makes every write
    /// durable before it returns): call it from `spawn_blocking` in async code.
    pub fn call(&self, op: &str, body: &[u8], ctx: &Context) -> Result<Value, EcsError> {
        let span = tracing::info_span!("ecs", op);
        let _e = span.enter();
        match op {
            "CreateCluster" => self.create_cluster(input(body)?, ctx),
            "DescribeClusters" => self.describe_clusters(input(body)?, ctx),
            "ListClusters" => self.list_clusters(input(body)?),
            "DeleteCluster" => self.delete_cluster(input(body)?),
            "RegisterTaskDefinition" => self.register_task_definition(input(body)?, ctx),
            "DescribeTaskDefinition" => self.describe_task_definition(input(body)?),
            "ListTaskDefinitions" => self.list_task_definitions(input(body)?),
            "ListTaskDefinitionFamilies" => self.list_task_definition_families(input(body)?),
            "DeregisterTaskDefinition" => self.deregister_task_definition(input(body)?),
            "DeleteTaskDefinitions" => self.delete_task_definitions(input(body)?),
            "RunTask" => self.run_task(input(body)?, ctx),
            "DescribeTasks" => self.describe_tasks(input(body)?),
            "ListTasks" => self.list_tasks(input(body)?),
            "StopTask" => self.stop_task(input(body)?),
            "CreateService" => self.create_service(input(body)?, ctx),
            "DescribeServices" => self.describe_services(input(body)?),
            "ListServices" => self.list_services(input(body)?),
            "UpdateService" => self.update_service(input(body)?),
            "DeleteService" => self.delete_service(input(body)?),
            "TagResource" => self.tag_resource(input(body)?),
            "UntagResource" => self.untag_resource(input(body)?),
            "ListTagsForResource" => self.list_tags_for_resource(input(body)?),
            "StartTask" => {
                let i: RunTaskInput = input(body)?;
                if i.container_instances.is_none() {
                    return Err(EcsError::InvalidParameter(
                        "containerInstances is required.".into(),
                    ));
                }
                self.run_task(i, ctx)
            }
            "RegisterContainerInstance" => self.register_container_instance(input(body)?, ctx),
            "DeregisterContainerInstance" => self.deregister_container_instance(input(body)?),
            "DescribeContainerInstances" => self.describe_container_instances(input(body)?),
            "ListContainerInstances" => self.list_container_instances(input(body)?),
            "UpdateContainerInstancesState" => {
                self.update_container_instances_state(input(body)?)
            }
            "PutAttributes" => self.put_attributes(input(body)?),
            "DeleteAttributes" => self.delete_attributes(input(body)?),
            "ListAttributes" => self.list_attributes(input(body)?),
            "DescribeCapacityProviders" => self.describe_capacity_providers(input(body)?, ctx),
            "PutClusterCapacityProviders" => self.put_cluster_capacity_providers(input(body)?),
            "ListServicesByNamespace" => self.list_services_by_namespace(input(body)?),
            other => Err(EcsError::UnknownOperation(format!(
                "operation {other} is not supported by berth's ECS API; see docs/aws-api.md for the supported operations"
            ))),
        }
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>, EcsError> {
        match self.store.get(key) {
            None => Ok(None),
            Some(e) => Ok(Some((decode(key, &e.value)?, e.mod_revision))),
        }
    }

    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, Revision)>, EcsError> {
        self.store
            .list(prefix)
            .into_iter()
            .map(|(k, e)| Ok((k.clone(), decode(&k, &e.value)?, e.mod_revision)))
            .collect()
    }

    /// Read-modify-write of one record under a compare-and-swap guard, retried when
    /// another writer got there first. `f` returns `false` to leave the record as is.
    pub(crate) fn update<T, F>(
        &self,
        key: &str,
        not_found: impl Fn() -> EcsError,
        mut f: F,
    ) -> Result<T, EcsError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Result<bool, EcsError>,
    {
        for _ in 0..CAS_RETRIES {
            let (mut rec, rev) = self.get::<T>(key)?.ok_or_else(&not_found)?;
            if !f(&mut rec)? {
                return Ok(rec);
            }
            match self.store.txn(
                &[Compare::at(key, rev)],
                vec![Op::Put {
                    key: key.to_string(),
                    value: encode(&rec),
                }],
            ) {
                Ok(_) => return Ok(rec),
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server(format!(
            "{key} kept changing under concurrent writers; retry"
        )))
    }

    // -- clusters ------------------------------------------------------------------------

    pub(crate) fn new_cluster(name: &str, ctx: &Context) -> ClusterRecord {
        ClusterRecord {
            cluster_name: name.to_string(),
            cluster_arn: arn(ctx, &format!("cluster/{name}")),
            tags: vec![],
            settings: vec![json!({"name": "containerInsights", "value": "disabled"})],
            configuration: None,
            capacity_providers: vec![],
            default_capacity_provider_strategy: vec![],
            service_connect_defaults: None,
            created_at: now(),
            tasks_started: 0,
        }
    }

    pub(crate) fn render_cluster(&self, c: &ClusterRecord, include: &[&str]) -> Value {
        let tasks: Vec<(String, TaskRecord, Revision)> = self
            .list(&format!("/ecs/tasks/{}/", c.cluster_name))
            .unwrap_or_default();
        let running = tasks
            .iter()
            .filter(|(_, t, _)| t.task.last_status == "RUNNING")
            .count();
        let pending = tasks
            .iter()
            .filter(|(_, t, _)| !matches!(t.task.last_status.as_str(), "RUNNING" | "STOPPED"))
            .count();
        let registered = self
            .store
            .list(&format!("/ecs/instances/{}/", c.cluster_name))
            .len();
        let mut v = json!({
            "clusterArn": c.cluster_arn,
            "clusterName": c.cluster_name,
            "status": "ACTIVE",
            "registeredContainerInstancesCount": registered,
            "runningTasksCount": running,
            "pendingTasksCount": pending,
            "activeServicesCount": 0,
            "capacityProviders": c.capacity_providers,
            "defaultCapacityProviderStrategy": c.default_capacity_provider_strategy,
        });
        let o = v.as_object_mut().expect("object");
        if include.contains(&"TAGS") {
            o.insert("tags".into(), json!(c.tags));
        }
        if include.contains(&"SETTINGS") {
            o.insert("settings".into(), json!(c.settings));
        }
        if include.contains(&"STATISTICS") {
            o.insert("statistics".into(), json!([]));
        }
        if include.contains(&"CONFIGURATIONS") {
            if let Some(cfg) = &c.configuration {
                o.insert("configuration".into(), cfg.clone());
            }
        }
        if let Some(s) = &c.service_connect_defaults {
            o.insert("serviceConnectDefaults".into(), s.clone());
        }
        v
    }

    fn create_cluster(&self, i: CreateClusterInput, ctx: &Context) -> Result<Value, EcsError> {
        let name = i.cluster_name.unwrap_or_else(|| DEFAULT_CLUSTER.into());
        if !validate::valid_name(&name) {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid cluster name '{name}': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
            )));
        }
        validate_tags(&i.tags)?;
        let key = cluster_key(&name);
        let mut rec = Self::new_cluster(&name, ctx);
        rec.tags = i.tags;
        if !i.settings.is_empty() {
            rec.settings = i.settings;
        }
        rec.configuration = i.configuration;
        rec.capacity_providers = i.capacity_providers;
        rec.default_capacity_provider_strategy = i.default_capacity_provider_strategy;
        rec.service_connect_defaults = i.service_connect_defaults;
        // CreateCluster is idempotent in ECS: an existing cluster is returned as it is.
        let rec = match self.store.txn(
            &[Compare::absent(&key)],
            vec![Op::Put {
                key: key.clone(),
                value: encode(&rec),
            }],
        ) {
            Ok(_) => rec,
            Err(StateError::Conflict { .. }) => {
                self.get::<ClusterRecord>(&key)?
                    .ok_or(EcsError::ClusterNotFound)?
                    .0
            }
            Err(e) => return Err(e.into()),
        };
        Ok(
            json!({"cluster": self.render_cluster(&rec, &["TAGS", "SETTINGS", "CONFIGURATIONS", "STATISTICS"])}),
        )
    }

    fn describe_clusters(&self, i: ClustersInput, ctx: &Context) -> Result<Value, EcsError> {
        let names = i.clusters.unwrap_or_else(|| vec![DEFAULT_CLUSTER.into()]);
        if names.len() > MAX_DESCRIBE {
            return Err(EcsError::InvalidParameter(format!(
                "At most {MAX_DESCRIBE} clusters can be described at once."
            )));
        }
        let include: Vec<String> = i.include.unwrap_or_default();
        let include: Vec<&str> = include.iter().map(String::as_str).collect();
        let mut clusters = vec![];
        let mut failures = vec![];
        for n in names {
            let name = cluster_name(&n);
            let found = match validate::valid_name(&name) {
                true => self.get::<ClusterRecord>(&cluster_key(&name))?,
                false => None,
            };
            match found {
                Some((c, _)) => clusters.push(self.render_cluster(&c, &include)),
                None => failures.push(json!({
                    "arn": if n.starts_with("arn:") { n.clone() } else { arn(ctx, &format!("cluster/{name}")) },
                    "reason": "MISSING",
                })),
            }
        }
        Ok(json!({"clusters": clusters, "failures": failures}))
    }

    fn list_clusters(&self, i: ClustersInput) -> Result<Value, EcsError> {
        let arns: Vec<String> = self
            .list::<ClusterRecord>("/ecs/clusters/")?
            .into_iter()
            .map(|(_, c, _)| c.cluster_arn)
            .collect();
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"clusterArns": page}), next))
    }

    fn delete_cluster(&self, i: ClustersInput) -> Result<Value, EcsError> {
        let name = cluster_name(
            &i.cluster
                .ok_or_else(|| EcsError::InvalidParameter("cluster is required.".into()))?,
        );
        if !validate::valid_name(&name) {
            return Err(EcsError::ClusterNotFound);
        }
        let key = cluster_key(&name);
        for _ in 0..CAS_RETRIES {
            let (rec, rev) = self
                .get::<ClusterRecord>(&key)?
                .ok_or(EcsError::ClusterNotFound)?;
            let tasks: Vec<(String, TaskRecord, Revision)> =
                self.list(&format!("/ecs/tasks/{name}/"))?;
            if tasks
                .iter()
                .any(|(_, t, _)| t.task.last_status != "STOPPED")
            {
                return Err(EcsError::ClusterContainsTasks);
            }
            // The stopped tasks go with the cluster; each must still be as read.
            let mut compares = vec![Compare::at(&key, rev)];
            let mut ops = vec![Op::Delete { key: key.clone() }];
            for (k, _, r) in &tasks {
                compares.push(Compare::at(k, *r));
                ops.push(Op::Delete { key: k.clone() });
            }
            match self.store.txn(&compares, ops) {
                Ok(_) => {
                    let mut v = self.render_cluster(&rec, &["TAGS", "SETTINGS"]);
                    v["status"] = json!("INACTIVE");
                    v["runningTasksCount"] = json!(0);
                    v["pendingTasksCount"] = json!(0);
                    if !tasks.is_empty() {
                        self.notify();
                    }
                    return Ok(json!({ "cluster": v }));
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server("the cluster kept changing; retry".into()))
    }

    // -- task definitions ----------------------------------------------------------------

    fn register_task_definition(&self, body: Value, ctx: &Context) -> Result<Value, EcsError> {
        let Value::Object(mut given) = body else {
            return Err(EcsError::Serialization(
                "the request body must be a JSON object".into(),
            ));
        };
        let parsed: TaskDefInput =
            serde_json::from_value(Value::Object(given.clone())).map_err(|e| {
                EcsError::Serialization(format!("could not parse the request body: {e}"))
            })?;
        let tags: Vec<Tag> = match given.remove("tags") {
            Some(t) => serde_json::from_value(t)
                .map_err(|e| EcsError::Serialization(format!("could not parse 'tags': {e}")))?,
            None => vec![],
        };
        validate_tags(&tags)?;
        let v = validate::validate(&parsed)?;
        let family = parsed.family.clone();

        // ECS's defaults, filled in only where the caller gave nothing.
        let fixed_ports = v.network_mode == "awsvpc" || v.network_mode == "host";
        if let Some(Value::Array(cds)) = given.get_mut("containerDefinitions") {
            for cd in cds.iter_mut() {
                let Some(o) = cd.as_object_mut() else {
                    continue;
                };
                o.entry("cpu").or_insert(json!(0));
                o.entry("essential").or_insert(json!(true));
                for k in ["portMappings", "environment", "mountPoints", "volumesFrom"] {
                    o.entry(k).or_insert(json!([]));
                }
                if let Some(Value::Array(pms)) = o.get_mut("portMappings") {
                    for pm in pms.iter_mut().filter_map(Value::as_object_mut) {
                        pm.entry("protocol").or_insert(json!("tcp"));
                        if fixed_ports {
                            if let Some(cp) = pm.get("containerPort").cloned() {
                                pm.entry("hostPort").or_insert(cp);
                            }
                        }
                    }
                }
            }
        }
        given.insert("networkMode".into(), json!(v.network_mode));
        if let Some(c) = v.cpu {
            given.insert("cpu".into(), json!(c.to_string()));
        }
        if let Some(m) = v.memory {
            given.insert("memory".into(), json!(m.to_string()));
        }
        given.insert("compatibilities".into(), json!(v.compatibilities));
        given.entry("requiresCompatibilities").or_insert(json!([]));
        given.entry("volumes").or_insert(json!([]));
        given.entry("placementConstraints").or_insert(json!([]));
        given.insert("status".into(), json!("ACTIVE"));
        given.insert("registeredAt".into(), json!(now()));
        given.insert(
            "registeredBy".into(),
            json!(format!("arn:aws:iam::{}:root", ctx.account)),
        );

        let fkey = family_key(&family);
        for _ in 0..CAS_RETRIES {
            let (latest, guard) = match self.get::<FamilyRecord>(&fkey)? {
                Some((f, rev)) => (f.latest, Compare::at(&fkey, rev)),
                None => (0, Compare::absent(&fkey)),
            };
            let rev = latest + 1;
            let mut td = given.clone();
            td.insert("family".into(), json!(family));
            td.insert("revision".into(), json!(rev));
            td.insert(
                "taskDefinitionArn".into(),
                json!(arn(ctx, &format!("task-definition/{family}:{rev}"))),
            );
            let rec = TaskDefRecord {
                task_definition: Value::Object(td),
                tags: tags.clone(),
            };
            let tkey = taskdef_key(&family, rev);
            match self.store.txn(
                &[guard, Compare::absent(&tkey)],
                vec![
                    Op::Put {
                        key: fkey.clone(),
                        value: encode(&FamilyRecord { latest: rev }),
                    },
                    Op::Put {
                        key: tkey,
                        value: encode(&rec),
                    },
                ],
            ) {
                Ok(_) => {
                    return Ok(json!({"taskDefinition": rec.task_definition, "tags": rec.tags}))
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server("the family kept changing; retry".into()))
    }

    /// The stored definition `reference` names: a revision, or the family's latest
    /// ACTIVE one.
    pub(crate) fn find_taskdef(
        &self,
        reference: &str,
    ) -> Result<Option<(String, TaskDefRecord, Revision)>, EcsError> {
        let (family, rev) = taskdef_ref(reference)?;
        if !validate::valid_name(&family) {
            return Ok(None);
        }
        match rev {
            Some(r) => {
                let key = taskdef_key(&family, r);
                Ok(self.get::<TaskDefRecord>(&key)?.map(|(t, rv)| (key, t, rv)))
            }
            None => Ok(self
                .list::<TaskDefRecord>(&format!("/ecs/taskdefs/{family}/"))?
                .into_iter()
                .rfind(|(_, t, _)| status_of(&t.task_definition) == "ACTIVE")),
        }
    }

    fn describe_task_definition(&self, i: TaskDefsInput) -> Result<Value, EcsError> {
        let reference = i
            .task_definition
            .ok_or_else(|| EcsError::Client("taskDefinition is required.".into()))?;
        let (_, rec, _) = self
            .find_taskdef(&reference)?
            .ok_or_else(|| EcsError::Client("Unable to describe task definition.".into()))?;
        let mut out = json!({"taskDefinition": rec.task_definition});
        if wants_tags(&i.include) {
            out["tags"] = json!(rec.tags);
        }
        Ok(out)
    }

    fn all_taskdefs(&self) -> Result<Vec<(String, u32, TaskDefRecord)>, EcsError> {
        let mut all: Vec<(String, u32, TaskDefRecord)> = self
            .list::<TaskDefRecord>("/ecs/taskdefs/")?
            .into_iter()
            .map(|(_, t, _)| {
                let f = t.task_definition["family"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let r = t.task_definition["revision"].as_u64().unwrap_or(0) as u32;
                (f, r, t)
            })
            .collect();
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(all)
    }

    fn list_task_definitions(&self, i: TaskDefsInput) -> Result<Value, EcsError> {
        let status = i.status.unwrap_or_else(|| "ACTIVE".into());
        if !matches!(
            status.as_str(),
            "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS"
        ) {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid status '{status}': must be ACTIVE, INACTIVE or DELETE_IN_PROGRESS."
            )));
        }
        let mut arns: Vec<String> = self
            .all_taskdefs()?
            .into_iter()
            // ECS: familyPrefix is "the full family name" for this operation.
            .filter(|(f, _, _)| i.family_prefix.as_ref().is_none_or(|p| p == f))
            .filter(|(_, _, t)| status_of(&t.task_definition) == status)
            .filter_map(|(_, _, t)| {
                t.task_definition["taskDefinitionArn"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        match i.sort.as_deref() {
            None | Some("ASC") => {}
            Some("DESC") => arns.reverse(),
            Some(o) => {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid sort '{o}': must be ASC or DESC."
                )))
            }
        }
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"taskDefinitionArns": page}), next))
    }

    fn list_task_definition_families(&self, i: TaskDefsInput) -> Result<Value, EcsError> {
        let status = i.status.unwrap_or_else(|| "ALL".into());
        if !matches!(status.as_str(), "ACTIVE" | "INACTIVE" | "ALL") {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid status '{status}': must be ACTIVE, INACTIVE or ALL."
            )));
        }
        let mut families: BTreeMap<String, bool> = BTreeMap::new();
        for (f, _, t) in self.all_taskdefs()? {
            let active = status_of(&t.task_definition) == "ACTIVE";
            *families.entry(f).or_default() |= active;
        }
        let names: Vec<String> = families
            .into_iter()
            .filter(|(f, _)| {
                i.family_prefix
                    .as_ref()
                    .is_none_or(|p| f.starts_with(p.as_str()))
            })
            .filter(|(_, active)| match status.as_str() {
                "ACTIVE" => *active,
                "INACTIVE" => !*active,
                _ => true,
            })
            .map(|(f, _)| f)
            .collect();
        let (page, next) = paginate(&names, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"families": page}), next))
    }

    fn deregister_task_definition(&self, i: TaskDefsInput) -> Result<Value, EcsError> {
        let reference = i
            .task_definition
            .ok_or_else(|| EcsError::Client("taskDefinition is required.".into()))?;
        let (family, rev) = taskdef_ref(&reference)?;
        let rev = rev.ok_or_else(|| {
            EcsError::Client(format!(
                "A revision is required to deregister task definition '{reference}': use family:revision or the task definition ARN."
            ))
        })?;
        if !validate::valid_name(&family) {
            return Err(EcsError::Client(
                "The specified task definition does not exist.".into(),
            ));
        }
        let rec: TaskDefRecord = self.update(
            &taskdef_key(&family, rev),
            || EcsError::Client("The specified task definition does not exist.".into()),
            |t: &mut TaskDefRecord| {
                if status_of(&t.task_definition) != "ACTIVE" {
                    return Ok(false);
                }
                t.task_definition["status"] = json!("INACTIVE");
                t.task_definition["deregisteredAt"] = json!(now());
                Ok(true)
            },
        )?;
        Ok(json!({"taskDefinition": rec.task_definition}))
    }

    fn delete_task_definitions(&self, i: TaskDefsInput) -> Result<Value, EcsError> {
        let refs = i.task_definitions.unwrap_or_default();
        if refs.is_empty() || refs.len() > MAX_DELETE_TASKDEFS {
            return Err(EcsError::InvalidParameter(format!(
                "taskDefinitions must name between 1 and {MAX_DELETE_TASKDEFS} task definitions."
            )));
        }
        let mut deleted = vec![];
        let mut failures = vec![];
        for r in refs {
            let fail = |reason: &str| json!({"arn": r, "reason": reason});
            let (family, rev) = match taskdef_ref(&r) {
                Ok((f, Some(rev))) if validate::valid_name(&f) => (f, rev),
                Ok(_) => {
                    failures.push(fail(
                        "A revision is required: use family:revision or the task definition ARN.",
                    ));
                    continue;
                }
                Err(e) => {
                    failures.push(fail(&e.to_string()));
                    continue;
                }
            };
            let res = self.update(
                &taskdef_key(&family, rev),
                || EcsError::Client("The specified task definition does not exist.".into()),
                |t: &mut TaskDefRecord| match status_of(&t.task_definition) {
                    "ACTIVE" => Err(EcsError::Client(
                        "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                    )),
                    "INACTIVE" => {
                        t.task_definition["status"] = json!("DELETE_IN_PROGRESS");
                        t.task_definition["deleteRequestedAt"] = json!(now());
                        Ok(true)
                    }
                    _ => Ok(false),
                },
            );
            match res {
                Ok(t) => deleted.push(t.task_definition),
                Err(EcsError::Client(m)) => failures.push(fail(&m)),
                Err(e) => return Err(e),
            }
        }
        Ok(json!({"taskDefinitions": deleted, "failures": failures}))
    }

    // -- tasks ---------------------------------------------------------------------------

    pub(crate) fn run_task(&self, i: RunTaskInput, ctx: &Context) -> Result<Value, EcsError> {
        let cname = cluster_name(i.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER));
        if !validate::valid_name(&cname) {
            return Err(EcsError::ClusterNotFound);
        }
        let count = i.count.unwrap_or(1);
        if !(1..=MAX_RUN_COUNT).contains(&count) {
            return Err(EcsError::InvalidParameter(format!(
                "count must be between 1 and {MAX_RUN_COUNT}, got {count}."
            )));
        }
        validate_tags(&i.tags)?;
        let reference = i
            .task_definition
            .clone()
            .ok_or_else(|| EcsError::InvalidParameter("taskDefinition is required.".into()))?;
        let (_, tdrec, _) = self
            .find_taskdef(&reference)
            .map_err(|e| EcsError::InvalidParameter(e.to_string()))?
            .ok_or_else(|| EcsError::InvalidParameter("TaskDefinition not found.".into()))?;
        let td = &tdrec.task_definition;
        if status_of(td) != "ACTIVE" {
            return Err(EcsError::InvalidParameter(
                "TaskDefinition is inactive".into(),
            ));
        }
        let fargate_ok = td["compatibilities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c == "FARGATE"));
        let start_task = i.container_instances.is_some();
        let instances: Vec<InstanceRecord> = self
            .list::<InstanceRecord>(&format!("/ecs/instances/{cname}/"))?
            .into_iter()
            .map(|(_, r, _)| r)
            .filter(InstanceRecord::is_live)
            .collect();
        let has_instances = !instances.is_empty();
        let (strategies, mut constraints) =
            placement::parse_placement(&i.placement_strategy, &i.placement_constraints)?;
        // The task definition's own constraints bind too (ECS: memberOf only there).
        let (_, td_constraints) = placement::parse_placement(
            &[],
            td["placementConstraints"]
                .as_array()
                .map_or(&[], Vec::as_slice),
        )?;
        constraints.extend(td_constraints);

        if i.launch_type.is_some() && !i.capacity_provider_strategy.is_empty() {
            return Err(EcsError::InvalidParameter(
                "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.".into(),
            ));
        }
        let launch_type = match (i.launch_type.as_deref(), i.capacity_provider_strategy.first()) {
            (Some(l), _) => l.to_string(),
            (None, Some(cp)) => match cp.capacity_provider.as_deref() {
                Some("FARGATE") | Some("FARGATE_SPOT") => "FARGATE".into(),
                other => {
                    return Err(EcsError::InvalidParameter(format!(
                        "The capacity provider {} is not available: berth offers FARGATE and FARGATE_SPOT.",
                        other.unwrap_or("")
                    )))
                }
            },
            (None, None) if fargate_ok && !start_task => "FARGATE".into(),
            (None, None) if self.ec2_on_builtin || has_instances || start_task => "EC2".into(),
            (None, None) => {
                return Err(EcsError::Client(format!(
                    "Task definition {} is not compatible with FARGATE (it needs networkMode awsvpc and a Fargate task size), and the EC2 launch type is not available yet: berth has no container instances to place it on.",
                    td["taskDefinitionArn"].as_str().unwrap_or(&reference)
                )))
            }
        };

        // The cluster: named ones must exist; `default` is created on first use.
        let ckey = cluster_key(&cname);
        let cluster = self.get::<ClusterRecord>(&ckey)?;
        if cluster.is_none() && cname != DEFAULT_CLUSTER {
            return Err(EcsError::ClusterNotFound);
        }

        let target = match launch_type.as_str() {
            "FARGATE" if start_task => {
                return Err(EcsError::InvalidParameter(
                    "StartTask places tasks on container instances: the launch type is EC2.".into(),
                ))
            }
            "FARGATE" => {
                if !fargate_ok {
                    return Err(EcsError::InvalidParameter(
                        "Task definition does not support launch_type FARGATE.".into(),
                    ));
                }
                Target::Builtin
            }
            "EC2" if start_task => Target::Fixed(self.start_task_instances(
                &cname,
                i.container_instances.as_deref().unwrap_or_default(),
            )?),
            "EC2" if has_instances => Target::Place {
                strategies,
                constraints,
            },
            "EC2" if self.ec2_on_builtin => Target::Builtin,
            "EC2" => {
                let carn = cluster
                    .as_ref()
                    .map(|(c, _)| c.cluster_arn.clone())
                    .unwrap_or_else(|| arn(ctx, &format!("cluster/{cname}")));
                return Ok(json!({
                    "tasks": [],
                    "failures": [{"arn": carn, "reason": NO_INSTANCES,
                        "detail": "the cluster has no registered container instances: start a berth agent or call RegisterContainerInstance, or use launchType FARGATE"}],
                }));
            }
            "EXTERNAL" | "MANAGED_INSTANCES" => {
                return Err(EcsError::InvalidParameter(format!(
                    "launch type {launch_type} is not supported by berth: use FARGATE"
                )))
            }
            other => {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid launch type '{other}': must be one of EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES."
                )))
            }
        };

        let overrides: TaskOverride = match &i.overrides {
            Some(o) => serde_json::from_value(o.clone()).map_err(|e| {
                EcsError::Serialization(format!("could not parse 'overrides': {e}"))
            })?,
            None => TaskOverride::default(),
        };
        let definition = apply_overrides(td, &overrides)?;
        let task_cpu = definition["cpu"].as_str().map(String::from);
        let task_memory = definition["memory"].as_str().map(String::from);
        if let (Some(c), Some(m), "FARGATE") = (&task_cpu, &task_memory, launch_type.as_str()) {
            let (c, m) = (c.parse().unwrap_or(0), m.parse().unwrap_or(0));
            if !validate::fargate_size_ok(c, m) {
                return Err(EcsError::InvalidParameter(format!(
                    "No Fargate configuration exists for given values: {c} CPU, {m} memory. See the Amazon ECS documentation for the valid values."
                )));
            }
        }

        let builtin = match (&target, self.builtin_agent.clone()) {
            (Target::Builtin, Some(agent)) => Some(agent),
            (Target::Builtin, None) => {
                let carn = cluster
                    .as_ref()
                    .map(|(c, _)| c.cluster_arn.clone())
                    .unwrap_or_else(|| arn(ctx, &format!("cluster/{cname}")));
                return Ok(
                    json!({"tasks": [], "failures": [{"arn": carn, "reason": "RESOURCE:FARGATE",
                    "detail": "this berth server runs no built-in agent, so it has no Fargate capacity"}]}),
                );
            }
            _ => None,
        };

        let network_mode = definition["networkMode"]
            .as_str()
            .unwrap_or("awsvpc")
            .to_string();
        let subnet = i
            .network_configuration
            .as_ref()
            .and_then(|n| n.pointer("/awsvpcConfiguration/subnets/0"))
            .and_then(Value::as_str)
            .map(String::from);
        let family = td["family"].as_str().unwrap_or("").to_string();
        let created = now();
        let mut records = vec![];
        for _ in 0..count {
            let id = random_hex(16)?;
            let task_arn = arn(ctx, &format!("task/{cname}/{id}"));
            let mut containers = vec![];
            for cd in definition["containerDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let num = |k: &str| cd.get(k).and_then(Value::as_i64).map(|n| n.to_string());
                containers.push(Container {
                    container_arn: arn(ctx, &format!("container/{cname}/{id}/{}", random_uuid()?)),
                    task_arn: task_arn.clone(),
                    name: cd["name"].as_str().unwrap_or("").to_string(),
                    image: cd["image"].as_str().unwrap_or("").to_string(),
                    last_status: "PENDING".into(),
                    health_status: "UNKNOWN".into(),
                    cpu: num("cpu"),
                    memory: num("memory"),
                    memory_reservation: num("memoryReservation"),
                    ..Default::default()
                });
            }
            let mut attachments = vec![];
            if network_mode == "awsvpc" {
                let mut details = vec![
                    json!({"name": "networkInterfaceId", "value": format!("eni-{}", &random_hex(9)?[..17])}),
                ];
                if let Some(s) = &subnet {
                    details.insert(0, json!({"name": "subnetId", "value": s}));
                }
                attachments.push(json!({
                    "id": random_uuid()?,
                    "type": "ElasticNetworkInterface",
                    "status": "PRECREATED",
                    "details": details,
                }));
            }
            let task = Task {
                task_arn,
                cluster_arn: cluster
                    .as_ref()
                    .map(|(c, _)| c.cluster_arn.clone())
                    .unwrap_or_else(|| arn(ctx, &format!("cluster/{cname}"))),
                task_definition_arn: td["taskDefinitionArn"].as_str().unwrap_or("").to_string(),
                containers,
                last_status: "PROVISIONING".into(),
                desired_status: "RUNNING".into(),
                launch_type: launch_type.clone(),
                capacity_provider_name: (!i.capacity_provider_strategy.is_empty())
                    .then(|| "FARGATE".to_string()),
                cpu: task_cpu.clone(),
                memory: task_memory.clone(),
                created_at: created,
                started_by: i.started_by.clone(),
                group: i
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("family:{family}")),
                version: 1,
                health_status: "UNKNOWN".into(),
                attachments,
                availability_zone: format!("{}a", ctx.region),
                platform_version: (launch_type == "FARGATE").then(|| {
                    i.platform_version
                        .clone()
                        .filter(|p| p != "LATEST")
                        .unwrap_or_else(|| PLATFORM_VERSION.into())
                }),
                platform_family: (launch_type == "FARGATE").then(|| PLATFORM_FAMILY.into()),
                tags: i.tags.clone(),
                overrides: i
                    .overrides
                    .clone()
                    .unwrap_or_else(|| json!({"containerOverrides": []})),
                enable_execute_command: i.enable_execute_command,
                ..Default::default()
            };
            records.push((
                task_key(&cname, &id),
                TaskRecord {
                    task,
                    agent: builtin.clone(),
                    definition: definition.clone(),
                    network_mode: network_mode.clone(),
                    reported: false,
                    drain_until: None,
                },
            ));
        }

        let group = records
            .first()
            .map(|(_, r)| r.task.group.clone())
            .unwrap_or_default();
        let request = placement::task_request(&definition, &group);
        for _ in 0..CAS_RETRIES {
            // Re-read the cluster: the txn both guards against a concurrent DeleteCluster
            // and creates `default` on first use. Every RunTask rewrites the cluster
            // record, so two placements on one cluster conflict and the later one
            // re-reads what the earlier placed: no instance is oversubscribed.
            let (mut crec, guard) = match self.get::<ClusterRecord>(&ckey)? {
                Some((c, rev)) => (c, Compare::at(&ckey, rev)),
                None if cname == DEFAULT_CLUSTER => {
                    (Self::new_cluster(&cname, ctx), Compare::absent(&ckey))
                }
                None => return Err(EcsError::ClusterNotFound),
            };
            let mut compares = vec![guard];
            let mut failures = vec![];
            let mut placed = records.clone();
            if !matches!(target, Target::Builtin) {
                let (chosen, fails) = self.choose_instances(
                    &cname,
                    &crec.cluster_arn,
                    &target,
                    &request,
                    count as u32,
                )?;
                failures = fails;
                placed.truncate(chosen.len());
                for ((_, r), (inst, rev)) in placed.iter_mut().zip(&chosen) {
                    r.agent = Some(inst.arn.clone());
                    r.task.container_instance_arn = Some(inst.arn.clone());
                    r.task.availability_zone = inst.zone().to_string();
                    compares.push(Compare::at(instances::instance_key(&cname, &inst.id), *rev));
                }
                if placed.is_empty() {
                    return Ok(json!({"tasks": [], "failures": failures}));
                }
            }
            crec.tasks_started += placed.len() as u64;
            let mut ops = vec![Op::Put {
                key: ckey.clone(),
                value: encode(&crec),
            }];
            for (k, r) in &mut placed {
                r.task.cluster_arn = crec.cluster_arn.clone();
                compares.push(Compare::absent(k.as_str()));
                ops.push(Op::Put {
                    key: k.clone(),
                    value: encode(&*r),
                });
            }
            match self.store.txn(&compares, ops) {
                Ok(_) => {
                    self.notify();
                    let tasks: Vec<Value> = placed
                        .iter()
                        .map(|(_, r)| render_task(&r.task, true))
                        .collect();
                    return Ok(json!({"tasks": tasks, "failures": failures}));
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server("the cluster kept changing; retry".into()))
    }

    /// The cluster a task call addresses; `Ok(None)` for a `default` not created yet
    /// (it behaves as an empty cluster).
    fn task_cluster(&self, cluster: Option<&str>) -> Result<Option<String>, EcsError> {
        let name = cluster_name(cluster.unwrap_or(DEFAULT_CLUSTER));
        if !validate::valid_name(&name) {
            return Err(EcsError::ClusterNotFound);
        }
        if self.store.get(&cluster_key(&name)).is_some() {
            Ok(Some(name))
        } else if name == DEFAULT_CLUSTER {
            Ok(None)
        } else {
            Err(EcsError::ClusterNotFound)
        }
    }

    fn describe_tasks(&self, i: TasksInput) -> Result<Value, EcsError> {
        let refs = i.tasks.clone().unwrap_or_default();
        if refs.is_empty() || refs.len() > MAX_DESCRIBE {
            return Err(EcsError::InvalidParameter(format!(
                "tasks must name between 1 and {MAX_DESCRIBE} tasks."
            )));
        }
        let cluster = self.task_cluster(i.cluster.as_deref())?;
        let include_tags = wants_tags(&i.include);
        let mut tasks = vec![];
        let mut failures = vec![];
        for r in refs {
            let found = match &cluster {
                Some(c) => self.find_task(c, &r)?,
                None => None,
            };
            match found {
                Some((_, t, _)) => tasks.push(render_task(&t.task, include_tags)),
                None => failures.push(json!({"arn": r, "reason": "MISSING"})),
            }
        }
        Ok(json!({"tasks": tasks, "failures": failures}))
    }

    fn find_task(
        &self,
        cluster: &str,
        reference: &str,
    ) -> Result<Option<(String, TaskRecord, Revision)>, EcsError> {
        let (in_arn, id) = task_ref(reference);
        if in_arn.as_deref().is_some_and(|c| c != cluster)
            || id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(None);
        }
        let key = task_key(cluster, &id);
        Ok(self.get::<TaskRecord>(&key)?.map(|(t, r)| (key, t, r)))
    }

    fn list_tasks(&self, i: TasksInput) -> Result<Value, EcsError> {
        let Some(cluster) = self.task_cluster(i.cluster.as_deref())? else {
            return Ok(json!({"taskArns": []}));
        };
        let desired = i.desired_status.clone().unwrap_or_else(|| "RUNNING".into());
        if !matches!(desired.as_str(), "RUNNING" | "PENDING" | "STOPPED") {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid desiredStatus '{desired}': must be RUNNING, PENDING or STOPPED."
            )));
        }
        let mut tasks: Vec<TaskRecord> = self
            .list::<TaskRecord>(&format!("/ecs/tasks/{cluster}/"))?
            .into_iter()
            .map(|(_, t, _)| t)
            // ECS: a desiredStatus of PENDING matches nothing (no task is desired PENDING).
            .filter(|t| t.task.desired_status == desired)
            .filter(|t| i.family.as_ref().is_none_or(|f| t.family() == f))
            .filter(|t| {
                i.service_name.as_deref().is_none_or(|s| {
                    let name = s.rsplit('/').next().unwrap_or(s);
                    t.task.group.strip_prefix("service:") == Some(name)
                })
            })
            .filter(|t| {
                i.started_by
                    .as_ref()
                    .is_none_or(|s| t.task.started_by.as_ref() == Some(s))
            })
            .filter(|t| {
                i.launch_type
                    .as_ref()
                    .is_none_or(|l| &t.task.launch_type == l)
            })
            .filter(|t| {
                i.container_instance.as_ref().is_none_or(|ci| {
                    t.task
                        .container_instance_arn
                        .as_ref()
                        .is_some_and(|a| a == ci || a.ends_with(&format!("/{ci}")))
                })
            })
            .collect();
        tasks.sort_by(|a, b| {
            a.task
                .created_at
                .total_cmp(&b.task.created_at)
                .then_with(|| a.task.task_arn.cmp(&b.task.task_arn))
        });
        let arns: Vec<String> = tasks.into_iter().map(|t| t.task.task_arn).collect();
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"taskArns": page}), next))
    }

    pub(crate) fn stop_task(&self, i: TasksInput) -> Result<Value, EcsError> {
        let reference = i
            .task
            .clone()
            .ok_or_else(|| EcsError::InvalidParameter("task is required.".into()))?;
        let not_found = || EcsError::InvalidParameter("The referenced task was not found.".into());
        let cluster = self
            .task_cluster(i.cluster.as_deref())?
            .ok_or_else(not_found)?;
        let (key, found, _) = self
            .find_task(&cluster, &reference)?
            .ok_or_else(not_found)?;
        let reason = i
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "Task stopped by user".into());
        // A service task behind a load balancer leaves it first (and drains).
        let unlink = if found.task.desired_status == "STOPPED" {
            None
        } else {
            self.unlink_plan(&found)
        };
        let drain_until = unlink.as_ref().and_then(|u| u.drain_until);
        let mut changed = false;
        let rec: TaskRecord = self.update(&key, not_found, |r: &mut TaskRecord| {
            changed = false;
            if r.task.desired_status == "STOPPED" {
                return Ok(false);
            }
            let t = now();
            if r.drain_until.is_none() {
                r.drain_until = drain_until;
            }
            r.task.desired_status = "STOPPED".into();
            r.task.stopping_at.get_or_insert(t);
            r.task.stopped_reason.get_or_insert_with(|| reason.clone());
            r.task
                .stop_code
                .get_or_insert_with(|| "UserInitiated".into());
            if !r.reported {
                // No agent has started anything: nothing to wind down.
                mark_stopped(&mut r.task, t);
            }
            r.task.version += 1;
            changed = true;
            Ok(true)
        })?;
        // Marked stopping first, then unregistered (see `unlink_plan`).
        if let Some(u) = &unlink {
            self.unlink(u);
        }
        if changed {
            self.notify();
        }
        Ok(json!({"task": render_task(&rec.task, true)}))
    }
}

/// Marks a task and its containers STOPPED at `t`.
pub(crate) fn mark_stopped(task: &mut Task, t: f64) {
    task.last_status = "STOPPED".into();
    task.desired_status = "STOPPED".into();
    task.stopping_at.get_or_insert(t);
    task.stopped_at.get_or_insert(t);
    task.execution_stopped_at.get_or_insert(t);
    for c in &mut task.containers {
        c.last_status = "STOPPED".into();
    }
    for a in &mut task.attachments {
        a["status"] = json!("DELETED");
    }
}

fn status_of(td: &Value) -> &str {
    td["status"].as_str().unwrap_or("ACTIVE")
}

pub(crate) fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    v
}

/// The definition with RunTask's overrides applied: command replaced, environment
/// merged by name, cpu/memory/memoryReservation replaced; task cpu/memory replaced.
fn apply_overrides(td: &Value, o: &TaskOverride) -> Result<Value, EcsError> {
    let mut d = td.clone();
    if let Some(c) = &o.cpu {
        let c =
            validate::parse_task_cpu(c).map_err(|e| EcsError::InvalidParameter(e.to_string()))?;
        d["cpu"] = json!(c.to_string());
    }
    if let Some(m) = &o.memory {
        let m = validate::parse_task_memory(m)
            .map_err(|e| EcsError::InvalidParameter(e.to_string()))?;
        d["memory"] = json!(m.to_string());
    }
    let Some(cds) = d
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
    else {
        return Ok(d);
    };
    for co in &o.container_overrides {
        let name = co.name.clone().unwrap_or_default();
        let Some(cd) = cds
            .iter_mut()
            .find(|c| c["name"].as_str() == Some(name.as_str()))
        else {
            return Err(EcsError::InvalidParameter(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        };
        let Some(cd) = cd.as_object_mut() else {
            continue;
        };
        if let Some(cmd) = &co.command {
            cd.insert("command".into(), json!(cmd));
        }
        if let Some(env) = &co.environment {
            let mut merged: Vec<Value> = cd
                .get("environment")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for e in env {
                let n = e.get("name").cloned();
                merged.retain(|x| x.get("name") != n.as_ref());
                merged.push(e.clone());
            }
            cd.insert("environment".into(), json!(merged));
        }
        for (k, v) in [
            ("cpu", co.cpu),
            ("memory", co.memory),
            ("memoryReservation", co.memory_reservation),
        ] {
            if let Some(v) = v {
                if v < 0 {
                    return Err(EcsError::InvalidParameter(format!(
                        "Invalid '{k}' override for container {name}: {v} must not be negative."
                    )));
                }
                cd.insert(k.into(), json!(v));
            }
        }
        if let (Some(r), Some(m)) = (
            cd.get("memoryReservation").and_then(Value::as_i64),
            cd.get("memory").and_then(Value::as_i64),
        ) {
            if r > m {
                return Err(EcsError::InvalidParameter(format!(
                    "Invalid overrides for container {name}: memoryReservation ({r} MiB) must be less than or equal to memory ({m} MiB)."
                )));
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
pub(crate) mod tests;
