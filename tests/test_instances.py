"""Container instances and task placement through boto3: instances registered through
the API (RegisterContainerInstance, no agent) in a cluster of their own per test, then
RunTask/StartTask placed by berth's scheduler. No agent runs on these instances: their
tasks stay PROVISIONING, which is all the placement assertions need."""

import json
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from support import unique
# A server of its own without a built-in agent, so nothing moves a task.
from test_ecs_api import ecs, ecs_berth  # noqa: F401  (fixtures)


@pytest.fixture
def cluster(ecs):
    """A fresh cluster; its tasks are stopped and instances deregistered afterwards."""
    name = unique("inst")
    ecs.create_cluster(clusterName=name)
    yield name
    for arn in ecs.list_tasks(cluster=name)["taskArns"]:
        ecs.stop_task(cluster=name, task=arn)
    for arn in ecs.list_container_instances(cluster=name)["containerInstanceArns"]:
        ecs.deregister_container_instance(cluster=name, containerInstance=arn, force=True)
    ecs.delete_cluster(cluster=name)


def expect_error(code: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as e:
        fn(*args, **kwargs)
    assert e.value.response["Error"]["Code"] == code, e.value.response
    return e.value.response["Error"]["Message"]


def register(ecs, cluster, zone="us-east-1a", itype="t2.micro", cpu=2048, memory=4096,
             attributes=()):
    doc = json.dumps({"availabilityZone": zone, "instanceType": itype})
    out = ecs.register_container_instance(
        cluster=cluster,
        instanceIdentityDocument=doc,
        totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
        ],
        attributes=list(attributes),
    )
    return out["containerInstance"]["containerInstanceArn"]


def ec2_def(ecs, memory=512, cpu=128, family=None, **extra):
    family = family or unique("job")
    ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "c", "image": "busybox", "memory": memory, "cpu": cpu}],
        **extra,
    )
    return family


def run(ecs, cluster, family, count, **kwargs):
    return ecs.run_task(cluster=cluster, taskDefinition=family, count=count,
                        launchType="EC2", **kwargs)


def instances_of(out):
    return [t["containerInstanceArn"] for t in out["tasks"]]


def test_register_describe_list(ecs, cluster):
    """An API-registered instance shows ECS's shape: resources, attributes, no agent."""
    arn = register(ecs, cluster, attributes=[{"name": "stack", "value": "prod"}])
    assert f":container-instance/{cluster}/" in arn
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=[arn, "ffff"],
                                         include=["TAGS"])
    ci = d["containerInstances"][0]
    assert ci["status"] == "ACTIVE" and ci["agentConnected"] is False
    reg = {r["name"]: r for r in ci["registeredResources"]}
    assert reg["CPU"]["integerValue"] == 2048 and reg["MEMORY"]["integerValue"] == 4096
    assert "22" in reg["PORTS"]["stringSetValue"]
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["ecs.availability-zone"] == "us-east-1a"
    assert attrs["ecs.instance-type"] == "t2.micro" and attrs["stack"] == "prod"
    assert d["failures"] == [{"arn": "ffff", "reason": "MISSING"}]
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [arn]
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["registeredContainerInstancesCount"] == 1


def test_binpack_memory_fills_fullest_first(ecs, cluster):
    """binpack(memory) puts tasks on the instance with the least memory left until full."""
    small = register(ecs, cluster, memory=1024)
    big = register(ecs, cluster, memory=4096)
    fam = ec2_def(ecs, memory=512)
    out = run(ecs, cluster, fam, 3, placementStrategy=[{"type": "binpack", "field": "memory"}])
    assert instances_of(out) == [small, small, big]
    t = ecs.describe_tasks(cluster=cluster, tasks=[out["tasks"][0]["taskArn"]])["tasks"][0]
    assert t["containerInstanceArn"] == small and t["availabilityZone"] == "us-east-1a"
    listed = ecs.list_tasks(cluster=cluster, containerInstance=small)["taskArns"]
    assert len(listed) == 2
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=[small])
    rem = {r["name"]: r for r in d["containerInstances"][0]["remainingResources"]}
    assert rem["MEMORY"]["integerValue"] == 0


