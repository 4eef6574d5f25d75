//! Operation tests over the embedded store on a temporary directory: each test drives
//! the API as the front door does (operation name + JSON body) and checks the output.

use std::sync::Arc;

use berth_state::Embedded;
use serde_json::{json, Value};

use crate::agent::{ContainerReport, TaskReport};
use crate::{Context, Ecs, EcsError};

pub(crate) struct T {
    pub(crate) ecs: Arc<Ecs>,
    pub(crate) ctx: Context,
    _dir: tempfile::TempDir,
}

pub(crate) fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Embedded::open(&dir.path().join("state")).unwrap());
    T {
        ecs: Arc::new(Ecs::new(store, Some("builtin".into()))),
        ctx: Context {
            region: "us-east-1".into(),
            account: "123456789012".into(),
        },
        _dir: dir,
    }
}

impl T {
    pub(crate) fn call(&self, op: &str, body: Value) -> Result<Value, EcsError> {
        self.ecs.call(op, body.to_string().as_bytes(), &self.ctx)
    }
    pub(crate) fn ok(&self, op: &str, body: Value) -> Value {
        self.call(op, body).unwrap_or_else(|e| panic!("{op}: {e}"))
    }
    pub(crate) fn err(&self, op: &str, body: Value) -> (String, String) {
        let e = self.call(op, body).expect_err(op);
        (e.type_name().to_string(), e.to_string())
    }
    pub(crate) fn register_fargate(&self, family: &str) -> Value {
        self.ok("RegisterTaskDefinition", fargate_def(family))["taskDefinition"].clone()
    }
    pub(crate) fn run(&self, body: Value) -> Vec<Value> {
        self.ok("RunTask", body)["tasks"]
            .as_array()
            .unwrap()
            .clone()
    }
}

pub(crate) fn fargate_def(family: &str) -> Value {
    json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "web", "image": "nginx:latest",
            "portMappings": [{"containerPort": 80}],
            "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "command": ["nginx", "-g", "daemon off;"]
        }, {
            "name": "side", "image": "busybox", "essential": false, "memoryReservation": 64
        }]
    })
}

/// Register fills in ARN, revision, status, compatibilities and ECS's defaults, and every
/// given container field round-trips.
#[test]
fn register_and_describe() {
    let t = setup();
    let mut def = fargate_def("web");
    def["containerDefinitions"][0]["dockerLabels"] = json!({"x": "y"});
    def["containerDefinitions"][0]["linuxParameters"] = json!({"initProcessEnabled": true});
    def["containerDefinitions"][0]["ulimits"] =
        json!([{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}]);
    def["tags"] = json!([{"key": "team", "value": "a"}]);
    let out = t.ok("RegisterTaskDefinition", def);
    let td = &out["taskDefinition"];
    assert_eq!(
        td["taskDefinitionArn"],
        "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1"
    );
    assert_eq!(td["revision"], 1);
    assert_eq!(td["status"], "ACTIVE");
    assert_eq!(td["compatibilities"], json!(["EC2", "FARGATE"]));
    assert_eq!(td["cpu"], "256");
    let c = &td["containerDefinitions"][0];
    assert_eq!(c["dockerLabels"], json!({"x": "y"}));
    assert_eq!(c["linuxParameters"], json!({"initProcessEnabled": true}));
    assert_eq!(c["ulimits"][0]["hardLimit"], 2048);
    assert_eq!(c["essential"], true);
    assert_eq!(
        c["portMappings"][0],
        json!({"containerPort": 80, "hostPort": 80, "protocol": "tcp"})
    );
    assert_eq!(out["tags"], json!([{"key": "team", "value": "a"}]));
    assert!(td.get("tags").is_none());

    let second = t.register_fargate("web");
    assert_eq!(second["revision"], 2);
    // By family: the latest ACTIVE revision; by family:rev and by ARN: that one.
    let d = t.ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}));
    assert_eq!(d["taskDefinition"]["revision"], 2);
    assert!(d.get("tags").is_none());
    let d = t.ok(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "web:1", "include": ["TAGS"]}),
    );
    assert_eq!(d["taskDefinition"]["revision"], 1);
    assert_eq!(d["tags"], json!([{"key": "team", "value": "a"}]));
    let d = t.ok(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:2"}),
    );
    assert_eq!(d["taskDefinition"]["revision"], 2);
    assert_eq!(
        t.err("DescribeTaskDefinition", json!({"taskDefinition": "web:9"})),
        (
            "ClientException".into(),
            "Unable to describe task definition.".into()
        )
    );
    assert_eq!(
        t.err("DescribeTaskDefinition", json!({"taskDefinition": "nope"}))
            .0,
        "ClientException"
    );
}

