"""The Amazon ECS API through boto3 and the aws CLI: clusters, task definitions (register,
describe, list, deregister, delete, validation errors) and tasks on FARGATE (run,
describe, list, stop). No agent runs containers in these tests: tasks stay PROVISIONING
until they are stopped."""

import datetime
import json
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import AwsCli

from support import assert_aws_error, send, signed_request, unique

ECS_TARGET = "AmazonEC2ContainerServiceV20141113"


@pytest.fixture(scope="session")
def ecs_berth(berth_bin, berth_factory):
    """A server of its own whose FARGATE tasks no agent picks up: these tests check the
    API's bookkeeping, so nothing may move a task but the test (`--no-agent` where the
    binary has a built-in agent)."""
    usage = subprocess.run([str(berth_bin), "server", "--help"], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
    return berth_factory(extra_args=["--no-agent"] if "--no-agent" in usage else [])


@pytest.fixture(scope="session")
def ecs(ecs_berth):
    """boto3 ECS client with endpoint_url pointed at that server."""
    return ecs_berth.ecs()


def fargate_def(family: str, **extra) -> dict:
    return {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "web",
                "image": "nginx:1.27",
                "portMappings": [{"containerPort": 80}],
                "environment": [{"name": "A", "value": "1"}],
                "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 10},
                "dockerLabels": {"team": "berth"},
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m"}},
                "stopTimeout": 20,
            },
            {
                "name": "sidecar",
                "image": "busybox",
                "essential": False,
                "memoryReservation": 64,
                "dependsOn": [{"containerName": "web", "condition": "HEALTHY"}],
            },
        ],
        **extra,
    }


def client_error(call, **kw) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def paginate(call, key, **kw):
    """Follows nextToken; returns (items, pages), checking maxResults per page."""
    items, token, pages = [], None, 0
    while True:
        resp = call(**kw, **({"nextToken": token} if token else {}))
        assert len(resp[key]) <= kw.get("maxResults", 100)
        items += resp[key]
        pages += 1
        token = resp.get("nextToken")
        if not token:
            return items, pages
        assert pages < 1000


def test_register_describe_list_deregister_delete(ecs):
    """A definition round-trips every container field; revisions count up; deregister
    makes it INACTIVE; delete needs INACTIVE."""
    fam = unique("td")
    out = ecs.register_task_definition(**fargate_def(fam), tags=[{"key": "k", "value": "v"}])
    td = out["taskDefinition"]
    assert td["taskDefinitionArn"].endswith(f":task-definition/{fam}:1")
    assert td["taskDefinitionArn"].startswith("arn:aws:ecs:us-east-1:")
    assert td["revision"] == 1 and td["status"] == "ACTIVE"
    assert set(td["compatibilities"]) == {"EC2", "FARGATE"}
    assert td["requiresCompatibilities"] == ["FARGATE"]
    assert (td["cpu"], td["memory"], td["networkMode"]) == ("256", "512", "awsvpc")
    assert isinstance(td["registeredAt"], datetime.datetime)
    web, side = td["containerDefinitions"]
    given = fargate_def(fam)["containerDefinitions"]
    for k, v in given[0].items():
        if k != "portMappings":
            assert web[k] == v, k
    assert web["portMappings"] == [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]
    assert web["essential"] is True
    assert side["dependsOn"] == given[1]["dependsOn"]
    assert out["tags"] == [{"key": "k", "value": "v"}]

    assert ecs.register_task_definition(**fargate_def(fam))["taskDefinition"]["revision"] == 2
    d = ecs.describe_task_definition(taskDefinition=fam)
    assert d["taskDefinition"]["revision"] == 2
    assert "tags" not in d or d["tags"] == []
    d = ecs.describe_task_definition(taskDefinition=f"{fam}:1", include=["TAGS"])
    assert d["taskDefinition"]["revision"] == 1 and d["tags"] == [{"key": "k", "value": "v"}]
    d = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])
    assert d["taskDefinition"]["revision"] == 1

    arns = ecs.list_task_definitions(familyPrefix=fam)["taskDefinitionArns"]
    assert [a.rsplit("/", 1)[1] for a in arns] == [f"{fam}:1", f"{fam}:2"]
    assert fam in ecs.list_task_definition_families(familyPrefix=fam)["families"]

    out = ecs.deregister_task_definition(taskDefinition=f"{fam}:2")["taskDefinition"]
    assert out["status"] == "INACTIVE" and isinstance(out["deregisteredAt"], datetime.datetime)
    assert ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]["revision"] == 1
    arns = ecs.list_task_definitions(familyPrefix=fam, status="INACTIVE")["taskDefinitionArns"]
    assert [a.rsplit("/", 1)[1] for a in arns] == [f"{fam}:2"]
    ecs.deregister_task_definition(taskDefinition=f"{fam}:1")
    assert fam in ecs.list_task_definition_families(familyPrefix=fam, status="INACTIVE")["families"]
    assert fam not in ecs.list_task_definition_families(familyPrefix=fam, status="ACTIVE")["families"]

    out = ecs.delete_task_definitions(taskDefinitions=[f"{fam}:2", f"{fam}:9"])
    assert [t["status"] for t in out["taskDefinitions"]] == ["DELETE_IN_PROGRESS"]
    assert [f["arn"] for f in out["failures"]] == [f"{fam}:9"]

    assert client_error(ecs.describe_task_definition, taskDefinition=f"{fam}-none") == (
        "ClientException", "Unable to describe task definition.")


