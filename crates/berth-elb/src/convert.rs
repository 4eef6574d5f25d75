//! Pure conversions from the store's records: the data plane's [`LbConfig`], the
//! target groups each load balancer uses, and a target's health as
//! DescribeTargetHealth reports it.

use std::collections::{BTreeMap, BTreeSet};

use berth_lb::config::{self as lb, HealthState, LbConfig, Protocol, TargetHealth};

use crate::model::{
    Action, HealthCheckRecord, LbRecord, ListenerRecord, RuleRecord, TargetRecord, TgRecord,
};
use crate::validate;

/// Everything ELB stores, read at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub lbs: Vec<LbRecord>,
    pub tgs: Vec<TgRecord>,
    pub listeners: Vec<ListenerRecord>,
    pub rules: Vec<RuleRecord>,
}

/// `HTTP`/`HTTPS` as the data plane's protocol (HTTPS for anything else ELB calls
/// secure; validation lets only these two in).
pub fn protocol(p: &str) -> Protocol {
    if p == "HTTPS" {
        Protocol::Https
    } else {
        Protocol::Http
    }
}

/// The target groups named by stored actions.
pub fn action_target_groups(actions: &[Action]) -> Vec<String> {
    let mut out = Vec::new();
    for a in actions {
        out.extend(a.target_group_arn.iter().cloned());
        if let Some(fc) = &a.forward_config {
            for t in fc.target_groups.iter().flatten() {
                out.extend(t.target_group_arn.iter().cloned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Target group ARN → the load balancers whose listeners or rules forward to it.
pub fn target_group_users(s: &Snapshot) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in &s.listeners {
        for tg in action_target_groups(&l.default_actions) {
            out.entry(tg).or_default().insert(l.lb_arn.clone());
        }
    }
    for r in &s.rules {
        for tg in action_target_groups(&r.actions) {
            out.entry(tg).or_default().insert(r.lb_arn.clone());
        }
    }
    out
}

/// The deregistration delay of a target group, in seconds.
pub fn deregistration_delay_secs(tg: &TgRecord) -> u32 {
    tg.attributes
        .get("deregistration_delay.timeout_seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Whether a target is still registered or draining at `now_ms`.
pub fn present(tg: &TgRecord, t: &TargetRecord, now_ms: u64) -> bool {
    match t.deregistered_at_ms {
        None => true,
        Some(at) => now_ms < at.saturating_add(1000 * u64::from(deregistration_delay_secs(tg))),
    }
}

/// The data plane's health check.
pub fn health_check(h: &HealthCheckRecord) -> lb::HealthCheck {
    lb::HealthCheck {
        enabled: h.enabled,
        protocol: protocol(&h.protocol),
        port: validate::health_check_port(&h.port).ok().flatten(),
        path: h.path.clone(),
        interval_secs: h.interval_secs,
        timeout_secs: h.timeout_secs,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        matcher: validate::matcher(&h.matcher).unwrap_or_else(|_| vec![(200, 200)]),
    }
}

/// A target group as the data plane runs it (targets that finished draining left out).
/// `resolve` gives the address of an `instance` target (an ECS container instance's
/// `ec2InstanceId`); one it cannot resolve gets an empty address, which the data plane
/// never routes to or checks.
pub fn target_group(
    tg: &TgRecord,
    now_ms: u64,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> lb::TargetGroup {
    let sticky = tg.attributes.get("stickiness.enabled").map(String::as_str) == Some("true")
        && tg.attributes.get("stickiness.type").map(String::as_str) != Some("app_cookie");
    lb::TargetGroup {
        arn: tg.arn.clone(),
        name: tg.name.clone(),
        protocol: protocol(&tg.protocol),
        port: tg.port,
        health_check: health_check(&tg.health_check),
        deregistration_delay_secs: deregistration_delay_secs(tg),
        stickiness_secs: sticky.then(|| {
            tg.attributes
                .get("stickiness.lb_cookie.duration_seconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(86_400)
        }),
        targets: tg
            .targets
            .iter()
            .filter(|t| present(tg, t, now_ms))
            .map(|t| lb::Target {
                id: t.id.clone(),
                address: if tg.target_type == "ip" {
                    t.id.clone()
                } else {
                    resolve(&t.id).unwrap_or_default()
                },
                port: t.port,
                deregistered_at_ms: t.deregistered_at_ms,
            })
            .collect(),
    }
}

fn rule(
    arn: &str,
    priority: Option<u32>,
    conditions: Vec<lb::Condition>,
    actions: &[Action],
) -> Option<lb::Rule> {
    match validate::actions(actions) {
        Ok(action) => Some(lb::Rule {
            arn: arn.to_string(),
            priority,
            conditions,
            action,
        }),
        Err(e) => {
            tracing::warn!(rule = arn, error = %e, "stored rule has actions berth cannot run; left out");
            None
        }
    }
}

/// A listener's rules in evaluation order: ascending priority, the default rule last.
pub fn listener_rules(l: &ListenerRecord, rules: &[RuleRecord]) -> Vec<lb::Rule> {
    let mut mine: Vec<&RuleRecord> = rules.iter().filter(|r| r.listener_id == l.id).collect();
    mine.sort_by_key(|r| r.priority);
    let mut out: Vec<lb::Rule> = mine
        .into_iter()
        .filter_map(|r| {
            let conditions = match validate::conditions(&r.conditions) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(rule = %r.arn, error = %e, "stored rule has conditions berth cannot run; left out");
                    return None;
                }
            };
            rule(&r.arn, Some(r.priority), conditions, &r.actions)
        })
        .collect();
    let default_arn = crate::model::rule_arn(&l.arn, &l.default_rule_id);
    out.extend(rule(&default_arn, None, vec![], &l.default_actions));
    out
}

/// The whole configuration the data plane runs.
pub fn lb_config(s: &Snapshot, now_ms: u64, resolve: &dyn Fn(&str) -> Option<String>) -> LbConfig {
    let mut load_balancers: Vec<lb::LoadBalancer> = s
        .lbs
        .iter()
        .map(|b| {
            let mut listeners: Vec<lb::Listener> = s
                .listeners
                .iter()
                .filter(|l| l.lb_arn == b.arn)
                .map(|l| lb::Listener {
                    arn: l.arn.clone(),
                    port: l.port,
                    protocol: protocol(&l.protocol),
                    rules: listener_rules(l, &s.rules),
                })
                .collect();
            listeners.sort_by_key(|l| l.port);
            lb::LoadBalancer {
                arn: b.arn.clone(),
                name: b.name.clone(),
                idle_timeout_secs: b
                    .attributes
                    .get("idle_timeout.timeout_seconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
                listeners,
            }
        })
        .collect();
    load_balancers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut target_groups: Vec<lb::TargetGroup> = s
        .tgs
        .iter()
        .map(|t| target_group(t, now_ms, resolve))
        .collect();
    target_groups.sort_by(|a, b| a.name.cmp(&b.name));
    LbConfig {
        load_balancers,
        target_groups,
    }
}

fn health(state: HealthState, reason: &str, description: &str) -> TargetHealth {
    TargetHealth {
        state,
        reason: Some(reason.to_string()),
        description: Some(description.to_string()),
    }
}

/// A registered target's health: draining while its deregistration delay runs, unused
/// while no load balancer routes to its group, unavailable with health checks off,
/// else what the data plane reports (`reported`), or initial if it has not seen the
/// target yet.
pub fn target_health(
    t: &TargetRecord,
    in_use: bool,
    health_check_enabled: bool,
    reported: Option<TargetHealth>,
) -> TargetHealth {
    if t.deregistered_at_ms.is_some() {
        return health(
            HealthState::Draining,
            "Target.DeregistrationInProgress",
            "Target deregistration is in progress",
        );
    }
    if !in_use {
        return health(
            HealthState::Unused,
            "Target.NotInUse",
            "Target group is not configured to receive traffic from the load balancer",
        );
    }
    if !health_check_enabled {
        return health(
            HealthState::Unavailable,
            "Target.HealthCheckDisabled",
            "Health checks are disabled",
        );
    }
    reported.unwrap_or_else(|| {
        health(
            HealthState::Initial,
            "Elb.RegistrationInProgress",
            "Target registration is in progress",
        )
    })
}

/// The health of a target DescribeTargetHealth was asked about that is not registered.
pub fn not_registered() -> TargetHealth {
    health(
        HealthState::Unused,
        "Target.NotRegistered",
        "Target is not registered to the target group",
    )
}

#[cfg(test)]
mod tests;
