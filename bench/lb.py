"""HTTP load balancing: berth's ALB listener against haproxy and nginx as a reverse
proxy, in front of the same backend, on the same machine in the same run.

The backend is an nginx (`return 200 "ok\\n";`). In front of it, one worker thread
each: berth (`berth server --no-agent --lb-threads 1`, a load balancer, an ip target
group with the backend registered and healthy, a listener forwarding to it, all made
with boto3's `elbv2`), haproxy (`nbthread 1`, http mode, server connections reused)
and nginx (`worker_processes 1`, an upstream with `keepalive`). All three add the
X-Forwarded-For/-Proto/-Port headers an ALB adds, so they do the same work.

CPU pinning (2 cores): every front — the whole berth server process, haproxy, the
nginx front's master and worker — runs on core 0 alone (`taskset -c 0`); the backend
nginx and wrk share core 1. The load is `wrk -t1 -c50 -d10s --latency` against each
front after a 2 s warm-up; all three fronts stay up and are measured in turn, 3 rounds,
medians reported. The fronts' CPU time during each measured run is read from /proc
(per thread for berth).

Every process started here is stopped by its pid, every directory made here is
removed, even on failure.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from runtime import free_port
from services import stop, wait_for

FRONT_CPU = "0"
LOAD_CPU = "1"
CLK = os.sysconf("SC_CLK_TCK")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv]


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as lf:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True)


def wait_port(port: int, what: str, proc: subprocess.Popen | None = None, deadline: float = 30) -> None:
    import socket

    def up():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    wait_for(up, what, deadline=deadline, interval=0.05)


# ---------------------------------------------------------------------------------------
# CPU accounting from /proc
# ---------------------------------------------------------------------------------------

def _ticks(stat_path: Path) -> tuple[str, int]:
    s = stat_path.read_text()
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    return comm, int(f[11]) + int(f[12])  # utime + stime


def threads_cpu(pids: list[int]) -> dict[str, float]:
    """Seconds of CPU per (process, thread name) for the processes `pids`."""
    out: dict[str, float] = {}
    for pid in pids:
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                comm, ticks = _ticks(t / "stat")
            except (FileNotFoundError, ProcessLookupError):
                continue
            key = f"{pid}/{comm}"
            out[key] = out.get(key, 0.0) + ticks / CLK
    return out


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------

def _dur_ms(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[u]


def wrk(port: int, seconds: int, conns: int) -> dict:
    out = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    r = {"raw": out}
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for p in ("50", "90", "99"):
        r[f"p{p}"] = _dur_ms(re.search(rf"^\s+{p}(?:\.000)?%\s+(\S+)", out, re.M).group(1))
    r["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def measure(name: str, port: int, pids_fn, seconds: int, warmup: int, conns: int) -> dict:
    wrk(port, warmup, conns)
    pids = pids_fn()
    before = threads_cpu(pids)
    t0 = time.monotonic()
    r = wrk(port, seconds, conns)
    wall = time.monotonic() - t0
    after = threads_cpu(pids)
    per = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    r["cpu_s"] = sum(per.values())
    r["cpu_pct"] = 100 * r["cpu_s"] / wall
    r["threads"] = {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0.005}
    r["wall"] = wall
    print(f"{name}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
          f"front CPU {r['cpu_pct']:.0f}%, non-2xx {r['non2xx']}, socket errors {r['errors']}", flush=True)
    return r


# ---------------------------------------------------------------------------------------
# The processes
# ---------------------------------------------------------------------------------------

NGINX_COMMON = """
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
"""
NGINX_HTTP_COMMON = """
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""


def start_nginx(work: Path, name: str, cpu: str, http_body: str) -> subprocess.Popen:
    d = work / name
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text("worker_processes 1;\n" + NGINX_COMMON.format(d=d) + "http {\n" +
                    NGINX_HTTP_COMMON.format(d=d) + http_body + "}\n")
    return spawn(pinned(cpu, ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)]),
                 d / "stderr.log")