/// Validation errors surface as ClientException with the validator's message.
#[test]
fn register_validation_is_client_exception() {
    let t = setup();
    let mut def = fargate_def("web");
    def["memory"] = json!("4096");
    assert_eq!(
        t.err("RegisterTaskDefinition", def),
        (
            "ClientException".into(),
            "No Fargate configuration exists for given values: 256 CPU, 4096 memory. See the Amazon ECS documentation for the valid values.".into()
        )
    );
    assert_eq!(
        t.err(
            "RegisterTaskDefinition",
            json!({"family": "x", "containerDefinitions": "no"})
        )
        .0,
        "SerializationException"
    );
}

/// Deregister makes a revision INACTIVE (family lookups skip it); delete needs INACTIVE.
#[test]
fn deregister_and_delete() {
    let t = setup();
    t.register_fargate("app");
    t.register_fargate("app");
    let out = t.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "app:2"}),
    );
    assert_eq!(out["taskDefinition"]["status"], "INACTIVE");
    assert!(out["taskDefinition"]["deregisteredAt"].is_f64());
    let d = t.ok("DescribeTaskDefinition", json!({"taskDefinition": "app"}));
    assert_eq!(d["taskDefinition"]["revision"], 1);
    assert_eq!(
        t.err("DeregisterTaskDefinition", json!({"taskDefinition": "app"}))
            .0,
        "ClientException"
    );
    assert_eq!(
        t.err(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "app:7"})
        )
        .0,
        "ClientException"
    );

    let out = t.ok(
        "DeleteTaskDefinitions",
        json!({"taskDefinitions": ["app:1", "app:2", "app:9"]}),
    );
    assert_eq!(out["taskDefinitions"].as_array().unwrap().len(), 1);
    assert_eq!(out["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    let f = out["failures"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0]["arn"], "app:1");
    assert!(f[0]["reason"].as_str().unwrap().contains("ACTIVE"));
    // A new registration never reuses a revision.
    assert_eq!(t.register_fargate("app")["revision"], 3);
}

/// ListTaskDefinitions: status filter, family, sort, pagination; families by status.
#[test]
fn list_task_definitions() {
    let t = setup();
    for f in ["b", "a", "a", "c"] {
        t.register_fargate(f);
    }
    t.ok("DeregisterTaskDefinition", json!({"taskDefinition": "c:1"}));
    let arns = |v: &Value| -> Vec<String> {
        v["taskDefinitionArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        arns(&t.ok("ListTaskDefinitions", json!({}))),
        ["a:1", "a:2", "b:1"]
    );
    assert_eq!(
        arns(&t.ok("ListTaskDefinitions", json!({"sort": "DESC"}))),
        ["b:1", "a:2", "a:1"]
    );
    assert_eq!(
        arns(&t.ok("ListTaskDefinitions", json!({"familyPrefix": "a"}))),
        ["a:1", "a:2"]
    );
    assert_eq!(
        arns(&t.ok("ListTaskDefinitions", json!({"status": "INACTIVE"}))),
        ["c:1"]
    );
    let p1 = t.ok("ListTaskDefinitions", json!({"maxResults": 2}));
    assert_eq!(arns(&p1), ["a:1", "a:2"]);
    let p2 = t.ok(
        "ListTaskDefinitions",
        json!({"maxResults": 2, "nextToken": p1["nextToken"]}),
    );
    assert_eq!(arns(&p2), ["b:1"]);
    assert!(p2.get("nextToken").is_none());
    assert_eq!(
        t.err("ListTaskDefinitions", json!({"maxResults": 0})).0,
        "InvalidParameterException"
    );
    assert_eq!(
        t.err("ListTaskDefinitions", json!({"nextToken": "zz"})).0,
        "InvalidParameterException"
    );

    let fams = |v: Value| v["families"].clone();
    assert_eq!(
        fams(t.ok("ListTaskDefinitionFamilies", json!({}))),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        fams(t.ok("ListTaskDefinitionFamilies", json!({"status": "ACTIVE"}))),
        json!(["a", "b"])
    );
    assert_eq!(
        fams(t.ok("ListTaskDefinitionFamilies", json!({"status": "INACTIVE"}))),
        json!(["c"])
    );
    assert_eq!(
        fams(t.ok("ListTaskDefinitionFamilies", json!({"familyPrefix": "b"}))),
        json!(["b"])
    );
}

/// Concurrent registrations of one family get distinct, consecutive revisions.
#[test]
fn concurrent_registrations() {
    let t = setup();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ecs = t.ecs.clone();
            let ctx = t.ctx.clone();
            std::thread::spawn(move || {
                let v = ecs
                    .call(
                        "RegisterTaskDefinition",
                        fargate_def("race").to_string().as_bytes(),
                        &ctx,
                    )
                    .unwrap();
                v["taskDefinition"]["revision"].as_u64().unwrap()
            })
        })
        .collect();
    let mut revs: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    revs.sort();
    assert_eq!(revs, (1..=8).collect::<Vec<_>>());
}

