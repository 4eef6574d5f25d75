"""Hostile and broken input: malformed API calls, oversized bodies, path tricks, lying
digests and cut-off uploads. The server must answer each with a clear 4xx, keep serving,
and never write outside its data directory."""

import base64
import json
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from support import (
    HTTP_TIMEOUT_S, OCI_MANIFEST, assert_aws_error, assert_oci_error, push_blob, put_manifest,
    raw_http, send, sha256, signed_request, unique, with_query)

MARKER = f"pwned-{uuid.uuid4().hex[:8]}"


def tree(root: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p != skip:
                out.add(str(p.relative_to(root)))
    return out


@pytest.fixture(scope="module")
def hostile(berth_factory):
    """A dedicated server whose data dir's parent holds only its log, snapshotted at start."""
    srv = berth_factory()
    srv.parent_before = tree(srv.data_dir.parent, srv.data_dir)
    srv.reg = srv.registry()
    yield srv
    srv.reg.close()


def assert_server_alive(srv):
    assert requests.get(srv.url + "/v2/", timeout=HTTP_TIMEOUT_S).status_code == 401
    assert srv.reg.get("/v2/").status_code == 200
    srv.ecr().describe_repositories(maxResults=1)


def assert_nothing_written_outside(srv):
    after = tree(srv.data_dir.parent, srv.data_dir)
    assert after == srv.parent_before, f"new files beside the data dir: {after - srv.parent_before}"
    for where in [srv.data_dir.parent, srv.data_dir.parent.parent, Path("/tmp"), Path("/"),
                  Path.cwd(), Path.home()]:
        hits = [p for p in where.iterdir() if MARKER in p.name]
        assert not hits, f"a hostile name escaped into {where}: {hits}"


def signed(srv, op, body, **kw):
    return send(signed_request(srv.url, op, body, *srv.credentials(), **kw))


def new_repo(srv, prefix="bad"):
    name = unique(prefix)
    srv.ecr().create_repository(repositoryName=name)
    return name


# --- the AWS API --------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["{not json", '{"repositoryName": "x"', "\x00\xff", "[]", '"str"'])
def test_malformed_json_is_serialization_exception(hostile, body):
    """A body that is not a JSON object is 400 SerializationException."""
    r = signed(hostile, "DescribeRepositories", body)
    assert_aws_error(r, 400, "SerializationException")


@pytest.mark.parametrize("op,body", [
    ("CreateRepository", {"repositoryName": 123}),
    ("CreateRepository", {"repositoryName": ["a"]}),
    ("DescribeRepositories", {"repositoryNames": "one"}),
    ("DescribeRepositories", {"maxResults": "ten"}),
    ("CreateRepository", {"repositoryName": "okname", "tags": {"Key": "a"}}),
])
def test_wrong_types_are_serialization_exception(hostile, op, body):
    """A member of the wrong JSON type is 400 SerializationException, and nothing is created."""
    r = signed(hostile, op, json.dumps(body))
    assert_aws_error(r, 400, "SerializationException")
    with pytest.raises(hostile.ecr().exceptions.RepositoryNotFoundException):
        hostile.ecr().describe_repositories(repositoryNames=["okname"])


def test_invalid_values_are_invalid_parameter(hostile):
    """Well-typed but invalid values (enum, range) are 400 InvalidParameterException."""
    r = signed(hostile, "CreateRepository", json.dumps({"repositoryName": unique("enum"),
                                                        "imageTagMutability": "SOMETIMES"}))
    assert_aws_error(r, 400, "InvalidParameterException")
    r = signed(hostile, "DescribeRepositories", json.dumps({"maxResults": 0}))
    assert_aws_error(r, 400, "InvalidParameterException")


@pytest.mark.parametrize("target", [
    "AmazonEC2ContainerRegistry_V20150921.DoMagic",
    "AmazonEC2ContainerRegistry_V20150921.",
    "DynamoDB_20120810.ListTables",
    "nonsense",
])
def test_unknown_target_is_unknown_operation(hostile, target):
    """An X-Amz-Target berth does not serve is 400 UnknownOperationException."""
    r = signed(hostile, "x", "{}", target=target)
    assert_aws_error(r, 400, "UnknownOperationException")


def test_huge_api_body_is_refused_and_server_survives(hostile):
    """A 20 MiB API body is answered with a clear 413/400 AWS error, and the server keeps serving."""
    body = json.dumps({"repositoryName": "huge", "pad": "x" * (20 * 1024 * 1024)})
    try:
        r = signed(hostile, "CreateRepository", body)
    except requests.ConnectionError as e:
        pytest.fail(f"the server dropped the connection instead of answering: {e}")
    assert r.status_code in (400, 413), r.text[:300]
    assert r.json().get("__type"), r.text[:300]
    # An unsigned huge body too (refused before or at authentication).
    try:
        r = requests.post(hostile.url + "/", data=body, timeout=HTTP_TIMEOUT_S, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.CreateRepository"})
    except requests.ConnectionError as e:
        pytest.fail(f"the server dropped the connection instead of answering: {e}")
    assert r.status_code in (400, 403, 413), r.text[:300]
    assert_server_alive(hostile)
    with pytest.raises(hostile.ecr().exceptions.RepositoryNotFoundException):
        hostile.ecr().describe_repositories(repositoryNames=["huge"])


@pytest.mark.parametrize("bad", ["../x", f"../../{MARKER}", "UPPER", "a//b", "x" * 300,
                                 f"/tmp/{MARKER}", f"a/../../{MARKER}", "a\x00b", "a%2f..%2fb"])
def test_invalid_repository_names_via_api(hostile, bad):
    """CreateRepository with a hostile or invalid name is InvalidParameterException and writes nothing."""
    r = signed(hostile, "CreateRepository", json.dumps({"repositoryName": bad}))
    assert_aws_error(r, 400, "InvalidParameterException")
    assert_nothing_written_outside(hostile)


@pytest.mark.parametrize("name,strict", [
    ("UPPER", True), ("a//b", True), ("x" * 300, True), ("a..b", True),
    ("..", False), ("../x", False), (f"../../../../{MARKER}", False), (f"%2e%2e/%2e%2e/{MARKER}", False),
    (f"a/%2e%2e/%2e%2e/{MARKER}", False), (f"..%2f..%2f{MARKER}", False)])
def test_invalid_repository_names_via_registry(hostile, name, strict):
    """Invalid names in /v2/ paths are 400 NAME_INVALID (dot segments may also be a plain 404), never a write."""
    auth = "Basic " + base64.b64encode(b"AWS:" + hostile.reg.auth[1].encode()).decode()
    for method, path in [("POST", f"/v2/{name}/blobs/uploads/"), ("GET", f"/v2/{name}/tags/list"),
                         ("PUT", f"/v2/{name}/manifests/latest")]:
        body = b"{}" if method == "PUT" else b""
        status, headers, data = raw_http("127.0.0.1", hostile.port, method, path,
                                         {"Authorization": auth, "Content-Type": OCI_MANIFEST}, body)
        if strict or status != 404:
            assert status == 400, (method, path, status, data[:300])
            assert json.loads(data)["errors"][0]["code"] == "NAME_INVALID", data[:300]
    assert_nothing_written_outside(hostile)


def test_path_tricks_in_digests_and_upload_ids(hostile):
    """Digests and upload ids carrying path traversal are refused and never reach a file (the credentials stay secret)."""
    repo = new_repo(hostile, "trav")
    secret = hostile.credentials()[1].encode()
    auth = "Basic " + base64.b64encode(b"AWS:" + hostile.reg.auth[1].encode()).decode()
    paths = [
        f"/v2/{repo}/blobs/sha256:..%2f..%2f..%2fcredentials",
        f"/v2/{repo}/blobs/sha256:../../../credentials",
        f"/v2/{repo}/blobs/..%2f..%2f..%2fcredentials",
        f"/v2/{repo}/blobs/uploads/..%2f..%2f..%2fcredentials",
        f"/v2/{repo}/blobs/uploads/../../../../credentials",
        f"/v2/{repo}/manifests/sha256:..%2f..%2fcredentials",
        f"/v2/{repo}/blobs/uploads/{MARKER}",
    ]
    for path in paths:
        for method in ["GET", "PATCH", "PUT"]:
            body = b"data" if method != "GET" else None
            p = path if method != "PUT" else path + f"?digest={sha256(b'data')}"
            status, _, data = raw_http("127.0.0.1", hostile.port, method, p, {"Authorization": auth}, body)
            assert 400 <= status < 500, (method, p, status, data[:200])
            assert secret not in data
    assert_nothing_written_outside(hostile)
    assert_server_alive(hostile)


# --- the registry -------------------------------------------------------------------------


def test_digest_mismatch_is_digest_invalid_and_nothing_is_stored(hostile):
    """An upload whose bytes do not hash to the claimed digest is 400 DIGEST_INVALID; neither digest becomes a blob."""
    reg, repo = hostile.reg, new_repo(hostile, "mismatch")
    data = os.urandom(10_000)
    claimed = sha256(os.urandom(10_000))
    loc = reg.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    assert_oci_error(reg.put(with_query(loc, digest=claimed), data=data), 400, "DIGEST_INVALID")
    assert reg.head(f"/v2/{repo}/blobs/{claimed}").status_code == 404
    assert reg.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
    # Single-POST form too.
    r = reg.post(f"/v2/{repo}/blobs/uploads/?digest={claimed}", data=data)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert reg.head(f"/v2/{repo}/blobs/{claimed}").status_code == 404
    # And a manifest pushed under a digest it does not have.
    r = put_manifest(reg, repo, claimed, b'{"schemaVersion": 2}', OCI_MANIFEST)
    assert r.status_code == 400, r.text
    assert reg.get(f"/v2/{repo}/manifests/{claimed}").status_code == 404


def send_truncated(srv, method: str, location: str, headers: dict, body: bytes, declared: int):
    """Sends a request declaring `declared` bytes but only `body`, half-closes, and waits
    for the server to answer or hang up (so it has seen the truncation)."""
    u = urlsplit(location)
    path = u.path + (f"?{u.query}" if u.query else "")
    auth = base64.b64encode(b"AWS:" + srv.reg.auth[1].encode()).decode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: {srv.host}\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=HTTP_TIMEOUT_S) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    assert not reply.startswith(b"HTTP/1.1 2"), reply[:300]
    return reply


def test_truncated_monolithic_upload_stores_nothing(hostile):
    """A PUT whose body stops short of its Content-Length commits nothing; the same blob uploads fine afterwards."""
    reg, repo = hostile.reg, new_repo(hostile, "trunc")
    data = os.urandom(1024 * 1024)
    d = sha256(data)
    loc = reg.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    send_truncated(hostile, "PUT", with_query(loc, digest=d), {}, data[:300_000], len(data))
    assert reg.head(f"/v2/{repo}/blobs/{d}").status_code == 404
    assert_server_alive(hostile)
    assert push_blob(reg, repo, data) == d
    assert reg.get(f"/v2/{repo}/blobs/{d}").content == data


def test_truncated_chunk_leaves_a_consistent_upload(hostile):
    """After a PATCH cut off mid-body, the upload's Range is a true prefix and resuming from it yields the right blob."""
    reg, repo = hostile.reg, new_repo(hostile, "trunc-chunk")
    data = os.urandom(600_000)
    loc = reg.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    r = reg.patch(loc, data=data[:100_000], headers={"Content-Range": "0-99999"})
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    send_truncated(hostile, "PATCH", loc, {"Content-Range": f"100000-{len(data) - 1}"},
                   data[100_000:300_000], len(data) - 100_000)
    s = reg.get(loc)
    if s.status_code == 404:
        assert_oci_error(s, 404, "BLOB_UPLOAD_UNKNOWN")  # discarding the upload is consistent too
        return
    assert s.status_code == 204, s.text
    have = int(s.headers["Range"].split("-")[-1]) + 1
    assert 100_000 <= have <= 300_000, s.headers
    r = reg.patch(s.headers["Location"], data=data[have:],
                  headers={"Content-Range": f"{have}-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = reg.put(with_query(r.headers["Location"], digest=sha256(data)))
    assert r.status_code == 201, r.text
    assert reg.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_oversized_manifest_is_refused(hostile):
    """A manifest over the 4 MiB limit is a clear 4xx error (not stored) and the server keeps serving."""
    reg, repo = hostile.reg, new_repo(hostile, "bigman")
    big = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "annotations": {"pad": "x" * (5 * 1024 * 1024)}}).encode()
    try:
        r = put_manifest(reg, repo, "big", big, OCI_MANIFEST)
    except requests.ConnectionError as e:
        pytest.fail(f"the server dropped the connection instead of answering: {e}")
    assert r.status_code in (400, 413), r.text[:300]
    assert r.json()["errors"][0]["code"] in ("SIZE_INVALID", "MANIFEST_INVALID"), r.text[:300]
    assert reg.get(f"/v2/{repo}/manifests/big").status_code == 404
    assert_server_alive(hostile)


def test_nothing_written_outside_the_data_dir(hostile):
    """After every hostile request of this module, the data dir's parent holds no new file."""
    assert_nothing_written_outside(hostile)
    assert_server_alive(hostile)
