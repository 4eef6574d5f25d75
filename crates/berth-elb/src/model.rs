//! The model's shapes berth reads and writes (member names as botocore's `elbv2`
//! model spells them), the records kept in the store, and ARNs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ElbError;

// ---------------------------------------------------------------------------------------
// Shapes shared by input, storage and output
// ---------------------------------------------------------------------------------------

/// `Tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `Action`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_config: Option<RedirectConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response_config: Option<FixedResponseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_config: Option<ForwardConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate_oidc_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate_cognito_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_validation_config: Option<Value>,
}

/// `RedirectActionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub status_code: String,
}

/// `FixedResponseActionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FixedResponseConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
    pub status_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `ForwardActionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ForwardConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_groups: Option<Vec<TargetGroupTuple>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_stickiness_config: Option<StickinessConfig>,
}

/// `TargetGroupTuple`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetGroupTuple {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

/// `TargetGroupStickinessConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StickinessConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

/// `RuleCondition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RuleCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header_config: Option<ValuesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern_config: Option<ValuesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_config: Option<HttpHeaderConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_string_config: Option<QueryStringConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request_method_config: Option<ValuesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_config: Option<ValuesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_values: Option<Vec<String>>,
}

/// `PathPatternConditionConfig`, `HostHeaderConditionConfig`,
/// `HttpRequestMethodConditionConfig` and `SourceIpConditionConfig` (their members
/// together; validation refuses the ones a field does not have).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ValuesConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
}

/// `HttpHeaderConditionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpHeaderConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_values: Option<Vec<String>>,
}

/// `QueryStringConditionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueryStringConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<KeyValue>>,
}

/// `QueryStringKeyValuePair`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct KeyValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `TargetDescription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetDescription {
    pub id: String,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub quic_server_id: Option<String>,
}

/// `Matcher`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Matcher {
    #[serde(default)]
    pub http_code: Option<String>,
    #[serde(default)]
    pub grpc_code: Option<String>,
}

/// `LoadBalancerAttribute` and `TargetGroupAttribute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Attribute {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// `Certificate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Certificate {
    #[serde(default)]
    pub certificate_arn: Option<String>,
    #[serde(default)]
    pub is_default: Option<bool>,
}

// ---------------------------------------------------------------------------------------
// Records (the store's JSON documents)
// ---------------------------------------------------------------------------------------

/// `/elb/loadbalancers/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbRecord {
    pub arn: String,
    pub name: String,
    pub dns_name: String,
    pub scheme: String,
    pub ip_address_type: String,
    pub vpc_id: String,
    /// Recorded, not enforced: berth has no VPC.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub region: String,
    pub created_ms: u64,
    pub attributes: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
}

/// A target group's health check (the model's `HealthCheck*` members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckRecord {
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub enabled: bool,
    pub path: String,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// `Matcher.HttpCode`: `200`, `200,204`, `200-299`.
    pub matcher: String,
}

/// A registered target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub id: String,
    pub port: u16,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub registered_ms: u64,
    /// Set by DeregisterTargets: draining until the deregistration delay has passed.
    #[serde(default)]
    pub deregistered_at_ms: Option<u64>,
}

/// `/elb/targetgroups/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TgRecord {
    pub arn: String,
    pub name: String,
    pub protocol: String,
    pub protocol_version: String,
    pub port: u16,
    pub vpc_id: String,
    pub target_type: String,
    pub ip_address_type: String,
    pub health_check: HealthCheckRecord,
    pub attributes: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
    pub targets: Vec<TargetRecord>,
}

/// `/elb/listeners/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerRecord {
    pub arn: String,
    pub id: String,
    pub lb_arn: String,
    pub port: u16,
    pub protocol: String,
    /// Normalized (as DescribeListeners renders them).
    pub default_actions: Vec<Action>,
    /// The id of the listener's default rule (its ARN is the listener's rule prefix
    /// and this id).
    pub default_rule_id: String,
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub default_rule_tags: Vec<Tag>,
}

/// `/elb/rules/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub arn: String,
    pub id: String,
    pub listener_id: String,
    pub lb_arn: String,
    pub priority: u32,
    /// Normalized (as DescribeRules renders them).
    pub conditions: Vec<RuleCondition>,
    pub actions: Vec<Action>,
    pub tags: Vec<Tag>,
}