/// Clusters: create (idempotent), describe with failures, list, delete.
#[test]
fn clusters() {
    let t = setup();
    let c = t.ok(
        "CreateCluster",
        json!({"clusterName": "prod", "tags": [{"key": "k", "value": "v"}]}),
    );
    assert_eq!(
        c["cluster"]["clusterArn"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
    );
    assert_eq!(c["cluster"]["status"], "ACTIVE");
    assert_eq!(
        t.ok("CreateCluster", json!({"clusterName": "prod"}))["cluster"]["tags"],
        json!([{"key": "k", "value": "v"}])
    );
    assert_eq!(
        t.err("CreateCluster", json!({"clusterName": "bad name"})).0,
        "InvalidParameterException"
    );
    t.ok("CreateCluster", json!({}));
    let d = t.ok("DescribeClusters", json!({"clusters": ["prod", "arn:aws:ecs:us-east-1:123456789012:cluster/default", "gone"], "include": ["TAGS"]}));
    assert_eq!(d["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(
        d["clusters"][0]["tags"],
        json!([{"key": "k", "value": "v"}])
    );
    assert_eq!(
        d["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:123456789012:cluster/gone", "reason": "MISSING"}])
    );
    let l = t.ok("ListClusters", json!({"maxResults": 1}));
    assert_eq!(
        l["clusterArns"],
        json!(["arn:aws:ecs:us-east-1:123456789012:cluster/default"])
    );
    let l = t.ok("ListClusters", json!({"nextToken": l["nextToken"]}));
    assert_eq!(
        l["clusterArns"],
        json!(["arn:aws:ecs:us-east-1:123456789012:cluster/prod"])
    );
    let del = t.ok("DeleteCluster", json!({"cluster": "prod"}));
    assert_eq!(del["cluster"]["status"], "INACTIVE");
    assert_eq!(
        t.err("DeleteCluster", json!({"cluster": "prod"})),
        (
            "ClusterNotFoundException".into(),
            "Cluster not found.".into()
        )
    );
}

