//! Container health checks (ECS `healthCheck`, Docker HEALTHCHECK semantics): the
//! command runs inside the container (`runc exec`) every `interval` seconds; a run
//! longer than `timeout` fails; `retries` consecutive failures make the container
//! UNHEALTHY, one success makes it HEALTHY; failures during `startPeriod` do not count.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_runtime::runc::Runc;

use crate::containers::HealthCheck;
use crate::plan::Health;

/// The state a health check keeps between probes (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tracker {
    pub health: Health,
    pub failures: u32,
}

impl Tracker {
    /// Records one probe; `in_start_period` failures do not count.
    pub fn record(&mut self, ok: bool, in_start_period: bool, retries: u32) -> Health {
        if ok {
            self.failures = 0;
            self.health = Health::Healthy;
        } else if !in_start_period {
            self.failures += 1;
            if self.failures >= retries.max(1) {
                self.health = Health::Unhealthy;
            }
        }
        self.health
    }
}

/// Runs the probe once; true when it exited 0 within the timeout.
pub fn probe(runc: &Runc, id: &str, check: &HealthCheck, env: &[String]) -> bool {
    let mut cmd = runc.exec_command(id, env, &check.command);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(check.timeout.max(1));
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// A running health check; dropping the handle does not stop it, `stop` does.
#[derive(Debug, Clone)]
pub struct Checker {
    pub stop: Arc<AtomicBool>,
}

impl Checker {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts probing in a thread; `on_change` gets every change of health.
pub fn start(
    runc: Runc,
    id: String,
    check: HealthCheck,
    env: Vec<String>,
    started: Instant,
    initial: Health,
    on_change: impl Fn(Health) + Send + 'static,
) -> Checker {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let state = Arc::new(Mutex::new(Tracker {
        health: initial,
        failures: 0,
    }));
    std::thread::Builder::new()
        .name(format!("health-{id}"))
        .spawn(move || {
            let interval = Duration::from_secs(check.interval.max(1));
            let start_period = Duration::from_secs(check.start_period);
            while !flag.load(Ordering::SeqCst) {
                // Sleep in short steps so that a stop is noticed promptly.
                let until = Instant::now() + interval;
                while Instant::now() < until && !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50).min(interval));
                }
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let ok = probe(&runc, &id, &check, &env);
                let in_start = started.elapsed() < start_period;
                let mut t = state.lock().unwrap_or_else(|p| p.into_inner());
                let before = t.health;
                let after = t.record(ok, in_start, check.retries);
                drop(t);
                if after != before {
                    on_change(after);
                }
            }
        })
        .expect("spawning a thread");
    Checker { stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// retries consecutive failures turn a container unhealthy; a success heals it.
    #[test]
    fn tracker_rules() {
        let mut t = Tracker::default();
        assert_eq!(t.record(false, false, 2), Health::Unknown);
        assert_eq!(t.record(false, false, 2), Health::Unhealthy);
        assert_eq!(t.record(true, false, 2), Health::Healthy);
        assert_eq!(t.record(false, false, 2), Health::Healthy);
        assert_eq!(t.record(true, false, 2), Health::Healthy);
    }

    /// Failures within the start period do not count.
    #[test]
    fn start_period_forgives() {
        let mut t = Tracker::default();
        for _ in 0..5 {
            assert_eq!(t.record(false, true, 1), Health::Unknown);
        }
        assert_eq!(t.record(false, false, 1), Health::Unhealthy);
    }
}
