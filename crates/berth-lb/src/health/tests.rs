use super::*;
use crate::config::{Protocol, Target, TargetGroup};

fn check() -> HealthCheck {
    HealthCheck {
        healthy_threshold: 3,
        unhealthy_threshold: 2,
        matcher: vec![(200, 204), (301, 301)],
        ..HealthCheck::default()
    }
}

fn group(enabled: bool) -> TargetGroup {
    TargetGroup {
        arn: "tg".into(),
        name: "tg".into(),
        protocol: Protocol::Http,
        port: 80,
        health_check: HealthCheck { enabled, ..check() },
        deregistration_delay_secs: 10,
        stickiness_secs: None,
        targets: vec![],
    }
}

fn target(deregistered_at_ms: Option<u64>) -> Target {
    Target {
        id: "10.0.0.1".into(),
        address: "10.0.0.1".into(),
        port: 8080,
        deregistered_at_ms,
    }
}

fn feed(m: &mut HealthMachine, probes: &[Probe]) {
    for p in probes {
        m.observe(p.clone(), &check());
    }
}

/// The matcher's inclusive ranges decide success.
#[test]
fn matcher_ranges() {
    let c = check();
    assert_eq!(Probe::of_status(200, &c), Probe::Success);
    assert_eq!(Probe::of_status(204, &c), Probe::Success);
    assert_eq!(Probe::of_status(301, &c), Probe::Success);
    assert_eq!(Probe::of_status(205, &c), Probe::Mismatch(205));
    assert_eq!(Probe::of_status(500, &c), Probe::Mismatch(500));
}

/// Initial until healthy_threshold consecutive successes; a failure restarts the count.
#[test]
fn initial_to_healthy_needs_consecutive_successes() {
    let mut m = HealthMachine::new();
    feed(&mut m, &[Probe::Success, Probe::Success]);
    assert_eq!(m.state(), Checked::Initial);
    assert_eq!(
        m.report().reason.as_deref(),
        Some("Elb.InitialHealthChecking")
    );
    feed(
        &mut m,
        &[Probe::Mismatch(500), Probe::Success, Probe::Success],
    );
    assert_eq!(m.state(), Checked::Initial);
    assert!(m.observe(Probe::Success, &check()));
    assert_eq!(m.state(), Checked::Healthy);
    assert!(m.routable());
    assert_eq!(m.report().state, HealthState::Healthy);
    assert_eq!(m.report().reason, None);
}

/// Initial to unhealthy after unhealthy_threshold failures, with the last failure's reason.
#[test]
fn initial_to_unhealthy_with_reasons() {
    let mut m = HealthMachine::new();
    feed(&mut m, &[Probe::Timeout, Probe::Mismatch(503)]);
    assert_eq!(m.state(), Checked::Unhealthy);
    assert!(!m.routable());
    let r = m.report();
    assert_eq!(r.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert_eq!(
        r.description.as_deref(),
        Some("Health checks failed with these codes: [503]")
    );
    feed(&mut m, &[Probe::Timeout]);
    assert_eq!(m.report().reason.as_deref(), Some("Target.Timeout"));
    feed(&mut m, &[Probe::Failed("connection refused".into())]);
    let r = m.report();
    assert_eq!(r.reason.as_deref(), Some("Target.FailedHealthChecks"));
    assert!(r.description.unwrap().contains("connection refused"));
}

/// Healthy ↔ unhealthy by the thresholds; one failure does not take a target out.
#[test]
fn healthy_and_back() {
    let mut m = HealthMachine::new();
    feed(&mut m, &[Probe::Success, Probe::Success, Probe::Success]);
    assert!(!m.observe(Probe::Mismatch(500), &check()));
    assert_eq!(m.state(), Checked::Healthy);
    assert!(m.observe(Probe::Mismatch(500), &check()));
    assert_eq!(m.state(), Checked::Unhealthy);
    feed(&mut m, &[Probe::Success, Probe::Success]);
    assert_eq!(m.state(), Checked::Unhealthy);
    assert!(m.observe(Probe::Success, &check()));
    assert_eq!(m.state(), Checked::Healthy);
}

/// Draining for exactly the deregistration delay, then not registered at all.
#[test]
fn draining_until_the_delay_passes() {
    let g = group(true);
    let t = target(Some(1_000));
    let r = report(&g, &t, true, None, 1_000).unwrap();
    assert_eq!(r.state, HealthState::Draining);
    assert_eq!(r.reason.as_deref(), Some("Target.DeregistrationInProgress"));
    assert!(report(&g, &t, true, None, 10_999).is_some());
    assert_eq!(report(&g, &t, true, None, 11_000), None);
    assert_eq!(drain_end_ms(&g, &t), Some(11_000));
    assert_eq!(drain_end_ms(&g, &target(None)), None);
}

/// Unused before checks; disabled checks report unavailable; else the machine.
#[test]
fn unused_unavailable_and_checked() {
    let t = target(None);
    let r = report(&group(true), &t, false, None, 0).unwrap();
    assert_eq!(
        (r.state, r.reason.as_deref()),
        (HealthState::Unused, Some("Target.NotInUse"))
    );
    let r = report(&group(false), &t, true, None, 0).unwrap();
    assert_eq!(
        (r.state, r.reason.as_deref()),
        (HealthState::Unavailable, Some("Target.HealthCheckDisabled"))
    );
    let r = report(&group(true), &t, true, None, 0).unwrap();
    assert_eq!(r.state, HealthState::Initial);
    let mut m = HealthMachine::new();
    feed(&mut m, &[Probe::Success, Probe::Success, Probe::Success]);
    let r = report(&group(true), &t, true, Some(&m), 0).unwrap();
    assert_eq!(r.state, HealthState::Healthy);
}

/// Checks go to the check's port if set, else the traffic port.
#[test]
fn check_address() {
    let t = target(None);
    assert_eq!(
        check_addr(&check(), &t),
        Some("10.0.0.1:8080".parse().unwrap())
    );
    let c = HealthCheck {
        port: Some(9000),
        ..check()
    };
    assert_eq!(check_addr(&c, &t), Some("10.0.0.1:9000".parse().unwrap()));
    let bad = Target {
        address: "i-123".into(),
        ..t
    };
    assert_eq!(check_addr(&c, &bad), None);
}