def _patched(fam, patch):
    d = fargate_def(fam)
    patch(d)
    return d


@pytest.mark.parametrize("patch,message", [
    (lambda d: d.update(memory="4096"),
     "No Fargate configuration exists for given values: 256 CPU, 4096 memory. "
     "See the Amazon ECS documentation for the valid values."),
    (lambda d: d.update(networkMode="bridge"), "Fargate only supports network mode 'awsvpc'."),
    (lambda d: d.pop("cpu"), "Fargate requires that 'cpu' be defined at the task level."),
    (lambda d: d.update(containerDefinitions=[]), "Container list cannot be empty."),
    (lambda d: d["containerDefinitions"][0].pop("image"),
     "Container.image should not be null or empty (container 'web')."),
    (lambda d: d.update(requiresCompatibilities=[], networkMode="bridge", cpu=None, memory=None)
     or [d.pop("cpu"), d.pop("memory")],
     "Invalid setting for container 'web'. At least one of 'memory' or 'memoryReservation' "
     "must be specified."),
    (lambda d: d["containerDefinitions"][1].update(name="web"),
     "Duplicate container name 'web': container names must be unique within a task definition."),
    (lambda d: d["containerDefinitions"][0].update(memory=1024),
     "The 'memory' setting for container 'web' is greater than for the task."),
    (lambda d: d["containerDefinitions"][0]["portMappings"][0].update(hostPort=8080),
     "When networkMode=awsvpc, the host ports and container ports in port mappings must match."),
    (lambda d: d["containerDefinitions"][0].pop("healthCheck"),
     "Container 'sidecar' depends on container 'web' being HEALTHY, but 'web' has no healthCheck."),
    (lambda d: d["containerDefinitions"][0].update(essential=False),
     "A task definition must have at least one essential container."),
    (lambda d: d["containerDefinitions"][0]["healthCheck"].update(interval=1),
     "Invalid 'healthCheck' setting for container 'web': 'interval' must be between 5 and 300, "
     "got 1."),
    (lambda d: d.update(family="bad/name"),
     "Invalid family name 'bad/name': up to 255 letters (uppercase and lowercase), numbers, "
     "underscores, and hyphens are allowed."),
], ids=["fargate-size", "fargate-mode", "fargate-cpu", "no-containers", "image",
        "memory", "duplicate", "container-memory", "awsvpc-ports", "healthy-dep",
        "essential", "healthcheck", "family"])
