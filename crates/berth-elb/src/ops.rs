//! One function per ELBv2 operation, the dispatch table ([`Elb::call`]), and the
//! serialized compare-and-swap write every operation goes through.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_lb::config::{HealthSource, LbConfig};
use berth_state::{Compare, Op, StateError, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::convert::{self, Snapshot};
use crate::error::ElbError;
use crate::model::{
    self, in_range, parse_arn, Action, ArnRef, Attribute, Certificate, HealthCheckRecord, LbRecord,
    ListenerRecord, Matcher, RuleCondition, RuleRecord, Tag, TargetDescription, TargetRecord,
    TgRecord,
};
use crate::validate;
use crate::Context;

/// How often a write is retried when another writer got there first.
const CAS_RETRIES: usize = 64;
/// Validates attribute changes and applies them to a record's attributes.
type ApplyAttributes = fn(&mut BTreeMap<String, String>, &[Attribute]) -> Result<(), ElbError>;
/// The key every ELB write compare-and-swaps.
const SERIAL: &str = "/elb/serial";
const LB_PREFIX: &str = "/elb/loadbalancers/";
const TG_PREFIX: &str = "/elb/targetgroups/";
const LISTENER_PREFIX: &str = "/elb/listeners/";
const RULE_PREFIX: &str = "/elb/rules/";
/// ELB's quotas (per region, per load balancer, per listener, per target group).
const MAX_LOAD_BALANCERS: usize = 50;
const MAX_TARGET_GROUPS: usize = 3000;
const MAX_LISTENERS: usize = 50;
const MAX_RULES: usize = 100;
const MAX_TARGETS: usize = 1000;
/// The largest page of a Describe* call, and the default.
const MAX_PAGE: i64 = 400;
/// Most ARNs AddTags/RemoveTags/DescribeTags take.
const MAX_TAG_RESOURCES: usize = 20;
/// The VPC berth reports when a caller names none (berth has no VPCs).
const DEFAULT_VPC: &str = "vpc-00000000000000000";
/// The hosted zone of application load balancers in us-east-1 (berth reports it in
/// every region: its DNS names are not in Route 53).
const CANONICAL_HOSTED_ZONE_ID: &str = "Z35SXDOTRQ7X7K";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_bytes(n: usize) -> Result<Vec<u8>, ElbError> {
    let mut raw = vec![0u8; n];
    getrandom::getrandom(&mut raw)
        .map_err(|e| ElbError::Internal(format!("no randomness: {e}")))?;
    Ok(raw)
}

/// `2 * bytes` random hex digits (resource ids in ARNs).
fn random_hex(bytes: usize) -> Result<String, ElbError> {
    random_bytes(bytes).map(hex::encode)
}

/// `n` random decimal digits (the number in a load balancer's DNS name).
fn random_digits(n: usize) -> Result<String, ElbError> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect())
}

fn input<T: DeserializeOwned>(params: Value) -> Result<T, ElbError> {
    crate::query::from_tree(params)
        .map_err(|e| ElbError::Validation(format!("invalid request: {e}")))
}

fn decode<T: DeserializeOwned>(key: &str, value: &str) -> Result<T, ElbError> {
    serde_json::from_str(value)
        .map_err(|e| ElbError::Internal(format!("stored record {key} is unreadable: {e}")))
}

fn put<T: Serialize>(ops: &mut Vec<Op>, key: String, rec: &T) {
    ops.push(Op::Put {
        key,
        value: serde_json::to_string(rec).unwrap_or_default(),
    });
}

fn timestamp(ms: u64) -> String {
    berth_sigv4::format_rfc3339(ms / 1000)
}

/// One page of `items` from `Marker` (the offset in hex, as berth issues it) and
/// `PageSize`, and the next page's marker.
fn page<T: Clone>(
    items: &[T],
    marker: Option<&str>,
    page_size: Option<i64>,
) -> Result<(Vec<T>, Option<String>), ElbError> {
    let size = in_range("pageSize", page_size.unwrap_or(MAX_PAGE), 1..=MAX_PAGE)? as usize;
    let start = match marker {
        None | Some("") => 0,
        Some(m) => usize::from_str_radix(m, 16)
            .map_err(|_| ElbError::Validation("Marker is not one berth issued".into()))?,
    };
    let out = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len()).then(|| format!("{:x}", start + size));
    Ok((out, next))
}

fn not_valid_arn(kind: &str, arn: &str) -> ElbError {
    ElbError::Validation(format!(
        "'{}' is not a valid {kind} ARN",
        arn.chars().take(200).collect::<String>()
    ))
}

