"""The ELBv2 API through boto3 (the Query protocol: form bodies, XML answers): load
balancers, target groups, listeners, rules, targets and their health without a data
plane, attributes, tags, deletes, and ELB's error codes. The server runs with
`--no-agent`: nothing here starts a container or binds a listener port."""

import itertools
import subprocess

import pytest
from botocore.exceptions import ClientError

from support import unique

# Listener ports: one per test stack (ports are unique across all load balancers).
PORTS = itertools.count(18001)


@pytest.fixture(scope="module")
def elb_berth(berth_bin, berth_factory):
    usage = subprocess.run([str(berth_bin), "server", "--help"], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
    return berth_factory(extra_args=["--no-agent"] if "--no-agent" in usage else [])


@pytest.fixture(scope="module")
def elb(elb_berth):
    """boto3 elbv2 client pointed at that server."""
    return elb_berth._client("elbv2")


def code_of(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def expect(code: str, fn, **kwargs):
    with pytest.raises(ClientError) as e:
        fn(**kwargs)
    assert code_of(e) == code, e.value.response
    return e.value.response


def fixed(status="404", body="no route"):
    return [{"Type": "fixed-response",
             "FixedResponseConfig": {"StatusCode": status, "ContentType": "text/plain",
                                     "MessageBody": body}}]


def path_rule(elb, listener, priority, path, tg):
    return elb.create_rule(
        ListenerArn=listener, Priority=priority,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [path]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": tg}])["Rules"][0]


@pytest.fixture
def stack(elb):
    """A load balancer, two ip target groups and an HTTP listener with a fixed-response
    default on a port no other test uses; deleted afterwards."""
    name = unique("lb")[:32]
    lb = elb.create_load_balancer(Name=name, Subnets=["subnet-a", "subnet-b"],
                                  Scheme="internal")["LoadBalancers"][0]
    tgs = [elb.create_target_group(Name=unique(n)[:32], Protocol="HTTP", Port=8080,
                                   TargetType="ip", HealthCheckPath="/health")["TargetGroups"][0]
           for n in ("users", "topics")]
    port = next(PORTS)
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP",
                                   Port=port, DefaultActions=fixed())["Listeners"][0]
    yield {"lb": lb, "tgs": tgs, "listener": listener, "port": port}
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    for tg in tgs:
        elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


def test_load_balancer_shape(elb, stack):
    """CreateLoadBalancer answers the model's shape: ARN, DNS name, active, zones."""
    lb = stack["lb"]
    name = lb["LoadBalancerName"]
    assert lb["LoadBalancerArn"].startswith(
        "arn:aws:elasticloadbalancing:us-east-1:") and f":loadbalancer/app/{name}/" in lb["LoadBalancerArn"]
    assert lb["DNSName"].startswith(f"internal-{name}-") and lb["DNSName"].endswith(".us-east-1.elb.localhost")
    assert lb["State"]["Code"] == "active"
    assert lb["Type"] == "application" and lb["Scheme"] == "internal"
    assert [z["SubnetId"] for z in lb["AvailabilityZones"]] == ["subnet-a", "subnet-b"]
    assert lb["CreatedTime"].year >= 2024
    got = elb.describe_load_balancers(Names=[name])["LoadBalancers"]
    assert [g["LoadBalancerArn"] for g in got] == [lb["LoadBalancerArn"]]
    got = elb.describe_load_balancers(LoadBalancerArns=[lb["LoadBalancerArn"]])["LoadBalancers"]
    assert got[0]["DNSName"] == lb["DNSName"]


def test_routing_setup_described(elb, stack):
    """Path rules to two target groups: rules in priority order with the default last,
    the listener's default action, target groups naming the load balancer."""
    users, topics = (t["TargetGroupArn"] for t in stack["tgs"])
    listener = stack["listener"]["ListenerArn"]
    path_rule(elb, listener, 20, "/topics*", topics)
    r = path_rule(elb, listener, 10, "/users*", users)
    assert r["Priority"] == "10" and r["IsDefault"] is False
    assert r["Conditions"][0]["Values"] == ["/users*"]
    assert r["Actions"][0]["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"] == users
    rules = elb.describe_rules(ListenerArn=listener)["Rules"]
    assert [x["Priority"] for x in rules] == ["10", "20", "default"]
    assert rules[-1]["IsDefault"] is True
    assert rules[-1]["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    ls = elb.describe_listeners(LoadBalancerArn=stack["lb"]["LoadBalancerArn"])["Listeners"]
    assert [(x["Port"], x["Protocol"]) for x in ls] == [(stack["port"], "HTTP")]
    tgs = elb.describe_target_groups(LoadBalancerArn=stack["lb"]["LoadBalancerArn"])["TargetGroups"]
    assert sorted(t["TargetGroupArn"] for t in tgs) == sorted([users, topics])
    for t in tgs:
        assert t["LoadBalancerArns"] == [stack["lb"]["LoadBalancerArn"]]
        assert t["HealthCheckPath"] == "/health" and t["Matcher"] == {"HttpCode": "200"}
        assert t["HealthCheckIntervalSeconds"] == 30 and t["HealthyThresholdCount"] == 5
    # A weighted forward as the default action.
    elb.modify_listener(ListenerArn=listener, DefaultActions=[{
        "Type": "forward", "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": users, "Weight": 3},
                             {"TargetGroupArn": topics, "Weight": 1}],
            "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 60}}}])
    d = elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"][0]
    assert [g["Weight"] for g in d["ForwardConfig"]["TargetGroups"]] == [3, 1]
    assert d["ForwardConfig"]["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 60}


def test_attributes(elb, stack):
    """Load balancer and target group attributes: ELB's defaults, changes kept,
    bad values refused."""
    arn = stack["lb"]["LoadBalancerArn"]
    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]}
    assert attrs["idle_timeout.timeout_seconds"] == "60"
    elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[
        {"Key": "idle_timeout.timeout_seconds", "Value": "120"}])
    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]}
    assert attrs["idle_timeout.timeout_seconds"] == "120"
    expect("InvalidConfigurationRequest", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
           Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "0"}])
    expect("ValidationError", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
           Attributes=[{"Key": "no.such.attribute", "Value": "1"}])
    tg = stack["tgs"][0]["TargetGroupArn"]
    out = elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"},
        {"Key": "stickiness.enabled", "Value": "true"}])["Attributes"]
    got = {a["Key"]: a["Value"] for a in out}
    assert got["deregistration_delay.timeout_seconds"] == "30" and got["stickiness.type"] == "lb_cookie"
    # Deletion protection refuses DeleteLoadBalancer until it is turned off.
    elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[
        {"Key": "deletion_protection.enabled", "Value": "true"}])
    expect("OperationNotPermitted", elb.delete_load_balancer, LoadBalancerArn=arn)
    elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[
        {"Key": "deletion_protection.enabled", "Value": "false"}])
    # Health check changes: validated, kept.
    t = elb.modify_target_group(TargetGroupArn=tg, HealthCheckIntervalSeconds=10,
                                Matcher={"HttpCode": "200-299"})["TargetGroups"][0]
    assert t["HealthCheckIntervalSeconds"] == 10 and t["Matcher"]["HttpCode"] == "200-299"
    expect("InvalidConfigurationRequest", elb.modify_target_group, TargetGroupArn=tg,
           HealthCheckTimeoutSeconds=20)