def test_register_validation_errors(ecs, patch, message):
    """Each invalid definition is a ClientException with ECS's message."""
    assert client_error(ecs.register_task_definition,
                        **_patched(unique("bad"), patch)) == ("ClientException", message)


def test_error_body_shape(ecs_berth):
    """Errors are AWS JSON: {"__type": ..., "message": ...} with x-amzn-ErrorType."""
    body = json.dumps({"family": "x y", "containerDefinitions": []})
    r = send(signed_request(ecs_berth.url, "", body, *ecs_berth.credentials(), service="ecs",
                            target=f"{ECS_TARGET}.RegisterTaskDefinition"))
    err = assert_aws_error(r, 400, "ClientException")
    assert err["message"].startswith("Invalid family name 'x y'")
    assert r.headers["x-amzn-ErrorType"] == "ClientException"
    r = send(signed_request(ecs_berth.url, "", "{}", *ecs_berth.credentials(), service="ecs",
                            target=f"{ECS_TARGET}.NoSuchOperation"))
    assert_aws_error(r, 400, "UnknownOperationException")
    # Signed for ECR but sent to ECS: the credential scope names the wrong service.
    r = send(signed_request(ecs_berth.url, "", "{}", *ecs_berth.credentials(), service="ecr",
                            target=f"{ECS_TARGET}.ListClusters"))
    assert_aws_error(r, 403, "InvalidSignatureException")


def test_list_task_definitions_pagination(ecs):
    """maxResults pages, nextToken continues, sort DESC reverses, the paginator agrees."""
    fam = unique("pg")
    for _ in range(5):
        ecs.register_task_definition(**fargate_def(fam))
    items, pages = paginate(ecs.list_task_definitions, "taskDefinitionArns",
                            familyPrefix=fam, maxResults=2)
    assert pages == 3
    assert [int(a.rsplit(":", 1)[1]) for a in items] == [1, 2, 3, 4, 5]
    desc = ecs.list_task_definitions(familyPrefix=fam, sort="DESC")["taskDefinitionArns"]
    assert desc == list(reversed(items))
    pager = ecs.get_paginator("list_task_definitions")
    got = [a for p in pager.paginate(familyPrefix=fam, PaginationConfig={"PageSize": 2})
           for a in p["taskDefinitionArns"]]
    assert got == items
    code, _ = client_error(ecs.list_task_definitions, nextToken="not-a-token")
    assert code == "InvalidParameterException"


def test_clusters(ecs):
    """Create (idempotent), describe with include and failures, list, delete."""
    name = unique("cl")
    c = ecs.create_cluster(clusterName=name, tags=[{"key": "a", "value": "b"}])["cluster"]
    assert c["clusterArn"].endswith(f":cluster/{name}") and c["status"] == "ACTIVE"
    assert ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"] == c["clusterArn"]
    d = ecs.describe_clusters(clusters=[name, c["clusterArn"], f"{name}-gone"], include=["TAGS"])
    assert [x["clusterName"] for x in d["clusters"]] == [name, name]
    assert d["clusters"][0]["tags"] == [{"key": "a", "value": "b"}]
    assert d["failures"][0]["reason"] == "MISSING"
    assert d["failures"][0]["arn"].endswith(f":cluster/{name}-gone")
    arns, _ = paginate(ecs.list_clusters, "clusterArns", maxResults=1)
    assert c["clusterArn"] in arns
    assert ecs.delete_cluster(cluster=name)["cluster"]["status"] == "INACTIVE"
    assert client_error(ecs.delete_cluster, cluster=name) == ("ClusterNotFoundException",
                                                              "Cluster not found.")


