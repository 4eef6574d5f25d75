"""Crash safety and garbage collection on a dedicated server: kill -9 in the middle of a
large upload, restart on the same data dir; offline `berth gc` after deleting an image."""

import hashlib
import os
import threading
from urllib.parse import urljoin

import requests

from support import (
    assert_oci_error, pull_and_verify, push_image, run_berth, sha256, wait_for, with_query)

MIB = 1024 * 1024


def big_blob(size: int) -> bytes:
    # Incompressible and cheap: repeat 1 MiB of random bytes with a counter mixed in.
    base = os.urandom(MIB)
    return b"".join(i.to_bytes(8, "big") + base[8:] for i in range(size // MIB))


def test_kill_9_mid_upload_then_restart(berth_factory):
    """A server killed with SIGKILL during a 64 MiB upload restarts with committed data intact, no partial blob, and accepts the blob afresh."""
    srv = berth_factory()
    ecr, reg = srv.ecr(), srv.registry()
    creds_before = (srv.data_dir / "credentials").read_text()
    repo = "crash/upload"
    ecr.create_repository(repositoryName=repo)
    committed = push_image(reg, repo, "before-crash", n_layers=2, layer_size=256 * 1024)

    data = big_blob(64 * MIB)
    digest = sha256(data)
    r = reg.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    first = 8 * MIB
    r = reg.patch(loc, data=data[:first], headers={"Content-Range": f"0-{first - 1}",
                                                   "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    # The server has durably been told about the first chunk: its status says so.
    s = reg.get(loc)
    assert s.status_code == 204 and s.headers["Range"].endswith(f"-{first - 1}"), s.headers

    # Stream the rest as the final PUT; the generator stops half-way until the kill.
    sent = threading.Event()
    release = threading.Event()
    result = {}

    def body():
        for off in range(first, len(data), MIB):
            if off == first + 16 * MIB:
                sent.set()
                release.wait(60)
            yield data[off:off + MIB]

    def stream():
        try:
            result["resp"] = requests.put(urljoin(srv.url, with_query(loc, digest=digest)), data=body(),
                                          auth=reg.auth, timeout=120)
        except requests.RequestException as e:
            result["error"] = e

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    wait_for(lambda: sent.is_set() or not t.is_alive(), "the streaming upload to get going")
    assert sent.is_set(), f"the streaming upload never got going: {result}"
    srv.kill()
    release.set()
    t.join(60)
    assert not t.is_alive(), "the streaming client did not notice the server died"
    assert "error" in result, f"the upload cannot have completed without the server: {result}"

    srv.start()
    assert (srv.data_dir / "credentials").read_text() == creds_before, "credentials changed on restart"
    reg = srv.registry()
    assert reg.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    s = reg.get(loc)
    if s.status_code == 204:
        # A kept upload may only claim bytes it really holds.
        assert int(s.headers["Range"].split("-")[-1]) + 1 <= first + 16 * MIB, s.headers
    else:
        assert_oci_error(s, 404, "BLOB_UPLOAD_UNKNOWN")
    # What was committed before the crash is all there.
    assert reg.get(f"/v2/{repo}/manifests/before-crash").content == committed.manifest
    pull_and_verify(reg, repo, "before-crash")

    # A fresh upload of the same blob, in 16 MiB chunks, succeeds with the right digest.
    r = reg.post(f"/v2/{repo}/blobs/uploads/")
    loc = r.headers["Location"]
    for off in range(0, len(data) - 16 * MIB, 16 * MIB):
        r = reg.patch(loc, data=data[off:off + 16 * MIB], headers={
            "Content-Range": f"{off}-{off + 16 * MIB - 1}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
    off = len(data) - 16 * MIB
    r = reg.put(with_query(loc, digest=digest), data=data[off:], headers={
        "Content-Range": f"{off}-{len(data) - 1}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    got = reg.get(f"/v2/{repo}/blobs/{digest}", stream=True)
    h = hashlib.sha256()
    n = 0
    for chunk in got.iter_content(MIB):
        h.update(chunk)
        n += len(chunk)
    assert n == len(data) and "sha256:" + h.hexdigest() == digest
    srv.stop()


def test_sigterm_stops_the_server(berth_factory):
    """SIGTERM ends the server promptly with a clean exit status."""
    srv = berth_factory()
    assert srv.stop() == 0, srv.log_tail()


def test_offline_gc_removes_only_unreferenced_blobs(berth_factory, berth_bin):
    """After an image's manifest is deleted, `berth gc` removes its layer and config, keeps shared and referenced blobs, and the other image still pulls completely."""
    srv = berth_factory()
    ecr, reg = srv.ecr(), srv.registry()
    repo = "gc/app"
    ecr.create_repository(repositoryName=repo)
    shared = os.urandom(50_000)
    gone = push_image(reg, repo, "gone", layers=[shared, os.urandom(70_000)])
    kept = push_image(reg, repo, "kept", layers=[shared, os.urandom(60_000)])
    r = reg.delete(f"/v2/{repo}/manifests/{gone.digest}")
    assert r.status_code == 202, r.text

    # GC refuses to run next to a live server (the state store is locked).
    p = run_berth(berth_bin, "gc", "--data-dir", str(srv.data_dir))
    assert p.returncode != 0, p.stdout
    assert reg.head(f"/v2/{repo}/blobs/{sha256(gone.layers[1])}").status_code == 200

    assert srv.stop() == 0
    p = run_berth(berth_bin, "gc", "--data-dir", str(srv.data_dir))
    assert p.returncode == 0, p.stderr
    srv.start()
    reg = srv.registry()
    for blob in [gone.layers[1], gone.config, gone.manifest]:
        assert reg.head(f"/v2/{repo}/blobs/{sha256(blob)}").status_code == 404, blob[:40]
    for blob in [shared, *kept.layers, kept.config]:
        assert reg.head(f"/v2/{repo}/blobs/{sha256(blob)}").status_code == 200
    m = pull_and_verify(reg, repo, "kept")
    assert [l["digest"] for l in m["layers"]] == [sha256(l) for l in kept.layers]
    assert reg.get(f"/v2/{repo}/manifests/kept").content == kept.manifest
    # The blob store's files went too, not only the links.
    blobs = srv.data_dir / "registry" / "blobs"
    if blobs.is_dir():
        names = {p.name for p in blobs.rglob("*") if p.is_file()}
        assert sha256(gone.layers[1]).split(":")[1] not in names
        assert sha256(kept.layers[1]).split(":")[1] in names
    srv.stop()
