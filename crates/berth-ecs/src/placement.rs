//! The bridge between the store and the pure scheduler (`berth-scheduler`): the
//! [`ClusterState`] built from container instance and task records, the request a task
//! definition makes, the API's placement strategies and constraints parsed and checked
//! against ECS's limits, and the scheduler's failures rendered as ECS `Failure`s and as
//! the service event ECS writes. Those are pure; [`Ecs::choose_instances`] at the end
//! reads the records and calls [`berth_scheduler::place`], and RunTask (`ops.rs`)
//! writes the tasks it chose in one compare-and-swap transaction.

use std::collections::BTreeSet;

use berth_scheduler::{
    ClusterState, Failure, FailureReason, Instance, InstanceId, InstanceStatus, PlacedTask,
    PlacementConstraint, PlacementStrategy, Resources, TaskRequest,
};
use serde_json::{json, Value};

use berth_state::Revision;

use crate::instances::{instance_ref, task_needs, InstanceRecord};
use crate::ops::TaskRecord;
use crate::{Ecs, EcsError};

/// Where RunTask/StartTask put tasks.
#[derive(Debug)]
pub(crate) enum Target {
    /// The server's built-in agent (FARGATE; EC2 before instances register).
    Builtin,
    /// The cluster's container instances, chosen by the scheduler.
    Place {
        strategies: Vec<PlacementStrategy>,
        constraints: Vec<PlacementConstraint>,
    },
    /// StartTask: one task on each named instance (id or ARN).
    Fixed(Vec<String>),
}

/// The scheduler's view of a cluster: its ACTIVE and DRAINING instances with the
/// non-STOPPED tasks assigned to each. An instance registered through the API (no
/// agent) counts as connected: nothing will ever connect to it, and placing on it is
/// what such an instance is for.
pub(crate) fn cluster_state(
    instances: &[InstanceRecord],
    tasks: &[TaskRecord],
) -> Result<ClusterState, EcsError> {
    let list = instances
        .iter()
        .filter(|r| r.is_live())
        .map(|r| Instance {
            id: InstanceId(r.id.clone()),
            arn: r.arn.clone(),
            attributes: r.attributes.clone().into_iter().collect(),
            registered: Resources {
                cpu_units: r.cpu,
                memory_mib: r.memory_mib,
                ports: r.reserved_ports.iter().copied().collect::<BTreeSet<u16>>(),
            },
            status: if r.status == "DRAINING" {
                InstanceStatus::Draining
            } else {
                InstanceStatus::Active
            },
            connected: r.agent_connected || r.agent_id.is_none(),
            registered_at: r.registered_at as i64,
            running: tasks
                .iter()
                .filter(|t| t.task.last_status != "STOPPED")
                .filter(|t| t.agent.as_deref() == Some(r.arn.as_str()))
                .map(placed_task)
                .collect(),
        })
        .collect();
    ClusterState::new(list).map_err(|e| EcsError::Server(e.to_string()))
}

fn placed_task(t: &TaskRecord) -> PlacedTask {
    let n = task_needs(&t.definition);
    PlacedTask {
        task_definition_family: t.family().to_string(),
        group: t.task.group.clone(),
        service: t.task.group.strip_prefix("service:").map(String::from),
        cpu: n.cpu,
        memory: n.memory,
        host_ports: n.tcp_ports,
    }
}

/// What one task of `definition` asks of an instance. `group` is the task's group
/// (`service:NAME` makes it a service task, which changes the default strategy).
pub(crate) fn task_request(definition: &Value, group: &str) -> TaskRequest {
    let n = task_needs(definition);
    let family = definition["family"].as_str().unwrap_or("");
    let mut req = TaskRequest::new(family, n.cpu, n.memory);
    req.host_ports = n.tcp_ports;
    req.group = group.to_string();
    req.service = group.strip_prefix("service:").map(String::from);
    req.requires_attributes = definition["requiresAttributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let name = a["name"].as_str()?;
            Some((name.to_string(), a["value"].as_str().map(String::from)))
        })
        .collect();
    req
}

