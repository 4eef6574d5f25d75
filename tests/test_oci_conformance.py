"""OCI Distribution Spec v1.1 at /v2/: every endpoint and error code of the contract,
walked with plain HTTP so each test controls the exact bytes and headers."""

import json
import os
import re

from support import (
    DOCKER_LIST, DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, assert_oci_error,
    build_manifest, config_bytes, descriptor, push_blob, push_image, put_manifest, sha256,
    with_query)


def start_upload(reg, repo):
    r = reg.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, (r.status_code, r.text)
    assert r.headers.get("Location"), r.headers
    return r.headers["Location"]


def assert_range(resp, end_inclusive):
    """Upload progress is reported as Range: 0-<last byte>."""
    assert re.fullmatch(r"(bytes=)?0-%d" % end_inclusive, resp.headers.get("Range", "")), resp.headers


def test_base_endpoint(registry):
    """GET /v2/ with credentials is 200."""
    r = registry.get("/v2/")
    assert r.status_code == 200, r.text


def test_monolithic_upload_post_then_put(registry, new_repo):
    """POST opens an upload, PUT ?digest= with the whole blob commits it; HEAD and GET serve it back."""
    repo = new_repo("mono")
    data = os.urandom(100_000)
    d = sha256(data)
    loc = start_upload(registry, repo)
    r = registry.put(with_query(loc, digest=d), data=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/{repo}/blobs/{d}"), r.headers
    r = registry.head(f"/v2/{repo}/blobs/{d}")
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(data)
    assert r.headers["Docker-Content-Digest"] == d
    r = registry.get(f"/v2/{repo}/blobs/{d}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == d
    # The finished upload session is gone.
    assert_oci_error(registry.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")


def test_single_post_upload(registry, new_repo):
    """POST ?digest= with the body uploads a blob in one request (201)."""
    repo = new_repo("single")
    data = os.urandom(5000)
    d = sha256(data)
    r = registry.post(f"/v2/{repo}/blobs/uploads/?digest={d}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/{repo}/blobs/{d}")
    assert registry.get(f"/v2/{repo}/blobs/{d}").content == data


def test_chunked_upload_with_status_and_final_chunk_in_put(registry, new_repo):
    """PATCH chunks with Content-Range advance the upload (202 + Range); GET status is 204 + Range; PUT may carry the last chunk."""
    repo = new_repo("chunk")
    data = os.urandom(3 * 65536 + 17)
    parts = [data[:65536], data[65536:2 * 65536], data[2 * 65536:]]
    loc = start_upload(registry, repo)
    off = 0
    for part in parts[:2]:
        r = registry.patch(loc, data=part, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{off}-{off + len(part) - 1}"})
        assert r.status_code == 202, r.text
        off += len(part)
        assert_range(r, off - 1)
        loc = r.headers["Location"]
        s = registry.get(loc)
        assert s.status_code == 204, s.text
        assert_range(s, off - 1)
        assert s.headers.get("Location"), s.headers
    r = registry.put(with_query(loc, digest=sha256(data)), data=parts[2], headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{off}-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_streamed_patch_without_content_range(registry, new_repo):
    """A PATCH with a chunked (streamed) body and no Content-Range, as docker sends, is accepted."""
    repo = new_repo("stream")
    data = os.urandom(300_000)
    loc = start_upload(registry, repo)
    r = registry.patch(loc, data=(data[i:i + 50_000] for i in range(0, len(data), 50_000)))
    assert r.status_code == 202, r.text
    assert_range(r, len(data) - 1)
    r = registry.put(with_query(r.headers["Location"], digest=sha256(data)))
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_out_of_order_chunk_is_416_and_upload_survives(registry, new_repo):
    """A chunk that does not start where the upload ends is 416 with the current Range; the upload can go on."""
    repo = new_repo("ooo")
    data = os.urandom(2000)
    loc = start_upload(registry, repo)
    r = registry.patch(loc, data=data[:1000], headers={"Content-Range": "0-999",
                                                       "Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    r = registry.patch(loc, data=data[1500:], headers={"Content-Range": "1500-1999",
                                                       "Content-Type": "application/octet-stream"})
    assert r.status_code == 416, r.text
    s = registry.get(loc)
    assert s.status_code == 204
    assert_range(s, 999)
    r = registry.patch(loc, data=data[1000:], headers={"Content-Range": "1000-1999",
                                                       "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    r = registry.put(with_query(r.headers["Location"], digest=sha256(data)))
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_resumable_upload_across_a_new_connection(registry, new_repo):
    """A client that lost its connection asks the upload's status and resumes from Range on a new connection."""
    repo = new_repo("resume")
    data = os.urandom(250_000)
    loc = start_upload(registry, repo)
    r = registry.patch(loc, data=data[:100_000], headers={"Content-Range": "0-99999",
                                                          "Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    registry.close()
    with registry.fresh() as other:
        s = other.get(loc)
        assert s.status_code == 204
        end = int(s.headers["Range"].split("-")[-1])
        assert end == 99_999
        r = other.patch(s.headers["Location"], data=data[end + 1:], headers={
            "Content-Range": f"{end + 1}-{len(data) - 1}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        r = other.put(with_query(r.headers["Location"], digest=sha256(data)))
        assert r.status_code == 201, r.text
        assert other.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_cancel_upload(registry, new_repo):
    """DELETE on an upload cancels it; its status is then BLOB_UPLOAD_UNKNOWN."""
    repo = new_repo("cancel")
    loc = start_upload(registry, repo)
    r = registry.delete(loc)
    assert r.status_code == 204, r.text
    assert_oci_error(registry.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")


def test_cross_repository_mount(registry, new_repo):
    """POST ?mount=&from= links an existing blob into another repository (201); an unknown blob falls back to an upload (202)."""
    src, dst = new_repo("mnt-src"), new_repo("mnt-dst")
    data = os.urandom(4096)
    d = push_blob(registry, src, data)
    assert registry.head(f"/v2/{dst}/blobs/{d}").status_code == 404
    r = registry.post(f"/v2/{dst}/blobs/uploads/?mount={d}&from={src}")
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/{dst}/blobs/{d}")
    assert r.headers["Docker-Content-Digest"] == d
    assert registry.get(f"/v2/{dst}/blobs/{d}").content == data
    missing = sha256(os.urandom(32))
    r = registry.post(f"/v2/{dst}/blobs/uploads/?mount={missing}&from={src}")
    assert r.status_code == 202, r.text
    assert r.headers.get("Location")


def test_blob_range_request(registry, new_repo):
    """GET with Range: bytes=a-b answers 206 with exactly those bytes and Content-Range."""
    repo = new_repo("range")
    data = os.urandom(10_000)
    d = push_blob(registry, repo, data)
    r = registry.get(f"/v2/{repo}/blobs/{d}", headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206, r.text
    assert r.content == data[100:1100]
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert int(r.headers["Content-Length"]) == 1000
    r = registry.get(f"/v2/{repo}/blobs/{d}", headers={"Range": "bytes=9000-"})
    assert r.status_code == 206 and r.content == data[9000:]


def test_manifest_by_tag_and_digest(registry, new_repo):
    """A manifest PUT by tag is served by tag and by digest, byte for byte, with its media type and digest headers."""
    repo = new_repo("mf")
    img = push_image(registry, repo, "v1")
    for ref in ["v1", img.digest]:
        r = registry.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.content == img.manifest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == img.digest
        h = registry.head(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert h.status_code == 200
        assert int(h.headers["Content-Length"]) == len(img.manifest)
        assert h.headers["Docker-Content-Digest"] == img.digest
    # Put by digest: stored without a tag.
    img2 = push_image(registry, repo, None)
    r = registry.get(f"/v2/{repo}/manifests/{img2.digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == img2.manifest


def test_manifest_put_response_headers(registry, new_repo):
    """PUT manifest answers 201 with Location and Docker-Content-Digest of the exact bytes sent."""
    repo = new_repo("mfput")
    layer = os.urandom(100)
    cfg = config_bytes("x", [layer])
    push_blob(registry, repo, layer)
    push_blob(registry, repo, cfg)
    manifest, mt = build_manifest(cfg, [layer])
    r = put_manifest(registry, repo, "t", manifest, mt)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(manifest)
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{sha256(manifest)}")


def test_tags_list_pagination_with_link(registry, new_repo):
    """tags/list is sorted; n limits a page, Link rel=next leads to the next, last= starts after a tag."""
    repo = new_repo("tags")
    img = push_image(registry, repo, "t00")
    tags = [f"t{i:02d}" for i in range(7)]
    for t in tags[1:]:
        assert put_manifest(registry, repo, t, img.manifest, img.media_type).status_code == 201
    r = registry.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": tags}
    seen, url, pages = [], f"/v2/{repo}/tags/list?n=3", 0
    while url:
        r = registry.get(url)
        assert r.status_code == 200, r.text
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        pages += 1
        link = r.headers.get("Link")
        if link:
            m = re.fullmatch(r'<([^>]+)>;\s*rel="next"', link)
            assert m, link
            url = m.group(1)
            assert "n=3" in url and f"last={page[-1]}" in url, url
        else:
            url = None
        assert pages < 10
    assert seen == tags and pages == 3
    r = registry.get(f"/v2/{repo}/tags/list?n=2&last=t02")
    assert r.json()["tags"] == ["t03", "t04"]
    r = registry.get(f"/v2/{repo}/tags/list?n=10&last=t06")
    assert r.json()["tags"] == [] and "Link" not in r.headers


def test_catalog_pagination(registry, new_repo, unique_name):
    """_catalog lists repositories sorted, paginated with n/last and Link, without duplicates."""
    prefix = unique_name("cat")
    repos = sorted(new_repo(f"{prefix}-{i}") for i in range(3))
    for repo in repos:
        push_image(registry, repo, "latest")
    r = registry.get(f"/v2/_catalog?n=2&last={prefix}")
    assert r.status_code == 200, r.text
    first = r.json()["repositories"]
    assert first == repos[:2], first
    assert "Link" in r.headers
    seen, url = [], "/v2/_catalog?n=2"
    for _ in range(10_000):
        r = registry.get(url)
        page = r.json()["repositories"]
        assert len(page) <= 2
        seen += page
        m = re.fullmatch(r'<([^>]+)>;\s*rel="next"', r.headers.get("Link", ""))
        if not m:
            break
        url = m.group(1)
    assert seen == sorted(set(seen)), "catalog pages overlap or are unsorted"
    assert set(repos) <= set(seen)


def test_referrers_with_artifact_type_filter_and_subject_header(registry, new_repo):
    """Manifests with a subject are listed by GET /referrers/<digest> (OCI-Subject on PUT); ?artifactType= filters with OCI-Filters-Applied."""
    repo = new_repo("refs")
    subject = push_image(registry, repo, "app")
    subject_desc = {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.manifest)}
    empty = b"{}"
    push_blob(registry, repo, empty)
    arts = {}
    for kind in ["application/vnd.example.sbom", "application/vnd.example.sig"]:
        layer = os.urandom(64)
        push_blob(registry, repo, layer)
        manifest, mt = build_manifest(empty, [layer], subject=subject_desc, artifact_type=kind,
                                      annotations={"kind": kind}, config_media_type=OCI_EMPTY)
        r = put_manifest(registry, repo, sha256(manifest), manifest, mt)
        assert r.status_code == 201, r.text
        assert r.headers.get("OCI-Subject") == subject.digest, r.headers
        arts[kind] = manifest
    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    idx = r.json()
    assert idx["schemaVersion"] == 2 and idx["mediaType"] == OCI_INDEX
    got = {m["digest"]: m for m in idx["manifests"]}
    assert set(got) == {sha256(m) for m in arts.values()}
    for kind, manifest in arts.items():
        d = got[sha256(manifest)]
        assert d["artifactType"] == kind
        assert d["mediaType"] == OCI_MANIFEST and d["size"] == len(manifest)
        assert d.get("annotations", {}).get("kind") == kind
    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}?artifactType=application/vnd.example.sbom")
    assert r.status_code == 200
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(arts["application/vnd.example.sbom"])]
    assert "artifactType" in r.headers.get("OCI-Filters-Applied", ""), r.headers
    # A digest nothing refers to has an empty (not missing) index.
    r = registry.get(f"/v2/{repo}/referrers/{sha256(b'nothing refers to this')}")
    assert r.status_code == 200 and r.json()["manifests"] == []


def test_delete_manifest_by_digest(registry, new_repo):
    """DELETE manifests/<digest> is 202; the manifest and the tags pointing at it are then MANIFEST_UNKNOWN."""
    repo = new_repo("delm")
    img = push_image(registry, repo, "gone")
    r = registry.delete(f"/v2/{repo}/manifests/{img.digest}")
    assert r.status_code == 202, r.text
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/{img.digest}"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/gone"), 404, "MANIFEST_UNKNOWN")
    assert registry.head(f"/v2/{repo}/manifests/gone").status_code == 404
    assert "gone" not in (registry.get(f"/v2/{repo}/tags/list").json().get("tags") or [])
    assert_oci_error(registry.delete(f"/v2/{repo}/manifests/{img.digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_tag_keeps_manifest_and_other_tags(registry, new_repo):
    """DELETE manifests/<tag> removes only that tag; the manifest stays reachable by digest and other tags."""
    repo = new_repo("delt")
    img = push_image(registry, repo, "a")
    assert put_manifest(registry, repo, "b", img.manifest, img.media_type).status_code == 201
    r = registry.delete(f"/v2/{repo}/manifests/a")
    assert r.status_code == 202, r.text
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/a"), 404, "MANIFEST_UNKNOWN")
    assert registry.get(f"/v2/{repo}/manifests/b").content == img.manifest
    assert registry.get(f"/v2/{repo}/manifests/{img.digest}").status_code == 200
    assert registry.get(f"/v2/{repo}/tags/list").json()["tags"] == ["b"]


def test_delete_blob(registry, new_repo):
    """DELETE blobs/<digest> is 202; the blob is then 404 BLOB_UNKNOWN."""
    repo = new_repo("delb")
    d = push_blob(registry, repo, os.urandom(1000))
    r = registry.delete(f"/v2/{repo}/blobs/{d}")
    assert r.status_code == 202, r.text
    assert registry.head(f"/v2/{repo}/blobs/{d}").status_code == 404
    assert_oci_error(registry.get(f"/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")


def test_oci_index_accepted(registry, new_repo):
    """An OCI image index over two pushed manifests is accepted and served back byte for byte."""
    repo = new_repo("index")
    a, b = push_image(registry, repo), push_image(registry, repo)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**descriptor(OCI_MANIFEST, a.manifest), "platform": {"architecture": "amd64", "os": "linux"}},
        {**descriptor(OCI_MANIFEST, b.manifest), "platform": {"architecture": "arm64", "os": "linux"}},
    ]}).encode()
    r = put_manifest(registry, repo, "multi", index, OCI_INDEX)
    assert r.status_code == 201, r.text
    r = registry.get(f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_INDEX})
    assert r.content == index and r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == sha256(index)


def test_docker_manifest_list_accepted(registry, new_repo):
    """Docker schema 2 manifests and a Docker manifest list over them are accepted and served back."""
    repo = new_repo("dlist")
    a, b = push_image(registry, repo, docker=True), push_image(registry, repo, docker=True)
    for img in (a, b):
        r = registry.get(f"/v2/{repo}/manifests/{img.digest}", headers={"Accept": DOCKER_MANIFEST})
        assert r.headers["Content-Type"] == DOCKER_MANIFEST and r.content == img.manifest
    lst = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {**descriptor(DOCKER_MANIFEST, a.manifest), "platform": {"architecture": "amd64", "os": "linux"}},
        {**descriptor(DOCKER_MANIFEST, b.manifest), "platform": {"architecture": "arm64", "os": "linux"}},
    ]}).encode()
    r = put_manifest(registry, repo, "multi", lst, DOCKER_LIST)
    assert r.status_code == 201, r.text
    r = registry.get(f"/v2/{repo}/manifests/multi", headers={"Accept": DOCKER_LIST})
    assert r.content == lst and r.headers["Content-Type"] == DOCKER_LIST


# --- error codes ------------------------------------------------------------------------


def test_error_blob_unknown(registry, new_repo):
    """GET of a blob the repository does not hold is 404 BLOB_UNKNOWN; HEAD is a bare 404."""
    repo = new_repo("e-blob")
    d = sha256(os.urandom(16))
    assert_oci_error(registry.get(f"/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")
    assert registry.head(f"/v2/{repo}/blobs/{d}").status_code == 404


def test_error_blob_not_linked_to_other_repository(registry, new_repo):
    """A blob pushed to one repository is not readable through another without a mount."""
    a, b = new_repo("e-link-a"), new_repo("e-link-b")
    d = push_blob(registry, a, os.urandom(100))
    assert_oci_error(registry.get(f"/v2/{b}/blobs/{d}"), 404, "BLOB_UNKNOWN")


def test_error_blob_upload_invalid(registry, new_repo):
    """A PATCH with an unparseable Content-Range is 400 BLOB_UPLOAD_INVALID."""
    repo = new_repo("e-upinv")
    loc = start_upload(registry, repo)
    r = registry.patch(loc, data=b"abc", headers={"Content-Range": "bytes=lots",
                                                  "Content-Type": "application/octet-stream"})
    assert_oci_error(r, 400, "BLOB_UPLOAD_INVALID")


def test_error_blob_upload_unknown(registry, new_repo):
    """Status, PATCH and PUT on an upload id the registry never issued are 404 BLOB_UPLOAD_UNKNOWN."""
    repo = new_repo("e-upunk")
    loc = f"/v2/{repo}/blobs/uploads/{'0' * 32}"
    assert_oci_error(registry.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(registry.patch(loc, data=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(registry.put(with_query(loc, digest=sha256(b"x")), data=b"x"), 404,
                     "BLOB_UPLOAD_UNKNOWN")


def test_error_digest_invalid(registry, new_repo):
    """Finishing an upload with a digest that does not match, is malformed, or is missing is 400 DIGEST_INVALID."""
    repo = new_repo("e-dig")
    data = os.urandom(100)
    for bad in [sha256(b"other"), "sha256:xyz", "sha256:" + "0" * 63, "md5:abc"]:
        loc = start_upload(registry, repo)
        assert_oci_error(registry.put(with_query(loc, digest=bad), data=data), 400, "DIGEST_INVALID")
    loc = start_upload(registry, repo)
    assert_oci_error(registry.put(loc, data=data), 400, "DIGEST_INVALID")
    assert_oci_error(registry.get(f"/v2/{repo}/blobs/sha256:nothex"), 400, "DIGEST_INVALID")


def test_error_manifest_blob_unknown(registry, new_repo):
    """A manifest naming a layer the repository does not hold is 400 MANIFEST_BLOB_UNKNOWN and is not stored."""
    repo = new_repo("e-mbu")
    layer = os.urandom(100)
    cfg = config_bytes("x", [layer])
    push_blob(registry, repo, cfg)
    manifest, mt = build_manifest(cfg, [layer])
    assert_oci_error(put_manifest(registry, repo, "t", manifest, mt), 400, "MANIFEST_BLOB_UNKNOWN")
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/t"), 404, "MANIFEST_UNKNOWN")
    # A missing config is caught too.
    layer2 = os.urandom(100)
    push_blob(registry, repo, layer2)
    manifest, mt = build_manifest(config_bytes("y", [layer2]), [layer2])
    assert_oci_error(put_manifest(registry, repo, "t", manifest, mt), 400, "MANIFEST_BLOB_UNKNOWN")
    # An index naming a manifest that is not there.
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(OCI_MANIFEST, b'{"not": "pushed"}')]}).encode()
    r = put_manifest(registry, repo, "idx", index, OCI_INDEX)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] in ("MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN"), r.text


def test_error_manifest_invalid(registry, new_repo):
    """Bytes that are not a manifest of the declared type are 400 MANIFEST_INVALID."""
    repo = new_repo("e-minv")
    assert_oci_error(put_manifest(registry, repo, "t", b"not json", OCI_MANIFEST), 400, "MANIFEST_INVALID")
    assert_oci_error(put_manifest(registry, repo, "t", b'{"schemaVersion": 2}', OCI_MANIFEST), 400,
                     "MANIFEST_INVALID")
    bad_layers = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                             "config": {"mediaType": "x", "digest": "nope", "size": 1},
                             "layers": "many"}).encode()
    assert_oci_error(put_manifest(registry, repo, "t", bad_layers, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    schema1 = json.dumps({"schemaVersion": 1, "name": repo, "tag": "t", "fsLayers": []}).encode()
    r = put_manifest(registry, repo, "t", schema1, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    assert r.status_code in (400, 415), r.text
    assert r.json()["errors"][0]["code"] in ("MANIFEST_INVALID", "UNSUPPORTED"), r.text
    # PUT by a digest the bytes do not have.
    img_bytes = b'{"schemaVersion": 2}'
    r = put_manifest(registry, repo, sha256(b"other"), img_bytes, OCI_MANIFEST)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] in ("DIGEST_INVALID", "MANIFEST_INVALID"), r.text


def test_error_manifest_unknown(registry, new_repo):
    """GET of a missing tag or digest is 404 MANIFEST_UNKNOWN."""
    repo = new_repo("e-munk")
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(registry.get(f"/v2/{repo}/manifests/{sha256(b'x')}"), 404, "MANIFEST_UNKNOWN")
    assert registry.head(f"/v2/{repo}/manifests/nope").status_code == 404
    assert_oci_error(registry.delete(f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")


def test_error_name_invalid(registry):
    """Repository names outside the spec's grammar are 400 NAME_INVALID."""
    for name in ["UPPER", "a..b", "-lead", "trail-", "a" * 300]:
        assert_oci_error(registry.post(f"/v2/{name}/blobs/uploads/"), 400, "NAME_INVALID")
        assert_oci_error(registry.get(f"/v2/{name}/tags/list"), 400, "NAME_INVALID")


def test_error_name_unknown(registry, unique_name):
    """A valid name that was never created (ECR needs CreateRepository first) is 404 NAME_UNKNOWN, even for pushes."""
    name = unique_name("never-created")
    assert_oci_error(registry.post(f"/v2/{name}/blobs/uploads/"), 404, "NAME_UNKNOWN")
    assert_oci_error(registry.get(f"/v2/{name}/tags/list"), 404, "NAME_UNKNOWN")
    manifest, mt = build_manifest(b"{}", [])
    assert_oci_error(put_manifest(registry, name, "t", manifest, mt), 404, "NAME_UNKNOWN")


def test_error_size_invalid(registry, new_repo):
    """A chunk whose Content-Range length disagrees with its body is 400 SIZE_INVALID."""
    repo = new_repo("e-size")
    loc = start_upload(registry, repo)
    r = registry.patch(loc, data=os.urandom(50), headers={"Content-Range": "0-99",
                                                          "Content-Type": "application/octet-stream"})
    assert_oci_error(r, 400, "SIZE_INVALID")


def test_error_unauthorized_shape(anon):
    """Anonymous requests get 401 UNAUTHORIZED in the spec's JSON shape."""
    assert_oci_error(anon.get("/v2/_catalog"), 401, "UNAUTHORIZED")


def test_error_unsupported(registry, new_repo):
    """A method an endpoint does not support is 405 UNSUPPORTED."""
    repo = new_repo("e-unsup")
    assert_oci_error(registry.patch(f"/v2/{repo}/manifests/latest", data=b"{}"), 405, "UNSUPPORTED")
    assert_oci_error(registry.post(f"/v2/{repo}/tags/list"), 405, "UNSUPPORTED")
