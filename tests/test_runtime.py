"""The node runtime: real containers under runc, driven through the ECS API (boto3) and
the berth CLI, from images built with `berth build` and kept in berth's registry."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

import support
from support import wait_for

BUSYBOX_APPLETS = ["sh", "echo", "cat", "sleep", "ps", "hostname", "id", "wc", "wget", "httpd",
                   "true", "false", "touch", "dd", "head", "test", "grep", "ls"]


def cli(berth_bin, server, *args, timeout=120, check=False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["BERTH_ENDPOINT"] = server.url
    # --data-dir (for the credentials) goes before any positional argument.
    p = subprocess.run([str(berth_bin), args[0], "--data-dir", str(server.data_dir), *args[1:]],
                       env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"berth {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def image(berth_bin, berth, tmp_path_factory) -> str:
    """A busybox image in berth's registry, built with `berth build` (FROM scratch)."""
    ctx = tmp_path_factory.mktemp("busybox-ctx")
    (ctx / "bin").mkdir()
    shutil.copy("/bin/busybox", ctx / "bin" / "busybox")
    for a in BUSYBOX_APPLETS:
        os.symlink("busybox", ctx / "bin" / a)
    (ctx / "www").mkdir()
    (ctx / "www" / "ok").write_text("pong\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY bin /bin\nCOPY www /www\nENV PATH=/bin\nCMD [\"sh\", \"-c\", \"echo hello\"]\n")
    repo = support.unique("busybox")
    berth.ecr().create_repository(repositoryName=repo)
    cli(berth_bin, berth, "build", "-t", f"{repo}:v1", str(ctx), check=True)
    return f"{berth.host}/{repo}:v1"


@pytest.fixture(scope="module")
def ecs(berth):
    return berth.ecs()


@pytest.fixture
def tasks(ecs):
    """Runs tasks (`tasks.run(definition)`) and stops whatever is left at the end."""

    class Tasks:
        arns: list[str] = []

        def register(self, containers, network_mode="awsvpc", **kw) -> str:
            family = support.unique("rt")
            compat = ["FARGATE"] if network_mode == "awsvpc" else ["EC2"]
            d = ecs.register_task_definition(
                family=family, containerDefinitions=containers, networkMode=network_mode,
                requiresCompatibilities=compat, cpu=kw.pop("cpu", "256"),
                memory=kw.pop("memory", "512"), **kw)
            return d["taskDefinition"]["taskDefinitionArn"]

        def run(self, containers, network_mode="awsvpc", **kw) -> str:
            arn = self.register(containers, network_mode, **kw)
            launch = "FARGATE" if network_mode == "awsvpc" else "EC2"
            out = ecs.run_task(taskDefinition=arn, launchType=launch)
            assert out["failures"] == [], out["failures"]
            task = out["tasks"][0]["taskArn"]
            self.arns.append(task)
            return task

        def describe(self, arn) -> dict:
            return ecs.describe_tasks(tasks=[arn])["tasks"][0]

        def wait(self, arn, pred, what, deadline_s=60) -> dict:
            return wait_for(lambda: (lambda t: t if pred(t) else None)(self.describe(arn)),
                            what, deadline_s=deadline_s)

        def wait_stopped(self, arn, deadline_s=60) -> dict:
            return self.wait(arn, lambda t: t["lastStatus"] == "STOPPED", "task STOPPED", deadline_s)

    t = Tasks()
    t.arns = []
    yield t
    for arn in t.arns:
        try:
            ecs.stop_task(task=arn, reason="test cleanup")
        except Exception:  # noqa: BLE001 - best effort
            pass
    for arn in t.arns:
        try:
            t.wait_stopped(arn, deadline_s=60)
        except Exception:  # noqa: BLE001
            pass


def container(image, name="main", **kw) -> dict:
    # A short stop timeout: busybox as pid 1 ignores SIGTERM, so cleanup would wait 30 s.
    c = {"name": name, "image": image, "essential": True, "memory": 128, "stopTimeout": 2}
    c.update(kw)
    return c


