"""Many hosts on one machine: `berth server --hosts 2 --zones a,b` makes two test hosts
(network namespaces, each running `berth agent` as a child) that join the server as
container instances. Proves: both register with their zones; an EC2 service spread over
zones places 2+2; a task on one host reaches a task on the other, and the test (the
server's side) reaches both; kill -9 of one host's agent gets its tasks STOPPED with a
reason and replaced on the other host within 30 s; stopping the server removes the
hosts. A host with a wrong token is refused and told why."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import requests

import support
from support import wait_for

APPLETS = ["sh", "sleep", "true", "httpd", "wget", "echo", "cat", "ip", "mkdir", "nslookup"]
HTTPD = ["sh", "-c", "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def cluster_server(berth_factory):
    before = _netns()
    dns_port = support.free_listen_port()
    srv = berth_factory(["--hosts", "2", "--zones", "a,b", "--dns", f"127.0.0.1:{dns_port}"])
    srv.dns_port = dns_port
    ecs = srv.ecs()

    def joined():
        arns = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
        if len(arns) != 2:
            return None
        ci = ecs.describe_container_instances(cluster="default", containerInstances=arns)["containerInstances"]
        return ci if all(c["agentConnected"] and c["status"] == "ACTIVE" for c in ci) else None
    instances = wait_for(joined, "two test hosts registered", deadline_s=60)
    hosts = {n for n in _netns() - before if "-host" in n}
    yield srv, instances, hosts
    srv.stop()
    # Stopping the server removes the hosts (namespaces; their agents and tasks with them).
    assert not (_netns() & hosts), f"test hosts left behind: {_netns() & hosts}"


def _build(berth_bin, srv, ctx) -> str:
    return support.build_busybox_image(berth_bin, srv, ctx, APPLETS, "hosts")


@pytest.fixture(scope="module")
def image(berth_bin, cluster_server, tmp_path_factory) -> str:
    return _build(berth_bin, cluster_server[0], tmp_path_factory.mktemp("hosts-ctx"))


def _attr(ci: dict, name: str) -> str | None:
    return next((a.get("value") for a in ci["attributes"] if a["name"] == name), None)


def test_hosts_register_with_zones(cluster_server):
    """Each test host is an ACTIVE container instance with its zone, type and resources."""
    _, instances, hosts = cluster_server
    assert len(hosts) == 2
    assert sorted(_attr(c, "ecs.availability-zone") for c in instances) == ["a", "b"]
    assert {_attr(c, "ecs.instance-type") for c in instances} == {"berth.testhost"}
    for c in instances:
        reg = {r["name"]: r for r in c["registeredResources"]}
        assert reg["CPU"]["integerValue"] >= 1024 and reg["MEMORY"]["integerValue"] > 256


def _running(ecs, cluster, service):
    arns = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus="RUNNING")["taskArns"]
    if not arns:
        return []
    return [t for t in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]


def _ip(task: dict) -> str:
    return task["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]


def _cli(berth_bin, srv, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run([str(berth_bin), args[0], "--endpoint-url", srv.url, "--data-dir",
                        str(srv.data_dir), *args[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_instances_cli_and_draining(berth_bin, cluster_server, image):
    """`berth instances` lists both hosts with their zones; draining one moves a service's
    task to the other (ECS's DRAINING: the replacement starts first), and `activate`
    takes the host back."""
    srv, instances, _ = cluster_server
    ecs = srv.ecs()
    out = _cli(berth_bin, srv, "instances")
    rows = out.splitlines()[1:]
    assert len(rows) == 2, out
    assert sorted(r.split()[1] for r in rows) == ["a", "b"], out
    td = ecs.register_task_definition(
        family=support.unique("drain"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "app", "image": image, "essential": True, "memory": 32,
                               "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                               "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5,
                                               "timeout": 2, "retries": 1},
                               "stopTimeout": 2}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="default", serviceName="drain", taskDefinition=td, desiredCount=2,
                       launchType="EC2", placementStrategy=[{"type": "spread", "field": "instanceId"}])
    wait_for(lambda: len(_running(ecs, "default", "drain")) == 2, "2 tasks RUNNING, one per host", deadline_s=60)
    b = next(c for c in instances if _attr(c, "ecs.availability-zone") == "b")
    b_id = b["containerInstanceArn"].rsplit("/", 1)[1]
    _cli(berth_bin, srv, "instances", "drain", b_id)
    ci = ecs.describe_container_instances(cluster="default", containerInstances=[b_id])["containerInstances"][0]
    assert ci["status"] == "DRAINING"
    # The task on b is replaced on a (started first: minimumHealthyPercent 100), then stopped.
    wait_for(lambda: len(r := _running(ecs, "default", "drain")) == 2 and
             all(t["containerInstanceArn"] != b["containerInstanceArn"] for t in r),
             "no task left on the draining host", deadline_s=60)
    _cli(berth_bin, srv, "instances", "activate", b_id)
    ci = ecs.describe_container_instances(cluster="default", containerInstances=[b_id])["containerInstances"][0]
    assert ci["status"] == "ACTIVE"
    ecs.update_service(cluster="default", service="drain", desiredCount=0)
    ecs.delete_service(cluster="default", service="drain")
    wait_for(lambda: not _running(ecs, "default", "drain"), "the drain service's tasks stopped")


def test_service_cli_on_hosts(berth_bin, cluster_server, image):
    """`berth service create --launch-type EC2 --spread zone` puts one task in each zone,
    and `berth service ps` shows where each runs."""
    srv = cluster_server[0]
    ecs = srv.ecs()
    _cli(berth_bin, srv, "service", "create", "--name", "zoned", "--replicas", "2", "--launch-type", "EC2",
         "--spread", "zone", image, "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done")
    wait_for(lambda: len(_running(ecs, "default", "zoned")) == 2, "2 tasks RUNNING", deadline_s=60)
    rows = [l for l in _cli(berth_bin, srv, "service", "ps", "zoned").splitlines()[1:] if "RUNNING" in l]
    nodes = sorted(l.split()[5].split("/")[0] for l in rows)
    assert nodes == ["a", "b"], rows
    p = subprocess.run([str(berth_bin), "service", "--endpoint-url", srv.url, "--data-dir", str(srv.data_dir),
                        "create", "--name", "x", "--spread", "zone", image], capture_output=True, text=True)
    assert p.returncode != 0 and "--launch-type EC2" in p.stderr, p.stderr
    _cli(berth_bin, srv, "service", "rm", "zoned")
    wait_for(lambda: not _running(ecs, "default", "zoned"), "the zoned service's tasks stopped")


def test_bridge_mode_service_behind_alb(cluster_server, image):
    """Bridge networking with dynamic host ports behind an ALB, as ECS does it: the
    target group has target type instance, each task is registered as its container
    instance's ec2InstanceId and the host port it was given, requests through the
    listener reach both tasks on both hosts, and a stopped task's target goes away."""
    srv, instances, _ = cluster_server
    ecs, elb = srv.ecs(), srv._client("elbv2")
    names = "hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    web = ["sh", "-c", "mkdir -p /www && " + names]
    lb, arn, port = support.lb_forwarding(elb, "br")
    # ELB's default target type, what bridge mode needs.
    assert elb.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]["TargetType"] == "instance"
    # An instance id no container instance has is refused.
    with pytest.raises(elb.exceptions.InvalidTargetException):
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0", "Port": 80}])

    td = ecs.register_task_definition(
        family=support.unique("bridge"), networkMode="bridge", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "essential": True, "memory": 32,
                               "command": web, "stopTimeout": 2,
                               "portMappings": [{"containerPort": 8080, "hostPort": 0}]}])["taskDefinition"]
    # An ip target group does not fit bridge mode.
    ip_tg = elb.create_target_group(Name=support.unique("brip")[:32], Protocol="HTTP", Port=80, TargetType="ip",
                                    VpcId="vpc-berth")["TargetGroups"][0]
    elb.create_rule(ListenerArn=elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"][0]["ListenerArn"],
                    Priority=5, Conditions=[{"Field": "path-pattern", "Values": ["/nowhere"]}],
                    Actions=[{"Type": "forward", "TargetGroupArn": ip_tg["TargetGroupArn"]}])
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="target type ip"):
        ecs.create_service(cluster="default", serviceName=support.unique("brbad"), taskDefinition=td["taskDefinitionArn"],
                           desiredCount=1, launchType="EC2",
                           loadBalancers=[{"targetGroupArn": ip_tg["TargetGroupArn"], "containerName": "web",
                                           "containerPort": 8080}])

    ecs.create_service(cluster="default", serviceName="bridged", taskDefinition=td["taskDefinitionArn"],
                       desiredCount=2, launchType="EC2",
                       loadBalancers=[{"targetGroupArn": arn, "containerName": "web", "containerPort": 8080}],
                       placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}])
    run = wait_for(lambda: (r := _running(ecs, "default", "bridged")) and len(r) == 2 and r, "2 tasks RUNNING",
                   deadline_s=60)
    ec2_ids = {c["containerInstanceArn"]: c["ec2InstanceId"] for c in ecs.describe_container_instances(
        cluster="default", containerInstances=[c["containerInstanceArn"] for c in instances])["containerInstances"]}
    assert all(i.startswith("i-") for i in ec2_ids.values())
    want = sorted((ec2_ids[t["containerInstanceArn"]], t["containers"][0]["networkBindings"][0]["hostPort"])
                  for t in run)
    assert len({i for i, _ in want}) == 2  # one task per host

    def healthy():
        return support.healthy_targets(elb, arn)
    wait_for(lambda: healthy() == want, "both tasks healthy instance targets", deadline_s=60)
    seen = {requests.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip() for _ in range(20)}
    assert len(seen) == 2, seen

    # Scaled to one: the stopped task's target is deregistered, the other keeps serving.
    ecs.update_service(cluster="default", service="bridged", desiredCount=1)
    wait_for(lambda: len(healthy()) == 1 and len(elb.describe_target_health(TargetGroupArn=arn)
                                                 ["TargetHealthDescriptions"]) == 1, "one target left", deadline_s=60)
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    ecs.update_service(cluster="default", service="bridged", desiredCount=0)
    ecs.delete_service(cluster="default", service="bridged")
    wait_for(lambda: not _running(ecs, "default", "bridged"), "the bridged service's tasks stopped")


