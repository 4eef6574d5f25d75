//! Target health: the pure state machine (probe outcomes in, ELB's states out; the
//! clock is handed in), the report DescribeTargetHealth shows, and the probe that
//! runs one HTTP check against a target.
//!
//! ELB's rules (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html>):
//! a new target is `initial` until `healthy_threshold` consecutive checks succeed
//! (`healthy`) or `unhealthy_threshold` consecutive checks fail (`unhealthy`); from
//! then on the same thresholds move it between the two. A deregistered target is
//! `draining` for the group's deregistration delay, a target whose group no listener
//! rule uses is `unused`, and with health checks disabled every target is
//! `unavailable` (and receives traffic).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{HealthCheck, HealthState, Target, TargetGroup, TargetHealth};

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The status was one the matcher accepts.
    Success,
    /// A status outside the matcher.
    Mismatch(u16),
    /// No response within the check's timeout.
    Timeout,
    /// No connection, or not an HTTP response (the error, for the description).
    Failed(String),
}

impl Probe {
    /// The outcome of a response with `status` under the group's matcher.
    pub fn of_status(status: u16, check: &HealthCheck) -> Probe {
        if check
            .matcher
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
        {
            Probe::Success
        } else {
            Probe::Mismatch(status)
        }
    }
}

/// Where the checks have brought a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Initial,
    Healthy,
    Unhealthy,
}

/// One target's health-check state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    state: Checked,
    successes: u32,
    failures: u32,
    last_failure: Option<Probe>,
}

impl Default for HealthMachine {
    fn default() -> Self {
        HealthMachine::new()
    }
}

impl HealthMachine {
    pub fn new() -> HealthMachine {
        HealthMachine {
            state: Checked::Initial,
            successes: 0,
            failures: 0,
            last_failure: None,
        }
    }

    pub fn state(&self) -> Checked {
        self.state
    }

    /// Feeds one check's outcome; returns whether the state changed.
    pub fn observe(&mut self, probe: Probe, check: &HealthCheck) -> bool {
        let before = self.state;
        if probe == Probe::Success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= check.healthy_threshold.max(1) {
                self.state = Checked::Healthy;
                self.last_failure = None;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            self.last_failure = Some(probe);
            if self.failures >= check.unhealthy_threshold.max(1) {
                self.state = Checked::Unhealthy;
            }
        }
        self.state != before
    }

    /// Whether a router may send new requests to the target (before fail-open).
    pub fn routable(&self) -> bool {
        self.state == Checked::Healthy
    }

    /// The report for the checked states.
    pub fn report(&self) -> TargetHealth {
        match self.state {
            Checked::Initial => health(
                HealthState::Initial,
                "Elb.InitialHealthChecking",
                "Initial health checks in progress",
            ),
            Checked::Healthy => TargetHealth {
                state: HealthState::Healthy,
                reason: None,
                description: None,
            },
            Checked::Unhealthy => match &self.last_failure {
                Some(Probe::Mismatch(code)) => health(
                    HealthState::Unhealthy,
                    "Target.ResponseCodeMismatch",
                    &format!("Health checks failed with these codes: [{code}]"),
                ),
                Some(Probe::Timeout) => health(
                    HealthState::Unhealthy,
                    "Target.Timeout",
                    "Request timed out",
                ),
                Some(Probe::Failed(why)) => health(
                    HealthState::Unhealthy,
                    "Target.FailedHealthChecks",
                    &format!("Health checks failed: {why}"),
                ),
                Some(Probe::Success) | None => health(
                    HealthState::Unhealthy,
                    "Target.FailedHealthChecks",
                    "Health checks failed",
                ),
            },
        }
    }
}

fn health(state: HealthState, reason: &str, description: &str) -> TargetHealth {
    TargetHealth {
        state,
        reason: Some(reason.into()),
        description: Some(description.into()),
    }
}

/// Epoch milliseconds until which a deregistered target drains.
pub fn drain_end_ms(group: &TargetGroup, target: &Target) -> Option<u64> {
    target
        .deregistered_at_ms
        .map(|at| at.saturating_add(1000 * u64::from(group.deregistration_delay_secs)))
}

/// What DescribeTargetHealth reports for `target` at `now_ms`: `None` once a
/// deregistered target has drained (it is no longer registered). `machine` is the
/// target's checks so far (`None` before the first).
pub fn report(
    group: &TargetGroup,
    target: &Target,
    in_use: bool,
    machine: Option<&HealthMachine>,
    now_ms: u64,
) -> Option<TargetHealth> {
    if let Some(end) = drain_end_ms(group, target) {
        return (now_ms < end).then(|| {
            health(
                HealthState::Draining,
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            )
        });
    }
    if !in_use {
        return Some(health(
            HealthState::Unused,
            "Target.NotInUse",
            "Target group is not configured to receive traffic from the load balancer",
        ));
    }
    if !group.health_check.enabled {
        return Some(health(
            HealthState::Unavailable,
            "Target.HealthCheckDisabled",
            "Health checks are disabled",
        ));
    }
    Some(match machine {
        Some(m) => m.report(),
        None => HealthMachine::new().report(),
    })
}

/// The address health checks go to: the check's port, or the target's traffic port.
pub fn check_addr(check: &HealthCheck, target: &Target) -> Option<SocketAddr> {
    let ip = target.address.parse().ok()?;
    Some(SocketAddr::new(ip, check.port.unwrap_or(target.port)))
}

/// Runs one HTTP health check: a new connection, `GET path`, the status against the
/// matcher, all within the check's timeout (ELB opens a connection per check).
pub async fn probe(addr: SocketAddr, check: &HealthCheck) -> Probe {
    let timeout = Duration::from_secs(u64::from(check.timeout_secs.max(1)));
    match tokio::time::timeout(timeout, probe_once(addr, &check.path)).await {
        Err(_) => Probe::Timeout,
        Ok(Err(why)) => Probe::Failed(why),
        Ok(Ok(status)) => Probe::of_status(status, check),
    }
}

async fn probe_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("health check path {path:?}: {e}"))?;
    let res = sender.send_request(req).await;
    conn.abort();
    res.map(|r| r.status().as_u16())
        .map_err(|e| format!("request to {addr}: {e}"))
}

#[cfg(test)]
mod tests;
