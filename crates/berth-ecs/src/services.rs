//! ECS services: Create/Describe/List/Update/DeleteService, and the loop step that
//! keeps each service converging ([`Ecs::reconcile_services`]). The decisions —
//! how many tasks to launch or stop, deployments, the circuit breaker, events — are
//! `berth-controller`'s pure functions; this module reads the service's tasks from the
//! store, hands them in, records the new state and carries the actions out through
//! RunTask and StopTask, so a service's tasks are ordinary tasks (`group`
//! `service:<name>`, `startedBy` the deployment id).

use berth_controller::{
    self as ctl, Action, CircuitBreakerConfig, DeploymentConfiguration, DeploymentStatus,
    DesiredStatus, HealthStatus, LaunchType, ServiceSpec, ServiceState, ServiceStatus,
    TargetHealth, TaskStatus, TaskView,
};
use std::collections::HashMap;

use berth_state::{Compare, Op, StateError};
use serde::{Deserialize, Serialize};

use crate::instances::InstanceRecord;
use crate::links::{LinkTask, LoadBalancerLink, RegistryLink, ServiceLinks, TargetRef, TargetTask};
use serde_json::{json, Value};

use crate::ops::{
    arn, cluster_key, cluster_name, encode, paginate, validate_tags, with_token, ClusterRecord,
    RunTaskInput, Tag, TaskRecord, TasksInput, CAS_RETRIES, DEFAULT_CLUSTER, MAX_DESCRIBE,
};
use crate::{Context, Ecs, EcsError};

/// How long stopped tasks still count for the controller (its failure accounting and
/// "stopped" events need them for a while), in milliseconds.
const STOPPED_TASK_MEMORY_MS: u64 = 60 * 60 * 1000;

pub(crate) fn service_key(cluster: &str, name: &str) -> String {
    format!("/ecs/services/{cluster}/{name}")
}

fn now_ms() -> u64 {
    (crate::ops::now() * 1000.0) as u64
}

