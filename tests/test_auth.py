"""Authentication: SigV4 on the AWS API (raw requests signed with botocore's own signer,
so each test changes exactly one thing) and Basic/Bearer on the registry."""

import base64

import botocore.exceptions
import pytest
import requests

from support import (
    HTTP_TIMEOUT_S, ECR_TARGET, assert_aws_error, assert_oci_error, send, signed_request)

DESCRIBE = '{"maxResults": 1}'


def test_signed_raw_request_is_accepted(berth, creds):
    """The raw signing helper is a valid client: the negative tests below differ from it in one thing only."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds))
    assert r.status_code == 200, r.text
    assert "repositories" in r.json()
    assert "json" in r.headers.get("Content-Type", "")


def test_no_authorization_header_is_missing_authentication_token(berth):
    """An unsigned POST / is refused with 403 MissingAuthenticationTokenException."""
    r = requests.post(berth.url + "/", data=DESCRIBE, timeout=HTTP_TIMEOUT_S, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"{ECR_TARGET}.DescribeRepositories"})
    assert_aws_error(r, 403, "MissingAuthenticationTokenException")


def test_unknown_access_key_is_unrecognized_client(berth, creds):
    """A well-signed request with an access key berth never issued is UnrecognizedClientException (raw and via boto3)."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE,
                            "AKIAUNKNOWNUNKNOWN00", creds[1]))
    assert_aws_error(r, 403, "UnrecognizedClientException")

    import boto3
    c = boto3.client("ecr", endpoint_url=berth.url, region_name="us-east-1",
                     aws_access_key_id="AKIAUNKNOWNUNKNOWN00", aws_secret_access_key="x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.describe_repositories()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_secret_is_invalid_signature(berth, creds):
    """The right access key with the wrong secret is InvalidSignatureException."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE, creds[0], creds[1] + "x"))
    assert_aws_error(r, 403, "InvalidSignatureException")


def test_body_tampered_after_signing_is_invalid_signature(berth, creds, unique_name):
    """Changing the body after signing (the payload hash is signed) is refused and has no effect."""
    name = unique_name("tamper")
    req = signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds)
    r = send(req, data=('{"repositoryName": "%s"}' % name).encode())
    assert_aws_error(r, 403, "InvalidSignatureException")
    # Same length as the signed body, so only the hash can tell them apart.
    req = signed_request(berth.url, "CreateRepository", '{"repositoryName": "%s"}' % name, *creds)
    evil = ('{"repositoryName": "%s"}' % name.replace("tamper", "TAMPER")).encode()
    r = send(req, data=evil)
    assert_aws_error(r, 403, "InvalidSignatureException")


def test_header_tampered_after_signing_is_invalid_signature(berth, creds):
    """X-Amz-Target is a signed header: swapping the operation after signing is refused."""
    req = signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds)
    req.headers["X-Amz-Target"] = f"{ECR_TARGET}.ListImages"
    r = send(req)
    assert_aws_error(r, 403, "InvalidSignatureException")


@pytest.mark.parametrize("skew_s,phrase", [(-20 * 60, "Signature expired"),
                                           (+20 * 60, "not yet current")])
def test_clock_skew_of_20_minutes_is_refused(berth, creds, skew_s, phrase):
    """A correctly signed request whose X-Amz-Date is 20 minutes off is InvalidSignatureException naming the skew."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds, skew_s=skew_s))
    body = assert_aws_error(r, 403, "InvalidSignatureException")
    assert phrase.lower() in body.get("message", body.get("Message", "")).lower(), body


def test_small_clock_skew_is_accepted(berth, creds):
    """Four minutes of skew is within the 15-minute window AWS allows."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds, skew_s=-240))
    assert r.status_code == 200, r.text


def test_credential_scoped_to_another_service_is_refused(berth, creds):
    """A signature scoped to service 's3' is not valid for ECR."""
    r = send(signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds, service="s3"))
    assert_aws_error(r, 403, "InvalidSignatureException")


def test_malformed_authorization_header_is_incomplete_signature(berth, creds):
    """An Authorization header that is not a SigV4 header is refused as IncompleteSignatureException."""
    req = signed_request(berth.url, "DescribeRepositories", DESCRIBE, *creds)
    req.headers["Authorization"] = "AWS4-HMAC-SHA256 garbage"
    r = send(req)
    assert_aws_error(r, 403, "IncompleteSignatureException")


def test_registry_anonymous_is_401_with_basic_challenge(anon, unique_name):
    """/v2/ without credentials is 401, a Basic challenge and the spec's UNAUTHORIZED body, on every route."""
    r = anon.get("/v2/")
    www = r.headers.get("WWW-Authenticate", "")
    assert www.startswith("Basic realm="), r.headers
    assert_oci_error(r, 401, "UNAUTHORIZED")
    for method, path in [("GET", f"/v2/{unique_name('x')}/tags/list"),
                         ("GET", "/v2/_catalog"),
                         ("POST", f"/v2/{unique_name('x')}/blobs/uploads/"),
                         ("GET", f"/v2/{unique_name('x')}/manifests/latest")]:
        r = anon.request(method, path)
        assert_oci_error(r, 401, "UNAUTHORIZED")
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic realm=")


def test_registry_wrong_password_is_401(anon, registry_password):
    """Basic auth with a wrong password, or a user other than AWS, is 401."""
    for user, pw in [("AWS", registry_password + "x"), ("AWS", "x"), ("admin", registry_password)]:
        r = anon.get("/v2/", auth=(user, pw))
        assert_oci_error(r, 401, "UNAUTHORIZED")


def test_registry_basic_and_bearer_work(anon, registry_password):
    """The GetAuthorizationToken password works as Basic AWS:<pw> and as a Bearer token; a wrong bearer does not."""
    r = anon.get("/v2/", auth=("AWS", registry_password))
    assert r.status_code == 200, r.text
    r = anon.get("/v2/", headers={"Authorization": f"Bearer {registry_password}"})
    assert r.status_code == 200, r.text
    r = anon.get("/v2/", headers={"Authorization": f"Bearer {registry_password}x"})
    assert_oci_error(r, 401, "UNAUTHORIZED")
    r = anon.get("/v2/", headers={"Authorization": "Basic " + base64.b64encode(b"garbage").decode()})
    assert_oci_error(r, 401, "UNAUTHORIZED")


def test_authorization_token_shape(berth, ecr):
    """GetAuthorizationToken returns base64("AWS:"+password), the http proxyEndpoint and a future expiry."""
    import datetime

    data = ecr.get_authorization_token()["authorizationData"]
    assert len(data) == 1
    user, _, pw = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and pw
    assert data[0]["proxyEndpoint"] == berth.url
    assert data[0]["expiresAt"] > datetime.datetime.now(datetime.timezone.utc)
    r = requests.get(berth.url + "/v2/", auth=("AWS", pw), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
