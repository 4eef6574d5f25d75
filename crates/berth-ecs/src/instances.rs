//! Container instances: the record kept per registered host, how it is addressed
//! (id or ARN), how it renders as ECS's `ContainerInstance` shape, and the pure
//! decision of which instances have lost their agent ([`lost_instances`]).
//!
//! An instance registers either through its agent ([`crate::agent::InstanceInfo`],
//! `agentConnected` true) or through the API (`RegisterContainerInstance`, no agent:
//! tasks placed on it stay PROVISIONING, which is what placement tests want). Tasks on
//! an instance carry its ARN as their agent identity (`TaskRecord.agent`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use berth_state::{Compare, Op, StateError};

use crate::ops::{
    arn, cluster_key, cluster_name, encode, random_hex, ClusterRecord, Tag, TaskRecord,
    CAS_RETRIES, DEFAULT_CLUSTER,
};
use crate::{validate, Context, Ecs, EcsError};

/// ECS's default reserved host ports: SSH, the Docker daemon and the ECS agent.
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];
/// The attributes ECS sets itself; callers may not put or delete them.
pub(crate) const ECS_ATTR_PREFIXES: [&str; 2] = ["ecs.", "com.amazonaws.ecs."];

pub(crate) fn instance_key(cluster: &str, id: &str) -> String {
    format!("/ecs/instances/{cluster}/{id}")
}

/// The index from an agent's stable id to its instance id, per cluster.
pub(crate) fn agent_index_key(cluster: &str, agent_id: &str) -> String {
    format!("/ecs/instance-agents/{cluster}/{agent_id}")
}

/// A container instance as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRecord {
    /// 32 hex chars.
    pub id: String,
    pub arn: String,
    pub cluster: String,
    pub cluster_arn: String,
    /// The registering agent's stable id; `None` for instances registered through the API.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// What DescribeContainerInstances shows as `ec2InstanceId` (`i-…`): the id a
    /// target group of target type `instance` names the host by.
    pub ec2_instance_id: String,
    /// The host's address as the server reaches it (the agent's `--address`, else
    /// the address its stream came from); `None` for instances registered through
    /// the API.
    #[serde(default)]
    pub address: Option<String>,
    /// ACTIVE or DRAINING.
    pub status: String,
    #[serde(default)]
    pub status_reason: Option<String>,
    pub agent_connected: bool,
    /// Epoch seconds.
    pub registered_at: f64,
    /// Epoch seconds of the last heartbeat (or registration) of the agent.
    #[serde(default)]
    pub last_heartbeat: Option<f64>,
    /// CPU units (1024 per core).
    pub cpu: u32,
    /// MiB.
    pub memory_mib: u32,
    pub reserved_ports: Vec<u16>,
    #[serde(default)]
    pub reserved_udp_ports: Vec<u16>,
    pub attributes: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub version_info: Value,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Bumped on every change (ECS's `version`).
    pub version: u64,
}

impl InstanceRecord {
    pub(crate) fn zone(&self) -> &str {
        self.attributes
            .get(berth_scheduler::ATTR_AVAILABILITY_ZONE)
            .and_then(|v| v.as_deref())
            .unwrap_or("")
    }

    pub(crate) fn is_live(&self) -> bool {
        matches!(self.status.as_str(), "ACTIVE" | "DRAINING")
    }
}

/// ECS's limits on attributes ("Amazon ECS container instance attributes").
pub(crate) const MAX_ATTR_NAME: usize = 128;
pub(crate) const MAX_ATTR_VALUE: usize = 128;
/// At most this many custom attributes per container instance.
pub(crate) const MAX_CUSTOM_ATTRS: usize = 10;

