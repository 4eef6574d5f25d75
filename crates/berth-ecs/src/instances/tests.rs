//! Container instance tests over the embedded store: agent registration, liveness,
//! and (below) the API operations and placement.

use serde_json::json;

use crate::agent::InstanceInfo;
use crate::instances::{instance_key, InstanceRecord};
use crate::ops::tests::{setup, T};
use crate::ops::{task_key, TaskRecord};

pub(crate) fn info(agent_id: &str, zone: &str) -> InstanceInfo {
    InstanceInfo {
        cluster: "default".into(),
        agent_id: agent_id.into(),
        zone: zone.into(),
        instance_type: "t2.micro".into(),
        cpu: 2048,
        memory_mib: 4096,
        reserved_ports: vec![22, 2375, 2376, 51678, 51679],
        attributes: vec![("stack".into(), Some("prod".into())), ("gpu".into(), None)],
        address: Some("10.0.0.5".into()),
        agent_version: "berth-0.1".into(),
    }
}

impl T {
    pub(crate) fn register_agent(&self, i: &InstanceInfo) -> Result<String, crate::EcsError> {
        self.ecs.register_instance(i, &self.ctx)
    }
    fn instance(&self, arn: &str) -> InstanceRecord {
        let (cluster, id) = match crate::instances::instance_ref(arn) {
            Some((Some(c), id)) => (c, id),
            _ => panic!("not an instance arn: {arn}"),
        };
        self.ecs
            .get::<InstanceRecord>(&instance_key(&cluster, &id))
            .unwrap()
            .expect("instance stored")
            .0
    }
}

/// Registering creates `default`, sets ECS's attributes and the custom ones; the same
/// agent id registering again gets the same instance and keeps DRAINING.
#[test]
fn register_instance_is_idempotent_per_agent() {
    let t = setup();
    let a = t.register_agent(&info("ab01", "us-east-1a")).unwrap();
    assert!(a.starts_with("arn:aws:ecs:us-east-1:123456789012:container-instance/default/"));
    let r = t.instance(&a);
    assert_eq!(r.id.len(), 32);
    assert!(r.agent_connected);
    assert_eq!(r.status, "ACTIVE");
    assert_eq!(r.ec2_instance_id, "10.0.0.5");
    assert_eq!(
        r.attributes["ecs.availability-zone"].as_deref(),
        Some("us-east-1a")
    );
    assert_eq!(
        r.attributes["ecs.instance-type"].as_deref(),
        Some("t2.micro")
    );
    assert_eq!(r.attributes["ecs.os-type"].as_deref(), Some("linux"));
    assert_eq!(r.attributes["stack"].as_deref(), Some("prod"));
    assert_eq!(r.attributes["gpu"], None);
    assert!(t.ok("DescribeClusters", json!({}))["clusters"][0]["clusterName"] == "default");

    let mut r2 = r.clone();
    r2.status = "DRAINING".into();
    t.ecs
        .store
        .put(
            &instance_key("default", &r.id),
            serde_json::to_string(&r2).unwrap(),
        )
        .unwrap();
    let again = t.register_agent(&info("ab01", "us-east-1a")).unwrap();
    assert_eq!(again, a);
    let r3 = t.instance(&a);
    assert_eq!(r3.status, "DRAINING");
    assert_eq!(r3.registered_at, r.registered_at);
    assert!(r3.version > r.version);

    let other = t.register_agent(&info("ab02", "us-east-1b")).unwrap();
    assert_ne!(other, a);
}

/// Bad agent ids and unknown named clusters are refused.
#[test]
fn register_instance_refusals() {
    let t = setup();
    let e = t.register_agent(&info("not-hex", "a")).unwrap_err();
    assert_eq!(e.type_name(), "InvalidParameterException");
    let mut i = info("ab", "a");
    i.cluster = "nope".into();
    let e = t.register_agent(&i).unwrap_err();
    assert_eq!(e.type_name(), "ClusterNotFoundException");
}

/// Heartbeats and stream state land in the record; unknown ARNs are refused.
#[test]
fn heartbeat_and_connection() {
    let t = setup();
    let a = t.register_agent(&info("ab01", "a")).unwrap();
    t.ecs.set_instance_connected(&a, false).unwrap();
    assert!(!t.instance(&a).agent_connected);
    t.ecs.instance_heartbeat(&a).unwrap();
    let r = t.instance(&a);
    assert!(r.agent_connected);
    assert!(r.last_heartbeat.is_some());
    let missing = a.replace(&r.id, "00000000000000000000000000000000");
    assert!(t.ecs.instance_heartbeat(&missing).is_err());
    assert!(t.ecs.set_instance_connected("garbage", true).is_err());
}

/// A lost instance's tasks are stopped with TerminationNotice and a reason naming the
/// instance and zone; a connected instance's are left alone.
#[test]
fn reap_lost_instances_stops_their_tasks() {
    let t = setup();
    let lost = t.register_agent(&info("ab01", "zone-a")).unwrap();
    let live = t.register_agent(&info("ab02", "zone-b")).unwrap();
    t.register_fargate("web");
    let tasks = t.run(json!({"taskDefinition": "web", "count": 2}));
    for (task, inst) in tasks.iter().zip([&lost, &live]) {
        let arn = task["taskArn"].as_str().unwrap();
        let id = arn.rsplit('/').next().unwrap();
        let key = task_key("default", id);
        let (mut rec, _) = t.ecs.get::<TaskRecord>(&key).unwrap().unwrap();
        rec.agent = Some(inst.clone());
        t.ecs
            .store
            .put(&key, serde_json::to_string(&rec).unwrap())
            .unwrap();
    }
    t.ecs.set_instance_connected(&lost, false).unwrap();
    let seen = t.instance(&lost).last_heartbeat.unwrap();
    assert_eq!(t.ecs.reap_lost_instances(seen + 10.0, 60.0).unwrap(), 0);
    assert_eq!(t.ecs.reap_lost_instances(seen + 61.0, 60.0).unwrap(), 1);
    assert_eq!(t.ecs.reap_lost_instances(seen + 120.0, 60.0).unwrap(), 0);
    let d = t.ok(
        "DescribeTasks",
        json!({"tasks": [tasks[0]["taskArn"], tasks[1]["taskArn"]]}),
    );
    let stopped = &d["tasks"][0];
    assert_eq!(stopped["lastStatus"], "STOPPED");
    assert_eq!(stopped["stopCode"], "TerminationNotice");
    assert_eq!(stopped["containers"][0]["lastStatus"], "STOPPED");
    let reason = stopped["stoppedReason"].as_str().unwrap();
    assert!(
        reason.contains("(zone zone-a) stopped answering at "),
        "{reason}"
    );
    assert_eq!(d["tasks"][1]["lastStatus"], "PROVISIONING");
}
