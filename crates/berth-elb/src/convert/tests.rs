use super::*;
use crate::model::TargetRecord;
use std::collections::BTreeMap;

fn tg(targets: Vec<TargetRecord>) -> TgRecord {
    TgRecord {
        arn: "tg-arn".into(),
        name: "users".into(),
        protocol: "HTTP".into(),
        protocol_version: "HTTP1".into(),
        port: 8080,
        vpc_id: "vpc".into(),
        target_type: "ip".into(),
        ip_address_type: "ipv4".into(),
        health_check: HealthCheckRecord {
            protocol: "HTTP".into(),
            port: "traffic-port".into(),
            enabled: true,
            path: "/health".into(),
            interval_secs: 10,
            timeout_secs: 5,
            healthy_threshold: 3,
            unhealthy_threshold: 2,
            matcher: "200-299".into(),
        },
        attributes: crate::validate::tg_attribute_defaults(),
        tags: vec![],
        targets,
    }
}

fn target(id: &str, deregistered_at_ms: Option<u64>) -> TargetRecord {
    TargetRecord {
        id: id.into(),
        port: 8080,
        availability_zone: None,
        registered_ms: 0,
        deregistered_at_ms,
    }
}

fn fwd(arn: &str) -> Action {
    crate::validate::render_action(&lb::Action::Forward {
        target_groups: vec![lb::WeightedTargetGroup {
            arn: arn.into(),
            weight: 1,
        }],
        stickiness_secs: None,
    })
}

fn snapshot() -> Snapshot {
    let path =
        |p: &str| crate::validate::render_condition(&lb::Condition::PathPattern(vec![p.into()]));
    let rule = |id: &str, priority: u32, p: &str| RuleRecord {
        arn: format!("rule-{id}"),
        id: id.into(),
        listener_id: "l1".into(),
        lb_arn: "lb-arn".into(),
        priority,
        conditions: vec![path(p)],
        actions: vec![fwd("tg-arn")],
        tags: vec![],
    };
    Snapshot {
        lbs: vec![LbRecord {
            arn: "lb-arn".into(),
            name: "web".into(),
            dns_name: "d".into(),
            scheme: "internet-facing".into(),
            ip_address_type: "ipv4".into(),
            vpc_id: "v".into(),
            subnets: vec![],
            security_groups: vec![],
            region: "us-east-1".into(),
            created_ms: 0,
            attributes: BTreeMap::from([("idle_timeout.timeout_seconds".into(), "90".into())]),
            tags: vec![],
        }],
        tgs: vec![tg(vec![
            target("10.0.0.1", None),
            target("10.0.0.2", Some(1_000)),
            target("10.0.0.3", Some(0)),
        ])],
        listeners: vec![ListenerRecord {
            arn: "arn:aws:elasticloadbalancing:r:a:listener/app/web/1/l1".into(),
            id: "l1".into(),
            lb_arn: "lb-arn".into(),
            port: 80,
            protocol: "HTTP".into(),
            default_actions: vec![crate::validate::render_action(&lb::Action::FixedResponse {
                status: 404,
                content_type: Some("text/plain".into()),
                body: "none".into(),
            })],
            default_rule_id: "d1".into(),
            tags: vec![],
            default_rule_tags: vec![],
        }],
        rules: vec![rule("r20", 20, "/topics*"), rule("r10", 10, "/users*")],
    }
}

/// The configuration has rules by priority with the default rule last, the LB's idle
/// timeout, and targets still draining (with their deregistration time) but not those
/// whose delay has passed.
#[test]
fn builds_config() {
    // Delay 300 s: 10.0.0.2 (deregistered at 1 s) drains until 301 s, 10.0.0.3 (at
    // 0 s) until 300 s; at 200 s both are there, at 300.5 s only 10.0.0.2 is.
    let c = lb_config(&snapshot(), 200_000, &|_| None);
    let lb = &c.load_balancers[0];
    assert_eq!(lb.idle_timeout_secs, 90);
    let rules = &lb.listeners[0].rules;
    assert_eq!(
        rules.iter().map(|r| r.priority).collect::<Vec<_>>(),
        vec![Some(10), Some(20), None]
    );
    assert_eq!(
        rules[0].conditions,
        vec![lb::Condition::PathPattern(vec!["/users*".into()])]
    );
    assert!(rules[2].conditions.is_empty());
    assert_eq!(
        rules[2].arn,
        "arn:aws:elasticloadbalancing:r:a:listener-rule/app/web/1/l1/d1"
    );
    assert!(matches!(
        rules[2].action,
        lb::Action::FixedResponse { status: 404, .. }
    ));
    let t = &c.target_groups[0];
    assert_eq!(t.targets.len(), 3);
    assert_eq!(t.targets[1].deregistered_at_ms, Some(1_000));
    assert_eq!(t.health_check.matcher, vec![(200, 299)]);
    assert_eq!(t.health_check.path, "/health");
    assert_eq!(t.health_check.port, None);
    let later = lb_config(&snapshot(), 300_500, &|_| None);
    let ids: Vec<&str> = later.target_groups[0]
        .targets
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(ids, vec!["10.0.0.1", "10.0.0.2"]);
}

/// Instance targets get the address their directory gives; unknown ones none; ip
/// targets are their own address.
#[test]
fn instance_addresses() {
    let mut t = tg(vec![target("i-1", None), target("i-2", None)]);
    t.target_type = "instance".into();
    let resolve = |id: &str| (id == "i-1").then(|| "10.1.0.2".to_string());
    let g = target_group(&t, 0, &resolve);
    let addrs: Vec<&str> = g.targets.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addrs, vec!["10.1.0.2", ""]);
    t.target_type = "ip".into();
    t.targets = vec![target("10.0.0.9", None)];
    assert_eq!(target_group(&t, 0, &resolve).targets[0].address, "10.0.0.9");
}

/// Stickiness reaches the data plane only when enabled with lb_cookie.
#[test]
fn stickiness() {
    let mut t = tg(vec![]);
    assert_eq!(target_group(&t, 0, &|_| None).stickiness_secs, None);
    t.attributes
        .insert("stickiness.enabled".into(), "true".into());
    t.attributes
        .insert("stickiness.lb_cookie.duration_seconds".into(), "120".into());
    assert_eq!(target_group(&t, 0, &|_| None).stickiness_secs, Some(120));
}

/// Which load balancers use a target group, from listeners and rules.
#[test]
fn users() {
    let u = target_group_users(&snapshot());
    assert_eq!(u["tg-arn"].iter().collect::<Vec<_>>(), vec!["lb-arn"]);
}

/// Health: draining beats everything, then unused, then health checks off, then what
/// the data plane reports, else initial.
#[test]
fn health_states() {
    let t = target("10.0.0.1", None);
    let reported = TargetHealth {
        state: HealthState::Healthy,
        reason: None,
        description: None,
    };
    assert_eq!(
        target_health(&target("x", Some(1)), true, true, Some(reported.clone())).state,
        HealthState::Draining
    );
    assert_eq!(
        target_health(&t, false, true, Some(reported.clone())).state,
        HealthState::Unused
    );
    assert_eq!(
        target_health(&t, true, false, Some(reported.clone())).state,
        HealthState::Unavailable
    );
    assert_eq!(
        target_health(&t, true, true, Some(reported.clone())),
        reported
    );
    let initial = target_health(&t, true, true, None);
    assert_eq!(initial.state, HealthState::Initial);
    assert_eq!(
        initial.reason.as_deref(),
        Some("Elb.RegistrationInProgress")
    );
    assert_eq!(
        not_registered().reason.as_deref(),
        Some("Target.NotRegistered")
    );
}
