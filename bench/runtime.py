"""berth's container start against bare runc, docker and podman on the same busybox
image, same machine, same run; and the memory of what stays resident.

Timed: from starting the command to its exit, `true` in the container, the image
already local (one warm-up run first). Every process started here is stopped by its
pid, and every directory made here is removed, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

RUNS = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(cmd: list[str], env=None, runs=RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return out


def wait_for(pred, what, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def busybox_rootfs(d: Path) -> Path:
    root = d / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for a in ("true", "sh", "sleep"):
        os.symlink("busybox", root / "bin" / a)
    for x in ("proc", "dev", "sys", "tmp", "etc"):
        (root / x).mkdir()
    return root


class Procs:
    """Processes started here, stopped by pid at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()


def bench_runc(work: Path) -> list[float]:
    bundle = work / "runc-bundle"
    bundle.mkdir()
    busybox_rootfs(bundle)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    # No CAP_SYS_RESOURCE here: keep rlimits within the current hard limits.
    spec["process"].pop("rlimits", None)
    (bundle / "config.json").write_text(json.dumps(spec))
    root = work / "runc-root"
    out = []
    for i in range(RUNS + 1):
        cid = f"bench-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        subprocess.run(["runc", "--root", str(root), "run", "--bundle", str(bundle), cid],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        if i:
            out.append((time.perf_counter() - t) * 1000)
    return out