def logs_of(berth, task_arn: str, name: str) -> list[str]:
    out = berth.logs().get_log_events(logGroupName="berth", startFromHead=True,
                                      logStreamName=f"ecs/{name}/{task_arn.rsplit('/', 1)[1]}")
    return [e["message"] for e in out["events"]]


def test_berth_run_streams_output_and_exit_code(berth_bin, berth, image):
    """`berth run` prints the container's stdout and stderr apart and exits with its code."""
    p = cli(berth_bin, berth, "run", image, "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert p.returncode == 3, p.stderr
    assert p.stdout.splitlines() == ["to-out"]
    assert "to-err" in p.stderr
    p = cli(berth_bin, berth, "run", "--env", "GREETING=hi there", image, "sh", "-c", "echo $GREETING")
    assert (p.returncode, p.stdout.strip()) == (0, "hi there"), p.stderr
    p = cli(berth_bin, berth, "run", image)
    assert (p.returncode, p.stdout.strip()) == (0, "hello"), "the image's CMD runs by default"


def test_isolation(berth_bin, berth, image):
    """pid, uts and mount namespaces: the container is pid 1, alone, with its own hostname."""
    p = cli(berth_bin, berth, "run", image, "sh", "-c",
            "echo $$; hostname; ps -o pid | wc -l; cat /proc/1/cgroup | head -1; ls /")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("ip-"), lines[1]
    assert int(lines[2]) <= 4, p.stdout  # header, sh, ps, wc
    listing = lines[4:]
    assert "www" in listing and "work" not in listing, "the image's root, not the host's"


def test_failures_are_reported(berth_bin, berth, image):
    """A missing command, a missing image and an OOM kill each get a reason a person can act on."""
    p = cli(berth_bin, berth, "run", image, "no-such-command")
    assert p.returncode == 127
    assert "CannotStartContainerError" in p.stderr and "no-such-command" in p.stderr
    repo_missing = image.rsplit(":", 1)[0] + ":no-such-tag"
    p = cli(berth_bin, berth, "run", repo_missing)
    assert p.returncode == 125
    assert "CannotPullContainerError" in p.stderr and "no-such-tag" in p.stderr
    p = cli(berth_bin, berth, "run", "--memory", "16", image, "sh", "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100")
    assert p.returncode == 137, p.stderr
    assert "OutOfMemoryError: container" in p.stderr and "of its 16 MiB limit" in p.stderr


def test_oom_in_describe_tasks(berth, image, tasks):
    """The OOM kill shows in DescribeTasks: exit code 137 and the reason."""
    arn = tasks.run([container(image, memory=16, command=[
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100"])])
    t = tasks.wait_stopped(arn)
    c = t["containers"][0]
    assert c["exitCode"] == 137
    assert c["reason"].startswith("OutOfMemoryError: container main used")
    assert t["stopCode"] == "EssentialContainerExited"


def _cgroup_file(runtime_id: str, v1: str, v2: str) -> str | None:
    hits = glob.glob(f"/sys/fs/cgroup/cpu/berth/*/{runtime_id}/{v1}") + \
        glob.glob(f"/sys/fs/cgroup/berth/*/{runtime_id}/{v2}")
    return hits[0] if hits else None


def test_cpu_and_memory_limits_applied(berth, image, tasks):
    """ECS cpu units become CPU shares and memory the cgroup's limit."""
    arn = tasks.run([container(image, cpu=512, memory=64, command=["sleep", "600"])],
                    cpu="1024", memory="2048")
    t = tasks.wait(arn, lambda t: t["lastStatus"] == "RUNNING", "task RUNNING")
    rid = t["containers"][0]["runtimeId"]
    shares = wait_for(lambda: _cgroup_file(rid, "cpu.shares", "cpu.weight"), "the cpu cgroup")
    value = int(Path(shares).read_text())
    assert value == 512 if shares.endswith("shares") else value > 0
    mem = glob.glob(f"/sys/fs/cgroup/memory/berth/*/{rid}/memory.limit_in_bytes") + \
        glob.glob(f"/sys/fs/cgroup/berth/*/{rid}/memory.max")
    assert int(Path(mem[0]).read_text()) == 64 * 1024 * 1024


def test_two_containers_localhost_and_depends_on_healthy(berth, image, tasks):
    """Containers of a task share localhost; `app` starts only once `web` is HEALTHY."""
    web = container(image, name="web", essential=False,
                    command=["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
                    healthCheck={"command": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ok"],
                                 "interval": 5, "timeout": 2, "retries": 3})
    app = container(image, name="app", command=["sh", "-c", "wget -q -O- http://localhost:8080/ok"],
                    dependsOn=[{"containerName": "web", "condition": "HEALTHY"}])
    arn = tasks.run([web, app])
    t = tasks.wait_stopped(arn, deadline_s=90)
    by = {c["name"]: c for c in t["containers"]}
    assert by["app"]["exitCode"] == 0, by
    assert by["web"]["healthStatus"] == "HEALTHY"
    assert logs_of(berth, arn, "app") == ["pong"]
    assert t["stopCode"] == "EssentialContainerExited"


def test_health_check_turns_unhealthy(berth, image, tasks):
    """A failing health check makes the container and the task UNHEALTHY."""
    arn = tasks.run([container(image, command=["sleep", "600"], healthCheck={
        "command": ["CMD-SHELL", "test -f /nope"], "interval": 5, "timeout": 2, "retries": 1})])
    t = tasks.wait(arn, lambda t: t["containers"][0].get("healthStatus") == "UNHEALTHY",
                   "container UNHEALTHY", deadline_s=60)
    assert t["healthStatus"] == "UNHEALTHY"
    assert t["lastStatus"] == "RUNNING", "a standalone task keeps running when unhealthy"


def test_stop_timeout_honoured(berth, image, tasks, ecs):
    """StopTask sends SIGTERM; a container that ignores it is killed after stopTimeout."""
    stubborn = tasks.run([container(image, stopTimeout=3,
                                    command=["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])])
    polite = tasks.run([container(image, stopTimeout=30,
                                  command=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])])
    for arn in (stubborn, polite):
        tasks.wait(arn, lambda t: t["lastStatus"] == "RUNNING", "task RUNNING")
    started = time.monotonic()
    ecs.stop_task(task=stubborn, reason="testing the stop timeout")
    ecs.stop_task(task=polite)
    t = tasks.wait_stopped(stubborn)
    took = time.monotonic() - started
    assert t["containers"][0]["exitCode"] == 137
    assert t["stopCode"] == "UserInitiated" and t["stoppedReason"] == "testing the stop timeout"
    assert 3 <= took < 20, took
    t = tasks.wait_stopped(polite, deadline_s=20)
    assert t["containers"][0]["exitCode"] == 0
    assert t["stoppedReason"] == "Task stopped by user"


def test_bridge_mode_port_mappings(berth, image, tasks):
    """bridge mode: a dynamic host port (ECS's range) and a static one reach the containers."""
    static = support.free_listen_port()
    arn = tasks.run([
        container(image, name="dyn", command=["httpd", "-f", "-p", "8080", "-h", "/www"],
                  portMappings=[{"containerPort": 8080}]),
        container(image, name="fixed", command=["httpd", "-f", "-p", "8081", "-h", "/www"],
                  portMappings=[{"containerPort": 8081, "hostPort": static}]),
    ], network_mode="bridge")
    t = tasks.wait(arn, lambda t: t["lastStatus"] == "RUNNING", "task RUNNING")
    by = {c["name"]: c for c in t["containers"]}
    dyn = by["dyn"]["networkBindings"][0]
    assert dyn["containerPort"] == 8080 and 49153 <= dyn["hostPort"] <= 65535, dyn
    assert by["fixed"]["networkBindings"][0]["hostPort"] == static
    for port in (dyn["hostPort"], static):
        body = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/ok", timeout=5).text,
                        f"the container behind host port {port}")
        assert body == "pong\n"


@pytest.mark.parametrize("mode", ["host", "none"])
def test_host_and_none_network_modes(berth, image, tasks, mode):
    """host mode sees the host's interfaces; none mode has only loopback."""
    arn = tasks.run([container(image, command=["ls", "/sys/class/net"])], network_mode=mode)
    t = tasks.wait_stopped(arn)
    assert t["containers"][0]["exitCode"] == 0
    ifaces = logs_of(berth, arn, "main")
    if mode == "none":
        assert ifaces == ["lo"]
    else:
        assert berth.bridge in ifaces and "lo" in ifaces


def test_task_metadata_endpoint(berth, image, tasks):
    """ECS_CONTAINER_METADATA_URI_V4 answers inside the task with its ARN and the container."""
    arn = tasks.run([container(image, command=[
        "sh", "-c", "wget -q -O- $ECS_CONTAINER_METADATA_URI_V4/task; echo; "
                    "wget -q -O- $ECS_CONTAINER_METADATA_URI_V4/stats"])])
    tasks.wait_stopped(arn)
    task_json, stats_json = logs_of(berth, arn, "main")[:2]
    meta = json.loads(task_json)
    assert meta["TaskARN"] == arn
    assert meta["Containers"][0]["Name"] == "main"
    assert meta["Containers"][0]["Networks"][0]["NetworkMode"] == "awsvpc"
    assert json.loads(stats_json)["memory_stats"]["usage"] > 0


def test_ps_logs_stop(berth_bin, berth, image):
    """`berth run -d`, `berth ps`, `berth logs` and `berth stop` work on a running task."""
    p = cli(berth_bin, berth, "run", "-d", image, "sh", "-c",
            "trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done", check=True)
    arn = p.stdout.strip()
    task_id = arn.rsplit("/", 1)[1]
    wait_for(lambda: task_id in cli(berth_bin, berth, "ps").stdout and
             "RUNNING" in cli(berth_bin, berth, "ps").stdout, "the task in berth ps")
    wait_for(lambda: cli(berth_bin, berth, "logs", task_id).stdout.strip() == "started",
             "the task's output in berth logs")
    cli(berth_bin, berth, "stop", task_id, check=True)
    wait_for(lambda: any(task_id in l and "STOPPED" in l
                         for l in cli(berth_bin, berth, "ps", "-a").stdout.splitlines()),
             "the task STOPPED in berth ps -a")


def _netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(prefix)]


def _mounts_under(path: Path) -> list[str]:
    return [l.split()[4] for l in Path("/proc/self/mountinfo").read_text().splitlines()
            if l.split()[4].startswith(str(path))]


def test_kill9_server_keeps_tasks(berth_factory, berth_bin, image, berth):
    """kill -9 of the server while a task runs: the container lives on, the restarted
    server re-adopts it (still RUNNING, then stops it on request), and `berth down`
    leaves no namespace, mount or bridge behind."""
    srv = berth_factory()
    repo = image.split("/", 1)[1].split(":")[0]
    # The image lives in the shared server; copy it into this one with the registry API.
    srv.ecr().create_repository(repositoryName=repo)
    src = support.Registry(berth.url, ("AWS", berth.password()))
    dst = support.Registry(srv.url, ("AWS", srv.password()))
    r = src.get(f"/v2/{repo}/manifests/v1", headers={"Accept": support.OCI_MANIFEST})
    manifest = r.json()
    for d in [manifest["config"]] + manifest["layers"]:
        blob = src.get(f"/v2/{repo}/blobs/{d['digest']}").content
        up = dst.post(f"/v2/{repo}/blobs/uploads/?digest={d['digest']}", data=blob)
        assert up.status_code == 201, up.text
    put = dst.put(f"/v2/{repo}/manifests/v1", data=r.content,
                  headers={"Content-Type": r.headers["Content-Type"]})
    assert put.status_code == 201, put.text
    ecs = srv.ecs()
    d = ecs.register_task_definition(
        family=support.unique("k9"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512",
        containerDefinitions=[container(f"{srv.host}/{repo}:v1",
                                        command=["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])])
    arn = ecs.run_task(taskDefinition=d["taskDefinition"]["taskDefinitionArn"],
                       launchType="FARGATE")["tasks"][0]["taskArn"]
    running = wait_for(lambda: (lambda t: t if t["lastStatus"] == "RUNNING" else None)(
        ecs.describe_tasks(tasks=[arn])["tasks"][0]), "task RUNNING")
    rid = running["containers"][0]["runtimeId"]
    runc_root = srv.data_dir / "agent" / "runc"

    def runc_status():
        p = subprocess.run(["runc", "--root", str(runc_root), "state", rid], capture_output=True, text=True)
        return json.loads(p.stdout)["status"] if p.returncode == 0 else None

    pid_before = json.loads(subprocess.run(["runc", "--root", str(runc_root), "state", rid],
                                           capture_output=True, text=True).stdout)["pid"]
    srv.kill()
    assert runc_status() == "running", "kill -9 of the server must not stop the container"
    # A leftover of a crash mid-start: a namespace with this node's key and no task.
    key = hashlib.sha256(str((srv.data_dir / "agent").resolve()).encode()).hexdigest()[:8]
    stray = f"berth-{key}-{'0' * 16}"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        srv.start()
        wait_for(lambda: stray not in _netns_with("berth-"), "the leftover namespace removed")
    finally:
        subprocess.run(["ip", "netns", "del", stray], capture_output=True)
    ecs = srv.ecs()
    t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
    assert t["lastStatus"] == "RUNNING"
    # The agent re-adopted it: the same process keeps running, and its metadata
    # endpoint answers again.
    rec = json.loads((srv.data_dir / "agent" / "tasks" / arn.rsplit("/", 1)[1] / "task.json").read_text())
    token = rec["containers"][0]["token"]
    meta = wait_for(lambda: requests.get(f"http://{srv.gateway}:{srv.metadata_port}/v4/{token}/task",
                                         timeout=5).json(), "the metadata endpoint after the restart")
    assert meta["TaskARN"] == arn and meta["KnownStatus"] == "RUNNING"
    assert json.loads(subprocess.run(["runc", "--root", str(runc_root), "state", rid],
                                     capture_output=True, text=True).stdout)["pid"] == pid_before
    ecs.stop_task(task=arn)
    t = wait_for(lambda: (lambda t: t if t["lastStatus"] == "STOPPED" else None)(
        ecs.describe_tasks(tasks=[arn])["tasks"][0]), "task STOPPED after the restart")
    assert t["containers"][0]["exitCode"] == 0
    assert runc_status() is None, "the stopped container is deleted"
    srv.stop()
    srv.down()
    key_prefix = "berth-"
    leftovers = [n for n in _netns_with(key_prefix) if rid[:16] in n]
    assert leftovers == []
    assert _mounts_under(srv.data_dir) == []
    assert subprocess.run(["ip", "link", "show", srv.bridge], capture_output=True).returncode != 0


def test_stopped_tasks_are_removed_after_retention(berth_factory, berth_bin, tmp_path):
    """A STOPPED task stays visible for --stopped-task-retention seconds, then its record
    and its directory (logs) on the node are removed."""
    srv = berth_factory(extra_args=["--stopped-task-retention", "2"])
    ctx = tmp_path / "ctx"
    (ctx / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", ctx / "bin" / "busybox")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY bin /bin\nCMD [\"/bin/busybox\", \"echo\", \"bye\"]\n")
    srv.ecr().create_repository(repositoryName="gc")
    cli(berth_bin, srv, "build", "-t", "gc:v1", str(ctx), check=True)
    p = cli(berth_bin, srv, "run", "gc:v1")
    assert (p.returncode, p.stdout.strip()) == (0, "bye"), p.stderr
    ecs = srv.ecs()
    arn = wait_for(lambda: ecs.list_tasks(desiredStatus="STOPPED")["taskArns"], "the task listed")[0]
    task_dir = srv.data_dir / "agent" / "tasks" / arn.rsplit("/", 1)[1]
    wait_for(lambda: ecs.describe_tasks(tasks=[arn])["failures"] and not task_dir.exists(),
             "the stopped task removed after its retention", deadline_s=30)
    assert ecs.describe_tasks(tasks=[arn])["failures"][0]["reason"] == "MISSING"
