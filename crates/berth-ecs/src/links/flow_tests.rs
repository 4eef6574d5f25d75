//! The links through the API: a service behind a (recording, in-memory) load balancer
//! and registry registers its RUNNING tasks, drains a stopped task before its agent
//! is told to stop it, and counts target health in its deployment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{ServiceLinks, TargetGroupInfo};
use crate::agent::{ContainerReport, TaskReport};
use crate::ops::tests::setup;

/// Target groups and registries in memory; health set by the test.
#[derive(Default)]
struct Fake {
    targets: Mutex<BTreeMap<String, Vec<(String, u16)>>>,
    deregistered: Mutex<Vec<(String, u16)>>,
    healthy: Mutex<Option<bool>>,
    instances: Mutex<BTreeMap<String, Vec<(String, bool)>>>,
}

const TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
const REG: &str = "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-0123456789abcdef";

impl ServiceLinks for Fake {
    fn target_group(&self, arn: &str) -> Result<TargetGroupInfo, String> {
        (arn == TG)
            .then(|| TargetGroupInfo {
                target_type: "ip".into(),
                deregistration_delay_secs: 30,
                has_load_balancer: true,
            })
            .ok_or_else(|| "not found".to_string())
    }
    fn targets(&self, tg: &str) -> Result<Vec<(String, u16)>, String> {
        Ok(self
            .targets
            .lock()
            .unwrap()
            .get(tg)
            .cloned()
            .unwrap_or_default())
    }
    fn register_targets(&self, tg: &str, t: &[(String, u16)]) -> Result<(), String> {
        self.targets
            .lock()
            .unwrap()
            .entry(tg.into())
            .or_default()
            .extend(t.iter().cloned());
        Ok(())
    }
    fn deregister_targets(&self, tg: &str, t: &[(String, u16)]) -> Result<(), String> {
        self.targets
            .lock()
            .unwrap()
            .entry(tg.into())
            .or_default()
            .retain(|x| !t.contains(x));
        self.deregistered.lock().unwrap().extend(t.iter().cloned());
        Ok(())
    }
    fn target_health(&self, _: &str, _: &str, _: u16) -> Option<bool> {
        *self.healthy.lock().unwrap()
    }
    fn registry(&self, arn: &str) -> Result<Vec<String>, String> {
        (arn == REG)
            .then(|| vec!["A".to_string()])
            .ok_or_else(|| "not found".to_string())
    }
    fn instances(&self, r: &str) -> Result<Vec<(String, bool)>, String> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .get(r)
            .cloned()
            .unwrap_or_default())
    }
    fn register_instance(
        &self,
        r: &str,
        id: &str,
        _: &str,
        _: Option<u16>,
        healthy: bool,
    ) -> Result<(), String> {
        let mut m = self.instances.lock().unwrap();
        let v = m.entry(r.into()).or_default();
        v.retain(|(i, _)| i != id);
        v.push((id.into(), healthy));
        Ok(())
    }
    fn deregister_instance(&self, r: &str, id: &str) -> Result<(), String> {
        self.instances
            .lock()
            .unwrap()
            .entry(r.into())
            .or_default()
            .retain(|(i, _)| i != id);
        Ok(())
    }
}

fn running(ip: &str) -> TaskReport {
    TaskReport {
        last_status: "RUNNING".into(),
        containers: vec![ContainerReport {
            name: "web".into(),
            last_status: "RUNNING".into(),
            exit_code: None,
            reason: None,
            runtime_id: Some("c".into()),
            health_status: None,
            network_bindings: vec![],
        }],
        private_ipv4: Some(ip.into()),
        stop_code: None,
        stopped_reason: None,
        health_status: None,
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopped_at: None,
    }
}

