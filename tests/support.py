"""Helpers shared by the integration tests: the berth server process, raw SigV4 calls,
and OCI Distribution pushes built by hand (so each test controls every byte it sends).

Nothing here asserts on behaviour except `assert_oci_error` and `assert_aws_error`, which
check the error body shapes the contract promises."""

from __future__ import annotations

import configparser
import datetime
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from unittest import mock
from urllib.parse import urljoin

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO_ROOT = Path(__file__).resolve().parent.parent

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921"
REGION = "us-east-1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# How long any single wait for a process or a condition may take before the test fails.
DEADLINE_S = 60.0
HTTP_TIMEOUT_S = 60.0


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique(prefix: str) -> str:
    """A repository-safe name no other test (or concurrent run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_listen_port() -> int:
    """A free port below the kernel's ephemeral range, for a server to listen on while
    other connections run: a port from the ephemeral range (what free_port() returns)
    can be taken by any outgoing connection before the server binds it."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randint(10000, max(10001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def wait_for(predicate, what: str, deadline_s: float = DEADLINE_S, interval_s: float = 0.05):
    """Polls `predicate` until it returns a truthy value (returned) or the deadline passes."""
    end = time.monotonic() + deadline_s
    last_exc = None
    while time.monotonic() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last_exc = e
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {deadline_s}s waiting for {what}; last error: {last_exc!r}")


# ---------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------

LIVE_SERVERS: list["BerthServer"] = []