def test_bridge_mode_service_in_cloud_map_srv(cluster_server, image):
    """Bridge networking with dynamic host ports in Cloud Map, as ECS does it: the
    registry entry names the container and its port, the Cloud Map service has SRV
    records, and each task is registered with its container instance's address and its
    host port. DiscoverInstances and `dig SRV` give exactly those, a client following
    them reaches both tasks, and a stopped task's instance goes away. A Cloud Map
    service with A records, or no containerName/containerPort, is refused for bridge
    mode with ECS's reasons."""
    srv, instances, _ = cluster_server
    ecs, sd = srv.ecs(), srv.servicediscovery()
    ns, ns_id = support.dns_namespace(sd, "srv")
    reg = sd.create_service(Name="web", NamespaceId=ns_id,
                            DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 5}]})["Service"]
    reg_a = sd.create_service(Name="web-a", NamespaceId=ns_id,
                              DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 5}]})["Service"]
    names = "hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    td = ecs.register_task_definition(
        family=support.unique("srvbr"), networkMode="bridge", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "essential": True, "memory": 32,
                               "command": ["sh", "-c", "mkdir -p /www && " + names], "stopTimeout": 2,
                               "portMappings": [{"containerPort": 8080, "hostPort": 0}]}])["taskDefinition"]
    bad = dict(cluster="default", serviceName=support.unique("srvbad"), taskDefinition=td["taskDefinitionArn"],
               desiredCount=1, launchType="EC2")
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="containerName"):
        ecs.create_service(**bad, serviceRegistries=[{"registryArn": reg["Arn"]}])
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="A record"):
        ecs.create_service(**bad, serviceRegistries=[{"registryArn": reg_a["Arn"], "containerName": "web",
                                                      "containerPort": 8080}])

    ecs.create_service(cluster="default", serviceName="srvbr", taskDefinition=td["taskDefinitionArn"],
                       desiredCount=2, launchType="EC2",
                       serviceRegistries=[{"registryArn": reg["Arn"], "containerName": "web", "containerPort": 8080}],
                       placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}])
    run = wait_for(lambda: (r := _running(ecs, "default", "srvbr")) and len(r) == 2 and r, "2 tasks RUNNING",
                   deadline_s=60)
    ports = sorted(t["containers"][0]["networkBindings"][0]["hostPort"] for t in run)

    def discovered():
        return support.discovered(sd, ns, "web")
    got = wait_for(lambda: (d := discovered()) and len(d) == 2 and d, "both tasks in Cloud Map", deadline_s=60)
    assert sorted(p for _, p in got) == ports
    assert len({a for a, _ in got}) == 2  # one task per host, each at its host's address
    # A client following the registrations reaches both tasks.
    seen = {requests.get(f"http://{a}:{p}/", timeout=5).text.strip() for a, p in got}
    assert len(seen) == 2, seen

    # DNS: SRV records with the host ports, their targets resolving to the hosts.
    def srv_records():
        out = subprocess.run(["dig", "+short", "-p", str(srv.dns_port), "@127.0.0.1", f"web.{ns}", "SRV"],
                             capture_output=True, text=True, timeout=10).stdout.split("\n")
        recs = []
        for line in filter(None, out):
            _, _, port, target = line.split()
            a = subprocess.run(["dig", "+short", "-p", str(srv.dns_port), "@127.0.0.1", target, "A"],
                               capture_output=True, text=True, timeout=10).stdout.split()
            recs.append((a[0] if a else None, int(port)))
        return sorted(recs)
    wait_for(lambda: srv_records() == got, "dig SRV answers the hosts' addresses and host ports")

    # Scaled to one: the stopped task's instance is deregistered.
    ecs.update_service(cluster="default", service="srvbr", desiredCount=1)
    wait_for(lambda: len(discovered()) == 1, "one instance left", deadline_s=60)
    left = _running(ecs, "default", "srvbr")
    assert [p for _, p in discovered()] == [t["containers"][0]["networkBindings"][0]["hostPort"] for t in left]
    ecs.update_service(cluster="default", service="srvbr", desiredCount=0)
    ecs.delete_service(cluster="default", service="srvbr")
    wait_for(lambda: not _running(ecs, "default", "srvbr"), "the srvbr service's tasks stopped")
    wait_for(lambda: discovered() == [], "no instance left")


