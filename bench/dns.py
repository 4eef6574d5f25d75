"""DNS: berth's Cloud Map DNS (`berth server --dns`) against dnsmasq serving the same
records, on the same machine in the same run.

berth: a private DNS namespace `bench.local`, a service `web` (MULTIVALUE, an A record
with TTL 60) and 5 registered instances, all made with boto3's `servicediscovery`.
dnsmasq: its own process (`--no-daemon`, no config file, no resolv.conf, no
/etc/hosts) with an addn-hosts file giving `web.bench.local` the same 5 addresses
(`--local-ttl 60`). Both are checked with `dig` to answer the same 5 A records first.

Load: `dnsperf -l 10 -c 10 -Q 200000` with a query file of `web.bench.local A`, after a
2 s warm-up; each server's whole process pinned to core 0 (`taskset -c 0`), dnsperf on
core 1. Both servers stay up and are measured in turn, 3 rounds; medians reported.

Every process started here is stopped by its pid, every directory made here is
removed, even on failure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from lb import FRONT_CPU, LOAD_CPU, boto, pinned, spawn, start_berth, threads_cpu
from runtime import free_port
from services import stop, wait_for

NS, SVC = "bench.local", "web"
NAME = f"{SVC}.{NS}"
IPS = [f"10.77.0.{i}" for i in range(1, 6)]


def dig(port: int, name: str = NAME) -> list[str]:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "A", "+short", "+time=1", "+tries=1"],
                         capture_output=True, text=True, timeout=10).stdout
    return sorted(x for x in out.split() if x)


def dnsperf(port: int, queries: Path, seconds: int, clients: int, qps: int) -> dict:
    out = subprocess.run(
        pinned(LOAD_CPU, ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
                          "-c", str(clients), "-Q", str(qps)]),
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def num(label):
        return float(re.search(rf"{label}:\s+([\d.]+)", out).group(1))

    return {"raw": out, "sent": int(num("Queries sent")), "completed": int(num("Queries completed")),
            "lost": int(num("Queries lost")), "qps": num("Queries per second"),
            "avg_ms": 1e3 * num(r"Average Latency \(s\)"),
            "noerror": int(re.search(r"NOERROR (\d+)", out).group(1)) if "NOERROR" in out else 0}


def measure(name: str, port: int, pid: int, queries: Path, seconds: int, warmup: int, clients: int,
            qps: int) -> dict:
    dnsperf(port, queries, warmup, clients, qps)
    before = threads_cpu([pid])
    t0 = time.monotonic()
    r = dnsperf(port, queries, seconds, clients, qps)
    wall = time.monotonic() - t0
    after = threads_cpu([pid])
    per = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    r["cpu_s"] = sum(per.values())
    r["cpu_pct"] = 100 * r["cpu_s"] / wall
    r["threads"] = {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0.005}
    r["wall"] = wall
    print(f"{name}: {r['qps']:.0f} q/s, avg {r['avg_ms']:.3f} ms, lost {r['lost']}, "
          f"CPU {r['cpu_pct']:.0f}%", flush=True)
    return r


def berth_zone(info: dict) -> None:
    sd = boto(info, "servicediscovery", inject_host_prefix=False)
    op = sd.create_private_dns_namespace(Name=NS, Vpc="vpc-bench")["OperationId"]
    ns_id = wait_for(lambda: (o := sd.get_operation(OperationId=op)["Operation"])["Status"] == "SUCCESS"
                     and o["Targets"]["NAMESPACE"], "namespace created", deadline=30)
    svc = sd.create_service(Name=SVC, NamespaceId=ns_id,
                            DnsConfig={"RoutingPolicy": "MULTIVALUE",
                                       "DnsRecords": [{"Type": "A", "TTL": 60}]})["Service"]["Id"]
    for i, ip in enumerate(IPS, 1):
        sd.register_instance(ServiceId=svc, InstanceId=f"i{i}",
                             Attributes={"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080"})


def run(berth: str, work: Path, seconds: int, warmup: int, clients: int, qps: int, rounds: int) -> dict:
    queries = work / "queries.txt"
    queries.write_text(f"{NAME} A\n")
    res: dict = {}
    procs: list[subprocess.Popen] = []
    try:
        # berth
        dport = free_port()
        srv, info = start_berth(berth, work, ["--dns", f"127.0.0.1:{dport}"])
        procs.append(srv)
        berth_zone(info)
        wait_for(lambda: dig(dport) == IPS, "berth answering the 5 addresses", deadline=30, interval=0.2)
        res["berth_answer"] = subprocess.run(["dig", "@127.0.0.1", "-p", str(dport), NAME, "A", "+noall",
                                              "+answer"], capture_output=True, text=True).stdout

        # dnsmasq
        d = work / "dnsmasq"
        d.mkdir()
        os.chmod(work, 0o755)
        os.chmod(d, 0o755)
        hosts = d / "hosts"
        hosts.write_text("".join(f"{ip} {NAME}\n" for ip in IPS))
        os.chmod(hosts, 0o644)
        mport = free_port()
        dm = spawn(pinned(FRONT_CPU, [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={mport}", "--no-resolv", "--no-hosts",
            f"--addn-hosts={hosts}", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--pid-file={d / 'dnsmasq.pid'}", "--local-ttl=60", "--log-facility=-"]), d / "dnsmasq.log")
        procs.append(dm)

        def dm_up():
            if dm.poll() is not None:
                raise SystemExit(f"dnsmasq exited: {(d / 'dnsmasq.log').read_text()[-2000:]}")
            return dig(mport) == IPS

        wait_for(dm_up, "dnsmasq answering the 5 addresses", deadline=30, interval=0.2)
        res["dnsmasq_answer"] = subprocess.run(["dig", "@127.0.0.1", "-p", str(mport), NAME, "A", "+noall",
                                                "+answer"], capture_output=True, text=True).stdout
        # Both stay up; the rounds take them in turn.
        for r in range(rounds):
            for name, port, pid in (("berth", dport, srv.pid), ("dnsmasq", mport, dm.pid)):
                res.setdefault(name, []).append(
                    measure(f"round {r + 1} {name}", port, pid, queries, seconds, warmup, clients, qps))
        res["versions"] = {
            "dnsmasq": subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            "dnsperf": re.sub(r"\s+", " ", subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
                              .stdout.split("\n")[0]).strip() or "dnsperf",
        }
        return res
    finally:
        for p in reversed(procs):
            stop(p)


def summarize(rs: list[dict]) -> dict:
    med = lambda k: statistics.median(x[k] for x in rs)  # noqa: E731
    return {"qps": med("qps"), "avg_ms": med("avg_ms"), "cpu_pct": med("cpu_pct"), "wall": med("wall"),
            "us_q": statistics.median(1e6 * x["cpu_s"] / x["completed"] for x in rs),
            "sent": sum(x["sent"] for x in rs), "completed": sum(x["completed"] for x in rs),
            "lost": sum(x["lost"] for x in rs), "qps_all": ", ".join(f"{x['qps']:,.0f}" for x in rs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--qps", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of both servers in turn (median reported)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-dns-bench-"))
    start = datetime.now(timezone.utc)
    load = os.getloadavg()
    try:
        r = run(a.berth, work, a.seconds, a.warmup, a.clients, a.qps, a.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, m = summarize(r["berth"]), summarize(r["dnsmasq"])
    ratio = b["qps"] / m["qps"]
    lines = [
        "# berth DNS benchmark", "",
        f"{start:%Y-%m-%d %H:%M} UTC, load average at the start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"({os.cpu_count()} cores). `{NAME} A` (5 A records, TTL 60) from each server, the server's whole "
        f"process pinned to core {FRONT_CPU}, `dnsperf -l {a.seconds} -c {a.clients} -Q {a.qps}` on core "
        f"{LOAD_CPU} after a {a.warmup} s warm-up, the servers in turn, {a.rounds} rounds, medians (each "
        f"round's queries/s after the slash); lost queries summed. {r['versions']['dnsmasq']}.", "",
        "| server | queries/s | average latency ms | sent (all rounds) | completed | lost | server CPU (core 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in (("berth (`--dns`, Cloud Map namespace)", b), ("dnsmasq (addn-hosts)", m)):
        lines.append(f"| {name} | {x['qps']:,.0f} / {x['qps_all']} | {x['avg_ms']:.3f} | {x['sent']:,} | {x['completed']:,} | "
                     f"{x['lost']:,} | {x['cpu_pct']:.0f}% ({x['us_q']:.1f} µs/query) |")
    lines += [
        "",
        f"Ratio berth/dnsmasq (queries/s, above 1 favours berth): {ratio:.2f}×.", "",
        f"Target (issue 5): berth ≥ dnsmasq — {'met' if ratio >= 1 else 'NOT met'}.", "",
        "Answers as served (`dig +noall +answer`):", "", "berth:", "```", r["berth_answer"].strip(), "```",
        "dnsmasq:", "```", r["dnsmasq_answer"].strip(), "```", "",
        f"berth's CPU per thread during the measured runs (seconds in each round of {b['wall']:.1f} s): " +
        "; ".join(", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in x["threads"].items()) for x in r["berth"]),
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