// ---------------------------------------------------------------------------------------
// Inputs (the model's members; unknown members are refused)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateLoadBalancerInput {
    name: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    subnet_mappings: Vec<Value>,
    #[serde(default)]
    security_groups: Vec<String>,
    scheme: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    ip_address_type: Option<String>,
    customer_owned_ipv4_pool: Option<String>,
    enable_prefix_for_ipv6_source_nat: Option<String>,
    ipam_pools: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeLoadBalancersInput {
    load_balancer_arns: Option<Vec<String>>,
    names: Option<Vec<String>>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LbArnInput {
    load_balancer_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LbAttributesInput {
    load_balancer_arn: String,
    attributes: Option<Vec<Attribute>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TgAttributesInput {
    target_group_arn: String,
    attributes: Option<Vec<Attribute>>,
}

/// The changes of a Modify*Attributes call (required), none for Describe*Attributes
/// (which takes none).
fn attribute_changes<'a>(
    op: &str,
    attributes: &'a Option<Vec<Attribute>>,
) -> Result<Option<&'a [Attribute]>, ElbError> {
    match (op.starts_with("Modify"), attributes) {
        (true, Some(a)) => Ok(Some(a)),
        (true, None) => Err(ElbError::Validation("Attributes is required".into())),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ElbError::Validation(format!(
            "Attributes is not a member of {op}"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateTargetGroupInput {
    name: String,
    protocol: Option<String>,
    protocol_version: Option<String>,
    port: Option<i64>,
    vpc_id: Option<String>,
    health_check_protocol: Option<String>,
    health_check_port: Option<String>,
    health_check_enabled: Option<bool>,
    health_check_path: Option<String>,
    health_check_interval_seconds: Option<i64>,
    health_check_timeout_seconds: Option<i64>,
    healthy_threshold_count: Option<i64>,
    unhealthy_threshold_count: Option<i64>,
    matcher: Option<Matcher>,
    target_type: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    ip_address_type: Option<String>,
    target_control_port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ModifyTargetGroupInput {
    target_group_arn: String,
    health_check_protocol: Option<String>,
    health_check_port: Option<String>,
    health_check_enabled: Option<bool>,
    health_check_path: Option<String>,
    health_check_interval_seconds: Option<i64>,
    health_check_timeout_seconds: Option<i64>,
    healthy_threshold_count: Option<i64>,
    unhealthy_threshold_count: Option<i64>,
    matcher: Option<Matcher>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeTargetGroupsInput {
    load_balancer_arn: Option<String>,
    target_group_arns: Option<Vec<String>>,
    names: Option<Vec<String>>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TgArnInput {
    target_group_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TargetsInput {
    target_group_arn: String,
    targets: Vec<TargetDescription>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeTargetHealthInput {
    target_group_arn: String,
    targets: Option<Vec<TargetDescription>>,
    include: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateListenerInput {
    load_balancer_arn: String,
    protocol: Option<String>,
    port: Option<i64>,
    ssl_policy: Option<String>,
    certificates: Option<Vec<Certificate>>,
    default_actions: Vec<Action>,
    alpn_policy: Option<Vec<String>>,
    #[serde(default)]
    tags: Vec<Tag>,
    mutual_authentication: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ModifyListenerInput {
    listener_arn: String,
    port: Option<i64>,
    protocol: Option<String>,
    ssl_policy: Option<String>,
    certificates: Option<Vec<Certificate>>,
    default_actions: Option<Vec<Action>>,
    alpn_policy: Option<Vec<String>>,
    mutual_authentication: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeListenersInput {
    load_balancer_arn: Option<String>,
    listener_arns: Option<Vec<String>>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListenerArnInput {
    listener_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateRuleInput {
    listener_arn: String,
    conditions: Vec<RuleCondition>,
    priority: i64,
    actions: Vec<Action>,
    #[serde(default)]
    tags: Vec<Tag>,
    transforms: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ModifyRuleInput {
    rule_arn: String,
    conditions: Option<Vec<RuleCondition>>,
    actions: Option<Vec<Action>>,
    transforms: Option<Vec<Value>>,
    reset_transforms: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeRulesInput {
    listener_arn: Option<String>,
    rule_arns: Option<Vec<String>>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RuleArnInput {
    rule_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RulePriorityPair {
    rule_arn: Option<String>,
    priority: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SetRulePrioritiesInput {
    rule_priorities: Vec<RulePriorityPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagsInput {
    resource_arns: Vec<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Rendering (the model's output shapes)
// ---------------------------------------------------------------------------------------

fn render_lb(b: &LbRecord) -> Value {
    let zones: Vec<Value> = b
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "ZoneName": format!("{}{}", b.region, char::from(b'a' + (i % 26) as u8)),
                "SubnetId": s,
                "LoadBalancerAddresses": [],
            })
        })
        .collect();
    json!({
        "LoadBalancerArn": b.arn,
        "DNSName": b.dns_name,
        "CanonicalHostedZoneId": CANONICAL_HOSTED_ZONE_ID,
        "CreatedTime": timestamp(b.created_ms),
        "LoadBalancerName": b.name,
        "Scheme": b.scheme,
        "VpcId": b.vpc_id,
        "State": {"Code": "active"},
        "Type": "application",
        "AvailabilityZones": zones,
        "SecurityGroups": b.security_groups,
        "IpAddressType": b.ip_address_type,
    })
}

fn render_tg(t: &TgRecord, lb_arns: Option<&BTreeSet<String>>) -> Value {
    let h = &t.health_check;
    json!({
        "TargetGroupArn": t.arn,
        "TargetGroupName": t.name,
        "Protocol": t.protocol,
        "Port": t.port,
        "VpcId": t.vpc_id,
        "HealthCheckProtocol": h.protocol,
        "HealthCheckPort": h.port,
        "HealthCheckEnabled": h.enabled,
        "HealthCheckIntervalSeconds": h.interval_secs,
        "HealthCheckTimeoutSeconds": h.timeout_secs,
        "HealthyThresholdCount": h.healthy_threshold,
        "UnhealthyThresholdCount": h.unhealthy_threshold,
        "HealthCheckPath": h.path,
        "Matcher": {"HttpCode": h.matcher},
        "LoadBalancerArns": lb_arns.map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "TargetType": t.target_type,
        "ProtocolVersion": t.protocol_version,
        "IpAddressType": t.ip_address_type,
    })
}

fn render_listener(l: &ListenerRecord) -> Value {
    json!({
        "ListenerArn": l.arn,
        "LoadBalancerArn": l.lb_arn,
        "Port": l.port,
        "Protocol": l.protocol,
        "DefaultActions": l.default_actions,
    })
}

fn render_rule(r: &RuleRecord) -> Value {
    json!({
        "RuleArn": r.arn,
        "Priority": r.priority.to_string(),
        "Conditions": r.conditions,
        "Actions": r.actions,
        "IsDefault": false,
    })
}

fn render_default_rule(l: &ListenerRecord) -> Value {
    json!({
        "RuleArn": model::rule_arn(&l.arn, &l.default_rule_id),
        "Priority": "default",
        "Conditions": [],
        "Actions": l.default_actions,
        "IsDefault": true,
    })
}

fn render_attributes(a: &BTreeMap<String, String>) -> Value {
    Value::Array(
        a.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Health checks of target groups
// ---------------------------------------------------------------------------------------

/// The health-check members of CreateTargetGroup and ModifyTargetGroup.
#[derive(Default)]
struct HealthCheckInput {
    protocol: Option<String>,
    port: Option<String>,
    enabled: Option<bool>,
    path: Option<String>,
    interval: Option<i64>,
    timeout: Option<i64>,
    healthy: Option<i64>,
    unhealthy: Option<i64>,
    matcher: Option<Matcher>,
}

/// Applies health-check changes over `h` and validates the result (ELB's ranges; the
/// timeout below the interval).
fn apply_health_check(h: &mut HealthCheckRecord, i: HealthCheckInput) -> Result<(), ElbError> {
    if let Some(p) = i.protocol {
        if p != "HTTP" && p != "HTTPS" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "health check protocol '{p}' is not supported for application load balancer target groups: use HTTP or HTTPS"
            )));
        }
        h.protocol = p;
    }
    if let Some(p) = i.port {
        validate::health_check_port(&p)?;
        h.port = p;
    }
    if let Some(e) = i.enabled {
        h.enabled = e;
    }
    if let Some(p) = i.path {
        if !p.starts_with('/') || p.len() > 1024 {
            return Err(ElbError::Validation(format!(
                "health check path '{}' must start with '/' and be at most 1024 characters",
                p.chars().take(64).collect::<String>()
            )));
        }
        h.path = p;
    }
    if let Some(v) = i.interval {
        h.interval_secs = in_range("healthCheckIntervalSeconds", v, 5..=300)? as u32;
    }
    if let Some(v) = i.timeout {
        h.timeout_secs = in_range("healthCheckTimeoutSeconds", v, 2..=120)? as u32;
    }
    if let Some(v) = i.healthy {
        h.healthy_threshold = in_range("healthyThresholdCount", v, 2..=10)? as u32;
    }
    if let Some(v) = i.unhealthy {
        h.unhealthy_threshold = in_range("unhealthyThresholdCount", v, 2..=10)? as u32;
    }
    if let Some(m) = i.matcher {
        if m.grpc_code.is_some() {
            return Err(ElbError::InvalidConfigurationRequest(
                "berth's target groups speak HTTP: give Matcher.HttpCode, not GrpcCode".into(),
            ));
        }
        let code = m.http_code.unwrap_or_else(|| "200".into());
        validate::matcher(&code)?;
        h.matcher = code;
    }
    if h.timeout_secs >= h.interval_secs {
        return Err(ElbError::InvalidConfigurationRequest(format!(
            "Health check timeout '{}' must be smaller than the interval '{}'",
            h.timeout_secs, h.interval_secs
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------

/// The ELBv2 API over the state store.
pub struct Elb {
    store: Arc<dyn Store>,
    changes: watch::Sender<u64>,
    health: RwLock<Option<Arc<dyn HealthSource>>>,
    instances: RwLock<Option<Arc<dyn InstanceDirectory>>>,
}

/// Where `instance` targets are found (implemented over ECS's container instances).
pub trait InstanceDirectory: Send + Sync {
    /// The address of the host each `ec2InstanceId` names (instances without one left out).
    fn addresses(&self) -> HashMap<String, String>;
}

impl std::fmt::Debug for Elb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elb").finish()
    }
}

impl Elb {
    /// The API over `store`, with no health source: until one is set, registered
    /// targets of groups in use report `initial`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let (changes, _) = watch::channel(0);
        Elb {
            store,
            changes,
            health: RwLock::new(None),
            instances: RwLock::new(None),
        }
    }

    /// Where `instance` targets are resolved to addresses. Without one, instance
    /// targets are accepted by id and never routed to.
    pub fn set_instance_directory(&self, directory: Option<Arc<dyn InstanceDirectory>>) {
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = directory;
    }

    /// The instances' addresses now, `None` without a directory.
    fn instance_addresses(&self) -> Option<HashMap<String, String>> {
        let dir = self
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        dir.map(|d| d.addresses())
    }

    /// Where DescribeTargetHealth reads health from (the data plane), or none.
    pub fn set_health_source(&self, source: Option<Arc<dyn HealthSource>>) {
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = source;
    }

    /// A receiver whose value changes after every write (the data plane reloads
    /// [`Elb::config`] on each change).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The whole configuration the data plane runs, read at one store revision.
    pub fn config(&self) -> LbConfig {
        match self.snapshot() {
            Ok(s) => {
                let hosts = self.instance_addresses().unwrap_or_default();
                convert::lb_config(&s, now_ms(), &|id: &str| hosts.get(id).cloned())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the load balancer configuration");
                LbConfig::default()
            }
        }
    }

    /// Parses a Query request body and runs it: the operation's name and its result.
    /// Blocking (the store makes every write durable before it returns).
    pub fn handle(&self, body: &[u8], ctx: &Context) -> Result<(String, Value), ElbError> {
        let req = crate::query::parse(body)?;
        let out = self.call(&req.action, req.params, ctx)?;
        Ok((req.action, out))
    }

    /// Runs operation `op` with its parameter tree (as [`crate::query::parse`] makes
    /// it); returns the result's members.
    pub fn call(&self, op: &str, params: Value, ctx: &Context) -> Result<Value, ElbError> {
        let span = tracing::info_span!("elb", op);
        let _e = span.enter();
        match op {
            "CreateLoadBalancer" => self.create_load_balancer(input(params)?, ctx),
            "DescribeLoadBalancers" => self.describe_load_balancers(input(params)?),
            "DeleteLoadBalancer" => self.delete_load_balancer(input(params)?),
            "DescribeLoadBalancerAttributes" | "ModifyLoadBalancerAttributes" => {
                let i: LbAttributesInput = input(params)?;
                let changes = attribute_changes(op, &i.attributes)?;
                let load = || self.lb(&i.load_balancer_arn);
                self.attributes(load, |b: &mut LbRecord| &mut b.attributes, validate::modify_lb_attributes, changes)
            }
            "CreateTargetGroup" => self.create_target_group(input(params)?, ctx),
            "DescribeTargetGroups" => self.describe_target_groups(input(params)?),
            "ModifyTargetGroup" => self.modify_target_group(input(params)?),
            "DeleteTargetGroup" => self.delete_target_group(input(params)?),
            "DescribeTargetGroupAttributes" | "ModifyTargetGroupAttributes" => {
                let i: TgAttributesInput = input(params)?;
                let changes = attribute_changes(op, &i.attributes)?;
                let load = || self.tg(&i.target_group_arn);
                self.attributes(load, |t: &mut TgRecord| &mut t.attributes, validate::modify_tg_attributes, changes)
            }
            "RegisterTargets" => self.register_targets(input(params)?),
            "DeregisterTargets" => self.deregister_targets(input(params)?),
            "DescribeTargetHealth" => self.describe_target_health(input(params)?),
            "CreateListener" => self.create_listener(input(params)?),
            "DescribeListeners" => self.describe_listeners(input(params)?),
            "ModifyListener" => self.modify_listener(input(params)?),
            "DeleteListener" => self.delete_listener(input(params)?),
            "CreateRule" => self.create_rule(input(params)?),
            "DescribeRules" => self.describe_rules(input(params)?),
            "ModifyRule" => self.modify_rule(input(params)?),
            "DeleteRule" => self.delete_rule(input(params)?),
            "SetRulePriorities" => self.set_rule_priorities(input(params)?),
            "AddTags" => self.add_tags(input(params)?),
            "RemoveTags" => self.remove_tags(input(params)?),
            "DescribeTags" => self.describe_tags(input(params)?),
            other => Err(ElbError::InvalidAction(format!(
                "operation {} is not supported by berth's ELBv2 API; see docs/aws-api.md for the supported operations",
                other.chars().take(80).collect::<String>()
            ))),
        }
    }

    // -- store -------------------------------------------------------------------------

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// One write: `f` reads what it needs and appends its writes to `ops`; they commit
    /// in one transaction guarded by `/elb/serial`, or `f` runs again.
    fn write<T>(
        &self,
        mut f: impl FnMut(&mut Vec<Op>) -> Result<T, ElbError>,
    ) -> Result<T, ElbError> {
        for _ in 0..CAS_RETRIES {
            let serial = self.store.get(SERIAL);
            let mut ops = Vec::new();
            let out = f(&mut ops)?;
            if ops.is_empty() {
                return Ok(out);
            }
            let n = serial
                .as_ref()
                .and_then(|e| e.value.parse::<u64>().ok())
                .unwrap_or(0);
            ops.push(Op::Put {
                key: SERIAL.into(),
                value: (n + 1).to_string(),
            });
            let guard = Compare {
                key: SERIAL.into(),
                mod_revision: serial.map(|e| e.mod_revision),
            };
            match self.store.txn(&[guard], ops) {
                Ok(_) => {
                    self.notify();
                    return Ok(out);
                }
                Err(StateError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ElbError::Internal(
            "load balancer state kept changing under concurrent writers; retry".into(),
        ))
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ElbError> {
        match self.store.get(key) {
            None => Ok(None),
            Some(e) => Ok(Some(decode(key, &e.value)?)),
        }
    }

    fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, ElbError> {
        self.store
            .list(prefix)
            .into_iter()
            .map(|(k, e)| decode(&k, &e.value))
            .collect()
    }

    /// Everything, read at one revision.
    fn snapshot(&self) -> Result<Snapshot, ElbError> {
        let listing = self.store.list_with_revision("/elb/");
        let mut s = Snapshot::default();
        for (k, e) in listing.entries {
            if k.starts_with(LB_PREFIX) {
                s.lbs.push(decode(&k, &e.value)?);
            } else if k.starts_with(TG_PREFIX) {
                s.tgs.push(decode(&k, &e.value)?);
            } else if k.starts_with(LISTENER_PREFIX) {
                s.listeners.push(decode(&k, &e.value)?);
            } else if k.starts_with(RULE_PREFIX) {
                s.rules.push(decode(&k, &e.value)?);
            }
        }
        Ok(s)
    }

    /// The record at `key` if it is the one `arn` names (a name reused after a
    /// delete gets a new ARN), with its key.
    fn record<T: DeserializeOwned>(
        &self,
        key: String,
        arn: &str,
        arn_of: impl Fn(&T) -> &str,
    ) -> Result<Option<(T, String)>, ElbError> {
        Ok(self
            .get::<T>(&key)?
            .filter(|r| arn_of(r) == arn)
            .map(|r| (r, key)))
    }

    /// A load balancer by ARN, and its key.
    fn lb(&self, arn: &str) -> Result<(LbRecord, String), ElbError> {
        let Some(ArnRef::LoadBalancer { name }) = parse_arn(arn) else {
            return Err(not_valid_arn("load balancer", arn));
        };
        self.record(format!("{LB_PREFIX}{name}"), arn, |b: &LbRecord| &b.arn)?
            .ok_or_else(|| {
                ElbError::LoadBalancerNotFound(format!("Load balancer '{arn}' not found"))
            })
    }

    fn tg(&self, arn: &str) -> Result<(TgRecord, String), ElbError> {
        let Some(ArnRef::TargetGroup { name }) = parse_arn(arn) else {
            return Err(not_valid_arn("target group", arn));
        };
        self.record(format!("{TG_PREFIX}{name}"), arn, |t: &TgRecord| &t.arn)?
            .ok_or_else(|| ElbError::TargetGroupNotFound(format!("Target group '{arn}' not found")))
    }

    fn listener(&self, arn: &str) -> Result<(ListenerRecord, String), ElbError> {
        let Some(ArnRef::Listener { id }) = parse_arn(arn) else {
            return Err(not_valid_arn("listener", arn));
        };
        self.record(
            format!("{LISTENER_PREFIX}{id}"),
            arn,
            |l: &ListenerRecord| &l.arn,
        )?
        .ok_or_else(|| ElbError::ListenerNotFound(format!("Listener '{arn}' not found")))
    }

    /// A rule by ARN: `Ok(Err(listener))` for a listener's default rule.
    #[allow(clippy::type_complexity)]
    fn rule(
        &self,
        arn: &str,
    ) -> Result<Result<(RuleRecord, String), (ListenerRecord, String)>, ElbError> {
        let Some(ArnRef::Rule { listener_id, id }) = parse_arn(arn) else {
            return Err(not_valid_arn("rule", arn));
        };
        let not_found = || ElbError::RuleNotFound(format!("One or more rules not found: '{arn}'"));
        let key = format!("{RULE_PREFIX}{id}");
        if let Some(r) = self.get::<RuleRecord>(&key)? {
            return if r.arn == arn {
                Ok(Ok((r, key)))
            } else {
                Err(not_found())
            };
        }
        let lkey = format!("{LISTENER_PREFIX}{listener_id}");
        match self.get::<ListenerRecord>(&lkey)? {
            Some(l) if model::rule_arn(&l.arn, &l.default_rule_id) == arn => Ok(Err((l, lkey))),
            _ => Err(not_found()),
        }
    }

    /// Validates actions against the store: every target group exists and is used by
    /// no other load balancer (ALB's one load balancer per target group).
    fn check_actions(&self, actions: &[Action], lb_arn: &str) -> Result<Vec<Action>, ElbError> {
        let parsed = validate::actions(actions)?;
        let s = self.snapshot()?;
        let users = convert::target_group_users(&s);
        for tg in validate::action_target_groups(&parsed) {
            self.tg(tg)?;
            if let Some(other) = users.get(tg).and_then(|u| u.iter().find(|a| *a != lb_arn)) {
                return Err(ElbError::TargetGroupAssociationLimit(format!(
                    "target group '{tg}' is already used by load balancer '{other}': an application load balancer's target group serves one load balancer"
                )));
            }
        }
        Ok(vec![validate::render_action(&parsed)])
    }

    // -- load balancers ----------------------------------------------------------------

    fn create_load_balancer(
        &self,
        i: CreateLoadBalancerInput,
        ctx: &Context,
    ) -> Result<Value, ElbError> {
        validate::name("load balancer", &i.name)?;
        match i.kind.as_deref() {
            None | Some("application") => {}
            Some(other) => {
                return Err(ElbError::InvalidConfigurationRequest(format!(
                    "berth runs application load balancers only, not '{other}'"
                )))
            }
        }
        let scheme = i.scheme.unwrap_or_else(|| "internet-facing".into());
        if scheme != "internet-facing" && scheme != "internal" {
            return Err(ElbError::Validation(format!(
                "Scheme '{scheme}' must be internet-facing or internal"
            )));
        }
        let ip_type = i.ip_address_type.unwrap_or_else(|| "ipv4".into());
        if ip_type != "ipv4" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "berth's load balancers listen on IPv4 only, not '{ip_type}'"
            )));
        }
        if i.customer_owned_ipv4_pool.is_some()
            || i.ipam_pools.is_some()
            || i.enable_prefix_for_ipv6_source_nat.is_some()
        {
            return Err(ElbError::InvalidConfigurationRequest(
                "berth has no customer-owned or IPAM pools and no IPv6 source NAT".into(),
            ));
        }
        validate::tags(&i.tags)?;
        let mut subnets = i.subnets.clone();
        for m in &i.subnet_mappings {
            if let Some(s) = m.get("SubnetId").and_then(Value::as_str) {
                subnets.push(s.to_string());
            }
        }
        let key = format!("{LB_PREFIX}{}", i.name);
        let id = random_hex(8)?;
        let digits = random_digits(10)?;
        let rec = self.write(|ops| {
            if let Some(old) = self.get::<LbRecord>(&key)? {
                // CreateLoadBalancer is idempotent for the same settings.
                if old.scheme == scheme
                    && old.subnets == subnets
                    && old.security_groups == i.security_groups
                {
                    return Ok(old);
                }
                return Err(ElbError::DuplicateLoadBalancerName(format!(
                    "A load balancer with the same name '{}' exists, with other settings",
                    i.name
                )));
            }
            if self.store.list(LB_PREFIX).len() >= MAX_LOAD_BALANCERS {
                return Err(ElbError::TooManyLoadBalancers(format!(
                    "berth keeps at most {MAX_LOAD_BALANCERS} load balancers"
                )));
            }
            let prefix = if scheme == "internal" {
                "internal-"
            } else {
                ""
            };
            let rec = LbRecord {
                arn: model::arn(
                    &ctx.region,
                    &ctx.account,
                    &format!("loadbalancer/app/{}/{id}", i.name),
                ),
                name: i.name.clone(),
                dns_name: format!("{prefix}{}-{digits}.{}.elb.localhost", i.name, ctx.region),
                scheme: scheme.clone(),
                ip_address_type: ip_type.clone(),
                vpc_id: DEFAULT_VPC.into(),
                subnets: subnets.clone(),
                security_groups: i.security_groups.clone(),
                region: ctx.region.clone(),
                created_ms: now_ms(),
                attributes: validate::lb_attribute_defaults(),
                tags: i.tags.clone(),
            };
            put(ops, key.clone(), &rec);
            Ok(rec)
        })?;
        Ok(json!({"LoadBalancers": [render_lb(&rec)]}))
    }

    fn describe_load_balancers(&self, i: DescribeLoadBalancersInput) -> Result<Value, ElbError> {
        let all: Vec<LbRecord> = self.list(LB_PREFIX)?;
        let chosen: Vec<LbRecord> = match (&i.load_balancer_arns, &i.names) {
            (Some(_), Some(_)) => {
                return Err(ElbError::Validation(
                    "give LoadBalancerArns or Names, not both".into(),
                ))
            }
            (Some(arns), None) => arns
                .iter()
                .map(|a| self.lb(a).map(|(b, _)| b))
                .collect::<Result<_, _>>()?,
            (None, Some(names)) => names
                .iter()
                .map(|n| {
                    all.iter().find(|b| &b.name == n).cloned().ok_or_else(|| {
                        ElbError::LoadBalancerNotFound(format!("Load balancers '[{n}]' not found"))
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, None) => all,
        };
        let (items, next) = page(&chosen, i.marker.as_deref(), i.page_size)?;
        Ok(json!({
            "LoadBalancers": items.iter().map(render_lb).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    fn delete_load_balancer(&self, i: LbArnInput) -> Result<Value, ElbError> {
        if !matches!(
            parse_arn(&i.load_balancer_arn),
            Some(ArnRef::LoadBalancer { .. })
        ) {
            return Err(not_valid_arn("load balancer", &i.load_balancer_arn));
        }
        self.write(|ops| {
            // Deleting a load balancer that does not exist succeeds (ELB's documentation).
            let (b, key) = match self.lb(&i.load_balancer_arn) {
                Ok(found) => found,
                Err(ElbError::LoadBalancerNotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            if b.attributes
                .get("deletion_protection.enabled")
                .map(String::as_str)
                == Some("true")
            {
                return Err(ElbError::OperationNotPermitted(format!(
                    "Load balancer '{}' cannot be deleted because deletion protection is enabled",
                    b.arn
                )));
            }
            ops.push(Op::Delete { key });
            for l in self.list::<ListenerRecord>(LISTENER_PREFIX)? {
                if l.lb_arn == b.arn {
                    ops.push(Op::Delete {
                        key: format!("{LISTENER_PREFIX}{}", l.id),
                    });
                }
            }
            for r in self.list::<RuleRecord>(RULE_PREFIX)? {
                if r.lb_arn == b.arn {
                    ops.push(Op::Delete {
                        key: format!("{RULE_PREFIX}{}", r.id),
                    });
                }
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    /// Describe*/Modify*Attributes: `load` reads the record, `apply` validates and
    /// applies the `changes` (none: describe) to the map `attrs` picks; answers all
    /// attributes.
    fn attributes<T: Serialize>(
        &self,
        load: impl Fn() -> Result<(T, String), ElbError>,
        attrs: fn(&mut T) -> &mut BTreeMap<String, String>,
        apply: ApplyAttributes,
        changes: Option<&[Attribute]>,
    ) -> Result<Value, ElbError> {
        let Some(changes) = changes else {
            let (mut rec, _) = load()?;
            return Ok(json!({"Attributes": render_attributes(attrs(&mut rec))}));
        };
        let after = self.write(|ops| {
            let (mut rec, key) = load()?;
            apply(attrs(&mut rec), changes)?;
            let after = attrs(&mut rec).clone();
            put(ops, key, &rec);
            Ok(after)
        })?;
        Ok(json!({"Attributes": render_attributes(&after)}))
    }

    // -- target groups -----------------------------------------------------------------

    fn create_target_group(
        &self,
        i: CreateTargetGroupInput,
        ctx: &Context,
    ) -> Result<Value, ElbError> {
        validate::name("target group", &i.name)?;
        let target_type = i.target_type.clone().unwrap_or_else(|| "instance".into());
        if target_type != "ip" && target_type != "instance" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "berth's target groups have target type ip or instance, not '{target_type}'"
            )));
        }
        let protocol = i.protocol.clone().ok_or_else(|| {
            ElbError::Validation(
                "A protocol must be specified for target groups of type ip or instance".into(),
            )
        })?;
        if protocol != "HTTP" && protocol != "HTTPS" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "protocol '{protocol}' is not supported by application load balancer target groups: use HTTP or HTTPS"
            )));
        }
        let port = i.port.ok_or_else(|| {
            ElbError::Validation(
                "A port must be specified for target groups of type ip or instance".into(),
            )
        })?;
        let port = in_range("port", port, 1..=65535)? as u16;
        let version = i.protocol_version.clone().unwrap_or_else(|| "HTTP1".into());
        if version != "HTTP1" && version != "HTTP2" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "protocol version '{version}' is not supported: use HTTP1 or HTTP2"
            )));
        }
        let ip_type = i.ip_address_type.clone().unwrap_or_else(|| "ipv4".into());
        if ip_type != "ipv4" {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "berth's targets are IPv4 only, not '{ip_type}'"
            )));
        }
        if i.target_control_port.is_some() {
            return Err(ElbError::InvalidConfigurationRequest(
                "TargetControlPort is not supported by application load balancer target groups"
                    .into(),
            ));
        }
        validate::tags(&i.tags)?;
        let mut hc = HealthCheckRecord {
            protocol: protocol.clone(),
            port: "traffic-port".into(),
            enabled: true,
            path: "/".into(),
            interval_secs: 30,
            timeout_secs: 5,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        };
        apply_health_check(
            &mut hc,
            HealthCheckInput {
                protocol: i.health_check_protocol.clone(),
                port: i.health_check_port.clone(),
                enabled: i.health_check_enabled,
                path: i.health_check_path.clone(),
                interval: i.health_check_interval_seconds,
                timeout: i.health_check_timeout_seconds,
                healthy: i.healthy_threshold_count,
                unhealthy: i.unhealthy_threshold_count,
                matcher: i.matcher.clone(),
            },
        )?;
        let key = format!("{TG_PREFIX}{}", i.name);
        let id = random_hex(8)?;
        let vpc = i.vpc_id.clone().unwrap_or_else(|| DEFAULT_VPC.into());
        let rec = self.write(|ops| {
            if let Some(old) = self.get::<TgRecord>(&key)? {
                // CreateTargetGroup is idempotent for the same settings.
                if old.protocol == protocol
                    && old.port == port
                    && old.target_type == target_type
                    && old.health_check == hc
                {
                    return Ok(old);
                }
                return Err(ElbError::DuplicateTargetGroupName(format!(
                    "A target group with the same name '{}' exists, with other settings",
                    i.name
                )));
            }
            if self.store.list(TG_PREFIX).len() >= MAX_TARGET_GROUPS {
                return Err(ElbError::TooManyTargetGroups(format!(
                    "berth keeps at most {MAX_TARGET_GROUPS} target groups"
                )));
            }
            let rec = TgRecord {
                arn: model::arn(
                    &ctx.region,
                    &ctx.account,
                    &format!("targetgroup/{}/{id}", i.name),
                ),
                name: i.name.clone(),
                protocol: protocol.clone(),
                protocol_version: version.clone(),
                port,
                vpc_id: vpc.clone(),
                target_type: target_type.clone(),
                ip_address_type: ip_type.clone(),
                health_check: hc.clone(),
                attributes: validate::tg_attribute_defaults(),
                tags: i.tags.clone(),
                targets: vec![],
            };
            put(ops, key.clone(), &rec);
            Ok(rec)
        })?;
        Ok(json!({"TargetGroups": [render_tg(&rec, None)]}))
    }

    fn describe_target_groups(&self, i: DescribeTargetGroupsInput) -> Result<Value, ElbError> {
        let s = self.snapshot()?;
        let users = convert::target_group_users(&s);
        let given = [
            i.load_balancer_arn.is_some(),
            i.target_group_arns.is_some(),
            i.names.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ElbError::Validation(
                "give at most one of LoadBalancerArn, TargetGroupArns and Names".into(),
            ));
        }
        let mut chosen: Vec<TgRecord> = if let Some(lb) = &i.load_balancer_arn {
            self.lb(lb)?;
            s.tgs
                .iter()
                .filter(|t| users.get(&t.arn).is_some_and(|u| u.contains(lb)))
                .cloned()
                .collect()
        } else if let Some(arns) = &i.target_group_arns {
            arns.iter()
                .map(|a| self.tg(a).map(|(t, _)| t))
                .collect::<Result<_, _>>()?
        } else if let Some(names) = &i.names {
            names
                .iter()
                .map(|n| {
                    s.tgs.iter().find(|t| &t.name == n).cloned().ok_or_else(|| {
                        ElbError::TargetGroupNotFound(format!("Target groups '[{n}]' not found"))
                    })
                })
                .collect::<Result<_, _>>()?
        } else {
            s.tgs.clone()
        };
        if i.target_group_arns.is_none() && i.names.is_none() {
            chosen.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let (items, next) = page(&chosen, i.marker.as_deref(), i.page_size)?;
        Ok(json!({
            "TargetGroups": items.iter().map(|t| render_tg(t, users.get(&t.arn))).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    fn modify_target_group(&self, i: ModifyTargetGroupInput) -> Result<Value, ElbError> {
        let rec = self.write(|ops| {
            let (mut t, key) = self.tg(&i.target_group_arn)?;
            apply_health_check(
                &mut t.health_check,
                HealthCheckInput {
                    protocol: i.health_check_protocol.clone(),
                    port: i.health_check_port.clone(),
                    enabled: i.health_check_enabled,
                    path: i.health_check_path.clone(),
                    interval: i.health_check_interval_seconds,
                    timeout: i.health_check_timeout_seconds,
                    healthy: i.healthy_threshold_count,
                    unhealthy: i.unhealthy_threshold_count,
                    matcher: i.matcher.clone(),
                },
            )?;
            put(ops, key, &t);
            Ok(t)
        })?;
        let users = convert::target_group_users(&self.snapshot()?);
        Ok(json!({"TargetGroups": [render_tg(&rec, users.get(&rec.arn))]}))
    }

    fn delete_target_group(&self, i: TgArnInput) -> Result<Value, ElbError> {
        if !matches!(
            parse_arn(&i.target_group_arn),
            Some(ArnRef::TargetGroup { .. })
        ) {
            return Err(not_valid_arn("target group", &i.target_group_arn));
        }
        self.write(|ops| {
            // Deleting a target group that does not exist succeeds, as in ELB.
            let (t, key) = match self.tg(&i.target_group_arn) {
                Ok(found) => found,
                Err(ElbError::TargetGroupNotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let users = convert::target_group_users(&self.snapshot()?);
            if let Some(lbs) = users.get(&t.arn) {
                return Err(ElbError::ResourceInUse(format!(
                    "Target group '{}' is currently in use by a listener or a rule (load balancer {})",
                    t.arn,
                    lbs.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            ops.push(Op::Delete { key });
            Ok(())
        })?;
        Ok(json!({}))
    }

    // -- targets -----------------------------------------------------------------------

    /// `(id, port)` of a target description, validated against its group.
    fn target(t: &TgRecord, d: &TargetDescription) -> Result<(String, u16), ElbError> {
        let port = match d.port {
            Some(p) => in_range("port", p, 1..=65535)? as u16,
            None => t.port,
        };
        let ok = if t.target_type == "ip" {
            d.id.parse::<Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast())
        } else {
            d.id.starts_with("i-")
                && d.id.len() <= 64
                && d.id[2..].bytes().all(|b| b.is_ascii_alphanumeric())
                && d.id.len() > 2
        };
        if !ok {
            let want = if t.target_type == "ip" {
                "an IPv4 address"
            } else {
                "an instance id (i-…)"
            };
            return Err(ElbError::InvalidTarget(format!(
                "The following targets are not valid: '{}': a target of group '{}' is {want}",
                d.id.chars().take(80).collect::<String>(),
                t.name
            )));
        }
        Ok((d.id.clone(), port))
    }

    /// An `instance` target must name a container instance (`hosts`: the instances'
    /// addresses, `None` when the server has no instances to check against).
    fn check_instance(
        t: &TgRecord,
        id: &str,
        hosts: Option<&HashMap<String, String>>,
    ) -> Result<(), ElbError> {
        if t.target_type != "instance" || hosts.is_none_or(|h| h.contains_key(id)) {
            return Ok(());
        }
        Err(ElbError::InvalidTarget(format!(
            "The following targets are not valid instances: '{id}': no container instance has this ec2InstanceId (see aws ecs describe-container-instances)"
        )))
    }

    fn register_targets(&self, i: TargetsInput) -> Result<Value, ElbError> {
        if i.targets.is_empty() {
            return Err(ElbError::Validation(
                "Targets needs at least one target".into(),
            ));
        }
        let hosts = self.instance_addresses();
        self.write(|ops| {
            let (mut t, key) = self.tg(&i.target_group_arn)?;
            let now = now_ms();
            let tg = t.clone();
            t.targets.retain(|x| convert::present(&tg, x, now));
            for d in &i.targets {
                let (id, port) = Self::target(&t, d)?;
                Self::check_instance(&t, &id, hosts.as_ref())?;
                match t.targets.iter_mut().find(|x| x.id == id && x.port == port) {
                    Some(x) if x.deregistered_at_ms.is_some() => {
                        x.deregistered_at_ms = None;
                        x.registered_ms = now;
                    }
                    Some(_) => {}
                    None => t.targets.push(TargetRecord {
                        id,
                        port,
                        availability_zone: d.availability_zone.clone(),
                        registered_ms: now,
                        deregistered_at_ms: None,
                    }),
                }
            }
            let active = t
                .targets
                .iter()
                .filter(|x| x.deregistered_at_ms.is_none())
                .count();
            if active > MAX_TARGETS {
                return Err(ElbError::TooManyTargets(format!(
                    "a target group has at most {MAX_TARGETS} targets; this would make {active}"
                )));
            }
            put(ops, key, &t);
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn deregister_targets(&self, i: TargetsInput) -> Result<Value, ElbError> {
        if i.targets.is_empty() {
            return Err(ElbError::Validation(
                "Targets needs at least one target".into(),
            ));
        }
        self.write(|ops| {
            let (mut t, key) = self.tg(&i.target_group_arn)?;
            let now = now_ms();
            let delay = convert::deregistration_delay_secs(&t);
            let tg = t.clone();
            t.targets.retain(|x| convert::present(&tg, x, now));
            for d in &i.targets {
                let (id, port) = Self::target(&t, d)?;
                match t.targets.iter_mut().find(|x| x.id == id && x.port == port) {
                    Some(x) => {
                        x.deregistered_at_ms.get_or_insert(now);
                    }
                    None => {
                        return Err(ElbError::InvalidTarget(format!(
                            "The following targets are not registered in target group '{}': '{id}:{port}'",
                            t.name
                        )))
                    }
                }
            }
            if delay == 0 {
                t.targets.retain(|x| x.deregistered_at_ms.is_none());
            }
            put(ops, key, &t);
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn describe_target_health(&self, i: DescribeTargetHealthInput) -> Result<Value, ElbError> {
        if let Some(inc) = &i.include {
            if let Some(bad) = inc.iter().find(|x| *x != "AnomalyDetection" && *x != "All") {
                return Err(ElbError::Validation(format!(
                    "Include '{bad}' must be AnomalyDetection or All"
                )));
            }
        }
        let (t, _) = self.tg(&i.target_group_arn)?;
        let in_use = convert::target_group_users(&self.snapshot()?).contains_key(&t.arn);
        let source = self
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = now_ms();
        let current: Vec<&TargetRecord> = t
            .targets
            .iter()
            .filter(|x| convert::present(&t, x, now))
            .collect();
        let asked: Vec<(String, u16, Option<String>)> = match &i.targets {
            Some(list) => list
                .iter()
                .map(|d| {
                    Self::target(&t, d).map(|(id, port)| (id, port, d.availability_zone.clone()))
                })
                .collect::<Result<_, _>>()?,
            None => current
                .iter()
                .map(|x| (x.id.clone(), x.port, x.availability_zone.clone()))
                .collect(),
        };
        let descriptions: Vec<Value> = asked
            .iter()
            .map(|(id, port, az)| {
                let health = match current.iter().find(|x| &x.id == id && x.port == *port) {
                    Some(x) => {
                        let reported = source.as_ref().and_then(|s| s.health(&t.arn, id, *port));
                        convert::target_health(x, in_use, t.health_check.enabled, reported)
                    }
                    None => convert::not_registered(),
                };
                let hc_port = if t.health_check.port == "traffic-port" {
                    port.to_string()
                } else {
                    t.health_check.port.clone()
                };
                json!({
                    "Target": {"Id": id, "Port": port, "AvailabilityZone": az},
                    "HealthCheckPort": hc_port,
                    "TargetHealth": {
                        "State": health.state.as_str(),
                        "Reason": health.reason,
                        "Description": health.description,
                    },
                })
            })
            .collect();
        Ok(json!({"TargetHealthDescriptions": descriptions}))
    }

    // -- listeners ---------------------------------------------------------------------

    /// A listener's protocol: HTTP only (berth keeps no certificates, so HTTPS needs
    /// one it cannot find).
    fn listener_protocol(
        protocol: &str,
        certificates: &Option<Vec<Certificate>>,
    ) -> Result<(), ElbError> {
        match protocol {
            "HTTP" => {
                if certificates.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(ElbError::InvalidConfigurationRequest(
                        "an HTTP listener takes no certificates".into(),
                    ));
                }
                Ok(())
            }
            "HTTPS" => match certificates.as_ref().and_then(|c| c.first()) {
                None => Err(ElbError::CertificateNotFound(
                    "A certificate must be specified for HTTPS listeners".into(),
                )),
                Some(c) => Err(ElbError::CertificateNotFound(format!(
                    "Certificate '{}' not found: berth keeps no certificates, so it serves HTTP listeners only",
                    c.certificate_arn.clone().unwrap_or_default()
                ))),
            },
            other => Err(ElbError::UnsupportedProtocol(format!(
                "Protocol '{}' is not supported by application load balancers: use HTTP",
                other.chars().take(20).collect::<String>()
            ))),
        }
    }

    /// The listener holding `port` on any load balancer (they all bind one address),
    /// other than `except`.
    fn port_holder(
        &self,
        port: u16,
        except: Option<&str>,
    ) -> Result<Option<ListenerRecord>, ElbError> {
        Ok(self
            .list::<ListenerRecord>(LISTENER_PREFIX)?
            .into_iter()
            .find(|l| l.port == port && Some(l.id.as_str()) != except))
    }

    fn create_listener(&self, i: CreateListenerInput) -> Result<Value, ElbError> {
        let protocol = i.protocol.clone().ok_or_else(|| {
            ElbError::Validation(
                "A listener protocol must be specified for application load balancers".into(),
            )
        })?;
        let port = in_range(
            "port",
            i.port
                .ok_or_else(|| ElbError::Validation("A listener port must be specified".into()))?,
            1..=65535,
        )? as u16;
        Self::listener_protocol(&protocol, &i.certificates)?;
        if i.ssl_policy.is_some() || i.alpn_policy.is_some() || i.mutual_authentication.is_some() {
            return Err(ElbError::InvalidConfigurationRequest(
                "SslPolicy, AlpnPolicy and MutualAuthentication apply to HTTPS listeners, which berth does not serve".into(),
            ));
        }
        validate::tags(&i.tags)?;
        let id = random_hex(8)?;
        let rule_id = random_hex(8)?;
        let rec = self.write(|ops| {
            let (b, _) = self.lb(&i.load_balancer_arn)?;
            let actions = self.check_actions(&i.default_actions, &b.arn)?;
            if let Some(h) = self.port_holder(port, None)? {
                if h.lb_arn == b.arn && h.protocol == protocol && h.default_actions == actions {
                    // CreateListener is idempotent for the same settings.
                    return Ok(h);
                }
                return Err(ElbError::DuplicateListener(format!(
                    "A listener already exists on port {port}: {} (load balancers share one address, so a port has one listener across all of them)",
                    h.arn
                )));
            }
            let count = self.list::<ListenerRecord>(LISTENER_PREFIX)?.iter().filter(|l| l.lb_arn == b.arn).count();
            if count >= MAX_LISTENERS {
                return Err(ElbError::TooManyListeners(format!(
                    "a load balancer has at most {MAX_LISTENERS} listeners"
                )));
            }
            let rec = ListenerRecord {
                arn: model::listener_arn(&b.arn, &id),
                id: id.clone(),
                lb_arn: b.arn.clone(),
                port,
                protocol: protocol.clone(),
                default_actions: actions,
                default_rule_id: rule_id.clone(),
                tags: i.tags.clone(),
                default_rule_tags: vec![],
            };
            put(ops, format!("{LISTENER_PREFIX}{id}"), &rec);
            Ok(rec)
        })?;
        Ok(json!({"Listeners": [render_listener(&rec)]}))
    }

    fn describe_listeners(&self, i: DescribeListenersInput) -> Result<Value, ElbError> {
        let chosen: Vec<ListenerRecord> = match (&i.load_balancer_arn, &i.listener_arns) {
            (Some(_), Some(_)) => {
                return Err(ElbError::Validation(
                    "give LoadBalancerArn or ListenerArns, not both".into(),
                ))
            }
            (Some(lb), None) => {
                self.lb(lb)?;
                let mut ls: Vec<ListenerRecord> = self
                    .list::<ListenerRecord>(LISTENER_PREFIX)?
                    .into_iter()
                    .filter(|l| &l.lb_arn == lb)
                    .collect();
                ls.sort_by_key(|l| l.port);
                ls
            }
            (None, Some(arns)) => arns
                .iter()
                .map(|a| self.listener(a).map(|(l, _)| l))
                .collect::<Result<_, _>>()?,
            (None, None) => {
                return Err(ElbError::Validation(
                    "give a LoadBalancerArn or ListenerArns".into(),
                ))
            }
        };
        let (items, next) = page(&chosen, i.marker.as_deref(), i.page_size)?;
        Ok(json!({
            "Listeners": items.iter().map(render_listener).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    fn modify_listener(&self, i: ModifyListenerInput) -> Result<Value, ElbError> {
        if i.ssl_policy.is_some() || i.alpn_policy.is_some() || i.mutual_authentication.is_some() {
            return Err(ElbError::InvalidConfigurationRequest(
                "SslPolicy, AlpnPolicy and MutualAuthentication apply to HTTPS listeners, which berth does not serve".into(),
            ));
        }
        let port = i
            .port
            .map(|p| in_range("port", p, 1..=65535))
            .transpose()?
            .map(|p| p as u16);
        let rec = self.write(|ops| {
            let (mut l, key) = self.listener(&i.listener_arn)?;
            let protocol = i.protocol.clone().unwrap_or_else(|| l.protocol.clone());
            Self::listener_protocol(&protocol, &i.certificates)?;
            l.protocol = protocol;
            if let Some(p) = port {
                if let Some(h) = self.port_holder(p, Some(&l.id))? {
                    return Err(ElbError::DuplicateListener(format!(
                        "A listener already exists on port {p}: {} (load balancers share one address, so a port has one listener across all of them)",
                        h.arn
                    )));
                }
                l.port = p;
            }
            if let Some(a) = &i.default_actions {
                l.default_actions = self.check_actions(a, &l.lb_arn)?;
            }
            put(ops, key, &l);
            Ok(l)
        })?;
        Ok(json!({"Listeners": [render_listener(&rec)]}))
    }

    fn delete_listener(&self, i: ListenerArnInput) -> Result<Value, ElbError> {
        self.write(|ops| {
            let (l, key) = self.listener(&i.listener_arn)?;
            ops.push(Op::Delete { key });
            for r in self.list::<RuleRecord>(RULE_PREFIX)? {
                if r.listener_id == l.id {
                    ops.push(Op::Delete {
                        key: format!("{RULE_PREFIX}{}", r.id),
                    });
                }
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    // -- rules -------------------------------------------------------------------------

    fn normalized_conditions(cs: &[RuleCondition]) -> Result<Vec<RuleCondition>, ElbError> {
        Ok(validate::conditions(cs)?
            .iter()
            .map(validate::render_condition)
            .collect())
    }

    fn create_rule(&self, i: CreateRuleInput) -> Result<Value, ElbError> {
        if i.transforms.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ElbError::InvalidConfigurationRequest(
                "berth does not run rule Transforms".into(),
            ));
        }
        let priority = in_range("priority", i.priority, 1..=50_000)? as u32;
        let conditions = Self::normalized_conditions(&i.conditions)?;
        validate::tags(&i.tags)?;
        let id = random_hex(8)?;
        let rec = self.write(|ops| {
            let (l, _) = self.listener(&i.listener_arn)?;
            let actions = self.check_actions(&i.actions, &l.lb_arn)?;
            let mine: Vec<RuleRecord> = self
                .list::<RuleRecord>(RULE_PREFIX)?
                .into_iter()
                .filter(|r| r.listener_id == l.id)
                .collect();
            if mine.iter().any(|r| r.priority == priority) {
                return Err(ElbError::PriorityInUse(format!(
                    "Priority '{priority}' is currently in use"
                )));
            }
            if mine.len() >= MAX_RULES {
                return Err(ElbError::TooManyRules(format!(
                    "a listener has at most {MAX_RULES} rules besides its default rule"
                )));
            }
            let rec = RuleRecord {
                arn: model::rule_arn(&l.arn, &id),
                id: id.clone(),
                listener_id: l.id.clone(),
                lb_arn: l.lb_arn.clone(),
                priority,
                conditions: conditions.clone(),
                actions,
                tags: i.tags.clone(),
            };
            put(ops, format!("{RULE_PREFIX}{id}"), &rec);
            Ok(rec)
        })?;
        Ok(json!({"Rules": [render_rule(&rec)]}))
    }

    fn describe_rules(&self, i: DescribeRulesInput) -> Result<Value, ElbError> {
        let chosen: Vec<Value> = match (&i.listener_arn, &i.rule_arns) {
            (Some(_), Some(_)) => {
                return Err(ElbError::Validation(
                    "give ListenerArn or RuleArns, not both".into(),
                ))
            }
            (Some(la), None) => {
                let (l, _) = self.listener(la)?;
                let mut rs: Vec<RuleRecord> = self
                    .list::<RuleRecord>(RULE_PREFIX)?
                    .into_iter()
                    .filter(|r| r.listener_id == l.id)
                    .collect();
                rs.sort_by_key(|r| r.priority);
                rs.iter()
                    .map(render_rule)
                    .chain([render_default_rule(&l)])
                    .collect()
            }
            (None, Some(arns)) => arns
                .iter()
                .map(|a| {
                    self.rule(a).map(|r| match r {
                        Ok((r, _)) => render_rule(&r),
                        Err((l, _)) => render_default_rule(&l),
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, None) => {
                return Err(ElbError::Validation(
                    "give a ListenerArn or RuleArns".into(),
                ))
            }
        };
        let (items, next) = page(&chosen, i.marker.as_deref(), i.page_size)?;
        Ok(json!({"Rules": items, "NextMarker": next}))
    }

    fn modify_rule(&self, i: ModifyRuleInput) -> Result<Value, ElbError> {
        if i.transforms.as_ref().is_some_and(|t| !t.is_empty()) || i.reset_transforms == Some(true)
        {
            return Err(ElbError::InvalidConfigurationRequest(
                "berth does not run rule Transforms".into(),
            ));
        }
        let conditions = i
            .conditions
            .as_deref()
            .map(Self::normalized_conditions)
            .transpose()?;
        let out = self.write(|ops| match self.rule(&i.rule_arn)? {
            Ok((mut r, key)) => {
                if let Some(c) = &conditions {
                    r.conditions = c.clone();
                }
                if let Some(a) = &i.actions {
                    r.actions = self.check_actions(a, &r.lb_arn)?;
                }
                put(ops, key, &r);
                Ok(render_rule(&r))
            }
            Err((mut l, key)) => {
                if conditions.is_some() {
                    return Err(ElbError::OperationNotPermitted(
                        "the conditions of a default rule cannot be modified".into(),
                    ));
                }
                if let Some(a) = &i.actions {
                    l.default_actions = self.check_actions(a, &l.lb_arn)?;
                }
                put(ops, key, &l);
                Ok(render_default_rule(&l))
            }
        })?;
        Ok(json!({"Rules": [out]}))
    }

    fn delete_rule(&self, i: RuleArnInput) -> Result<Value, ElbError> {
        self.write(|ops| match self.rule(&i.rule_arn)? {
            Ok((_, key)) => {
                ops.push(Op::Delete { key });
                Ok(())
            }
            Err(_) => Err(ElbError::OperationNotPermitted(
                "The default rule cannot be deleted".into(),
            )),
        })?;
        Ok(json!({}))
    }

    fn set_rule_priorities(&self, i: SetRulePrioritiesInput) -> Result<Value, ElbError> {
        if i.rule_priorities.is_empty() {
            return Err(ElbError::Validation(
                "RulePriorities needs at least one pair".into(),
            ));
        }
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for p in &i.rule_priorities {
            let arn = p
                .rule_arn
                .clone()
                .ok_or_else(|| ElbError::Validation("a RulePriorityPair needs a RuleArn".into()))?;
            let pr = p.priority.ok_or_else(|| {
                ElbError::Validation("a RulePriorityPair needs a Priority".into())
            })?;
            let pr = in_range("priority", pr, 1..=50_000)? as u32;
            if wanted.iter().any(|(a, _)| *a == arn) {
                return Err(ElbError::Validation(format!("rule '{arn}' is given twice")));
            }
            wanted.push((arn, pr));
        }
        let rules = self.write(|ops| {
            let mut changed: Vec<RuleRecord> = Vec::new();
            for (arn, pr) in &wanted {
                match self.rule(arn)? {
                    Ok((mut r, _)) => {
                        r.priority = *pr;
                        changed.push(r);
                    }
                    Err(_) => {
                        return Err(ElbError::OperationNotPermitted(
                            "The default rule's priority cannot be set".into(),
                        ))
                    }
                }
            }
            let all: Vec<RuleRecord> = self.list(RULE_PREFIX)?;
            let mut taken: BTreeSet<(String, u32)> = all
                .iter()
                .filter(|r| !changed.iter().any(|c| c.id == r.id))
                .map(|r| (r.listener_id.clone(), r.priority))
                .collect();
            for r in &changed {
                if !taken.insert((r.listener_id.clone(), r.priority)) {
                    return Err(ElbError::PriorityInUse(format!(
                        "Priority '{}' is currently in use",
                        r.priority
                    )));
                }
            }
            for r in &changed {
                put(ops, format!("{RULE_PREFIX}{}", r.id), r);
            }
            Ok(changed)
        })?;
        Ok(json!({"Rules": rules.iter().map(render_rule).collect::<Vec<_>>()}))
    }

    // -- tags --------------------------------------------------------------------------

    /// Reads, changes and (with `ops`) writes the tags of the resource `arn`.
    fn with_tags(
        &self,
        arn: &str,
        ops: Option<&mut Vec<Op>>,
        f: impl FnOnce(&mut Vec<Tag>) -> Result<(), ElbError>,
    ) -> Result<Vec<Tag>, ElbError> {
        let kind = parse_arn(arn).ok_or_else(|| not_valid_arn("resource", arn))?;
        macro_rules! apply {
            ($rec:expr, $key:expr, $field:ident) => {{
                let (mut rec, key) = ($rec, $key);
                f(&mut rec.$field)?;
                if let Some(ops) = ops {
                    put(ops, key, &rec);
                }
                Ok(rec.$field)
            }};
        }
        match kind {
            ArnRef::LoadBalancer { .. } => {
                let (b, k) = self.lb(arn)?;
                apply!(b, k, tags)
            }
            ArnRef::TargetGroup { .. } => {
                let (t, k) = self.tg(arn)?;
                apply!(t, k, tags)
            }
            ArnRef::Listener { .. } => {
                let (l, k) = self.listener(arn)?;
                apply!(l, k, tags)
            }
            ArnRef::Rule { .. } => match self.rule(arn)? {
                Ok((r, k)) => apply!(r, k, tags),
                Err((l, k)) => apply!(l, k, default_rule_tags),
            },
        }
    }

    fn tag_arns(arns: &[String]) -> Result<(), ElbError> {
        if arns.is_empty() || arns.len() > MAX_TAG_RESOURCES {
            return Err(ElbError::Validation(format!(
                "ResourceArns takes 1 to {MAX_TAG_RESOURCES} ARNs"
            )));
        }
        Ok(())
    }

    fn add_tags(&self, i: TagsInput) -> Result<Value, ElbError> {
        Self::tag_arns(&i.resource_arns)?;
        if i.tags.is_empty() || !i.tag_keys.is_empty() {
            return Err(ElbError::Validation(
                "AddTags takes Tags (at least one)".into(),
            ));
        }
        validate::tags(&i.tags)?;
        self.write(|ops| {
            for arn in &i.resource_arns {
                self.with_tags(arn, Some(&mut *ops), |t| {
                    *t = validate::merge_tags(t, &i.tags)?;
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn remove_tags(&self, i: TagsInput) -> Result<Value, ElbError> {
        Self::tag_arns(&i.resource_arns)?;
        if i.tag_keys.is_empty() || !i.tags.is_empty() {
            return Err(ElbError::Validation(
                "RemoveTags takes TagKeys (at least one)".into(),
            ));
        }
        self.write(|ops| {
            for arn in &i.resource_arns {
                self.with_tags(arn, Some(&mut *ops), |t| {
                    t.retain(|x| !i.tag_keys.contains(&x.key));
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn describe_tags(&self, i: TagsInput) -> Result<Value, ElbError> {
        Self::tag_arns(&i.resource_arns)?;
        if !i.tags.is_empty() || !i.tag_keys.is_empty() {
            return Err(ElbError::Validation(
                "DescribeTags takes ResourceArns only".into(),
            ));
        }
        let out: Vec<Value> = i
            .resource_arns
            .iter()
            .map(|arn| {
                let tags = self.with_tags(arn, None, |_| Ok(()))?;
                Ok(json!({"ResourceArn": arn, "Tags": tags}))
            })
            .collect::<Result<_, ElbError>>()?;
        Ok(json!({"TagDescriptions": out}))
    }
}

#[cfg(test)]
mod tests;