def states(elb, tg):
    return {(d["Target"]["Id"], d["Target"]["Port"]): (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]}


def test_targets_and_health(elb, stack):
    """Unused before a rule routes to the group, initial after (registration in progress,
    then the data plane's first checks: these addresses never answer, and the group's
    30 s interval keeps them initial for this test), draining after deregistration;
    not-registered targets asked about are reported."""
    users = stack["tgs"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=users, Targets=[{"Id": "10.1.0.5"}, {"Id": "10.1.0.6", "Port": 9000}])
    assert states(elb, users) == {("10.1.0.5", 8080): ("unused", "Target.NotInUse"),
                                  ("10.1.0.6", 9000): ("unused", "Target.NotInUse")}
    path_rule(elb, stack["listener"]["ListenerArn"], 5, "/users*", users)
    assert states(elb, users)[("10.1.0.5", 8080)] in {("initial", "Elb.RegistrationInProgress"),
                                                      ("initial", "Elb.InitialHealthChecking")}
    elb.deregister_targets(TargetGroupArn=users, Targets=[{"Id": "10.1.0.5"}])
    s = states(elb, users)
    assert s[("10.1.0.5", 8080)] == ("draining", "Target.DeregistrationInProgress")
    assert s[("10.1.0.6", 9000)][0] == "initial"
    asked = elb.describe_target_health(TargetGroupArn=users, Targets=[{"Id": "10.1.0.99"}])
    h = asked["TargetHealthDescriptions"][0]
    assert h["TargetHealth"]["Reason"] == "Target.NotRegistered" and h["HealthCheckPort"] == "8080"
    # Registering again ends the draining.
    elb.register_targets(TargetGroupArn=users, Targets=[{"Id": "10.1.0.5"}])
    assert states(elb, users)[("10.1.0.5", 8080)][0] == "initial"
    expect("InvalidTarget", elb.register_targets, TargetGroupArn=users, Targets=[{"Id": "i-0abc"}])
    expect("InvalidTarget", elb.register_targets, TargetGroupArn=users, Targets=[{"Id": "fe80::1"}])
    expect("InvalidTarget", elb.deregister_targets, TargetGroupArn=users, Targets=[{"Id": "10.9.9.9"}])
    expect("ValidationError", elb.register_targets, TargetGroupArn=users, Targets=[{"Id": "10.1.0.7", "Port": 70000}])


