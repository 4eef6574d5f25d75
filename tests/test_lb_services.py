"""ECS services behind an Application Load Balancer and in Cloud Map, with boto3 and real
containers: a service's tasks register with its target group when RUNNING, requests
through the listener reach every healthy task (path rules, a fixed-response default), a
task stopped while a client sends requests costs zero failed requests (deregistration,
then the delay, then SIGTERM), DNS answers exactly the running tasks' addresses, and a
container resolves the service by name."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
import requests

import support
from support import wait_for

APPLETS = ["sh", "mkdir", "hostname", "httpd", "sleep", "nslookup", "cat", "echo"]
WEB = ["sh", "-c", "mkdir -p /www/users && hostname > /www/users/index.html && exec httpd -f -p 8080 -h /www"]


@pytest.fixture(scope="module")
def env(berth_factory, berth_bin, tmp_path_factory):
    dns_port = support.free_listen_port()
    srv = berth_factory(["--dns", f"127.0.0.1:{dns_port}"])
    image = support.build_busybox_image(berth_bin, srv, tmp_path_factory.mktemp("lb-ctx"), APPLETS, "lbweb")
    return srv, image, dns_port


def _dig(port: int, name: str) -> list[str]:
    out = subprocess.run(["dig", "+short", "-p", str(port), "@127.0.0.1", name, "A"],
                         capture_output=True, text=True, timeout=10).stdout
    return sorted(l for l in out.split() if l[0].isdigit())


def _running(ecs, service):
    arns = ecs.list_tasks(serviceName=service, desiredStatus="RUNNING")["taskArns"]
    ts = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
    return [t for t in ts if t["lastStatus"] == "RUNNING"]


def _ip(t):
    return t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]


def test_service_behind_alb_and_in_cloud_map(env):
    srv, image, dns_port = env
    ecs, elb, sd = srv.ecs(), srv._client("elbv2"), srv.servicediscovery()
    lb = elb.create_load_balancer(Name=support.unique("lb")[:32])["LoadBalancers"][0]
    tg = elb.create_target_group(Name=support.unique("users")[:32], Protocol="HTTP", Port=8080, TargetType="ip",
                                 VpcId="vpc-berth", HealthCheckPath="/users/", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                 HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3"}])
    port = support.free_listen_port()
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                                   DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                       "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "no route"}}]
                                   )["Listeners"][0]
    elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=10,
                    Conditions=[{"Field": "path-pattern", "Values": ["/users*"]}],
                    Actions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    ns_name, ns_id = support.dns_namespace(sd, "forum")
    reg = sd.create_service(Name="users", NamespaceId=ns_id, DnsConfig={
        "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]

    td = ecs.register_task_definition(
        family=support.unique("users"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512",
        containerDefinitions=[{"name": "web", "image": image, "essential": True, "command": WEB,
                               "portMappings": [{"containerPort": 8080}], "stopTimeout": 2}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(serviceName="users", taskDefinition=td, desiredCount=2, launchType="FARGATE",
                       loadBalancers=[{"targetGroupArn": tg["TargetGroupArn"], "containerName": "web",
                                       "containerPort": 8080}],
                       serviceRegistries=[{"registryArn": reg["Arn"]}])
    tasks = wait_for(lambda: (r := _running(ecs, "users")) and len(r) == 2 and r, "2 tasks RUNNING", deadline_s=60)
    ips = sorted(_ip(t) for t in tasks)

    def healthy():
        h = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
        return sorted(d["Target"]["Id"] for d in h if d["TargetHealth"]["State"] == "healthy")
    wait_for(lambda: healthy() == ips, "both tasks healthy targets", deadline_s=60)

    url = f"http://127.0.0.1:{port}"
    seen = {requests.get(url + "/users/", timeout=5).text.strip() for _ in range(20)}
    assert len(seen) == 2, seen
    r = requests.get(url + "/nothing", timeout=5)
    assert r.status_code == 404 and r.text == "no route"
    # The load balancer's DNS name resolves where its listeners bind.
    assert lb["DNSName"].endswith(".elb.localhost")
    wait_for(lambda: _dig(dns_port, lb["DNSName"]) == ["127.0.0.1"], "the load balancer's DNS name")

    # DNS: exactly the running tasks; DiscoverInstances the same.
    wait_for(lambda: _dig(dns_port, f"users.{ns_name}") == ips, "DNS answers the tasks' addresses")
    found = sd.discover_instances(NamespaceName=ns_name, ServiceName="users")["Instances"]
    assert sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in found) == ips

    # A container resolves the service by name (through the node's forwarder).
    probe = ecs.register_task_definition(
        family=support.unique("probe"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512",
        containerDefinitions=[{"name": "p", "image": image, "essential": True,
                               "command": ["nslookup", f"users.{ns_name}"]}])["taskDefinition"]["taskDefinitionArn"]
    parn = ecs.run_task(taskDefinition=probe, launchType="FARGATE")["tasks"][0]["taskArn"]
    done = wait_for(lambda: (t := ecs.describe_tasks(tasks=[parn])["tasks"][0])["lastStatus"] == "STOPPED" and t,
                    "the probe finished", deadline_s=60)
    logs = srv.logs().get_log_events(logGroupName="x", logStreamName=f"ecs/p/{parn.rsplit('/', 1)[1]}")
    out = "".join(e["message"] for e in logs["events"])
    assert done["containers"][0].get("exitCode") == 0, out
    assert all(ip in out for ip in ips), out

    # Stop a task while a client sends requests: not one fails.
    with support.RequestLoop([url + "/users/"], timeout=5) as load:
        victim = tasks[0]
        ecs.stop_task(task=victim["taskArn"], reason="testing draining")
        states = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in
                  elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]}
        assert states.get(_ip(victim)) == "draining", states
        wait_for(lambda: ecs.describe_tasks(tasks=[victim["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED",
                 "the stopped task STOPPED", deadline_s=60)
        new = wait_for(lambda: (r := _running(ecs, "users")) and len(r) == 2 and
                       _ip(victim) not in [_ip(t) for t in r] and r, "a replacement RUNNING", deadline_s=60)
        new_ips = sorted(_ip(t) for t in new)
        wait_for(lambda: healthy() == new_ips, "the replacement a healthy target", deadline_s=60)
    assert load.count > 20, load.count
    wait_for(lambda: _dig(dns_port, f"users.{ns_name}") == new_ips, "DNS follows the replacement")
    ecs.update_service(service="users", desiredCount=0)
    ecs.delete_service(service="users")
    wait_for(lambda: not _running(ecs, "users"), "the service's tasks stopped")
    assert load.failures == [], f"{len(load.failures)} of {load.count} requests failed around the stop: {load.failures[:3]}"


def test_lb_and_service_cli(env, berth_bin):
    """`berth lb create`, `berth service create --lb LB:PATH --dns NAME.NS`, `berth lb
    targets`, `berth lb ls` and `berth lb rm`: the short way to the same result."""
    srv, image, dns_port = env
    ecs = srv.ecs()

    def cli(*args):
        e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        p = subprocess.run([str(berth_bin), args[0], "--endpoint-url", srv.url, "--data-dir", str(srv.data_dir),
                            *args[1:]], env=e, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    port = support.free_listen_port()
    lb = support.unique("web")[:20]
    ns = support.unique("cli") + ".local"
    cli("lb", "create", lb, "--port", str(port))
    cli("service", "create", "--name", "topics", "--replicas", "2", "-p", "8080", "--lb", f"{lb}:/users*",
        "--health-path", "/users/", "--dns", f"topics.{ns}", image, *WEB)
    wait_for(lambda: cli("lb", "targets", lb).count("healthy") == 2, "2 healthy targets in berth lb targets",
             deadline_s=60)
    # The service settles on its 2 tasks (a replacement may still be on its way when the
    # targets first read healthy); its events say why if it does not.
    try:
        ips = wait_for(lambda: (r := sorted(_ip(t) for t in _running(ecs, "topics"))) and len(r) == 2 and r,
                       "the service's 2 tasks", deadline_s=60)
    except TimeoutError as e:
        events = [v["message"] for v in ecs.describe_services(services=["topics"])["services"][0]["events"]]
        raise AssertionError(f"{e}; service events: {events}") from e
    r = requests.get(f"http://127.0.0.1:{port}/users/", timeout=5)
    assert r.status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
    wait_for(lambda: _dig(dns_port, f"topics.{ns}") == ips, "DNS answers the service's tasks")
    assert f"/users*→{lb}-topics" in cli("lb", "ls")
    cli("service", "rm", "topics")
    wait_for(lambda: not _running(ecs, "topics"), "the service's tasks stopped")
    cli("lb", "rm", lb)
    assert lb not in cli("lb", "ls")


def test_unhealthy_target_out_and_back(env):
    """A target whose health check fails is reported unhealthy and gets no requests
    while another is healthy; when its check passes again it is healthy and serves."""
    import http.server
    srv, _, _ = env
    elb = srv._client("elbv2")
    state = {"ok": True}

    def handler(tag):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = 200 if (tag == "steady" or state["ok"] or self.path != "/health") else 500
                body = tag.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        return H
    servers = []
    for tag in ("steady", "flaky"):
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(tag))
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    try:
        lb = elb.create_load_balancer(Name=support.unique("hc")[:32])["LoadBalancers"][0]
        tg = elb.create_target_group(Name=support.unique("hc")[:32], Protocol="HTTP", Port=80, TargetType="ip",
                                     VpcId="vpc-berth", HealthCheckPath="/health", HealthCheckIntervalSeconds=5,
                                     HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
                                     UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
        port = support.free_listen_port()
        elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
        elb.register_targets(TargetGroupArn=tg, Targets=[
            {"Id": "127.0.0.1", "Port": s.server_address[1]} for s in servers])
        flaky_port = servers[1].server_address[1]

        def state_of(p):
            h = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
            return next((d["TargetHealth"] for d in h if d["Target"]["Port"] == p), {})
        wait_for(lambda: state_of(flaky_port).get("State") == "healthy", "the flaky target healthy", deadline_s=60)
        state["ok"] = False
        h = wait_for(lambda: (x := state_of(flaky_port)).get("State") == "unhealthy" and x,
                     "the flaky target unhealthy", deadline_s=60)
        assert h["Reason"] == "Target.ResponseCodeMismatch", h
        seen = {requests.get(f"http://127.0.0.1:{port}/", timeout=5).text for _ in range(20)}
        assert seen == {"steady"}, seen
        state["ok"] = True
        wait_for(lambda: state_of(flaky_port).get("State") == "healthy", "the flaky target healthy again",
                 deadline_s=60)
        wait_for(lambda: "flaky" in {requests.get(f"http://127.0.0.1:{port}/", timeout=5).text
                                     for _ in range(20)}, "the flaky target serving again")
        elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        elb.delete_target_group(TargetGroupArn=tg)
    finally:
        for s in servers:
            s.shutdown()


def test_bridge_mode_on_the_servers_own_node(env):
    """Bridge networking with dynamic host ports on a cluster without container
    instances, where the server's own node runs the tasks: each task is an instance
    target (the built-in node's ec2InstanceId and the task's host port) and an SRV
    instance in Cloud Map (the node's bridge address and the host port); requests
    through the listener and to the discovered addresses reach both tasks."""
    srv, image, _ = env
    ecs, elb, sd = srv.ecs(), srv._client("elbv2"), srv.servicediscovery()
    _, arn, port = support.lb_forwarding(elb, "own", health_path="/users/")
    ns, ns_id = support.dns_namespace(sd, "own")
    reg = sd.create_service(Name="web", NamespaceId=ns_id,
                            DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 5}]})["Service"]
    td = ecs.register_task_definition(
        family=support.unique("own"), networkMode="bridge", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "memory": 32, "command": WEB, "stopTimeout": 2,
                               "portMappings": [{"containerPort": 8080, "hostPort": 0}]}])["taskDefinition"]
    name = support.unique("own")
    ecs.create_service(serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=2, launchType="EC2",
                       loadBalancers=[{"targetGroupArn": arn, "containerName": "web", "containerPort": 8080}],
                       serviceRegistries=[{"registryArn": reg["Arn"], "containerName": "web", "containerPort": 8080}])
    run = wait_for(lambda: (r := _running(ecs, name)) and len(r) == 2 and r, "2 tasks RUNNING", deadline_s=60)
    assert all("containerInstanceArn" not in t for t in run)  # the server's own node
    ports = sorted(t["containers"][0]["networkBindings"][0]["hostPort"] for t in run)

    def healthy():
        return support.healthy_targets(elb, arn)
    got = wait_for(lambda: (h := healthy()) and len(h) == 2 and h, "both tasks healthy targets", deadline_s=60)
    events = [e["message"] for e in ecs.describe_services(services=[name])["services"][0]["events"]]
    assert [p for _, p in got] == ports, events
    assert len({i for i, _ in got}) == 1 and got[0][0].startswith("i-"), got
    seen = {requests.get(f"http://127.0.0.1:{port}/users/", timeout=5).text.strip() for _ in range(20)}
    assert len(seen) == 2, seen

    def discovered():
        return support.discovered(sd, ns, "web")
    found = wait_for(lambda: (d := discovered()) and len(d) == 2 and d, "both tasks in Cloud Map", deadline_s=60)
    assert [p for _, p in found] == ports
    assert {requests.get(f"http://{a}:{p}/users/", timeout=5).text.strip() for a, p in found} == seen

    ecs.update_service(service=name, desiredCount=0)
    ecs.delete_service(service=name)
    wait_for(lambda: not _running(ecs, name), "the service's tasks stopped")
    wait_for(lambda: discovered() == [] and not elb.describe_target_health(TargetGroupArn=arn)
             ["TargetHealthDescriptions"], "no target and no instance left", deadline_s=60)


def _bridge_behind_lb(srv, image):
    """On `srv`: a load balancer forwarding to an instance target group, and a bridge-mode
    task definition; (ecs client, task definition ARN, the service's loadBalancers entry)."""
    ecs, elb = srv.ecs(), srv._client("elbv2")
    lb = elb.create_load_balancer(Name=support.unique("rf")[:32])["LoadBalancers"][0]
    tg = elb.create_target_group(Name=support.unique("rf")[:32], Protocol="HTTP", Port=80,
                                 VpcId="vpc-berth")["TargetGroups"][0]
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=support.free_listen_port(),
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    td = ecs.register_task_definition(
        family=support.unique("rf"), networkMode="bridge", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "web", "image": image, "memory": 32, "command": WEB,
                               "portMappings": [{"containerPort": 8080, "hostPort": 0}]}])["taskDefinition"]
    link = {"targetGroupArn": tg["TargetGroupArn"], "containerName": "web", "containerPort": 8080}
    return ecs, td["taskDefinitionArn"], link


def test_service_links_refused_with_reasons(env, berth_factory):
    """A service's loadBalancers that cannot work are refused at CreateService with a
    reason: bridge mode on a server with neither container instances nor a node of its
    own (`--no-agent`), and a container port the definition does not map."""
    srv, image, _ = env
    bare = berth_factory(["--no-agent"])
    try:
        bare_ecs, bare_td, link = _bridge_behind_lb(bare, image)
        with pytest.raises(bare_ecs.exceptions.InvalidParameterException, match="no container instances"):
            bare_ecs.create_service(serviceName=support.unique("rf"), taskDefinition=bare_td,
                                    desiredCount=1, launchType="EC2", loadBalancers=[link])
    finally:
        bare.stop()
    ecs, td, link = _bridge_behind_lb(srv, image)
    with pytest.raises(ecs.exceptions.InvalidParameterException, match="did not have a container port 9999"):
        ecs.create_service(serviceName=support.unique("rf"), taskDefinition=td,
                           desiredCount=1, launchType="EC2", loadBalancers=[{**link, "containerPort": 9999}])
    assert not ecs.list_services()["serviceArns"] or all(
        "rf" not in a for a in ecs.list_services()["serviceArns"])
