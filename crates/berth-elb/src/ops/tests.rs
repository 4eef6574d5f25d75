use super::*;
use berth_lb::config::{HealthState, TargetHealth};
use berth_state::Embedded;

fn elb() -> (Elb, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Embedded::open(&dir.path().join("state")).unwrap());
    (Elb::new(store), dir)
}

fn ctx() -> Context {
    Context {
        region: "us-east-1".into(),
        account: "123456789012".into(),
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs a Query body (`Action=…&…`, values URL-encoded by the caller).
fn call(e: &Elb, body: &str) -> Result<Value, ElbError> {
    e.handle(format!("{body}&Version=2015-12-01").as_bytes(), &ctx())
        .map(|(_, v)| v)
}

fn code(r: Result<Value, ElbError>) -> &'static str {
    r.map(|v| panic!("expected an error, got {v}"))
        .unwrap_err()
        .code()
}

struct Setup {
    lb: String,
    tg: String,
    listener: String,
}

fn setup(e: &Elb) -> Setup {
    let lb = call(e, "Action=CreateLoadBalancer&Name=web").unwrap()["LoadBalancers"][0]
        ["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = call(
        e,
        "Action=CreateTargetGroup&Name=users&Protocol=HTTP&Port=8080&TargetType=ip",
    )
    .unwrap()["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let listener = call(e, &format!(
        "Action=CreateListener&LoadBalancerArn={}&Protocol=HTTP&Port=80&DefaultActions.member.1.Type=fixed-response&DefaultActions.member.1.FixedResponseConfig.StatusCode=404",
        enc(&lb)
    )).unwrap()["Listeners"][0]["ListenerArn"].as_str().unwrap().to_string();
    Setup { lb, tg, listener }
}

fn create_rule(e: &Elb, s: &Setup, priority: u32, path: &str) -> Result<Value, ElbError> {
    call(e, &format!(
        "Action=CreateRule&ListenerArn={}&Priority={priority}&Conditions.member.1.Field=path-pattern&Conditions.member.1.Values.member.1={}&Actions.member.1.Type=forward&Actions.member.1.TargetGroupArn={}",
        enc(&s.listener), enc(path), enc(&s.tg)
    ))
}

/// A load balancer, listener and rules become the data plane's configuration; every
/// write bumps `changes()`.
#[test]
fn writes_reach_the_config() {
    let (e, _d) = elb();
    let changes = e.changes();
    let s = setup(&e);
    assert!(s
        .lb
        .starts_with("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/"));
    create_rule(&e, &s, 20, "/topics*").unwrap();
    create_rule(&e, &s, 10, "/users*").unwrap();
    assert!(changes.has_changed().unwrap());
    let c = e.config();
    let rules = &c.load_balancers[0].listeners[0].rules;
    assert_eq!(
        rules.iter().map(|r| r.priority).collect::<Vec<_>>(),
        vec![Some(10), Some(20), None]
    );
    assert_eq!(c.target_groups[0].port, 8080);
}

/// ELB's error codes for the conflicts the store decides.
#[test]
fn conflicts() {
    let (e, _d) = elb();
    let s = setup(&e);
    assert_eq!(
        code(call(
            &e,
            "Action=CreateLoadBalancer&Name=web&Scheme=internal"
        )),
        "DuplicateLoadBalancerName"
    );
    // Same settings: idempotent.
    call(&e, "Action=CreateLoadBalancer&Name=web").unwrap();
    assert_eq!(
        code(call(
            &e,
            "Action=CreateTargetGroup&Name=users&Protocol=HTTP&Port=9090&TargetType=ip"
        )),
        "DuplicateTargetGroupName"
    );
    create_rule(&e, &s, 10, "/users*").unwrap();
    assert_eq!(code(create_rule(&e, &s, 10, "/other*")), "PriorityInUse");
    assert_eq!(code(create_rule(&e, &s, 0, "/other*")), "ValidationError");
    // Port 80 is taken on every load balancer (they share one address).
    let lb2 = call(&e, "Action=CreateLoadBalancer&Name=api").unwrap()["LoadBalancers"][0]
        ["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let dup = call(&e, &format!(
        "Action=CreateListener&LoadBalancerArn={}&Protocol=HTTP&Port=80&DefaultActions.member.1.Type=fixed-response&DefaultActions.member.1.FixedResponseConfig.StatusCode=200",
        enc(&lb2)
    ));
    let err = dup.unwrap_err();
    assert_eq!(err.code(), "DuplicateListener");
    assert!(err.to_string().contains(&s.listener), "{err}");
    // The target group already serves `web`.
    let other = call(&e, &format!(
        "Action=CreateListener&LoadBalancerArn={}&Protocol=HTTP&Port=81&DefaultActions.member.1.Type=forward&DefaultActions.member.1.TargetGroupArn={}",
        enc(&lb2), enc(&s.tg)
    ));
    assert_eq!(code(other), "TargetGroupAssociationLimit");
    assert_eq!(
        code(call(
            &e,
            &format!("Action=DeleteTargetGroup&TargetGroupArn={}", enc(&s.tg))
        )),
        "ResourceInUse"
    );
    let https = call(&e, &format!(
        "Action=CreateListener&LoadBalancerArn={}&Protocol=HTTPS&Port=443&DefaultActions.member.1.Type=fixed-response&DefaultActions.member.1.FixedResponseConfig.StatusCode=200",
        enc(&lb2)
    ));
    assert_eq!(code(https), "CertificateNotFound");
    assert_eq!(code(call(&e, "Action=Nope")), "InvalidAction");
    assert_eq!(
        code(call(
            &e,
            "Action=DescribeLoadBalancers&Names.member.1=ghost"
        )),
        "LoadBalancerNotFound"
    );
    assert_eq!(
        code(call(&e, "Action=DescribeLoadBalancers&Bogus=1")),
        "ValidationError"
    );
}

