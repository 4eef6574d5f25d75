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
    assert!(r.ec2_instance_id.starts_with("i-") && r.id.starts_with(&r.ec2_instance_id[2..]));
    assert_eq!(r.address.as_deref(), Some("10.0.0.5"));
    let addresses = t.ecs.instance_addresses();
    assert_eq!(
        addresses.get(&r.ec2_instance_id).map(String::as_str),
        Some("10.0.0.5")
    );
    assert_eq!(addresses.len(), 1);
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

fn api_instance(t: &T, zone: &str, itype: &str, memory: u32) -> String {
    let doc = json!({"availabilityZone": zone, "instanceType": itype}).to_string();
    t.ok(
        "RegisterContainerInstance",
        json!({"instanceIdentityDocument": doc, "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory}]}),
    )["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ec2_def(t: &T, memory: u32) {
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "job", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": memory}]}),
    );
}

/// RunTask EC2 goes through the scheduler: binpack on memory fills the fuller instance
/// first, tasks show their instance and zone, and what does not fit is a RESOURCE:MEMORY
/// failure naming an instance; remaining resources reflect the tasks.
#[test]
fn run_task_places_on_registered_instances() {
    let t = setup();
    let small = api_instance(&t, "za", "t2.micro", 1024);
    let big = api_instance(&t, "zb", "m5.large", 4096);
    ec2_def(&t, 512);
    let out = t.ok(
        "RunTask",
        json!({"taskDefinition": "job", "count": 3, "launchType": "EC2",
               "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
    );
    let on: Vec<&str> = out["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().unwrap())
        .collect();
    assert_eq!(on, [small.as_str(), small.as_str(), big.as_str()]);
    assert_eq!(out["tasks"][0]["availabilityZone"], "za");
    let d = t.ok(
        "DescribeContainerInstances",
        json!({"containerInstances": [small, "ffff"]}),
    );
    assert_eq!(
        d["containerInstances"][0]["remainingResources"][1]["integerValue"],
        0
    );
    assert_eq!(d["containerInstances"][0]["pendingTasksCount"], 2);
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    let listed = t.ok("ListTasks", json!({"containerInstance": small}));
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 2);

    let out = t.ok(
        "RunTask",
        json!({"taskDefinition": "job", "count": 8, "launchType": "EC2"}),
    );
    assert_eq!(out["tasks"].as_array().unwrap().len(), 7);
    assert_eq!(out["failures"][0]["reason"], "RESOURCE:MEMORY");
    let c = t.ok("DescribeClusters", json!({}));
    assert_eq!(c["clusters"][0]["registeredContainerInstancesCount"], 2);
}

/// DRAINING instances get no new tasks; StartTask places on the named instance only.
#[test]
fn draining_and_start_task() {
    let t = setup();
    let a = api_instance(&t, "za", "t2.micro", 4096);
    let b = api_instance(&t, "zb", "t2.micro", 4096);
    ec2_def(&t, 256);
    let u = t.ok(
        "UpdateContainerInstancesState",
        json!({"containerInstances": [a], "status": "DRAINING"}),
    );
    assert_eq!(u["containerInstances"][0]["status"], "DRAINING");
    let out = t.ok(
        "RunTask",
        json!({"taskDefinition": "job", "count": 4, "launchType": "EC2"}),
    );
    assert!(out["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["containerInstanceArn"] == b.as_str()));
    let s = t.ok(
        "StartTask",
        json!({"taskDefinition": "job", "containerInstances": [b]}),
    );
    assert_eq!(s["tasks"][0]["containerInstanceArn"], b.as_str());
    let (ty, _) = t.err(
        "StartTask",
        json!({"taskDefinition": "job", "containerInstances": []}),
    );
    assert_eq!(ty, "InvalidParameterException");
    let (ty, msg) = t.err(
        "DeregisterContainerInstance",
        json!({"containerInstance": b}),
    );
    assert_eq!(
        (ty.as_str(), msg.as_str()),
        (
            "InvalidParameterException",
            "Found running tasks on the instance."
        )
    );
    t.ok(
        "DeregisterContainerInstance",
        json!({"containerInstance": b, "force": true}),
    );
    let l = t.ok("ListContainerInstances", json!({}));
    assert_eq!(l["containerInstanceArns"], json!([a]));
}

/// Attributes: put, list with filters, delete; ECS's errors for unknown targets, too
/// many attributes and ecs.* names.
#[test]
fn attributes() {
    let t = setup();
    let a = api_instance(&t, "za", "t2.micro", 4096);
    t.ok(
        "PutAttributes",
        json!({"attributes": [{"name": "stack", "value": "prod", "targetId": a}]}),
    );
    let l = t.ok(
        "ListAttributes",
        json!({"targetType": "container-instance", "attributeName": "stack"}),
    );
    assert_eq!(l["attributes"][0]["value"], "prod");
    assert_eq!(l["attributes"][0]["targetId"], a.as_str());
    let f = t.ok(
        "ListContainerInstances",
        json!({"filter": "attribute:stack == prod"}),
    );
    assert_eq!(f["containerInstanceArns"], json!([a]));
    t.ok(
        "DeleteAttributes",
        json!({"attributes": [{"name": "stack", "targetId": a}]}),
    );
    let f = t.ok(
        "ListContainerInstances",
        json!({"filter": "attribute:stack == prod"}),
    );
    assert_eq!(f["containerInstanceArns"], json!([]));
    let missing = json!({"attributes": [{"name": "x", "targetId": "ffff"}]});
    assert_eq!(t.err("PutAttributes", missing).0, "TargetNotFoundException");
    let many: Vec<_> = (0..11)
        .map(|i| json!({"name": format!("a{i}"), "targetId": a}))
        .collect();
    assert_eq!(
        t.err("PutAttributes", json!({"attributes": many})).0,
        "InvalidParameterException"
    );
    for i in 0..10 {
        t.ok(
            "PutAttributes",
            json!({"attributes": [{"name": format!("a{i}"), "targetId": a}]}),
        );
    }
    let over = json!({"attributes": [{"name": "one-more", "targetId": a}]});
    assert_eq!(
        t.err("PutAttributes", over).0,
        "AttributeLimitExceededException"
    );
    let ecs = json!({"attributes": [{"name": "ecs.os-type", "value": "x", "targetId": a}]});
    assert_eq!(t.err("PutAttributes", ecs).0, "InvalidParameterException");
    assert_eq!(
        t.err("ListContainerInstances", json!({"cluster": "nope"}))
            .0,
        "ClusterNotFoundException"
    );
}
