"""Encryption at rest: repositories created with an encryptionConfiguration keep their
blobs encrypted on disk, and every client still reads exactly what it pushed."""

from __future__ import annotations

import os
from pathlib import Path

import support
from support import push_blob, push_image, pull_and_verify


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and needle in p.read_bytes():
            hits.append(p)
    return hits


def test_encrypted_repository_stores_no_plaintext(berth, ecr, registry, unique_name):
    """Blobs and manifests pushed to an AES256 repository are unreadable on disk yet pull back intact, with Range."""
    name = unique_name("enc")
    repo = ecr.create_repository(repositoryName=name,
                                 encryptionConfiguration={"encryptionType": "AES256"})["repository"]
    assert repo["encryptionConfiguration"] == {"encryptionType": "AES256"}
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    layer = marker + os.urandom(300_000) + marker
    img = push_image(registry, name, "v1", layers=[layer])
    assert files_containing(berth.data_dir, marker) == []
    assert files_containing(berth.data_dir, img.manifest) == []
    assert files_containing(berth.data_dir, img.config) == []
    pull_and_verify(registry, name, "v1")
    d = support.sha256(layer)
    r = registry.get(f"/v2/{name}/blobs/{d}", headers={"Range": "bytes=65530-65545"})
    assert r.status_code == 206 and r.content == layer[65530:65546]
    head = registry.head(f"/v2/{name}/blobs/{d}")
    assert int(head.headers["Content-Length"]) == len(layer)
    described = ecr.describe_images(repositoryName=name)["imageDetails"][0]
    assert described["imageDigest"] == img.digest


def test_mount_into_encrypted_repository_encrypts(berth, ecr, registry, unique_name):
    """A blob mounted from a plain repository into an encrypted one is re-stored encrypted, readable from both."""
    plain, secret = unique_name("plain"), unique_name("secret")
    ecr.create_repository(repositoryName=plain)
    ecr.create_repository(repositoryName=secret, encryptionConfiguration={"encryptionType": "KMS"})
    marker = b"MOUNTED-MARKER-" + os.urandom(8).hex().encode()
    data = marker + os.urandom(1000)
    d = push_blob(registry, plain, data)
    assert files_containing(berth.data_dir, marker) != []
    r = registry.post(f"/v2/{secret}/blobs/uploads/?mount={d}&from={plain}")
    assert r.status_code == 201, r.text
    assert files_containing(berth.data_dir, marker) == []
    for repo in (plain, secret):
        assert registry.get(f"/v2/{repo}/blobs/{d}").content == data


def test_plain_repository_reports_no_encryption(ecr, unique_name):
    """A repository created without encryptionConfiguration does not claim to be encrypted."""
    repo = ecr.create_repository(repositoryName=unique_name("noenc"))["repository"]
    assert "encryptionConfiguration" not in repo