/// The API's `placementStrategy` and `placementConstraints` (plus the task definition's
/// own `placementConstraints`), parsed and checked against ECS's limits.
pub(crate) fn parse_placement(
    strategy: &[Value],
    constraints: &[Value],
) -> Result<(Vec<PlacementStrategy>, Vec<PlacementConstraint>), EcsError> {
    let bad = |e: String| EcsError::InvalidParameter(e);
    let strategies = strategy
        .iter()
        .map(|s| {
            PlacementStrategy::from_api(s["type"].as_str().unwrap_or(""), s["field"].as_str())
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let constraints = constraints
        .iter()
        .map(|c| {
            PlacementConstraint::from_api(
                c["type"].as_str().unwrap_or(""),
                c["expression"].as_str(),
            )
            .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    berth_scheduler::check_limits(&strategies, &constraints).map_err(|e| bad(e.to_string()))?;
    Ok((strategies, constraints))
}

/// The instances chosen (with the revisions read) and ECS failures for the rest.
pub(crate) type Chosen = (Vec<(InstanceRecord, Revision)>, Vec<Value>);

/// StartTask names 1 to 10 instances.
pub(crate) const MAX_START_INSTANCES: usize = 10;

impl Ecs {
    /// StartTask's `containerInstances`, checked.
    pub(crate) fn start_task_instances(
        &self,
        cluster: &str,
        refs: &[String],
    ) -> Result<Vec<String>, EcsError> {
        if refs.is_empty() || refs.len() > MAX_START_INSTANCES {
            return Err(EcsError::InvalidParameter(format!(
                "containerInstances must name between 1 and {MAX_START_INSTANCES} container instances."
            )));
        }
        for r in refs {
            match instance_ref(r) {
                Some((Some(c), _)) if c != cluster => {
                    return Err(EcsError::InvalidParameter(format!(
                        "Container instance {r} is not in cluster {cluster}."
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(EcsError::InvalidParameter(format!(
                        "Invalid container instance '{r}': give its id or ARN."
                    )))
                }
            }
        }
        Ok(refs.to_vec())
    }

    /// The instances (with the revisions read) the tasks of `req` go to, and ECS
    /// failures for those that go nowhere; `cluster_arn` names the cluster in failures
    /// that name no instance.
    pub(crate) fn choose_instances(
        &self,
        cluster: &str,
        cluster_arn: &str,
        target: &Target,
        req: &TaskRequest,
        count: u32,
    ) -> Result<Chosen, EcsError> {
        let recs: Vec<(InstanceRecord, Revision)> = self
            .list::<InstanceRecord>(&format!("/ecs/instances/{cluster}/"))?
            .into_iter()
            .map(|(_, r, rev)| (r, rev))
            .collect();
        let tasks: Vec<TaskRecord> = self
            .list::<TaskRecord>(&format!("/ecs/tasks/{cluster}/"))?
            .into_iter()
            .map(|(_, t, _)| t)
            .filter(|t| t.task.last_status != "STOPPED")
            .collect();
        let by_id = |id: &str| recs.iter().find(|(r, _)| r.id == id).cloned();
        let seed = {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b)
                .map_err(|e| EcsError::Server(format!("no randomness: {e}")))?;
            u64::from_le_bytes(b)
        };
        let mut chosen = vec![];
        let mut failures = vec![];
        match target {
            Target::Builtin => {}
            Target::Place {
                strategies,
                constraints,
            } => {
                let live: Vec<InstanceRecord> = recs.iter().map(|(r, _)| r.clone()).collect();
                let mut state = cluster_state(&live, &tasks)?;
                let p =
                    berth_scheduler::place(&mut state, req, count, strategies, constraints, seed);
                chosen.extend(p.placed.iter().filter_map(|id| by_id(&id.0)));
                failures.extend(p.failures.iter().map(|f| render_failure(f, cluster_arn)));
            }
            Target::Fixed(refs) => {
                for r in refs {
                    let found = instance_ref(r).and_then(|(_, id)| by_id(&id));
                    let Some((rec, rev)) = found.filter(|(rec, _)| rec.is_live()) else {
                        failures.push(json!({"arn": r, "reason": "MISSING"}));
                        continue;
                    };
                    let mut state = cluster_state(std::slice::from_ref(&rec), &tasks)?;
                    let p = berth_scheduler::place(&mut state, req, 1, &[], &[], seed);
                    if p.placed.is_empty() {
                        failures.extend(p.failures.iter().map(|f| {
                            let mut v = render_failure(f, cluster_arn);
                            v["arn"] = json!(rec.arn);
                            v
                        }));
                    } else {
                        chosen.push((rec, rev));
                    }
                }
            }
        }
        Ok((chosen, failures))
    }
}

/// A scheduler failure as ECS's `Failure` (an instance ARN, or the cluster's when
/// there is no instance to name).
pub(crate) fn render_failure(f: &Failure, cluster_arn: &str) -> Value {
    let arn = if f.arn.is_empty() {
        cluster_arn
    } else {
        &f.arn
    };
    json!({"arn": arn, "reason": f.reason.as_str(), "detail": f.detail})
}

/// The sentence of ECS's "unable to place a task" service event that says why
/// ("Amazon ECS service event messages").
/// `reason` and `arn` are those of an ECS `Failure`.
pub(crate) fn unplaced_explanation(reason: &str, arn: &str) -> String {
    let id = arn.rsplit('/').next().unwrap_or("");
    let closest = format!("The closest matching container-instance {id}");
    let known = [
        FailureReason::NoContainerInstances,
        FailureReason::Agent,
        FailureReason::MissingAttribute,
        FailureReason::MemberOf,
        FailureReason::DistinctInstance,
        FailureReason::Cpu,
        FailureReason::Memory,
        FailureReason::Ports,
    ];
    let Some(r) = known.into_iter().find(|k| k.as_str() == reason) else {
        return format!("Reason: {reason}.");
    };
    match r {
        FailureReason::NoContainerInstances => format!("Reason: {reason}"),
        FailureReason::Memory => format!("{closest} has insufficient memory available."),
        FailureReason::Cpu => format!("{closest} has insufficient CPU units available."),
        FailureReason::Ports => {
            format!("{closest} is already using a port required by your task.")
        }
        FailureReason::MissingAttribute => {
            format!("{closest} is missing an attribute required by your task.")
        }
        FailureReason::Agent => {
            format!("{closest} encountered error \"AGENT\": its agent is not connected.")
        }
        FailureReason::MemberOf | FailureReason::DistinctInstance => {
            format!("{closest} does not satisfy the placement constraints: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Task;

    fn inst(
        id: &str,
        zone: &str,
        status: &str,
        agent: Option<&str>,
        connected: bool,
    ) -> InstanceRecord {
        let mut r = crate::instances::test_record(id, zone, agent, connected);
        r.status = status.into();
        r
    }

    fn task(agent: &str, status: &str, memory: u32, host_port: u16) -> TaskRecord {
        TaskRecord {
            task: Task {
                last_status: status.into(),
                group: "service:web".into(),
                ..Task::default()
            },
            agent: Some(agent.into()),
            definition: json!({"family": "web", "networkMode": "bridge", "containerDefinitions": [
                {"cpu": 100, "memory": memory, "portMappings": [{"containerPort": 80, "hostPort": host_port}]}]}),
            network_mode: "bridge".into(),
            reported: false,
            drain_until: None,
        }
    }

    /// Live instances only; their non-STOPPED tasks charge cpu, memory and host ports;
    /// API-registered instances count as connected, disconnected agents do not.
    #[test]
    fn cluster_state_from_records() {
        let a = inst("a1", "za", "ACTIVE", None, false);
        let b = inst("b2", "zb", "DRAINING", Some("ff"), false);
        let gone = inst("c3", "zc", "INACTIVE", None, false);
        let tasks = [
            task(&a.arn, "RUNNING", 512, 8080),
            task(&a.arn, "STOPPED", 512, 9090),
            task(&b.arn, "PROVISIONING", 256, 0),
        ];
        let s = cluster_state(&[a.clone(), b.clone(), gone], &tasks).unwrap();
        assert_eq!(s.instances().len(), 2);
        let ra = s.remaining(&InstanceId("a1".into())).unwrap();
        assert_eq!((ra.cpu_units, ra.memory_mib), (924, 1536));
        assert_eq!(ra.ports.iter().copied().collect::<Vec<_>>(), vec![22, 8080]);
        let ib = s.instance(&InstanceId("b2".into())).unwrap();
        assert_eq!(ib.status, InstanceStatus::Draining);
        assert!(!ib.connected);
        assert!(s.instance(&InstanceId("a1".into())).unwrap().connected);
        assert_eq!(ib.running[0].service.as_deref(), Some("web"));
    }

    /// A definition's needs, group, service and requiresAttributes become the request.
    #[test]
    fn request_from_definition() {
        let d = json!({"family": "web", "memory": "512", "cpu": "256",
            "requiresAttributes": [{"name": "gpu"}, {"name": "ecs.os-type", "value": "linux"}],
            "containerDefinitions": []});
        let r = task_request(&d, "service:api");
        assert_eq!((r.cpu, r.memory), (256, 512));
        assert_eq!(r.service.as_deref(), Some("api"));
        assert_eq!(
            r.requires_attributes,
            vec![
                ("gpu".into(), None),
                ("ecs.os-type".into(), Some("linux".into()))
            ]
        );
    }

    /// Bad strategies and constraints are InvalidParameterException with the
    /// scheduler's message; good ones parse.
    #[test]
    fn placement_parsing() {
        let (s, c) = parse_placement(
            &[
                json!({"type": "binpack", "field": "memory"}),
                json!({"type": "spread", "field": "attribute:ecs.availability-zone"}),
            ],
            &[
                json!({"type": "distinctInstance"}),
                json!({"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}),
            ],
        )
        .unwrap();
        assert_eq!((s.len(), c.len()), (2, 2));
        for (s, c) in [
            (vec![json!({"type": "binpack", "field": "disk"})], vec![]),
            (vec![json!({"type": "sideways"})], vec![]),
            (
                vec![],
                vec![json!({"type": "memberOf", "expression": "attribute:a =="})],
            ),
            (vec![], vec![json!({"type": "memberOf"})]),
        ] {
            let e = parse_placement(&s, &c).unwrap_err();
            assert_eq!(e.type_name(), "InvalidParameterException", "{s:?} {c:?}");
        }
    }

    /// The service event names the closest instance in ECS's words.
    #[test]
    fn explanations() {
        let f = Failure {
            arn: "arn:aws:ecs:r:1:container-instance/c/abc".into(),
            reason: FailureReason::Memory,
            detail: String::new(),
        };
        assert_eq!(
            unplaced_explanation(f.reason.as_str(), &f.arn),
            "The closest matching container-instance abc has insufficient memory available."
        );
        let f = Failure {
            arn: String::new(),
            reason: FailureReason::NoContainerInstances,
            detail: String::new(),
        };
        assert_eq!(
            unplaced_explanation(f.reason.as_str(), &f.arn),
            "Reason: No Container Instances were found in your cluster."
        );
        assert_eq!(render_failure(&f, "arn:c")["arn"], "arn:c");
    }
}