/// RunTask on FARGATE: the task's shape, the default cluster made on first use, and
/// overrides applied to what the agent is told to run.
#[test]
fn run_task_fargate() {
    let t = setup();
    t.register_fargate("web");
    let mut changes = t.ecs.changes();
    let before = *changes.borrow_and_update();
    let tasks = t.run(json!({
        "taskDefinition": "web",
        "count": 2,
        "startedBy": "me",
        "tags": [{"key": "a", "value": "b"}],
        "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
        "overrides": {"cpu": "512", "memory": "1024", "containerOverrides": [
            {"name": "web", "command": ["sh"], "environment": [{"name": "B", "value": "x"}, {"name": "C", "value": "3"}], "memory": 256}
        ]}
    }));
    assert!(changes.has_changed().unwrap());
    assert_ne!(*changes.borrow(), before);
    assert_eq!(tasks.len(), 2);
    let task = &tasks[0];
    let arn = task["taskArn"].as_str().unwrap();
    let id = arn.rsplit('/').next().unwrap();
    assert!(arn.starts_with("arn:aws:ecs:us-east-1:123456789012:task/default/"));
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        task["clusterArn"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/default"
    );
    assert_eq!(task["lastStatus"], "PROVISIONING");
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["launchType"], "FARGATE");
    assert_eq!(task["platformVersion"], "1.4.0");
    assert_eq!(task["platformFamily"], "Linux");
    assert_eq!(task["cpu"], "512");
    assert_eq!(task["memory"], "1024");
    assert_eq!(task["group"], "family:web");
    assert_eq!(task["version"], 1);
    assert_eq!(task["startedBy"], "me");
    assert!(task["createdAt"].is_f64());
    assert_eq!(task["attachments"][0]["type"], "ElasticNetworkInterface");
    assert_eq!(
        task["attachments"][0]["details"][0],
        json!({"name": "subnetId", "value": "subnet-1"})
    );
    assert_eq!(task["containers"][0]["name"], "web");
    assert_eq!(task["containers"][0]["lastStatus"], "PENDING");
    assert_eq!(task["containers"][0]["memory"], "256");
    assert_eq!(task["containers"][0]["taskArn"], arn);
    assert_eq!(task["overrides"]["containerOverrides"][0]["name"], "web");
    // The default cluster now exists and counts the tasks as pending.
    let d = t.ok("DescribeClusters", json!({}));
    assert_eq!(d["clusters"][0]["pendingTasksCount"], 2);

    let assigned = t.ecs.assigned_tasks("builtin");
    assert_eq!(assigned.len(), 2);
    let a = assigned.iter().find(|a| a.task_arn == arn).unwrap();
    assert_eq!(a.task_id, id);
    assert_eq!(a.cluster, "default");
    assert_eq!(a.network_mode, "awsvpc");
    assert_eq!((a.cpu, a.memory), (Some(512), Some(1024)));
    assert_eq!(a.desired_status, "RUNNING");
    let web = &a.definition["containerDefinitions"][0];
    assert_eq!(web["command"], json!(["sh"]));
    assert_eq!(
        web["environment"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "x"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(web["memory"], 256);
    assert_eq!(a.definition["cpu"], "512");
    assert!(t.ecs.assigned_tasks("other").is_empty());
}

/// RunTask refusals: EC2 goes to failures; no EC2-compatible default; bad inputs.
#[test]
fn run_task_refusals() {
    let t = setup();
    t.register_fargate("web");
    t.ok("RegisterTaskDefinition", json!({"family": "ec2only", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64}]}));
    let out = t.ok(
        "RunTask",
        json!({"taskDefinition": "web", "launchType": "EC2"}),
    );
    assert_eq!(out["tasks"], json!([]));
    assert_eq!(
        out["failures"][0]["reason"],
        "No Container Instances were found in your cluster."
    );
    let (ty, msg) = t.err("RunTask", json!({"taskDefinition": "ec2only"}));
    assert_eq!(ty, "ClientException");
    assert!(
        msg.contains("EC2 launch type is not available yet"),
        "{msg}"
    );
    assert_eq!(
        t.err(
            "RunTask",
            json!({"taskDefinition": "ec2only", "launchType": "FARGATE"})
        ),
        (
            "InvalidParameterException".into(),
            "Task definition does not support launch_type FARGATE.".into()
        )
    );
    assert_eq!(
        t.err("RunTask", json!({"taskDefinition": "web", "count": 11}))
            .0,
        "InvalidParameterException"
    );
    assert_eq!(
        t.err("RunTask", json!({"taskDefinition": "web", "count": 0}))
            .0,
        "InvalidParameterException"
    );
    assert_eq!(
        t.err("RunTask", json!({"taskDefinition": "nope"})),
        (
            "InvalidParameterException".into(),
            "TaskDefinition not found.".into()
        )
    );
    assert_eq!(
        t.err(
            "RunTask",
            json!({"taskDefinition": "web", "cluster": "nope"})
        )
        .0,
        "ClusterNotFoundException"
    );
    assert_eq!(
        t.err("RunTask", json!({"taskDefinition": "web", "overrides": {"containerOverrides": [{"name": "ghost"}]}})),
        ("InvalidParameterException".into(), "Override for container named ghost is not a container in the TaskDefinition.".into())
    );
    assert_eq!(
        t.err(
            "RunTask",
            json!({"taskDefinition": "web", "overrides": {"memory": "4096"}})
        )
        .0,
        "InvalidParameterException"
    );
    t.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "web:1"}),
    );
    assert_eq!(
        t.err("RunTask", json!({"taskDefinition": "web:1"})).0,
        "InvalidParameterException"
    );
    assert!(t.ecs.assigned_tasks("builtin").is_empty());
}

