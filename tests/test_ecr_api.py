"""The Amazon ECR API through boto3: every operation of the contract, its error types,
pagination, and the way it meets content pushed over /v2/."""

import datetime
import json
import math
import os
import time

import pytest

from support import (
    DOCKER_MANIFEST, OCI_MANIFEST, build_manifest, config_bytes, push_blob, push_image,
    put_manifest, sha256, wait_for)


def paginate(call, key, **kw):
    """Follows nextToken; returns (items, number of pages), checking maxResults per page."""
    items, token, pages = [], None, 0
    while True:
        resp = call(**kw, **({"nextToken": token} if token else {}))
        page = resp[key]
        assert len(page) <= kw.get("maxResults", 1000), (len(page), kw)
        items += page
        pages += 1
        token = resp.get("nextToken")
        if not token:
            return items, pages
        assert pages < 10_000


def test_create_describe_delete_repository(berth, ecr, unique_name):
    """CreateRepository records mutability, encryption and tags; Describe shows them; Delete removes the repository."""
    name = unique_name("repo")
    repo = ecr.create_repository(
        repositoryName=name, imageTagMutability="IMMUTABLE",
        encryptionConfiguration={"encryptionType": "AES256"},
        tags=[{"Key": "team", "Value": "berth"}, {"Key": "env", "Value": "test"}])["repository"]
    assert repo["repositoryName"] == name
    assert repo["repositoryUri"] == f"{berth.host}/{name}"
    assert repo["repositoryArn"].startswith("arn:aws:ecr:") and repo["repositoryArn"].endswith(f":repository/{name}")
    assert repo["registryId"] and repo["repositoryArn"].split(":")[4] == repo["registryId"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["encryptionConfiguration"]["encryptionType"] == "AES256"
    assert isinstance(repo["createdAt"], datetime.datetime)

    described = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert len(described) == 1
    for k in ("repositoryName", "repositoryUri", "repositoryArn", "registryId", "imageTagMutability"):
        assert described[0][k] == repo[k], k
    assert described[0]["encryptionConfiguration"]["encryptionType"] == "AES256"
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "test"), ("team", "berth")]

    deleted = ecr.delete_repository(repositoryName=name)["repository"]
    assert deleted["repositoryName"] == name
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_repositories(repositoryNames=[name])


def test_create_existing_repository_is_already_exists(ecr, new_repo):
    """Creating a repository twice raises RepositoryAlreadyExistsException."""
    name = new_repo("dup")
    with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=name)


@pytest.mark.parametrize("bad", ["UPPER", "../x", "a//b", "x" * 300, "-lead", "trail/", "a b", "a..b"])
def test_invalid_repository_name_is_invalid_parameter(ecr, bad):
    """Names outside ECR's grammar (lowercase components joined by [._-], '/'-separated, <=256) raise InvalidParameterException."""
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository(repositoryName=bad)


def test_missing_repository_is_repository_not_found(ecr, unique_name):
    """Describe/Delete/ListImages/DescribeImages/lifecycle calls on a missing repository raise RepositoryNotFoundException."""
    name = unique_name("missing")
    for call in [lambda: ecr.describe_repositories(repositoryNames=[name]),
                 lambda: ecr.delete_repository(repositoryName=name),
                 lambda: ecr.list_images(repositoryName=name),
                 lambda: ecr.describe_images(repositoryName=name),
                 lambda: ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE"),
                 lambda: ecr.get_lifecycle_policy(repositoryName=name)]:
        with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
            call()


def test_delete_non_empty_repository_needs_force(ecr, registry, new_repo):
    """DeleteRepository refuses a repository with images (RepositoryNotEmptyException) unless force=True, which removes the images too."""
    name = new_repo("full")
    push_image(registry, name, "latest")
    with pytest.raises(ecr.exceptions.RepositoryNotEmptyException):
        ecr.delete_repository(repositoryName=name)
    assert registry.get(f"/v2/{name}/manifests/latest").status_code == 200
    ecr.delete_repository(repositoryName=name, force=True)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_repositories(repositoryNames=[name])
    r = registry.get(f"/v2/{name}/manifests/latest")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_describe_repositories_pagination(ecr, new_repo, unique_name):
    """DescribeRepositories pages with maxResults/nextToken: every repository once, no page too long."""
    prefix = unique_name("page")
    mine = {new_repo(prefix) for _ in range(5)}
    repos, pages = paginate(ecr.describe_repositories, "repositories", maxResults=2)
    names = [r["repositoryName"] for r in repos]
    assert len(names) == len(set(names)), "a repository appeared on two pages"
    assert mine <= set(names)
    assert pages >= 3


