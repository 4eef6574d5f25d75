"""ECS services on the server's own node, through boto3 and the aws CLI: the
getting-started path (task definition → cluster → service → running → a stopped task
replaced → scaled → deleted), rolling deployments, the circuit breaker, and the errors."""

from __future__ import annotations

import json
import os

import botocore.exceptions
import pytest

import support
from support import wait_for

APPLETS = ["sh", "sleep", "true", "test", "echo"]
# Stops at SIGTERM (busybox as pid 1 ignores it otherwise) so tests do not wait out stopTimeout.
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


def build_image(berth_bin, srv, ctx) -> str:
    """Builds and pushes a busybox image to `srv`; returns its reference."""
    return support.build_busybox_image(berth_bin, srv, ctx, APPLETS, "svc")


@pytest.fixture(scope="module")
def image(berth_bin, berth, tmp_path_factory) -> str:
    return build_image(berth_bin, berth, tmp_path_factory.mktemp("svc-ctx"))


@pytest.fixture
def cluster(berth):
    """A cluster of the test's own; its services are scaled to 0 and deleted at the end."""
    ecs = berth.ecs()
    name = support.unique("cl")
    ecs.create_cluster(clusterName=name)
    yield name
    for arn in ecs.list_services(cluster=name)["serviceArns"]:
        try:
            ecs.delete_service(cluster=name, service=arn, force=True)
        except botocore.exceptions.ClientError:
            pass
    wait_for(lambda: not ecs.list_tasks(cluster=name, desiredStatus="RUNNING")["taskArns"] and
             all(t["lastStatus"] == "STOPPED" for t in _tasks(ecs, name)), "the cluster's tasks stopped")


def _tasks(ecs, cluster) -> list[dict]:
    arns = ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] + \
        ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]
    return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []


def register(ecs, image, family=None, **container) -> str:
    c = {"name": "app", "image": image, "essential": True, "command": LOOP, "stopTimeout": 2}
    c.update(container)
    d = ecs.register_task_definition(family=family or support.unique("fam"), networkMode="awsvpc",
                                     requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                                     containerDefinitions=[c])
    return d["taskDefinition"]["taskDefinitionArn"]


def service(ecs, cluster, name="web") -> dict:
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def running_tasks(ecs, cluster, name="web") -> list[str]:
    return ecs.list_tasks(cluster=cluster, serviceName=name, desiredStatus="RUNNING")["taskArns"]


def test_getting_started_path(berth, aws, image, cluster):
    """A service of 3 runs 3 tasks; a stopped task is replaced; scaling up and the
    delete path (refused while above 0, then DRAINING → INACTIVE) work; events tell it."""
    ecs = berth.ecs()
    td = register(ecs, image)
    out = ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=3,
                             launchType="FARGATE")["service"]
    assert out["serviceName"] == "web" and out["status"] == "ACTIVE" and out["desiredCount"] == 3
    assert out["serviceArn"].endswith(f":service/{cluster}/web")
    wait_for(lambda: service(ecs, cluster)["runningCount"] == 3, "3 tasks RUNNING")
    tasks = running_tasks(ecs, cluster)
    assert len(tasks) == 3
    described = ecs.describe_tasks(cluster=cluster, tasks=tasks)["tasks"]
    assert {t["group"] for t in described} == {"service:web"}
    assert all(t["startedBy"].startswith("ecs-svc/") for t in described)

    ecs.stop_task(cluster=cluster, task=tasks[0], reason="testing replacement")
    wait_for(lambda: tasks[0] not in running_tasks(ecs, cluster) and
             len(running_tasks(ecs, cluster)) == 3 and service(ecs, cluster)["runningCount"] == 3,
             "the stopped task replaced")

    # Scale with the real aws CLI.
    aws("ecs", "update-service", "--cluster", cluster, "--service", "web", "--desired-count", "5")
    wait_for(lambda: service(ecs, cluster)["runningCount"] == 5, "scaled to 5")
    listed = aws("ecs", "list-services", "--cluster", cluster)["serviceArns"]
    assert [a.rsplit("/", 1)[1] for a in listed] == ["web"]
    messages = [e["message"] for e in service(ecs, cluster)["events"]]
    assert any(m.startswith("(service web) has started") for m in messages), messages

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.delete_service(cluster=cluster, service="web")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "scaled above 0" in e.value.response["Error"]["Message"]
    ecs.update_service(cluster=cluster, service="web", desiredCount=0)
    assert ecs.delete_service(cluster=cluster, service="web")["service"]["status"] == "DRAINING"
    wait_for(lambda: service(ecs, cluster)["status"] == "INACTIVE", "the service INACTIVE")
    assert running_tasks(ecs, cluster) == []
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []


def test_rolling_deployment(berth, image, cluster):
    """UpdateService with a new revision replaces every task, never going below the
    minimum healthy count, and the new deployment completes."""
    ecs = berth.ecs()
    family = support.unique("roll")
    hc = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
    v1 = register(ecs, image, family=family, healthCheck=hc)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=v1, desiredCount=2,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    wait_for(lambda: service(ecs, cluster)["deployments"][0]["rolloutState"] == "COMPLETED",
             "the first deployment COMPLETED", deadline_s=90)
    v2 = register(ecs, image, family=family, healthCheck=hc, environment=[{"name": "V", "value": "2"}])
    ecs.update_service(cluster=cluster, service="web", taskDefinition=v2)
    lowest = [2]

    def done():
        s = service(ecs, cluster)
        lowest[0] = min(lowest[0], s["runningCount"])
        deps = s["deployments"]
        return len(deps) == 1 and deps[0]["taskDefinition"] == v2 and deps[0]["rolloutState"] == "COMPLETED" \
            and deps[0]["runningCount"] == 2
    wait_for(done, "the rolling deployment to v2 COMPLETED", deadline_s=120)
    assert lowest[0] >= 1, "never below minimumHealthyPercent 50 of 2"
    tds = {t["taskDefinitionArn"] for t in ecs.describe_tasks(
        cluster=cluster, tasks=running_tasks(ecs, cluster))["tasks"]}
    assert tds == {v2}


def test_circuit_breaker_rolls_back(berth, image, cluster):
    """A deployment to an image that cannot be pulled trips the circuit breaker and
    rolls back to the last completed deployment."""
    ecs = berth.ecs()
    family = support.unique("cb")
    hc = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
    good = register(ecs, image, family=family, healthCheck=hc)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=good, desiredCount=3,
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    wait_for(lambda: service(ecs, cluster)["deployments"][0]["rolloutState"] == "COMPLETED",
             "the first deployment COMPLETED", deadline_s=90)
    broken = register(ecs, image.rsplit(":", 1)[0] + ":no-such-tag", family=family)
    ecs.update_service(cluster=cluster, service="web", taskDefinition=broken)

    def rolled_back():
        s = service(ecs, cluster)
        failed = [d for d in s["deployments"] if d["taskDefinition"] == broken]
        return s if (not failed or failed[0]["rolloutState"] == "FAILED") and \
            s["deployments"][0]["taskDefinition"] == good else None
    s = wait_for(rolled_back, "the circuit breaker to roll back", deadline_s=120)
    messages = " ".join(e["message"] for e in s["events"])
    assert "circuit breaker" in messages or "rolling back" in messages, messages
    stopped = [t for t in _tasks(ecs, cluster) if t["taskDefinitionArn"] == broken]
    # The broken tasks failed to pull (a task the rollback stopped first may say so instead).
    assert stopped and any("CannotPullContainerError" in (t.get("stoppedReason") or "") or
                           any("CannotPullContainerError" in (c.get("reason") or "") for c in t["containers"])
                           for t in stopped), [(t.get("stoppedReason"), [c.get("reason") for c in t["containers"]]) for t in stopped]
    wait_for(lambda: service(ecs, cluster)["runningCount"] == 3, "the good tasks still serving")


def test_service_errors(berth, image, cluster):
    """Unknown clusters and services, duplicate names and bad input get ECS's exceptions."""
    ecs = berth.ecs()
    td = register(ecs, image)

    def code(f, **kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            f(**kw)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    assert code(ecs.create_service, cluster="no-such-cluster", serviceName="x", taskDefinition=td,
                desiredCount=1)[0] == "ClusterNotFoundException"
    assert code(ecs.update_service, cluster=cluster, service="nope", desiredCount=1)[0] == \
        "ServiceNotFoundException"
    assert code(ecs.create_service, cluster=cluster, serviceName="bad name!", taskDefinition=td,
                desiredCount=1)[0] == "InvalidParameterException"
    assert code(ecs.create_service, cluster=cluster, serviceName="x", taskDefinition="nope:9",
                desiredCount=1)[0] in ("InvalidParameterException", "ClientException")
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=0)
    assert code(ecs.create_service, cluster=cluster, serviceName="web", taskDefinition=td,
                desiredCount=0) == ("InvalidParameterException", "Creation of service was not idempotent.")
    out = ecs.describe_services(cluster=cluster, services=["web", "missing"])
    assert [s["serviceName"] for s in out["services"]] == ["web"]
    assert out["failures"][0]["reason"] == "MISSING"