/// Checks an attribute's name and value against ECS's character rules.
pub(crate) fn validate_attribute(name: &str, value: Option<&str>) -> Result<(), EcsError> {
    let name_ok = !name.is_empty()
        && name.len() <= MAX_ATTR_NAME
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if !name_ok {
        return Err(EcsError::InvalidParameter(format!(
            "Invalid attribute name '{name}': up to {MAX_ATTR_NAME} letters (uppercase and lowercase), numbers, hyphens, underscores, periods and forward slashes, starting with a letter."
        )));
    }
    if let Some(v) = value {
        let value_ok = !v.is_empty()
            && v.len() <= MAX_ATTR_VALUE
            && v.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'-' | b'.' | b'/' | b'@' | b':' | b' ')
            })
            && !v.starts_with(' ')
            && !v.ends_with(' ');
        if !value_ok {
            return Err(EcsError::InvalidParameter(format!(
                "Invalid value for attribute '{name}': up to {MAX_ATTR_VALUE} letters, numbers, hyphens, underscores, periods, at signs, forward slashes, colons and inner spaces."
            )));
        }
    }
    Ok(())
}

/// Whether ECS sets the attribute itself (callers may not put or delete it).
pub(crate) fn is_ecs_attribute(name: &str) -> bool {
    ECS_ATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The attributes ECS sets on every Linux instance berth registers.
pub(crate) fn ecs_attributes(zone: &str, instance_type: &str) -> Vec<(String, Option<String>)> {
    vec![
        (
            berth_scheduler::ATTR_AVAILABILITY_ZONE.to_string(),
            Some(zone.to_string()),
        ),
        (
            berth_scheduler::ATTR_INSTANCE_TYPE.to_string(),
            Some(instance_type.to_string()),
        ),
        (
            berth_scheduler::ATTR_OS_TYPE.to_string(),
            Some("linux".into()),
        ),
        ("ecs.cpu-architecture".to_string(), Some("x86_64".into())),
    ]
}

/// Who an instance is, handed to the function that builds its record.
#[derive(Debug, Clone)]
pub(crate) struct Ident {
    pub id: String,
    pub arn: String,
    pub cluster: String,
    pub cluster_arn: String,
}

impl Ident {
    /// An EC2-style instance id derived from the container instance id.
    pub(crate) fn ec2_instance_id(&self) -> String {
        format!("i-{}", &self.id[..17.min(self.id.len())])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentIndex {
    id: String,
}

impl Ecs {
    /// Creates or rewrites an instance record in one compare-and-swap transaction with
    /// its cluster (`default` is created on first use) and, for an agent, its index
    /// entry (so one agent id always maps to one instance). `existing` names an instance
    /// that must exist already (re-registration through the API by ARN).
    pub(crate) fn write_instance(
        &self,
        cluster: &str,
        agent_id: Option<&str>,
        existing: Option<&str>,
        ctx: &Context,
        build: impl Fn(Option<&InstanceRecord>, &Ident) -> InstanceRecord,
    ) -> Result<InstanceRecord, EcsError> {
        let cname = cluster_name(cluster);
        if !validate::valid_name(&cname) {
            return Err(EcsError::ClusterNotFound);
        }
        let ckey = cluster_key(&cname);
        for _ in 0..CAS_RETRIES {
            let mut compares = vec![];
            let mut ops = vec![];
            let cluster_arn = match self.get::<ClusterRecord>(&ckey)? {
                Some((c, rev)) => {
                    compares.push(Compare::at(&ckey, rev));
                    c.cluster_arn
                }
                None if cname == DEFAULT_CLUSTER => {
                    let c = Self::new_cluster(&cname, ctx);
                    compares.push(Compare::absent(&ckey));
                    ops.push(Op::Put {
                        key: ckey.clone(),
                        value: encode(&c),
                    });
                    c.cluster_arn
                }
                None => return Err(EcsError::ClusterNotFound),
            };
            let mut id = existing.map(String::from);
            if let Some(agent) = agent_id {
                let ikey = agent_index_key(&cname, agent);
                match self.get::<AgentIndex>(&ikey)? {
                    Some((ix, rev)) => {
                        compares.push(Compare::at(&ikey, rev));
                        id.get_or_insert(ix.id);
                    }
                    None => {
                        compares.push(Compare::absent(&ikey));
                        let new_id = match &id {
                            Some(i) => i.clone(),
                            None => random_hex(16)?,
                        };
                        ops.push(Op::Put {
                            key: ikey,
                            value: encode(&AgentIndex { id: new_id.clone() }),
                        });
                        id = Some(new_id);
                    }
                }
            }
            let id = match id {
                Some(i) => i,
                None => random_hex(16)?,
            };
            let key = instance_key(&cname, &id);
            let old = match self.get::<InstanceRecord>(&key)? {
                Some((r, rev)) => {
                    compares.push(Compare::at(&key, rev));
                    Some(r)
                }
                None if existing.is_some() => {
                    return Err(EcsError::InvalidParameter(format!(
                        "Container instance {id} not found in cluster {cname}."
                    )))
                }
                None => {
                    compares.push(Compare::absent(&key));
                    None
                }
            };
            let ident = Ident {
                arn: arn(ctx, &format!("container-instance/{cname}/{id}")),
                id,
                cluster: cname.clone(),
                cluster_arn,
            };
            let rec = build(old.as_ref(), &ident);
            ops.push(Op::Put {
                key,
                value: encode(&rec),
            });
            match self.store.txn(&compares, ops) {
                Ok(_) => {
                    self.notify();
                    return Ok(rec);
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EcsError::Server(
            "the container instance kept changing; retry".into(),
        ))
    }
}

/// `(cluster named in the ARN, instance id)` from an id or a container instance ARN
/// (`container-instance/<cluster>/<id>`, or the old `container-instance/<id>`); `None`
/// when the id cannot be one berth issued.
pub(crate) fn instance_ref(s: &str) -> Option<(Option<String>, String)> {
    let (cluster, id) = match s.split_once(":container-instance/") {
        Some((prefix, rest)) if prefix.starts_with("arn:") => match rest.split_once('/') {
            Some((c, id)) => (Some(c.to_string()), id.to_string()),
            None => (None, rest.to_string()),
        },
        _ => (None, s.to_string()),
    };
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((cluster, id))
}

/// What a task reserves for placement: task-level cpu/memory when set, otherwise the
/// sum over its containers (memory: `memory`, else `memoryReservation`); its static
/// host ports by protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskNeeds {
    pub cpu: u32,
    pub memory: u32,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
}

pub(crate) fn task_needs(definition: &Value) -> TaskNeeds {
    let num = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
    };
    let cds: &[Value] = definition["containerDefinitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut n = TaskNeeds {
        cpu: num(&definition["cpu"])
            .unwrap_or_else(|| cds.iter().filter_map(|c| num(&c["cpu"])).sum()),
        memory: num(&definition["memory"]).unwrap_or_else(|| {
            cds.iter()
                .filter_map(|c| num(&c["memory"]).or_else(|| num(&c["memoryReservation"])))
                .sum()
        }),
        ..TaskNeeds::default()
    };
    // awsvpc tasks get their own network namespace: no host port is taken.
    if definition["networkMode"].as_str() != Some("awsvpc") {
        for pm in cds
            .iter()
            .flat_map(|c| c["portMappings"].as_array().into_iter().flatten())
        {
            let host = pm["hostPort"]
                .as_u64()
                .or_else(|| {
                    // host mode: the container port is the host port.
                    (definition["networkMode"].as_str() == Some("host"))
                        .then(|| pm["containerPort"].as_u64())
                        .flatten()
                })
                .unwrap_or(0);
            if host == 0 || host > u64::from(u16::MAX) {
                continue;
            }
            match pm["protocol"].as_str() {
                Some("udp") => n.udp_ports.push(host as u16),
                _ => n.tcp_ports.push(host as u16),
            }
        }
    }
    n
}

/// What runs on an instance: the needs of its non-STOPPED tasks, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub total: TaskNeeds,
    pub running: usize,
    pub pending: usize,
}

pub(crate) fn usage<'a>(tasks: impl IntoIterator<Item = &'a TaskRecord>) -> Usage {
    let mut u = Usage::default();
    for t in tasks {
        if t.task.last_status == "STOPPED" {
            continue;
        }
        let n = task_needs(&t.definition);
        u.total.cpu = u.total.cpu.saturating_add(n.cpu);
        u.total.memory = u.total.memory.saturating_add(n.memory);
        u.total.tcp_ports.extend(n.tcp_ports);
        u.total.udp_ports.extend(n.udp_ports);
        if t.task.last_status == "RUNNING" {
            u.running += 1;
        } else {
            u.pending += 1;
        }
    }
    u
}

fn resources(cpu: i64, memory: i64, tcp: &[u16], udp: &[u16]) -> Value {
    let ports = |p: &[u16]| {
        let mut v: Vec<String> = p.iter().map(u16::to_string).collect();
        v.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
        v.dedup();
        v
    };
    json!([
        {"name": "CPU", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": memory},
        {"name": "PORTS", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": ports(tcp)},
        {"name": "PORTS_UDP", "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": ports(udp)},
    ])
}

/// ECS's `Attribute` list of an instance.
pub(crate) fn render_attributes(attrs: &BTreeMap<String, Option<String>>) -> Vec<Value> {
    attrs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => json!({"name": k, "value": v}),
            None => json!({"name": k}),
        })
        .collect()
}

/// ECS's `ContainerInstance` shape, with the usage of the tasks on it.
pub(crate) fn render_instance(r: &InstanceRecord, u: &Usage, include_tags: bool) -> Value {
    let mut tcp_taken = r.reserved_ports.clone();
    tcp_taken.extend(&u.total.tcp_ports);
    let mut udp_taken = r.reserved_udp_ports.clone();
    udp_taken.extend(&u.total.udp_ports);
    let mut v = json!({
        "containerInstanceArn": r.arn,
        "ec2InstanceId": r.ec2_instance_id,
        "version": r.version,
        "versionInfo": r.version_info,
        "registeredResources": resources(r.cpu.into(), r.memory_mib.into(), &r.reserved_ports, &r.reserved_udp_ports),
        "remainingResources": resources(
            i64::from(r.cpu) - i64::from(u.total.cpu),
            i64::from(r.memory_mib) - i64::from(u.total.memory),
            &tcp_taken,
            &udp_taken,
        ),
        "status": r.status,
        "agentConnected": r.agent_connected,
        "runningTasksCount": u.running,
        "pendingTasksCount": u.pending,
        "attributes": render_attributes(&r.attributes),
        "registeredAt": r.registered_at,
        "attachments": [],
    });
    if let Some(reason) = &r.status_reason {
        v["statusReason"] = json!(reason);
    }
    if include_tags {
        v["tags"] = json!(r.tags);
    }
    v
}

/// An instance whose agent is gone: disconnected, and silent for longer than the
/// timeout. Instances registered through the API (no agent ever) are never lost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lost {
    pub arn: String,
    pub id: String,
    pub zone: String,
    /// Epoch seconds of the last sign of life.
    pub last_seen: f64,
}