/// A service as stored: ECS's fields, the controller's spec and state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceRecord {
    service_arn: String,
    service_name: String,
    cluster: String,
    cluster_arn: String,
    region: String,
    account: String,
    created_at: f64,
    launch_type: String,
    #[serde(default)]
    network_configuration: Option<Value>,
    #[serde(default)]
    load_balancers: Vec<Value>,
    #[serde(default)]
    service_registries: Vec<Value>,
    #[serde(default)]
    placement_constraints: Vec<Value>,
    #[serde(default)]
    placement_strategy: Vec<Value>,
    #[serde(default)]
    service_connect_configuration: Option<Value>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
    #[serde(default)]
    propagate_tags: Option<String>,
    #[serde(default)]
    enable_ecs_managed_tags: bool,
    spec: ServiceSpec,
    state: ServiceState,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateServiceInput {
    cluster: Option<String>,
    service_name: Option<String>,
    task_definition: Option<String>,
    desired_count: Option<i64>,
    launch_type: Option<String>,
    deployment_configuration: Option<Value>,
    network_configuration: Option<Value>,
    health_check_grace_period_seconds: Option<i64>,
    #[serde(default)]
    load_balancers: Vec<Value>,
    #[serde(default)]
    service_registries: Vec<Value>,
    #[serde(default)]
    placement_constraints: Vec<Value>,
    #[serde(default)]
    placement_strategy: Vec<Value>,
    service_connect_configuration: Option<Value>,
    scheduling_strategy: Option<String>,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
    propagate_tags: Option<String>,
    #[serde(default, rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NamespaceInput {
    namespace: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServicesInput {
    cluster: Option<String>,
    services: Option<Vec<String>>,
    service: Option<String>,
    include: Option<Vec<String>>,
    desired_count: Option<i64>,
    task_definition: Option<String>,
    #[serde(default)]
    force_new_deployment: bool,
    deployment_configuration: Option<Value>,
    health_check_grace_period_seconds: Option<i64>,
    network_configuration: Option<Value>,
    #[serde(default)]
    force: bool,
    launch_type: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// ECS's service names: up to 255 letters, numbers, hyphens and underscores.
fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The service name from a name or an ARN (`service/<cluster>/<name>` or `service/<name>`).
fn service_name(s: &str) -> String {
    match s.split_once(":service/") {
        Some((p, rest)) if p.starts_with("arn:") => rest.rsplit('/').next().unwrap_or(rest).into(),
        _ => s.to_string(),
    }
}

fn deployment_config(v: Option<&Value>, base: DeploymentConfiguration) -> DeploymentConfiguration {
    let mut c = base;
    if let Some(v) = v {
        if let Some(n) = v["minimumHealthyPercent"].as_u64() {
            c.minimum_healthy_percent = n as u32;
        }
        if let Some(n) = v["maximumPercent"].as_u64() {
            c.maximum_percent = n as u32;
        }
        if let Some(cb) = v.get("deploymentCircuitBreaker").filter(|c| c.is_object()) {
            c.deployment_circuit_breaker = CircuitBreakerConfig {
                enable: cb["enable"].as_bool().unwrap_or(false),
                rollback: cb["rollback"].as_bool().unwrap_or(false),
            };
        }
    }
    c
}

fn status_str(s: ServiceStatus) -> &'static str {
    match s {
        ServiceStatus::Active => "ACTIVE",
        ServiceStatus::Draining => "DRAINING",
        ServiceStatus::Inactive => "INACTIVE",
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn render(r: &ServiceRecord, include_tags: bool) -> Value {
    let deployments: Vec<Value> = r
        .state
        .visible_deployments()
        .map(|d| {
            json!({
                "id": d.id,
                "status": match d.status { DeploymentStatus::Primary => "PRIMARY", DeploymentStatus::Active => "ACTIVE", DeploymentStatus::Inactive => "INACTIVE" },
                "taskDefinition": d.task_definition,
                "desiredCount": d.desired_count,
                "pendingCount": d.pending_count,
                "runningCount": d.running_count,
                "failedTasks": d.failed_tasks,
                "createdAt": secs(d.created_at),
                "updatedAt": secs(d.updated_at),
                "launchType": r.launch_type,
                "rolloutState": serde_json::to_value(d.rollout_state).unwrap_or(Value::Null),
                "rolloutStateReason": d.rollout_state_reason,
                "networkConfiguration": r.network_configuration,
            })
        })
        .collect();
    let running: u32 = r.state.deployments.iter().map(|d| d.running_count).sum();
    let pending: u32 = r.state.deployments.iter().map(|d| d.pending_count).sum();
    let dc = &r.spec.deployment_configuration;
    let mut v = json!({
        "serviceArn": r.service_arn,
        "serviceName": r.service_name,
        "clusterArn": r.cluster_arn,
        "loadBalancers": r.load_balancers,
        "serviceRegistries": r.service_registries,
        "status": status_str(r.state.status),
        "desiredCount": r.spec.desired_count,
        "runningCount": running,
        "pendingCount": pending,
        "launchType": r.launch_type,
        "taskDefinition": r.state.primary().map(|d| d.task_definition.clone()).unwrap_or_else(|| r.spec.task_definition.clone()),
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": dc.deployment_circuit_breaker.enable, "rollback": dc.deployment_circuit_breaker.rollback},
            "maximumPercent": dc.maximum_percent,
            "minimumHealthyPercent": dc.minimum_healthy_percent,
        },
        "deployments": deployments,
        "events": r.state.events.iter().map(|e| json!({"id": e.id, "createdAt": secs(e.created_at), "message": e.message})).collect::<Vec<_>>(),
        "createdAt": r.created_at,
        "placementConstraints": r.placement_constraints,
        "placementStrategy": r.placement_strategy,
        "healthCheckGracePeriodSeconds": r.spec.health_check_grace_period_secs,
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
        "enableECSManagedTags": r.enable_ecs_managed_tags,
        "propagateTags": r.propagate_tags.clone().unwrap_or_else(|| "NONE".into()),
        "enableExecuteCommand": false,
    });
    if let Some(n) = &r.network_configuration {
        v["networkConfiguration"] = n.clone();
    }
    if include_tags {
        v["tags"] = serde_json::to_value(&r.tags).unwrap_or(Value::Null);
    }
    v
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(json!(s)).ok()
}

/// The controller's view of a task; `draining`: the ARNs of the cluster's DRAINING
/// container instances (their service tasks are replaced).
fn task_view(t: &TaskRecord, draining: &[String], target_health: Option<TargetHealth>) -> TaskView {
    let ms = |s: Option<f64>| s.map(|x| (x * 1000.0) as u64);
    let has_health_check = t.definition["containerDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["essential"].as_bool().unwrap_or(true) && c["healthCheck"].is_object());
    TaskView {
        id: task_id(t),
        deployment_id: t.task.started_by.clone().unwrap_or_default(),
        last_status: parse_enum(&t.task.last_status).unwrap_or(TaskStatus::Provisioning),
        desired_status: parse_enum(&t.task.desired_status).unwrap_or(DesiredStatus::Running),
        health_status: parse_enum(&t.task.health_status).unwrap_or(HealthStatus::Unknown),
        has_health_check,
        created_at: (t.task.created_at * 1000.0) as u64,
        started_at: ms(t.task.started_at),
        stopped_at: ms(t.task.stopped_at),
        stop_code: t.task.stop_code.clone(),
        stopped_reason: t.task.stopped_reason.clone(),
        on_draining_instance: t.agent.as_ref().is_some_and(|a| draining.contains(a)),
        target_health,
    }
}

/// The task's id (the last part of its ARN).
fn task_id(t: &TaskRecord) -> String {
    t.task
        .task_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The task's private address (awsvpc), once an agent reported it.
pub(crate) fn task_address(t: &TaskRecord) -> Option<String> {
    t.task
        .containers
        .iter()
        .find_map(|c| c.network_interfaces.first())
        .and_then(|n| n["privateIpv4Address"].as_str())
        .map(String::from)
}

/// RUNNING and desired RUNNING: the task should be registered.
fn serving(t: &TaskRecord) -> bool {
    t.task.last_status == "RUNNING" && t.task.desired_status == "RUNNING"
}

/// Task `t` as registry `r` sees it: awsvpc — its own address and the registry's port
/// (or the container port); bridge and host modes — its container instance's address
/// and the host port bound to the registry's container port (`AWS_INSTANCE_PORT`, for
/// SRV records).
fn link_task(t: &TaskRecord, r: &RegLink, hosts: &HostIds) -> LinkTask {
    let (address, port) = if t.network_mode == "awsvpc" {
        (
            task_address(t),
            r.port.or(r.container.as_ref().map(|c| c.1)),
        )
    } else {
        // Not registrable until both are known.
        let placed = || {
            let address = host_of(t, hosts)?.address.clone()?;
            let (name, port) = r.container.as_ref()?;
            Some((address, task_host_port(t, name, *port)?))
        };
        placed().map_or((None, None), |(a, p)| (Some(a), Some(p)))
    };
    LinkTask {
        id: task_id(t),
        address,
        port,
        serving: serving(t),
        health: t.task.health_status.clone(),
    }
}

/// A service's `loadBalancers` entry as the links use it.
struct LbLink {
    target_group: String,
    container: String,
    port: u16,
}

fn lb_links(r: &ServiceRecord) -> Vec<LbLink> {
    r.load_balancers
        .iter()
        .filter_map(|v| serde_json::from_value::<LoadBalancerLink>(v.clone()).ok())
        .filter_map(|l| {
            Some(LbLink {
                target_group: l.target_group_arn?,
                container: l.container_name?,
                port: l.container_port?,
            })
        })
        .collect()
}

/// A container instance as the links name and reach it.
#[derive(Debug, Clone)]
pub(crate) struct HostRef {
    /// How a target group names it (`ec2InstanceId`).
    pub(crate) ec2_id: String,
    /// Where it is reached (Cloud Map's `AWS_INSTANCE_IPV4` for its bridge and host
    /// tasks); `None` for an instance registered without one.
    pub(crate) address: Option<String>,
}

/// The `ec2InstanceId` by which target groups name the server's built-in node, where
/// a cluster without container instances runs its EC2 tasks.
pub const BUILTIN_INSTANCE_ID: &str = "i-00000000000000001";

/// The [`HostIds`] key of the built-in node (its tasks have no containerInstanceArn).
const BUILTIN_KEY: &str = "";

/// Every container instance, by containerInstanceArn (the built-in node under
/// [`BUILTIN_KEY`]).
pub(crate) type HostIds = HashMap<String, HostRef>;

/// The node task `t` runs on.
fn host_of<'h>(t: &TaskRecord, hosts: &'h HostIds) -> Option<&'h HostRef> {
    hosts.get(
        t.task
            .container_instance_arn
            .as_deref()
            .unwrap_or(BUILTIN_KEY),
    )
}

/// Where task `t` is a target for `l`: awsvpc — its address and the container port;
/// bridge and host modes — its instance's `ec2InstanceId` and the host port bound to
/// the container port.
fn task_target(t: &TaskRecord, l: &LbLink, hosts: &HostIds) -> Option<TargetRef> {
    if t.network_mode == "awsvpc" {
        return task_address(t).map(|a| (a, l.port));
    }
    let host = host_of(t, hosts)?;
    let port = task_host_port(t, &l.container, l.port)?;
    Some((host.ec2_id.clone(), port))
}

/// The host port task `t`'s container `name` has bound for `container_port`.
fn task_host_port(t: &TaskRecord, name: &str, container_port: u16) -> Option<u16> {
    let containers = t
        .task
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.network_bindings.as_slice()));
    crate::links::host_port(containers, name, container_port)
}