def test_list_and_describe_images_with_pagination(ecr, registry, new_repo):
    """ListImages/DescribeImages page with maxResults/nextToken and report digest, tags, size, push time and media type."""
    name = new_repo("imgs")
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    images = {}
    for i in range(5):
        img = push_image(registry, name, f"v{i}", n_layers=2, layer_size=2000 + i)
        images[img.digest] = (f"v{i}", img)
    untagged = push_image(registry, name, None)

    ids, pages = paginate(ecr.list_images, "imageIds", repositoryName=name, maxResults=2)
    assert pages >= 3
    assert {(i["imageDigest"], i.get("imageTag")) for i in ids} == \
        {(d, t) for d, (t, _) in images.items()} | {(untagged.digest, None)}
    tagged = ecr.list_images(repositoryName=name, filter={"tagStatus": "TAGGED"})["imageIds"]
    assert {i["imageDigest"] for i in tagged} == set(images)
    only_untagged = ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert [i["imageDigest"] for i in only_untagged] == [untagged.digest]

    details, pages = paginate(ecr.describe_images, "imageDetails", repositoryName=name, maxResults=2)
    assert pages >= 3
    by_digest = {d["imageDigest"]: d for d in details}
    assert set(by_digest) == set(images) | {untagged.digest}
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    for digest, (tag, img) in images.items():
        d = by_digest[digest]
        assert d["repositoryName"] == name and d["registryId"]
        assert d["imageTags"] == [tag]
        layers = sum(len(l) for l in img.layers)
        assert layers <= d["imageSizeInBytes"] <= img.size, (d["imageSizeInBytes"], img.size)
        assert before <= d["imagePushedAt"] <= now
        assert d["imageManifestMediaType"] == OCI_MANIFEST
    assert not by_digest[untagged.digest].get("imageTags")

    one = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "v3"}])["imageDetails"]
    assert [d["imageDigest"] for d in one] == [d for d, (t, _) in images.items() if t == "v3"]
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "nope"}])


def test_put_image_and_batch_get_image_round_trip(ecr, registry, new_repo):
    """A manifest whose blobs came over /v2/ is stored by PutImage and returned byte for byte by BatchGetImage and /v2/."""
    name = new_repo("putimg")
    layer = os.urandom(3000)
    cfg = config_bytes("putimage", [layer])
    push_blob(registry, name, layer)
    push_blob(registry, name, cfg)
    manifest, mt = build_manifest(cfg, [layer], docker=True)
    text = manifest.decode()
    img = ecr.put_image(repositoryName=name, imageManifest=text, imageManifestMediaType=mt,
                        imageTag="from-api")["image"]
    assert img["imageId"] == {"imageDigest": sha256(manifest), "imageTag": "from-api"}
    assert img["repositoryName"] == name and img["imageManifest"] == text

    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "from-api"}],
                              acceptedMediaTypes=[DOCKER_MANIFEST, OCI_MANIFEST])
    assert got["failures"] == []
    assert len(got["images"]) == 1
    assert got["images"][0]["imageManifest"] == text
    assert got["images"][0]["imageId"]["imageDigest"] == sha256(manifest)
    assert got["images"][0]["imageManifestMediaType"] == DOCKER_MANIFEST

    r = registry.get(f"/v2/{name}/manifests/from-api", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200 and r.content == manifest
    assert r.headers["Docker-Content-Digest"] == sha256(manifest)

    # The other direction: pushed over /v2/, read through the API.
    pushed = push_image(registry, name, "from-v2")
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageDigest": pushed.digest}])
    assert got["images"][0]["imageManifest"].encode() == pushed.manifest

    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "absent"}])
    assert got["images"] == [] and got["failures"][0]["failureCode"] == "ImageNotFound"
    assert got["failures"][0]["imageId"] == {"imageTag": "absent"}


def test_put_image_errors(ecr, registry, new_repo):
    """PutImage refuses a repeat (ImageAlreadyExistsException), missing layers (LayersNotFoundException) and a wrong digest (ImageDigestDoesNotMatchException)."""
    name = new_repo("puterr")
    pushed = push_image(registry, name, "t1")
    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=name, imageManifest=pushed.manifest.decode(), imageTag="t1",
                      imageManifestMediaType=pushed.media_type)
    layer = os.urandom(100)
    cfg = config_bytes("missing", [layer])
    push_blob(registry, name, cfg)
    manifest, mt = build_manifest(cfg, [layer])
    with pytest.raises(ecr.exceptions.LayersNotFoundException):
        ecr.put_image(repositoryName=name, imageManifest=manifest.decode(), imageTag="t2",
                      imageManifestMediaType=mt)
    with pytest.raises(ecr.exceptions.ImageDigestDoesNotMatchException):
        ecr.put_image(repositoryName=name, imageManifest=pushed.manifest.decode(), imageTag="t3",
                      imageManifestMediaType=pushed.media_type, imageDigest=sha256(b"other"))