@dataclass
class BerthServer:
    """One `berth server` process on a data directory; stopped by its pid."""

    bin: Path
    data_dir: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None
    # The built-in agent's node: a bridge and task subnet of this server's own, kept
    # across restarts on the same data directory, so servers can run side by side.
    bridge: str = ""
    subnet: str = ""
    metadata_port: int = 0

    def __post_init__(self):
        self.bridge = "bt" + uuid.uuid4().hex[:10]
        self.subnet = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
        self.metadata_port = free_listen_port()

    def node_args(self) -> list[str]:
        """The node options, unless the test chose its own (tests may replace extra_args
        between restarts; the node stays the same)."""
        if "--no-agent" in self.extra_args or "--bridge" in self.extra_args:
            return []
        return ["--bridge", self.bridge, "--task-subnet", self.subnet,
                "--metadata-port", str(self.metadata_port)]

    @property
    def gateway(self) -> str:
        return self.subnet.rsplit(".", 1)[0] + ".1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "BerthServer":
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        for _attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            log.write(f"\n=== berth server start on port {self.port} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.bin), "server", "--data-dir", str(self.data_dir),
                 "--listen", f"127.0.0.1:{self.port}", *self.extra_args, *self.node_args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
            log.close()
            if self._wait_ready():
                LIVE_SERVERS.append(self)
                return self
            # The port was taken between choosing and binding it: choose another.
        raise RuntimeError(f"berth server did not start; log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                if "in use" in self.log_tail(20).lower():
                    return False
                raise RuntimeError(
                    f"berth server exited with {self.proc.returncode} before it was ready; log:\n"
                    f"{self.log_tail()}")
            try:
                r = requests.get(self.url + "/v2/", timeout=2)
                if r.status_code == 401:
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"berth server not ready (GET /v2/ != 401) within {DEADLINE_S}s; log:\n"
                           f"{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM by pid, then SIGKILL if it does not exit within the deadline."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        return self.proc.returncode

    def down(self) -> None:
        """`berth down`: stops this server's tasks and removes its bridge, namespaces and
        mounts (the server must be stopped)."""
        if (self.data_dir / "agent").exists():
            subprocess.run([str(self.bin), "down", "--data-dir", str(self.data_dir)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120)

    def logs(self):
        return self._client("logs")

    def servicediscovery(self):
        """boto3 Cloud Map client; `inject_host_prefix=False` keeps its `data-` host prefix
        off the endpoint (berth serves every API on one address)."""
        return self._client("servicediscovery", inject_host_prefix=False)

    def _client(self, service: str, **config):
        import boto3
        from botocore.config import Config

        ak, sk = self.credentials()
        return boto3.client(
            service, endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ak, aws_secret_access_key=sk,
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          connect_timeout=10, read_timeout=HTTP_TIMEOUT_S, **config),
        )

    def kill(self) -> None:
        """SIGKILL by pid: the crash the crash-safety tests simulate."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def credentials(self) -> tuple[str, str]:
        cp = configparser.ConfigParser()
        cp.read(self.data_dir / "credentials")
        return cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]

    def ecr(self):
        import boto3
        from botocore.config import Config

        ak, sk = self.credentials()
        return boto3.client(
            "ecr", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ak, aws_secret_access_key=sk,
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          connect_timeout=10, read_timeout=HTTP_TIMEOUT_S),
        )

    def ecs(self):
        """boto3 ECS client with endpoint_url pointed at this server."""
        import boto3
        from botocore.config import Config

        ak, sk = self.credentials()
        return boto3.client(
            "ecs", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ak, aws_secret_access_key=sk,
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          connect_timeout=10, read_timeout=HTTP_TIMEOUT_S),
        )

    def password(self) -> str:
        import base64

        token = self.ecr().get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, _, pw = base64.b64decode(token).decode().partition(":")
        assert user == "AWS"
        return pw

    def registry(self) -> "Registry":
        return Registry(self.url, ("AWS", self.password()))


def run_berth(bin: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------
# HTTP clients
# ---------------------------------------------------------------------------------------


class Registry(requests.Session):
    """A requests.Session bound to the registry's base URL: `reg.get("/v2/")`. Relative
    paths and absolute Location headers both work; every request has a timeout."""

    def __init__(self, base_url: str, auth=None):
        super().__init__()
        self.base_url = base_url
        if auth is not None:
            self.auth = auth

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super().request(method, urljoin(self.base_url, url), *args, **kwargs)

    def fresh(self) -> "Registry":
        """Same credentials, a new connection pool (a client that reconnects)."""
        return Registry(self.base_url, self.auth)


def with_query(location: str, **params: str) -> str:
    sep = "&" if "?" in location else "?"
    return location + sep + "&".join(f"{k}={v}" for k, v in params.items())


def signed_request(url: str, op: str, body: bytes | str, access_key: str, secret_key: str,
                   *, service: str = "ecr", region: str = REGION, skew_s: float = 0,
                   target: str | None = None, extra_headers: dict | None = None) -> AWSRequest:
    """An AWS JSON 1.1 request signed by botocore's own SigV4 signer, optionally with its
    clock moved by `skew_s` seconds."""
    if isinstance(body, str):
        body = body.encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": target or f"{ECR_TARGET}.{op}",
        **(extra_headers or {}),
    }
    req = AWSRequest(method="POST", url=url.rstrip("/") + "/", data=body, headers=headers)
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime",
                    return_value=now + datetime.timedelta(seconds=skew_s)):
        signer.add_auth(req)
    return req


def send(req: AWSRequest, data: bytes | None = None) -> requests.Response:
    """Sends a signed AWSRequest with requests; `data` replaces the signed body (tampering)."""
    p = req.prepare()
    return requests.post(p.url, headers=dict(p.headers), data=p.body if data is None else data,
                         timeout=HTTP_TIMEOUT_S)


def raw_http(host: str, port: int, method: str, path: str, headers: dict | None = None,
             body: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request with http.client, which sends the path exactly as given (requests would
    normalise `..` and `//` away before the server could see them)."""
    conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def assert_oci_error(resp: requests.Response, status: int, code: str) -> dict:
    """The OCI Distribution error body: {"errors": [{"code", "message", "detail"?}]}."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.url}: want {status} {code}, got {resp.status_code} "
        f"{resp.text[:500]!r}")
    assert "json" in resp.headers.get("Content-Type", ""), resp.headers
    body = resp.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for e in body["errors"]:
        assert isinstance(e.get("code"), str) and isinstance(e.get("message"), str), body
    codes = [e["code"] for e in body["errors"]]
    assert code in codes, f"want {code}, got {codes}: {body}"
    return body


def aws_error_type(resp: requests.Response) -> str:
    body = resp.json()
    assert isinstance(body.get("message", body.get("Message")), str), body
    return body["__type"].split("#")[-1]


def assert_aws_error(resp: requests.Response, status: int, error_type: str) -> dict:
    assert resp.status_code == status, (
        f"want {status} {error_type}, got {resp.status_code} {resp.text[:500]!r}")
    assert aws_error_type(resp) == error_type, resp.text[:500]
    return resp.json()


# ---------------------------------------------------------------------------------------
# Pushing content by hand
# ---------------------------------------------------------------------------------------


def push_blob(reg: Registry, repo: str, data: bytes) -> str:
    """Monolithic upload: POST, then PUT ?digest= with the whole body."""
    r = reg.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, (r.status_code, r.text)
    d = sha256(data)
    r = reg.put(with_query(r.headers["Location"], digest=d), data=data,
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, (r.status_code, r.text)
    return d


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def config_bytes(seed: str, layers: Iterable[bytes] = ()) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(l) for l in layers]},
    }, sort_keys=True).encode()


@dataclass
class Image:
    repo: str
    digest: str
    manifest: bytes
    media_type: str
    config: bytes
    layers: list[bytes]

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(len(b) for b in self.blobs)


def build_manifest(config: bytes, layers: list[bytes], *, docker: bool = False,
                   subject: dict | None = None, artifact_type: str | None = None,
                   annotations: dict | None = None, config_media_type: str | None = None) -> tuple[bytes, str]:
    if docker:
        mt, cmt, lmt = DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER
    else:
        mt, cmt, lmt = OCI_MANIFEST, OCI_CONFIG, OCI_LAYER
    m = {
        "schemaVersion": 2,
        "mediaType": mt,
        "config": descriptor(config_media_type or cmt, config),
        "layers": [descriptor(lmt, l) for l in layers],
    }
    if artifact_type:
        m["artifactType"] = artifact_type
    if subject:
        m["subject"] = subject
    if annotations:
        m["annotations"] = annotations
    return json.dumps(m, indent=2).encode(), mt


def put_manifest(reg: Registry, repo: str, ref: str, manifest: bytes, media_type: str) -> requests.Response:
    return reg.put(f"/v2/{repo}/manifests/{ref}", data=manifest, headers={"Content-Type": media_type})


def push_image(reg: Registry, repo: str, tag: str | None = None, *, layers: list[bytes] | None = None,
               docker: bool = False, n_layers: int = 1, layer_size: int = 1024, **manifest_kw) -> Image:
    """Pushes blobs then the manifest (by tag, or by digest when tag is None)."""
    if layers is None:
        layers = [os.urandom(layer_size) for _ in range(n_layers)]
    config = config_bytes(uuid.uuid4().hex, layers)
    for b in [config, *layers]:
        push_blob(reg, repo, b)
    manifest, mt = build_manifest(config, layers, docker=docker, **manifest_kw)
    d = sha256(manifest)
    r = put_manifest(reg, repo, tag or d, manifest, mt)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Docker-Content-Digest") == d, r.headers
    return Image(repo, d, manifest, mt, config, layers)


def pull_and_verify(reg: Registry, repo: str, ref: str) -> dict:
    """Fetches a manifest and every blob it names, checking each digest and size."""
    r = reg.get(f"/v2/{repo}/manifests/{ref}",
                headers={"Accept": ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])})
    assert r.status_code == 200, (r.status_code, r.text)
    assert sha256(r.content) == r.headers["Docker-Content-Digest"]
    m = json.loads(r.content)
    for desc in [m["config"], *m["layers"]]:
        b = reg.get(f"/v2/{repo}/blobs/{desc['digest']}")
        assert b.status_code == 200, (desc, b.status_code, b.text[:300])
        assert sha256(b.content) == desc["digest"] and len(b.content) == desc["size"], desc
    return m


def build_busybox_image(berth_bin, srv: "BerthServer", ctx: Path, applets: list[str], prefix: str) -> str:
    """Builds an image of Debian's busybox with `applets` linked in /bin (PATH=/bin) with
    `berth build`, pushes it to a new repository `<prefix>-<random>` of `srv`, and returns
    its reference."""
    (ctx / "bin").mkdir()
    shutil.copy("/bin/busybox", ctx / "bin" / "busybox")
    for a in applets:
        os.symlink("busybox", ctx / "bin" / a)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY bin /bin\nENV PATH=/bin\n")
    repo = unique(prefix)
    srv.ecr().create_repository(repositoryName=repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run([str(berth_bin), "build", "--endpoint-url", srv.url, "--data-dir",
                        str(srv.data_dir), "-t", f"{repo}:v1", str(ctx)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return f"{srv.host}/{repo}:v1"


def lb_forwarding(elb, prefix: str, health_path: str = "/") -> tuple[dict, str, int]:
    """A load balancer with a listener on a free port forwarding to a new target group of
    ELB's default type (instance), checked every 5 s (timeout 2, 2 to turn healthy) on
    `health_path`, with a 1 s deregistration delay: (load balancer, group ARN, port)."""
    lb = elb.create_load_balancer(Name=unique(prefix)[:32])["LoadBalancers"][0]
    tg = elb.create_target_group(Name=unique(prefix)[:32], Protocol="HTTP", Port=80, VpcId="vpc-berth",
                                 HealthCheckPath=health_path, HealthCheckIntervalSeconds=5,
                                 HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2)["TargetGroups"][0]
    arn = tg["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    port = free_listen_port()
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}])
    return lb, arn, port


def dns_namespace(sd, prefix: str) -> tuple[str, str]:
    """A new Cloud Map private DNS namespace `<unique>.local`: (name, id)."""
    ns = unique(prefix) + ".local"
    op = sd.create_private_dns_namespace(Name=ns, Vpc="vpc-berth")["OperationId"]
    return ns, sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]


def healthy_targets(elb, tg_arn: str) -> list[tuple[str, int]]:
    """The target group's healthy targets, sorted: (id, port)."""
    h = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    return sorted((d["Target"]["Id"], d["Target"]["Port"]) for d in h if d["TargetHealth"]["State"] == "healthy")


def discovered(sd, namespace: str, service: str) -> list[tuple[str, int]]:
    """DiscoverInstances of a Cloud Map service, sorted: (AWS_INSTANCE_IPV4, AWS_INSTANCE_PORT)."""
    found = sd.discover_instances(NamespaceName=namespace, ServiceName=service)["Instances"]
    return sorted((i["Attributes"]["AWS_INSTANCE_IPV4"], int(i["Attributes"]["AWS_INSTANCE_PORT"])) for i in found)


class RequestLoop:
    """A client sending GETs to `urls` in turn, in a loop (one keep-alive session, like a
    browser), from entering the `with` block until leaving it; every answer that is not
    a 200, and every error, is a failure (with the time its request was sent). `versions`
    collects each answer's `X-Forum-Version`."""

    def __init__(self, urls: list[str], timeout: float = 10):
        self.urls, self.timeout = urls, timeout
        self.failures: list[tuple] = []
        self.versions: list[str | None] = []
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _loop(self):
        s = requests.Session()
        while not self.stop.is_set():
            for u in self.urls:
                # When the request was sent (UTC, as in berth's log), for matching a
                # failure with the server's log.
                sent = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
                try:
                    r = s.get(u, timeout=self.timeout)
                    if r.status_code != 200:
                        self.failures.append((u, r.status_code, r.text, sent))
                    self.versions.append(r.headers.get("X-Forum-Version"))
                except requests.RequestException as e:
                    self.failures.append((u, repr(e), sent))
                self.count += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
