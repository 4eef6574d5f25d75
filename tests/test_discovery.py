"""Cloud Map and its DNS: boto3's `servicediscovery` client in both protocols of the
model — Smithy RPC v2 CBOR and AWS JSON 1.1 — plus hand-signed JSON calls, against
`berth server --dns`, and `dig` asking the server's DNS port for what was registered.

The model lists both protocols; botocore picks by its own priority order, which in
botocore 1.44 puts `json` before `smithy-rpc-v2-cbor`, so the CBOR client is made with
that order reversed for the time the client is created (and the server's log is
checked to show the CBOR route was taken).

DiscoverInstances carries the host prefix `data-` in botocore's model; with an IP
endpoint the client must be made with `Config(inject_host_prefix=False)`."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from unittest import mock

import botocore.model
from botocore.config import Config
from botocore.exceptions import ClientError

import support
from support import REGION, free_listen_port, signed_request, send, unique

TARGET = "Route53AutoNaming_v20170314"


@pytest.fixture(scope="module")
def server(berth_factory):
    port = free_listen_port()
    srv = berth_factory(["--no-agent", "--dns", f"127.0.0.1:{port}"])
    srv.dns_port = port
    return srv


@pytest.fixture(scope="module", params=["cbor", "json"])
def sd(server, request):
    import boto3

    ak, sk = server.credentials()
    order = ("smithy-rpc-v2-cbor", "json") if request.param == "cbor" else ("json",)
    with mock.patch.object(botocore.model, "PRIORITY_ORDERED_SUPPORTED_PROTOCOLS", order):
        client = boto3.client(
            "servicediscovery", endpoint_url=server.url, region_name=REGION,
            aws_access_key_id=ak, aws_secret_access_key=sk,
            config=Config(inject_host_prefix=False,
                          retries={"max_attempts": 1, "mode": "standard"}),
        )
    assert client.meta.service_model.resolved_protocol == order[0]
    yield client
    if request.param == "cbor":
        log = server.log_path.read_text(errors="replace")
        assert f"path=/service/{TARGET}/operation/DiscoverInstances" in log


def dig(server, name: str, qtype: str = "A", *extra: str) -> tuple[str, list[str]]:
    """(status, short answers) of `dig @127.0.0.1 -p PORT name qtype`."""
    if shutil.which("dig") is None:
        pytest.fail("dig is missing: run scripts/test-deps.sh (installs dnsutils)")
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.dns_port), name, qtype, "+time=2", "+tries=1",
         "+norecurse", *extra],
        capture_output=True, text=True, timeout=30, check=True).stdout
    status = out.split("status: ", 1)[1].split(",", 1)[0] if "status: " in out else "?"
    short = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.dns_port), name, qtype, "+short", "+time=2",
         "+tries=1", *extra],
        capture_output=True, text=True, timeout=30, check=True).stdout.split("\n")
    return status, sorted(x for x in short if x)


def make_service(sd, ns_name: str, svc_name: str, **kw) -> tuple[str, str]:
    op = sd.create_private_dns_namespace(Name=ns_name, Vpc="vpc-berth")["OperationId"]
    got = sd.get_operation(OperationId=op)["Operation"]
    assert got["Status"] == "SUCCESS"
    ns_id = got["Targets"]["NAMESPACE"]
    svc = sd.create_service(
        Name=svc_name, NamespaceId=ns_id,
        DnsConfig={"RoutingPolicy": "MULTIVALUE",
                   "DnsRecords": [{"Type": "A", "TTL": 10}, {"Type": "SRV", "TTL": 10}]},
        **kw)["Service"]
    return ns_id, svc["Id"]


def register(sd, svc: str, iid: str, ip: str, port: int, **attrs):
    sd.register_instance(ServiceId=svc, InstanceId=iid, Attributes={
        "AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": str(port), **attrs})


def test_namespace_service_instances_dns(server, sd):
    """Register → DiscoverInstances and dig (A and SRV, TTL 10) return exactly the
    registered instances; deregister → gone from both; unknown names are NXDOMAIN with
    the SOA, names outside every namespace REFUSED."""
    ns = unique("forum") + ".local"
    ns_id, svc = make_service(sd, ns, "users")
    got = sd.get_namespace(Id=ns_id)["Namespace"]
    assert got["Type"] == "DNS_PRIVATE" and got["Name"] == ns
    assert got["Arn"].startswith("arn:aws:servicediscovery:us-east-1:") and ":namespace/ns-" in got["Arn"]
    assert got["CreateDate"].year >= 2024  # a tag-1 timestamp, parsed by botocore
    register(sd, svc, "t1", "10.9.0.1", 8001)
    register(sd, svc, "t2", "10.9.0.2", 8002)

    found = sd.discover_instances(NamespaceName=ns, ServiceName="users")["Instances"]
    assert sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in found) == ["10.9.0.1", "10.9.0.2"]

    assert dig(server, f"users.{ns}") == ("NOERROR", ["10.9.0.1", "10.9.0.2"])
    status, srv = dig(server, f"users.{ns}", "SRV")
    assert status == "NOERROR"
    assert srv == [f"1 1 8001 t1.users.{ns}.", f"1 1 8002 t2.users.{ns}."]
    assert dig(server, f"t1.users.{ns}") == ("NOERROR", ["10.9.0.1"])
    full = subprocess.run(["dig", "@127.0.0.1", "-p", str(server.dns_port), f"users.{ns}", "A",
                           "+noall", "+answer"], capture_output=True, text=True, check=True).stdout
    assert all(line.split()[1] == "10" for line in full.splitlines() if line.strip()), full

    sd.deregister_instance(ServiceId=svc, InstanceId="t1")
    assert dig(server, f"users.{ns}") == ("NOERROR", ["10.9.0.2"])
    assert [i["InstanceId"] for i in
            sd.discover_instances(NamespaceName=ns, ServiceName="users")["Instances"]] == ["t2"]

    status, _ = dig(server, f"nope.{ns}")
    assert status == "NXDOMAIN"
    soa = subprocess.run(["dig", "@127.0.0.1", "-p", str(server.dns_port), f"nope.{ns}", "A",
                          "+noall", "+authority"], capture_output=True, text=True, check=True).stdout
    assert "SOA" in soa, soa
    assert dig(server, "example.com")[0] == "REFUSED"
    assert dig(server, "example.com", "A", "+tcp")[0] == "REFUSED"
    assert dig(server, f"users.{ns}", "A", "+tcp") == ("NOERROR", ["10.9.0.2"])


def test_custom_health(server, sd):
    """An instance marked UNHEALTHY leaves the A answers and DiscoverInstances' default
    filter, and comes back when HEALTHY again."""
    ns = unique("health") + ".local"
    _, svc = make_service(sd, ns, "web", HealthCheckCustomConfig={"FailureThreshold": 1})
    register(sd, svc, "a", "10.9.1.1", 80)
    register(sd, svc, "b", "10.9.1.2", 80)
    sd.update_instance_custom_health_status(ServiceId=svc, InstanceId="b", Status="UNHEALTHY")
    assert dig(server, f"web.{ns}") == ("NOERROR", ["10.9.1.1"])
    assert sd.get_instances_health_status(ServiceId=svc)["Status"] == {"a": "HEALTHY", "b": "UNHEALTHY"}
    healthy = sd.discover_instances(NamespaceName=ns, ServiceName="web")["Instances"]
    assert [i["InstanceId"] for i in healthy] == ["a"]
    everyone = sd.discover_instances(NamespaceName=ns, ServiceName="web", HealthStatus="ALL")
    assert len(everyone["Instances"]) == 2
    sd.update_instance_custom_health_status(ServiceId=svc, InstanceId="b", Status="HEALTHY")
    assert dig(server, f"web.{ns}") == ("NOERROR", ["10.9.1.1", "10.9.1.2"])


def test_errors(server, sd):
    """Bad input and missing resources: Cloud Map's error codes and HTTP statuses."""
    ns = unique("err") + ".local"
    ns_id, svc = make_service(sd, ns, "api")
    register(sd, svc, "x", "10.9.2.1", 80)
    cases = [
        (lambda: sd.get_namespace(Id="ns-doesnotexist0000"), "NamespaceNotFound", 404),
        (lambda: sd.get_service(Id="srv-doesnotexist000"), "ServiceNotFound", 404),
        (lambda: sd.get_instance(ServiceId=svc, InstanceId="nope"), "InstanceNotFound", 404),
        (lambda: sd.get_operation(OperationId="nope"), "OperationNotFound", 404),
        (lambda: sd.delete_namespace(Id=ns_id), "ResourceInUse", 409),
        (lambda: sd.delete_service(Id=svc), "ResourceInUse", 409),
        (lambda: sd.create_private_dns_namespace(Name=ns, Vpc="v"), "NamespaceAlreadyExists", 400),
        (lambda: sd.create_service(Name="api", NamespaceId=ns_id), "ServiceAlreadyExists", 400),
        (lambda: sd.create_public_dns_namespace(Name="example.com"), "InvalidInput", 400),
        (lambda: register(sd, svc, "y", "999.1.1.1", 80), "InvalidInput", 400),
        (lambda: sd.register_instance(ServiceId=svc, InstanceId="z",
                                      Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"}), "InvalidInput", 400),
        (lambda: sd.update_instance_custom_health_status(ServiceId=svc, InstanceId="x",
                                                         Status="HEALTHY"), "CustomHealthNotFound", 404),
    ]
    for call, code, status in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == code
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    sd.deregister_instance(ServiceId=svc, InstanceId="x")
    sd.delete_service(Id=svc)
    sd.delete_namespace(Id=ns_id)
    assert dig(server, f"api.{ns}")[0] == "REFUSED"


def test_lists_and_tags(server, sd):
    """List filters and tags over CBOR."""
    ns = unique("list") + ".local"
    ns_id, svc = make_service(sd, ns, "svc")
    names = [n["Name"] for n in sd.list_namespaces(
        Filters=[{"Name": "NAME", "Values": [ns], "Condition": "EQ"}])["Namespaces"]]
    assert names == [ns]
    services = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id]}])["Services"]
    assert [s["Id"] for s in services] == [svc]
    arn = sd.get_service(Id=svc)["Service"]["Arn"]
    sd.tag_resource(ResourceARN=arn, Tags=[{"Key": "team", "Value": "forum"}])
    assert sd.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "forum"}]
    sd.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert sd.list_tags_for_resource(ResourceARN=arn)["Tags"] == []


def test_json_protocol(server):
    """The same API over AWS JSON 1.1 (X-Amz-Target), hand-signed with botocore's SigV4."""
    ak, sk = server.credentials()
    ns = unique("json") + ".local"

    def call(op, body):
        r = send(signed_request(server.url, op, json.dumps(body), ak, sk,
                                service="servicediscovery", target=f"{TARGET}.{op}"))
        return r.status_code, r.json()

    status, out = call("CreatePrivateDnsNamespace", {"Name": ns, "Vpc": "v"})
    assert status == 200 and "OperationId" in out
    status, out = call("ListNamespaces", {"Filters": [{"Name": "NAME", "Values": [ns]}]})
    assert status == 200 and isinstance(out["Namespaces"][0]["CreateDate"], float)
    status, out = call("GetNamespace", {"Id": "ns-nope"})
    assert (status, out["__type"]) == (404, "NamespaceNotFound")
    status, out = call("ListNamespaces", {})
    assert status == 200
    # Scoped to the wrong service: refused as for the other APIs.
    r = send(signed_request(server.url, "ListNamespaces", "{}", ak, sk, service="ecs",
                            target=f"{TARGET}.ListNamespaces"))
    assert r.status_code == 403
