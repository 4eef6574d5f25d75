"""The berth CLI end to end against a real server: build, push, pull, images."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
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


def test_output_into_a_closed_pipe_is_not_a_crash(berth_bin, berth):
    """`berth images | head`: a reader that went away ends the output quietly (the
    shell's SIGPIPE status), with no panic on stderr."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([str(berth_bin), "images", "--endpoint-url", berth.url, "--data-dir",
                            str(berth.data_dir)], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert "panicked" not in p.stderr, p.stderr


def test_cli_errors_are_clear(berth_bin, berth, unique_name, context, tmp_path):
    """A Dockerfile outside the subset names its line; pushing to a missing repository says so; both exit non-zero."""
    (context / "Dockerfile").write_text("FROM scratch\nSHELL [\"/bin/sh\", \"-c\"]\n")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{unique_name('x')}:1", str(context), check=False)
    assert p.returncode != 0 and "line 2" in p.stderr and "SHELL is not supported" in p.stderr
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    missing = unique_name("missing")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{missing}:1", str(context), check=False)
    assert p.returncode != 0 and "NAME_UNKNOWN" in p.stderr and missing in p.stderr
    p = berth_cli(berth_bin, berth, "pull", f"{missing}:1", "-o", str(tmp_path / "o"), check=False)
    assert p.returncode != 0 and "NAME_UNKNOWN" in p.stderr


RUN_DOCKERFILE = (
    "FROM scratch\n"
    "COPY busybox /bin/busybox\n"
    "COPY removed-file /etc/removed-file\n"
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    "ENV PATH=/bin\n"
    "RUN echo built > /built.txt && rm /etc/removed-file && \\\n"
    "    grep -c : /proc/net/dev > /interfaces && echo streamed-output\n"
    "RUN true\n"
    'CMD ["cat", "/built.txt"]\n'
)


@pytest.fixture
def run_context(tmp_path) -> Path:
    ctx = tmp_path / "run-ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "removed-file").write_text("removed by a RUN\n")
    (ctx / "Dockerfile").write_text(RUN_DOCKERFILE)
    return ctx