def test_batch_delete_image(ecr, registry, new_repo):
    """BatchDeleteImage by tag removes the tag (the image goes with its last tag); by digest removes the image; unknown ids are failures."""
    name = new_repo("bdel")
    a = push_image(registry, name, "a1")
    assert put_manifest(registry, name, "a2", a.manifest, a.media_type).status_code == 201
    b = push_image(registry, name, "b1")

    resp = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "a1"}])
    assert resp["failures"] == []
    assert resp["imageIds"] == [{"imageDigest": a.digest, "imageTag": "a1"}]
    left = ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": a.digest}])["imageDetails"]
    assert left[0]["imageTags"] == ["a2"]

    resp = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageDigest": b.digest}])
    assert resp["failures"] == [] and resp["imageIds"][0]["imageDigest"] == b.digest
    assert registry.get(f"/v2/{name}/manifests/b1").status_code == 404
    assert registry.get(f"/v2/{name}/manifests/{b.digest}").status_code == 404

    resp = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "a2"}, {"imageTag": "zz"}])
    assert [i["imageTag"] for i in resp["imageIds"]] == ["a2"]
    assert [f["imageId"] for f in resp["failures"]] == [{"imageTag": "zz"}]
    assert resp["failures"][0]["failureCode"] == "ImageNotFound"
    assert ecr.list_images(repositoryName=name)["imageIds"] == []


def test_get_authorization_token_password_logs_in(ecr, berth):
    """The token's password authenticates /v2/ and proxyEndpoint is the server's http URL."""
    import base64

    import requests

    data = ecr.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == berth.url
    pw = base64.b64decode(data["authorizationToken"]).decode().removeprefix("AWS:")
    assert requests.get(berth.url + "/v2/", auth=("AWS", pw), timeout=30).status_code == 200


def test_immutable_tags(ecr, registry, new_repo):
    """With IMMUTABLE tags, moving a tag is refused by PutImage (ImageTagAlreadyExistsException) and by /v2/ (400 TAG_INVALID); MUTABLE allows it again."""
    name = new_repo("immut")
    a = push_image(registry, name, "stable")
    b = push_image(registry, name, None)
    resp = ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
    assert resp["imageTagMutability"] == "IMMUTABLE" and resp["repositoryName"] == name
    assert ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["imageTagMutability"] == "IMMUTABLE"

    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException):
        ecr.put_image(repositoryName=name, imageManifest=b.manifest.decode(), imageTag="stable",
                      imageManifestMediaType=b.media_type)
    r = put_manifest(registry, name, "stable", b.manifest, b.media_type)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "TAG_INVALID"
    assert registry.get(f"/v2/{name}/manifests/stable").content == a.manifest
    # A new tag is fine under IMMUTABLE.
    assert put_manifest(registry, name, "other", b.manifest, b.media_type).status_code == 201

    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
    assert put_manifest(registry, name, "stable", b.manifest, b.media_type).status_code == 201
    assert registry.get(f"/v2/{name}/manifests/stable").content == b.manifest


POLICY = {"rules": [
    {"rulePriority": 1, "description": "keep the two newest releases",
     "selection": {"tagStatus": "tagged", "tagPrefixList": ["rel-"],
                   "countType": "imageCountMoreThan", "countNumber": 2},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "keep one untagged image",
     "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
     "action": {"type": "expire"}},
]}


