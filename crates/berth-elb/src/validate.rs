//! Pure validation of what callers send: names, rule conditions and actions (into the
//! data plane's [`berth_lb::config`] types, and back into the model's normalized
//! shapes), health checks, attributes and tags — with ELB's limits and defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use berth_lb::config::{self as lb, WeightedTargetGroup};

use crate::error::ElbError;
use crate::model::{
    in_range, Action, Attribute, FixedResponseConfig, ForwardConfig, HttpHeaderConfig, KeyValue,
    QueryStringConfig, RedirectConfig, RuleCondition, StickinessConfig, Tag, TargetGroupTuple,
    ValuesConfig,
};

/// ELB's limit of condition values per rule (all conditions together).
pub const MAX_CONDITION_VALUES: usize = 5;
/// ELB's limit of target groups in one forward action.
pub const MAX_FORWARD_TARGET_GROUPS: usize = 5;
/// ELB's limit of tags per resource.
pub const MAX_TAGS: usize = 50;
/// Longest condition value ELB accepts.
const MAX_VALUE_LEN: usize = 128;
/// Longest fixed-response body ELB accepts (bytes).
const MAX_FIXED_BODY: usize = 1024;
/// Content types a fixed response may have (the model's documentation).
const FIXED_CONTENT_TYPES: [&str; 5] = [
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

fn invalid(msg: impl Into<String>) -> ElbError {
    ElbError::Validation(msg.into())
}

/// A load balancer or target group name: 1-32 alphanumerics and hyphens, not starting
/// or ending with a hyphen (and a load balancer's not starting with `internal-`).
pub fn name(kind: &str, n: &str) -> Result<(), ElbError> {
    let ok = !n.is_empty()
        && n.len() <= 32
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && (kind != "load balancer" || !n.starts_with("internal-"));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} name '{}' is not valid: use 1-32 alphanumeric characters or hyphens, not beginning or ending with a hyphen",
            n.chars().take(64).collect::<String>()
        )))
    }
}