def start_backend(work: Path, port: int) -> subprocess.Popen:
    return start_nginx(work, "backend", LOAD_CPU, f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
""")


def start_nginx_front(work: Path, port: int, backend: int) -> subprocess.Popen:
    return start_nginx(work, "nginx-front", FRONT_CPU, f"""
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
""")


def start_haproxy(work: Path, port: int, backend: int) -> subprocess.Popen:
    d = work / "haproxy"
    d.mkdir()
    conf = d / "haproxy.cfg"
    conf.write_text(f"""global
    nbthread 1
    maxconn 4096
    pidfile {d}/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend front
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend back

backend back
    server b1 127.0.0.1:{backend}
""")
    # -db: stay in the foreground (the pid is haproxy's own).
    return spawn(pinned(FRONT_CPU, ["haproxy", "-db", "-f", str(conf)]), d / "haproxy.log")


def start_berth(berth: str, work: Path, extra: list[str], cpu: str = FRONT_CPU) -> tuple[subprocess.Popen, dict]:
    """A berth server of its own (temp data dir, free API port, no agent), pinned to `cpu`."""
    data = work / "berth-data"
    port = free_port()
    log = work / "berth.log"
    p = spawn(pinned(cpu, [berth, "server", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                           "--no-agent", *extra]), log)
    info = {"url": f"http://127.0.0.1:{port}", "data": data, "log": log}
    try:
        def ready():
            if p.poll() is not None:
                raise SystemExit(f"berth exited: {log.read_text()[-2000:]}")
            return (data / "credentials").exists()

        wait_for(ready, "berth credentials", deadline=60)
        cp = configparser.ConfigParser()
        wait_for(lambda: cp.read(data / "credentials") and "default" in cp, "berth credentials readable")
        info["creds"] = (cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"])
        wait_port(port, "berth API", p)
    except BaseException:
        stop(p)
        raise
    return p, info


def boto(info: dict, service: str, **cfg):
    import boto3
    from botocore.config import Config

    ak, sk = info["creds"]
    return boto3.client(service, endpoint_url=info["url"], region_name="us-east-1", aws_access_key_id=ak,
                        aws_secret_access_key=sk,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **cfg))


def berth_listener(info: dict, port: int, backend: int) -> None:
    elb = boto(info, "elbv2")
    lb = elb.create_load_balancer(Name="bench", Subnets=["subnet-a", "subnet-b"],
                                  Scheme="internal")["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="bench-backend", Protocol="HTTP", Port=backend, TargetType="ip",
                                 HealthCheckProtocol="HTTP", HealthCheckPath="/", HealthCheckIntervalSeconds=5,
                                 HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
                                 UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "127.0.0.1"}])
    elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=port,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])

    def healthy():
        d = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        return d and all(x["TargetHealth"]["State"] == "healthy" for x in d)

    t0 = time.monotonic()
    wait_for(healthy, "berth's target healthy", deadline=60, interval=0.25)
    print(f"berth: target healthy after {time.monotonic() - t0:.1f} s", flush=True)
    wait_port(port, "berth listener")


def summarize(rs: list[dict]) -> dict:
    """Medians over the rounds; sums of errors; the rounds' requests/s and p99 as text."""
    med = lambda k: statistics.median(x[k] for x in rs)  # noqa: E731
    return {"rps": med("rps"), "p50": med("p50"), "p90": med("p90"), "p99": med("p99"),
            "cpu_pct": med("cpu_pct"), "us_req": statistics.median(1e6 * x["cpu_s"] / x["requests"] for x in rs),
            "non2xx": sum(x["non2xx"] for x in rs), "errors": sum(x["errors"] for x in rs),
            "wall": med("wall"), "rps_all": ", ".join(f"{x['rps']:,.0f}" for x in rs),
            "p99_all": ", ".join(f"{x['p99']:.2f}" for x in rs)}


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

def run(berth: str, work: Path, seconds: int, warmup: int, conns: int, rounds: int) -> dict:
    procs: list[subprocess.Popen] = []
    res: dict = {}
    try:
        bport = free_port()
        backend = start_backend(work, bport)
        procs.append(backend)
        wait_port(bport, "backend nginx", backend)
        check = subprocess.run(["curl", "-s", f"http://127.0.0.1:{bport}/"], capture_output=True, text=True)
        assert check.stdout == "ok\n", check

        # All three fronts stay up; the rounds take them in turn (berth, haproxy, nginx, ...).
        srv, info = start_berth(berth, work, ["--lb-threads", "1"])
        procs.append(srv)
        lport = free_port()
        berth_listener(info, lport, bport)
        hport = free_port()
        hp = start_haproxy(work, hport, bport)
        procs.append(hp)
        wait_port(hport, "haproxy", hp)
        nport = free_port()
        ng = start_nginx_front(work, nport, bport)
        procs.append(ng)
        wait_port(nport, "nginx front", ng)
        fronts = {"berth": (lport, lambda: [srv.pid]), "haproxy": (hport, lambda: [hp.pid]),
                  "nginx": (nport, lambda: [ng.pid, *children(ng.pid)])}
        for r in range(rounds):
            for name, (port, pids) in fronts.items():
                res.setdefault(name, []).append(measure(f"round {r + 1} {name}", port, pids, seconds, warmup, conns))
        res["versions"] = {
            "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        }
        return res
    finally:
        for p in reversed(procs):
            stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all three fronts in turn (median reported)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-lb-bench-"))
    start = datetime.now(timezone.utc)
    load = os.getloadavg()
    try:
        r = run(a.berth, work, a.seconds, a.warmup, a.conns, a.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: summarize(r[k]) for k in ("berth", "haproxy", "nginx")}
    b, h, n = med["berth"], med["haproxy"], med["nginx"]
    lines = [
        "# berth load balancer benchmark", "",
        f"{start:%Y-%m-%d %H:%M} UTC, load average at the start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"({os.cpu_count()} cores). Backend: nginx `return 200 \"ok\\n\";` (1 worker) on core {LOAD_CPU}. "
        f"Each front one worker thread, the whole process pinned to core {FRONT_CPU}; "
        f"`wrk -t1 -c{a.conns} -d{a.seconds}s --latency` on core {LOAD_CPU} after a {a.warmup} s warm-up, "
        f"the fronts in turn, {a.rounds} rounds, medians (each round's figures after the slash). "
        f"{r['versions']['haproxy']}; {r['versions']['nginx']}; {r['versions']['wrk']}.", "",
        "| front | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors | front CPU (core 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, x in (("berth (ALB listener, --lb-threads 1)", b), ("haproxy (nbthread 1)", h),
                    ("nginx proxy (worker_processes 1)", n)):
        lines.append(f"| {name} | {x['rps']:,.0f} / {x['rps_all']} | {x['p50']:.2f} | {x['p90']:.2f} | "
                     f"{x['p99']:.2f} / {x['p99_all']} | {x['non2xx']} | {x['errors']} | "
                     f"{x['cpu_pct']:.0f}% ({x['us_req']:.1f} µs/req) |")
    rh, rn = b["rps"] / h["rps"], b["rps"] / n["rps"]
    ph, pn = h["p99"] / b["p99"], n["p99"] / b["p99"]
    ok_rps = b["rps"] >= h["rps"] and b["rps"] >= n["rps"]
    ok_p99 = b["p99"] <= h["p99"] and b["p99"] <= n["p99"]
    lines += [
        "",
        f"Ratios (above 1 favours berth): requests/s berth/haproxy {rh:.2f}×, berth/nginx {rn:.2f}×; "
        f"p99 haproxy/berth {ph:.2f}×, nginx/berth {pn:.2f}×.", "",
        f"Target (issue 5): berth's requests/s ≥ both peers' — {'met' if ok_rps else 'NOT met'}; "
        f"p99 no worse than either — {'met' if ok_p99 else 'NOT met'}.", "",
        "berth's CPU per thread during the measured runs (seconds in each round of "
        f"{b['wall']:.1f} s): " + "; ".join(", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in x["threads"].items())
                                           for x in r["berth"]),
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