/// The instances that have lost their agent at `now` (pure).
pub(crate) fn lost_instances<'a>(
    instances: impl IntoIterator<Item = &'a InstanceRecord>,
    now: f64,
    timeout_secs: f64,
) -> Vec<Lost> {
    instances
        .into_iter()
        .filter(|r| r.is_live() && !r.agent_connected && r.agent_id.is_some())
        .filter_map(|r| {
            let seen = r.last_heartbeat.unwrap_or(r.registered_at);
            (now - seen > timeout_secs).then(|| Lost {
                arn: r.arn.clone(),
                id: r.id.clone(),
                zone: r.zone().to_string(),
                last_seen: seen,
            })
        })
        .collect()
}

/// The `stoppedReason` of a task stopped because its instance's agent is lost.
pub(crate) fn lost_reason(l: &Lost) -> String {
    let zone = if l.zone.is_empty() {
        String::new()
    } else {
        format!(" (zone {})", l.zone)
    };
    format!(
        "Task stopped because the agent of container instance {}{zone} stopped answering at {}",
        l.id,
        berth_sigv4::format_rfc3339(l.last_seen.max(0.0) as u64)
    )
}

pub(crate) mod api;

#[cfg(test)]
mod tests;

/// An ACTIVE instance `id` of cluster `c` in `zone` (1024 CPU units, 2048 MiB).
#[cfg(test)]
pub(crate) fn test_record(
    id: &str,
    zone: &str,
    agent: Option<&str>,
    connected: bool,
) -> InstanceRecord {
    InstanceRecord {
        id: id.into(),
        arn: format!("arn:aws:ecs:r:1:container-instance/c/{id}"),
        cluster: "c".into(),
        cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
        agent_id: agent.map(String::from),
        ec2_instance_id: "i-h".into(),
        address: None,
        status: "ACTIVE".into(),
        status_reason: None,
        agent_connected: connected,
        registered_at: 5.0,
        last_heartbeat: None,
        cpu: 1024,
        memory_mib: 2048,
        reserved_ports: vec![22],
        reserved_udp_ports: vec![],
        attributes: BTreeMap::from([(
            berth_scheduler::ATTR_AVAILABILITY_ZONE.to_string(),
            Some(zone.to_string()),
        )]),
        version_info: json!({}),
        tags: vec![],
        version: 1,
    }
}