def test_run_describe_list_stop_fargate(ecs):
    """RunTask on FARGATE returns ECS-shaped tasks; DescribeTasks, ListTasks and StopTask
    see them; the cluster cannot be deleted while they are active."""
    fam, cl = unique("run"), unique("cl")
    td = ecs.register_task_definition(**fargate_def(fam))["taskDefinition"]
    cluster = ecs.create_cluster(clusterName=cl)["cluster"]
    out = ecs.run_task(
        cluster=cl, taskDefinition=fam, count=2, launchType="FARGATE", startedBy="pytest",
        tags=[{"key": "t", "value": "1"}],
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-abc"],
                                                      "assignPublicIp": "DISABLED"}},
        overrides={"containerOverrides": [{"name": "web", "command": ["echo", "hi"],
                                           "environment": [{"name": "B", "value": "2"}]}]})
    assert out["failures"] == []
    tasks = out["tasks"]
    assert len(tasks) == 2
    t = tasks[0]
    task_id = t["taskArn"].rsplit("/", 1)[1]
    assert t["taskArn"].startswith("arn:aws:ecs:us-east-1:") and f":task/{cl}/" in t["taskArn"]
    assert len(task_id) == 32 and all(ch in "0123456789abcdef" for ch in task_id)
    assert t["clusterArn"] == cluster["clusterArn"]
    assert t["taskDefinitionArn"] == td["taskDefinitionArn"]
    assert (t["lastStatus"], t["desiredStatus"], t["launchType"]) == ("PROVISIONING", "RUNNING", "FARGATE")
    assert (t["cpu"], t["memory"]) == ("256", "512")
    assert t["platformVersion"] and t["platformFamily"] == "Linux"
    assert t["group"] == f"family:{fam}" and t["startedBy"] == "pytest"
    assert isinstance(t["createdAt"], datetime.datetime) and t["version"] == 1
    assert t["attachments"][0]["type"] == "ElasticNetworkInterface"
    assert {"name": "subnetId", "value": "subnet-abc"} in t["attachments"][0]["details"]
    assert [c["name"] for c in t["containers"]] == ["web", "sidecar"]
    assert all(c["lastStatus"] == "PENDING" and c["taskArn"] == t["taskArn"] for c in t["containers"])
    assert t["overrides"]["containerOverrides"][0]["command"] == ["echo", "hi"]

    missing = t["taskArn"][:-32] + "0" * 32
    d = ecs.describe_tasks(cluster=cl, tasks=[t["taskArn"], tasks[1]["taskArn"].rsplit("/", 1)[1], missing],
                           include=["TAGS"])
    assert [x["taskArn"] for x in d["tasks"]] == [t["taskArn"], tasks[1]["taskArn"]]
    assert d["tasks"][0]["tags"] == [{"key": "t", "value": "1"}]
    assert d["failures"] == [{"arn": missing, "reason": "MISSING"}]

    listed = ecs.list_tasks(cluster=cl)["taskArns"]
    assert sorted(listed) == sorted(x["taskArn"] for x in tasks)
    assert len(ecs.list_tasks(cluster=cl, family=fam, startedBy="pytest")["taskArns"]) == 2
    assert ecs.list_tasks(cluster=cl, family=fam + "x")["taskArns"] == []
    assert ecs.list_tasks(cluster=cl, desiredStatus="STOPPED")["taskArns"] == []

    dc = ecs.describe_clusters(clusters=[cl])["clusters"][0]
    assert dc["pendingTasksCount"] + dc["runningTasksCount"] == 2
    assert client_error(ecs.delete_cluster, cluster=cl) == (
        "ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active.")

    s = ecs.stop_task(cluster=cl, task=task_id, reason="done here")["task"]
    assert (s["desiredStatus"], s["stopCode"], s["stoppedReason"]) == ("STOPPED", "UserInitiated", "done here")
    assert s["lastStatus"] == "STOPPED"  # no agent ever reported on it
    assert isinstance(s["stoppingAt"], datetime.datetime) and isinstance(s["stoppedAt"], datetime.datetime)
    assert s["version"] == 2
    assert ecs.list_tasks(cluster=cl, desiredStatus="STOPPED")["taskArns"] == [t["taskArn"]]
    assert ecs.list_tasks(cluster=cl)["taskArns"] == [tasks[1]["taskArn"]]
    s = ecs.stop_task(cluster=cl, task=tasks[1]["taskArn"])["task"]
    assert s["stoppedReason"] == "Task stopped by user"
    assert client_error(ecs.stop_task, cluster=cl, task=missing) == (
        "InvalidParameterException", "The referenced task was not found.")
    assert ecs.delete_cluster(cluster=cl)["cluster"]["status"] == "INACTIVE"