def bench_berth(berth: str, work: Path, procs: Procs, venv: str) -> tuple[list[float], dict]:
    data = work / "berth-data"
    port = free_port()
    bridge = "bb" + uuid.uuid4().hex[:10]
    subnet = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
    srv = procs.start([berth, "server", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                       "--bridge", bridge, "--task-subnet", subnet, "--metadata-port", str(free_port())],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _bench_berth(berth, work, srv, data, port, venv)
    finally:
        # Whatever happened: stop the server, then remove every container, namespace,
        # mount and the bridge it made.
        if srv.poll() is None:
            os.kill(srv.pid, signal.SIGTERM)
            srv.wait(timeout=30)
        subprocess.run([berth, "down", "--data-dir", str(data)], capture_output=True)


def _bench_berth(berth: str, work: Path, srv, data: Path, port: int, venv: str) -> tuple[list[float], dict]:
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: (data / "credentials").exists(), "berth credentials")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(data / "credentials"), "AWS_DEFAULT_REGION": "us-east-1",
                "BERTH_ENDPOINT": url})
    wait_for(lambda: subprocess.run([f"{venv}/bin/aws", "--endpoint-url", url, "ecr", "create-repository",
                                     "--repository-name", "bench-busybox"], env=env,
                                    capture_output=True).returncode == 0, "berth API")
    ctx = work / "berth-ctx"
    busybox_rootfs(ctx)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY rootfs /\n")
    subprocess.run([berth, "build", "-t", "bench-busybox:v1", str(ctx)], env=env, check=True,
                   capture_output=True)
    cmd = [berth, "run", "bench-busybox:v1", "/bin/true"]
    rss_start = rss_mib(srv.pid)
    timed(cmd, env=env, runs=1)  # warm-up: pulls and caches the image
    times = timed(cmd, env=env)
    # A running container: its shim's memory.
    detached = subprocess.run([berth, "run", "-d", "bench-busybox:v1", "/bin/sleep", "60"], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
    task_id = detached.rsplit("/", 1)[1]
    shim_rss = 0.0

    def find_shim():
        nonlocal shim_rss
        # The shim writes its pid next to its container (standby shims start without
        # a task id on their command line).
        pid_file = data / "agent" / "tasks" / task_id / "c0" / "shim.pid"
        if not pid_file.exists():
            return False
        shim_rss = rss_mib(int(pid_file.read_text().strip()))
        return shim_rss > 0

    wait_for(find_shim, "the shim of a running container")
    subprocess.run([berth, "stop", task_id], env=env, capture_output=True)
    time.sleep(2)  # settle before reading idle memory (not synchronisation: a measurement window)
    return times, {"rss_start": rss_start, "rss_idle": rss_mib(srv.pid), "shim": shim_rss}


def bench_docker(work: Path, procs: Procs) -> tuple[list[float], dict]:
    root = Path(tempfile.mkdtemp(prefix="bd-", dir="/tmp"))
    sock = root / "d.sock"
    d = procs.start(["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                     "--pidfile", str(root / "d.pid"), "-H", f"unix://{sock}", "--iptables=false",
                     "--bridge=none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
    try:
        wait_for(lambda: subprocess.run(["docker", "version"], env=env, capture_output=True).returncode == 0,
                 "dockerd")
        rootfs = busybox_rootfs(work / "docker-ctx")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", "bench-busybox:v1"], stdin=tar.stdout, env=env, check=True,
                       capture_output=True)
        tar.wait()
        cmd = ["docker", "run", "--rm", "--network", "none", "bench-busybox:v1", "/bin/true"]
        timed(cmd, env=env, runs=1)  # warm-up
        times = timed(cmd, env=env)
        time.sleep(2)
        containerd = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                      _ppid(int(p)) == d.pid and b"containerd" in _cmd(int(p))]
        mem = {"dockerd": rss_mib(d.pid), "containerd": sum(rss_mib(p) for p in containerd)}
        return times, mem
    finally:
        os.kill(d.pid, signal.SIGTERM)
        d.wait(timeout=60)
        subprocess.run(["umount", "-R", str(root)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _ppid(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmd(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def bench_podman(work: Path) -> list[float] | None:
    if not shutil.which("podman"):
        return None
    root = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    conf = root / "containers.conf"
    # podman's default ulimits raise NOFILE/NPROC above this machine's hard limits
    # (no CAP_SYS_RESOURCE): keep the host's; crun refuses hybrid cgroups: use runc.
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run"), "--runtime", "runc"]
    try:
        rootfs = busybox_rootfs(work / "podman-ctx")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(base + ["import", "-", "localhost/bench-busybox:v1"], stdin=tar.stdout, env=env,
                       check=True, capture_output=True)
        tar.wait()
        cmd = base + ["run", "--rm", "--network", "none", "localhost/bench-busybox:v1", "/bin/true"]
        timed(cmd, env=env, runs=1)  # warm-up
        return timed(cmd, env=env)
    finally:
        subprocess.run(base + ["system", "reset", "--force"], env=env, capture_output=True)
        subprocess.run(["umount", "-R", str(root)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-rt-bench-"))
    procs = Procs()
    try:
        runc_t = bench_runc(work)
        berth_t, berth_mem = bench_berth(a.berth, work, procs, a.venv)
        docker_t, docker_mem = bench_docker(work, procs)
        podman_t = bench_podman(work)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("bare `runc run` (prepared bundle, new netns)", runc_t),
        ("`berth run IMAGE true` (API, awsvpc netns + veth, overlay, shim)", berth_t),
        ("`docker run --rm --network none`", docker_t),
    ]
    if podman_t:
        rows.append(("`podman run --rm --network none` (runc)", podman_t))
    lines = ["# berth runtime benchmark", "",
             f"Same busybox image, cached, `true` in the container; {RUNS} runs each after one warm-up, "
             "milliseconds from command start to exit. Ratio: peer time / berth time (above 1 favours berth).", "",
             "| command | median ms | p90 ms | peer/berth |", "|---|---|---|---|"]
    for name, t in rows:
        p90 = sorted(t)[int(len(t) * 0.9) - 1]
        ratio = med(t) / med(berth_t)
        lines.append(f"| {name} | {med(t):.0f} | {p90:.0f} | {ratio:.2f}× |")
    target = med(berth_t) <= 2 * med(runc_t)
    lines += ["", f"Target: berth within 2× of bare runc: {med(berth_t):.0f} ms vs 2 × {med(runc_t):.0f} ms "
              f"= {2 * med(runc_t):.0f} ms — {'met' if target else 'NOT met'}.", "",
              "| memory (RSS, MiB) | berth | docker |", "|---|---|---|",
              f"| control plane + agent, idle after the runs | {berth_mem['rss_idle']:.1f} (all-in-one server: API, registry and agent) | dockerd {docker_mem['dockerd']:.1f} + containerd {docker_mem['containerd']:.1f} |",
              f"| per running container | shim {berth_mem['shim']:.1f} | |",
              f"| server right after start | {berth_mem['rss_start']:.1f} | |", "",
              f"Target: agent idle RSS under 15 MiB — the agent runs inside the server; the whole server idles at "
              f"{berth_mem['rss_idle']:.1f} MiB: {'met' if berth_mem['rss_idle'] < 15 else 'NOT met'}."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
