"""Deploys the forum onto a running berth server through its public APIs, with boto3 —
the calls a user of AWS would make — and waits until it answers.

What it makes (names as in the original example):
- ECR repositories `forum/users`, `forum/topics`, `forum/messages`, `forum/store`, and
  the images in them (`berth build`, FROM scratch + one static binary each);
- the Cloud Map private DNS namespace `forum.local` with a service per ECS service
  (A records, TTL 5): `users.forum.local` and so on, and each service's datastore
  `users-store.forum.local`, ...;
- ECS task definitions and services on the cluster's container instances (launch type
  EC2, awsvpc, spread over availability zones): users 2, topics 1, messages 2, and a
  datastore of 1 task per service; every container has a health check (`/users health`);
- an Application Load Balancer `forum` with a listener on LB_PORT: `/users*`,
  `/topics*` and `/messages*` forwarded to three target groups (health checks on
  `/health`), anything else a fixed 404.

Then it waits until every service runs its tasks and every target is healthy, and
checks the forum end to end through the load balancer.

    python deploy.py --endpoint http://127.0.0.1:5000 --data-dir /var/lib/berth \
        --bin-dir target/x86_64-unknown-linux-gnu/release --berth target/debug/berth --lb-port 8080
    python deploy.py ... roll topics v2      # a rolling deployment of topics to image v2
"""

from __future__ import annotations

import argparse
import configparser
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

NAMESPACE = "forum.local"
# service -> (program, desired count)
SERVICES = {
    "users": ("users", 2),
    "topics": ("topics", 1),
    "messages": ("messages", 2),
}
PORT = 8080
LB_NAME = "forum"


def log(msg: str) -> None:
    print(f"  {msg}", flush=True)


