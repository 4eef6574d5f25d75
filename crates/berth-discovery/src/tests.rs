//! Operations over an embedded store, and the zone they make.

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_dns::wire::{Message, Name, RCODE_NXDOMAIN, TYPE_A, TYPE_SRV};
use berth_dns::{respond, Transport};
use serde_json::{json, Value};

use super::*;

fn setup() -> (tempfile::TempDir, Discovery, Context) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(berth_state::Embedded::open(tmp.path()).unwrap());
    let ctx = Context {
        region: "us-east-1".into(),
        account: "123456789012".into(),
    };
    (tmp, Discovery::new(store), ctx)
}

fn call(d: &Discovery, ctx: &Context, op: &str, v: Value) -> Result<Value, DiscoveryError> {
    d.call(op, &v, ctx)
}

/// Namespace "forum.local" with service "users" (A and SRV, TTL 10); its id.
fn forum(d: &Discovery, ctx: &Context, extra: Value) -> (String, String) {
    let op = call(
        d,
        ctx,
        "CreatePrivateDnsNamespace",
        json!({"Name": "forum.local", "Vpc": "vpc-1"}),
    )
    .unwrap();
    let op = call(
        d,
        ctx,
        "GetOperation",
        json!({"OperationId": op["OperationId"]}),
    )
    .unwrap();
    assert_eq!(op["Operation"]["Status"], "SUCCESS");
    let ns = op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let mut svc = json!({"Name": "users", "NamespaceId": ns, "DnsConfig": {
        "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}, {"Type": "SRV", "TTL": 10}]}});
    if let (Value::Object(m), Value::Object(e)) = (&mut svc, extra) {
        m.extend(e);
    }
    let s = call(d, ctx, "CreateService", svc).unwrap();
    (ns, s["Service"]["Id"].as_str().unwrap().to_string())
}

fn register(d: &Discovery, ctx: &Context, svc: &str, id: &str, ip: &str, port: u16) {
    call(
        d,
        ctx,
        "RegisterInstance",
        json!({"ServiceId": svc, "InstanceId": id,
        "Attributes": {"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": port.to_string()}}),
    )
    .unwrap();
}

fn dig(d: &Discovery, name: &str, qtype: u16) -> Message {
    let q = Message::query(1, Name::parse(name).unwrap(), qtype).encode();
    Message::parse(&respond(&d.zone().unwrap(), &q, Transport::Udp, 0).unwrap()).unwrap()
}

/// The whole flow: registered instances appear in DiscoverInstances and in the zone
/// (A and SRV with ports); deregistered ones disappear; ids and ARNs have Cloud Map's form.
#[test]
fn register_discover_resolve() {
    let (_t, d, ctx) = setup();
    let (ns, svc) = forum(&d, &ctx, json!({}));
    assert!(ns.starts_with("ns-") && ns.len() == 19, "{ns}");
    assert!(svc.starts_with("srv-") && svc.len() == 20, "{svc}");
    let got = call(&d, &ctx, "GetService", json!({"Id": svc})).unwrap();
    assert_eq!(
        got["Service"]["Arn"],
        format!("arn:aws:servicediscovery:us-east-1:123456789012:service/{svc}")
    );
    let changes = d.changes();
    register(&d, &ctx, &svc, "t1", "10.0.0.1", 8001);
    register(&d, &ctx, &svc, "t2", "10.0.0.2", 8002);
    assert!(changes.has_changed().unwrap());
    let found = call(
        &d,
        &ctx,
        "DiscoverInstances",
        json!({"NamespaceName": "forum.local", "ServiceName": "users"}),
    )
    .unwrap();
    assert_eq!(found["Instances"].as_array().unwrap().len(), 2);
    assert_eq!(found["Instances"][0]["HealthStatus"], "UNKNOWN");
    assert_eq!(
        dig(&d, "users.forum.local", TYPE_A).answer_ipv4s(),
        vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
    );
    let srv = dig(&d, "users.forum.local", TYPE_SRV);
    assert_eq!(srv.answers.len(), 2);
    assert_eq!(srv.additional.len(), 2);
    assert_eq!(
        dig(&d, "t1.users.forum.local", TYPE_A).answer_ipv4s(),
        vec![Ipv4Addr::new(10, 0, 0, 1)]
    );
    assert_eq!(srv.answers[0].ttl, 10);
    d.deregister_instance(&svc, "t1").unwrap();
    assert_eq!(
        dig(&d, "users.forum.local", TYPE_A).answer_ipv4s(),
        vec![Ipv4Addr::new(10, 0, 0, 2)]
    );
    assert_eq!(
        dig(&d, "t1.users.forum.local", TYPE_A).rcode,
        RCODE_NXDOMAIN
    );
    assert_eq!(dig(&d, "nope.forum.local", TYPE_A).rcode, RCODE_NXDOMAIN);
}

/// Custom health: UNHEALTHY instances leave the A answers and DiscoverInstances'
/// default (HEALTHY) filter; ALL still lists them.
#[test]
fn custom_health() {
    let (_t, d, ctx) = setup();
    let (_, svc) = forum(
        &d,
        &ctx,
        json!({"HealthCheckCustomConfig": {"FailureThreshold": 1}}),
    );
    register(&d, &ctx, &svc, "t1", "10.0.0.1", 80);
    register(&d, &ctx, &svc, "t2", "10.0.0.2", 80);
    call(
        &d,
        &ctx,
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": svc, "InstanceId": "t2", "Status": "UNHEALTHY"}),
    )
    .unwrap();
    assert_eq!(
        dig(&d, "users.forum.local", TYPE_A).answer_ipv4s(),
        vec![Ipv4Addr::new(10, 0, 0, 1)]
    );
    let h = call(
        &d,
        &ctx,
        "DiscoverInstances",
        json!({"NamespaceName": "forum.local", "ServiceName": "users"}),
    )
    .unwrap();
    assert_eq!(h["Instances"].as_array().unwrap().len(), 1);
    let all = call(
        &d,
        &ctx,
        "DiscoverInstances",
        json!({"NamespaceName": "forum.local", "ServiceName": "users", "HealthStatus": "ALL"}),
    )
    .unwrap();
    assert_eq!(all["Instances"].as_array().unwrap().len(), 2);
    let st = call(
        &d,
        &ctx,
        "GetInstancesHealthStatus",
        json!({"ServiceId": svc}),
    )
    .unwrap();
    assert_eq!(st["Status"], json!({"t1": "HEALTHY", "t2": "UNHEALTHY"}));
}

/// Errors: the model's types and statuses.
#[test]
fn errors() {
    let (_t, d, ctx) = setup();
    let (ns, svc) = forum(&d, &ctx, json!({}));
    let e = call(
        &d,
        &ctx,
        "CreatePrivateDnsNamespace",
        json!({"Name": "forum.local", "Vpc": "v"}),
    )
    .unwrap_err();
    assert_eq!(
        (e.type_name(), e.members()["NamespaceId"].as_str()),
        ("NamespaceAlreadyExists", Some(ns.as_str()))
    );
    let e = call(
        &d,
        &ctx,
        "CreateService",
        json!({"Name": "users", "NamespaceId": ns}),
    )
    .unwrap_err();
    assert_eq!(e.type_name(), "ServiceAlreadyExists");
    register(&d, &ctx, &svc, "t1", "10.0.0.1", 80);
    let e = call(&d, &ctx, "DeleteNamespace", json!({"Id": ns})).unwrap_err();
    assert_eq!((e.type_name(), e.status()), ("ResourceInUse", 409));
    let e = call(&d, &ctx, "DeleteService", json!({"Id": svc})).unwrap_err();
    assert_eq!(e.type_name(), "ResourceInUse");
    for (op, input, want) in [
        (
            "GetNamespace",
            json!({"Id": "ns-nope"}),
            "NamespaceNotFound",
        ),
        ("GetService", json!({"Id": "srv-nope"}), "ServiceNotFound"),
        (
            "GetInstance",
            json!({"ServiceId": svc, "InstanceId": "x"}),
            "InstanceNotFound",
        ),
        (
            "GetOperation",
            json!({"OperationId": "x"}),
            "OperationNotFound",
        ),
        (
            "RegisterInstance",
            json!({"ServiceId": svc, "InstanceId": "t9", "Attributes": {"AWS_INSTANCE_IPV4": "300.1.1.1", "AWS_INSTANCE_PORT": "1"}}),
            "InvalidInput",
        ),
        (
            "RegisterInstance",
            json!({"ServiceId": svc, "InstanceId": "t9", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.9"}}),
            "InvalidInput",
        ),
        (
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": svc, "InstanceId": "t1", "Status": "HEALTHY"}),
            "CustomHealthNotFound",
        ),
        (
            "CreatePublicDnsNamespace",
            json!({"Name": "example.com"}),
            "InvalidInput",
        ),
        (
            "CreatePrivateDnsNamespace",
            json!({"Name": "bad..name", "Vpc": "v"}),
            "InvalidInput",
        ),
        (
            "CreateService",
            json!({"Name": "x", "NamespaceId": ns, "DnsConfig": {"DnsRecords": [{"Type": "AAAA", "TTL": 1}]}}),
            "InvalidInput",
        ),
        (
            "ListNamespaces",
            json!({"Filters": [{"Name": "COLOR", "Values": ["x"]}]}),
            "InvalidInput",
        ),
        (
            "TagResource",
            json!({"ResourceARN": "arn:aws:servicediscovery:us-east-1:1:service/srv-x", "Tags": []}),
            "ResourceNotFoundException",
        ),
        ("Nope", json!({}), "UnknownOperationException"),
    ] {
        assert_eq!(
            call(&d, &ctx, op, input).unwrap_err().type_name(),
            want,
            "{op}"
        );
    }
    d.deregister_instance(&svc, "t1").unwrap();
    call(&d, &ctx, "DeleteService", json!({"Id": svc})).unwrap();
    call(&d, &ctx, "DeleteNamespace", json!({"Id": ns})).unwrap();
    assert_eq!(
        dig(&d, "users.forum.local", TYPE_A).rcode,
        berth_dns::wire::RCODE_REFUSED
    );
}

/// Lists, filters, pages and tags.
#[test]
fn lists_and_tags() {
    let (_t, d, ctx) = setup();
    let (ns, svc) = forum(&d, &ctx, json!({}));
    call(&d, &ctx, "CreateHttpNamespace", json!({"Name": "api"})).unwrap();
    let l = call(
        &d,
        &ctx,
        "ListNamespaces",
        json!({"Filters": [{"Name": "TYPE", "Values": ["HTTP"]}]}),
    )
    .unwrap();
    assert_eq!(l["Namespaces"].as_array().unwrap().len(), 1);
    let l = call(&d, &ctx, "ListNamespaces", json!({"MaxResults": 1})).unwrap();
    let next = l["NextToken"].as_str().unwrap();
    let l2 = call(
        &d,
        &ctx,
        "ListNamespaces",
        json!({"MaxResults": 1, "NextToken": next}),
    )
    .unwrap();
    assert!(l2.get("NextToken").is_none());
    assert_ne!(l["Namespaces"][0]["Id"], l2["Namespaces"][0]["Id"]);
    let s = call(
        &d,
        &ctx,
        "ListServices",
        json!({"Filters": [{"Name": "NAMESPACE_ID", "Values": [ns], "Condition": "EQ"}]}),
    )
    .unwrap();
    assert_eq!(s["Services"][0]["Id"], svc.as_str());
    let arn = format!("arn:aws:servicediscovery:us-east-1:123456789012:service/{svc}");
    call(
        &d,
        &ctx,
        "TagResource",
        json!({"ResourceARN": arn, "Tags": [{"Key": "team", "Value": "a"}]}),
    )
    .unwrap();
    let t = call(&d, &ctx, "ListTagsForResource", json!({"ResourceARN": arn})).unwrap();
    assert_eq!(t["Tags"], json!([{"Key": "team", "Value": "a"}]));
    call(
        &d,
        &ctx,
        "UntagResource",
        json!({"ResourceARN": arn, "TagKeys": ["team"]}),
    )
    .unwrap();
    assert_eq!(
        call(&d, &ctx, "ListTagsForResource", json!({"ResourceARN": arn})).unwrap()["Tags"],
        json!([])
    );
    let ops = call(
        &d,
        &ctx,
        "ListOperations",
        json!({"Filters": [{"Name": "TYPE", "Values": ["CREATE_NAMESPACE"]}]}),
    )
    .unwrap();
    assert_eq!(ops["Operations"].as_array().unwrap().len(), 2);
    call(
        &d,
        &ctx,
        "UpdateService",
        json!({"Id": svc, "Service": {"DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 60}]}}}),
    )
    .unwrap();
    register(&d, &ctx, &svc, "t1", "10.0.0.1", 80);
    assert_eq!(dig(&d, "users.forum.local", TYPE_A).answers[0].ttl, 60);
    assert!(dig(&d, "users.forum.local", TYPE_SRV).answers.is_empty());
}

/// The protocols: CBOR in, CBOR out with tag-1 timestamps; errors carry __type.
#[test]
fn protocols() {
    let (_t, d, ctx) = setup();
    let input = cbor::encode(&json!({"Name": "n.local", "Vpc": "v"}), &|_| false);
    let v = decode_input(Protocol::Cbor, &input).unwrap();
    call(&d, &ctx, "CreatePrivateDnsNamespace", v).unwrap();
    let l = call(&d, &ctx, "ListNamespaces", json!({})).unwrap();
    let out = encode_output(Protocol::Cbor, &l);
    assert!(
        out.windows(2).any(|w| w == [0xc1, 0xfb]),
        "CreateDate is a tag 1 double"
    );
    assert_eq!(cbor::decode(&out).unwrap(), l);
    let e = DiscoveryError::NamespaceNotFound("x".into());
    let b = cbor::decode(&encode_error(Protocol::Cbor, &e)).unwrap();
    assert_eq!(
        (b["__type"].as_str(), b["message"].as_str()),
        (Some("NamespaceNotFound"), Some("x"))
    );
    assert!(decode_input(Protocol::Json, b"").unwrap().is_object());
}