def test_lifecycle_policy_put_get_delete(ecr, new_repo):
    """Put/Get/DeleteLifecyclePolicy round-trip the policy text; a missing policy is LifecyclePolicyNotFoundException; a bad one InvalidParameterException."""
    name = new_repo("lcp")
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=name)
    text = json.dumps(POLICY)
    put = ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=text)
    assert put["repositoryName"] == name and json.loads(put["lifecyclePolicyText"]) == POLICY
    got = ecr.get_lifecycle_policy(repositoryName=name)
    assert json.loads(got["lifecyclePolicyText"]) == POLICY
    assert got["repositoryName"] == name and got["registryId"]
    deleted = ecr.delete_lifecycle_policy(repositoryName=name)
    assert json.loads(deleted["lifecyclePolicyText"]) == POLICY
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=name)
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.delete_lifecycle_policy(repositoryName=name)
    for bad in ["not json", json.dumps({"rules": []}),
                json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged",
                                       "countType": "imageCountMoreThan", "countNumber": 1},
                                       "action": {"type": "expire"}}]}),  # tagged needs a prefix list
                json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any",
                                       "countType": "imageCountMoreThan", "countNumber": 0},
                                       "action": {"type": "expire"}}]})]:
        with pytest.raises(ecr.exceptions.InvalidParameterException):
            # botocore insists on at least 100 characters: pad with JSON whitespace.
            ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=bad.ljust(100))


EXPECT_EXPIRED = ["rel-1", "rel-2", "u1", "u2"]
EXPECT_KEPT = ["rel-3", "rel-4", "u3", "keep-me"]


def push_lifecycle_images(ecr, registry, name) -> dict:
    """Pushes the images the policy judges, oldest first ("uN" untagged), each with a strictly
    later imagePushedAt than the one before even at one-second resolution, so the count
    rules have one right answer. Waits on the clock, not for a fixed time. -> {digest: label}"""
    label_of = {}
    for label in ["u1", "rel-1", "u2", "rel-2", "u3", "rel-3", "rel-4", "keep-me"]:
        img = push_image(registry, name, None if label.startswith("u") else label)
        label_of[img.digest] = label
        pushed = ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": img.digest}])
        ts = pushed["imageDetails"][0]["imagePushedAt"].timestamp()
        wait_for(lambda: time.time() >= math.floor(ts) + 1.01, "the clock to pass the push second",
                 interval_s=0.02)
    return label_of


def test_lifecycle_policy_preview_and_apply(berth_factory, unique_name):
    """A count-based policy expires exactly the right images: the oldest releases beyond 2 and untagged beyond 1, in the preview and when applied."""
    srv = berth_factory()
    ecr, registry = srv.ecr(), srv.registry()
    name = unique_name("lc")
    ecr.create_repository(repositoryName=name)
    label_of = push_lifecycle_images(ecr, registry, name)
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(POLICY))

    ecr.start_lifecycle_policy_preview(repositoryName=name)
    preview = wait_for(
        lambda: (p := ecr.get_lifecycle_policy_preview(repositoryName=name))["status"] != "IN_PROGRESS" and p,
        "the lifecycle preview to complete")
    assert preview["status"] == "COMPLETE", preview
    results = preview["previewResults"]
    assert sorted(label_of[r["imageDigest"]] for r in results) == sorted(EXPECT_EXPIRED)
    for r in results:
        assert r["action"]["type"] == "EXPIRE"
        assert r["appliedRulePriority"] == (1 if label_of[r["imageDigest"]].startswith("rel-") else 2)
    assert preview["summary"]["expiringImageTotalCount"] == len(EXPECT_EXPIRED)
    # A preview changes nothing.
    assert len(ecr.list_images(repositoryName=name)["imageIds"]) == 8

    # Apply: the same data dir under a server that runs lifecycle policies every second.
    srv.stop()
    srv.extra_args = ["--lifecycle-interval", "1"]
    srv.start()
    ecr, registry = srv.ecr(), srv.registry()
    wait_for(lambda: len(ecr.describe_images(repositoryName=name)["imageDetails"]) <= len(EXPECT_KEPT),
             "the lifecycle policy to be applied", deadline_s=60, interval_s=0.2)
    left = ecr.describe_images(repositoryName=name)["imageDetails"]
    assert sorted(label_of[d["imageDigest"]] for d in left) == sorted(EXPECT_KEPT)
    for d, lbl in label_of.items():
        status = registry.head(f"/v2/{name}/manifests/{d}").status_code
        assert status == (404 if lbl in EXPECT_EXPIRED else 200), (lbl, status)


def test_tag_untag_list_tags_for_resource(ecr, new_repo):
    """TagResource adds or overwrites tags, UntagResource removes keys, ListTagsForResource shows the result."""
    name = new_repo("tags")
    arn = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryArn"]
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == []
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "a", "Value": "3"}])
    tags = {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags == {"a": "3", "b": "2"}
    ecr.untag_resource(resourceArn=arn, tagKeys=["a", "not-there"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.tag_resource(resourceArn="arn:aws:s3:::bucket", tags=[{"Key": "a", "Value": "1"}])
