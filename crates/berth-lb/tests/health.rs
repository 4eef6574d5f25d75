//! Active health checks and draining, end to end, as DescribeTargetHealth reads them.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_lb::config::{HealthCheck, HealthSource, HealthState};
use berth_lb::DataPlane;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn state(dp: &DataPlane, b: &Backend) -> Option<HealthState> {
    let t = b.target();
    dp.health("tg", &t.id, t.port).map(|h| h.state)
}

async fn wait_state(dp: &DataPlane, b: &Backend, want: HealthState) {
    let what = format!("{} {}", b.name, want.as_str());
    eventually(&what, WAIT, || async { state(dp, b) == Some(want) }).await;
}

async fn backends_hit(port: u16, n: usize) -> HashSet<String> {
    let c = client();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = get(&c, port, "/").await;
        assert_eq!(r.status, 200);
        seen.insert(r.backend().to_string());
    }
    seen
}

/// A target answering its health check with 500 turns unhealthy (with ELB's reason)
/// and gets no requests; answering 200 again it turns healthy and gets them again.
#[tokio::test]
async fn unhealthy_target_is_taken_out_and_put_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.health.store(500, Ordering::SeqCst);
    let port = free_port();
    let dp = data_plane();
    dp.apply(behind(port, &[&a, &b])).unwrap();
    wait_state(&dp, &a, HealthState::Unhealthy).await;
    wait_state(&dp, &b, HealthState::Healthy).await;
    let t = a.target();
    let report = dp.health("tg", &t.id, t.port).unwrap();
    assert_eq!(
        report.reason.as_deref(),
        Some("Target.ResponseCodeMismatch")
    );
    assert_eq!(
        report.description.as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    assert_eq!(
        backends_hit(port, 20).await,
        HashSet::from(["b".to_string()])
    );

    a.health.store(200, Ordering::SeqCst);
    wait_state(&dp, &a, HealthState::Healthy).await;
    assert_eq!(
        backends_hit(port, 20).await,
        HashSet::from(["a".to_string(), "b".to_string()])
    );
    dp.shutdown();
}

/// With every target unhealthy the load balancer fails open: all of them get requests.
#[tokio::test]
async fn all_unhealthy_fails_open() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.health.store(500, Ordering::SeqCst);
    b.health.store(404, Ordering::SeqCst);
    let port = free_port();
    let dp = data_plane();
    dp.apply(behind(port, &[&a, &b])).unwrap();
    wait_state(&dp, &a, HealthState::Unhealthy).await;
    wait_state(&dp, &b, HealthState::Unhealthy).await;
    assert_eq!(
        backends_hit(port, 20).await,
        HashSet::from(["a".to_string(), "b".to_string()])
    );
    dp.shutdown();
}

/// A deregistered target drains: its request in flight completes, new requests go
/// to the other target, it reports draining, and after the delay it is gone.
#[tokio::test]
async fn draining_lets_requests_finish() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let dp = data_plane();
    let rules = vec![default_rule(forward("tg"))];
    dp.apply(config(
        port,
        60,
        rules.clone(),
        vec![group("tg", vec![a.target()])],
    ))
    .unwrap();
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, port, "/slow?ms=1500").await }
    });
    eventually("slow request at a", WAIT, || async { a.hits() == 1 }).await;

    let mut gone = a.target();
    gone.deregistered_at_ms = Some(now_ms());
    let mut tg = group("tg", vec![gone, b.target()]);
    tg.deregistration_delay_secs = 2;
    dp.apply(config(port, 60, rules, vec![tg])).unwrap();
    assert_eq!(state(&dp, &a), Some(HealthState::Draining));
    let t = a.target();
    assert_eq!(
        dp.health("tg", &t.id, t.port).unwrap().reason.as_deref(),
        Some("Target.DeregistrationInProgress")
    );
    assert_eq!(
        backends_hit(port, 10).await,
        HashSet::from(["b".to_string()])
    );
    let r = slow.await.unwrap();
    assert_eq!((r.status, r.backend()), (200, "a"));
    eventually("a no longer registered", WAIT, || async {
        state(&dp, &a).is_none()
    })
    .await;
    dp.shutdown();
}

/// Initial until the first threshold; unused when no rule uses the group;
/// unavailable with checks disabled; unknown targets are not reported.
#[tokio::test]
async fn initial_unused_unavailable() {
    let a = Backend::start("a").await;
    let port = free_port();
    let dp = data_plane();
    let mut slow_checks = group("tg", vec![a.target()]);
    slow_checks.health_check = HealthCheck {
        interval_secs: 300,
        ..fast_check()
    };
    let rules = vec![default_rule(forward("tg"))];
    dp.apply(config(port, 60, rules.clone(), vec![slow_checks.clone()]))
        .unwrap();
    let t = a.target();
    let report = dp.health("tg", &t.id, t.port).unwrap();
    assert_eq!(
        (report.state, report.reason.as_deref()),
        (HealthState::Initial, Some("Elb.InitialHealthChecking"))
    );
    assert_eq!(dp.health("tg", "nope", 1), None);
    assert_eq!(dp.health("other-tg", &t.id, t.port), None);

    dp.apply(config(
        port,
        60,
        vec![default_rule(fixed(200, "x"))],
        vec![slow_checks.clone()],
    ))
    .unwrap();
    assert_eq!(state(&dp, &a), Some(HealthState::Unused));

    slow_checks.health_check.enabled = false;
    dp.apply(config(port, 60, rules, vec![slow_checks]))
        .unwrap();
    let report = dp.health("tg", &t.id, t.port).unwrap();
    assert_eq!(
        (report.state, report.reason.as_deref()),
        (HealthState::Unavailable, Some("Target.HealthCheckDisabled"))
    );
    assert_eq!(get(&client(), port, "/").await.backend(), "a");
    dp.shutdown();
}
