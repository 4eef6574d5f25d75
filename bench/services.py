"""A service of small tasks on one host, from the create call to every task running:
berth (CreateService → DescribeServices runningCount) against Docker Swarm
(`docker service create` → `docker service ls` REPLICAS n/n) on the same machine in
the same run.

Both sides run the same busybox image, already local, and the same command (a shell
loop that exits at SIGTERM). berth's tasks are FARGATE awsvpc tasks: each gets its own
network namespace with a veth on berth's bridge. Swarm's tasks get the default bridge
network (a veth each on a bridge made here for the peer), which is the closest Swarm
has to awsvpc on one node.

Every process started here is stopped by its pid, every directory made here is
removed, and the peer's bridges and namespaces are deleted, even on failure.
"""

from __future__ import annotations

import argparse
import configparser
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from runtime import free_port

LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
POLL_S = 0.02
DEADLINE_S = 180.0


def stop(p: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM by pid, SIGKILL if it does not exit within `timeout`."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def wait_for(pred, what, deadline=DEADLINE_S, interval=0.05):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - kept for the message
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}; last error: {last!r}")


def busybox_ctx(d: Path) -> Path:
    (d / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", d / "bin" / "busybox")
    for a in ("sh", "sleep", "true"):
        os.symlink("busybox", d / "bin" / a)
    return d


# ---------------------------------------------------------------------------------------
# berth
# ---------------------------------------------------------------------------------------

def bench_berth(berth: str, work: Path, count: int, rounds: int, log_level: str) -> dict:
    data = work / "berth-data"
    log = work / "berth.log"
    port = free_port()
    bridge = "bt" + uuid.uuid4().hex[:10]
    subnet = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
    with open(log, "wb") as lf:
        srv = subprocess.Popen(
            [berth, "server", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
             "--bridge", bridge, "--task-subnet", subnet, "--metadata-port", str(free_port()),
             "--log-level", log_level],
            stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True)
    try:
        return dict(_bench_berth(berth, work, data, port, count, rounds), log=log)
    finally:
        stop(srv)
        subprocess.run([berth, "down", "--data-dir", str(data)], capture_output=True, timeout=300)


def _bench_berth(berth: str, work: Path, data: Path, port: int, count: int, rounds: int) -> dict:
    import boto3
    from botocore.config import Config

    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: (data / "credentials").exists(), "berth credentials")
    cp = configparser.ConfigParser()
    cp.read(data / "credentials")
    ak, sk = cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]
    cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60)

    def client(name):
        return boto3.client(name, endpoint_url=url, region_name="us-east-1", aws_access_key_id=ak,
                            aws_secret_access_key=sk, config=cfg)

    ecr, ecs = client("ecr"), client("ecs")
    wait_for(lambda: ecr.create_repository(repositoryName="bench-svc"), "berth API")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    ctx = busybox_ctx(work / "berth-ctx")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY bin /bin\nENV PATH=/bin\n")
    subprocess.run([berth, "build", "--endpoint-url", url, "--data-dir", str(data), "-t", "bench-svc:v1",
                    str(ctx)], env=env, check=True, capture_output=True, timeout=120)
    image = f"127.0.0.1:{port}/bench-svc:v1"
    td = ecs.register_task_definition(
        family="bench-svc", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
        memory="512", containerDefinitions=[{"name": "app", "image": image, "essential": True,
                                             "command": LOOP, "stopTimeout": 2}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_cluster(clusterName="bench")

    def running(name):
        return ecs.describe_services(cluster="bench", services=[name])["services"][0]["runningCount"]

    def drain(name):
        ecs.update_service(cluster="bench", service=name, desiredCount=0)
        wait_for(lambda: running(name) == 0 and not ecs.list_tasks(
            cluster="bench", serviceName=name, desiredStatus="RUNNING")["taskArns"], f"{name} scaled to 0")
        ecs.delete_service(cluster="bench", service=name)
        # Wait until the tasks are stopped on the node too, so the next round starts idle.
        wait_for(lambda: all(t["lastStatus"] == "STOPPED" for t in _tasks(ecs)), f"{name}'s tasks stopped")

    # Warm-up: the agent pulls and unpacks the image once; a real host has it cached too.
    ecs.create_service(cluster="bench", serviceName="warm", taskDefinition=td, desiredCount=1,
                       launchType="FARGATE")
    wait_for(lambda: running("warm") == 1, "the warm-up task running")
    drain("warm")

    times, curves = [], []
    for r in range(rounds):
        name = f"svc{r}"
        curve = []
        t0 = time.perf_counter()
        ecs.create_service(cluster="bench", serviceName=name, taskDefinition=td, desiredCount=count,
                           launchType="FARGATE")
        end = time.monotonic() + DEADLINE_S
        while True:
            n = running(name)
            el = time.perf_counter() - t0
            if not curve or curve[-1][1] != n:
                curve.append((el, n))
            if n >= count:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"berth: {n}/{count} running after {DEADLINE_S}s")
            time.sleep(POLL_S)
        times.append(el)
        curves.append(curve)
        drain(name)
    return {"times": times, "curves": curves}


def _tasks(ecs) -> list[dict]:
    out = []
    for status in ("RUNNING", "STOPPED"):
        arns = ecs.list_tasks(cluster="bench", desiredStatus=status, maxResults=100)["taskArns"]
        for i in range(0, len(arns), 100):
            out += ecs.describe_tasks(cluster="bench", tasks=arns[i:i + 100])["tasks"]
    return out


# ---------------------------------------------------------------------------------------
# Docker Swarm
# ---------------------------------------------------------------------------------------

def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def bench_swarm(work: Path, counts: list[int]) -> dict:
    docker = shutil.which("docker")
    root = Path(tempfile.mkdtemp(prefix="bsw-", dir="/tmp"))
    sock = root / "d.sock"
    bridge = "bsw" + uuid.uuid4().hex[:8]
    links_before = _links()
    # A bridge of the peer's own, so its containers never touch a docker0 someone else uses.
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.1/24",
                    "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
    with open(root / "dockerd.log", "wb") as lf:
        d = subprocess.Popen(["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                              "--pidfile", str(root / "d.pid"), "-H", f"unix://{sock}", "--iptables=false",
                              "--bridge", bridge],
                             stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True)
    result = {"times": {}}

    def dk(*args, check=True, **kw):
        return subprocess.run([docker, *args], env=env, capture_output=True, text=True, check=check, **kw)

    try:
        wait_for(lambda: dk("version", check=False).returncode == 0, "dockerd", deadline=60)
        rootfs = busybox_ctx(work / "swarm-ctx")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([docker, "import", "-c", "ENV PATH=/bin", "-", "bench-busybox:v1"], stdin=tar.stdout,
                       env=env, check=True, capture_output=True)
        tar.wait()
        dk("swarm", "init", "--advertise-addr", "127.0.0.1")
        for n in counts:
            name = f"s{n}"
            t0 = time.perf_counter()
            dk("service", "create", "--detach", "--replicas", str(n), "--name", name, "bench-busybox:v1", *LOOP)
            end = time.monotonic() + DEADLINE_S
            while True:
                reps = dk("service", "ls", "--filter", f"name={name}", "--format", "{{.Replicas}}",
                          check=False).stdout.strip()
                el = time.perf_counter() - t0
                if reps == f"{n}/{n}":
                    break
                if time.monotonic() > end:
                    raise RuntimeError(f"swarm: {reps} after {DEADLINE_S}s")
                time.sleep(POLL_S)
            result["times"][n] = el
            dk("service", "rm", name)
            wait_for(lambda: not dk("ps", "-q", check=False).stdout.strip(), f"swarm {name} removed",
                     deadline=120, interval=0.5)
        return result
    finally:
        dk("swarm", "leave", "--force", check=False)
        if "docker_gwbridge" not in links_before:
            dk("network", "rm", "docker_gwbridge", check=False)
        stop(d)
        # Swarm's namespaces (ingress_sbox, the overlay's) are bind mounts under the exec root.
        subprocess.run(["umount", "-R", str(root)], capture_output=True)
        subprocess.run(["umount", "-R", str(root / "exec" / "netns")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        # The links the peer made in the host namespace: its bridge and docker_gwbridge
        # (swarm makes it at init; deleted only if it was not there before). Container
        # veths go with their namespaces.
        for link in (bridge, "docker_gwbridge"):
            if link not in links_before:
                subprocess.run(["ip", "link", "del", link], capture_output=True)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=50, help="berth service size (tasks)")
    ap.add_argument("--rounds", type=int, default=3, help="berth rounds (median reported)")
    ap.add_argument("--swarm", default="20,50", help="swarm replica counts, comma-separated; empty to skip")
    ap.add_argument("--keep-log", help="copy the berth server log here")
    ap.add_argument("--log-level", default="info", help="the berth server's --log-level")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-svc-bench-"))
    try:
        b = bench_berth(a.berth, work, a.count, a.rounds, a.log_level)
        if a.keep_log:
            shutil.copy(b["log"], a.keep_log)
        counts = [int(x) for x in a.swarm.split(",") if x]
        s = bench_swarm(work, counts) if counts else {"times": {}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bt = statistics.median(b["times"])
    lines = ["# berth services benchmark", "",
             f"A service of small tasks on one host (busybox `sh` loop, image local), seconds from the create "
             f"call until every task is running. berth: CreateService(desiredCount={a.count}), FARGATE awsvpc "
             f"(a netns + veth per task), DescribeServices polled every {POLL_S * 1000:.0f} ms, {a.rounds} rounds "
             f"(median). Swarm: `docker service create --replicas N --detach`, default bridge network, "
             f"`docker service ls` polled until REPLICAS N/N, one round each. Ratio: peer time / berth time "
             f"(above 1 favours berth).", "",
             "| system | tasks | seconds | peer/berth |", "|---|---|---|---|",
             f"| berth | {a.count} | {bt:.2f} (rounds: {', '.join(f'{t:.2f}' for t in b['times'])}) | |"]
    for n, t in s["times"].items():
        lines.append(f"| Docker Swarm | {n} | {t:.2f} | {t / bt:.2f}× (per task: "
                     f"{(t / n) / (bt / a.count):.2f}×) |")
    lines += ["", f"Target: berth < 2 s for {a.count} tasks: {bt:.2f} s — {'met' if bt < 2 else 'NOT met'}.", "",
              "berth's running count over time (first round; seconds → tasks running): " +
              ", ".join(f"{t:.2f}→{n}" for t, n in b["curves"][0])]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