def test_spread_over_zones(ecs, cluster):
    """spread(attribute:ecs.availability-zone) places 4 tasks 2 + 2."""
    zones = {register(ecs, cluster, zone="us-east-1a"): "a",
             register(ecs, cluster, zone="us-east-1b"): "b"}
    fam = ec2_def(ecs)
    out = run(ecs, cluster, fam, 4, placementStrategy=[
        {"type": "spread", "field": "attribute:ecs.availability-zone"}])
    assert Counter(zones[i] for i in instances_of(out)) == {"a": 2, "b": 2}


def test_distinct_instance(ecs, cluster):
    """distinctInstance: one task of the group per instance; the rest fail."""
    a, b = register(ecs, cluster), register(ecs, cluster)
    fam = ec2_def(ecs)
    out = run(ecs, cluster, fam, 3, placementConstraints=[{"type": "distinctInstance"}])
    assert sorted(instances_of(out)) == sorted([a, b])
    assert out["failures"] and out["failures"][0]["reason"].startswith("DistinctInstance")


def test_member_of_instance_type(ecs, cluster):
    """memberOf(attribute:ecs.instance-type =~ t2.*) keeps tasks off other types."""
    t2 = register(ecs, cluster, itype="t2.small")
    register(ecs, cluster, itype="m5.large")
    fam = ec2_def(ecs)
    out = run(ecs, cluster, fam, 4, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}])
    assert instances_of(out) == [t2] * 4


def test_resource_and_attribute_failures(ecs, cluster):
    """Too much memory is RESOURCE:MEMORY; a missing required attribute is ATTRIBUTE."""
    register(ecs, cluster, memory=1024)
    fam = ec2_def(ecs, memory=2048)
    out = run(ecs, cluster, fam, 1)
    assert out["tasks"] == []
    assert out["failures"][0]["reason"] == "RESOURCE:MEMORY"
    assert ":container-instance/" in out["failures"][0]["arn"]
    fam = ec2_def(ecs, memory=64, placementConstraints=[
        {"type": "memberOf", "expression": "attribute:gpu exists"}])
    out = run(ecs, cluster, fam, 1)
    assert out["tasks"] == [] and out["failures"], out


def test_draining_stops_new_placement(ecs, cluster):
    """A DRAINING instance gets no new tasks; back to ACTIVE, it does."""
    a, b = register(ecs, cluster), register(ecs, cluster)
    u = ecs.update_container_instances_state(cluster=cluster, containerInstances=[a],
                                             status="DRAINING")
    assert u["containerInstances"][0]["status"] == "DRAINING"
    fam = ec2_def(ecs, memory=64)
    assert set(instances_of(run(ecs, cluster, fam, 5))) == {b}
    listed = ecs.list_container_instances(cluster=cluster, status="DRAINING")
    assert listed["containerInstanceArns"] == [a]
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[b],
                                         status="DRAINING")
    out = run(ecs, cluster, fam, 1)
    assert out["tasks"] == [] and out["failures"]
    expect_error("InvalidParameterException", ecs.update_container_instances_state,
                 cluster=cluster, containerInstances=[a], status="REGISTERING")


def test_start_task_and_deregister(ecs, cluster):
    """StartTask places on the named instance; deregistering one with tasks needs force."""
    a = register(ecs, cluster)
    fam = ec2_def(ecs)
    out = ecs.start_task(cluster=cluster, taskDefinition=fam, containerInstances=[a])
    assert instances_of(out) == [a]
    out = ecs.start_task(cluster=cluster, taskDefinition=fam, containerInstances=["abcd"])
    assert out["failures"] == [{"arn": "abcd", "reason": "MISSING"}]
    msg = expect_error("InvalidParameterException", ecs.deregister_container_instance,
                       cluster=cluster, containerInstance=a)
    assert "running tasks" in msg
    d = ecs.deregister_container_instance(cluster=cluster, containerInstance=a, force=True)
    assert d["containerInstance"]["status"] == "INACTIVE"
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []


def test_attributes(ecs, cluster):
    """Put/Delete/ListAttributes on instances, ListContainerInstances with a filter."""
    a, b = register(ecs, cluster), register(ecs, cluster)
    ecs.put_attributes(cluster=cluster, attributes=[
        {"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": a}])
    listed = ecs.list_attributes(cluster=cluster, targetType="container-instance",
                                 attributeName="stack", attributeValue="prod")["attributes"]
    assert listed == [{"name": "stack", "value": "prod", "targetType": "container-instance",
                       "targetId": a}]
    f = ecs.list_container_instances(cluster=cluster, filter="attribute:stack == prod")
    assert f["containerInstanceArns"] == [a]
    f = ecs.list_container_instances(cluster=cluster, filter="not(attribute:stack exists)")
    assert f["containerInstanceArns"] == [b]
    ecs.delete_attributes(cluster=cluster, attributes=[{"name": "stack", "targetId": a}])
    assert ecs.list_attributes(cluster=cluster, targetType="container-instance",
                               attributeName="stack")["attributes"] == []
    expect_error("TargetNotFoundException", ecs.put_attributes, cluster=cluster,
                 attributes=[{"name": "x", "targetId": "0123abcd"}])
    for i in range(10):
        ecs.put_attributes(cluster=cluster, attributes=[{"name": f"a{i}", "targetId": a}])
    expect_error("AttributeLimitExceededException", ecs.put_attributes, cluster=cluster,
                 attributes=[{"name": "eleven", "targetId": a}])
    expect_error("InvalidParameterException", ecs.list_container_instances, cluster=cluster,
                 filter="attribute:stack ==")


def test_capacity_providers(ecs, cluster):
    """FARGATE and FARGATE_SPOT exist; clusters accept only those."""
    names = [c["name"] for c in ecs.describe_capacity_providers()["capacityProviders"]]
    assert names == ["FARGATE", "FARGATE_SPOT"]
    out = ecs.describe_capacity_providers(capacityProviders=["FARGATE", "nope"])
    assert [c["status"] for c in out["capacityProviders"]] == ["ACTIVE"]
    assert out["failures"][0]["reason"] == "MISSING"
    ecs.put_cluster_capacity_providers(
        cluster=cluster, capacityProviders=["FARGATE"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["capacityProviders"] == ["FARGATE"]
    msg = expect_error("InvalidParameterException", ecs.put_cluster_capacity_providers,
                       cluster=cluster, capacityProviders=["my-asg"],
                       defaultCapacityProviderStrategy=[])
    assert "my-asg" in msg


def test_list_services_by_namespace(ecs):
    """No service references an unknown namespace."""
    assert ecs.list_services_by_namespace(namespace=unique("ns"))["serviceArns"] == []


def test_error_paths(ecs, cluster):
    """Unknown clusters, bad placement, bad status filters: ECS's exception names."""
    missing = unique("nope")
    for fn, kwargs in [
        (ecs.list_container_instances, {}),
        (ecs.describe_container_instances, {"containerInstances": ["abcd"]}),
        (ecs.list_attributes, {"targetType": "container-instance"}),
        (ecs.register_container_instance, {}),
    ]:
        expect_error("ClusterNotFoundException", fn, cluster=missing, **kwargs)
    register(ecs, cluster)
    fam = ec2_def(ecs)
    expect_error("InvalidParameterException", run, ecs, cluster, fam, 1,
                 placementStrategy=[{"type": "binpack", "field": "disk"}])
    expect_error("InvalidParameterException", run, ecs, cluster, fam, 1,
                 placementConstraints=[{"type": "memberOf", "expression": "attribute:x =="}])
    expect_error("InvalidParameterException", run, ecs, cluster, fam, 1,
                 placementStrategy=[{"type": "random"}] * 6)
    expect_error("InvalidParameterException", ecs.list_container_instances, cluster=cluster,
                 status="GONE")
    expect_error("InvalidParameterException", ecs.start_task, cluster=cluster,
                 taskDefinition=fam, containerInstances=[])
