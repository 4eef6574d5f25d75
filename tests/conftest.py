"""Fixtures of the berth integration suite: a real `berth server` on a free port with its
own data directory, the real aws CLI and boto3 pointed at it, a registry session, and a
private dockerd. Every process started here is stopped by its pid in a finalizer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import support
from support import REGION, REPO_ROOT, BerthServer, Registry

# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def berth_bin() -> Path:
    p = Path(os.environ.get("BERTH_BIN") or REPO_ROOT / "target" / "debug" / "berth")
    if not p.is_file():
        pytest.fail(f"berth binary not found at {p}: run `cargo build --bin berth` or set BERTH_BIN")
    return p


@pytest.fixture(scope="session")
def berth_factory(berth_bin, tmp_path_factory):
    """Starts dedicated servers (`berth_factory(extra_args=[...])`), each in a fresh parent
    directory holding only its data dir and log; all stopped at the end of the session."""
    started: list[BerthServer] = []

    def start(extra_args: list[str] | None = None, data_dir: Path | None = None) -> BerthServer:
        parent = tmp_path_factory.mktemp("berth")
        srv = BerthServer(berth_bin, data_dir or parent / "data", parent / "berth.log",
                          list(extra_args or []))
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
        srv.down()


@pytest.fixture(scope="session")
def berth(berth_factory) -> BerthServer:
    """The session's shared server; tests isolate themselves with unique repository names."""
    return berth_factory()


@pytest.fixture(scope="session")
def creds(berth) -> tuple[str, str]:
    """(access key id, secret access key) from <data-dir>/credentials."""
    return berth.credentials()


@pytest.fixture(scope="session")
def ecr(berth):
    """boto3 ECR client with endpoint_url pointed at the shared server."""
    return berth.ecr()


@pytest.fixture(scope="session")
def registry_password(berth) -> str:
    return berth.password()


@pytest.fixture
def registry(berth, registry_password) -> Registry:
    """requests.Session with Basic auth AWS:<password>, relative to the server's base URL."""
    with Registry(berth.url, ("AWS", registry_password)) as s:
        yield s


@pytest.fixture
def anon(berth) -> Registry:
    """A registry session without credentials."""
    with Registry(berth.url) as s:
        yield s


@pytest.fixture
def unique_name():
    """unique_name("prefix") -> "prefix-<random>", a repository name no other test uses."""
    return support.unique


@pytest.fixture
def new_repo(ecr, unique_name):
    """Creates a repository with a unique name (via CreateRepository) and returns its name."""

    def create(prefix: str = "t", **kw) -> str:
        name = unique_name(prefix)
        ecr.create_repository(repositoryName=name, **kw)
        return name

    return create


# ---------------------------------------------------------------------------------------
# The real aws CLI
# ---------------------------------------------------------------------------------------


class AwsCliError(Exception):
    def __init__(self, args, returncode, stderr):
        super().__init__(f"aws {' '.join(args)} exited {returncode}: {stderr}")
        self.returncode, self.stderr = returncode, stderr


class AwsCli:
    """Runs the venv's `aws` against a server: aws("ecr", "describe-repositories") -> dict."""

    def __init__(self, server: BerthServer, home: Path):
        venv_aws = Path(sys.executable).parent / "aws"
        self.bin = str(venv_aws) if venv_aws.exists() else shutil.which("aws")
        if not self.bin:
            pytest.fail("the aws CLI is not installed: run scripts/test-deps.sh")
        self.server = server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({
            "AWS_SHARED_CREDENTIALS_FILE": str(server.data_dir / "credentials"),
            "AWS_CONFIG_FILE": str(home / "aws-config-absent"),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
        })

    def argv(self, *args: str) -> list[str]:
        return [self.bin, "--endpoint-url", self.server.url, "--output", "json", *args]

    def text(self, *args: str, timeout: float = 120) -> str:
        p = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise AwsCliError(args, p.returncode, p.stderr)
        return p.stdout

    def __call__(self, *args: str, timeout: float = 120):
        out = self.text(*args, timeout=timeout)
        return json.loads(out) if out.strip() else None


@pytest.fixture(scope="session")
def aws(berth, tmp_path_factory) -> AwsCli:
    """The real aws CLI from the venv, with the server's credentials file and endpoint."""
    return AwsCli(berth, tmp_path_factory.mktemp("aws-home"))


# ---------------------------------------------------------------------------------------
# docker
# ---------------------------------------------------------------------------------------


class Docker:
    """The docker client against the private dockerd, with a private DOCKER_CONFIG."""

    def __init__(self, client: str, host: str, config_dir: Path):
        self.client = client
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update({"DOCKER_HOST": host, "DOCKER_CONFIG": str(config_dir),
                         "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"})

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        p = subprocess.run([self.client, *args], env=self.env, input=input, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}:\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p


def _find(*candidates: str) -> str | None:
    for c in candidates:
        if c.startswith("/"):
            if os.access(c, os.X_OK):
                return c
        elif shutil.which(c):
            return shutil.which(c)
    return None


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (Debian's docker.io) whose state lives in a unique tmp dir."""
    daemon = _find("/usr/bin/dockerd", "/usr/sbin/dockerd", "dockerd")
    client = _find("/usr/bin/docker", "docker")
    if daemon is None or client is None:
        pytest.skip("dockerd/docker not found: scripts/test-deps.sh installs docker.io")
    # /tmp keeps the socket path under the 108-byte limit of unix socket addresses.
    root = Path(tempfile.mkdtemp(prefix="berth-dockerd-"))
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [daemon, "--iptables=false", "--bridge=none", "--ip-masq=false",
         "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{sock}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    (root / "config").mkdir()
    docker = Docker(client, f"unix://{sock}", root / "config")
    try:
        def up():
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}")
            return docker("info", check=False, timeout=30).returncode == 0

        try:
            support.wait_for(up, "dockerd to answer `docker info`", deadline_s=90, interval_s=0.2)
        except Exception as e:
            logtext = (root / "dockerd.log").read_text(errors="replace")[-4000:]
            pytest.fail(f"dockerd did not start: {e}\n{logtext}")
        yield docker
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def busybox_context(tmp_path) -> Path:
    """A docker build context: FROM scratch + busybox-static + CMD."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.fail("/bin/busybox missing: scripts/test-deps.sh installs busybox-static")
    ctx = tmp_path / "context"
    ctx.mkdir()
    shutil.copy2(busybox, ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'CMD ["/bin/busybox", "echo", "hello from berth"]\n')
    return ctx


# ---------------------------------------------------------------------------------------
# Server logs in failure reports
# ---------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in list(support.LIVE_SERVERS):
            report.sections.append((f"berth server {srv.host} log (tail)", srv.log_tail()))