def test_set_rule_priorities_and_modify(elb, stack):
    """SetRulePriorities swaps two rules in one call; ModifyRule changes conditions;
    the default rule can be neither moved nor deleted."""
    users, topics = (t["TargetGroupArn"] for t in stack["tgs"])
    listener = stack["listener"]["ListenerArn"]
    a = path_rule(elb, listener, 10, "/a*", users)["RuleArn"]
    b = path_rule(elb, listener, 20, "/b*", topics)["RuleArn"]
    out = elb.set_rule_priorities(RulePriorities=[{"RuleArn": a, "Priority": 20},
                                                  {"RuleArn": b, "Priority": 10}])["Rules"]
    assert {r["RuleArn"]: r["Priority"] for r in out} == {a: "20", b: "10"}
    assert [r["RuleArn"] for r in elb.describe_rules(ListenerArn=listener)["Rules"][:2]] == [b, a]
    expect("PriorityInUse", elb.set_rule_priorities, RulePriorities=[{"RuleArn": a, "Priority": 10}])
    m = elb.modify_rule(RuleArn=a, Conditions=[
        {"Field": "host-header", "HostHeaderConfig": {"Values": ["api.example.com"]}},
        {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["prod"]}},
        {"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}]}},
        {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET"]}},
        {"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/8"]}},
    ])["Rules"][0]
    assert [c["Field"] for c in m["Conditions"]] == [
        "host-header", "http-header", "query-string", "http-request-method", "source-ip"]
    default = elb.describe_rules(ListenerArn=listener)["Rules"][-1]["RuleArn"]
    expect("OperationNotPermitted", elb.set_rule_priorities, RulePriorities=[{"RuleArn": default, "Priority": 1}])
    expect("OperationNotPermitted", elb.delete_rule, RuleArn=default)
    elb.delete_rule(RuleArn=a)
    expect("RuleNotFound", elb.describe_rules, RuleArns=[a])


