//! A service's links to the rest of the stack: its load balancers' target groups
//! (`loadBalancers`) and its Cloud Map services (`serviceRegistries`).
//!
//! The ECS crate does not know ELB or Cloud Map; the server hands it a
//! [`ServiceLinks`] that does. What ECS does with it, as the ECS developer guide says:
//! - a service task that is RUNNING (and not being stopped) is registered with each of
//!   the service's target groups (`ip` targets: the task's address and the container
//!   port) and each registry (instance id = task id, `AWS_INSTANCE_IPV4`, the port);
//! - a task that is stopped is deregistered first, and its containers get SIGTERM only
//!   once the target group's deregistration delay has passed (requests in flight
//!   finish); a task that stopped by itself is deregistered at once;
//! - the deployment counts a task healthy only when its targets are healthy.
//!
//! [`plan`] is the pure part: what to register and deregister given the tasks and what
//! is registered now.

use std::collections::BTreeSet;

use serde::Deserialize;

/// What a target group looks like to ECS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupInfo {
    /// `ip` or `instance`.
    pub target_type: String,
    /// Seconds a deregistered target drains.
    pub deregistration_delay_secs: u32,
    /// Whether a listener rule forwards to it (ECS requires it to belong to a load balancer).
    pub has_load_balancer: bool,
}

/// The load balancers and service registries, as ECS uses them.
pub trait ServiceLinks: Send + Sync {
    /// The target group, or why it cannot be used.
    fn target_group(&self, arn: &str) -> Result<TargetGroupInfo, String>;
    /// The targets registered with the group and not draining: (address, port).
    fn targets(&self, tg: &str) -> Result<Vec<(String, u16)>, String>;
    fn register_targets(&self, tg: &str, targets: &[(String, u16)]) -> Result<(), String>;
    fn deregister_targets(&self, tg: &str, targets: &[(String, u16)]) -> Result<(), String>;
    /// `Some(true)` healthy, `Some(false)` unhealthy, `None` not known yet.
    fn target_health(&self, tg: &str, address: &str, port: u16) -> Option<bool>;
    /// The Cloud Map service's DNS record types (`A`, `SRV`; none without DNS), or why
    /// it cannot be used.
    fn registry(&self, arn: &str) -> Result<Vec<String>, String>;
    /// The registry's instances: (instance id, healthy).
    fn instances(&self, registry: &str) -> Result<Vec<(String, bool)>, String>;
    fn register_instance(
        &self,
        registry: &str,
        id: &str,
        address: &str,
        port: Option<u16>,
        healthy: bool,
    ) -> Result<(), String>;
    fn deregister_instance(&self, registry: &str, id: &str) -> Result<(), String>;
}

/// A service's `loadBalancers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerLink {
    pub target_group_arn: Option<String>,
    pub load_balancer_name: Option<String>,
    pub container_name: Option<String>,
    pub container_port: Option<u16>,
}

/// A service's `serviceRegistries` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLink {
    pub registry_arn: Option<String>,
    pub port: Option<u16>,
    pub container_name: Option<String>,
    pub container_port: Option<u16>,
}

/// One of the service's tasks as the links see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTask {
    pub id: String,
    /// `AWS_INSTANCE_IPV4`: the task's address (awsvpc) or its instance's (bridge, host).
    pub address: Option<String>,
    /// `AWS_INSTANCE_PORT`, if the registry has one for this task.
    pub port: Option<u16>,
    /// RUNNING and desired RUNNING: it should be registered.
    pub serving: bool,
    /// ECS health: HEALTHY, UNHEALTHY or UNKNOWN.
    pub health: String,
}

/// What one round changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPlan {
    pub register: Vec<(String, u16)>,
    pub deregister: Vec<(String, u16)>,
}

/// A target as a target group names it: (id, port) — an IP address and the container
/// port (awsvpc), or an `ec2InstanceId` and the host port (bridge and host modes).
pub type TargetRef = (String, u16);