class Forum:
    def __init__(self, endpoint: str, data_dir: Path, berth: str, lb_port: int, namespace: str = NAMESPACE):
        import boto3
        from botocore.config import Config

        cp = configparser.ConfigParser()
        cp.read(data_dir / "credentials")
        self.ak, self.sk = cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]
        self.endpoint, self.data_dir, self.berth, self.lb_port = endpoint, data_dir, berth, lb_port
        self.namespace = namespace
        self.registry = endpoint.split("://", 1)[1].rstrip("/")
        cfg = Config(inject_host_prefix=False, retries={"max_attempts": 2})

        def client(name):
            return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=self.ak,
                                aws_secret_access_key=self.sk, config=cfg)
        self.ecr, self.ecs, self.elb, self.sd = client("ecr"), client("ecs"), client("elbv2"), client("servicediscovery")

    # -- images -----------------------------------------------------------------------

    def image(self, name: str, tag: str) -> str:
        return f"{self.registry}/forum/{name}:{tag}"

    def build_images(self, bin_dir: Path, images: list[tuple[str, str]]) -> None:
        """A repository per program and the images `(program, tag)`: FROM scratch, the
        static binary, `VERSION=tag` (every response names it)."""
        for name, tag in images:
            try:
                self.ecr.create_repository(repositoryName=f"forum/{name}")
            except self.ecr.exceptions.RepositoryAlreadyExistsException:
                pass
            with tempfile.TemporaryDirectory(prefix="forum-ctx-") as ctx:
                shutil.copy(bin_dir / name, Path(ctx) / name)
                (Path(ctx) / "Dockerfile").write_text(
                    f'FROM scratch\nCOPY {name} /{name}\nENV VERSION={tag}\nEXPOSE {PORT}\n'
                    f'ENTRYPOINT ["/{name}"]\n')
                p = subprocess.run([self.berth, "build", "--endpoint-url", self.endpoint, "--data-dir",
                                    str(self.data_dir), "--log-level", "warn", "-t", f"forum/{name}:{tag}", ctx],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"berth build of forum/{name}:{tag} failed:\n{p.stderr}")
        log("images built and pushed: " + ", ".join(f"forum/{n}:{t}" for n, t in images))

    # -- Cloud Map ----------------------------------------------------------------------

    def namespace_id(self) -> str:
        for ns in self.sd.list_namespaces()["Namespaces"]:
            if ns["Name"] == self.namespace:
                return ns["Id"]
        op = self.sd.create_private_dns_namespace(Name=self.namespace, Vpc="vpc-berth")["OperationId"]
        return self.sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]

    def registry_arn(self, ns_id: str, name: str) -> str:
        for s in self.sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id]}])["Services"]:
            if s["Name"] == name:
                return s["Arn"]
        return self.sd.create_service(Name=name, NamespaceId=ns_id, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 5}]})["Service"]["Arn"]

    # -- the load balancer ----------------------------------------------------------------

    def load_balancer(self) -> dict[str, str]:
        """The ALB, its listener and one target group per service; the groups' ARNs."""
        lb = self.elb.create_load_balancer(Name=LB_NAME)["LoadBalancers"][0]
        groups = {}
        for name in SERVICES:
            tg = self.elb.create_target_group(
                Name=f"forum-{name}", Protocol="HTTP", Port=PORT, TargetType="ip", VpcId="vpc-berth",
                HealthCheckPath="/health", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]
            self.elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": "5"}])
            groups[name] = tg["TargetGroupArn"]
        listener = self.elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=self.lb_port,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                "StatusCode": "404", "ContentType": "application/json",
                "MessageBody": '{"message": "no such API: try /users, /topics or /messages"}'}}])["Listeners"][0]
        for prio, name in enumerate(SERVICES, start=1):
            self.elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=prio * 10,
                                 Conditions=[{"Field": "path-pattern", "Values": [f"/{name}", f"/{name}/*"]}],
                                 Actions=[{"Type": "forward", "TargetGroupArn": groups[name]}])
        log(f"load balancer {lb['DNSName']}: listener on port {self.lb_port}, "
            f"/users /topics /messages to three target groups")
        return groups

    # -- ECS ------------------------------------------------------------------------------

    def task_definition(self, family: str, program: str, tag: str, env: dict[str, str]) -> str:
        return self.ecs.register_task_definition(
            family=family, networkMode="awsvpc", requiresCompatibilities=["EC2"],
            containerDefinitions=[{
                "name": family, "image": self.image(program, tag), "essential": True, "memory": 64,
                "portMappings": [{"containerPort": PORT, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "healthCheck": {"command": ["CMD", f"/{program}", "health"], "interval": 5, "timeout": 2,
                                "retries": 2, "startPeriod": 1},
                "stopTimeout": 2,
            }])["taskDefinition"]["taskDefinitionArn"]

    def service(self, name: str, td: str, count: int, registry: str, target_group: str | None) -> None:
        extra = {}
        if target_group:
            extra["loadBalancers"] = [{"targetGroupArn": target_group, "containerName": name,
                                       "containerPort": PORT}]
            extra["healthCheckGracePeriodSeconds"] = 10
        self.ecs.create_service(
            serviceName=name, taskDefinition=td, desiredCount=count, launchType="EC2",
            serviceRegistries=[{"registryArn": registry}],
            placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}],
            deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200,
                                     "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
            **extra)

    def env_of(self, name: str) -> dict[str, str]:
        env = {"STORE": f"{name}-store.{self.namespace}:{PORT}"}
        if name == "messages":
            env.update(USERS=f"users.{self.namespace}:{PORT}", TOPICS=f"topics.{self.namespace}:{PORT}")
        return env

    def deploy(self, tag: str) -> None:
        ns = self.namespace_id()
        log(f"Cloud Map namespace {self.namespace} ({ns})")
        groups = self.load_balancer()
        for name, (program, count) in SERVICES.items():
            store = f"{name}-store"
            self.service(store, self.task_definition(store, "store", tag, {}), 1,
                         self.registry_arn(ns, store), None)
            self.service(name, self.task_definition(name, program, tag, self.env_of(name)), count,
                         self.registry_arn(ns, name), groups[name])
            log(f"ECS service {name} ({count} task{'s' if count > 1 else ''}) and its datastore {store}")

    def roll(self, name: str, tag: str) -> None:
        """UpdateService to a new task definition revision with the image `tag`."""
        program = SERVICES[name][0]
        td = self.task_definition(name, program, tag, self.env_of(name))
        self.ecs.update_service(service=name, taskDefinition=td)

    # -- waiting and checking ---------------------------------------------------------------

    def ready(self) -> str | None:
        """None when every service runs its tasks on one deployment and every target group
        has exactly its service's tasks healthy; else what is still missing."""
        names = [n for n in SERVICES] + [f"{n}-store" for n in SERVICES]
        for s in self.ecs.describe_services(services=names)["services"]:
            if s["runningCount"] != s["desiredCount"] or len(s["deployments"]) != 1:
                return f"service {s['serviceName']}: {s['runningCount']}/{s['desiredCount']} running"
        tgs = {t["TargetGroupName"]: t["TargetGroupArn"] for t in self.elb.describe_target_groups()["TargetGroups"]}
        for name, (_, count) in SERVICES.items():
            h = self.elb.describe_target_health(TargetGroupArn=tgs[f"forum-{name}"])["TargetHealthDescriptions"]
            healthy = [d for d in h if d["TargetHealth"]["State"] == "healthy"]
            if len(healthy) != count or len(h) != count:
                return f"target group forum-{name}: {len(healthy)}/{count} healthy"
        return None

    def wait_ready(self, deadline_s: float = 120) -> float:
        t0 = time.monotonic()
        last = None
        while True:
            why = self.ready()
            if why is None:
                return time.monotonic() - t0
            if why != last:
                log(f"waiting: {why}")
                last = why
            if time.monotonic() - t0 > deadline_s:
                raise SystemExit(f"the forum did not come up within {deadline_s:.0f} s: {why}")
            time.sleep(0.25)


