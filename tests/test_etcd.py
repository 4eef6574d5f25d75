"""berth on etcd (`berth server --store etcd://...`): the control-plane state lives in etcd,
so a new server on another data directory sees everything the first one made, and signs
in with the same admin key (the credentials file is per data directory; the key is in
the store, and a server writes the store's admin key to a data directory that has none).

Each module run starts a private etcd (Debian's etcd-server) on free loopback ports with a
temporary data directory, and stops it by its pid at the end, also on failure."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from support import DEADLINE_S, free_port, free_listen_port, run_berth, unique


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    """A private etcd: yields its client endpoint HOST:PORT."""
    if shutil.which("etcd") is None:
        pytest.fail("the etcd binary is not on PATH: install it with `apt-get install etcd-server` "
                    "(make test does)")
    d = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    name = unique("berth-etcd")
    c_url, p_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = open(d / "etcd.log", "ab")
    proc = subprocess.Popen(
        ["etcd", "--name", name, "--data-dir", str(d / "data"),
         "--listen-client-urls", c_url, "--advertise-client-urls", c_url,
         "--listen-peer-urls", p_url, "--initial-advertise-peer-urls", p_url,
         "--initial-cluster", f"{name}={p_url}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        end = time.monotonic() + DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"etcd exited with {proc.returncode}: {(d / 'etcd.log').read_text()}")
            try:
                r = requests.post(c_url + "/v3/kv/range",
                                  data=json.dumps({"key": base64.b64encode(b"/").decode()}),
                                  timeout=2)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > end:
                pytest.fail(f"etcd did not answer within {DEADLINE_S}s")
            time.sleep(0.1)
        yield f"127.0.0.1:{client}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_state_outlives_the_server_in_etcd(berth_factory, berth_bin, etcd):
    """Repository, cluster, task definition and admin key made through one server are
    there, unchanged, for a new server on a new data directory with the same etcd."""
    store = ["--no-agent", "--store", f"etcd://{etcd}/{unique('ns')}/"]
    first = berth_factory(store)
    repo, cluster, family = unique("repo"), unique("cluster"), unique("fam")
    first.ecr().create_repository(repositoryName=repo)
    first.ecs().create_cluster(clusterName=cluster)
    td = first.ecs().register_task_definition(
        family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
        cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": "busybox", "essential": True}],
    )["taskDefinition"]
    creds = first.credentials()
    first.stop()

    second = berth_factory(store)
    assert second.data_dir != first.data_dir
    assert second.credentials() == creds, "the new data dir gets the store's admin key"
    repos = second.ecr().describe_repositories(repositoryNames=[repo])["repositories"]
    assert [r["repositoryName"] for r in repos] == [repo]
    clusters = second.ecs().describe_clusters(clusters=[cluster])["clusters"]
    assert [(c["clusterName"], c["status"]) for c in clusters] == [(cluster, "ACTIVE")]
    got = second.ecs().describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert got["taskDefinitionArn"] == td["taskDefinitionArn"]
    assert got["containerDefinitions"][0]["image"] == "busybox"
    second.stop()

    # The first data directory remembers its store: without --store it is refused (its
    # blobs would look unreferenced to an empty embedded store), and so is `berth gc`.
    out = run_berth(berth_bin, "server", "--no-agent", "--data-dir", str(first.data_dir),
                    "--listen", f"127.0.0.1:{free_listen_port()}", timeout=60)
    assert out.returncode != 0
    assert "--store etcd://" in out.stderr, out.stderr
    out = run_berth(berth_bin, "gc", "--data-dir", str(first.data_dir), timeout=60)
    assert out.returncode != 0
    assert "background GC" in out.stderr, out.stderr


def test_unreachable_etcd_fails_the_start(berth_bin, tmp_path):
    """A server whose etcd does not answer exits at once, naming the endpoint."""
    dead = f"127.0.0.1:{free_port()}"
    out = run_berth(berth_bin, "server", "--no-agent", "--data-dir", str(tmp_path / "d"),
                    "--listen", f"127.0.0.1:{free_listen_port()}", "--store", f"etcd://{dead}",
                    timeout=60)
    assert out.returncode != 0
    assert dead in out.stderr, out.stderr