/// DescribeTasks by id or ARN, failures for unknown ones, tags only on request.
#[test]
fn describe_tasks() {
    let t = setup();
    t.register_fargate("web");
    let task =
        t.run(json!({"taskDefinition": "web", "tags": [{"key": "a", "value": "b"}]}))[0].clone();
    let arn = task["taskArn"].as_str().unwrap();
    let id = arn.rsplit('/').next().unwrap();
    let missing =
        "arn:aws:ecs:us-east-1:123456789012:task/default/0123456789abcdef0123456789abcdef";
    let d = t.ok(
        "DescribeTasks",
        json!({"tasks": [arn, id, missing, "junk/../x"]}),
    );
    assert_eq!(d["tasks"].as_array().unwrap().len(), 2);
    assert!(d["tasks"][0].get("tags").is_none());
    assert_eq!(
        d["failures"],
        json!([{"arn": missing, "reason": "MISSING"}, {"arn": "junk/../x", "reason": "MISSING"}])
    );
    let d = t.ok("DescribeTasks", json!({"tasks": [id], "include": ["TAGS"]}));
    assert_eq!(d["tasks"][0]["tags"], json!([{"key": "a", "value": "b"}]));
    assert_eq!(
        t.err("DescribeTasks", json!({"tasks": []})).0,
        "InvalidParameterException"
    );
    assert_eq!(
        t.err("DescribeTasks", json!({"tasks": [id], "cluster": "nope"}))
            .0,
        "ClusterNotFoundException"
    );
}

/// ListTasks filters by family, startedBy and desiredStatus, and paginates.
#[test]
fn list_tasks() {
    let t = setup();
    t.register_fargate("web");
    t.register_fargate("api");
    t.ok("ListTasks", json!({}));
    let w = t.run(json!({"taskDefinition": "web", "count": 3, "startedBy": "ci"}));
    t.run(json!({"taskDefinition": "api"}));
    let arns = |v: Value| v["taskArns"].as_array().unwrap().len();
    assert_eq!(arns(t.ok("ListTasks", json!({}))), 4);
    assert_eq!(arns(t.ok("ListTasks", json!({"family": "web"}))), 3);
    assert_eq!(arns(t.ok("ListTasks", json!({"startedBy": "ci"}))), 3);
    assert_eq!(
        arns(t.ok("ListTasks", json!({"desiredStatus": "PENDING"}))),
        0
    );
    assert_eq!(
        arns(t.ok("ListTasks", json!({"containerInstance": "x"}))),
        0
    );
    // serviceName: the tasks of that service (by its group), by name or ARN.
    assert_eq!(arns(t.ok("ListTasks", json!({"serviceName": "web"}))), 0);
    t.run(json!({"taskDefinition": "api", "group": "service:api"}));
    assert_eq!(arns(t.ok("ListTasks", json!({"serviceName": "api"}))), 1);
    let arn = "arn:aws:ecs:us-east-1:123456789012:service/default/api";
    assert_eq!(arns(t.ok("ListTasks", json!({"serviceName": arn}))), 1);
    t.ok("StopTask", json!({"task": w[0]["taskArn"]}));
    assert_eq!(arns(t.ok("ListTasks", json!({}))), 4);
    assert_eq!(
        t.ok("ListTasks", json!({"desiredStatus": "STOPPED"}))["taskArns"],
        json!([w[0]["taskArn"]])
    );
    let p1 = t.ok("ListTasks", json!({"maxResults": 2}));
    assert_eq!(arns(p1.clone()), 2);
    let p2 = t.ok(
        "ListTasks",
        json!({"maxResults": 2, "nextToken": p1["nextToken"]}),
    );
    assert_eq!(arns(p2.clone()), 2);
    assert!(p2.get("nextToken").is_none());
    assert_eq!(
        t.err("ListTasks", json!({"desiredStatus": "GONE"})).0,
        "InvalidParameterException"
    );
    assert_eq!(
        t.err("ListTasks", json!({"cluster": "nope"})).0,
        "ClusterNotFoundException"
    );
}