def test_tasks_on_hosts_resolve_cloud_map_names(cluster_server, image):
    """A service on the test hosts registered in Cloud Map: a task on each live host
    resolves its name (through the host's forwarder to the server's DNS) to exactly the
    service's task addresses."""
    srv, instances, _ = cluster_server
    ecs, sd = srv.ecs(), srv.servicediscovery()
    ns, ns_id = support.dns_namespace(sd, "hosts")
    reg = sd.create_service(Name="web", NamespaceId=ns_id,
                            DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 5}]})["Service"]
    td = ecs.register_task_definition(
        family=support.unique("named"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "essential": True, "memory": 32,
                               "command": HTTPD, "stopTimeout": 2}])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="default", serviceName="named", taskDefinition=td, desiredCount=2,
                       launchType="EC2", serviceRegistries=[{"registryArn": reg["Arn"]}],
                       placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}])
    run = wait_for(lambda: (r := _running(ecs, "default", "named")) and len(r) == 2 and r, "2 tasks RUNNING",
                   deadline_s=60)
    ips = sorted(_ip(t) for t in run)
    probe = ecs.register_task_definition(
        family=support.unique("resolve"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "p", "image": image, "essential": True, "memory": 32,
                               "command": ["nslookup", f"web.{ns}"]}])["taskDefinition"]["taskDefinitionArn"]
    # Every host whose agent still runs (an earlier test kills one).
    live = [c for c in ecs.describe_container_instances(
        cluster="default", containerInstances=[c["containerInstanceArn"] for c in instances])["containerInstances"]
        if c["agentConnected"]]
    assert live
    for ci in live:
        def resolved():
            arn = ecs.start_task(cluster="default", taskDefinition=probe,
                                 containerInstances=[ci["containerInstanceArn"]])["tasks"][0]["taskArn"]
            t = wait_for(lambda: (x := ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"][0])
                         ["lastStatus"] == "STOPPED" and x, "the probe finished", deadline_s=60)
            logs = srv.logs().get_log_events(logGroupName="x", logStreamName=f"ecs/p/{arn.rsplit('/', 1)[1]}")
            out = "".join(e["message"] for e in logs["events"])
            return out if t["containers"][0].get("exitCode") == 0 and all(ip in out for ip in ips) else None
        # The registrations reach DNS within a controller round: retry the probe until then.
        wait_for(resolved, f"a task on {_attr(ci, 'ecs.availability-zone')} resolving web.{ns}", deadline_s=60)
    ecs.update_service(cluster="default", service="named", desiredCount=0)
    ecs.delete_service(cluster="default", service="named")
    wait_for(lambda: not _running(ecs, "default", "named"), "the named service's tasks stopped")


def test_spread_cross_host_traffic_and_healing(berth_bin, cluster_server, image):
    """Spread over zones places 2+2; tasks reach each other across hosts; killing one
    host's agent (kill -9) stops its tasks with a reason and the service heals onto the
    other host within 30 s."""
    srv, instances, _ = cluster_server
    ecs = srv.ecs()
    zone_of = {c["containerInstanceArn"]: _attr(c, "ecs.availability-zone") for c in instances}
    td = ecs.register_task_definition(
        family=support.unique("web"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "essential": True, "memory": 64,
                               "cpu": 64, "command": HTTPD, "stopTimeout": 2}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="default", serviceName="spread", taskDefinition=td, desiredCount=4,
                       launchType="EC2",
                       placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}])
    tasks = wait_for(lambda: (r := _running(ecs, "default", "spread")) and len(r) == 4 and r,
                     "4 tasks RUNNING", deadline_s=90)
    per_zone = {}
    for t in tasks:
        z = zone_of[t["containerInstanceArn"]]
        assert t["availabilityZone"] == z
        per_zone[z] = per_zone.get(z, 0) + 1
    assert per_zone == {"a": 2, "b": 2}

    # The server's side (this test, in the machine's namespace) reaches every task.
    for t in tasks:
        r = wait_for(lambda: _get(f"http://{_ip(t)}:8080/"), f"task {_ip(t)} answering")
        assert r.text.strip() == "pong"
    # A task on host a fetches from a task on host b.
    b_task = next(t for t in tasks if zone_of[t["containerInstanceArn"]] == "b")
    a_instance = next(arn for arn, z in zone_of.items() if z == "a")
    probe = ecs.register_task_definition(
        family=support.unique("probe"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "probe", "image": image, "essential": True, "memory": 32,
                               "command": ["sh", "-c", f"wget -O - http://{_ip(b_task)}:8080/ 2>&1; ip addr; ip route; cat /etc/hosts"]}],
    )["taskDefinition"]["taskDefinitionArn"]
    started = ecs.start_task(cluster="default", taskDefinition=probe, containerInstances=[a_instance])
    assert not started["failures"], started["failures"]
    parn = started["tasks"][0]["taskArn"]
    done = wait_for(lambda: (t := ecs.describe_tasks(cluster="default", tasks=[parn])["tasks"][0])
                    ["lastStatus"] == "STOPPED" and t, "the probe task finished", deadline_s=60)
    logs = srv.logs().get_log_events(logGroupName="x", logStreamName=f"ecs/probe/{parn.rsplit('/', 1)[1]}")
    out = "".join(e["message"] for e in logs["events"])
    assert done["containers"][0].get("exitCode") == 0, out

    # kill -9 host b's agent: its tasks are stopped with a reason and replaced on host a.
    b_instance = next(arn for arn, z in zone_of.items() if z == "b")
    pid = _agent_pid(srv, b_instance)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def healed():
        run = _running(ecs, "default", "spread")
        return len(run) == 4 and all(t["containerInstanceArn"] == a_instance for t in run) and run
    wait_for(healed, "the service healed onto host a", deadline_s=45)
    took = time.monotonic() - killed_at
    assert took < 30, f"healing took {took:.1f}s"
    lost = ecs.describe_tasks(cluster="default", tasks=[t["taskArn"] for t in tasks
                                                        if t["containerInstanceArn"] == b_instance])["tasks"]
    assert all(t["lastStatus"] == "STOPPED" for t in lost)
    assert all("stopped answering" in t["stoppedReason"] for t in lost), [t["stoppedReason"] for t in lost]
    ci = ecs.describe_container_instances(cluster="default", containerInstances=[b_instance])["containerInstances"][0]
    assert ci["agentConnected"] is False
    ecs.update_service(cluster="default", service="spread", desiredCount=0)
    ecs.delete_service(cluster="default", service="spread")