def layer_members(registry, repo: str, digest: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """A pushed layer's entries: name -> (header, content)."""
    blob = registry.get(f"/v2/{repo}/blobs/{digest}").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        return {m.name: (m, t.extractfile(m).read() if m.isfile() else b"") for m in t.getmembers()}


def test_build_run(berth_bin, berth, ecr, registry, unique_name, run_context):
    """RUN executes in a container of the image so far (no network), streams its output, and its
    changes (files, whiteouts) become a reproducible layer that `berth run` sees; a no-op RUN adds
    no layer."""
    repo = unique_name("run")
    ecr.create_repository(repositoryName=repo)
    p = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:v1", str(run_context))
    digest = p.stdout.strip().rsplit("@", 1)[1]
    assert "streamed-output" in p.stderr and "streamed-output" not in p.stdout
    m = support.pull_and_verify(registry, repo, "v1")
    assert len(m["layers"]) == 4, "two COPYs and two RUNs with changes; RUN true adds none"
    config = json.loads(registry.get(f"/v2/{repo}/blobs/{m['config']['digest']}").content)
    runs = [h for h in config["history"] if h["created_by"].startswith("RUN")]
    assert [(h["created_by"], h.get("empty_layer", False)) for h in runs] == [
        ("RUN /bin/busybox --install -s /bin", False),
        ("RUN /bin/sh -c echo built > /built.txt && rm /etc/removed-file &&     "
         "grep -c : /proc/net/dev > /interfaces && echo streamed-output", False),
        ("RUN /bin/sh -c true", True),
    ]
    assert len(config["rootfs"]["diff_ids"]) == 4

    install = layer_members(registry, repo, m["layers"][2]["digest"])
    assert install["bin/sh"][0].issym() and install["bin/sh"][0].linkname == "/bin/busybox"
    layer = layer_members(registry, repo, m["layers"][3]["digest"])
    assert sorted(layer) == ["built.txt", "etc", "etc/.wh.removed-file", "interfaces"]
    assert layer["built.txt"][1] == b"built\n"
    assert layer["interfaces"][1] == b"1\n", "only a loopback device: RUN has no network"
    assert all(i.mtime == 0 for i, _ in layer.values())

    # Reproducible: the same Dockerfile builds the same image, RUN layers included.
    again = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:v2", str(run_context))
    assert again.stdout.strip().rsplit("@", 1)[1] == digest

    # FROM that image: RUN sees the base layers (fetched from the registry), whiteouts included.
    app = unique_name("run-app")
    ecr.create_repository(repositoryName=app)
    ctx2 = run_context / "app"
    ctx2.mkdir()
    (ctx2 / "Dockerfile").write_text(
        f"FROM {repo}:v1\nRUN test ! -e /etc/removed-file && cp /built.txt /etc/copied\n")
    berth_cli(berth_bin, berth, "build", "-t", f"{app}:1", str(ctx2))
    app_m = support.pull_and_verify(registry, app, "1")
    assert [l["digest"] for l in app_m["layers"][:4]] == [l["digest"] for l in m["layers"]]
    top = layer_members(registry, app, app_m["layers"][4]["digest"])
    assert sorted(top) == ["etc", "etc/copied"] and top["etc/copied"][1] == b"built\n"

    # The built image runs: the RUN's file is there, the removed one is gone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["BERTH_ENDPOINT"] = berth.url
    r = subprocess.run([str(berth_bin), "run", "--data-dir", str(berth.data_dir), f"{berth.host}/{repo}:v1",
                        "sh", "-c", "cat /built.txt; test -e /etc/removed-file || echo removed"],
                       env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout.split()) == (0, ["built", "removed"]), r.stderr


def test_build_run_failure(berth_bin, berth, ecr, registry, unique_name, run_context):
    """A failing RUN fails the build naming its line and exit code, and nothing is pushed under the tag."""
    repo = unique_name("runfail")
    ecr.create_repository(repositoryName=repo)
    (run_context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n\nRUN [\"/bin/busybox\", \"false\"]\n")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:bad", str(run_context), check=False)
    assert p.returncode != 0
    assert "Dockerfile line 4: RUN /bin/busybox false exited with code 1" in p.stderr, p.stderr
    assert registry.get(f"/v2/{repo}/manifests/bad").status_code == 404
    assert ecr.list_images(repositoryName=repo)["imageIds"] == []
    (run_context / "Dockerfile").write_text("FROM scratch\nRUN --network=host true\n")
    p = berth_cli(berth_bin, berth, "build", "-t", f"{repo}:bad", str(run_context), check=False)
    assert p.returncode != 0 and "line 2: RUN --network is not supported" in p.stderr, p.stderr


def test_build_run_ctrl_c_cleans_up(berth_bin, berth, ecr, registry, unique_name, run_context):
    """Ctrl-C during a RUN kills its container, fails the build and leaves no mount, temp dir or cgroup."""
    repo = unique_name("runint")
    ecr.create_repository(repositoryName=repo)
    (run_context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"60\"]\n")
    tmp = run_context.parent / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    cmd = [str(berth_bin), "build", "-t", f"{repo}:int", str(run_context),
           "--endpoint-url", berth.url, "--data-dir", str(berth.data_dir)]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        support.wait_for(lambda: any(tmp.glob("berth-build-*/r1/rootfs/bin")), "the RUN's root mounted")
        time.sleep(0.5)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0 and "Dockerfile line 3: RUN /bin/busybox sleep 60: interrupted" in err, err
    assert list(tmp.iterdir()) == [], "the build's temporary directory is removed"
    assert str(tmp) not in Path("/proc/self/mountinfo").read_text()
    assert registry.get(f"/v2/{repo}/manifests/int").status_code == 404