def test_service_cli(berth_bin, berth, image, cluster):
    """`berth service create|ls|ps|scale|update|events|rm` and `berth cluster ls` over the API."""
    import subprocess

    def cli(*args, check=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        p = subprocess.run([str(berth_bin), args[0], "--endpoint-url", berth.url, "--data-dir",
                            str(berth.data_dir), "--cluster", cluster, *args[1:]],
                           env=env, capture_output=True, text=True, timeout=120)
        if check:
            assert p.returncode == 0, p.stderr
        return p.stdout

    ecs = berth.ecs()
    cli("service", "create", "--name", "web", "--replicas", "2", image, *LOOP)
    wait_for(lambda: service(ecs, cluster)["runningCount"] == 2, "2 tasks RUNNING")
    rows = [l.split() for l in cli("service", "ls").splitlines()[1:]]
    assert rows[0][:5] == ["web", "ACTIVE", "2", "2", "0"], rows
    cli("service", "scale", "web", "3")
    wait_for(lambda: len(cli("service", "ps", "web").splitlines()) == 4, "3 tasks in berth service ps")
    before = set(running_tasks(ecs, cluster))
    cli("service", "update", "web", "--force")
    wait_for(lambda: not (set(running_tasks(ecs, cluster)) & before) and
             len(running_tasks(ecs, cluster)) == 3, "every task replaced by the forced deployment", deadline_s=120)
    assert "has started" in cli("service", "events", "web")
    cli("service", "rm", "web")
    wait_for(lambda: service(ecs, cluster)["status"] == "INACTIVE", "the service gone")


def test_tags(berth, aws, image, cluster):
    """TagResource/UntagResource/ListTagsForResource on clusters, task definitions and
    services, and the errors for unknown and malformed ARNs."""
    ecs = berth.ecs()
    td = register(ecs, image)
    carn = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"]
    sarn = ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td,
                              desiredCount=0)["service"]["serviceArn"]
    for arn in (carn, td, sarn):
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "team", "value": "a"}, {"key": "env", "value": "dev"}])
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "env", "value": "prod"}])
        ecs.untag_resource(resourceArn=arn, tagKeys=["team"])
        assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "env", "value": "prod"}]
    out = aws("ecs", "list-tags-for-resource", "--resource-arn", sarn)
    assert out["tags"] == [{"key": "env", "value": "prod"}]

    def code(**kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ecs.list_tags_for_resource(**kw)
        return e.value.response["Error"]["Code"]

    assert code(resourceArn=sarn.rsplit("/", 1)[0] + "/nope") == "ResourceNotFoundException"
    assert code(resourceArn=carn + "-nope") == "ClusterNotFoundException"
    assert code(resourceArn="not-an-arn") == "InvalidParameterException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.tag_resource(resourceArn=carn, tags=[{"key": "aws:x", "value": "y"}])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_server_kill_9_mid_deployment_converges(berth_bin, berth_factory, tmp_path):
    """A server killed with SIGKILL in the middle of a rolling deployment restarts into
    its committed state and finishes the deployment: exactly desiredCount tasks of the
    new revision run, and no container is left behind on the host."""
    import subprocess
    srv = berth_factory()
    image = build_image(berth_bin, srv, tmp_path)
    ecs = srv.ecs()
    ecs.create_cluster(clusterName="crash")
    family = support.unique("crash")
    hc = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
    v1 = register(ecs, image, family=family, healthCheck=hc)
    ecs.create_service(cluster="crash", serviceName="web", taskDefinition=v1, desiredCount=3,
                       deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200})
    wait_for(lambda: service(ecs, "crash")["deployments"][0]["rolloutState"] == "COMPLETED",
             "the first deployment COMPLETED", deadline_s=90)
    v2 = register(ecs, image, family=family, healthCheck=hc, environment=[{"name": "V", "value": "2"}])
    ecs.update_service(cluster="crash", service="web", taskDefinition=v2)
    wait_for(lambda: any(t["taskDefinitionArn"] == v2 for t in _tasks(ecs, "crash")),
             "the rollout to v2 under way")
    srv.kill()
    srv.start()
    ecs = srv.ecs()

    def converged():
        s = service(ecs, "crash")
        deps = s["deployments"]
        run = running_tasks(ecs, "crash")
        return len(deps) == 1 and deps[0]["taskDefinition"] == v2 and \
            deps[0]["rolloutState"] == "COMPLETED" and s["runningCount"] == 3 and len(run) == 3 and run
    run = wait_for(converged, "the deployment to v2 finished after the restart", deadline_s=150)
    tasks = ecs.describe_tasks(cluster="crash", tasks=run)["tasks"]
    assert {t["taskDefinitionArn"] for t in tasks} == {v2}
    # The host runs exactly the three tasks' containers: nothing orphaned by the crash.
    out = subprocess.run(["runc", "--root", str(srv.data_dir / "agent" / "runc"), "list", "-q"],
                         capture_output=True, text=True, check=True).stdout.split()
    states = [subprocess.run(["runc", "--root", str(srv.data_dir / "agent" / "runc"), "state", c],
                             capture_output=True, text=True).stdout for c in out]
    running = [s for s in states if '"status": "running"' in s]
    assert len(running) == 3, states
    ecs.update_service(cluster="crash", service="web", desiredCount=0)
    wait_for(lambda: not running_tasks(ecs, "crash"), "scaled to 0")