struct Fixed(HealthState);
impl HealthSource for Fixed {
    fn health(&self, _tg: &str, _id: &str, _port: u16) -> Option<TargetHealth> {
        Some(TargetHealth {
            state: self.0,
            reason: None,
            description: None,
        })
    }
}

fn states(e: &Elb, tg: &str) -> Vec<String> {
    call(
        e,
        &format!("Action=DescribeTargetHealth&TargetGroupArn={}", enc(tg)),
    )
    .unwrap()["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["Target"]["Id"].as_str().unwrap(),
                d["TargetHealth"]["State"].as_str().unwrap()
            )
        })
        .collect()
}

/// Target health: unused before a listener uses the group, initial without a data
/// plane, the source's state once set, draining after deregistration, and gone at
/// once with a zero delay.
#[test]
fn target_health() {
    let (e, _d) = elb();
    let s = setup(&e);
    let reg = format!("Action=RegisterTargets&TargetGroupArn={}&Targets.member.1.Id=10.0.0.5&Targets.member.2.Id=10.0.0.6&Targets.member.2.Port=9000", enc(&s.tg));
    call(&e, &reg).unwrap();
    assert_eq!(
        states(&e, &s.tg),
        vec!["10.0.0.5:unused", "10.0.0.6:unused"]
    );
    create_rule(&e, &s, 10, "/users*").unwrap();
    assert_eq!(
        states(&e, &s.tg),
        vec!["10.0.0.5:initial", "10.0.0.6:initial"]
    );
    e.set_health_source(Some(Arc::new(Fixed(HealthState::Healthy))));
    assert_eq!(
        states(&e, &s.tg),
        vec!["10.0.0.5:healthy", "10.0.0.6:healthy"]
    );
    call(
        &e,
        &format!(
            "Action=DeregisterTargets&TargetGroupArn={}&Targets.member.1.Id=10.0.0.5",
            enc(&s.tg)
        ),
    )
    .unwrap();
    assert_eq!(
        states(&e, &s.tg),
        vec!["10.0.0.5:draining", "10.0.0.6:healthy"]
    );
    assert!(e.config().target_groups[0].targets[0]
        .deregistered_at_ms
        .is_some());
    call(&e, &format!("Action=ModifyTargetGroupAttributes&TargetGroupArn={}&Attributes.member.1.Key=deregistration_delay.timeout_seconds&Attributes.member.1.Value=0", enc(&s.tg))).unwrap();
    call(&e, &format!("Action=DeregisterTargets&TargetGroupArn={}&Targets.member.1.Id=10.0.0.6&Targets.member.1.Port=9000", enc(&s.tg))).unwrap();
    assert_eq!(states(&e, &s.tg), Vec::<String>::new());
    assert_eq!(
        code(call(
            &e,
            &format!(
                "Action=RegisterTargets&TargetGroupArn={}&Targets.member.1.Id=web-1",
                enc(&s.tg)
            )
        )),
        "InvalidTarget"
    );
    assert_eq!(
        code(call(
            &e,
            &format!(
                "Action=DeregisterTargets&TargetGroupArn={}&Targets.member.1.Id=10.9.9.9",
                enc(&s.tg)
            )
        )),
        "InvalidTarget"
    );
}

/// SetRulePriorities swaps priorities in one write; a clash with another rule is
/// PriorityInUse; the default rule cannot be moved or deleted.
#[test]
fn rule_priorities() {
    let (e, _d) = elb();
    let s = setup(&e);
    let a = create_rule(&e, &s, 10, "/a*").unwrap()["Rules"][0]["RuleArn"]
        .as_str()
        .unwrap()
        .to_string();
    let b = create_rule(&e, &s, 20, "/b*").unwrap()["Rules"][0]["RuleArn"]
        .as_str()
        .unwrap()
        .to_string();
    call(&e, &format!("Action=SetRulePriorities&RulePriorities.member.1.RuleArn={}&RulePriorities.member.1.Priority=20&RulePriorities.member.2.RuleArn={}&RulePriorities.member.2.Priority=10", enc(&a), enc(&b))).unwrap();
    let rules = call(
        &e,
        &format!("Action=DescribeRules&ListenerArn={}", enc(&s.listener)),
    )
    .unwrap();
    assert_eq!(rules["Rules"][0]["RuleArn"], b.as_str());
    assert_eq!(rules["Rules"][2]["Priority"], "default");
    assert_eq!(code(call(&e, &format!("Action=SetRulePriorities&RulePriorities.member.1.RuleArn={}&RulePriorities.member.1.Priority=10", enc(&a)))), "PriorityInUse");
    let default = rules["Rules"][2]["RuleArn"].as_str().unwrap().to_string();
    assert_eq!(
        code(call(
            &e,
            &format!("Action=DeleteRule&RuleArn={}", enc(&default))
        )),
        "OperationNotPermitted"
    );
    call(
        &e,
        &format!("Action=DeleteListener&ListenerArn={}", enc(&s.listener)),
    )
    .unwrap();
    assert_eq!(
        code(call(
            &e,
            &format!("Action=DescribeRules&RuleArns.member.1={}", enc(&a))
        )),
        "RuleNotFound"
    );
    // The group is free again once no rule uses it.
    call(
        &e,
        &format!("Action=DeleteTargetGroup&TargetGroupArn={}", enc(&s.tg)),
    )
    .unwrap();
}