fn target_task(t: &TaskRecord, l: &LbLink, hosts: &HostIds) -> TargetTask {
    TargetTask {
        target: task_target(t, l, hosts),
        serving: serving(t),
    }
}

/// A service's `serviceRegistries` entry as the links use it.
struct RegLink {
    arn: String,
    port: Option<u16>,
    /// containerName and containerPort.
    container: Option<(String, u16)>,
}

fn registry_links(r: &ServiceRecord) -> Vec<RegLink> {
    r.service_registries
        .iter()
        .filter_map(|v| serde_json::from_value::<RegistryLink>(v.clone()).ok())
        .filter_map(|l| {
            Some(RegLink {
                arn: l.registry_arn?,
                port: l.port,
                container: l.container_name.zip(l.container_port),
            })
        })
        .collect()
}

/// The [`HostIds`] of `instances` and the built-in node.
fn host_ids(instances: &[InstanceRecord], builtin: Option<HostRef>) -> HostIds {
    instances
        .iter()
        .map(|i| {
            let host = HostRef {
                ec2_id: i.ec2_instance_id.clone(),
                address: i.address.clone(),
            };
            (i.arn.clone(), host)
        })
        .chain(builtin.map(|h| (BUILTIN_KEY.to_string(), h)))
        .collect()
}

impl Ecs {
    /// The built-in node as an instance, when it runs EC2 tasks and has its address.
    pub(crate) fn builtin_host(&self) -> Option<HostRef> {
        if !self.ec2_on_builtin {
            return None;
        }
        Some(HostRef {
            ec2_id: BUILTIN_INSTANCE_ID.to_string(),
            address: Some(self.builtin_address.get()?.clone()),
        })
    }

    /// `cluster`'s container instances.
    fn cluster_instances(&self, cluster: &str) -> Result<Vec<InstanceRecord>, EcsError> {
        Ok(self
            .list::<InstanceRecord>(&format!("/ecs/instances/{cluster}/"))?
            .into_iter()
            .map(|(_, i, _)| i)
            .collect())
    }

    /// Whether `cluster`'s bridge- and host-mode tasks run on an instance that links
    /// can name: a container instance, or the built-in node on a cluster without any.
    fn has_instance_for(&self, cluster: &str) -> Result<bool, EcsError> {
        Ok(!self.cluster_instances(cluster)?.is_empty() || self.builtin_host().is_some())
    }

    fn service_cluster(&self, cluster: Option<&str>) -> Result<String, EcsError> {
        let name = cluster_name(cluster.unwrap_or(DEFAULT_CLUSTER));
        if self.get::<ClusterRecord>(&cluster_key(&name))?.is_none() {
            return Err(EcsError::ClusterNotFound);
        }
        Ok(name)
    }

