use super::*;

fn cond(field: &str, values: &[&str]) -> RuleCondition {
    RuleCondition {
        field: Some(field.into()),
        values: Some(values.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn fwd(arn: &str) -> Action {
    Action {
        kind: "forward".into(),
        target_group_arn: Some(arn.into()),
        ..Default::default()
    }
}

/// Names: 1-32 alphanumerics and hyphens, no leading/trailing hyphen, no `internal-` LB.
#[test]
fn names() {
    assert!(name("load balancer", "web-1").is_ok());
    for bad in ["", "-a", "a-", "a_b", &"x".repeat(33), "internal-x"] {
        assert!(name("load balancer", bad).is_err(), "{bad}");
    }
    assert!(name("target group", "internal-x").is_ok());
}

/// The old `Values` form and the `*Config` form give the same condition, and render
/// back in the normalized form.
#[test]
fn condition_forms() {
    let old = cond("path-pattern", &["/users*"]);
    let new = RuleCondition {
        field: Some("path-pattern".into()),
        path_pattern_config: Some(ValuesConfig {
            values: Some(vec!["/users*".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = condition(&old).unwrap();
    assert_eq!(a, lb::Condition::PathPattern(vec!["/users*".into()]));
    assert_eq!(condition(&new).unwrap(), a);
    let r = render_condition(&a);
    assert_eq!(r.values, Some(vec!["/users*".to_string()]));
    assert_eq!(condition(&r).unwrap(), a);
}

/// Every condition kind round-trips through its rendering.
#[test]
fn condition_kinds_round_trip() {
    let all = vec![
        lb::Condition::PathPattern(vec!["/a".into()]),
        lb::Condition::HostHeader(vec!["*.example.com".into()]),
        lb::Condition::HttpMethod(vec!["GET".into()]),
        lb::Condition::SourceIp(vec!["10.0.0.0/8".into()]),
        lb::Condition::HttpHeader {
            name: "X-Env".into(),
            values: vec!["prod".into()],
        },
        lb::Condition::QueryString(vec![(Some("v".into()), "1".into()), (None, "x".into())]),
    ];
    for c in all {
        assert_eq!(condition(&render_condition(&c)).unwrap(), c);
    }
}

/// Unknown fields, bad values, duplicated single conditions and more than five values
/// are refused with ValidationError.
#[test]
fn condition_errors() {
    let v = |cs: &[RuleCondition]| match conditions(cs) {
        Err(ElbError::Validation(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(v(&[cond("bogus", &["x"])]).contains("must be one of"));
    assert!(v(&[cond("path-pattern", &["/a b"])]).contains("not a valid value"));
    assert!(v(&[cond("http-request-method", &["get"])]).contains("not a valid value"));
    assert!(v(&[cond("source-ip", &["10.0.0.1"])]).contains("not a valid value"));
    assert!(
        v(&[cond("path-pattern", &["/a"]), cond("path-pattern", &["/b"])]).contains("only one")
    );
    assert!(v(&[
        cond("path-pattern", &["/1", "/2", "/3"]),
        cond("host-header", &["a", "b", "c"])
    ])
    .contains("'5' condition values"));
    assert!(v(&[]).contains("at least one condition"));
    assert!(conditions(&[
        cond("path-pattern", &["/1", "/2", "/3"]),
        cond("host-header", &["a", "b"])
    ])
    .is_ok());
}

/// Actions: forward by ARN or ForwardConfig (weights, stickiness), fixed responses and
/// redirects validated; one action only.
#[test]
fn actions_validate() {
    assert_eq!(
        actions(&[fwd("tg1")]).unwrap(),
        lb::Action::Forward {
            target_groups: vec![WeightedTargetGroup {
                arn: "tg1".into(),
                weight: 1
            }],
            stickiness_secs: None
        }
    );
    let weighted = Action {
        kind: "forward".into(),
        forward_config: Some(ForwardConfig {
            target_groups: Some(vec![
                TargetGroupTuple {
                    target_group_arn: Some("a".into()),
                    weight: Some(3),
                },
                TargetGroupTuple {
                    target_group_arn: Some("b".into()),
                    weight: Some(0),
                },
            ]),
            target_group_stickiness_config: Some(StickinessConfig {
                enabled: Some(true),
                duration_seconds: Some(60),
            }),
        }),
        ..Default::default()
    };
    let parsed = actions(std::slice::from_ref(&weighted)).unwrap();
    assert_eq!(action_target_groups(&parsed), vec!["a", "b"]);
    assert_eq!(actions(&[render_action(&parsed)]).unwrap(), parsed);
    let fixed = Action {
        kind: "fixed-response".into(),
        fixed_response_config: Some(FixedResponseConfig {
            message_body: Some("nope".into()),
            status_code: "404".into(),
            content_type: Some("text/plain".into()),
        }),
        ..Default::default()
    };
    let f = actions(std::slice::from_ref(&fixed)).unwrap();
    assert_eq!(actions(&[render_action(&f)]).unwrap(), f);
    let mut bad = fixed.clone();
    bad.fixed_response_config.as_mut().unwrap().status_code = "302".into();
    assert!(matches!(actions(&[bad]), Err(ElbError::Validation(_))));
    let redirect_self = Action {
        kind: "redirect".into(),
        redirect_config: Some(RedirectConfig {
            status_code: "HTTP_301".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        actions(&[redirect_self]),
        Err(ElbError::InvalidLoadBalancerAction(_))
    ));
    let to_https = Action {
        kind: "redirect".into(),
        redirect_config: Some(RedirectConfig {
            protocol: Some("HTTPS".into()),
            port: Some("443".into()),
            status_code: "HTTP_301".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = actions(&[to_https]).unwrap();
    assert_eq!(actions(&[render_action(&r)]).unwrap(), r);
    assert!(matches!(
        actions(&[fwd("a"), fwd("b")]),
        Err(ElbError::TooManyActions(_))
    ));
    assert!(matches!(actions(&[]), Err(ElbError::Validation(_))));
    let mut wrong = fwd("a");
    wrong.kind = "teleport".into();
    assert!(matches!(
        actions(&[wrong]),
        Err(ElbError::InvalidLoadBalancerAction(_))
    ));
}

/// Matchers: single codes, lists and ranges within 200-499.
#[test]
fn matchers() {
    assert_eq!(matcher("200").unwrap(), vec![(200, 200)]);
    assert_eq!(matcher("200,204").unwrap(), vec![(200, 200), (204, 204)]);
    assert_eq!(matcher("200-299").unwrap(), vec![(200, 299)]);
    for bad in ["", "100", "500", "299-200", "2000", "abc", "200,"] {
        assert!(matcher(bad).is_err(), "{bad}");
    }
    assert_eq!(health_check_port("traffic-port").unwrap(), None);
    assert_eq!(health_check_port("8080").unwrap(), Some(8080));
    assert!(health_check_port("0").is_err());
}

/// Attributes: known keys with valid values change; others are refused.
#[test]
fn attributes() {
    let attr = |k: &str, v: &str| Attribute {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let mut a = lb_attribute_defaults();
    modify_lb_attributes(&mut a, &[attr("idle_timeout.timeout_seconds", "120")]).unwrap();
    assert_eq!(a["idle_timeout.timeout_seconds"], "120");
    assert!(matches!(
        modify_lb_attributes(&mut a, &[attr("idle_timeout.timeout_seconds", "0")]),
        Err(ElbError::InvalidConfigurationRequest(_))
    ));
    assert!(matches!(
        modify_lb_attributes(&mut a, &[attr("nope", "1")]),
        Err(ElbError::Validation(_))
    ));
    let mut t = tg_attribute_defaults();
    assert_eq!(t["deregistration_delay.timeout_seconds"], "300");
    modify_tg_attributes(
        &mut t,
        &[
            attr("stickiness.enabled", "true"),
            attr("stickiness.type", "lb_cookie"),
        ],
    )
    .unwrap();
    assert!(modify_tg_attributes(&mut t, &[attr("slow_start.duration_seconds", "10")]).is_err());
}

/// Tags: duplicate keys and more than 50 are refused; merging replaces by key.
#[test]
fn tag_rules() {
    let t = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    assert!(matches!(
        tags(&[t("a", "1"), t("a", "2")]),
        Err(ElbError::DuplicateTagKeys(_))
    ));
    let many: Vec<Tag> = (0..51).map(|i| t(&format!("k{i}"), "")).collect();
    assert!(matches!(tags(&many), Err(ElbError::TooManyTags(_))));
    assert_eq!(
        merge_tags(&[t("a", "1"), t("b", "1")], &[t("a", "2")]).unwrap(),
        vec![t("b", "1"), t("a", "2")]
    );
}