def call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def check(base: str) -> None:
    """The forum end to end through the load balancer."""
    s, user = call(f"{base}/users", "POST", {"name": "ada"})
    assert s == 201, (s, user)
    s, topic = call(f"{base}/topics", "POST", {"title": "microservices"})
    assert s == 201, (s, topic)
    s, msg = call(f"{base}/messages", "POST", {"user_id": user["id"], "topic_id": topic["id"], "text": "hello"})
    assert s == 201, (s, msg)
    s, msgs = call(f"{base}/messages?topic_id={topic['id']}")
    assert s == 200 and msg in msgs, (s, msgs)
    s, err = call(f"{base}/messages", "POST", {"user_id": 10**9, "topic_id": topic["id"], "text": "x"})
    assert s == 422, (s, err)
    log(f"checked: a user, a topic and a message made and read back; a message from an unknown user "
        f"refused ({s}: {err['message']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--berth", required=True)
    ap.add_argument("--lb-port", type=int, default=8080)
    ap.add_argument("--bin-dir", type=Path, help="where the static forum binaries are")
    ap.add_argument("--tag", default="v1")
    ap.add_argument("command", nargs="*", help="nothing (deploy), or: roll SERVICE TAG")
    a = ap.parse_args()
    f = Forum(a.endpoint, a.data_dir, a.berth, a.lb_port)
    t0 = time.monotonic()
    if a.command[:1] == ["roll"]:
        _, name, tag = a.command
        if a.bin_dir:
            f.build_images(a.bin_dir, [(SERVICES[name][0], tag)])
        f.roll(name, tag)
        took = f.wait_ready()
        log(f"{name} rolled to {tag} in {took:.1f} s")
        return
    # topics:v2 too, for the rolling deployment of the README's story.
    f.build_images(a.bin_dir, [(p, a.tag) for p in ["store", "users", "topics", "messages"]] + [("topics", "v2")])
    f.deploy(a.tag)
    f.wait_ready()
    check(f"http://127.0.0.1:{a.lb_port}")
    log(f"deployed and healthy in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
