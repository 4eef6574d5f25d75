"""berth's registry against docker-registry (CNCF distribution), same machine, same run.

Scenarios (each repeated, median reported): monolithic upload of a 200 MB blob,
download of it, 50 concurrent full pulls of a small image, server RSS idle.
Every server started here is stopped by its pid, even on failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse

REPS = 3
BLOB_MB = 200


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, name, cmd, port, auth, ready_status, env=None):
        self.name, self.cmd, self.port, self.auth, self.ready_status = name, cmd, port, auth, ready_status
        self.env = env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                if c.getresponse().status == self.ready_status:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def headers(self, extra=None):
        h = dict(extra or {})
        if self.auth:
            h["Authorization"] = self.auth
        return h


def request(srv, method, path, body=None, headers=None):
    c = srv.conn()
    c.request(method, path, body=body, headers=srv.headers(headers))
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def upload(srv, repo, path, digest, size):
    r, _ = request(srv, "POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status == 202, (srv.name, r.status)
    loc = r.getheader("Location")
    u = urllib.parse.urlsplit(loc)
    q = (u.query + "&" if u.query else "") + f"digest={digest}"
    c = srv.conn()
    with open(path, "rb") as f:
        t0 = time.perf_counter()
        c.request("PUT", f"{u.path}?{q}", body=f, headers=srv.headers(
            {"Content-Length": str(size), "Content-Type": "application/octet-stream"}))
        resp = c.getresponse()
        resp.read()
        dt = time.perf_counter() - t0
    c.close()
    assert resp.status == 201, (srv.name, resp.status)
    assert resp.getheader("Docker-Content-Digest") == digest
    return dt


def download(srv, repo, digest):
    c = srv.conn()
    t0 = time.perf_counter()
    c.request("GET", f"/v2/{repo}/blobs/{digest}", headers=srv.headers())
    r = c.getresponse()
    assert r.status == 200, (srv.name, r.status)
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
    dt = time.perf_counter() - t0
    c.close()
    return dt, n


def push_small_image(srv, repo):
    layers = [os.urandom(s) for s in (1 << 20, 2 << 20, 4 << 20)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for b in [config, *layers]:
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        r, _ = request(srv, "POST", f"/v2/{repo}/blobs/uploads/")
        loc = urllib.parse.urlsplit(r.getheader("Location"))
        q = (loc.query + "&" if loc.query else "") + f"digest={d}"
        r, _ = request(srv, "PUT", f"{loc.path}?{q}", body=b,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201, (srv.name, r.status)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)} for b in layers],
    }).encode()
    r, _ = request(srv, "PUT", f"/v2/{repo}/manifests/v1", body=manifest,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status == 201, (srv.name, r.status)


def full_pull(srv, repo, errors):
    try:
        c = srv.conn()
        c.request("GET", f"/v2/{repo}/manifests/v1", headers=srv.headers(
            {"Accept": "application/vnd.oci.image.manifest.v1+json"}))
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            errors.append(f"manifest {r.status}")
            return
        m = json.loads(body)
        for d in [m["config"], *m["layers"]]:
            c.request("GET", f"/v2/{repo}/blobs/{d['digest']}", headers=srv.headers())
            r = c.getresponse()
            data = r.read()
            if r.status != 200 or "sha256:" + hashlib.sha256(data).hexdigest() != d["digest"]:
                errors.append(f"blob {d['digest'][:19]} {r.status}")
        c.close()
    except Exception as e:  # noqa: BLE001 - every failure counts as an error
        errors.append(repr(e))


def concurrent_pulls(srv, repo, n=50):
    errors: list[str] = []
    threads = [threading.Thread(target=full_pull, args=(srv, repo, errors)) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, errors


def start_berth(bin_path, work):
    import boto3
    port = free_port()
    data = os.path.join(work, "berth-data")
    srv = Server("berth", [bin_path, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                           "--log-level", "warn"], port, None, 401).start()
    creds = {}
    for line in open(os.path.join(data, "credentials")):
        if "=" in line:
            k, v = line.split("=", 1)
            creds[k.strip()] = v.strip()
    ecr = boto3.client("ecr", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                       aws_access_key_id=creds["aws_access_key_id"],
                       aws_secret_access_key=creds["aws_secret_access_key"])
    ecr.create_repository(repositoryName="bench")
    ecr.create_repository(repositoryName="pulls")
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    srv.auth = "Basic " + token
    return srv


def start_peer(bin_path, work):
    port = free_port()
    root = os.path.join(work, "peer-data")
    cfg = os.path.join(work, "peer.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    return Server("docker-registry", [bin_path, "serve", cfg], port, None, 200).start()


def measure(srv, blobs, startup_rss):
    out = {"rss_start_mib": startup_rss / 1024}
    ups, downs = [], []
    for path, digest, size in blobs:
        ups.append(size / upload(srv, "bench", path, digest, size) / 1e6)
    for path, digest, size in blobs:
        dt, n = download(srv, "bench", digest)
        assert n == size
        downs.append(size / dt / 1e6)
    push_small_image(srv, "pulls")
    pulls = [concurrent_pulls(srv, "pulls") for _ in range(REPS)]
    out["upload_mbs"] = statistics.median(ups)
    out["download_mbs"] = statistics.median(downs)
    out["pulls_s"] = statistics.median(p[0] for p in pulls)
    out["pull_errors"] = sum(len(p[1]) for p in pulls)
    time.sleep(2)  # a measurement of idle memory, not synchronisation
    out["rss_idle_mib"] = rss_kib(srv.proc.pid) / 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="berth-bench-", dir="/var/tmp")
    servers = []
    try:
        blobs = []
        for i in range(REPS):
            p = os.path.join(work, f"blob{i}")
            h = hashlib.sha256()
            with open(p, "wb") as f:
                for _ in range(BLOB_MB):
                    chunk = os.urandom(1 << 20)
                    h.update(chunk)
                    f.write(chunk)
            blobs.append((p, "sha256:" + h.hexdigest(), BLOB_MB << 20))
        results = {}
        for name, start in (("berth", lambda: start_berth(a.berth, work)), ("docker-registry", lambda: start_peer(a.peer, work))):
            srv = start()
            servers.append(srv)
            time.sleep(1)  # let startup settle before reading RSS (a measurement, not synchronisation)
            results[name] = measure(srv, blobs, rss_kib(srv.proc.pid))
            srv.stop()
        b, p = results["berth"], results["docker-registry"]
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        rows = [
            ("monolithic upload, 200 MB (MB/s)", b["upload_mbs"], p["upload_mbs"], b["upload_mbs"] / p["upload_mbs"], "≥ 2.0× peer", b["upload_mbs"] >= 2 * p["upload_mbs"]),
            ("download, 200 MB (MB/s)", b["download_mbs"], p["download_mbs"], b["download_mbs"] / p["download_mbs"], "≥ 1.0× peer", b["download_mbs"] >= p["download_mbs"]),
            ("50 concurrent full pulls (s, lower is better)", b["pulls_s"], p["pulls_s"], p["pulls_s"] / b["pulls_s"], "0 errors", b["pull_errors"] == 0),
            ("pull errors (of 150 pulls)", b["pull_errors"], p["pull_errors"], None, "0", b["pull_errors"] == 0),
            ("RSS after start (MiB)", b["rss_start_mib"], p["rss_start_mib"], p["rss_start_mib"] / b["rss_start_mib"], "", None),
            ("RSS idle after the run (MiB)", b["rss_idle_mib"], p["rss_idle_mib"], p["rss_idle_mib"] / b["rss_idle_mib"], "< 30 MiB", b["rss_idle_mib"] < 30),
        ]
        lines = [
            "# berth registry benchmark",
            "",
            f"Machine: {os.cpu_count()} cores, {cpu}. Loopback, median of {REPS}. "
            "Peer: Debian's docker-registry (CNCF distribution), filesystem storage, no auth; berth with Basic auth. "
            "Ratio: berth/peer for throughput, peer/berth for time and memory (higher is better for berth).",
            "",
            "| scenario | berth | docker-registry | ratio | target | met |",
            "|---|---|---|---|---|---|",
        ]
        for name, bv, pv, ratio, target, met in rows:
            fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)
            lines.append(f"| {name} | {fmt(bv)} | {fmt(pv)} | {'' if ratio is None else f'{ratio:.2f}×'} | {target} | {'' if met is None else ('met' if met else 'NOT met')} |")
        report = "\n".join(lines) + "\n"
        print(report)
        with open(a.out, "w") as f:
            f.write(report)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
