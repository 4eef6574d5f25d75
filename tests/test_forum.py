"""The forum, end to end: `scripts/demo.sh` (what `make demo` runs) on ports, a data
directory and a bridge of this test's own, then the forum through its load balancer —
users, topics and messages made and read back, a message from an unknown user refused, a
users task stopped and topics rolled to v2 while a client sends requests without one
failing — and `scripts/down.sh` (`make down`) leaving no process, namespace, bridge or
mount behind."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

import support
from support import wait_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "forum"))
import deploy  # noqa: E402


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _bridges() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines() if ":" in line}


class Demo:
    def __init__(self, berth_bin: Path, tmp: Path):
        self.data = tmp / "data"
        self.port, self.lb_port, self.dns_port = (support.free_listen_port() for _ in range(3))
        self.bridge = "bf" + uuid.uuid4().hex[:10]
        self.env = dict(os.environ,
                        BERTH_BIN=str(berth_bin), BERTH_DEMO_DATA=str(self.data),
                        BERTH_DEMO_PORT=str(self.port), BERTH_DEMO_LB_PORT=str(self.lb_port),
                        BERTH_DEMO_DNS_PORT=str(self.dns_port), BERTH_DEMO_BRIDGE=self.bridge,
                        BERTH_DEMO_SUBNET=f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24",
                        BERTH_DEMO_METADATA_PORT=str(support.free_listen_port()))
        self.env = {k: v for k, v in self.env.items() if not k.startswith("AWS_")}
        self.base = f"http://127.0.0.1:{self.lb_port}"
        self.berth_bin = berth_bin

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / "scripts" / script)], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)

    def forum(self) -> deploy.Forum:
        return deploy.Forum(f"http://127.0.0.1:{self.port}", self.data, str(self.berth_bin), self.lb_port)


@pytest.fixture(scope="module")
def demo(berth_bin, tmp_path_factory):
    d = Demo(berth_bin, tmp_path_factory.mktemp("forum"))
    d.netns_before, d.bridges_before = _netns(), _bridges()
    try:
        p = d.run("demo.sh")
        assert p.returncode == 0, p.stdout + p.stderr
        d.output = p.stdout
        d.netns_during, d.bridges_during = _netns() - d.netns_before, _bridges() - d.bridges_before
        yield d
    finally:
        # The guard: whatever a test left, the demo goes (down.sh is harmless twice).
        d.run("down.sh")


def test_demo_comes_up_and_says_how_to_use_it(demo):
    out = demo.output
    assert f"The forum is up on http://127.0.0.1:{demo.lb_port}" in out
    assert "berth service ls" in out and "berth service ps users" in out and "berth logs" in out
    assert f"curl -s -XPOST localhost:{demo.lb_port}/users" in out
    seconds = float((demo.data / "demo.seconds").read_text())
    assert seconds > 0
    # Two test hosts, the services spread over both zones.
    ecs = demo.forum().ecs
    arns = ecs.list_tasks(serviceName="users")["taskArns"]
    zones = {t["availabilityZone"] for t in ecs.describe_tasks(tasks=arns)["tasks"]}
    assert len(arns) == 2 and len(zones) == 2, zones


def test_forum_through_the_load_balancer(demo):
    b = demo.base
    user = requests.post(f"{b}/users", json={"name": "linus"}, timeout=10)
    assert user.status_code == 201, user.text
    user = user.json()
    assert user["name"] == "linus" and isinstance(user["id"], int)
    topic = requests.post(f"{b}/topics", json={"title": "kernels"}, timeout=10).json()
    # Whichever users task answers, the user is there (the data lives in users-store).
    for _ in range(6):
        r = requests.get(f"{b}/users/{user['id']}", timeout=10)
        assert r.status_code == 200 and r.json() == user
    assert user in requests.get(f"{b}/users", timeout=10).json()
    msg = requests.post(f"{b}/messages", json={"user_id": user["id"], "topic_id": topic["id"], "text": "patch"},
                        timeout=10)
    assert msg.status_code == 201, msg.text
    msgs = requests.get(f"{b}/messages", params={"topic_id": topic["id"]}, timeout=10).json()
    assert msgs == [msg.json()]
    bad = requests.post(f"{b}/messages", json={"user_id": 999999, "topic_id": topic["id"], "text": "x"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["message"] == "user 999999 does not exist"
    bad = requests.post(f"{b}/messages", json={"user_id": user["id"], "topic_id": 999999, "text": "x"}, timeout=10)
    assert bad.status_code == 422 and "topic 999999" in bad.json()["message"]
    bad = requests.post(f"{b}/users", json={"nom": "x"}, timeout=10)
    assert bad.status_code == 422 and bad.json()["message"] == "name is required"
    assert requests.get(f"{b}/users/999999", timeout=10).status_code == 404
    nowhere = requests.get(f"{b}/elsewhere", timeout=10)
    assert nowhere.status_code == 404 and "try /users" in nowhere.json()["message"]


def test_stop_a_users_task_zero_failures(demo):
    f = demo.forum()
    arns = f.ecs.list_tasks(serviceName="users")["taskArns"]
    assert len(arns) == 2
    with support.RequestLoop([f"{demo.base}/users", f"{demo.base}/messages"]) as load:
        wait_for(lambda: load.count >= 20, "the client's first requests")
        f.ecs.stop_task(task=arns[0], reason="the demo's failure isolation")
        wait_for(lambda: (now := f.ecs.list_tasks(serviceName="users")["taskArns"]) and arns[0] not in now
                 and len(now) == 2 and f.ready() is None, "users replaced and healthy", deadline_s=120)
        seen = load.count
        wait_for(lambda: load.count >= seen + 20, "requests after the replacement")
    assert load.failures == [], load.failures[:5]
    assert load.count > 40


def test_roll_topics_to_v2_zero_failures(demo):
    f = demo.forum()
    with support.RequestLoop([f"{demo.base}/topics", f"{demo.base}/users"]) as load:
        wait_for(lambda: load.count >= 20, "the client's first requests")
        f.ecs.update_service(service="topics", taskDefinition=f.task_definition(
            "topics", "topics", "v2", f.env_of("topics")))
        f.wait_ready(deadline_s=120)
        wait_for(lambda: requests.get(f"{demo.base}/topics", timeout=10).headers["X-Forum-Version"] == "v2",
                 "topics answering as v2")
        seen = load.count
        wait_for(lambda: load.count >= seen + 20, "requests after the rollout")
    assert load.failures == [], load.failures[:5]
    assert "v1" in load.versions and "v2" in load.versions
    # The topics made before the rollout are still there (the datastore did not move).
    assert any(t["title"] == "kernels" for t in requests.get(f"{demo.base}/topics", timeout=10).json())


def test_down_leaves_nothing_behind(demo):
    p = demo.run("down.sh")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not demo.data.exists()
    ours = str(demo.data)
    procs = subprocess.run(["pgrep", "-af", ours], capture_output=True, text=True).stdout
    assert [l for l in procs.splitlines() if "pgrep" not in l] == []
    assert not (_netns() & demo.netns_during), _netns() & demo.netns_during
    assert not (_bridges() & (demo.bridges_during | {demo.bridge}))
    mounts = Path("/proc/mounts").read_text()
    assert ours not in mounts
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{demo.base}/users", timeout=5)
    # Harmless a second time.
    again = demo.run("down.sh")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_demo_again_after_down(demo):
    """`make demo` after `make down` works again (on the same ports and directory)."""
    assert not demo.data.exists()
    try:
        p = demo.run("demo.sh")
        assert p.returncode == 0, p.stdout + p.stderr
        r = requests.post(f"{demo.base}/users", json={"name": "again"}, timeout=10)
        assert r.status_code == 201 and r.json()["id"] == 2  # the demo's own check made user 1
    finally:
        down = demo.run("down.sh")
    assert down.returncode == 0 and not demo.data.exists()
