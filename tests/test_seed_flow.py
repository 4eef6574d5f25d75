"""The seed flow, exactly as a user types it: the real aws CLI, docker and skopeo against
berth. Needs the private dockerd (scripts/test-deps.sh installs docker.io)."""

import json
import re
import subprocess

import pytest

pytestmark = pytest.mark.docker


def skopeo(tmp_path, *args, timeout=300):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path),
           "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    p = subprocess.run(["skopeo", "--policy", str(policy), *args], capture_output=True, text=True,
                       env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"skopeo {' '.join(args)} exited {p.returncode}:\n{p.stderr}"
    return p.stdout


def test_seed_flow_aws_cli_docker_skopeo(berth, aws, dockerd, busybox_context, tmp_path):
    """create-repository, docker build/tag/login/push, rmi + pull gives the same image, describe-images shows it, skopeo copies it digest-for-digest."""
    host = berth.host
    repo = aws("ecr", "create-repository", "--repository-name", "hello-world")["repository"]
    assert repo["repositoryUri"] == f"{host}/hello-world"

    dockerd("build", "-t", "hello-world", str(busybox_context))
    dockerd("tag", "hello-world:latest", f"{host}/hello-world:latest")

    # `aws ecr get-login-password | docker login --username AWS --password-stdin HOST`, literally.
    login = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         f'"{aws.bin}" --endpoint-url {berth.url} ecr get-login-password'
         f' | "{dockerd.client}" login --username AWS --password-stdin {host}'],
        env={**aws.env, **dockerd.env}, capture_output=True, text=True, timeout=120)
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout

    push = dockerd("push", f"{host}/hello-world:latest")
    m = re.search(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)", push.stdout)
    assert m, push.stdout
    digest = m.group(1)

    image_id = dockerd("image", "inspect", "-f", "{{.Id}}", f"{host}/hello-world:latest").stdout.strip()
    dockerd("rmi", f"{host}/hello-world:latest", "hello-world:latest")
    assert dockerd("image", "inspect", image_id, check=False).returncode != 0, "image still present"
    pull = dockerd("pull", f"{host}/hello-world:latest")
    assert digest in pull.stdout, pull.stdout
    pulled_id = dockerd("image", "inspect", "-f", "{{.Id}}", f"{host}/hello-world:latest").stdout.strip()
    assert pulled_id == image_id
    digests = dockerd("image", "inspect", "-f", "{{json .RepoDigests}}", f"{host}/hello-world:latest").stdout
    assert f"{host}/hello-world@{digest}" in json.loads(digests)

    images = aws("ecr", "describe-images", "--repository-name", "hello-world")["imageDetails"]
    assert len(images) == 1
    assert images[0]["imageDigest"] == digest
    assert images[0]["imageTags"] == ["latest"]
    busybox_size = (busybox_context / "busybox").stat().st_size
    # The layer is gzip'd busybox: at least a third of it, and not more than it plus slack.
    assert busybox_size // 3 < images[0]["imageSizeInBytes"] < busybox_size + 64 * 1024, images[0]
    assert images[0]["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    listed = aws("ecr", "list-images", "--repository-name", "hello-world")["imageIds"]
    assert listed == [{"imageDigest": digest, "imageTag": "latest"}]

    # skopeo copy to a second repository keeps the digest.
    aws("ecr", "create-repository", "--repository-name", "hello-world-copy")
    pw = aws.text("ecr", "get-login-password").strip()
    creds = f"AWS:{pw}"
    skopeo(tmp_path, "copy", "--src-creds", creds, "--dest-creds", creds,
           "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{host}/hello-world:latest", f"docker://{host}/hello-world-copy:latest")
    for name in ["hello-world", "hello-world-copy"]:
        info = json.loads(skopeo(tmp_path, "inspect", "--creds", creds, "--tls-verify=false",
                                 f"docker://{host}/{name}:latest"))
        assert info["Digest"] == digest, (name, info["Digest"])
    copied = aws("ecr", "describe-images", "--repository-name", "hello-world-copy")["imageDetails"]
    assert [i["imageDigest"] for i in copied] == [digest]


def test_docker_push_to_missing_repository_is_refused(berth, aws, dockerd, busybox_context, unique_name):
    """As on ECR, docker push to a repository that was never created fails with 'name unknown'."""
    host = berth.host
    name = unique_name("never")
    dockerd("build", "-t", name, str(busybox_context))
    dockerd("tag", name, f"{host}/{name}:latest")
    pw = aws.text("ecr", "get-login-password").strip()
    dockerd("login", "--username", "AWS", "--password-stdin", host, input=pw)
    p = dockerd("push", f"{host}/{name}:latest", check=False)
    assert p.returncode != 0, p.stdout
    assert "name unknown" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr


def test_docker_push_to_immutable_tag_is_refused(berth, aws, ecr, dockerd, busybox_context, tmp_path, unique_name):
    """docker push of a different image over an IMMUTABLE tag fails with the registry's tag-invalid error."""
    host = berth.host
    name = unique_name("immut")
    aws("ecr", "create-repository", "--repository-name", name, "--image-tag-mutability", "IMMUTABLE")
    pw = aws.text("ecr", "get-login-password").strip()
    dockerd("login", "--username", "AWS", "--password-stdin", host, input=pw)
    dockerd("build", "-t", f"{host}/{name}:v1", str(busybox_context))
    dockerd("push", f"{host}/{name}:v1")
    (busybox_context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"changed\"]\n")
    dockerd("build", "-t", f"{host}/{name}:v1", str(busybox_context))
    p = dockerd("push", f"{host}/{name}:v1", check=False)
    assert p.returncode != 0, p.stdout
    assert "tag invalid" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    assert len(ecr.list_images(repositoryName=name)["imageIds"]) == 1