// ---------------------------------------------------------------------------------------
// ARNs
// ---------------------------------------------------------------------------------------

/// What an ELB ARN names (the parts berth keys records by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArnRef {
    LoadBalancer { name: String },
    TargetGroup { name: String },
    Listener { id: String },
    Rule { listener_id: String, id: String },
}

/// Parses `arn:aws:elasticloadbalancing:<region>:<account>:<resource>`; `None` if it is
/// not an ELB ARN of an application load balancer's resources.
pub fn parse_arn(arn: &str) -> Option<ArnRef> {
    let mut parts = arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(_partition),
        Some("elasticloadbalancing"),
        Some(_r),
        Some(_a),
        Some(res),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return None;
    };
    let segs: Vec<&str> = res.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segs.as_slice() {
        ["loadbalancer", "app", name, _id] => Some(ArnRef::LoadBalancer {
            name: name.to_string(),
        }),
        ["targetgroup", name, _id] => Some(ArnRef::TargetGroup {
            name: name.to_string(),
        }),
        ["listener", "app", _lb, _lbid, id] => Some(ArnRef::Listener { id: id.to_string() }),
        ["listener-rule", "app", _lb, _lbid, lid, id] => Some(ArnRef::Rule {
            listener_id: lid.to_string(),
            id: id.to_string(),
        }),
        _ => None,
    }
}

/// The ARN prefix of an ELB resource in `region`/`account`.
pub fn arn(region: &str, account: &str, resource: &str) -> String {
    format!("arn:aws:elasticloadbalancing:{region}:{account}:{resource}")
}

/// `listener/app/<lb>/<lbid>` ← `loadbalancer/app/<lb>/<lbid>`; the listener ARN of
/// `id` under load balancer `lb_arn`.
pub fn listener_arn(lb_arn: &str, id: &str) -> String {
    format!(
        "{}/{id}",
        lb_arn.replacen(":loadbalancer/", ":listener/", 1)
    )
}

/// The ARN of rule `id` of listener `listener_arn`.
pub fn rule_arn(listener_arn: &str, id: &str) -> String {
    format!(
        "{}/{id}",
        listener_arn.replacen(":listener/", ":listener-rule/", 1)
    )
}

/// Reads a field that must be a number out of `Option<i64>` within `range`, in the
/// model's validation-error wording.
pub fn in_range(name: &str, v: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ElbError> {
    if v < *range.start() {
        return Err(ElbError::Validation(format!(
            "1 validation error detected: Value '{v}' at '{name}' failed to satisfy constraint: Member must have value greater than or equal to {}",
            range.start()
        )));
    }
    if v > *range.end() {
        return Err(ElbError::Validation(format!(
            "1 validation error detected: Value '{v}' at '{name}' failed to satisfy constraint: Member must have value less than or equal to {}",
            range.end()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ARNs of each kind parse to the parts records are keyed by; others are refused.
    #[test]
    fn arns() {
        let lb = arn(
            "us-east-1",
            "123456789012",
            "loadbalancer/app/web/0123456789abcdef",
        );
        assert_eq!(
            parse_arn(&lb),
            Some(ArnRef::LoadBalancer { name: "web".into() })
        );
        let l = listener_arn(&lb, "aaaa");
        assert_eq!(
            l,
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/0123456789abcdef/aaaa"
        );
        assert_eq!(parse_arn(&l), Some(ArnRef::Listener { id: "aaaa".into() }));
        let r = rule_arn(&l, "bbbb");
        assert_eq!(
            parse_arn(&r),
            Some(ArnRef::Rule {
                listener_id: "aaaa".into(),
                id: "bbbb".into()
            })
        );
        let tg = arn("us-east-1", "1", "targetgroup/users/00ff");
        assert_eq!(
            parse_arn(&tg),
            Some(ArnRef::TargetGroup {
                name: "users".into()
            })
        );
        for bad in [
            "",
            "web",
            "arn:aws:ecs:us-east-1:1:cluster/x",
            "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/x/1",
            "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup//1",
            "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/a/b",
        ] {
            assert_eq!(parse_arn(bad), None, "{bad}");
        }
    }
}