def test_run_task_refusals(ecs):
    """EC2 tasks fail with ECS's empty-cluster reason; other mistakes are typed errors."""
    fam, ec2fam, cl = unique("rf"), unique("ec2"), unique("cl")
    ecs.register_task_definition(**fargate_def(fam))
    ecs.register_task_definition(family=ec2fam, containerDefinitions=[
        {"name": "a", "image": "busybox", "memory": 64}])
    ecs.create_cluster(clusterName=cl)
    out = ecs.run_task(cluster=cl, taskDefinition=fam, launchType="EC2")
    assert out["tasks"] == []
    assert out["failures"][0]["reason"] == "No Container Instances were found in your cluster."
    code, msg = client_error(ecs.run_task, cluster=cl, taskDefinition=ec2fam)
    assert code == "ClientException" and "not available yet" in msg
    assert client_error(ecs.run_task, cluster=cl, taskDefinition=ec2fam, launchType="FARGATE") == (
        "InvalidParameterException", "Task definition does not support launch_type FARGATE.")
    assert client_error(ecs.run_task, cluster=unique("nope"), taskDefinition=fam)[0] == \
        "ClusterNotFoundException"
    assert client_error(ecs.run_task, cluster=cl, taskDefinition=fam, count=11)[0] == \
        "InvalidParameterException"
    assert client_error(ecs.run_task, cluster=cl, taskDefinition=unique("none")) == (
        "InvalidParameterException", "TaskDefinition not found.")
    assert ecs.list_tasks(cluster=cl)["taskArns"] == []


def test_list_tasks_pagination_and_default_cluster(ecs):
    """Without `cluster`, RunTask uses (and creates) `default`; ListTasks pages."""
    fam = unique("dflt")
    ecs.register_task_definition(**fargate_def(fam))
    arns = [t["taskArn"] for t in ecs.run_task(taskDefinition=fam, count=5)["tasks"]]
    assert all(":task/default/" in a for a in arns)
    assert "default" in [c["clusterName"] for c in ecs.describe_clusters()["clusters"]]
    items, pages = paginate(ecs.list_tasks, "taskArns", family=fam, maxResults=2)
    assert sorted(items) == sorted(arns) and pages == 3
    for a in arns:
        ecs.stop_task(task=a)
    assert ecs.list_tasks(family=fam)["taskArns"] == []


def test_aws_cli(ecs_berth, tmp_path):
    """The real aws CLI registers and describes a task definition and runs a task."""
    aws = AwsCli(ecs_berth, tmp_path)
    fam = unique("cli")
    containers = json.dumps([{"name": "app", "image": "busybox", "command": ["sleep", "60"]}])
    out = aws("ecs", "register-task-definition", "--family", fam, "--network-mode", "awsvpc",
              "--requires-compatibilities", "FARGATE", "--cpu", "0.5 vCPU", "--memory", "1 GB",
              "--container-definitions", containers)
    assert out["taskDefinition"]["cpu"] == "512" and out["taskDefinition"]["memory"] == "1024"
    out = aws("ecs", "describe-task-definition", "--task-definition", f"{fam}:1")
    assert out["taskDefinition"]["containerDefinitions"][0]["command"] == ["sleep", "60"]
    out = aws("ecs", "run-task", "--task-definition", fam, "--launch-type", "FARGATE",
              "--network-configuration", "awsvpcConfiguration={subnets=[subnet-1]}")
    arn = out["tasks"][0]["taskArn"]
    out = aws("ecs", "stop-task", "--task", arn)
    assert out["task"]["desiredStatus"] == "STOPPED"