/// Tags: at most 50, keys 1-128 characters, values at most 256, no key twice.
pub fn tags(tags: &[Tag]) -> Result<(), ElbError> {
    if tags.len() > MAX_TAGS {
        return Err(ElbError::TooManyTags(format!(
            "a resource can have at most {MAX_TAGS} tags, got {}",
            tags.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(invalid(format!(
                "tag '{}' is not valid: keys are 1-128 characters and values at most 256",
                t.key.chars().take(64).collect::<String>()
            )));
        }
        if !seen.insert(t.key.as_str()) {
            return Err(ElbError::DuplicateTagKeys(format!(
                "tag key '{}' is given more than once",
                t.key
            )));
        }
    }
    Ok(())
}

/// `old` with `add` put over it (same key: replaced), at most 50 in all.
pub fn merge_tags(old: &[Tag], add: &[Tag]) -> Result<Vec<Tag>, ElbError> {
    tags(add)?;
    let mut out: Vec<Tag> = old
        .iter()
        .filter(|t| !add.iter().any(|a| a.key == t.key))
        .cloned()
        .collect();
    out.extend(add.iter().cloned());
    if out.len() > MAX_TAGS {
        return Err(ElbError::TooManyTags(format!(
            "a resource can have at most {MAX_TAGS} tags; this would make {}",
            out.len()
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

fn check_values(field: &str, values: &[String], ok: impl Fn(&str) -> bool) -> Result<(), ElbError> {
    if values.is_empty() {
        return Err(invalid(format!(
            "a '{field}' condition needs at least one value"
        )));
    }
    for v in values {
        if v.is_empty() || v.chars().count() > MAX_VALUE_LEN || !ok(v) {
            return Err(invalid(format!(
                "'{}' is not a valid value for a '{field}' condition",
                v.chars().take(MAX_VALUE_LEN + 8).collect::<String>()
            )));
        }
    }
    Ok(())
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.$/~\"'@:+&*?".contains(c)
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.*?".contains(c)
}

fn method_char(c: char) -> bool {
    c.is_ascii_uppercase() || c == '_' || c == '-'
}

fn header_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<Ipv4Addr>().is_ok()
        && !len.is_empty()
        && len.len() <= 2
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|n| n <= 32)
}

/// `Values` or `<Kind>Config.Values` (not both, unless they agree).
fn values_of(
    field: &str,
    legacy: &Option<Vec<String>>,
    config: &Option<ValuesConfig>,
    allow_ip_type: bool,
) -> Result<Vec<String>, ElbError> {
    if let Some(c) = config {
        if c.regex_values.is_some() {
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "berth does not support RegexValues in '{field}' conditions"
            )));
        }
        if c.ip_address_type.is_some() && !allow_ip_type {
            return Err(invalid(format!(
                "IpAddressType is not a member of a '{field}' condition"
            )));
        }
    }
    match (legacy, config.as_ref().and_then(|c| c.values.as_ref())) {
        (Some(a), Some(b)) if a != b => Err(invalid(format!(
            "a '{field}' condition has both Values and its configuration's Values; give one"
        ))),
        (Some(a), _) => Ok(a.clone()),
        (None, Some(b)) => Ok(b.clone()),
        (None, None) => Err(invalid(format!(
            "a '{field}' condition needs Values or its configuration's Values"
        ))),
    }
}

/// One condition, validated, as the data plane runs it.
pub fn condition(c: &RuleCondition) -> Result<lb::Condition, ElbError> {
    let field = c.field.as_deref().unwrap_or("");
    if c.regex_values.is_some() {
        return Err(ElbError::InvalidConfigurationRequest(
            "berth does not support RegexValues conditions".into(),
        ));
    }
    let configs = [
        ("host-header", c.host_header_config.is_some()),
        ("path-pattern", c.path_pattern_config.is_some()),
        ("http-header", c.http_header_config.is_some()),
        ("query-string", c.query_string_config.is_some()),
        (
            "http-request-method",
            c.http_request_method_config.is_some(),
        ),
        ("source-ip", c.source_ip_config.is_some()),
    ];
    if let Some((other, _)) = configs.iter().find(|(f, set)| *set && *f != field) {
        return Err(invalid(format!(
            "a condition with Field '{field}' cannot have the configuration of '{other}'"
        )));
    }
    match field {
        "path-pattern" => {
            let v = values_of(field, &c.values, &c.path_pattern_config, false)?;
            check_values(field, &v, |s| s.chars().all(path_char))?;
            Ok(lb::Condition::PathPattern(v))
        }
        "host-header" => {
            let v = values_of(field, &c.values, &c.host_header_config, false)?;
            check_values(field, &v, |s| s.chars().all(host_char))?;
            Ok(lb::Condition::HostHeader(v))
        }
        "http-request-method" => {
            let v = values_of(field, &c.values, &c.http_request_method_config, false)?;
            check_values(field, &v, |s| s.len() <= 40 && s.chars().all(method_char))?;
            Ok(lb::Condition::HttpMethod(v))
        }
        "source-ip" => {
            let v = values_of(field, &c.values, &c.source_ip_config, true)?;
            check_values(field, &v, cidr)?;
            Ok(lb::Condition::SourceIp(v))
        }
        "http-header" => {
            if c.values.is_some() {
                return Err(invalid(
                    "an 'http-header' condition takes HttpHeaderConfig, not Values",
                ));
            }
            let h = c.http_header_config.as_ref().ok_or_else(|| {
                invalid("an 'http-header' condition needs HttpHeaderConfig")
            })?;
            if h.regex_values.is_some() {
                return Err(ElbError::InvalidConfigurationRequest(
                    "berth does not support RegexValues in 'http-header' conditions".into(),
                ));
            }
            let name = h.http_header_name.clone().unwrap_or_default();
            if name.is_empty() || name.len() > 40 || !name.chars().all(header_name_char) {
                return Err(invalid(format!(
                    "'{}' is not a valid HTTP header name",
                    name.chars().take(64).collect::<String>()
                )));
            }
            let v = h.values.clone().unwrap_or_default();
            check_values(field, &v, |_| true)?;
            Ok(lb::Condition::HttpHeader { name, values: v })
        }
        "query-string" => {
            if c.values.is_some() {
                return Err(invalid(
                    "a 'query-string' condition takes QueryStringConfig, not Values",
                ));
            }
            let pairs = c
                .query_string_config
                .as_ref()
                .and_then(|q| q.values.clone())
                .unwrap_or_default();
            if pairs.is_empty() {
                return Err(invalid(
                    "a 'query-string' condition needs at least one key/value pair",
                ));
            }
            let mut out = Vec::with_capacity(pairs.len());
            for p in pairs {
                let value = p.value.unwrap_or_default();
                let key_ok = p
                    .key
                    .as_ref()
                    .is_none_or(|k| !k.is_empty() && k.chars().count() <= MAX_VALUE_LEN);
                if value.is_empty() || value.chars().count() > MAX_VALUE_LEN || !key_ok {
                    return Err(invalid(
                        "a query-string pair needs a Value (and an optional Key) of 1-128 characters",
                    ));
                }
                out.push((p.key, value));
            }
            Ok(lb::Condition::QueryString(out))
        }
        "" => Err(invalid("a condition needs a Field")),
        other => Err(invalid(format!(
            "condition field '{}' must be one of '[http-header, http-request-method, host-header, path-pattern, query-string, source-ip]'",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

fn value_count(c: &lb::Condition) -> usize {
    match c {
        lb::Condition::PathPattern(v)
        | lb::Condition::HostHeader(v)
        | lb::Condition::HttpMethod(v)
        | lb::Condition::SourceIp(v) => v.len(),
        lb::Condition::HttpHeader { values, .. } => values.len(),
        lb::Condition::QueryString(v) => v.len(),
    }
}

/// A rule's conditions: at least one; at most one each of path-pattern, host-header,
/// http-request-method and source-ip; at most 5 values in all (ELB's quotas).
pub fn conditions(cs: &[RuleCondition]) -> Result<Vec<lb::Condition>, ElbError> {
    if cs.is_empty() {
        return Err(invalid("a rule needs at least one condition"));
    }
    let mut out = Vec::with_capacity(cs.len());
    let mut once = BTreeSet::new();
    for c in cs {
        let parsed = condition(c)?;
        let field = c.field.clone().unwrap_or_default();
        let single = !matches!(
            parsed,
            lb::Condition::HttpHeader { .. } | lb::Condition::QueryString(_)
        );
        if single && !once.insert(field.clone()) {
            return Err(invalid(format!(
                "a rule can have only one '{field}' condition"
            )));
        }
        out.push(parsed);
    }
    let total: usize = out.iter().map(value_count).sum();
    if total > MAX_CONDITION_VALUES {
        return Err(invalid(format!(
            "a rule can only have '{MAX_CONDITION_VALUES}' condition values, got {total}"
        )));
    }
    Ok(out)
}

/// The model's normalized shape of a condition (as DescribeRules shows it: path and
/// host conditions carry `Values` and their configuration).
pub fn render_condition(c: &lb::Condition) -> RuleCondition {
    let vc = |v: &Vec<String>| {
        Some(ValuesConfig {
            values: Some(v.clone()),
            ..Default::default()
        })
    };
    let mut out = RuleCondition::default();
    match c {
        lb::Condition::PathPattern(v) => {
            out.field = Some("path-pattern".into());
            out.values = Some(v.clone());
            out.path_pattern_config = vc(v);
        }
        lb::Condition::HostHeader(v) => {
            out.field = Some("host-header".into());
            out.values = Some(v.clone());
            out.host_header_config = vc(v);
        }
        lb::Condition::HttpMethod(v) => {
            out.field = Some("http-request-method".into());
            out.http_request_method_config = vc(v);
        }
        lb::Condition::SourceIp(v) => {
            out.field = Some("source-ip".into());
            out.source_ip_config = vc(v);
        }
        lb::Condition::HttpHeader { name, values } => {
            out.field = Some("http-header".into());
            out.http_header_config = Some(HttpHeaderConfig {
                http_header_name: Some(name.clone()),
                values: Some(values.clone()),
                regex_values: None,
            });
        }
        lb::Condition::QueryString(pairs) => {
            out.field = Some("query-string".into());
            out.query_string_config = Some(QueryStringConfig {
                values: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| KeyValue {
                            key: k.clone(),
                            value: Some(v.clone()),
                        })
                        .collect(),
                ),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------

fn forward(a: &Action) -> Result<lb::Action, ElbError> {
    let mut groups: Vec<WeightedTargetGroup> = Vec::new();
    let mut stickiness_secs = None;
    if let Some(fc) = &a.forward_config {
        let tuples = fc.target_groups.clone().unwrap_or_default();
        if tuples.len() > MAX_FORWARD_TARGET_GROUPS {
            return Err(ElbError::InvalidLoadBalancerAction(format!(
                "a forward action can have at most {MAX_FORWARD_TARGET_GROUPS} target groups"
            )));
        }
        for t in tuples {
            let arn = t.target_group_arn.clone().unwrap_or_default();
            if arn.is_empty() {
                return Err(invalid("a TargetGroupTuple needs a TargetGroupArn"));
            }
            if groups.iter().any(|g| g.arn == arn) {
                return Err(ElbError::InvalidLoadBalancerAction(format!(
                    "target group '{arn}' is given twice in one forward action"
                )));
            }
            let weight = in_range("weight", t.weight.unwrap_or(1), 0..=999)? as u32;
            groups.push(WeightedTargetGroup { arn, weight });
        }
        if let Some(s) = &fc.target_group_stickiness_config {
            if s.enabled == Some(true) {
                let d = s.duration_seconds.ok_or_else(|| {
                    invalid("stickiness needs DurationSeconds (1-604800) when enabled")
                })?;
                stickiness_secs = Some(in_range("durationSeconds", d, 1..=604_800)? as u32);
            }
        }
    }
    match (&a.target_group_arn, groups.len()) {
        (Some(arn), 0) => groups.push(WeightedTargetGroup {
            arn: arn.clone(),
            weight: 1,
        }),
        (Some(arn), 1) if groups[0].arn == *arn => {}
        (Some(_), _) => {
            return Err(ElbError::InvalidLoadBalancerAction(
                "with both TargetGroupArn and ForwardConfig, ForwardConfig must name that one target group only".into(),
            ))
        }
        (None, 0) => {
            return Err(invalid(
                "a forward action needs TargetGroupArn or ForwardConfig.TargetGroups",
            ))
        }
        (None, _) => {}
    }
    Ok(lb::Action::Forward {
        target_groups: groups,
        stickiness_secs,
    })
}

/// The configuration an action of type `kind` needs.
fn needs<'a, T>(c: &'a Option<T>, kind: &str, member: &str) -> Result<&'a T, ElbError> {
    c.as_ref()
        .ok_or_else(|| invalid(format!("a {kind} action needs {member}")))
}

fn fixed_response(c: &FixedResponseConfig) -> Result<lb::Action, ElbError> {
    let code = c.status_code.as_str();
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && matches!(code.as_bytes()[0], b'2' | b'4' | b'5') => s,
        _ => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'actions.member.1.fixedResponseConfig.statusCode' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(2|4|5)\\d\\d$",
                code.chars().take(16).collect::<String>()
            )))
        }
    };
    if let Some(ct) = &c.content_type {
        if !FIXED_CONTENT_TYPES.contains(&ct.as_str()) {
            return Err(invalid(format!(
                "fixed-response ContentType '{}' must be one of {}",
                ct.chars().take(64).collect::<String>(),
                FIXED_CONTENT_TYPES.join(", ")
            )));
        }
    }
    let body = c.message_body.clone().unwrap_or_default();
    if body.len() > MAX_FIXED_BODY {
        return Err(invalid(format!(
            "a fixed-response MessageBody is at most {MAX_FIXED_BODY} bytes"
        )));
    }
    Ok(lb::Action::FixedResponse {
        status,
        content_type: c.content_type.clone(),
        body,
    })
}

fn redirect(c: &RedirectConfig) -> Result<lb::Action, ElbError> {
    let status = match c.status_code.as_str() {
        "HTTP_301" => 301,
        "HTTP_302" => 302,
        other => {
            return Err(invalid(format!(
                "redirect StatusCode '{}' must be HTTP_301 or HTTP_302",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
    let protocol = c.protocol.clone().unwrap_or_else(|| "#{protocol}".into());
    if !matches!(protocol.as_str(), "HTTP" | "HTTPS" | "#{protocol}") {
        return Err(invalid(format!(
            "redirect Protocol '{}' must be HTTP, HTTPS or #{{protocol}}",
            protocol.chars().take(16).collect::<String>()
        )));
    }
    let port = c.port.clone().unwrap_or_else(|| "#{port}".into());
    if port != "#{port}" && !port.parse::<u16>().is_ok_and(|p| p >= 1) {
        return Err(invalid(format!(
            "redirect Port '{}' must be 1-65535 or #{{port}}",
            port.chars().take(16).collect::<String>()
        )));
    }
    let host = c.host.clone().unwrap_or_else(|| "#{host}".into());
    let path = c.path.clone().unwrap_or_else(|| "/#{path}".into());
    let query = c.query.clone().unwrap_or_else(|| "#{query}".into());
    if host.is_empty()
        || host.len() > 128
        || !path.starts_with('/')
        || path.len() > 128
        || query.len() > 128
    {
        return Err(invalid(
            "redirect Host is 1-128 characters, Path starts with '/' and is at most 128, Query at most 128",
        ));
    }
    if protocol == "#{protocol}" && port == "#{port}" && host == "#{host}" && path == "/#{path}" {
        return Err(ElbError::InvalidLoadBalancerAction(
            "a redirect must change the protocol, port, host or path: this one would redirect to itself".into(),
        ));
    }
    Ok(lb::Action::Redirect {
        protocol,
        host,
        port,
        path,
        query,
        status,
    })
}

/// A rule's (or a listener's default) actions: exactly one of forward, fixed-response
/// or redirect (berth has no authenticate actions), validated.
pub fn actions(list: &[Action]) -> Result<lb::Action, ElbError> {
    let a = match list {
        [] => return Err(invalid("at least one action is required")),
        [a] => a,
        _ => {
            return Err(ElbError::TooManyActions(
                "berth runs one action per rule: forward, fixed-response or redirect".into(),
            ))
        }
    };
    if let Some(o) = a.order {
        in_range("order", o, 1..=50_000)?;
    }
    let configs = [
        ("forward", a.forward_config.is_some()),
        ("fixed-response", a.fixed_response_config.is_some()),
        ("redirect", a.redirect_config.is_some()),
    ];
    if let Some((other, _)) = configs.iter().find(|(k, set)| *set && *k != a.kind) {
        return Err(ElbError::InvalidLoadBalancerAction(format!(
            "an action of Type '{}' cannot have the configuration of '{other}'",
            a.kind
        )));
    }
    if a.target_group_arn.is_some() && a.kind != "forward" {
        return Err(ElbError::InvalidLoadBalancerAction(format!(
            "an action of Type '{}' cannot have a TargetGroupArn",
            a.kind
        )));
    }
    match a.kind.as_str() {
        "forward" => forward(a),
        "fixed-response" => fixed_response(needs(
            &a.fixed_response_config,
            "fixed-response",
            "FixedResponseConfig",
        )?),
        "redirect" => redirect(needs(&a.redirect_config, "redirect", "RedirectConfig")?),
        "authenticate-oidc" | "authenticate-cognito" | "jwt-validation" => Err(
            ElbError::InvalidLoadBalancerAction(format!("berth does not run '{}' actions", a.kind)),
        ),
        other => Err(invalid(format!(
            "action type '{}' must be one of forward, fixed-response, redirect",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The target groups an action forwards to.
pub fn action_target_groups(a: &lb::Action) -> Vec<&str> {
    match a {
        lb::Action::Forward { target_groups, .. } => {
            target_groups.iter().map(|g| g.arn.as_str()).collect()
        }
        _ => vec![],
    }
}

/// The model's normalized shape of an action (as Describe* shows it: a forward to one
/// group carries TargetGroupArn and ForwardConfig).
pub fn render_action(a: &lb::Action) -> Action {
    match a {
        lb::Action::Forward {
            target_groups,
            stickiness_secs,
        } => Action {
            kind: "forward".into(),
            order: Some(1),
            target_group_arn: match target_groups.as_slice() {
                [one] => Some(one.arn.clone()),
                _ => None,
            },
            forward_config: Some(ForwardConfig {
                target_groups: Some(
                    target_groups
                        .iter()
                        .map(|g| TargetGroupTuple {
                            target_group_arn: Some(g.arn.clone()),
                            weight: Some(g.weight as i64),
                        })
                        .collect(),
                ),
                target_group_stickiness_config: Some(StickinessConfig {
                    enabled: Some(stickiness_secs.is_some()),
                    duration_seconds: stickiness_secs.map(i64::from),
                }),
            }),
            ..Default::default()
        },
        lb::Action::FixedResponse {
            status,
            content_type,
            body,
        } => Action {
            kind: "fixed-response".into(),
            order: Some(1),
            fixed_response_config: Some(FixedResponseConfig {
                message_body: (!body.is_empty()).then(|| body.clone()),
                status_code: status.to_string(),
                content_type: content_type.clone(),
            }),
            ..Default::default()
        },
        lb::Action::Redirect {
            protocol,
            host,
            port,
            path,
            query,
            status,
        } => Action {
            kind: "redirect".into(),
            order: Some(1),
            redirect_config: Some(RedirectConfig {
                protocol: Some(protocol.clone()),
                port: Some(port.clone()),
                host: Some(host.clone()),
                path: Some(path.clone()),
                query: Some(query.clone()),
                status_code: format!("HTTP_{status}"),
            }),
            ..Default::default()
        },
    }
}

// ---------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------

/// `Matcher.HttpCode` (`200`, `200,204`, `200-299`; codes 200-499) as inclusive ranges.
pub fn matcher(s: &str) -> Result<Vec<(u16, u16)>, ElbError> {
    let bad = || {
        invalid(format!(
            "health check matcher '{}' must be codes from 200 to 499 like 200, 200,202 or 200-299",
            s.chars().take(64).collect::<String>()
        ))
    };
    if s.is_empty() || s.len() > 2000 {
        return Err(bad());
    }
    let code = |c: &str| {
        c.parse::<u16>()
            .ok()
            .filter(|n| c.len() == 3 && (200..=499).contains(n))
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?),
            None => {
                let c = code(part).ok_or_else(bad)?;
                (c, c)
            }
        };
        if range.0 > range.1 {
            return Err(bad());
        }
        out.push(range);
    }
    Ok(out)
}

/// A health check port: `traffic-port` or 1-65535.
pub fn health_check_port(s: &str) -> Result<Option<u16>, ElbError> {
    if s == "traffic-port" {
        return Ok(None);
    }
    match s.parse::<u16>() {
        Ok(p) if p >= 1 && !s.starts_with('0') => Ok(Some(p)),
        _ => Err(invalid(format!(
            "health check port '{}' must be traffic-port or 1-65535",
            s.chars().take(16).collect::<String>()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------

/// How an attribute value is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int(i64, i64),
    OneOf(&'static [&'static str]),
    Text,
}

/// An ALB's attributes, their defaults and values (ELB's documentation).
const LB_ATTRIBUTES: &[(&str, &str, Kind)] = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
    ("client_keep_alive.seconds", "3600", Kind::Int(60, 604_800)),
    ("deletion_protection.enabled", "false", Kind::Bool),
    ("idle_timeout.timeout_seconds", "60", Kind::Int(1, 4000)),
    (
        "routing.http.desync_mitigation_mode",
        "defensive",
        Kind::OneOf(&["monitor", "defensive", "strictest"]),
    ),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
        Kind::Bool,
    ),
    ("routing.http.xff_client_port.enabled", "false", Kind::Bool),
    (
        "routing.http.xff_header_processing.mode",
        "append",
        Kind::OneOf(&["append", "preserve", "remove"]),
    ),
    ("routing.http2.enabled", "true", Kind::Bool),
    ("waf.fail_open.enabled", "false", Kind::Bool),
];

/// A target group's attributes (instance and ip targets), defaults and values.
const TG_ATTRIBUTES: &[(&str, &str, Kind)] = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Int(0, 3600),
    ),
    (
        "load_balancing.algorithm.type",
        "round_robin",
        Kind::OneOf(&[
            "round_robin",
            "least_outstanding_requests",
            "weighted_random",
        ]),
    ),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
    ),
    ("slow_start.duration_seconds", "0", Kind::Int(0, 900)),
    ("stickiness.app_cookie.cookie_name", "", Kind::Text),
    (
        "stickiness.app_cookie.duration_seconds",
        "86400",
        Kind::Int(1, 604_800),
    ),
    ("stickiness.enabled", "false", Kind::Bool),
    (
        "stickiness.lb_cookie.duration_seconds",
        "86400",
        Kind::Int(1, 604_800),
    ),
    (
        "stickiness.type",
        "lb_cookie",
        Kind::OneOf(&["lb_cookie", "app_cookie"]),
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
];

fn defaults(table: &[(&str, &str, Kind)]) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(k, v, _)| (k.to_string(), v.to_string()))
        .collect()
}

/// A new load balancer's attributes.
pub fn lb_attribute_defaults() -> BTreeMap<String, String> {
    defaults(LB_ATTRIBUTES)
}

/// A new target group's attributes.
pub fn tg_attribute_defaults() -> BTreeMap<String, String> {
    defaults(TG_ATTRIBUTES)
}

fn modify(
    table: &[(&str, &str, Kind)],
    current: &mut BTreeMap<String, String>,
    changes: &[Attribute],
) -> Result<(), ElbError> {
    if changes.is_empty() {
        return Err(invalid("at least one attribute is required"));
    }
    for a in changes {
        let key = a.key.clone().unwrap_or_default();
        let value = a.value.clone().unwrap_or_default();
        let (_, _, kind) = table.iter().find(|(k, _, _)| *k == key).ok_or_else(|| {
            invalid(format!(
                "attribute key '{}' is not recognized",
                key.chars().take(80).collect::<String>()
            ))
        })?;
        let ok = match kind {
            Kind::Bool => value == "true" || value == "false",
            Kind::Int(lo, hi) => value.parse::<i64>().is_ok_and(|n| (*lo..=*hi).contains(&n)),
            Kind::OneOf(vs) => vs.contains(&value.as_str()),
            Kind::Text => value.len() <= 1024,
        };
        if !ok {
            let want = match kind {
                Kind::Bool => "true or false".to_string(),
                Kind::Int(lo, hi) => format!("an integer from {lo} to {hi}"),
                Kind::OneOf(vs) => format!("one of {}", vs.join(", ")),
                Kind::Text => "at most 1024 characters".to_string(),
            };
            return Err(ElbError::InvalidConfigurationRequest(format!(
                "attribute '{key}' value '{}' is not valid: it must be {want}",
                value.chars().take(80).collect::<String>()
            )));
        }
        current.insert(key, value);
    }
    Ok(())
}

/// Applies ModifyLoadBalancerAttributes' changes.
pub fn modify_lb_attributes(
    current: &mut BTreeMap<String, String>,
    changes: &[Attribute],
) -> Result<(), ElbError> {
    modify(LB_ATTRIBUTES, current, changes)
}

/// Applies ModifyTargetGroupAttributes' changes; slow start is 0 or 30-900 seconds.
pub fn modify_tg_attributes(
    current: &mut BTreeMap<String, String>,
    changes: &[Attribute],
) -> Result<(), ElbError> {
    modify(TG_ATTRIBUTES, current, changes)?;
    let slow: i64 = current
        .get("slow_start.duration_seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if slow != 0 && slow < 30 {
        return Err(ElbError::InvalidConfigurationRequest(
            "slow_start.duration_seconds must be 0 or from 30 to 900".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