#[cfg(test)]
mod pure_tests {
    use super::*;

    fn rec(id: &str, connected: bool, heartbeat: Option<f64>) -> InstanceRecord {
        let mut r = test_record(id, "a", Some("ab"), connected);
        r.registered_at = 100.0;
        r.last_heartbeat = heartbeat;
        r
    }

    /// Only disconnected agents silent past the timeout are lost; API-registered
    /// instances (no agent) and DRAINING-but-connected ones are not.
    #[test]
    fn lost_instances_needs_disconnected_and_silent() {
        let mut api = rec("03", false, None);
        api.agent_id = None;
        let mut inactive = rec("04", false, Some(0.0));
        inactive.status = "INACTIVE".into();
        let all = [
            rec("01", true, Some(0.0)),
            rec("02", false, Some(150.0)),
            api,
            inactive,
            rec("05", false, Some(10.0)),
        ];
        let lost = lost_instances(&all, 200.0, 60.0);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].id, "05");
        assert_eq!(
            lost_reason(&lost[0]),
            "Task stopped because the agent of container instance 05 (zone a) stopped answering at 1970-01-01T00:00:10Z"
        );
    }

    /// Task-level sizes win; otherwise containers sum; bridge host ports are taken,
    /// awsvpc ones are not.
    #[test]
    fn task_needs_sums_containers_and_ports() {
        let d = json!({"networkMode": "bridge", "containerDefinitions": [
            {"cpu": 128, "memory": 256, "portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "hostPort": 53, "protocol": "udp"}]},
            {"memoryReservation": 64, "portMappings": [{"containerPort": 81, "hostPort": 0}]}]});
        assert_eq!(
            task_needs(&d),
            TaskNeeds {
                cpu: 128,
                memory: 320,
                tcp_ports: vec![8080],
                udp_ports: vec![53]
            }
        );
        let d = json!({"networkMode": "awsvpc", "cpu": "256", "memory": "512", "containerDefinitions": [
            {"portMappings": [{"containerPort": 80, "hostPort": 80}]}]});
        assert_eq!(
            task_needs(&d),
            TaskNeeds {
                cpu: 256,
                memory: 512,
                ..TaskNeeds::default()
            }
        );
    }

    /// Ids and both ARN forms resolve; anything else is not an instance berth issued.
    #[test]
    fn instance_refs() {
        assert_eq!(instance_ref("ab12"), Some((None, "ab12".into())));
        assert_eq!(
            instance_ref("arn:aws:ecs:r:1:container-instance/c/ab12"),
            Some((Some("c".into()), "ab12".into()))
        );
        assert_eq!(instance_ref("../x"), None);
        assert_eq!(instance_ref(""), None);
    }
}
