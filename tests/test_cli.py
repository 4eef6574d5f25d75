"""The berth CLI end to end against a real server: build, push, pull, images."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import support


def berth_cli(bin: Path, server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(bin), *args, "--endpoint-url", server.url, "--data-dir", str(server.data_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def context(tmp_path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "hello.txt").write_text("hello from berth\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nENV GREETING=hi\nWORKDIR /app\n"
        "COPY hello.txt .\nCMD [\"/bin/busybox\", \"cat\", \"/app/hello.txt\"]\n")
    return ctx


def test_build_then_pull_and_push_back(berth_bin, berth, ecr, registry, unique_name, context, tmp_path):
    """berth build pushes a pullable image; berth pull writes a layout that berth push puts elsewhere unchanged."""
    repo, copy = unique_name("cli"), unique_name("cli-copy")
    ecr.create_repository(repositoryName=repo)
    ecr.create_repository(repositoryName=copy)
    out = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:v1", str(context)).stdout.strip()
    digest = out.rsplit("@", 1)[1]
    m = support.pull_and_verify(registry, repo, "v1")
    assert registry.head(f"/v2/{repo}/manifests/v1").headers["Docker-Content-Digest"] == digest
    config = json.loads(registry.get(f"/v2/{repo}/blobs/{m['config']['digest']}").content)
    assert config["config"]["Cmd"] == ["/bin/busybox", "cat", "/app/hello.txt"]
    assert config["config"]["WorkingDir"] == "/app"
    # reproducible: building again gives the same digest
    again = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:v2", str(context)).stdout.strip()
    assert again.rsplit("@", 1)[1] == digest

    layout = tmp_path / "layout"
    pulled = berth_cli(berth_bin, berth, "pull", f"{repo}:v1", "-o", str(layout)).stdout
    assert digest in pulled
    assert (layout / "oci-layout").is_file()
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    pushed = berth_cli(berth_bin, berth, "push", str(layout), f"{copy}:copied").stdout.strip()
    assert pushed.endswith(digest)
    support.pull_and_verify(registry, copy, "copied")


def test_build_from_a_berth_image(berth_bin, berth, ecr, registry, unique_name, context, tmp_path):
    """FROM an image in berth's registry: base layers are mounted, not re-uploaded, and come first."""
    base, app = unique_name("base"), unique_name("app")
    ecr.create_repository(repositoryName=base)
    ecr.create_repository(repositoryName=app)
    berth_cli(berth_bin, berth, "build", "-t", f"{base}:1", str(context))
    ctx2 = tmp_path / "ctx2"
    ctx2.mkdir()
    (ctx2 / "extra.txt").write_text("extra")
    (ctx2 / "Dockerfile").write_text(f"FROM {base}:1\nCOPY extra.txt /extra.txt\nENV GREETING=override\n")
    berth_cli(berth_bin, berth, "build", "-t", f"{app}:1", str(ctx2))
    base_m = support.pull_and_verify(registry, base, "1")
    app_m = support.pull_and_verify(registry, app, "1")
    assert [l["digest"] for l in app_m["layers"][:len(base_m["layers"])]] == [l["digest"] for l in base_m["layers"]]
    assert len(app_m["layers"]) == len(base_m["layers"]) + 1
    config = json.loads(registry.get(f"/v2/{app}/blobs/{app_m['config']['digest']}").content)
    assert "GREETING=override" in config["config"]["Env"]


def test_images_lists_tags(berth_bin, berth, ecr, unique_name, context):
    """berth images shows each tag with its short digest."""
    repo = unique_name("list")
    ecr.create_repository(repositoryName=repo)
    digest = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:shown", str(context)).stdout.strip().rsplit("@", 1)[1]
    out = berth_cli(berth_bin, berth, "images", repo).stdout
    line = next(l for l in out.splitlines() if l.startswith(repo))
    assert "shown" in line and digest.split(":")[1][:12] in line


def test_cli_errors_are_clear(berth_bin, berth, unique_name, context, tmp_path):
    """A Dockerfile outside the subset names its line; pushing to a missing repository says so; both exit non-zero."""
    (context / "Dockerfile").write_text("FROM scratch\nRUN echo hi\n")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{unique_name('x')}:1", str(context), check=False)
    assert p.returncode != 0 and "line 2" in p.stderr and "RUN" in p.stderr
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    missing = unique_name("missing")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{missing}:1", str(context), check=False)
    assert p.returncode != 0 and "NAME_UNKNOWN" in p.stderr and missing in p.stderr
    p = berth_cli(berth_bin, berth, "pull", f"{missing}:1", "-o", str(tmp_path / "o"), check=False)
    assert p.returncode != 0 and "NAME_UNKNOWN" in p.stderr