/// StopTask: an unreported task stops at once; a reported one waits for its agent.
#[test]
fn stop_task_and_agent_reports() {
    let t = setup();
    t.register_fargate("web");
    let tasks = t.run(json!({"taskDefinition": "web", "count": 2}));
    let (a, b) = (
        tasks[0]["taskArn"].as_str().unwrap(),
        tasks[1]["taskArn"].as_str().unwrap(),
    );

    let s = t.ok("StopTask", json!({"task": a}))["task"].clone();
    assert_eq!(s["lastStatus"], "STOPPED");
    assert_eq!(s["desiredStatus"], "STOPPED");
    assert_eq!(s["stopCode"], "UserInitiated");
    assert_eq!(s["stoppedReason"], "Task stopped by user");
    assert!(s["stoppingAt"].is_f64() && s["stoppedAt"].is_f64());
    assert_eq!(s["containers"][0]["lastStatus"], "STOPPED");
    assert_eq!(s["version"], 2);

    let report = |status: &str, c: &str| TaskReport {
        last_status: status.into(),
        containers: vec![ContainerReport {
            name: "web".into(),
            last_status: c.into(),
            exit_code: (c == "STOPPED").then_some(0),
            reason: None,
            runtime_id: Some("rt-1".into()),
            health_status: Some("HEALTHY".into()),
            network_bindings: vec![
                json!({"containerPort": 80, "hostPort": 80, "protocol": "tcp", "bindIP": "10.0.0.2"}),
            ],
        }],
        private_ipv4: Some("10.0.0.2".into()),
        stop_code: None,
        stopped_reason: None,
        health_status: Some("HEALTHY".into()),
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopped_at: None,
    };
    assert!(matches!(
        t.ecs
            .report_task("intruder", b, report("RUNNING", "RUNNING")),
        Err(EcsError::Client(_))
    ));
    assert!(matches!(
        t.ecs.report_task(
            "builtin",
            "arn:aws:ecs:us-east-1:1:task/default/ffff",
            report("RUNNING", "RUNNING")
        ),
        Err(EcsError::InvalidParameter(_))
    ));
    t.ecs
        .report_task("builtin", b, report("RUNNING", "RUNNING"))
        .unwrap();
    let d = t.ok("DescribeTasks", json!({"tasks": [b]}))["tasks"][0].clone();
    assert_eq!(d["lastStatus"], "RUNNING");
    assert_eq!(d["connectivity"], "CONNECTED");
    assert!(d["startedAt"].is_f64() && d["pullStartedAt"].is_f64() && d["pullStoppedAt"].is_f64());
    assert_eq!(d["healthStatus"], "HEALTHY");
    assert_eq!(d["containers"][0]["runtimeId"], "rt-1");
    assert_eq!(d["containers"][0]["networkBindings"][0]["hostPort"], 80);
    assert_eq!(
        d["containers"][0]["networkInterfaces"][0]["privateIpv4Address"],
        "10.0.0.2"
    );
    assert_eq!(d["attachments"][0]["status"], "ATTACHED");
    assert!(d["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "privateIPv4Address", "value": "10.0.0.2"})));
    assert_eq!(d["version"], 2);
    assert_eq!(
        t.ok("DescribeClusters", json!({}))["clusters"][0]["runningTasksCount"],
        1
    );

    // The cluster cannot go while a task is active.
    assert_eq!(
        t.err("DeleteCluster", json!({"cluster": "default"})).0,
        "ClusterContainsTasksException"
    );

    let s = t.ok("StopTask", json!({"task": b, "reason": "scale down"}))["task"].clone();
    assert_eq!(s["lastStatus"], "RUNNING");
    assert_eq!(s["desiredStatus"], "STOPPED");
    assert_eq!(s["stoppedReason"], "scale down");
    let assigned = t.ecs.assigned_tasks("builtin");
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].desired_status, "STOPPED");
    assert_eq!(assigned[0].stop_reason.as_deref(), Some("scale down"));
    assert_eq!(assigned[0].version, 3);

    t.ecs
        .report_task("builtin", b, report("STOPPED", "STOPPED"))
        .unwrap();
    let d = t.ok("DescribeTasks", json!({"tasks": [b]}))["tasks"][0].clone();
    assert_eq!(d["lastStatus"], "STOPPED");
    assert_eq!(d["stopCode"], "UserInitiated");
    assert_eq!(d["containers"][0]["exitCode"], 0);
    assert_eq!(d["attachments"][0]["status"], "DELETED");
    assert!(d["stoppedAt"].is_f64());
    assert!(t.ecs.assigned_tasks("builtin").is_empty());
    // Stopping again changes nothing.
    assert_eq!(
        t.ok("StopTask", json!({"task": b}))["task"]["version"],
        d["version"]
    );
    assert_eq!(
        t.err(
            "StopTask",
            json!({"task": "0123456789abcdef0123456789abcdef"})
        )
        .0,
        "InvalidParameterException"
    );

    // Now every task is STOPPED: the cluster can go, and its tasks with it.
    t.ok("DeleteCluster", json!({"cluster": "default"}));
    assert_eq!(
        t.ok("ListTasks", json!({"desiredStatus": "STOPPED"}))["taskArns"],
        json!([])
    );
}