    pub(crate) fn create_service(
        &self,
        i: CreateServiceInput,
        ctx: &Context,
    ) -> Result<Value, EcsError> {
        let name = i
            .service_name
            .clone()
            .ok_or_else(|| EcsError::InvalidParameter("serviceName must be given.".into()))?;
        if !valid_service_name(&name) {
            return Err(EcsError::InvalidParameter(format!(
                "Service name {name:?} is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
            )));
        }
        if matches!(i.scheduling_strategy.as_deref(), Some(s) if s != "REPLICA") {
            return Err(EcsError::InvalidParameter(
                "berth runs REPLICA services only; the DAEMON strategy is not supported.".into(),
            ));
        }
        validate_tags(&i.tags)?;
        crate::placement::parse_placement(&i.placement_strategy, &i.placement_constraints)?;
        let cname = cluster_name(i.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER));
        let crec = match self.get::<ClusterRecord>(&cluster_key(&cname))? {
            Some((c, _)) => c,
            None if cname == DEFAULT_CLUSTER => {
                // The default cluster is made on first use, as RunTask does.
                let c = Self::new_cluster(&cname, ctx);
                let _ = self.store.txn(
                    &[Compare::absent(cluster_key(&cname))],
                    vec![Op::Put {
                        key: cluster_key(&cname),
                        value: encode(&c),
                    }],
                );
                c
            }
            None => return Err(EcsError::ClusterNotFound),
        };
        let td_ref = i.task_definition.clone().ok_or_else(|| {
            EcsError::InvalidParameter(
                "taskDefinition must be given for the ECS deployment controller.".into(),
            )
        })?;
        let (_, td, _) = self
            .find_taskdef(&td_ref)?
            .ok_or_else(|| EcsError::InvalidParameter("TaskDefinition not found.".into()))?;
        let td_arn = td.task_definition["taskDefinitionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if td.task_definition["status"] != "ACTIVE" {
            return Err(EcsError::InvalidParameter(
                "TaskDefinition is inactive".into(),
            ));
        }
        self.check_links(
            &cname,
            &i.load_balancers,
            &i.service_registries,
            &td.task_definition,
        )?;
        let desired = i.desired_count.unwrap_or(0);
        if !(0..=10_000).contains(&desired) {
            return Err(EcsError::InvalidParameter(format!(
                "desiredCount {desired} is outside 0-10000."
            )));
        }
        let fargate_ok = td.task_definition["compatibilities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c == "FARGATE"));
        let launch_type = match i.launch_type.as_deref() {
            Some(l @ ("FARGATE" | "EC2")) => l.to_string(),
            Some(other) => {
                return Err(EcsError::InvalidParameter(format!(
                    "launch type {other} is not supported by berth: use FARGATE or EC2"
                )))
            }
            None if fargate_ok => "FARGATE".into(),
            None => "EC2".into(),
        };
        let spec = ServiceSpec {
            name: name.clone(),
            desired_count: desired as u32,
            task_definition: td_arn,
            deployment_configuration: deployment_config(
                i.deployment_configuration.as_ref(),
                DeploymentConfiguration::default(),
            ),
            health_check_grace_period_secs: i.health_check_grace_period_seconds.unwrap_or(0).max(0)
                as u32,
            launch_type: if launch_type == "FARGATE" {
                LaunchType::Fargate
            } else {
                LaunchType::Ec2
            },
            has_load_balancer: !i.load_balancers.is_empty(),
        };
        ctl::validate(&spec).map_err(|e| EcsError::InvalidParameter(e.to_string()))?;
        let now = now_ms();
        let key = service_key(&cname, &name);
        let rec = ServiceRecord {
            service_arn: arn(ctx, &format!("service/{cname}/{name}")),
            service_name: name.clone(),
            cluster: cname.clone(),
            cluster_arn: crec.cluster_arn.clone(),
            region: ctx.region.clone(),
            account: ctx.account.clone(),
            created_at: secs(now),
            launch_type,
            network_configuration: i.network_configuration.clone(),
            load_balancers: i.load_balancers.clone(),
            service_registries: i.service_registries.clone(),
            placement_constraints: i.placement_constraints.clone(),
            placement_strategy: i.placement_strategy.clone(),
            service_connect_configuration: i.service_connect_configuration.clone(),
            tags: i.tags.clone(),
            propagate_tags: i.propagate_tags.clone(),
            enable_ecs_managed_tags: i.enable_ecs_managed_tags,
            state: ctl::create(&spec, now, now),
            spec,
        };
        let guard = match self.get::<ServiceRecord>(&key)? {
            Some((old, _)) if old.state.status == ServiceStatus::Active => {
                return Err(EcsError::InvalidParameter(
                    "Creation of service was not idempotent.".into(),
                ))
            }
            Some((old, _)) if old.state.status == ServiceStatus::Draining => {
                return Err(EcsError::InvalidParameter(
                    "Unable to Start a service that is still Draining.".into(),
                ))
            }
            Some((_, rev)) => Compare::at(&key, rev),
            None => Compare::absent(&key),
        };
        match self.store.txn(
            &[guard],
            vec![Op::Put {
                key: key.clone(),
                value: encode(&rec),
            }],
        ) {
            Ok(_) => {}
            Err(StateError::Conflict { .. }) => {
                return Err(EcsError::InvalidParameter(
                    "Creation of service was not idempotent.".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        self.notify();
        Ok(json!({"service": render(&rec, false)}))
    }

    pub(crate) fn describe_services(&self, i: ServicesInput) -> Result<Value, EcsError> {
        let cname = self.service_cluster(i.cluster.as_deref())?;
        let names = i.services.clone().unwrap_or_default();
        if names.is_empty() || names.len() > MAX_DESCRIBE {
            return Err(EcsError::InvalidParameter(format!(
                "services must name 1-{MAX_DESCRIBE} services."
            )));
        }
        let tags = i
            .include
            .as_ref()
            .is_some_and(|v| v.iter().any(|x| x == "TAGS"));
        let mut services = vec![];
        let mut failures = vec![];
        for n in &names {
            match self.get::<ServiceRecord>(&service_key(&cname, &service_name(n)))? {
                Some((r, _)) => services.push(render(&r, tags)),
                None => failures.push(json!({"arn": n, "reason": "MISSING"})),
            }
        }
        Ok(json!({"services": services, "failures": failures}))
    }

    pub(crate) fn list_services(&self, i: ServicesInput) -> Result<Value, EcsError> {
        let cname = self.service_cluster(i.cluster.as_deref())?;
        let arns: Vec<String> = self
            .list::<ServiceRecord>(&format!("/ecs/services/{cname}/"))?
            .into_iter()
            .filter(|(_, r, _)| r.state.status != ServiceStatus::Inactive)
            .filter(|(_, r, _)| i.launch_type.as_deref().is_none_or(|l| l == r.launch_type))
            .map(|(_, r, _)| r.service_arn)
            .collect();
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"serviceArns": page}), next))
    }