/// One of the service's tasks as one of its target groups sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTask {
    /// `None` until the task has an address (awsvpc) or a host port (bridge).
    pub target: Option<TargetRef>,
    /// RUNNING and desired RUNNING: it should be registered.
    pub serving: bool,
}

/// Targets to add and remove for one target group: the serving tasks' targets must be
/// registered; a registered target that belongs to one of the service's tasks that no
/// longer serves is removed. Other targets (put there by hand or by another service)
/// are left alone.
pub fn plan(tasks: &[TargetTask], registered: &[TargetRef]) -> LinkPlan {
    let want: BTreeSet<&TargetRef> = tasks
        .iter()
        .filter(|t| t.serving)
        .filter_map(|t| t.target.as_ref())
        .collect();
    let ours: BTreeSet<&TargetRef> = tasks.iter().filter_map(|t| t.target.as_ref()).collect();
    let have: BTreeSet<&TargetRef> = registered.iter().collect();
    LinkPlan {
        register: want.difference(&have).map(|t| (*t).clone()).collect(),
        deregister: have
            .iter()
            .filter(|t| ours.contains(*t) && !want.contains(*t))
            .map(|t| (*t).clone())
            .collect(),
    }
}

/// The host port a task's container `name` has bound for `container_port` (ECS's
/// `networkBindings` of a bridge- or host-mode task).
pub fn host_port<'a>(
    containers: impl IntoIterator<Item = (&'a str, &'a [serde_json::Value])>,
    name: &str,
    container_port: u16,
) -> Option<u16> {
    containers
        .into_iter()
        .filter(|(n, _)| *n == name)
        .flat_map(|(_, bindings)| bindings)
        .find(|b| {
            b["containerPort"].as_u64() == Some(u64::from(container_port))
                && b["protocol"].as_str().is_none_or(|p| p == "tcp")
        })
        .and_then(|b| b["hostPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

/// An instance to register: (task id, address, port, healthy).
pub type InstancePut = (String, String, Option<u16>, bool);

/// Cloud Map instances to (re)register and remove: every serving task with an address,
/// with its health (ECS's UNHEALTHY → unhealthy, anything else healthy), and no
/// instance of a task id that does not serve.
pub fn plan_instances(
    tasks: &[LinkTask],
    registered: &[(String, bool)],
) -> (Vec<InstancePut>, Vec<String>) {
    let mut put = vec![];
    for t in tasks.iter().filter(|t| t.serving) {
        let Some(addr) = &t.address else { continue };
        let healthy = t.health != "UNHEALTHY";
        if !registered
            .iter()
            .any(|(id, h)| *id == t.id && *h == healthy)
        {
            put.push((t.id.clone(), addr.clone(), t.port, healthy));
        }
    }
    let serving: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.serving)
        .map(|t| t.id.as_str())
        .collect();
    let gone = registered
        .iter()
        .filter(|(id, _)| looks_like_task_id(id) && !serving.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    (put, gone)
}

/// ECS registers a task under its id (32 hex characters).
fn looks_like_task_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a definition's container `name` maps `port` (its portMappings).
pub fn container_maps_port(definition: &serde_json::Value, name: &str, port: u16) -> bool {
    definition["containerDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == name)
        .flat_map(|c| c["portMappings"].as_array().into_iter().flatten())
        .any(|m| m["containerPort"].as_u64() == Some(u64::from(port)))
}

#[cfg(test)]
mod flow_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, addr: &str, serving: bool) -> LinkTask {
        LinkTask {
            id: id.into(),
            address: Some(addr.into()),
            port: None,
            serving,
            health: "HEALTHY".into(),
        }
    }

    fn tt(id: &str, port: u16, serving: bool) -> TargetTask {
        TargetTask {
            target: Some((id.into(), port)),
            serving,
        }
    }

    /// Serving tasks are registered, stopped ones removed, strangers left alone.
    #[test]
    fn targets() {
        let tasks = vec![
            tt("10.0.0.2", 80, true),
            tt("10.0.0.3", 80, false),
            tt("10.0.0.4", 80, true),
            TargetTask {
                target: None,
                serving: true,
            },
        ];
        let registered = vec![
            ("10.0.0.2".to_string(), 80),
            ("10.0.0.3".to_string(), 80),
            ("10.0.0.3".to_string(), 81),
            ("10.9.9.9".to_string(), 80),
        ];
        let p = plan(&tasks, &registered);
        assert_eq!(p.register, vec![("10.0.0.4".to_string(), 80)]);
        assert_eq!(p.deregister, vec![("10.0.0.3".to_string(), 80)]);
        assert_eq!(
            plan(&tasks, &[("10.0.0.2".into(), 80), ("10.0.0.4".into(), 80)]),
            LinkPlan::default()
        );
    }

    /// Bridge mode: tasks on one instance are told apart by their host ports; a new
    /// task given a stopped one's host port keeps the target.
    #[test]
    fn instance_targets() {
        let tasks = vec![
            tt("i-1", 32768, true),
            tt("i-1", 32769, false),
            tt("i-2", 32768, true),
            tt("i-1", 32770, false),
            tt("i-1", 32770, true),
        ];
        let registered = vec![("i-1".to_string(), 32769), ("i-1".to_string(), 32770)];
        let p = plan(&tasks, &registered);
        assert_eq!(
            p.register,
            vec![("i-1".to_string(), 32768), ("i-2".to_string(), 32768)]
        );
        assert_eq!(p.deregister, vec![("i-1".to_string(), 32769)]);
    }

    /// Host ports are read from the named container's tcp bindings.
    #[test]
    fn host_ports() {
        let web = vec![
            serde_json::json!({"containerPort": 80, "hostPort": 32768, "protocol": "udp"}),
            serde_json::json!({"containerPort": 80, "hostPort": 32769, "protocol": "tcp"}),
        ];
        let side = vec![serde_json::json!({"containerPort": 80, "hostPort": 40000})];
        let containers = [("web", web.as_slice()), ("side", side.as_slice())];
        assert_eq!(host_port(containers, "web", 80), Some(32769));
        assert_eq!(host_port(containers, "side", 80), Some(40000));
        assert_eq!(host_port(containers, "web", 81), None);
        assert_eq!(host_port(containers, "nope", 80), None);
    }

    /// Instances follow the serving tasks and their health.
    #[test]
    fn instances() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let mut tasks = vec![t(&a, "10.0.0.2", true), t(&b, "10.0.0.3", false)];
        tasks[0].health = "UNHEALTHY".into();
        let (put, gone) = plan_instances(
            &tasks,
            &[
                (a.clone(), true),
                (b.clone(), true),
                ("manual".into(), true),
            ],
        );
        assert_eq!(put, vec![(a.clone(), "10.0.0.2".into(), None, false)]);
        assert_eq!(gone, vec![b]);
        let (put, _) = plan_instances(&tasks, &[(a, false)]);
        assert!(put.is_empty());
    }

    /// A bridge task's instance carries its host's address and its host port; a task
    /// without them yet is not registered.
    #[test]
    fn instances_with_ports() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let mut tasks = vec![t(&a, "10.214.7.10", true), t(&b, "", true)];
        tasks[0].port = Some(32768);
        tasks[1].address = None;
        let (put, gone) = plan_instances(&tasks, &[]);
        assert_eq!(put, vec![(a, "10.214.7.10".into(), Some(32768), true)]);
        assert!(gone.is_empty());
    }

    /// Port mappings are looked up by container name.
    #[test]
    fn port_mappings() {
        let d = serde_json::json!({"containerDefinitions": [
            {"name": "web", "portMappings": [{"containerPort": 8080}]},
            {"name": "side"}]});
        assert!(container_maps_port(&d, "web", 8080));
        assert!(!container_maps_port(&d, "web", 80));
        assert!(!container_maps_port(&d, "side", 8080));
    }
}