/// An unknown operation is UnknownOperationException; an empty body is `{}`.
#[test]
fn dispatch() {
    let t = setup();
    assert_eq!(
        t.err("CreateTaskSet", json!({})).0,
        "UnknownOperationException"
    );
    assert!(t.ecs.call("ListClusters", b"", &t.ctx).is_ok());
    assert_eq!(
        t.ecs
            .call("ListClusters", b"{", &t.ctx)
            .unwrap_err()
            .type_name(),
        "SerializationException"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn shared() -> &'static T {
        static T_: OnceLock<T> = OnceLock::new();
        T_.get_or_init(setup)
    }

    const OPS: [&str; 14] = [
        "CreateCluster",
        "DescribeClusters",
        "ListClusters",
        "DeleteCluster",
        "RegisterTaskDefinition",
        "DescribeTaskDefinition",
        "ListTaskDefinitions",
        "ListTaskDefinitionFamilies",
        "DeregisterTaskDefinition",
        "DeleteTaskDefinitions",
        "RunTask",
        "DescribeTasks",
        "ListTasks",
        "StopTask",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-70000i64..70000).prop_map(Value::from),
            "[a-z:/0-9 .-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "family",
                        "containerDefinitions",
                        "name",
                        "image",
                        "memory",
                        "cpu",
                        "cluster",
                        "task",
                        "tasks",
                        "taskDefinition",
                        "count",
                        "overrides",
                        "containerOverrides",
                        "networkMode",
                        "portMappings",
                        "containerPort",
                        "dependsOn",
                        "nextToken",
                        "maxResults",
                        "clusterName",
                        "launchType",
                    ])
                    .prop_map(String::from),
                    inner,
                    0..5,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// No operation panics on arbitrary bytes or arbitrary JSON; server faults
        /// never come from bad input.
        #[test]
        fn operations_total(op in prop::sample::select(OPS.to_vec()), body in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let t = shared();
            for b in [body.to_string().into_bytes(), raw] {
                if let Err(e) = t.ecs.call(op, &b, &t.ctx) {
                    prop_assert_ne!(e.type_name(), "ServerException", "{}: {}", op, e);
                }
            }
        }
    }
}