def test_tags(elb, stack):
    """AddTags/RemoveTags/DescribeTags on load balancers, target groups, listeners."""
    arns = [stack["lb"]["LoadBalancerArn"], stack["tgs"][0]["TargetGroupArn"],
            stack["listener"]["ListenerArn"]]
    elb.add_tags(ResourceArns=arns, Tags=[{"Key": "team", "Value": "forum"}, {"Key": "env", "Value": "dev"}])
    elb.remove_tags(ResourceArns=arns[:1], TagKeys=["env"])
    got = {d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]}
           for d in elb.describe_tags(ResourceArns=arns)["TagDescriptions"]}
    assert got[arns[0]] == {"team": "forum"}
    assert got[arns[1]] == {"team": "forum", "env": "dev"}
    expect("DuplicateTagKeys", elb.add_tags, ResourceArns=arns[:1],
           Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])
    ghost = arns[0].rsplit("/", 1)[0] + "/0000000000000000"
    expect("LoadBalancerNotFound", elb.describe_tags, ResourceArns=[ghost])


def test_errors(elb, stack):
    """Every refusal with ELB's error code."""
    lb = stack["lb"]
    users = stack["tgs"][0]["TargetGroupArn"]
    listener = stack["listener"]["ListenerArn"]
    ghost_lb = lb["LoadBalancerArn"].rsplit("/", 1)[0] + "/0000000000000000"
    expect("LoadBalancerNotFound", elb.describe_load_balancers, LoadBalancerArns=[ghost_lb])
    expect("LoadBalancerNotFound", elb.describe_load_balancers, Names=["no-such-lb"])
    expect("ValidationError", elb.describe_load_balancers, LoadBalancerArns=["not-an-arn"])
    expect("TargetGroupNotFound", elb.describe_target_groups, TargetGroupArns=[users.rsplit("/", 1)[0] + "/00"])
    expect("ListenerNotFound", elb.describe_listeners, ListenerArns=[listener.rsplit("/", 1)[0] + "/00"])
    expect("DuplicateLoadBalancerName", elb.create_load_balancer, Name=lb["LoadBalancerName"],
           Scheme="internet-facing")
    expect("DuplicateTargetGroupName", elb.create_target_group, Name=stack["tgs"][0]["TargetGroupName"],
           Protocol="HTTP", Port=9999, TargetType="ip")
    expect("ValidationError", elb.create_load_balancer, Name="-bad-")
    expect("InvalidConfigurationRequest", elb.create_load_balancer, Name=unique("nlb")[:32], Type="network")
    # Ports: out of range, taken by any load balancer, and protocols berth does not serve.
    args = dict(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", DefaultActions=fixed())
    expect("ValidationError", elb.create_listener, Port=70000, **args)
    path_rule(elb, listener, 7, "/x*", users)  # users now serves this load balancer
    other = elb.create_load_balancer(Name=unique("other")[:32])["LoadBalancers"][0]["LoadBalancerArn"]
    try:
        r = expect("DuplicateListener", elb.create_listener, LoadBalancerArn=other, Protocol="HTTP",
                   Port=stack["port"], DefaultActions=fixed())
        assert listener in r["Error"]["Message"]
        expect("TargetGroupAssociationLimit", elb.create_listener, LoadBalancerArn=other, Protocol="HTTP",
               Port=stack["port"] + 500, DefaultActions=[{"Type": "forward", "TargetGroupArn": users}])
    finally:
        elb.delete_load_balancer(LoadBalancerArn=other)
    expect("CertificateNotFound", elb.create_listener, Port=443, **{**args, "Protocol": "HTTPS"})
    expect("UnsupportedProtocol", elb.create_listener, Port=444, **{**args, "Protocol": "TCP"})
    # Rules: conflicting priorities, unknown fields, too many values, bad actions.
    expect("PriorityInUse", path_rule, elb=elb, listener=listener, priority=7, path="/y*", tg=users)
    cond = lambda c: dict(ListenerArn=listener, Priority=8, Conditions=c,
                          Actions=[{"Type": "forward", "TargetGroupArn": users}])
    expect("ValidationError", elb.create_rule, **cond([{"Field": "cookie", "Values": ["x"]}]))
    expect("ValidationError", elb.create_rule, **cond([
        {"Field": "path-pattern", "Values": ["/1", "/2", "/3"]},
        {"Field": "host-header", "Values": ["a.example", "b.example", "c.example"]}]))
    expect("ValidationError", elb.create_rule, **cond([{"Field": "path-pattern", "Values": ["/a b"]}]))
    expect("TargetGroupNotFound", elb.create_rule, **{**cond([{"Field": "path-pattern", "Values": ["/z"]}]),
                                                      "Actions": [{"Type": "forward", "TargetGroupArn": users + "0"}]})
    expect("ValidationError", elb.create_rule, **{**cond([{"Field": "path-pattern", "Values": ["/z"]}]),
                                                  "Actions": fixed(status="302")})
    expect("ResourceInUse", elb.delete_target_group, TargetGroupArn=users)
    expect("ListenerNotFound", elb.delete_listener, ListenerArn=listener.rsplit("/", 1)[0] + "/00")
    # Deleting what does not exist succeeds for load balancers and target groups (as ELB).
    elb.delete_load_balancer(LoadBalancerArn=ghost_lb)


def test_deletes(elb):
    """Deleting a load balancer takes its listeners and rules; the target group is
    then free to delete."""
    lb = elb.create_load_balancer(Name=unique("del")[:32])["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name=unique("del")[:32], Protocol="HTTP", Port=80, TargetType="ip")[
        "TargetGroups"][0]["TargetGroupArn"]
    listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=18999,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])["Listeners"][0]["ListenerArn"]
    rule = path_rule(elb, listener, 1, "/a", tg)["RuleArn"]
    expect("ResourceInUse", elb.delete_target_group, TargetGroupArn=tg)
    elb.delete_load_balancer(LoadBalancerArn=lb)
    expect("ListenerNotFound", elb.describe_listeners, ListenerArns=[listener])
    expect("RuleNotFound", elb.describe_rules, RuleArns=[rule])
    elb.delete_target_group(TargetGroupArn=tg)
    expect("TargetGroupNotFound", elb.describe_target_groups, TargetGroupArns=[tg])
    # The port is free again.
    lb2 = elb.create_load_balancer(Name=unique("del2")[:32])["LoadBalancers"][0]["LoadBalancerArn"]
    elb.create_listener(LoadBalancerArn=lb2, Protocol="HTTP", Port=18999, DefaultActions=fixed())
    elb.delete_load_balancer(LoadBalancerArn=lb2)


def test_unsigned_and_wrong_scope(elb_berth):
    """Query requests are authenticated like every AWS call; errors come back as ELB's
    XML error document."""
    import requests
    r = requests.post(elb_berth.url + "/", data="Action=DescribeLoadBalancers&Version=2015-12-01",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 403
    assert "<ErrorResponse" in r.text and "<Code>MissingAuthenticationTokenException</Code>" in r.text
    ecs_scoped = elb_berth._client("ecs")
    # A form body signed for another service is refused with the scope error.
    from botocore.awsrequest import AWSRequest
    from botocore.auth import SigV4Auth
    req = AWSRequest(method="POST", url=elb_berth.url + "/",
                     data="Action=DescribeLoadBalancers&Version=2015-12-01",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(ecs_scoped._request_signer._credentials, "ecs", "us-east-1").add_auth(req)
    r = requests.post(req.url, data=req.body, headers=dict(req.headers), timeout=30)
    assert r.status_code == 403 and "elasticloadbalancing" in r.text