    fn modify_service(
        &self,
        i: &ServicesInput,
        f: impl Fn(&mut ServiceRecord) -> Result<(), EcsError>,
    ) -> Result<Value, EcsError> {
        let cname = self.service_cluster(i.cluster.as_deref())?;
        let name = service_name(
            i.service
                .as_deref()
                .ok_or_else(|| EcsError::InvalidParameter("service must be given.".into()))?,
        );
        let rec = self.update::<ServiceRecord, _>(
            &service_key(&cname, &name),
            || EcsError::ServiceNotFound,
            |r| {
                f(r)?;
                Ok(true)
            },
        )?;
        self.notify();
        Ok(json!({"service": render(&rec, false)}))
    }

    pub(crate) fn update_service(&self, i: ServicesInput) -> Result<Value, EcsError> {
        let new_td = match &i.task_definition {
            Some(t) => {
                let (_, td, _) = self.find_taskdef(t)?.ok_or_else(|| {
                    EcsError::InvalidParameter("TaskDefinition not found.".into())
                })?;
                Some(
                    td.task_definition["taskDefinitionArn"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            }
            None => None,
        };
        if let Some(d) = i.desired_count {
            if !(0..=10_000).contains(&d) {
                return Err(EcsError::InvalidParameter(format!(
                    "desiredCount {d} is outside 0-10000."
                )));
            }
        }
        self.modify_service(&i, |r| {
            if r.state.status != ServiceStatus::Active {
                return Err(EcsError::ServiceNotActive("Service was not ACTIVE.".into()));
            }
            let mut spec = r.spec.clone();
            if let Some(d) = i.desired_count {
                spec.desired_count = d as u32;
            }
            spec.deployment_configuration = deployment_config(
                i.deployment_configuration.as_ref(),
                spec.deployment_configuration,
            );
            if let Some(g) = i.health_check_grace_period_seconds {
                spec.health_check_grace_period_secs = g.max(0) as u32;
            }
            ctl::validate(&spec).map_err(|e| EcsError::InvalidParameter(e.to_string()))?;
            if let Some(n) = &i.network_configuration {
                r.network_configuration = Some(n.clone());
            }
            if new_td.is_some() || i.force_new_deployment {
                r.state = ctl::update(
                    &spec,
                    &r.state,
                    new_td.as_deref(),
                    i.force_new_deployment,
                    now_ms(),
                )
                .map_err(|e| EcsError::InvalidParameter(e.to_string()))?;
                if let Some(t) = &new_td {
                    spec.task_definition = t.clone();
                }
            }
            r.spec = spec;
            Ok(())
        })
    }

    pub(crate) fn delete_service(&self, i: ServicesInput) -> Result<Value, EcsError> {
        self.modify_service(&i, |r| {
            if r.state.status == ServiceStatus::Inactive {
                return Err(EcsError::ServiceNotActive("Service was not ACTIVE.".into()));
            }
            if r.spec.desired_count > 0 && !i.force {
                return Err(EcsError::InvalidParameter(
                    "The service cannot be stopped while it is scaled above 0.".into(),
                ));
            }
            r.spec.desired_count = 0;
            r.state = ctl::delete(&r.state, now_ms());
            Ok(())
        })
    }

    /// One round for every service: the controller decides, the decisions are recorded
    /// (compare-and-swap on the service), then carried out (RunTask, StopTask). Called
    /// by the server on every change and every second; safe to call concurrently with
    /// the API (a lost race is redone next round).
    pub fn reconcile_services(&self) -> Result<(), EcsError> {
        /// RunTask places at most this many tasks per call.
        const RUN_TASK_MAX_COUNT: u32 = 10;
        let now = now_ms();
        for (key, rec, rev) in self.list::<ServiceRecord>("/ecs/services/")? {
            if rec.state.status == ServiceStatus::Inactive {
                continue;
            }
            let group = format!("service:{}", rec.service_name);
            let instances = self.cluster_instances(&rec.cluster)?;
            let draining: Vec<String> = instances
                .iter()
                .filter(|i| i.status == "DRAINING")
                .map(|i| i.arn.clone())
                .collect();
            let hosts = host_ids(&instances, self.builtin_host());
            let records: Vec<TaskRecord> = self
                .list::<TaskRecord>(&format!("/ecs/tasks/{}/", rec.cluster))?
                .into_iter()
                .filter(|(_, t, _)| t.task.group == group)
                .filter(|(_, t, _)| {
                    t.task.stopped_at.is_none_or(|s| {
                        now.saturating_sub((s * 1000.0) as u64) < STOPPED_TASK_MEMORY_MS
                    })
                })
                .map(|(_, t, _)| t)
                .collect();
            let links = self.links();
            if let Some(l) = &links {
                let reread = || {
                    self.list::<TaskRecord>(&format!("/ecs/tasks/{}/", rec.cluster))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, t, _)| t)
                        .filter(|t| t.task.group == group)
                        .collect()
                };
                sync_links(l.as_ref(), &rec, &hosts, &self.link_log, reread);
            }
            let tasks: Vec<TaskView> = records
                .iter()
                .map(|t| {
                    let health = links
                        .as_ref()
                        .and_then(|l| targets_health(l.as_ref(), &rec, &hosts, t));
                    task_view(t, &draining, health)
                })
                .collect();
            let r = ctl::reconcile(&rec.spec, &rec.state, &tasks, now);
            if r.state == rec.state && r.actions.is_empty() {
                continue;
            }
            let mut next = rec.clone();
            next.state = r.state;
            match self.store.txn(
                &[Compare::at(&key, rev)],
                vec![Op::Put {
                    key: key.clone(),
                    value: encode(&next),
                }],
            ) {
                Ok(_) => {}
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let ctx = Context {
                region: rec.region.clone(),
                account: rec.account.clone(),
            };
            for a in r.actions {
                match a {
                    Action::Launch {
                        deployment_id,
                        task_definition,
                        count,
                    } => {
                        // The whole launch in this round, in RunTask calls of at most
                        // 10 (RunTask's limit): a service of 50 does not wait for five
                        // rounds. The first call that fails ends the launch.
                        let mut left = count;
                        while left > 0 {
                            let n = left.min(RUN_TASK_MAX_COUNT);
                            left -= n;
                            let out = self.run_task(
                                RunTaskInput {
                                    cluster: Some(rec.cluster.clone()),
                                    task_definition: Some(task_definition.clone()),
                                    count: Some(i64::from(n)),
                                    launch_type: Some(rec.launch_type.clone()),
                                    started_by: Some(deployment_id.clone()),
                                    group: Some(group.clone()),
                                    network_configuration: rec.network_configuration.clone(),
                                    placement_strategy: rec.placement_strategy.clone(),
                                    placement_constraints: rec.placement_constraints.clone(),
                                    ..Default::default()
                                },
                                &ctx,
                            );
                            let failure = match out {
                                Ok(v) => v["failures"][0]["reason"].as_str().map(|r| {
                                    crate::placement::unplaced_explanation(
                                        r,
                                        v["failures"][0]["arn"].as_str().unwrap_or(""),
                                    )
                                }),
                                Err(e) => Some(format!("Reason: {e}")),
                            };
                            if let Some(reason) = failure {
                                self.record_placement_failure(&key, &deployment_id, &reason, now)?;
                                break;
                            }
                        }
                    }
                    Action::Stop { task_id, reason } => {
                        let _ = self.stop_task(TasksInput {
                            cluster: Some(rec.cluster.clone()),
                            task: Some(task_id),
                            reason: Some(reason),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn list_services_by_namespace(&self, i: NamespaceInput) -> Result<Value, EcsError> {
        let ns = i
            .namespace
            .filter(|n| !n.is_empty())
            .ok_or_else(|| EcsError::InvalidParameter("namespace is required.".into()))?;
        let names = |v: &str| v == ns || v.rsplit('/').next() == Some(ns.as_str());
        let arns: Vec<String> = self
            .list::<ServiceRecord>("/ecs/services/")?
            .into_iter()
            .map(|(_, r, _)| r)
            .filter(|r| r.state.status == ServiceStatus::Active)
            .filter(|r| {
                let sc = r
                    .service_connect_configuration
                    .as_ref()
                    .and_then(|c| c["namespace"].as_str())
                    .is_some_and(names);
                let registry = r.service_registries.iter().any(|s| {
                    s["registryArn"]
                        .as_str()
                        .is_some_and(|a| a.split('/').any(&names))
                });
                sc || registry
            })
            .map(|r| r.service_arn)
            .collect();
        let (page, next) = paginate(&arns, i.next_token.as_deref(), i.max_results)?;
        Ok(with_token(json!({"serviceArns": page}), next))
    }

    fn record_placement_failure(
        &self,
        key: &str,
        deployment_id: &str,
        reason: &str,
        now: u64,
    ) -> Result<(), EcsError> {
        for _ in 0..CAS_RETRIES {
            let Some((mut rec, rev)) = self.get::<ServiceRecord>(key)? else {
                return Ok(());
            };
            let (state, _) =
                ctl::placement_failed(&rec.spec, &rec.state, deployment_id, reason, now);
            rec.state = state;
            match self.store.txn(
                &[Compare::at(key, rev)],
                vec![Op::Put {
                    key: key.to_string(),
                    value: encode(&rec),
                }],
            ) {
                Ok(_) => return Ok(()),
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// What stopping one service task undoes (see [`Ecs::unlink_plan`]).
#[derive(Debug, Clone)]
pub(crate) struct Unlink {
    service: String,
    task_id: String,
    /// (target group, address, port).
    targets: Vec<(String, String, u16)>,
    registries: Vec<String>,
    pub(crate) drain_until: Option<f64>,
}

/// Warnings of the links, at most one a minute per service, link and kind: the
/// controller retries every second, and a target group deleted under a service would
/// otherwise log the same line every round.
#[derive(Debug, Default)]
pub(crate) struct LinkLog {
    last: std::sync::Mutex<HashMap<String, u64>>,
}

impl LinkLog {
    const EVERY_MS: u64 = 60_000;

    /// Whether a warning with `key` may be logged now.
    fn allow(&self, key: &str, now_ms: u64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(key) {
            Some(t) if now_ms.saturating_sub(*t) < Self::EVERY_MS => false,
            _ => {
                last.insert(key.to_string(), now_ms);
                true
            }
        }
    }
}

/// One round of a service's links: its serving tasks registered with its target groups
/// and registries, the others removed (errors are logged; the next round retries).
/// `reread` lists the service's tasks again: it is called after the registrations are
/// read, so that a task whose target a StopTask removed is seen stopping (StopTask marks
/// the task before it deregisters it) and not registered again.
fn sync_links(
    links: &dyn ServiceLinks,
    rec: &ServiceRecord,
    hosts: &HostIds,
    log: &LinkLog,
    reread: impl Fn() -> Vec<TaskRecord>,
) {
    let now = now_ms();
    let warn =
        |link: &str, what: &str| log.allow(&format!("{}|{link}|{what}", rec.service_name), now);
    let lbs = lb_links(rec);
    let regs = registry_links(rec);
    if lbs.is_empty() && regs.is_empty() {
        return;
    }
    for l in &lbs {
        let tg = &l.target_group;
        let registered = match links.targets(tg) {
            Ok(r) => r,
            Err(e) => {
                if warn(tg, "cannot read the target group") {
                    tracing::warn!(service = %rec.service_name, target_group = %tg, error = %e, "cannot read the target group (again at most once a minute)");
                }
                continue;
            }
        };
        let tasks: Vec<TargetTask> = reread().iter().map(|t| target_task(t, l, hosts)).collect();
        let p = crate::links::plan(&tasks, &registered);
        if !p.register.is_empty() {
            if let Err(e) = links.register_targets(tg, &p.register) {
                if warn(tg, "cannot register targets") {
                    tracing::warn!(service = %rec.service_name, target_group = %tg, error = %e, "cannot register targets (again at most once a minute)");
                }
            }
        }
        if !p.deregister.is_empty() {
            if let Err(e) = links.deregister_targets(tg, &p.deregister) {
                if warn(tg, "cannot deregister targets") {
                    tracing::warn!(service = %rec.service_name, target_group = %tg, error = %e, "cannot deregister targets (again at most once a minute)");
                }
            }
        }
    }
    for r in &regs {
        let registry = &r.arn;
        let registered = match links.instances(registry) {
            Ok(r) => r,
            Err(e) => {
                if warn(registry, "cannot read the registry") {
                    tracing::warn!(service = %rec.service_name, %registry, error = %e, "cannot read the registry (again at most once a minute)");
                }
                continue;
            }
        };
        let tasks: Vec<LinkTask> = reread().iter().map(|t| link_task(t, r, hosts)).collect();
        let (put, gone) = crate::links::plan_instances(&tasks, &registered);
        for (id, addr, port, healthy) in put {
            if let Err(e) = links.register_instance(registry, &id, &addr, port, healthy) {
                if warn(registry, "cannot register an instance") {
                    tracing::warn!(service = %rec.service_name, %registry, error = %e, "cannot register an instance (again at most once a minute)");
                }
            }
        }
        for id in gone {
            if let Err(e) = links.deregister_instance(registry, &id) {
                if warn(registry, "cannot deregister an instance") {
                    tracing::warn!(service = %rec.service_name, %registry, error = %e, "cannot deregister an instance (again at most once a minute)");
                }
            }
        }
    }
}

/// A service task's target health across the service's target groups: healthy when
/// every target is, unhealthy when one is, pending otherwise (`None`: no load balancer,
/// or no address yet).
fn targets_health(
    links: &dyn ServiceLinks,
    rec: &ServiceRecord,
    hosts: &HostIds,
    t: &TaskRecord,
) -> Option<TargetHealth> {
    let lbs = lb_links(rec);
    if lbs.is_empty() {
        return None;
    }
    let mut all = TargetHealth::Healthy;
    for l in &lbs {
        let (id, port) = task_target(t, l, hosts)?;
        match links.target_health(&l.target_group, &id, port) {
            Some(true) => {}
            Some(false) => return Some(TargetHealth::Unhealthy),
            None => all = TargetHealth::Pending,
        }
    }
    Some(all)
}

impl Ecs {
    /// What stopping a service task must undo: its registrations, and until when its
    /// targets drain (the agent stops its containers only then; `None`: nothing drains).
    /// The caller marks the task STOPPED first and then calls [`Ecs::unlink`]: a
    /// controller round that sees the target gone then also sees the task stopping, and
    /// never registers it again.
    pub(crate) fn unlink_plan(&self, t: &TaskRecord) -> Option<Unlink> {
        let links = self.links()?;
        let name = t.task.group.strip_prefix("service:")?;
        let cluster = t.task.cluster_arn.rsplit('/').next()?;
        let (rec, _) = self
            .get::<ServiceRecord>(&service_key(cluster, name))
            .ok()
            .flatten()?;
        let hosts = if t.network_mode == "awsvpc" {
            HostIds::new()
        } else {
            host_ids(
                &self.cluster_instances(cluster).unwrap_or_default(),
                self.builtin_host(),
            )
        };
        let targets: Vec<(String, String, u16)> = if t.task.last_status == "RUNNING" {
            lb_links(&rec)
                .iter()
                .filter_map(|l| {
                    let (id, port) = task_target(t, l, &hosts)?;
                    Some((l.target_group.clone(), id, port))
                })
                .collect()
        } else {
            vec![]
        };
        let delay = targets
            .iter()
            .filter_map(|(tg, _, _)| links.target_group(tg).ok())
            .map(|i| i.deregistration_delay_secs)
            .max()
            .unwrap_or(0);
        Some(Unlink {
            service: name.to_string(),
            task_id: task_id(t),
            targets,
            registries: registry_links(&rec).into_iter().map(|r| r.arn).collect(),
            drain_until: (delay > 0).then(|| crate::ops::now() + f64::from(delay)),
        })
    }

    /// Carries out an [`Ecs::unlink_plan`] (errors logged; the next controller round
    /// removes what is left).
    pub(crate) fn unlink(&self, u: &Unlink) {
        let Some(links) = self.links() else { return };
        for registry in &u.registries {
            if let Err(e) = links.deregister_instance(registry, &u.task_id) {
                tracing::warn!(service = %u.service, %registry, error = %e, "cannot deregister an instance");
            }
        }
        for (tg, addr, port) in &u.targets {
            if let Err(e) = links.deregister_targets(tg, &[(addr.clone(), *port)]) {
                tracing::warn!(service = %u.service, target_group = %tg, error = %e, "cannot deregister a target");
            }
        }
    }

    /// CreateService's checks of `loadBalancers` and `serviceRegistries` against the
    /// task definition and (when the server has them) the load balancers and registries.
    pub(crate) fn check_links(
        &self,
        cluster: &str,
        load_balancers: &[Value],
        registries: &[Value],
        definition: &Value,
    ) -> Result<(), EcsError> {
        let bad = |m: String| EcsError::InvalidParameter(m);
        let links = self.links();
        let network_mode = definition["networkMode"].as_str().unwrap_or("bridge");
        for v in load_balancers {
            let l: LoadBalancerLink = serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("loadBalancers: {e}")))?;
            if l.load_balancer_name.is_some() && l.target_group_arn.is_none() {
                return Err(bad("berth has Application Load Balancers only: give targetGroupArn, not loadBalancerName.".into()));
            }
            let tg = l
                .target_group_arn
                .ok_or_else(|| bad("loadBalancers: targetGroupArn is required.".into()))?;
            let (Some(name), Some(port)) = (l.container_name, l.container_port) else {
                return Err(bad(
                    "loadBalancers: containerName and containerPort are required.".into(),
                ));
            };
            if !crate::links::container_maps_port(definition, &name, port) {
                return Err(bad(format!(
                    "The container {name} did not have a container port {port} defined."
                )));
            }
            if network_mode == "none" {
                return Err(bad(
                    "A task definition with network mode none has no ports: it cannot be used with a load balancer.".into(),
                ));
            }
            // Bridge and host tasks are registered as their container instance (the
            // built-in node, on a cluster without any).
            if network_mode != "awsvpc" && !self.has_instance_for(cluster)? {
                return Err(bad(format!(
                    "Cluster {cluster} has no container instances: {network_mode}-mode tasks behind a load balancer are registered by instance and host port. Join hosts (berth agent, or berth server --hosts N) or use network mode awsvpc."
                )));
            }
            if let Some(links) = &links {
                let info = links
                    .target_group(&tg)
                    .map_err(|e| bad(format!("Target group {tg}: {e}")))?;
                if !info.has_load_balancer {
                    return Err(bad(format!(
                        "The target group with targetGroupArn {tg} does not have an associated load balancer."
                    )));
                }
                // awsvpc tasks are registered by address, bridge and host ones by
                // instance and host port.
                let want = if network_mode == "awsvpc" {
                    "ip"
                } else {
                    "instance"
                };
                if info.target_type != want {
                    return Err(bad(format!(
                        "The provided target group {tg} has target type {}, which is incompatible with the {network_mode} network mode specified in the task definition.",
                        info.target_type
                    )));
                }
            }
        }
        for v in registries {
            let r: RegistryLink = serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("serviceRegistries: {e}")))?;
            let arn = r
                .registry_arn
                .ok_or_else(|| bad("serviceRegistries: registryArn is required.".into()))?;
            let by_instance = network_mode == "bridge" || network_mode == "host";
            if by_instance {
                // ECS's rule: the instance's address is shared, the host port tells
                // the tasks apart.
                let (Some(name), Some(port)) = (&r.container_name, r.container_port) else {
                    return Err(bad(format!(
                        "When specifying '{network_mode}' for networkMode, values for 'containerName' and 'containerPort' must be specified from the task definition."
                    )));
                };
                if !crate::links::container_maps_port(definition, name, port) {
                    return Err(bad(format!(
                        "The container {name} did not have a container port {port} defined."
                    )));
                }
                if !self.has_instance_for(cluster)? {
                    return Err(bad(format!(
                        "Cluster {cluster} has no container instances: {network_mode}-mode tasks are registered in Cloud Map by their instance's address and host port. Join hosts (berth agent, or berth server --hosts N) or use network mode awsvpc."
                    )));
                }
            } else if network_mode == "none" {
                return Err(bad(
                    "A task definition with network mode none has no address: it cannot be used with service discovery.".into(),
                ));
            }
            if let Some(links) = &links {
                let records = links
                    .registry(&arn)
                    .map_err(|e| bad(format!("Service registry {arn}: {e}")))?;
                let has = |t: &str| records.iter().any(|r| r == t);
                if by_instance && has("A") {
                    return Err(bad(format!(
                        "The Cloud Map service {arn} has an A record: tasks in {network_mode} network mode share their container instance's address, so only SRV records (address and host port) tell them apart. Use a Cloud Map service with SRV records only, or network mode awsvpc."
                    )));
                }
                if !by_instance
                    && has("SRV")
                    && r.port.is_none()
                    && (r.container_name.is_none() || r.container_port.is_none())
                {
                    return Err(bad(format!(
                        "The Cloud Map service {arn} has an SRV record, which needs a port: give serviceRegistries port, or containerName and containerPort."
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LinkLog;

    /// A warning is let through once a minute per key; other keys are not held back.
    #[test]
    fn link_warnings_once_a_minute() {
        let log = LinkLog::default();
        assert!(log.allow("web|tg|read", 1_000));
        assert!(!log.allow("web|tg|read", 2_000));
        assert!(log.allow("web|tg|register", 2_000));
        assert!(!log.allow("web|tg|read", 60_999));
        assert!(log.allow("web|tg|read", 61_000));
    }
}