def _get(url):
    try:
        r = requests.get(url, timeout=2)
        return r if r.status_code == 200 else None
    except requests.RequestException:
        return None


def _agent_pid(srv, instance_arn) -> int:
    """The pid of the `berth agent` child that joined as `instance_arn` (its log says so)."""
    for host in sorted((srv.data_dir / "hosts").iterdir()):
        if instance_arn in (host / "agent.log").read_text(errors="replace"):
            out = subprocess.run(["pgrep", "-f", f"agent .*--data-dir {host} "], capture_output=True, text=True)
            pids = [int(p) for p in out.stdout.split()]
            assert len(pids) == 1, f"agent processes for {host}: {pids}"
            return pids[0]
    raise AssertionError(f"no test host joined as {instance_arn}")


def test_wrong_token_is_refused(berth_bin, cluster_server, tmp_path):
    """An agent with a token for another server is refused before it sets anything up,
    and told why."""
    srv = cluster_server[0]
    token = (srv.data_dir / "join-token").read_text().strip()
    bad = token[: token.rindex("-") + 1] + "0" * 48
    gw = _gateway_listener(srv)
    p = subprocess.run([str(berth_bin), "agent", "--server", gw, "--token", bad, "--data-dir",
                        str(tmp_path / "agent"), "--bridge", "bt" + os.urandom(4).hex(),
                        "--task-subnet", "10.250.77.0/24"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "RUST_BACKTRACE": "0"})
    assert p.returncode != 0
    assert "join token is not valid" in p.stderr, p.stderr
    assert not (tmp_path / "agent" / "node").exists(), "a refused agent set up its node"