/// RUNNING tasks are registered (targets and instances); a stopped one is deregistered
/// at once, drains 30 s (its agent still told RUNNING), and leaves the registry.
#[test]
fn register_drain_deregister() {
    let t = setup();
    let fake = Arc::new(Fake::default());
    t.ecs.set_links(fake.clone());
    t.register_fargate("web");
    let bad = t.err(
        "CreateService",
        json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 1,
        "loadBalancers": [{"targetGroupArn": TG, "containerName": "web", "containerPort": 8080}]}),
    );
    assert_eq!(bad.0, "InvalidParameterException");
    assert!(
        bad.1.contains("did not have a container port 8080"),
        "{}",
        bad.1
    );
    let bad = t.err("CreateService", json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 1,
        "loadBalancers": [{"targetGroupArn": "arn:nope", "containerName": "web", "containerPort": 80}]}));
    assert!(bad.1.contains("arn:nope"), "{}", bad.1);
    t.ok(
        "CreateService",
        json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 2,
        "loadBalancers": [{"targetGroupArn": TG, "containerName": "web", "containerPort": 80}],
        "serviceRegistries": [{"registryArn": REG}]}),
    );
    t.ecs.reconcile_services().unwrap();
    let tasks = t.ecs.assigned_tasks("builtin");
    assert_eq!(tasks.len(), 2);
    for (i, a) in tasks.iter().enumerate() {
        t.ecs
            .report_task(
                "builtin",
                &a.task_arn,
                running(&format!("10.0.0.{}", i + 2)),
            )
            .unwrap();
    }
    t.ecs.reconcile_services().unwrap();
    let mut regd = fake.targets.lock().unwrap()[TG].clone();
    regd.sort();
    assert_eq!(
        regd,
        vec![("10.0.0.2".to_string(), 80), ("10.0.0.3".to_string(), 80)]
    );
    assert_eq!(fake.instances.lock().unwrap()[REG].len(), 2);

    // Stop one: deregistered now, its agent keeps it RUNNING while it drains.
    let victim = tasks[0].task_arn.clone();
    t.ok("StopTask", json!({"task": victim}));
    assert_eq!(
        *fake.deregistered.lock().unwrap(),
        vec![("10.0.0.2".to_string(), 80)]
    );
    let seen = t.ecs.assigned_tasks("builtin");
    let v = seen.iter().find(|a| a.task_arn == victim).unwrap();
    assert_eq!(v.desired_status, "RUNNING", "still draining");
    let described = t.ok("DescribeTasks", json!({"tasks": [victim]}));
    assert_eq!(described["tasks"][0]["desiredStatus"], "STOPPED");
    let ids: Vec<String> = fake.instances.lock().unwrap()[REG]
        .iter()
        .map(|(i, _)| i.clone())
        .collect();
    assert!(!ids.contains(&victim.rsplit('/').next().unwrap().to_string()));
    // Not re-registered by the next round.
    t.ecs.reconcile_services().unwrap();
    assert!(!fake.targets.lock().unwrap()[TG].contains(&("10.0.0.2".to_string(), 80)));
}

/// Behind a load balancer, target health decides: with unhealthy targets the
/// deployment does not complete; healthy ones complete it.
#[test]
fn target_health_gates_the_deployment() {
    let t = setup();
    let fake = Arc::new(Fake::default());
    t.ecs.set_links(fake.clone());
    t.register_fargate("web");
    t.ok(
        "CreateService",
        json!({"serviceName": "s", "taskDefinition": "web", "desiredCount": 1,
        "loadBalancers": [{"targetGroupArn": TG, "containerName": "web", "containerPort": 80}]}),
    );
    t.ecs.reconcile_services().unwrap();
    let a = t.ecs.assigned_tasks("builtin").remove(0);
    t.ecs
        .report_task("builtin", &a.task_arn, running("10.0.0.9"))
        .unwrap();
    let state = || {
        t.ecs.reconcile_services().unwrap();
        t.ok("DescribeServices", json!({"services": ["s"]}))["services"][0]["deployments"][0]
            ["rolloutState"]
            .as_str()
            .unwrap()
            .to_string()
    };
    *fake.healthy.lock().unwrap() = None;
    assert_eq!(state(), "IN_PROGRESS");
    *fake.healthy.lock().unwrap() = Some(true);
    assert_eq!(state(), "COMPLETED");
}