def _gateway_listener(srv) -> str:
    for line in srv.log_path.read_text(errors="replace").splitlines():
        if "test hosts running" in line and "gateway=" in line:
            return line.split("gateway=")[1].split()[0]
    raise AssertionError("the server did not log where the test hosts join")


class _Agent:
    """A `berth agent` in the machine's namespace with a node of its own; stopped by its
    pid and its node removed (`berth down`) even when the test fails."""

    def __init__(self, berth_bin, server: str, token_file, data_dir):
        self.bin, self.data_dir = berth_bin, data_dir
        self.log = open(data_dir.parent / "agent.log", "ab")
        subnet = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
        self.proc = subprocess.Popen(
            [str(berth_bin), "agent", "--server", server, "--token-file", str(token_file),
             "--data-dir", str(data_dir), "--zone", "r", "--bridge", "bt" + os.urandom(5).hex(),
             "--task-subnet", subnet, "--metadata-port", str(support.free_listen_port())],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        subprocess.run([str(self.bin), "down", "--data-dir", str(self.data_dir)],
                       capture_output=True, timeout=120)
        self.log.close()


def test_agent_survives_server_restart(berth_bin, berth_factory, tmp_path):
    """A remote agent keeps its task running while the server is killed (kill -9) and
    restarted; it dials back in as the same container instance, the task is the same
    container, and the stream works again (StopTask reaches it)."""
    port = support.free_listen_port()
    srv = berth_factory(["--no-agent", "--agent-listen", f"127.0.0.1:{port}"])
    (tmp_path / "ctx").mkdir()
    image = _build(berth_bin, srv, tmp_path / "ctx")
    ecs = srv.ecs()
    (tmp_path / "a").mkdir()
    with _Agent(berth_bin, f"127.0.0.1:{port}", srv.data_dir / "join-token", tmp_path / "a" / "data") as agent:
        arn = wait_for(lambda: (a := ecs.list_container_instances()["containerInstanceArns"]) and a[0],
                       "the agent registered")
        td = ecs.register_task_definition(
            family=support.unique("remote"), networkMode="awsvpc", requiresCompatibilities=["EC2"],
            containerDefinitions=[{"name": "app", "image": image, "essential": True, "memory": 32,
                                   "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                                   "stopTimeout": 2}])["taskDefinition"]["taskDefinitionArn"]
        task = ecs.run_task(taskDefinition=td, launchType="EC2")["tasks"][0]["taskArn"]
        before = wait_for(lambda: (t := ecs.describe_tasks(tasks=[task])["tasks"][0])["lastStatus"] == "RUNNING" and t,
                          "the task RUNNING on the remote agent", deadline_s=60)
        assert before["containerInstanceArn"] == arn
        srv.kill()
        srv.start()
        ecs = srv.ecs()
        wait_for(lambda: ecs.describe_container_instances(containerInstances=[arn])
                 ["containerInstances"][0]["agentConnected"], "the agent dialled back in", deadline_s=30)
        assert ecs.list_container_instances()["containerInstanceArns"] == [arn]
        # Past the liveness timeout (10 s) the task is still the same running container.
        time.sleep(12)
        after = ecs.describe_tasks(tasks=[task])["tasks"][0]
        assert after["lastStatus"] == "RUNNING", after.get("stoppedReason")
        assert after["containers"][0]["runtimeId"] == before["containers"][0]["runtimeId"]
        assert agent.proc.poll() is None
        ecs.stop_task(task=task, reason="done")
        wait_for(lambda: ecs.describe_tasks(tasks=[task])["tasks"][0]["lastStatus"] == "STOPPED",
                 "StopTask reached the agent over the new stream")
